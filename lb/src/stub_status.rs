//! nginx's `stub_status`: the counts of client connections and requests that monitoring
//! tools scrape from a location (Zabbix's nginx template, the Prometheus nginx exporter,
//! Datadog's nginx check), in nginx's words and layout.
//!
//! No count is touched per request for it: the open connections are listed here as they
//! come and go ([`Live::enter`]), and a status request walks the list and asks each
//! connection's [`crate::pace::Pace`] where it stands.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::forward::Conn;
use crate::upstream::lock;

/// The client connections open now (past their TLS handshake), and the requests of
/// those that have closed.
#[derive(Debug, Default)]
pub struct Live {
    conns: Mutex<HashMap<usize, Arc<Conn>>>,
    retired: AtomicU64,
}

/// A connection on the [`Live`] list until dropped.
#[derive(Debug)]
pub struct Entered<'a> {
    live: &'a Live,
    key: usize,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if let Some(conn) = lock(&self.live.conns).remove(&self.key) {
            self.live
                .retired
                .fetch_add(conn.requests.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// What `stub_status` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    pub active: u64,
    pub accepts: u64,
    pub handled: u64,
    pub requests: u64,
    pub reading: u64,
    pub writing: u64,
    pub waiting: u64,
}

impl Live {
    /// `conn` is open from now until the returned guard is dropped.
    pub fn enter(&self, conn: &Arc<Conn>) -> Entered<'_> {
        let key = Arc::as_ptr(conn) as usize;
        lock(&self.conns).insert(key, conn.clone());
        Entered { live: self, key }
    }

    /// The counts, with `active` client connections (those still in their TLS handshake
    /// too, which nginx counts as waiting) and `accepted` since the start.
    pub fn counts(&self, active: u64, accepted: u64) -> Counts {
        let (mut reading, mut writing, mut requests) = (0, 0, self.retired.load(Ordering::Relaxed));
        for conn in lock(&self.conns).values() {
            let (head, open) = conn.pace.state();
            reading += u64::from(head);
            writing += u64::from(open);
            requests += conn.requests.load(Ordering::Relaxed);
        }
        Counts {
            active,
            // nginx counts a request from its first byte; gluu-lb's connections count
            // theirs once the head is whole.
            requests: requests + reading,
            // gluu-lb never accepts a connection it then drops for want of a slot: it
            // stops accepting (`worker_connections`), so every accepted one is handled.
            accepts: accepted,
            handled: accepted,
            reading,
            writing,
            waiting: active.saturating_sub(reading + writing),
        }
    }
}

impl Counts {
    /// nginx's text, byte for byte (its trailing spaces included).
    pub fn text(&self) -> String {
        format!(
            "Active connections: {} \nserver accepts handled requests\n {} {} {} \n\
             Reading: {} Writing: {} Waiting: {} \n",
            self.active,
            self.accepts,
            self.handled,
            self.requests,
            self.reading,
            self.writing,
            self.waiting
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_nginxs() {
        let counts = Counts {
            active: 291,
            accepts: 16630948,
            handled: 16630948,
            requests: 31070465,
            reading: 6,
            writing: 179,
            waiting: 106,
        };
        assert_eq!(
            counts.text(),
            "Active connections: 291 \nserver accepts handled requests\n \
             16630948 16630948 31070465 \nReading: 6 Writing: 179 Waiting: 106 \n"
        );
    }
}
