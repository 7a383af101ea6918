//! `ssl_session_timeout` and `ssl_session_tickets` for rustls. rustls resumes any session
//! it can decrypt (a ticket) or find (the session cache), whatever its age; nginx resumes
//! one for `ssl_session_timeout` (5 minutes unless set). Each session's bytes are stored
//! here behind the time they were made, and one older than the timeout is not resumed:
//! the client makes a full handshake, as with nginx.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::server::{ProducesTickets, StoresServerSessions};

/// The longest ticket lifetime TLS 1.3 allows a server to announce (RFC 8446, 4.6.1).
const MAX_TICKET_LIFETIME: u64 = 7 * 86_400;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn stamped(value: &[u8]) -> Vec<u8> {
    let mut out = now().to_be_bytes().to_vec();
    out.extend_from_slice(value);
    out
}

/// The session behind `stamped`'s stamp, unless it is older than `timeout` (or made in the
/// future: a clock set back).
fn unstamped(value: &[u8], timeout: u64) -> Option<Vec<u8>> {
    let (stamp, session) = value.split_first_chunk::<8>()?;
    let made = u64::from_be_bytes(*stamp);
    let now = now();
    (made <= now && now - made <= timeout).then(|| session.to_vec())
}

/// The session cache, its entries ending after the timeout.
#[derive(Debug)]
pub struct ExpiringCache {
    inner: Arc<dyn StoresServerSessions>,
    timeout: u64,
}

impl ExpiringCache {
    pub fn new(inner: Arc<dyn StoresServerSessions>, timeout: Duration) -> Self {
        Self {
            inner,
            timeout: timeout.as_secs(),
        }
    }
}

impl StoresServerSessions for ExpiringCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(key, stamped(&value))
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        unstamped(&self.inner.get(key)?, self.timeout)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        unstamped(&self.inner.take(key)?, self.timeout)
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

/// Session tickets (the keys shared by every listener and kept across reloads), ending
/// after the timeout; none at all with `ssl_session_tickets off`.
#[derive(Debug)]
pub struct ExpiringTickets {
    inner: Arc<dyn ProducesTickets>,
    timeout: u64,
    enabled: bool,
}

impl ExpiringTickets {
    pub fn new(inner: Arc<dyn ProducesTickets>, timeout: Duration, enabled: bool) -> Self {
        Self {
            inner,
            timeout: timeout.as_secs(),
            enabled,
        }
    }
}

impl ProducesTickets for ExpiringTickets {
    fn enabled(&self) -> bool {
        self.enabled && self.inner.enabled()
    }

    /// What the client is told (nginx sends `ssl_session_timeout` too).
    fn lifetime(&self) -> u32 {
        u32::try_from(self.timeout.min(MAX_TICKET_LIFETIME)).unwrap_or(u32::MAX)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.inner.encrypt(&stamped(plain))
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        unstamped(&self.inner.decrypt(cipher)?, self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_resumed_until_its_timeout() {
        let fresh = stamped(b"session");
        assert_eq!(unstamped(&fresh, 300).as_deref(), Some(&b"session"[..]));
        let old = [(now() - 301).to_be_bytes().to_vec(), b"session".to_vec()].concat();
        assert_eq!(unstamped(&old, 300), None);
        assert_eq!(unstamped(&old, 302).as_deref(), Some(&b"session"[..]));
        let future = [(now() + 60).to_be_bytes().to_vec(), b"s".to_vec()].concat();
        assert_eq!(unstamped(&future, 300), None);
        assert_eq!(unstamped(b"short", 300), None);
    }
}
