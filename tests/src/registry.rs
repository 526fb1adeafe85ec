//! Debian's `docker-registry` on a free 127.0.0.1 port, storage in a temp dir.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const BINARY: &str = "/usr/bin/docker-registry";

/// A running registry; stopped and its storage removed on drop.
pub struct Registry {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Registry {
    /// Starts a registry that accepts anonymous pushes and pulls.
    pub fn start() -> Self {
        let mut last_error = String::new();
        // The free port can be taken between probing and binding: retry.
        for _ in 0..3 {
            match Self::try_start() {
                Ok(registry) => return registry,
                Err(e) => last_error = e,
            }
        }
        panic!("docker-registry did not start: {last_error}");
    }

    fn try_start() -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = crate::free_port();
        let config = dir.path().join("config.yml");
        let storage = dir.path().join("storage");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
                 delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("registry.log")).map_err(|e| e.to_string())?;
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {BINARY} (apt install docker-registry): {e}"))?;
        let mut registry = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if registry.answers() {
                return Ok(registry);
            }
            if let Ok(Some(status)) = registry.child.try_wait() {
                let log = std::fs::read_to_string(registry._dir.path().join("registry.log"));
                return Err(format!("exited with {status}: {}", log.unwrap_or_default()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("no answer on 127.0.0.1:{port} within 15s"))
    }

    /// `host:port` as image references name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether `GET /v2/` answers 200.
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.host());
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).is_ok() && head.ends_with(b"200")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
