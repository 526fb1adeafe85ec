//! Clients for pier's streaming server that share no code with it: Go's
//! spdystream (built from `tests/go/spdyclient` with Debian's Go and
//! golang-github-docker-spdystream-dev) for SPDY/3.1, tungstenite for
//! WebSocket, and plain HTTP/1.1 for the requests that must be refused.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// The Go SPDY client, built once per test binary.
pub fn spdy_client() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("go/spdyclient");
            // Beside pierd in the target dir: rebuilt by each run, never left in /tmp.
            let out = crate::bins::dir().join("pier-spdyclient");
            let cache = crate::bins::dir().join("gocache");
            let built = Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg(".")
                .current_dir(&src)
                .env("GO111MODULE", "off")
                .env("GOPATH", "/usr/share/gocode")
                .env("GOCACHE", &cache)
                .env("GOFLAGS", "")
                .output()
                .expect("run go (Debian package golang-go)");
            assert!(
                built.status.success(),
                "building the SPDY test client failed (needs golang-go and \
                 golang-github-docker-spdystream-dev):\n{}",
                String::from_utf8_lossy(&built.stderr)
            );
            out
        })
        .clone()
}

/// Runs the Go client with `args`, feeding it `stdin`, bounded in time.
pub async fn spdy(args: &[&str], stdin: &[u8]) -> Output {
    let client = spdy_client();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.to_vec();
    let run = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(client)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run spdyclient");
        if let Some(mut input) = child.stdin.take() {
            let _ = input.write_all(&stdin);
        }
        child.wait_with_output().expect("wait spdyclient")
    });
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("spdyclient ran over a minute")
        .expect("spdyclient task")
}

pub type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Opens a WebSocket to a streaming URL offering `protocols`; returns the
/// socket and the protocol the server chose.
pub async fn websocket(url: &str, protocols: &str) -> (Ws, Option<String>) {
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut request = ws_url.as_str().into_client_request().expect("ws request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocols).expect("header"),
    );
    let host = request.uri().authority().expect("authority").to_string();
    let tcp = TcpStream::connect(host).await.expect("connect");
    let (ws, response) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("websocket handshake");
    let chosen = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (ws, chosen)
}

/// What arrived on each channel of a binary channel.k8s.io session.
#[derive(Debug, Default)]
pub struct Channels {
    pub messages: Vec<(u8, Vec<u8>)>,
    /// The server sent a close frame (rather than the TCP connection dying).
    pub closed_cleanly: bool,
}

impl Channels {
    pub fn data(&self, channel: u8) -> Vec<u8> {
        self.messages
            .iter()
            .filter(|(c, _)| *c == channel)
            .flat_map(|(_, d)| d.clone())
            .collect()
    }

    pub fn text(&self, channel: u8) -> String {
        String::from_utf8_lossy(&self.data(channel)).into_owned()
    }

    /// The v4 status on the error channel, parsed.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_slice(&self.data(3)).unwrap_or_default()
    }
}

/// Sends one message on a binary channel.
pub async fn send(ws: &mut Ws, channel: u8, data: &[u8]) {
    let mut m = vec![channel];
    m.extend_from_slice(data);
    ws.send(Message::Binary(m.into())).await.expect("ws send");
}

/// Reads binary channel messages until the server closes, or until
/// `until` says enough arrived.
pub async fn read_channels(ws: &mut Ws, until: impl Fn(&Channels) -> bool) -> Channels {
    let mut got = Channels::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !until(&got) {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no end of the websocket session within 30s");
        match next {
            Some(Ok(Message::Binary(b))) if !b.is_empty() => {
                got.messages.push((b[0], b[1..].to_vec()))
            }
            Some(Ok(Message::Close(_))) => {
                got.closed_cleanly = true;
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    got
}

/// Sends a bare HTTP/1.1 request with `headers` to a streaming URL and
/// returns the status code and the whole response text.
pub async fn http_request(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut tcp = TcpStream::connect(host).await.expect("connect");
    let mut request = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    // The server keeps the connection open after an error: read until the
    // body announced by Content-Length is complete.
    while !complete(&response) {
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await;
        match read {
            Ok(Ok(n)) if n > 0 => response.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

fn complete(response: &[u8]) -> bool {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    body.len() >= length
}
