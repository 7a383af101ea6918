//! nginx's two timers on a client connection between requests: `client_header_timeout`
//! from the connection's start (or the first byte after a response) until a request's head
//! has been read, and `keepalive_timeout` from a response's end until the next byte comes.
//! hyper has one timer for both (its header timer starts as the connection goes idle, and
//! is a new boxed timer per request), so gluu-lb keeps them itself: [`Pace`] is stamped as
//! requests begin and end ([`Open`]) and as bytes arrive ([`Stamp`]), and the
//! connection's watcher asks it for its [`Pace::deadline`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use gluu_common::tap::OnRead;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

/// Where one client connection stands between requests. Stamps are milliseconds after
/// `base`.
#[derive(Debug)]
pub struct Pace {
    base: Instant,
    /// `client_header_timeout`.
    header: Duration,
    /// Requests whose responses have not ended.
    open: AtomicU32,
    /// When a byte came while no request was open, plus one; 0: none since the last
    /// request began (the connection is idle, or busy).
    header_from: AtomicU64,
    /// When the last response ended.
    idle_from: AtomicU64,
    /// The `keepalive_timeout` (ms) of the block that answered the last request.
    keepalive: AtomicU64,
    /// Bytes of a request's head have come and the request has not begun (nginx's
    /// "Reading" in `stub_status`).
    reading: AtomicBool,
}

/// What ran out on a connection with no request open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// `client_header_timeout`: a request's head (or the first request) did not come
    /// whole in time. Nothing is in flight: the connection is dropped.
    Header,
    /// `keepalive_timeout`: no byte since the last response. The connection closes as in
    /// a graceful stop.
    Idle,
}

impl Pace {
    /// A connection whose first request is awaited from now: the header timer runs.
    pub fn new(header: Duration, keepalive: Duration) -> Arc<Pace> {
        Arc::new(Pace {
            base: Instant::now(),
            header,
            open: AtomicU32::new(0),
            header_from: AtomicU64::new(1),
            idle_from: AtomicU64::new(0),
            keepalive: AtomicU64::new(millis(keepalive)),
            reading: AtomicBool::new(false),
        })
    }

    fn now(&self) -> u64 {
        millis(self.base.elapsed())
    }

    /// A request has begun (its head has been read); its response ends when the
    /// returned [`Open`] is dropped.
    pub fn begin(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.header_from.store(0, Ordering::Relaxed);
        self.reading.store(false, Ordering::Relaxed);
        Open(self.clone())
    }

    /// The block answering the request sets how long the connection may then wait.
    pub fn set_keepalive(&self, keepalive: Duration) {
        self.keepalive.store(millis(keepalive), Ordering::Relaxed);
    }

    /// Bytes came from the client.
    fn read(&self) {
        if self.open.load(Ordering::Acquire) == 0 {
            self.reading.store(true, Ordering::Relaxed);
            if self.header_from.load(Ordering::Relaxed) == 0 {
                self.header_from.store(self.now() + 1, Ordering::Relaxed);
            }
        }
    }

    /// Whether a request's head is being read, and how many requests are open (for
    /// `stub_status`: nginx's "Reading" and "Writing").
    pub fn state(&self) -> (bool, u32) {
        let open = self.open.load(Ordering::Acquire);
        (open == 0 && self.reading.load(Ordering::Relaxed), open)
    }

