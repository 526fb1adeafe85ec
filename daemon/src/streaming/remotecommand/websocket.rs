//! Exec and attach over WebSocket: channels 0 stdin, 1 stdout, 2 stderr,
//! 3 error, 4 resize on one connection; v5 lets the client close a channel
//! (`[255, channel]`), which is how it ends stdin.

use std::sync::Arc;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use pier_streamcodec::ws::{CLOSE_CHANNEL, Connection};
use tokio::sync::mpsc;

use super::session::{self, Io};
use super::{Request, decode_resizes, status};
use crate::streaming::Shared;
use crate::streaming::activity::Activity;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;

pub async fn serve(shared: Arc<Shared>, io: TokioIo<Upgraded>, request: Request) {
    let (wanted, flavor) = (request.wanted, request.flavor);
    let gone = shared.shutdown.child_token();
    let activity = Arc::new(Activity::default());
    let (conn, mut routed) = Connection::accept(
        io,
        flavor.codec(),
        activity,
        shared.limits.idle,
        gone.clone(),
    )
    .await;
    // An empty message on the lowest channel the server writes tells the
    // client the connection is ready, as kubelet does.
    let hello = match (wanted.stdout, wanted.stderr) {
        (true, _) => STDOUT,
        (false, true) => STDERR,
        _ => ERROR,
    };
    let _ = conn.tx.send((hello, Bytes::new())).await;

    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(16);
    let (resize_tx, resize_rx) = mpsc::channel::<Bytes>(4);
    let mut stdin_tx = Some(stdin_tx).filter(|_| wanted.stdin);
    tokio::spawn(async move {
        while let Some((channel, data)) = routed.recv().await {
            match channel {
                STDIN => {
                    if let Some(tx) = &stdin_tx
                        && tx.send(data).await.is_err()
                    {
                        stdin_tx = None;
                    }
                }
                RESIZE => {
                    let _ = resize_tx.send(data).await;
                }
                CLOSE_CHANNEL if flavor.close_signal && data.first() == Some(&STDIN) => {
                    stdin_tx = None;
                }
                _ => {}
            }
        }
    });
    let (stdout, stdout_pump) = match wanted.stdout {
        true => {
            let (tx, task) = conn.channel(STDOUT);
            (Some(tx), Some(task))
        }
        false => (None, None),
    };
    let (stderr, stderr_pump) = match wanted.stderr {
        true => {
            let (tx, task) = conn.channel(STDERR);
            (Some(tx), Some(task))
        }
        false => (None, None),
    };
    let io = Io {
        stdin: wanted.stdin.then_some(stdin_rx),
        stdout,
        stderr,
        resize: wanted.tty.then(|| decode_resizes(resize_rx)),
        gone,
    };
    let outcome = session::run(&shared.daemon, request.target, io).await;
    tracing::debug!(?outcome, "exec/attach session ended");
    for pump in [stdout_pump, stderr_pump].into_iter().flatten() {
        let _ = pump.await;
    }
    if let Some(payload) = status::payload(&outcome, flavor.json_status) {
        let _ = conn.tx.send((ERROR, Bytes::from(payload))).await;
    }
    conn.close().await;
}
