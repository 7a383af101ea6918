//! A stream with something attached: what it holds lives exactly as long as the stream (a
//! `worker_connections` slot, say, also after hyper hands an upgraded socket over), and
//! sees every read (a byte counter).

use std::io::{IoSlice, Result};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

/// Told of each completed read: `n` bytes, 0 at the end of the stream.
pub trait OnRead {
    fn on_read(&self, _n: usize) {}
}

/// A permit is only held: it goes back when the stream is dropped.
impl OnRead for OwnedSemaphorePermit {}

/// `io` with `tap` attached; reads and writes go straight through.
#[derive(Debug)]
pub struct Tapped<S, T> {
    io: S,
    tap: T,
}

impl<S, T> Tapped<S, T> {
    pub fn new(io: S, tap: T) -> Self {
        Self { io, tap }
    }
}

impl<S: AsyncRead + Unpin, T: OnRead + Unpin> AsyncRead for Tapped<S, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            self.tap.on_read(buf.filled().len() - before);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin, T: Unpin> AsyncWrite for Tapped<S, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
