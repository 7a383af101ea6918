//! nginx's lingering close (`lingering_close`, `lingering_time`, `lingering_timeout`). A
//! client connection that gluu-lb closes while the client may still be sending (a request
//! body it did not read: a 413, a `return`, a refusal, a node that answered early) is not
//! closed at once: the kernel would answer the unread bytes with a reset, and a reset can
//! reach the client before it has read the response, which it then never sees (curl:
//! "send failure: connection reset"; 6 uploads in 20 to a 1k `client_max_body_size`
//! before this). Instead the write side is shut (the response and TLS `close_notify` go
//! out with a FIN), and what comes in is read and thrown away until the client closes,
//! `lingering_timeout` passes without a byte, or `lingering_time` has passed in all.
//!
//! And `reset_timedout_connection`: a connection closed because the client ran out of
//! time (`client_header_timeout`, `client_body_timeout`, `send_timeout`) or by `return
//! 444` is not drained, and with the line on it is reset (`SO_LINGER` 0) rather than
//! closed: the kernel drops what it still held to send and keeps no `FIN_WAIT` state for it.

use std::io::Result;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use tokio::time::{Instant, Sleep};

use crate::config::proxy::{LingerClose, ProxySettings};

/// How one client connection closes: the settings of the block that answered its last
/// request, whether that request's body was left unread, whether the client ran out of
/// time. Shared by the request side and the connection's socket ([`Drain`]).
#[derive(Debug)]
pub struct Linger {
    close: AtomicU8,
    time_ms: AtomicU64,
    timeout_ms: AtomicU64,
    /// `reset_timedout_connection`.
    reset: AtomicBool,
    unread: AtomicBool,
    timed_out: AtomicBool,
    /// The connection closes after the response being made.
    closing: AtomicBool,
    /// Told when the client runs out of time or the connection is to close: a body's
    /// discard ([`crate::discard`]) stops, and the close drains instead.
    stop: Notify,
}

impl Linger {
    /// Under `s` (the listener's default server's) until a request says otherwise.
    pub fn new(s: &ProxySettings) -> Arc<Linger> {
        let linger = Linger {
            close: AtomicU8::new(0),
            time_ms: AtomicU64::new(0),
            timeout_ms: AtomicU64::new(0),
            reset: AtomicBool::new(false),
            unread: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            stop: Notify::new(),
        };
        linger.set(s);
        Arc::new(linger)
    }

    /// The block answering a request sets how its connection closes.
    pub fn set(&self, s: &ProxySettings) {
        let l = &s.lingering;
        self.close.store(l.close as u8, Ordering::Relaxed);
        self.time_ms.store(millis(l.time), Ordering::Relaxed);
        self.timeout_ms.store(millis(l.timeout), Ordering::Relaxed);
        self.reset
            .store(s.reset_timedout_connection, Ordering::Relaxed);
    }

    /// A request with a body began (`true`), or its body has all been read (`false`).
    pub fn unread(&self, unread: bool) {
        self.unread.store(unread, Ordering::Relaxed);
    }

    /// A shutdown is only a shutdown from now on: the connection was upgraded (WebSocket),
    /// and its relay, which shuts the client's side when the node's ends, reads on (a drain
    /// would take bytes from under the TLS stream it reads); or a body's discard took all of
    /// `lingering_time` (nginx then closes at once).
    pub fn without_drain(&self) {
        self.close.store(LingerClose::Off as u8, Ordering::Relaxed);
    }

    /// The client ran out of time (or `return 444` drops it): the connection closes
    /// without a drain, and is reset if `reset_timedout_connection` says so.
    pub fn timed_out(&self) {
        self.timed_out.store(true, Ordering::Relaxed);
        self.stop.notify_waiters();
    }

    /// The HTTP/1 connection closes after the response being made.
    pub fn closing(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.stop.notify_waiters();
    }

