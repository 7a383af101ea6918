//! Bodies stream through gluu-lb frame by frame; [`Watched`] is the one wrapper around
//! them. It bounds the wait between two frames (`client_body_timeout` on requests,
//! `proxy_read_timeout` on responses), the total size (`client_max_body_size`), and runs a
//! closure with the byte count when the body is done or dropped (the access log line, the
//! node's active-request count). On an HTTP/2 response it also tells the stream whether
//! it waits on the node or on the client ([`Turn`], for `send_timeout`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body as HttpBody, Bytes, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::send_timeout::Turn;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body gluu-lb sends, either way.
pub type Body = BoxBody<Bytes, BoxError>;

pub fn text(s: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(s.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("no data for {0:?}")]
    Idle(Duration),
    #[error("body larger than client_max_body_size ({0} bytes)")]
    TooLarge(u64),
    /// The client's body could not be read: a malformed chunk, or a connection or stream
    /// that ended before the body did.
    #[error("unreadable: {0}")]
    Broken(#[source] hyper::Error),
}

impl BodyError {
    /// Why a request body failed, as [`crate::upstream::Failure`] names it.
    pub fn reason(&self) -> &'static str {
        match self {
            BodyError::Idle(_) => "client_body_timeout",
            BodyError::TooLarge(_) => "client_max_body_size",
            BodyError::Broken(_) => "client_body",
        }
    }
}

/// Called once with the bytes that went through and whether the body reached its end.
type OnEnd = Box<dyn FnOnce(u64, bool) + Send + Sync>;

/// A body with an idle timeout, an optional size limit and an end-of-body closure.
pub struct Watched<B: HttpBody> {
    inner: B,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    limit: Option<u64>,
    seen: u64,
    /// The bytes of HTTP/1.1 chunk framing around what went through, when counted.
    framing: Option<u64>,
    on_end: Option<OnEnd>,
    turn: Option<Arc<Turn>>,
}

impl<B: HttpBody> std::fmt::Debug for Watched<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("idle", &self.idle)
            .field("limit", &self.limit)
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl<B: HttpBody> Watched<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            limit: None,
            seen: 0,
            framing: None,
            on_end: None,
            turn: None,
        }
    }

    /// A response body of an HTTP/2 stream tells it when it waits on the node.
    pub fn turn(mut self, turn: Option<Arc<Turn>>) -> Self {
        self.turn = turn;
        self
    }

    /// More than `limit` bytes is an error (0: no limit, as nginx).
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = (limit > 0).then_some(limit);
        self
    }

    /// The body goes to the client in HTTP/1.1 chunks (`chunked`): the count given to
    /// [`Watched::on_end`] includes their framing, a size line and a CRLF around each
    /// piece and the last chunk, as nginx's `$body_bytes_sent` counts what it sent.
    pub fn chunked(mut self, chunked: bool) -> Self {
        self.framing = chunked.then_some(0);
        self
    }

    pub fn on_end(mut self, f: impl FnOnce(u64, bool) + Send + Sync + 'static) -> Self {
        self.on_end = Some(Box::new(f));
        self
    }

    fn finish(&mut self, complete: bool) {
        if let Some(f) = self.on_end.take() {
            let last_chunk = if complete {
                b"0\r\n\r\n".len() as u64
            } else {
                0
            };
            let framing = self.framing.map_or(0, |n| n + last_chunk);
            f(self.seen + framing, complete);
        }
    }
}

impl<B: HttpBody> Drop for Watched<B> {
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}

impl<B> HttpBody for Watched<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(t) = &this.turn {
            t.polled(poll.is_ready());
        }
        match poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    this.seen += n;
                    if let Some(framing) = this.framing.as_mut().filter(|_| n > 0) {
                        // "{n:X}\r\n" before, "\r\n" after.
                        *framing += u64::from(n.ilog(16)) + 1 + 4;
                    }
                    if let Some(limit) = this.limit.filter(|l| this.seen > *l) {
                        return Poll::Ready(Some(Err(BodyError::TooLarge(limit).into())));
                    }
                }
                let deadline = Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                if frame.is_trailers() {
                    // A body's last frame: hyper polls no further once it has them.
                    this.finish(true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Idle(this.idle).into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body whose frames come through a channel, when the test sends them (a node that
/// pauses, or never sends).
#[cfg(test)]
#[derive(Debug)]
pub struct Channel(pub tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BoxError>>);

#[cfg(test)]
impl HttpBody for Channel {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn counts_limits_and_reports_the_end() {
        let seen = Arc::new(AtomicU64::new(u64::MAX));
        let s = seen.clone();
        let body = Watched::new(
            http_body_util::Full::new(Bytes::from_static(b"hello")),
            Duration::from_secs(5),
        )
        .on_end(move |n, complete| {
            assert!(complete);
            s.store(n, Ordering::SeqCst)
        });
        let got = body.collect().await.expect("collect").to_bytes();
        assert_eq!(&got[..], b"hello");
        assert_eq!(seen.load(Ordering::SeqCst), 5);

        let big = Watched::new(
            http_body_util::Full::new(Bytes::from_static(b"0123456789")),
            Duration::from_secs(5),
        )
        .limit(4);
        let err = big.collect().await.expect_err("too large");
        assert!(err.to_string().contains("client_max_body_size"), "{err}");
    }

    #[tokio::test]
    async fn chunk_framing_is_counted_and_trailers_end_the_body() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        for frame in [
            Frame::data(Bytes::from_static(b"hello")),
            Frame::data(Bytes::new()),
            Frame::data(Bytes::from(vec![b'x'; 26])),
            Frame::trailers(hyper::HeaderMap::new()),
        ] {
            tx.send(Ok(frame)).await.expect("send");
        }
        let ended = Arc::new(std::sync::Mutex::new(None));
        let e = ended.clone();
        let mut body = Watched::new(Channel(rx), Duration::from_secs(5))
            .chunked(true)
            .on_end(move |n, complete| *e.lock().expect("lock") = Some((n, complete)));
        for _ in 0..4 {
            body.frame().await.expect("a frame").expect("not an error");
        }
        // hyper stops at the trailers; the sender is still open.
        assert_eq!(
            *ended.lock().expect("lock"),
            Some((
                ("5\r\nhello\r\n".len() + "1a\r\n".len() + 26 + 2 + "0\r\n\r\n".len()) as u64,
                true
            ))
        );
        drop(body);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_body_times_out() {
        let (_tx, rx) = tokio::sync::mpsc::channel(1);
        let body = Watched::new(Channel(rx), Duration::from_secs(3));
        let err = body.collect().await.expect_err("idle");
        assert!(err.to_string().contains("no data for 3s"), "{err}");
    }
}
