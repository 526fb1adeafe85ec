//! Port forward over WebSocket: the ports come from the URL's `port`
//! query; port i gets channel 2i for data and 2i+1 for errors, and the
//! first message on each carries the port as a little-endian u16. One TCP
//! connection per port; the WebSocket closes when all of them are done.

use std::sync::Arc;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use pier_streamcodec::ws::{Codec, Connection};
use tokio::sync::mpsc;

use super::{connect, forward};
use crate::streaming::Shared;
use crate::streaming::activity::Activity;

pub async fn serve(
    shared: Arc<Shared>,
    io: TokioIo<Upgraded>,
    sandbox_id: String,
    ports: Vec<u16>,
    codec: Codec,
) {
    let gone = shared.shutdown.child_token();
    let activity = Arc::new(Activity::default());
    let (conn, mut routed) =
        Connection::accept(io, codec, activity, shared.limits.idle, gone.clone()).await;

    let mut inputs = Vec::with_capacity(ports.len());
    let mut forwards = Vec::with_capacity(ports.len());
    for (i, &port) in ports.iter().enumerate() {
        let (data_ch, error_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        for ch in [data_ch, error_ch] {
            let _ = conn
                .tx
                .send((ch, Bytes::copy_from_slice(&port.to_le_bytes())))
                .await;
        }
        let (input_tx, input) = mpsc::channel::<Bytes>(16);
        inputs.push(input_tx);
        let (to_client, pump) = conn.channel(data_ch);
        let errors = conn.tx.clone();
        let (shared, sandbox_id, gone) = (Arc::clone(&shared), sandbox_id.clone(), gone.clone());
        forwards.push(tokio::spawn(async move {
            let result = match connect(&shared.daemon, &sandbox_id, port).await {
                Ok(socket) => forward(socket, input, to_client, gone).await,
                Err(e) => Err(e),
            };
            let _ = pump.await;
            if let Err(e) = result {
                tracing::info!(pod_id = %sandbox_id, port, error = %e, "port forward failed");
                let message = format!("error forwarding port {port} to pod {sandbox_id}: {e}");
                let _ = errors.send((error_ch, Bytes::from(message))).await;
            }
        }));
    }
    tokio::spawn(async move {
        while let Some((channel, data)) = routed.recv().await {
            // Only even channels carry data to the pod.
            let Some(input) = inputs
                .get(usize::from(channel) / 2)
                .filter(|_| channel % 2 == 0)
            else {
                continue;
            };
            let _ = input.send(data).await;
        }
    });
    for f in forwards {
        let _ = f.await;
    }
    conn.close().await;
}
