//! Both directions of a tunneled connection, copied until both have ended, with stunnel's
//! timeouts: the connection closes when no byte has moved either way for `idle`
//! (`TIMEOUTidle`; nginx's `proxy_read_timeout` on an upgraded connection), or when one
//! direction has ended and the other has not followed within `close` (`TIMEOUTclose`).
//! gluu-tunnel relays every connection this way, gluu-lb its upgraded (WebSocket) ones.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::tap::{OnRead, Tapped};

/// Copy buffer per direction: one full TLS record's plaintext.
const BUFFER: usize = 16 * 1024;

/// When a quiet or half-closed connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub idle: Duration,
    pub close: Duration,
}

/// Why a relay ended.
#[derive(Debug)]
pub enum End {
    /// Both directions reached their end.
    Done,
    /// A read or write failed.
    Failed(std::io::Error),
    /// Nothing moved for [`Timeouts::idle`].
    Idle,
    /// One direction ended and the other did not within [`Timeouts::close`].
    CloseTimeout,
    /// `stop` was cancelled.
    Stopped,
}

/// What a relay did: how it ended and the bytes it carried each way, also when it was cut.
#[derive(Debug)]
pub struct Relayed {
    pub end: End,
    /// Bytes read from `a` (and written to `b`).
    pub from_a: u64,
    /// Bytes read from `b` (and written to `a`).
    pub from_b: u64,
}

/// Activity of one direction, read by the relay's watchdog.
#[derive(Debug, Default)]
struct Meter {
    bytes: AtomicU64,
    eof: AtomicBool,
}

/// What a relay attaches to each side: the side's [`Meter`] and, if any, a daemon's counter.
struct Counting<'a> {
    meter: &'a Meter,
    counter: Option<&'a Counter>,
}

impl OnRead for Counting<'_> {
    fn on_read(&self, n: usize) {
        if n == 0 {
            self.meter.eof.store(true, Ordering::Relaxed);
        } else {
            self.meter.bytes.fetch_add(n as u64, Ordering::Relaxed);
            if let Some(c) = self.counter {
                c.inc_by(n as u64);
            }
        }
    }
}

/// How often a watchdog for `timeout` looks: an eighth of it, so the timeout fires within
/// 12.5% of its value, but at least every 5 s and at most every 10 ms.
pub fn watch_period(timeout: Duration) -> Duration {
    (timeout / 8).clamp(Duration::from_millis(10), Duration::from_secs(5))
}

/// Relays `a` and `b` (each direction half-closed on its own) until both have ended, a
/// timeout fires, or `stop` completes. `counters` also count the bytes read from `a` and
/// from `b`, as they pass.
pub async fn relay<A, B>(
    a: A,
    b: B,
    timeouts: Timeouts,
    stop: impl Future<Output = ()>,
    counters: [Option<&Counter>; 2],
) -> Relayed
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (from_a, from_b) = (Meter::default(), Meter::default());
    let mut a = Tapped::new(
        a,
        Counting {
            meter: &from_a,
            counter: counters[0],
        },
    );
    let mut b = Tapped::new(
        b,
        Counting {
            meter: &from_b,
            counter: counters[1],
        },
    );
    let period = watch_period(timeouts.idle.min(timeouts.close));
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUFFER, BUFFER);
    tokio::pin!(copy);
    tokio::pin!(stop);
    let mut seen = 0;
    let mut quiet_since = Instant::now();
    let mut half_closed_since: Option<Instant> = None;
    let end = loop {
        tokio::select! {
            r = &mut copy => break r.map_or_else(End::Failed, |_| End::Done),
            () = &mut stop => break End::Stopped,
            _ = tokio::time::sleep(period) => {
                let now = Instant::now();
                let moved = from_a.bytes.load(Ordering::Relaxed)
                    + from_b.bytes.load(Ordering::Relaxed);
                if moved != seen {
                    seen = moved;
                    quiet_since = now;
                } else if now - quiet_since >= timeouts.idle {
                    break End::Idle;
                }
                if from_a.eof.load(Ordering::Relaxed) || from_b.eof.load(Ordering::Relaxed) {
                    let since = *half_closed_since.get_or_insert(now);
                    if now - since >= timeouts.close {
                        break End::CloseTimeout;
                    }
                }
            }
        }
    };
    Relayed {
        end,
        from_a: from_a.bytes.load(Ordering::Relaxed),
        from_b: from_b.bytes.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::sync::CancellationToken;

    const LONG: Timeouts = Timeouts {
        idle: Duration::from_secs(60),
        close: Duration::from_secs(60),
    };

    #[tokio::test]
    async fn carries_both_ways_counts_and_ends_when_both_do() {
        let (a, mut a_peer) = tokio::io::duplex(1024);
        let (b, mut b_peer) = tokio::io::duplex(1024);
        let counter = Counter::default();
        let stop = CancellationToken::new();
        let run = tokio::spawn({
            let counter = counter.clone();
            async move { relay(a, b, LONG, stop.cancelled(), [Some(&counter), None]).await }
        });
        a_peer.write_all(b"hello").await.expect("write");
        let mut got = [0u8; 5];
        b_peer.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"hello");
        b_peer.write_all(b"hi").await.expect("write");
        let mut got = [0u8; 2];
        a_peer.read_exact(&mut got).await.expect("read");
        a_peer.shutdown().await.expect("shutdown");
        b_peer.shutdown().await.expect("shutdown");
        let r = run.await.expect("join");
        assert!(matches!(r.end, End::Done), "{:?}", r.end);
        assert_eq!((r.from_a, r.from_b, counter.get()), (5, 2, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_ends_after_idle_and_a_half_closed_one_after_close() {
        let t = Timeouts {
            idle: Duration::from_secs(10),
            close: Duration::from_secs(3),
        };
        let (a, _a_peer) = tokio::io::duplex(64);
        let (b, _b_peer) = tokio::io::duplex(64);
        let started = Instant::now();
        let r = relay(a, b, t, std::future::pending(), [None, None]).await;
        assert!(matches!(r.end, End::Idle), "{:?}", r.end);
        let took = started.elapsed();
        assert!(took >= t.idle && took < t.idle * 2, "{took:?}");

        let (a, mut a_peer) = tokio::io::duplex(64);
        let (b, _b_peer) = tokio::io::duplex(64);
        a_peer.shutdown().await.expect("shutdown");
        let started = Instant::now();
        let r = relay(a, b, t, std::future::pending(), [None, None]).await;
        assert!(matches!(r.end, End::CloseTimeout), "{:?}", r.end);
        assert!(started.elapsed() < t.idle, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn stop_cuts_it() {
        let (a, _a_peer) = tokio::io::duplex(64);
        let (b, _b_peer) = tokio::io::duplex(64);
        let stop = CancellationToken::new();
        stop.cancel();
        let r = relay(a, b, LONG, stop.cancelled(), [None, None]).await;
        assert!(matches!(r.end, End::Stopped), "{:?}", r.end);
    }
}
