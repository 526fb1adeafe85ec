//! A registry token server on 127.0.0.1, standing in for the auth service
//! of a real registry (Docker Hub's auth.docker.io, Harbor's token service),
//! which the tests cannot reach. It speaks both halves of the distribution
//! token spec: `GET` with basic credentials (Docker's token flow) and `POST`
//! OAuth2 grants (`password` and `refresh_token`). Tokens are JWTs signed
//! with a throwaway RSA key (by the `openssl` command) whose self-signed
//! certificate the registry trusts as its `rootcertbundle`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;

/// The `service` the registry names in its challenge and tokens are for.
pub const SERVICE: &str = "pier-test-registry";
/// The `iss` of every token, which the registry is told to trust.
pub const ISSUER: &str = "pier-test-token-server";

/// One request the token server answered, for tests to check what a
/// client actually sent (never the secrets themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub method: String,
    /// `basic` for a GET with credentials, else the POST's `grant_type`.
    pub grant: String,
    pub client_id: String,
    pub service: String,
    pub scope: String,
    /// Whether a token was issued.
    pub granted: bool,
}

struct Accounts {
    user: String,
    password: String,
    /// The identity (refresh) token that stands for `user`.
    identity_token: String,
}

/// A running token server; stopped when dropped.
pub struct TokenServer {
    port: u16,
    cert: PathBuf,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    /// Starts a server that knows one account, `user` with `password`, and
    /// `identity_token` as its refresh token. Key and certificate go to `dir`.
    pub fn start(dir: &Path, user: &str, password: &str, identity_token: &str) -> Self {
        let key = dir.join("token-key.pem");
        let cert = dir.join("token-cert.pem");
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=pier-test-token-server", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run openssl (apt install openssl)");
        assert!(
            made.success(),
            "openssl could not make the token signing key"
        );
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .expect("openssl x509");
        assert!(
            der.status.success(),
            "openssl could not encode the certificate"
        );
        let signer = Signer {
            key,
            x5c: STANDARD.encode(der.stdout),
        };
        let accounts = Accounts {
            user: user.into(),
            password: password.into(),
            identity_token: identity_token.into(),
        };

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let port = listener.local_addr().expect("token server address").port();
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = serve(stream, &accounts, &signer, &requests);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Self {
            port,
            cert,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// The realm registries send clients to.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The certificate whose key signs the tokens (the registry's `rootcertbundle`).
    pub fn certificate(&self) -> &Path {
        &self.cert
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Signer {
    key: PathBuf,
    /// The certificate, base64 DER, for the JWT header's `x5c`.
    x5c: String,
}

impl Signer {
    /// A registry token (RS256 JWT) granting `scope` (`repository:name:a,b`).
    fn token(&self, subject: &str, scope: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let access: Vec<serde_json::Value> = scope
            .split(' ')
            .filter_map(|s| s.strip_prefix("repository:"))
            .filter_map(|s| s.rsplit_once(':'))
            .map(|(name, actions)| {
                json!({"type": "repository", "name": name,
                       "actions": actions.split(',').collect::<Vec<_>>()})
            })
            .collect();
        let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let claims = json!({
            "iss": ISSUER, "sub": subject, "aud": SERVICE,
            "exp": now + 600, "nbf": now - 60, "iat": now,
            "jti": format!("{now}-{}", SERIAL.fetch_add(1, Ordering::Relaxed)), "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut openssl = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run openssl dgst");
        openssl
            .stdin
            .take()
            .expect("openssl stdin")
            .write_all(signing_input.as_bytes())
            .expect("feed openssl");
        let out = openssl.wait_with_output().expect("openssl dgst");
        assert!(out.status.success(), "openssl could not sign a token");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(out.stdout))
    }
}

/// Makes every token's `jti` unique.
static SERIAL: AtomicU64 = AtomicU64::new(0);

/// Answers one HTTP/1.1 request and closes the connection.
fn serve(
    stream: TcpStream,
    accounts: &Accounts,
    signer: &Signer,
    log: &Mutex<Vec<TokenRequest>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let (mut length, mut authorization) = (0usize, String::new());
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "authorization" => authorization = value.trim().to_owned(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;

    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let params: Vec<(String, String)> = if method == "POST" {
        form_urlencoded::parse(&body).into_owned().collect()
    } else {
        form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    };
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let scope = param("scope");
    let (grant, subject) = if method == "POST" {
        let grant = param("grant_type");
        let ok = match grant.as_str() {
            "refresh_token" => param("refresh_token") == accounts.identity_token,
            "password" => {
                param("username") == accounts.user && param("password") == accounts.password
            }
            _ => false,
        };
        (grant, ok.then(|| accounts.user.clone()))
    } else {
        let expected = format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", accounts.user, accounts.password))
        );
        (
            "basic".to_owned(),
            (authorization == expected).then(|| accounts.user.clone()),
        )
    };
    log.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(TokenRequest {
            method: method.clone(),
            grant: grant.clone(),
            client_id: param("client_id"),
            service: param("service"),
            scope: scope.clone(),
            granted: subject.is_some(),
        });

    let (status, body) = match subject {
        Some(subject) if param("service") == SERVICE => {
            let token = signer.token(&subject, &scope);
            let mut answer = json!({"token": token, "access_token": token,
                                    "expires_in": 600, "scope": scope});
            if grant == "password" {
                answer["refresh_token"] = accounts.identity_token.clone().into();
            }
            ("200 OK", answer.to_string())
        }
        Some(_) => (
            "400 Bad Request",
            json!({"error": "invalid_request"}).to_string(),
        ),
        None if method == "POST" => (
            "400 Bad Request",
            json!({"error": "invalid_grant"}).to_string(),
        ),
        None => (
            "401 Unauthorized",
            json!({"details": "bad credentials"}).to_string(),
        ),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