    /// When the connection's time runs out as things stand, and which timer that is;
    /// `None` while a request is open (its own timeouts bound it).
    pub fn deadline(&self) -> Option<(Instant, Expired)> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |ms: u64, limit: Duration| self.base + Duration::from_millis(ms) + limit;
        Some(match self.header_from.load(Ordering::Relaxed) {
            0 => (
                at(
                    self.idle_from.load(Ordering::Relaxed),
                    Duration::from_millis(self.keepalive.load(Ordering::Relaxed)),
                ),
                Expired::Idle,
            ),
            from => (at(from - 1, self.header), Expired::Header),
        })
    }

    /// Resolves when the header timer runs out, or the idle timer when `idle`. It sleeps
    /// until the deadline in force, or until the soonest one that has not started could
    /// be, whichever comes first: a head whose first byte comes from now on runs out
    /// `header` from now at the earliest, a response ending from now on `keepalive` (as
    /// the last request's block set it: a later request's block with a shorter one is
    /// seen that much late). So an idle connection wakes its task once or twice per idle
    /// period, and a busy one about once per the shorter limit.
    pub async fn expired(&self, idle: bool) -> Expired {
        loop {
            let now = Instant::now();
            let deadline = self.deadline();
            let unstarted = now
                + self.header.min(Duration::from_millis(
                    self.keepalive.load(Ordering::Relaxed),
                ));
            let wake = match deadline {
                Some((at, expired)) if idle || expired == Expired::Header => {
                    if at <= now {
                        return expired;
                    }
                    at.min(unstarted)
                }
                _ => unstarted,
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One request in flight on a connection, from its head to the end (or drop) of its
/// response, which ends it.
#[derive(Debug)]
pub struct Open(Arc<Pace>);

impl Drop for Open {
    fn drop(&mut self) {
        let pace = &self.0;
        pace.idle_from.store(pace.now(), Ordering::Relaxed);
        pace.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that ends its request's [`Open`] when it is done with (sent whole,
/// or dropped).
#[derive(Debug)]
pub struct Ending<B> {
    inner: B,
    _open: Open,
}

impl<B> Ending<B> {
    pub fn new(inner: B, open: Open) -> Self {
        Self { inner, _open: open }
    }
}

impl<B: HttpBody + Unpin> HttpBody for Ending<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a client connection's stream carries ([`gluu_common::tap::Tapped`]) to stamp its
/// [`Pace`] as bytes arrive.
#[derive(Debug)]
pub struct Stamp(pub Arc<Pace>);

impl OnRead for Stamp {
    fn on_read(&self, n: usize) {
        if n > 0 {
            self.0.read();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_header_timer_runs_until_a_head_and_from_the_first_byte_after_a_response() {
        let (header, keepalive) = (Duration::from_secs(10), Duration::from_secs(75));
        let pace = Pace::new(header, keepalive);
        let start = Instant::now();
        assert_eq!(pace.deadline(), Some((start + header, Expired::Header)));

        tokio::time::advance(Duration::from_secs(3)).await;
        let open = pace.begin();
        assert_eq!(pace.deadline(), None, "a request is open");
        // Bytes of the request's body, or of a pipelined request, start nothing.
        pace.read();
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(pace.deadline(), None);

        pace.set_keepalive(Duration::from_secs(5));
        drop(open);
        let ended = Instant::now();
        assert_eq!(
            pace.deadline(),
            Some((ended + Duration::from_secs(5), Expired::Idle))
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        pace.read();
        let first_byte = Instant::now();
        tokio::time::advance(Duration::from_secs(2)).await;
        // More bytes of the same head do not move the header timer (a slow client).
        pace.read();
        assert_eq!(
            pace.deadline(),
            Some((first_byte + header, Expired::Header))
        );
        let _open = pace.begin();
        assert_eq!(pace.deadline(), None);
    }

    /// Waits for `pace.expired(idle)` on its own task: what ran out, and when.
    fn watch(pace: &Arc<Pace>, idle: bool) -> tokio::task::JoinHandle<(Expired, Instant)> {
        let pace = pace.clone();
        tokio::spawn(async move { (pace.expired(idle).await, Instant::now()) })
    }

    #[tokio::test(start_paused = true)]
    async fn the_watcher_wakes_at_each_deadline_as_the_connection_moves_on() {
        let (header, keepalive) = (Duration::from_secs(60), Duration::from_secs(1));
        let pace = Pace::new(header, keepalive);
        let start = Instant::now();
        let watcher = watch(&pace, true);
        tokio::task::yield_now().await;
        // The watcher sleeps on the header timer. The first request comes at once, its response ends 400 ms later: the idle
        // timer, far shorter than the header timer the watcher first slept on, runs out
        // on time.
        let open = pace.begin();
        tokio::time::sleep(Duration::from_millis(400)).await;
        drop(open);
        let (expired, at) = watcher.await.expect("join");
        assert_eq!(
            (expired, at - start),
            (Expired::Idle, Duration::from_millis(1400))
        );

        // Watching the header timer only: an idle connection runs nothing out, the first
        // byte of a head starts the header timer.
        let pace = Pace::new(Duration::from_secs(2), keepalive);
        drop(pace.begin());
        let watcher = watch(&pace, false);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!watcher.is_finished(), "idle is not watched");
        pace.read();
        let byte = Instant::now();
        let (expired, at) = watcher.await.expect("join");
        assert_eq!(
            (expired, at - byte),
            (Expired::Header, Duration::from_secs(2))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_when_every_stream_has_ended() {
        let pace = Pace::new(Duration::from_secs(10), Duration::from_secs(20));
        let (a, b) = (pace.begin(), pace.begin());
        drop(a);
        assert_eq!(pace.deadline(), None, "one stream is still open");
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(b);
        assert_eq!(
            pace.deadline(),
            Some((Instant::now() + Duration::from_secs(20), Expired::Idle))
        );
    }
}
