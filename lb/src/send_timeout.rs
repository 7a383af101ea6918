//! nginx's `send_timeout`: a response may wait for the client to read for at most this
//! long; then the request fails, which frees the node connection it held. nginx sets the
//! timer "only between two successive write operations", and so do both places here that
//! can wait on the client:
//! - [`SendTimed`], under each client connection: a write blocked on a full socket;
//! - [`Streams`], the executor of an HTTP/2 connection's streams: a stream stopped by the
//!   client's flow-control window, which leaves the socket writable and hyper simply not
//!   polling the response body. The stream is reset (`CANCEL`) once held up for the limit
//!   (at most a quarter of it later: the connection's watcher looks every eighth), and the
//!   connection lives on.

use std::future::Future;
use std::io::{Error, ErrorKind, IoSlice, Result};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tokio::time::{Instant, Sleep};

use crate::linger::{Drain, Linger};
use crate::upstream::lock;

/// A stream whose writes fail once one has been blocked for `limit`: a client's
/// (`send_timeout`), or a node's (`proxy_send_timeout`, a node that stops reading a request
/// body).
pub struct SendTimed<S> {
    io: S,
    limit: Duration,
    /// Who did not read, and the directive that says how long, for the error.
    peer: (&'static str, &'static str),
    /// Made at the first blocked write, reset at the next ones.
    timer: Option<Pin<Box<Sleep>>>,
    /// A write is blocked and `timer` runs for it.
    armed: bool,
    /// A client's: how its close drains what the client still sends, and how its socket
    /// is reset (`reset_timedout_connection`).
    drain: Option<(Drain, Reset<S>)>,
}

/// Resets a client's socket as it closes (`SO_LINGER` 0).
type Reset<S> = fn(&S);

impl<S> std::fmt::Debug for SendTimed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendTimed")
            .field("limit", &self.limit)
            .field("armed", &self.armed)
            .finish_non_exhaustive()
    }
}

impl<S> SendTimed<S> {
    /// A client connection, under `send_timeout`.
    pub fn new(io: S, limit: Duration) -> Self {
        Self::with_peer(io, limit, ("the client", "send_timeout"))
    }

    /// A node connection, under `proxy_send_timeout`.
    pub fn to_node(io: S, limit: Duration) -> Self {
        Self::with_peer(io, limit, ("the node", "proxy_send_timeout"))
    }

    fn with_peer(io: S, limit: Duration, peer: (&'static str, &'static str)) -> Self {
        Self {
            io,
            limit,
            peer,
            timer: None,
            armed: false,
            drain: None,
        }
    }
}

impl SendTimed<TcpStream> {
    /// A client connection: closes as `linger` says.
    pub fn lingering(mut self, linger: Arc<Linger>) -> Self {
        let reset = |tcp: &TcpStream| {
            if let Err(e) = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO)) {
                tracing::warn!("setsockopt(SO_LINGER) failed: {e}");
            }
        };
        self.drain = Some((Drain::new(linger), reset));
        self
    }
}

impl<S> Drop for SendTimed<S> {
    fn drop(&mut self) {
        if let Some((drain, reset)) = &self.drain
            && drain.linger().resets()
        {
            reset(&self.io);
        }
    }
}

