//! `ssl_session_timeout` and `ssl_session_tickets` for rustls. rustls resumes any session
//! it can decrypt (a ticket) or find (the session cache), whatever its age; nginx resumes
//! one for `ssl_session_timeout` (5 minutes unless set). Each session's bytes are stored
//! here behind the time they were made, and one older than the timeout is not resumed:
//! the client makes a full handshake, as with nginx.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
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

/// Session tickets under the keys of `ssl_session_ticket_key` files, so that every
/// balancer given the same files resumes the others' sessions (a pair behind one
/// address). A file is nginx's: 48 or 80 random bytes, the first 16 naming the key. A
/// ticket is the name, a random nonce, and the session sealed with AES-256-GCM under a
/// key derived from the rest of the file (HKDF-SHA256); the first file's key seals, any
/// file's opens, by name. The tickets are gluu-lb's own: nginx's cannot be read, nor
/// gluu-lb's by nginx (their sessions' contents differ anyway).
pub struct KeyTickets {
    keys: Vec<([u8; NAME_LEN], LessSafeKey)>,
}

const NAME_LEN: usize = 16;

impl std::fmt::Debug for KeyTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyTickets")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl KeyTickets {
    /// The tickets of these files' contents, in their order; `Err`: which file, and
    /// what is wrong with it (nginx's words).
    pub fn new(files: &[Vec<u8>]) -> Result<Self, (usize, String)> {
        let keys = files
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                if bytes.len() != 48 && bytes.len() != 80 {
                    return Err((i, "must be 48 or 80 bytes".to_owned()));
                }
                let (name, secret) = bytes.split_at(NAME_LEN);
                let name: [u8; NAME_LEN] = name.try_into().expect("16 bytes");
                let info = [&name[..]];
                let prk = Salt::new(HKDF_SHA256, b"gluu-lb session ticket key").extract(secret);
                let okm = prk
                    .expand(&info, &AES_256_GCM)
                    .map_err(|_| (i, "cannot derive a key".to_owned()))?;
                Ok((name, LessSafeKey::new(UnboundKey::from(okm))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { keys })
    }
}

impl ProducesTickets for KeyTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        u32::try_from(MAX_TICKET_LIFETIME).unwrap_or(u32::MAX)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let (name, key) = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut sealed = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&name[..]),
            &mut sealed,
        )
        .ok()?;
        let mut ticket = Vec::with_capacity(NAME_LEN + NONCE_LEN + sealed.len());
        ticket.extend_from_slice(name);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let name = ticket.get(..NAME_LEN)?;
        let nonce = ticket.get(NAME_LEN..NAME_LEN + NONCE_LEN)?;
        let (_, key) = self.keys.iter().find(|(n, _)| n == name)?;
        let mut sealed = ticket.get(NAME_LEN + NONCE_LEN..)?.to_vec();
        let plain = key
            .open_in_place(
                Nonce::try_assume_unique_for_key(nonce).ok()?,
                Aad::from(name),
                &mut sealed,
            )
            .ok()?
            .len();
        sealed.truncate(plain);
        Some(sealed)
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

    #[test]
    fn key_files_seal_with_the_first_and_open_with_any() {
        let (a, b) = (vec![1u8; 80], vec![2u8; 48]);
        let first = KeyTickets::new(&[a.clone(), b.clone()]).expect("keys");
        let second = KeyTickets::new(&[b.clone(), a.clone()]).expect("keys");
        let ticket = first.encrypt(b"session").expect("sealed");
        assert_eq!(&ticket[..16], &a[..16], "named by the first file");
        assert_eq!(second.decrypt(&ticket).as_deref(), Some(&b"session"[..]));
        assert_eq!(first.decrypt(&ticket).as_deref(), Some(&b"session"[..]));
        // A file that is not among the keys, and a ticket changed on the way.
        let other = KeyTickets::new(std::slice::from_ref(&b)).expect("keys");
        assert_eq!(other.decrypt(&ticket), None);
        let mut bent = ticket.clone();
        *bent.last_mut().expect("bytes") ^= 1;
        assert_eq!(first.decrypt(&bent), None);
        // Same name, other secret: not opened.
        let mut c = a.clone();
        c[40] ^= 1;
        assert_eq!(KeyTickets::new(&[c]).expect("keys").decrypt(&ticket), None);
        assert!(KeyTickets::new(&[vec![0; 47]]).is_err());
    }
}
