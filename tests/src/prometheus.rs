//! A real Prometheus (Debian's `prometheus` package) scraping one target
//! every second, with its own storage in a temp dir, queried through its
//! HTTP API. Killed on drop.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct Prometheus {
    _dir: TempDir,
    child: Child,
    api: SocketAddr,
}

/// One sample of an instant query: its labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub value: f64,
}

impl Prometheus {
    /// Starts Prometheus scraping `target`'s `/metrics` every second.
    pub fn start(target: SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
                 scrape_configs:\n  - job_name: pierd\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={api}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("run prometheus (contrib/setup.sh installs Debian's prometheus): {e}")
            });
        Self {
            _dir: dir,
            child,
            api,
        }
    }

    /// The samples of an instant query, or the error Prometheus gave.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", promql)
            .finish();
        let body = get(self.api, &format!("/api/v1/query?{query}")).await?;
        let reply: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if reply["status"] != "success" {
            return Err(body);
        }
        let results = reply["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(results
            .into_iter()
            .map(|r| Sample {
                labels: r["metric"].as_object().cloned().unwrap_or_default(),
                value: r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN),
            })
            .collect())
    }

    /// Waits until `promql` gives exactly one sample and `good` accepts its
    /// value; returns it. Fails naming what Prometheus last said.
    pub async fn wait_for(
        &self,
        promql: &str,
        good: impl Fn(f64) -> bool,
        within: Duration,
    ) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let last = match self.query(promql).await {
                Ok(samples) if samples.len() == 1 && good(samples[0].value) => {
                    return samples[0].value;
                }
                Ok(samples) => format!("{samples:?}"),
                Err(e) => e,
            };
            assert!(
                Instant::now() < deadline,
                "{promql}: not as expected within {within:?}; Prometheus says {last}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of `GET path` (HTTP/1.0: the server closes when done).
async fn get(addr: SocketAddr, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .map_err(|_| format!("{addr} did not answer {path}"))?
        .map_err(|e| e.to_string())?;
    let reply = String::from_utf8_lossy(&reply);
    match reply.split_once("\r\n\r\n") {
        Some((_, body)) => Ok(body.to_owned()),
        None => Err(format!("no HTTP reply: {reply}")),
    }
}

/// The body of `GET /metrics` from `addr`, for tests that read it directly.
pub async fn scrape(addr: SocketAddr) -> Result<String, String> {
    get(addr, "/metrics").await
}