    /// Whether the client ran out of time or the connection closes after this response.
    pub fn is_ending(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed) || self.closing.load(Ordering::Relaxed)
    }

    /// Ready when the client runs out of time or the connection is to close (told from
    /// the first poll or `enable` on).
    pub fn ending(&self) -> Notified<'_> {
        self.stop.notified()
    }

    /// `lingering_time` and `lingering_timeout` of the block that answered last.
    pub fn limits(&self) -> (Duration, Duration) {
        (self.limit(&self.time_ms), self.limit(&self.timeout_ms))
    }

    /// Whether the socket is to be reset as it closes.
    pub fn resets(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed) && self.reset.load(Ordering::Relaxed)
    }

    fn close(&self) -> LingerClose {
        match self.close.load(Ordering::Relaxed) {
            x if x == LingerClose::Off as u8 => LingerClose::Off,
            x if x == LingerClose::Always as u8 => LingerClose::Always,
            _ => LingerClose::On,
        }
    }

    fn limit(&self, ms: &AtomicU64) -> Duration {
        Duration::from_millis(ms.load(Ordering::Relaxed))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A client socket's close: shut the write side, then drain as [`Linger`] says.
#[derive(Debug)]
pub struct Drain {
    linger: Arc<Linger>,
    state: State,
}

#[derive(Debug)]
enum State {
    Open,
    /// `lingering_close on` with the body read: linger only if bytes are already here
    /// (nginx: more in its buffer, or the socket readable).
    Probe,
    Draining {
        /// `lingering_time` from the shutdown.
        until: Instant,
        /// `lingering_timeout` from the last byte, or `until` if sooner.
        timer: Pin<Box<Sleep>>,
    },
    Closed,
}

/// Read and thrown away per call while draining, as nginx's `NGX_HTTP_LINGERING_BUFFER_SIZE`.
const CHUNK: usize = 4096;

impl Drain {
    pub fn new(linger: Arc<Linger>) -> Drain {
        Drain {
            linger,
            state: State::Open,
        }
    }

    /// `poll_shutdown` of the client's socket `io`: ready once the write side is shut and
    /// the drain (if any) is over; the socket then closes.
    pub fn poll_close<S>(&mut self, mut io: Pin<&mut S>, cx: &mut Context<'_>) -> Poll<Result<()>>
    where
        S: AsyncRead + AsyncWrite,
    {
        loop {
            match &mut self.state {
                State::Open => {
                    ready!(io.as_mut().poll_shutdown(cx))?;
                    let l = &self.linger;
                    self.state = match l.close() {
                        _ if l.timed_out.load(Ordering::Relaxed) => State::Closed,
                        LingerClose::Off => State::Closed,
                        LingerClose::On if !l.unread.load(Ordering::Relaxed) => State::Probe,
                        LingerClose::On | LingerClose::Always => self.draining(),
                    };
                }
                State::Probe => {
                    self.state = match discard(io.as_mut(), cx) {
                        Poll::Ready(Some(_)) => self.draining(),
                        Poll::Ready(None) | Poll::Pending => State::Closed,
                    };
                }
                State::Draining { until, timer } => match discard(io.as_mut(), cx) {
                    Poll::Ready(Some(_)) => {
                        let next = Instant::now() + self.linger.limit(&self.linger.timeout_ms);
                        timer.as_mut().reset(next.min(*until));
                    }
                    Poll::Ready(None) => self.state = State::Closed,
                    Poll::Pending => {
                        ready!(timer.as_mut().poll(cx));
                        self.state = State::Closed;
                    }
                },
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }

    pub fn linger(&self) -> &Linger {
        &self.linger
    }

    fn draining(&self) -> State {
        let now = Instant::now();
        let until = now + self.linger.limit(&self.linger.time_ms);
        let first = now + self.linger.limit(&self.linger.timeout_ms);
        State::Draining {
            until,
            timer: Box::pin(tokio::time::sleep_until(first.min(until))),
        }
    }
}

/// Reads a chunk and throws it away: `Some(n)` with `n` > 0 bytes, `None` at the end or an
/// error (there is nothing to drain then).
fn discard<S: AsyncRead>(io: Pin<&mut S>, cx: &mut Context<'_>) -> Poll<Option<usize>> {
    let mut buf = [0u8; CHUNK];
    let mut buf = ReadBuf::new(&mut buf);
    match ready!(io.poll_read(cx, &mut buf)) {
        Ok(()) if !buf.filled().is_empty() => Poll::Ready(Some(buf.filled().len())),
        _ => Poll::Ready(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn settings(close: LingerClose) -> ProxySettings {
        let mut s = ProxySettings::default();
        s.lingering.close = close;
        s
    }

    /// Closes `ours` through a [`Drain`]; how long that took.
    async fn closed(ours: DuplexStream, linger: Arc<Linger>) -> Duration {
        let started = Instant::now();
        let mut drain = Drain::new(linger);
        let mut ours = ours;
        std::future::poll_fn(|cx| drain.poll_close(Pin::new(&mut ours), cx))
            .await
            .expect("closed");
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn an_unread_body_is_drained_until_the_client_stops_or_the_limits() {
        // The client keeps sending a byte a second: drained until lingering_time.
        let (ours, mut client) = tokio::io::duplex(64);
        let linger = Linger::new(&settings(LingerClose::On));
        linger.unread(true);
        let sender = tokio::spawn(async move {
            for _ in 0..100 {
                if client.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let took = closed(ours, linger.clone()).await;
        assert_eq!(took, Duration::from_secs(30), "lingering_time");
        sender.abort();

        // Silence after some bytes: lingering_timeout after the last one.
        let (ours, mut client) = tokio::io::duplex(64);
        client.write_all(b"body").await.expect("write");
        assert_eq!(closed(ours, linger.clone()).await, Duration::from_secs(5));

        // The client closes: at once, and its side sees the end.
        let (ours, mut client) = tokio::io::duplex(64);
        client.shutdown().await.expect("shutdown");
        assert_eq!(closed(ours, linger.clone()).await, Duration::ZERO);
        assert_eq!(client.read(&mut [0u8; 8]).await.expect("read"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_body_lingers_only_over_bytes_already_there_and_off_never() {
        let linger = Linger::new(&settings(LingerClose::On));
        let (ours, _client) = tokio::io::duplex(64);
        assert_eq!(closed(ours, linger.clone()).await, Duration::ZERO, "quiet");
        let (ours, mut client) = tokio::io::duplex(64);
        client.write_all(b"GET /next").await.expect("write");
        assert_eq!(closed(ours, linger.clone()).await, Duration::from_secs(5));

        linger.set(&settings(LingerClose::Off));
        linger.unread(true);
        let (ours, mut client) = tokio::io::duplex(64);
        client.write_all(b"body").await.expect("write");
        assert_eq!(closed(ours, linger.clone()).await, Duration::ZERO, "off");

        linger.set(&settings(LingerClose::Always));
        linger.unread(false);
        let (ours, _client) = tokio::io::duplex(64);
        assert_eq!(
            closed(ours, linger.clone()).await,
            Duration::from_secs(5),
            "always"
        );

        // An upgraded connection's relay reads on after shutting the client's side: no drain.
        let upgraded = Linger::new(&settings(LingerClose::Always));
        upgraded.without_drain();
        let mut drain = Drain::new(upgraded);
        let (mut ours, mut client) = tokio::io::duplex(64);
        client.write_all(b"frame").await.expect("write");
        std::future::poll_fn(|cx| drain.poll_close(Pin::new(&mut ours), cx))
            .await
            .expect("shut");
        let mut frame = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(60), ours.read_exact(&mut frame))
            .await
            .expect("left for the relay")
            .expect("read");
        assert_eq!(&frame, b"frame");

        // A client out of time is not waited for, and reset only with the line.
        linger.timed_out();
        let (ours, _client) = tokio::io::duplex(64);
        assert_eq!(
            closed(ours, linger.clone()).await,
            Duration::ZERO,
            "timed out"
        );
        assert!(!linger.resets());
        let mut s = settings(LingerClose::Always);
        s.reset_timedout_connection = true;
        linger.set(&s);
        assert!(linger.resets());
    }
}
