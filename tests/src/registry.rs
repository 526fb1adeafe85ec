//! Debian's `docker-registry` on a free 127.0.0.1 port, storage in a temp dir:
//! anonymous, behind basic auth (an htpasswd file made by `htpasswd -B`), or
//! behind a token server (the registry's `auth: token`). Debian's registry
//! (distribution 2.8) accepts basic auth over plain HTTP, so no TLS is needed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::secrets::RegistryAuth;
use tempfile::TempDir;

use crate::token_server::{self, TokenServer};

const BINARY: &str = "/usr/bin/docker-registry";

/// How a registry lets clients in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Anonymous,
    /// HTTP basic auth against an htpasswd file with one user.
    Htpasswd {
        user: String,
        password: String,
    },
    /// Bearer tokens from a [`TokenServer`] that knows one user, whose
    /// identity (refresh) token is `identity_token`.
    Token {
        user: String,
        password: String,
        identity_token: String,
    },
}

/// A running registry; stopped and its storage removed on drop.
pub struct Registry {
    child: Child,
    port: u16,
    access: Access,
    token_server: Option<TokenServer>,
    dir: TempDir,
}

impl Registry {
    /// Starts a registry that accepts anonymous pushes and pulls.
    pub fn start() -> Self {
        Self::start_with(Access::Anonymous)
    }

    /// Starts a registry with basic auth for one user.
    pub fn with_htpasswd(user: &str, password: &str) -> Self {
        Self::start_with(Access::Htpasswd {
            user: user.into(),
            password: password.into(),
        })
    }

    /// Starts a registry whose clients need tokens from a token server.
    pub fn with_token_auth(user: &str, password: &str, identity_token: &str) -> Self {
        Self::start_with(Access::Token {
            user: user.into(),
            password: password.into(),
            identity_token: identity_token.into(),
        })
    }

    pub fn start_with(access: Access) -> Self {
        let mut last_error = String::new();
        // The free port can be taken between probing and binding: retry.
        for _ in 0..3 {
            match Self::try_start(&access) {
                Ok(registry) => return registry,
                Err(e) => last_error = e,
            }
        }
        panic!("docker-registry did not start: {last_error}");
    }

    fn try_start(access: &Access) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = crate::free_port();
        let config = dir.path().join("config.yml");
        let storage = dir.path().join("storage");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        let mut token_server = None;
        match access {
            Access::Anonymous => {}
            Access::Htpasswd { user, password } => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .map_err(|e| format!("run htpasswd (apt install apache2-utils): {e}"))?;
                if !out.status.success() {
                    return Err("htpasswd failed".into());
                }
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, out.stdout).map_err(|e| e.to_string())?;
                yaml.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: pier-test\n    path: {}\n",
                    file.display()
                ));
            }
            Access::Token {
                user,
                password,
                identity_token,
            } => {
                let server = TokenServer::start(dir.path(), user, password, identity_token);
                yaml.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    \
                     rootcertbundle: {}\n",
                    server.realm(),
                    token_server::SERVICE,
                    token_server::ISSUER,
                    server.certificate().display()
                ));
                token_server = Some(server);
            }
        }
        std::fs::write(&config, yaml).map_err(|e| e.to_string())?;
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
            access: access.clone(),
            token_server,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if registry.answers() {
                return Ok(registry);
            }
            if let Ok(Some(status)) = registry.child.try_wait() {
                return Err(format!("exited with {status}: {}", registry.log()));
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

    pub fn access(&self) -> &Access {
        &self.access
    }

    /// The credentials the fixtures push with.
    pub fn push_auth(&self) -> RegistryAuth {
        match &self.access {
            Access::Anonymous => RegistryAuth::Anonymous,
            Access::Htpasswd { user, password } | Access::Token { user, password, .. } => {
                RegistryAuth::Basic(user.clone(), password.clone())
            }
        }
    }

    /// The token server of a registry with token auth.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token_server.as_ref()
    }

    /// What the registry logged so far (its access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Paths of the GET requests the registry answered with `status`, from
    /// its access log (`... "GET /v2/... HTTP/1.1" 200 ...`).
    pub fn gets(&self, status: u16) -> Vec<String> {
        let status = status.to_string();
        self.log()
            .lines()
            .filter_map(|l| l.split_once("\"GET ").map(|(_, rest)| rest))
            .filter_map(|rest| {
                let (request, after) = rest.split_once('"')?;
                let path = request.split(' ').next()?;
                (after.split_whitespace().next()? == status).then(|| path.to_owned())
            })
            .collect()
    }

    /// Whether `GET /v2/` gets any HTTP answer (401 counts: auth is on).
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
        stream.read_exact(&mut head).is_ok() && (head.ends_with(b"200") || head.ends_with(b"401"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
