//! The HTTP/1.1 side: `/{exec,attach,portforward}/<token>`, the upgrade to
//! SPDY/3.1 or WebSocket with subprotocol negotiation, and plain HTTP
//! errors for everything refused before the upgrade.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::protocol::{self, Flavor};
use super::remotecommand;
use super::tokens::Pending;
use super::{Shared, portforward};

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

const STREAM_PROTOCOL: &str = "x-stream-protocol-version";
const ACCEPTED_PROTOCOLS: &str = "x-accepted-stream-protocol-versions";

type Reply = Response<Full<Bytes>>;

/// Accepts connections until shutdown.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of fds and the like: back off rather than spin.
                    tracing::warn!(error = %e, "streaming accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shared.shutdown.cancelled() => return,
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(route(shared, req)) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "streaming connection");
            }
        });
    }
}

fn route(shared: Arc<Shared>, mut req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!("stream", %path);
    let _enter = span.enter();
    let Some((kind, token)) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .filter(|(_, token)| !token.is_empty() && !token.contains('/'))
    else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    // The token is spent whatever happens next, as kubelet spends it.
    let Some(pending) = shared.tokens.take(token).filter(|p| p.kind() == kind) else {
        return text(StatusCode::NOT_FOUND, "unknown or expired streaming token");
    };
    let Ok(permit) = Arc::clone(&shared.sessions).try_acquire_owned() else {
        tracing::warn!(max = shared.max_sessions, "streaming session limit reached");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("more than {} streaming sessions", shared.max_sessions),
        );
    };
    let headers = req.headers();
    if is_websocket(headers) {
        websocket(shared, &mut req, pending, permit)
    } else if has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, "spdy/3.1")
    {
        spdy(shared, &mut req, pending, permit)
    } else {
        text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request",
        )
    }
}

fn spdy(
    shared: Arc<Shared>,
    req: &mut Request<Incoming>,
    pending: Pending,
    permit: OwnedSemaphorePermit,
) -> Reply {
    let supported = match pending {
        Pending::PortForward(_) => protocol::SPDY_PORTFORWARD,
        _ => protocol::SPDY_REMOTECOMMAND,
    };
    let offered: Vec<&str> = req
        .headers()
        .get_all(STREAM_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if offered.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: X-Stream-Protocol-Version is required",
        );
    }
    let Some(chosen) = protocol::negotiate(offered.iter().copied(), supported) else {
        let mut reply = text(
            StatusCode::FORBIDDEN,
            &format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
            ),
        );
        for p in supported {
            reply
                .headers_mut()
                .append(ACCEPTED_PROTOCOLS, HeaderValue::from_static(p));
        }
        return reply;
    };
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let _permit = permit;
        let io = match upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => return tracing::debug!(error = %e, "spdy upgrade failed"),
        };
        tracing::debug!(protocol = chosen, kind = pending.kind(), "spdy session");
        match pending {
            Pending::PortForward(r) => {
                portforward::serve_spdy(shared, io, r.pod_sandbox_id).await;
            }
            other => {
                if let Some(request) = remotecommand::Request::of(&other, Flavor::of(chosen)) {
                    remotecommand::serve_spdy(shared, io, request).await;
                }
            }
        }
    });
    let mut reply = Response::new(Full::default());
    *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = reply.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(STREAM_PROTOCOL, HeaderValue::from_static(chosen));
    reply
}

fn websocket(
    shared: Arc<Shared>,
    req: &mut Request<Incoming>,
    pending: Pending,
    permit: OwnedSemaphorePermit,
) -> Reply {
    let headers = req.headers();
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        let mut reply = text(StatusCode::BAD_REQUEST, "unsupported WebSocket version");
        reply.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return reply;
    }
    let accept = derive_accept_key(key.as_bytes());
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let supported = match pending {
        Pending::PortForward(_) => protocol::WS_PORTFORWARD,
        _ => protocol::WS_REMOTECOMMAND,
    };
    // No subprotocol at all is kubelet's plain binary channel protocol.
    let chosen = match protocol::negotiate(offered.iter().copied(), supported) {
        Some(p) => Some(p),
        None if offered.is_empty() => None,
        None => {
            return text(
                StatusCode::FORBIDDEN,
                &format!(
                    "requested protocol(s) are not supported: {offered:?}; supports {supported:?}"
                ),
            );
        }
    };
    let flavor = Flavor {
        // Every WebSocket protocol has the resize channel.
        resize: true,
        ..Flavor::of(chosen.unwrap_or("channel.k8s.io"))
    };
    let codec = flavor.codec();
    let ports = match &pending {
        Pending::PortForward(_) => match query_ports(req.uri().query().unwrap_or_default()) {
            Ok(ports) => ports,
            Err(e) => return text(StatusCode::BAD_REQUEST, &e),
        },
        _ => Vec::new(),
    };
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let _permit = permit;
        let io = match upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => return tracing::debug!(error = %e, "websocket upgrade failed"),
        };
        tracing::debug!(protocol = ?chosen, kind = pending.kind(), "websocket session");
        match pending {
            Pending::PortForward(r) => {
                portforward::serve_websocket(shared, io, r.pod_sandbox_id, ports, codec).await;
            }
            other => {
                if let Some(request) = remotecommand::Request::of(&other, flavor) {
                    remotecommand::serve_websocket(shared, io, request).await;
                }
            }
        }
    });
    let mut reply = Response::new(Full::default());
    *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = reply.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(p) = chosen {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    reply
}

/// The `port` query values (repeated or comma-separated), as kubelet
/// parses them for WebSocket port forwarding.
fn query_ports(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (name, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        if name != "port" {
            continue;
        }
        if value.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        let value = value.replace("%2C", ",").replace("%2c", ",");
        for p in value.split(',') {
            let port: u16 = p
                .parse()
                .map_err(|e| format!("unable to parse {value:?} as a port: {e}"))?;
            if port == 0 {
                return Err(format!("port {value:?} must be > 0"));
            }
            ports.push(port);
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

/// Whether a header's comma-separated values hold `token` (any case).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn is_websocket(headers: &HeaderMap) -> bool {
    has_token(headers, header::UPGRADE, "websocket")
        && has_token(headers, header::CONNECTION, "upgrade")
}

fn text(status: StatusCode, body: &str) -> Reply {
    tracing::info!(%status, reason = body, "streaming request refused");
    let mut reply = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_repeated_or_comma_separated_queries() {
        assert_eq!(query_ports("port=80&port=443"), Ok(vec![80, 443]));
        assert_eq!(query_ports("port=80,8080"), Ok(vec![80, 8080]));
        assert_eq!(query_ports("port=80%2C81"), Ok(vec![80, 81]));
        assert!(query_ports("").is_err());
        assert!(query_ports("port=").is_err());
        assert!(query_ports("port=0").is_err());
        assert!(query_ports("port=70000").is_err());
        assert!(query_ports("port=http").is_err());
    }
}
