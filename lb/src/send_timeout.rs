//! nginx's `send_timeout` on a client connection: a write to the client may wait for the
//! client to read for at most this long; then the connection fails, and with it the
//! request, which frees the node connection it held. nginx sets the timer "only between two
//! successive write operations", and so does [`SendTimed`]: it runs while a write is
//! blocked and stops when one goes through.

use std::future::Future;
use std::io::{Error, ErrorKind, IoSlice, Result};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A client stream whose writes fail once one has been blocked for `limit`.
pub struct SendTimed<S> {
    io: S,
    limit: Duration,
    /// Made at the first blocked write, reset at the next ones.
    timer: Option<Pin<Box<Sleep>>>,
    /// A write is blocked and `timer` runs for it.
    armed: bool,
}

impl<S> std::fmt::Debug for SendTimed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendTimed")
            .field("limit", &self.limit)
            .field("armed", &self.armed)
            .finish_non_exhaustive()
    }
}

impl<S> SendTimed<S> {
    pub fn new(io: S, limit: Duration) -> Self {
        Self {
            io,
            limit,
            timer: None,
            armed: false,
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
            Poll::Ready(()) => Poll::Ready(Err(Error::new(
                ErrorKind::TimedOut,
                format!(
                    "the client read nothing for {:?} (send_timeout)",
                    self.limit
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
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

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimed<S> {
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
        self.get_mut().timed(cx, |io, cx| io.poll_shutdown(cx))
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