impl<S: Unpin> SendTimed<S> {
    /// Runs one write operation under the timer.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<Result<T>>,
    ) -> Poll<Result<T>> {
        let poll = op(Pin::new(&mut self.io), cx);
        if poll.is_ready() {
            self.armed = false;
            return poll;
        }
        let limit = self.limit;
        let was_armed = std::mem::replace(&mut self.armed, true);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !was_armed {
            timer.as_mut().reset(Instant::now() + limit);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                if let Some((drain, _)) = &self.drain {
                    drain.linger().timed_out();
                }
                Poll::Ready(Err(Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "{} read nothing for {:?} ({})",
                        self.peer.0, self.limit, self.peer.1
                    ),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

tokio::task_local! {
    static STREAM: Arc<Turn>;
}

/// Whose turn it is in an HTTP/2 stream: neither's while the service makes the response
/// (the node's head is bounded by `proxy_read_timeout`), then the client's, except while a
/// node's response body's last poll found no data (`proxy_read_timeout` runs in the body
/// then). On the client's turn only the client's flow-control window keeps hyper from
/// sending: a response gluu-lb made itself (a 404, a 502) waits on it just as a node's.
#[derive(Debug, Default)]
pub struct Turn {
    /// Polls so far, shifted left by one; the low bit set on the client's turn.
    state: AtomicU64,
}

impl Turn {
    /// The turn of the HTTP/2 stream this task serves; none outside [`Streams`].
    pub fn current() -> Option<Arc<Turn>> {
        STREAM.try_with(Arc::clone).ok()
    }

    /// The response of the HTTP/2 stream this task serves has been made: the client's turn.
    pub fn responded() {
        let _ = STREAM.try_with(|t| t.polled(true));
    }

    /// The body was polled; `client`: it is the client's turn now.
    pub fn polled(&self, client: bool) {
        let polls = (self.state.load(Ordering::Relaxed) >> 1) + 1;
        self.state
            .store(polls << 1 | u64::from(client), Ordering::Relaxed);
    }
}

/// The executor of one HTTP/2 connection's streams, which keeps a list of their tasks: the
/// connection's watcher calls [`Streams::reset_stalled`] every [`Streams::period`]. No timer
/// per stream: a stream costs a place in the list, looked at by the watcher.
#[derive(Clone, Debug)]
pub struct Streams {
    limit: Duration,
    peer: SocketAddr,
    tasks: Arc<Mutex<Vec<Stream>>>,
}

#[derive(Debug)]
struct Stream {
    turn: Arc<Turn>,
    task: AbortHandle,
    /// The turn's state when the watcher last saw it change, and when that was.
    seen: Option<(u64, Instant)>,
}

/// Finished streams are dropped from the list when it reaches this length (or at the next
/// look): twice the 128 streams a connection may have open.
const PRUNE_AT: usize = 256;

impl Streams {
    pub fn new(limit: Duration, peer: SocketAddr) -> Self {
        Self {
            limit,
            peer,
            tasks: Arc::default(),
        }
    }

    /// How often [`Streams::reset_stalled`] should run.
    pub fn period(&self) -> Duration {
        gluu_common::relay::watch_period(self.limit)
    }

    /// Resets (`CANCEL`) every stream whose client has held it up for `limit`, and forgets
    /// the finished ones.
    pub fn reset_stalled(&self) {
        let now = Instant::now();
        lock(&self.tasks).retain_mut(|s| {
            if s.task.is_finished() {
                return false;
            }
            let state = s.turn.state.load(Ordering::Relaxed);
            let Some((_, since)) = s.seen.filter(|(seen, _)| *seen == state) else {
                s.seen = Some((state, now));
                return true;
            };
            if state & 1 == 1 && now - since >= self.limit {
                tracing::debug!(
                    "HTTP/2 stream of {} reset: the client read nothing for {:?} (send_timeout)",
                    self.peer,
                    self.limit
                );
                s.task.abort();
                return false;
            }
            true
        });
    }
}

impl<F> hyper::rt::Executor<F> for Streams
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let turn = Arc::new(Turn::default());
        let task = tokio::spawn(STREAM.scope(turn.clone(), fut)).abort_handle();
        let mut tasks = lock(&self.tasks);
        if tasks.len() >= PRUNE_AT {
            tasks.retain(|s| !s.task.is_finished());
        }
        tasks.push(Stream {
            turn,
            task,
            seen: None,
        });
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for SendTimed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize>> {
        self.get_mut().timed(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<Result<usize>> {
        self.get_mut()
            .timed(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().timed(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        match &mut this.drain {
            Some((drain, _)) => drain.poll_close(Pin::new(&mut this.io), cx),
            None => this.timed(cx, |io, cx| io.poll_shutdown(cx)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_blocked_write_fails_after_the_limit_and_a_reader_keeps_it_going() {
        let limit = Duration::from_secs(5);
        let (ours, mut peer) = tokio::io::duplex(16);
        let mut w = SendTimed::new(ours, limit);
        // The peer reads slowly but within the limit: every write goes through in the end.
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            while got.len() < 64 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                let n = peer.read(&mut buf).await.expect("read");
                got.extend_from_slice(&buf[..n]);
            }
            peer
        });
        w.write_all(&[7u8; 64])
            .await
            .expect("a reader within the limit");
        let _peer = reader.await.expect("join");
        // Now it reads nothing: the blocked write fails after the limit, not before.
        w.write_all(&[7u8; 16]).await.expect("fits the pipe");
        let started = Instant::now();
        let e = w.write_all(&[7u8; 16]).await.expect_err("blocked");
        assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
        let took = started.elapsed();
        assert!(took >= limit && took < limit * 2, "{took:?}");
    }
}
