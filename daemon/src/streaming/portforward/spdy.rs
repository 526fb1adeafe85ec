//! Port forward over SPDY: for every local connection the client opens a
//! pair of streams, `error` and `data`, with the same `requestID` and a
//! `port` header. Each complete pair is one TCP connection into the pod;
//! the SPDY connection lives on until the client closes it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use pier_streamcodec::spdy::{Connection, Stream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{connect, forward};
use crate::streaming::Shared;
use crate::streaming::activity::Activity;

/// How often half-open pairs are checked for their deadline.
const SWEEP: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Pair {
    port: u16,
    data: Option<Stream>,
    error: Option<Stream>,
    deadline: Option<Instant>,
}

pub async fn serve(shared: Arc<Shared>, io: TokioIo<Upgraded>, sandbox_id: String) {
    let mut conn = Connection::start(io, Arc::new(Activity::default()), shared.limits.idle);
    let gone = shared.shutdown.child_token();
    let conn_gone = conn.gone();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        let stream = tokio::select! {
            s = conn.streams.recv() => match s {
                Some(s) => s,
                None => break,
            },
            () = conn_gone.cancelled() => break,
            () = gone.cancelled() => break,
            _ = sweep.tick() => {
                expire(&mut pairs).await;
                continue;
            }
        };
        let (port, kind) = match check(&stream) {
            Ok(checked) => checked,
            Err(reason) => {
                tracing::debug!(%reason, "refusing a port forward stream");
                stream.writer.reset().await;
                continue;
            }
        };
        let request = request_id(&stream, kind);
        let pair = pairs.entry(request.clone()).or_default();
        pair.deadline
            .get_or_insert_with(|| Instant::now() + shared.limits.stream_creation);
        let slot = if kind == "data" {
            &mut pair.data
        } else {
            &mut pair.error
        };
        if slot.is_some() {
            let message = format!(
                "error processing stream for request {request}: {kind} stream already assigned"
            );
            if let Some(error) = &pair.error {
                let _ = error.writer.write(message.as_bytes()).await;
            }
            stream.writer.reset().await;
            continue;
        }
        *slot = Some(stream);
        if kind == "data" {
            // kubelet forwards to the data stream's port.
            pair.port = port;
        }
        if pair.data.is_some()
            && pair.error.is_some()
            && let Some(Pair {
                data: Some(data),
                error: Some(error),
                port,
                ..
            }) = pairs.remove(&request)
        {
            let shared = Arc::clone(&shared);
            let (sandbox_id, gone) = (sandbox_id.clone(), gone.clone());
            tokio::spawn(async move {
                forward_pair(&shared, &sandbox_id, port, data, error, gone).await;
            });
        }
    }
    // Ends every forward of this connection.
    gone.cancel();
    conn.close().await;
}

/// The stream's port and type, as kubelet checks them.
fn check(stream: &Stream) -> Result<(u16, &'static str), String> {
    let port = stream
        .headers
        .get("port")
        .ok_or("\"port\" header is required")?;
    let port: u16 = port
        .parse()
        .map_err(|e| format!("unable to parse {port:?} as a port: {e}"))?;
    if port == 0 {
        return Err("port \"0\" must be > 0".into());
    }
    match stream.headers.get("streamtype") {
        Some("data") => Ok((port, "data")),
        Some("error") => Ok((port, "error")),
        Some(other) => Err(format!("invalid stream type {other:?}")),
        None => Err("\"streamType\" header is required".into()),
    }
}

/// The pair a stream belongs to. Clients older than the `requestID` header
/// open the error stream, then the data stream, two ids apart.
fn request_id(stream: &Stream, kind: &str) -> String {
    match stream.headers.get("requestid") {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ if kind == "data" => stream.id.saturating_sub(2).to_string(),
        _ => stream.id.to_string(),
    }
}

/// Drops pairs whose other half did not come in time, telling the client.
async fn expire(pairs: &mut HashMap<String, Pair>) {
    let now = Instant::now();
    let late: Vec<String> = pairs
        .iter()
        .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
        .map(|(id, _)| id.clone())
        .collect();
    for id in late {
        if let Some(pair) = pairs.remove(&id) {
            if let Some(error) = &pair.error {
                let message = format!("request {id}: timed out waiting for streams");
                let _ = error.writer.write(message.as_bytes()).await;
                let _ = error.writer.finish().await;
            }
            for stream in [pair.data, pair.error].into_iter().flatten() {
                stream.writer.reset().await;
            }
        }
    }
}

async fn forward_pair(
    shared: &Shared,
    sandbox_id: &str,
    port: u16,
    mut data: Stream,
    error: Stream,
    gone: CancellationToken,
) {
    let result = match connect(&shared.daemon, sandbox_id, port).await {
        Ok(socket) => {
            let (to_client, mut outgoing) = mpsc::channel::<Bytes>(16);
            let writer = data.writer.clone();
            let pump = tokio::spawn(async move {
                while let Some(chunk) = outgoing.recv().await {
                    if writer.write(&chunk).await.is_err() {
                        return;
                    }
                }
            });
            let from_client = std::mem::replace(&mut data.data, mpsc::channel(1).1);
            let result = forward(socket, from_client, to_client, gone).await;
            let _ = pump.await;
            result
        }
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::info!(pod_id = %sandbox_id, port, error = %e, "port forward failed");
        let message = format!("error forwarding port {port} to pod {sandbox_id}: {e}");
        let _ = error.writer.write(message.as_bytes()).await;
    }
    let _ = data.writer.finish().await;
    let _ = error.writer.finish().await;
}
