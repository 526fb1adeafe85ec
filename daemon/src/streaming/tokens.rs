//! The requests behind streaming URLs: each Exec, Attach or PortForward
//! call stores its request under a random token; the first connection to the
//! URL takes it out. Tokens expire (by default after a minute, as kubelet's
//! own streaming cache does).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_cri::v1::{AttachRequest, ExecRequest, PortForwardRequest};

/// Token bytes from the OS RNG (hex encoded in the URL): guessing one is
/// out of reach, and a URL is worth one session for one minute.
const TOKEN_BYTES: usize = 16;

/// A stored request, waiting for its client to connect.
#[derive(Debug, Clone)]
pub enum Pending {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

impl Pending {
    /// The URL path segment for this kind of request.
    pub fn kind(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("{0} streaming requests are already waiting for their clients")]
    Full(usize),
    #[error("no random bytes from the OS: {0}")]
    Random(String),
}

pub struct Tokens {
    entries: Mutex<HashMap<String, (Instant, Pending)>>,
    capacity: usize,
    ttl: Duration,
}

impl Tokens {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
            ttl,
        }
    }

    /// Stores `pending` under a fresh token and returns the token.
    pub fn insert(&self, pending: Pending) -> Result<String, TokenError> {
        let mut raw = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut raw).map_err(|e| TokenError::Random(e.to_string()))?;
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            let now = Instant::now();
            entries.retain(|_, (expires, _)| *expires > now);
        }
        if entries.len() >= self.capacity {
            return Err(TokenError::Full(entries.len()));
        }
        entries.insert(token.clone(), (Instant::now() + self.ttl, pending));
        Ok(token)
    }

    /// Takes the request out: a token works once, and not after it expired.
    pub fn take(&self, token: &str) -> Option<Pending> {
        let (expires, pending) = self.lock().remove(token)?;
        (Instant::now() < expires).then_some(pending)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Pending)>> {
        // Nothing here panics while holding the lock; a poisoned map is intact.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN_TTL: Duration = Duration::from_secs(60);

    fn exec() -> Pending {
        Pending::Exec(ExecRequest {
            container_id: "c".into(),
            ..Default::default()
        })
    }

    #[test]
    fn a_token_works_once() {
        let tokens = Tokens::new(8, TOKEN_TTL);
        let t = tokens.insert(exec()).unwrap_or_default();
        assert_eq!(t.len(), 2 * TOKEN_BYTES);
        assert!(t.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(matches!(tokens.take(&t), Some(Pending::Exec(_))));
        assert!(tokens.take(&t).is_none());
        assert!(tokens.take("0123").is_none());
    }

    #[test]
    fn tokens_differ_and_expire() {
        let tokens = Tokens::new(8, Duration::from_millis(20));
        let a = tokens.insert(exec()).unwrap_or_default();
        let b = tokens.insert(exec()).unwrap_or_default();
        assert_ne!(a, b);
        std::thread::sleep(Duration::from_millis(40));
        assert!(tokens.take(&a).is_none());
    }

    #[test]
    fn a_full_cache_refuses_until_entries_expire() {
        let tokens = Tokens::new(2, Duration::from_millis(20));
        assert!(tokens.insert(exec()).is_ok());
        assert!(tokens.insert(exec()).is_ok());
        assert_eq!(tokens.insert(exec()), Err(TokenError::Full(2)));
        std::thread::sleep(Duration::from_millis(40));
        assert!(tokens.insert(exec()).is_ok());
    }
}
