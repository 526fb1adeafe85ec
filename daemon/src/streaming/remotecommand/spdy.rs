//! Exec and attach over SPDY: the client opens one stream per channel,
//! named by its `streamType` header; the server waits for all it expects,
//! runs the session, closes stdout and stderr, writes the status on the
//! error stream and closes the connection.

use std::sync::Arc;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use pier_streamcodec::spdy::{Connection, Stream, StreamWriter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::session::{self, Io};
use super::{Request, decode_resizes, status};
use crate::streaming::Shared;
use crate::streaming::activity::Activity;

#[derive(Default)]
struct Streams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

pub async fn serve(shared: Arc<Shared>, io: TokioIo<Upgraded>, request: Request) {
    let (wanted, flavor) = (request.wanted, request.flavor);
    let mut conn = Connection::start(io, Arc::new(Activity::default()), shared.limits.idle);
    let resize = wanted.tty && flavor.resize;
    let expected = 1
        + usize::from(wanted.stdin)
        + usize::from(wanted.stdout)
        + usize::from(wanted.stderr)
        + usize::from(resize);
    let Some(mut streams) = wait_for_streams(&shared, &mut conn, expected).await else {
        conn.close().await;
        return;
    };
    let gone = shared.shutdown.child_token();
    let watch = tokio::spawn({
        let (conn_gone, gone) = (conn.gone(), gone.clone());
        async move {
            conn_gone.cancelled().await;
            gone.cancel();
        }
    });
    let (stdout, stdout_pump) = output(streams.stdout.as_ref());
    let (stderr, stderr_pump) = output(streams.stderr.as_ref());
    let io = Io {
        stdin: streams.stdin.as_mut().map(take_data),
        stdout,
        stderr,
        resize: streams
            .resize
            .as_mut()
            .map(|s| decode_resizes(take_data(s))),
        gone,
    };
    let outcome = session::run(&shared.daemon, request.target, io).await;
    tracing::debug!(?outcome, "exec/attach session ended");
    for pump in [stdout_pump, stderr_pump].into_iter().flatten() {
        let _ = pump.await;
    }
    if let Some(error) = &streams.error {
        if let Some(payload) = status::payload(&outcome, flavor.json_status) {
            let _ = error.writer.write(&payload).await;
        }
        let _ = error.writer.finish().await;
    }
    watch.abort();
    conn.close().await;
}

/// Collects the streams the client opens until `expected` known ones are
/// there; `None` if it does not open them in time or goes away.
async fn wait_for_streams(
    shared: &Shared,
    conn: &mut Connection,
    expected: usize,
) -> Option<Streams> {
    let mut streams = Streams::default();
    let mut received = 0;
    let deadline = tokio::time::sleep(shared.limits.stream_creation);
    tokio::pin!(deadline);
    while received < expected {
        let stream = tokio::select! {
            s = conn.streams.recv() => s?,
            () = &mut deadline => {
                tracing::info!(received, expected, "client did not open its streams in time");
                return None;
            }
        };
        let slot = match stream.headers.get("streamtype") {
            Some("error") => &mut streams.error,
            Some("stdin") => &mut streams.stdin,
            Some("stdout") => &mut streams.stdout,
            Some("stderr") => &mut streams.stderr,
            Some("resize") => &mut streams.resize,
            other => {
                tracing::debug!(stream_type = ?other, "ignoring a stream of unknown type");
                continue;
            }
        };
        if slot.replace(stream).is_none() {
            received += 1;
        }
    }
    Some(streams)
}

fn take_data(stream: &mut Stream) -> mpsc::Receiver<bytes::Bytes> {
    std::mem::replace(&mut stream.data, mpsc::channel(1).1)
}

/// A sender whose bytes go out on `stream`, and the task doing it, which
/// half-closes the stream once the sender is dropped and drained.
fn output(stream: Option<&Stream>) -> (Option<mpsc::Sender<bytes::Bytes>>, Option<JoinHandle<()>>) {
    let Some(stream) = stream else {
        return (None, None);
    };
    let writer: StreamWriter = stream.writer.clone();
    let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(16);
    let task = tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            if writer.write(&data).await.is_err() {
                return;
            }
        }
        let _ = writer.finish().await;
    });
    (Some(tx), Some(task))
}
