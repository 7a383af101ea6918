//! nginx's discarding of a request body that nothing read (`ngx_http_discard_request_body`):
//! a `return`, a refusal, an error page, a file, or a node that answered before it took the
//! whole upload. nginx reads such a body to its end and throws it away, so the client's
//! connection stays open for its next request. hyper, left alone, reads on only what has
//! already arrived and otherwise closes the connection after the answer: a client that
//! sent its next requests behind the body (pipelining) lost them, and every such answer cost
//! the client a new TCP and TLS handshake.
//!
//! [`ClientBody`] is every request body. Dropped before its end on a keep-alive HTTP/1
//! connection, it hands the rest to a task that reads it through hyper and drops it, as
//! nginx does: at most `lingering_timeout` between two reads and `lingering_time` in all
//! (of the block that answered), after which the connection closes (reset, when it went
//! silent, if `reset_timedout_connection` says so) without the socket's own drain. Where
//! the connection is to close anyway (the client asked, or the answer closes it: a 413, a
//! 400, `keepalive_requests`) or the client ran out of time (`client_body_timeout`), the
//! discard stops and the close drains (`lingering_close`, [`crate::linger`]): the client
//! sees the end of the answer at once. A body announced with `Expect: 100-continue` and
//! never asked for is not discarded either: the client has not sent it and may never do
//! (hyper closes the connection).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::{Request, Version, header};

use crate::forward::connection_has;
use crate::linger::Linger;

/// A client's request body; on a keep-alive HTTP/1 connection discarded to its end when
/// dropped unread.
#[derive(Debug)]
pub struct ClientBody {
    inner: Option<Incoming>,
    /// The connection's closing state, where a drop discards (keep-alive HTTP/1).
    discard: Option<Arc<Linger>>,
    /// `Expect: 100-continue`, and the body not asked for yet.
    expecting: bool,
}

impl ClientBody {
    /// `req` with its body a [`ClientBody`]; `linger` is its connection's, on HTTP/1, and
    /// told whether the request has a body to read: until it has all been read, closing
    /// drains it (`lingering_close`).
    pub fn of(req: Request<Incoming>, linger: Option<Arc<Linger>>) -> Request<ClientBody> {
        let end = req.body().is_end_stream();
        if let Some(l) = &linger {
            l.unread(!end);
        }
        // No body (most requests): nothing to look up.
        let (discard, expecting) = match end {
            true => (None, false),
            false => (linger.filter(|_| keeps_alive(&req)), expects_continue(&req)),
        };
        req.map(|body| ClientBody {
            inner: Some(body),
            discard,
            expecting,
        })
    }
}

/// hyper's reading of `req`: the connection stays open after it.
fn keeps_alive<B>(req: &Request<B>) -> bool {
    match req.version() {
        Version::HTTP_11 => !connection_has(req.headers(), "close"),
        Version::HTTP_10 => connection_has(req.headers(), "keep-alive"),
        _ => false,
    }
}

fn expects_continue<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.expecting = false;
        match self.inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        let (Some(body), Some(linger)) = (self.inner.take(), self.discard.take()) else {
            return;
        };
        if self.expecting || body.is_end_stream() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(discard(body, linger));
        }
    }
}

/// Reads `body` to its end and drops what comes, within the limits [`Linger`] holds.
async fn discard(mut body: Incoming, linger: Arc<Linger>) {
    let (time, timeout) = linger.limits();
    let ending = linger.ending();
    tokio::pin!(ending);
    ending.as_mut().enable();
    if linger.is_ending() {
        return;
    }
    let until = tokio::time::sleep(time);
    tokio::pin!(until);
    loop {
        tokio::select! {
            frame = tokio::time::timeout(timeout, body.frame()) => match frame {
                Ok(Some(Ok(_))) => continue,
                Ok(None) => {
                    linger.unread(false);
                    return;
                }
                // The client broke it: hyper closes the connection.
                Ok(Some(Err(_))) => return,
                Err(_) => {
                    linger.timed_out();
                    return;
                }
            },
            () = &mut until => {
                linger.without_drain();
                return;
            }
            () = &mut ending => return,
        }
    }
}
