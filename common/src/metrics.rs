//! The metrics listener: a tiny HTTP/1.1 server (hyper) on an address the admin chooses,
//! normally loopback, serving Prometheus text at `/metrics` from a `prometheus-client`
//! registry and, for daemons that have one, a JSON status document at `/status`. Each
//! daemon registers its own families; the listener is the same for all.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The content type of what `prometheus_client::encoding::text` writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry shared between the daemon, which registers families once, and the listener.
pub type SharedRegistry = Arc<Mutex<Registry>>;

/// Renders the `/status` JSON document at request time.
pub type StatusFn = Arc<dyn Fn() -> String + Send + Sync>;

/// What the listener serves.
#[derive(Clone)]
pub struct Pages {
    pub registry: SharedRegistry,
    pub status: Option<StatusFn>,
}

impl std::fmt::Debug for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pages")
            .field("status", &self.status.is_some())
            .finish_non_exhaustive()
    }
}

fn render(registry: &SharedRegistry) -> String {
    let mut text = String::new();
    let guard = registry.lock().unwrap_or_else(|p| p.into_inner());
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &guard);
    text
}

fn respond(pages: &Pages, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match (req.method(), req.uri().path(), &pages.status) {
        (&Method::GET, "/metrics", _) => (StatusCode::OK, OPENMETRICS, render(&pages.registry)),
        (&Method::GET, "/status", Some(status)) => (StatusCode::OK, "application/json", status()),
        (&Method::GET, _, None) => (StatusCode::NOT_FOUND, "text/plain", "try /metrics\n".into()),
        (&Method::GET, _, Some(_)) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics or /status\n".into(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// Serves `pages` on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, pages: Pages, shutdown: CancellationToken) {
    while let Some((stream, peer)) = crate::accept::next(&listener, &shutdown, "metrics").await {
        let pages = pages.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let resp = respond(&pages, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(%peer, "metrics connection: {e}") },
                _ = shutdown.cancelled() => {}
            }
        });
    }
}
