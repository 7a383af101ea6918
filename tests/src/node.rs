//! A Gluu-like HTTPS node, in-process (hyper + rustls with an rcgen certificate): what the
//! balancer's tests, `gluu-box` and `gluu-bench lb` put behind gluu-lb and nginx.
//!
//! Every response carries `x-node: NAME`. Routes:
//! - `/.well-known/openid-configuration`, `/oxauth/.well-known/openid-configuration`: a
//!   1.7 KB OpenID configuration JSON.
//! - `/identity/...`: a 4 KB HTML page naming the node.
//! - a path containing `/echo`: the request as JSON (method, URI, headers, body length, a
//!   hash of the body's bytes, trailer fields); the body is read to its end first.
//! - a path containing `/status/NNN`: answers NNN.
//! - a path containing `/slow/MS`: answers after MS milliseconds.
//! - a path containing `/big/N`: N bytes (at most 64 MiB), for clients that read slowly.
//! - a path containing `/pause/MS`: the head and a first line at once, the last line MS
//!   milliseconds later (a node that pauses in the middle of a body).
//! - `Upgrade: websocket` on any path: 101, then echoes bytes back.
//! - anything else: `node=NAME path=PATH` as text.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Cert;

/// The OpenID configuration a node serves (about 1.7 KB, like a Gluu node's).
pub fn openid_configuration(issuer: &str) -> String {
    let endpoints = [
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "clientinfo_endpoint",
        "check_session_iframe",
        "end_session_endpoint",
        "jwks_uri",
        "registration_endpoint",
        "introspection_endpoint",
        "id_generation_endpoint",
    ];
    let mut doc = serde_json::Map::new();
    doc.insert("issuer".into(), issuer.into());
    for (i, e) in endpoints.iter().enumerate() {
        doc.insert(
            (*e).into(),
            format!("{issuer}/oxauth/restv1/endpoint/{i}/{e}").into(),
        );
    }
    let list = |items: &[&str]| serde_json::Value::from(items.to_vec());
    doc.insert(
        "scopes_supported".into(),
        list(&[
            "openid",
            "profile",
            "email",
            "address",
            "phone",
            "clientinfo",
            "uma_protection",
            "permission",
            "user_name",
            "mobile_phone",
        ]),
    );
    doc.insert(
        "response_types_supported".into(),
        list(&[
            "code",
            "id_token",
            "token",
            "code id_token",
            "code token",
            "id_token token",
            "code id_token token",
        ]),
    );
    doc.insert(
        "grant_types_supported".into(),
        list(&[
            "authorization_code",
            "implicit",
            "refresh_token",
            "client_credentials",
            "password",
            "urn:ietf:params:oauth:grant-type:uma-ticket",
        ]),
    );
    doc.insert(
        "id_token_signing_alg_values_supported".into(),
        list(&[
            "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512",
        ]),
    );
    doc.insert(
        "claims_supported".into(),
        list(&[
            "street_address",
            "country",
            "zoneinfo",
            "birthdate",
            "role",
            "gender",
            "formatted",
            "user_name",
            "phone_mobile_number",
            "preferred_username",
            "locality",
            "inum",
            "updated_at",
            "given_name",
            "email",
            "name",
            "family_name",
            "nickname",
        ]),
    );
    serde_json::Value::Object(doc).to_string()
}

fn identity_page(node: &str, path: &str) -> String {
    let mut page = format!(
        "<!DOCTYPE html><html><head><title>Gluu identity</title></head><body>\
         <p id=\"node\">node={node}</p><p id=\"path\">path={path}</p>"
    );
    while page.len() < 4000 {
        page.push_str("<p>Identity management: people, groups, clients, scopes.</p>");
    }
    page.push_str("</body></html>");
    page
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicUsize,
    posts: AtomicUsize,
}

/// A running node; dropping it stops it.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub addr: SocketAddr,
    counters: Arc<Counters>,
    stop: CancellationToken,
    tracker: TaskTracker,
    cert: Cert,
    openid: Arc<String>,
    /// Status code every request gets while set (a sick node), 0 for normal.
    fail_with: Arc<Mutex<u16>>,
}

impl Node {
    /// Starts on `addr` (`127.0.0.1:0` for any port) with `cert` (the balancer's own
    /// certificate in the guide's setup).
    pub async fn start(name: &str, cert: &Cert, addr: SocketAddr, issuer: &str) -> Node {
        let mut node = Node {
            name: name.to_owned(),
            addr,
            counters: Arc::new(Counters::default()),
            stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
            cert: cert.clone(),
            openid: Arc::new(openid_configuration(issuer)),
            fail_with: Arc::new(Mutex::new(0)),
        };
        node.listen().await;
        node
    }

    /// The guide's two nodes, `node1` and `node2`, on ephemeral 127.0.0.1 ports, both
    /// serving `cert` (the balancer's own, as the guide copies it).
    pub async fn pair(cert: &Cert, issuer: &str) -> Vec<Node> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        vec![
            Node::start("node1", cert, any, issuer).await,
            Node::start("node2", cert, any, issuer).await,
        ]
    }

    async fn listen(&mut self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|e| panic!("node {} bind {}: {e}", self.name, self.addr));
        self.addr = listener.local_addr().expect("local addr");
        let acceptor = acceptor(&self.cert);
        let ctx = Ctx {
            name: Arc::from(self.name.as_str()),
            counters: self.counters.clone(),
            openid: self.openid.clone(),
            fail_with: self.fail_with.clone(),
        };
        let (stop, tracker) = (self.stop.clone(), self.tracker.clone());
        self.tracker
            .spawn(accept(listener, acceptor, ctx, stop, tracker));
    }

    /// Kills the node: the listener and every open connection go at once.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Starts again on the same port, after [`Node::stop`].
    pub async fn restart(&mut self) {
        self.stop = CancellationToken::new();
        self.tracker = TaskTracker::new();
        self.listen().await;
    }

    /// Requests served so far (all paths).
    pub fn requests(&self) -> usize {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// POST requests received so far.
    pub fn posts(&self) -> usize {
        self.counters.posts.load(Ordering::SeqCst)
    }

    /// Answer every request with `status` (0: back to normal).
    pub fn fail_with(&self, status: u16) {
        *self.fail_with.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Clone)]
struct Ctx {
    name: Arc<str>,
    counters: Arc<Counters>,
    openid: Arc<String>,
    fail_with: Arc<Mutex<u16>>,
}

/// A node's TLS side: `cert`, HTTP/1.1 by ALPN.
pub fn acceptor(cert: &Cert) -> TlsAcceptor {
    let provider = gluu_common::tls::provider();
    let key = gluu_common::tls::load_certified_key(&provider, &cert.cert, Some(&cert.key))
        .expect("node certificate");
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(gluu_common::tls::SingleIdentity(key)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ctx: Ctx,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (tcp, _) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let (acceptor, ctx, stop) = (acceptor.clone(), ctx.clone(), stop.clone());
        tracker.spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(answer(req, &ctx).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// A node's response body: whole, or in two parts with a pause between them.
type NodeBody = Either<Full<Bytes>, Paused>;

/// Sends `first`, waits for `pause`, then sends `last`.
#[derive(Debug)]
struct Paused {
    first: Option<Bytes>,
    pause: Pin<Box<tokio::time::Sleep>>,
    last: Option<Bytes>,
}

impl hyper::body::Body for Paused {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(b) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        ready!(self.pause.as_mut().poll(cx));
        Poll::Ready(self.last.take().map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        let len = |b: &Option<Bytes>| b.as_ref().map_or(0, |b| b.len() as u64);
        SizeHint::with_exact(len(&self.first) + len(&self.last))
    }
}

fn reply(ctx: &Ctx, status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<NodeBody> {
    let mut r = Response::new(Either::Left(Full::new(body.into())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, ctype.parse().expect("content type"));
    h.insert("x-node", ctx.name.parse().expect("node name"));
    r
}

async fn answer(mut req: Request<Incoming>, ctx: &Ctx) -> Response<NodeBody> {
    ctx.counters.requests.fetch_add(1, Ordering::SeqCst);
    if req.method() == hyper::Method::POST {
        ctx.counters.posts.fetch_add(1, Ordering::SeqCst);
    }
    let fail = *ctx.fail_with.lock().unwrap_or_else(|p| p.into_inner());
    if let Ok(status) = StatusCode::from_u16(fail) {
        return reply(
            ctx,
            status,
            "text/plain",
            format!("node={} failing\n", ctx.name),
        );
    }
    if req.headers().contains_key(header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(io) = upgrade.await {
                let mut io = TokioIo::new(io);
                let mut buf = [0u8; 4096];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut r = reply(ctx, StatusCode::SWITCHING_PROTOCOLS, "text/plain", "");
        let h = r.headers_mut();
        h.insert(header::UPGRADE, "websocket".parse().expect("value"));
        h.insert(header::CONNECTION, "upgrade".parse().expect("value"));
        return r;
    }
    let path = req.uri().path().to_owned();
    if path.ends_with("/.well-known/openid-configuration") {
        return reply(
            ctx,
            StatusCode::OK,
            "application/json",
            ctx.openid.as_bytes().to_vec(),
        );
    }
    if path.starts_with("/identity") {
        return reply(
            ctx,
            StatusCode::OK,
            "text/html",
            identity_page(&ctx.name, &path),
        );
    }
    if let Some(code) = path.split_once("/status/").map(|(_, c)| c) {
        let status = code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok());
        return reply(
            ctx,
            status.unwrap_or(StatusCode::BAD_REQUEST),
            "text/plain",
            format!("node={}\n", ctx.name),
        );
    }
    if let Some(n) = path.split_once("/big/").map(|(_, n)| n) {
        let n = n.parse::<usize>().unwrap_or(0).min(64 << 20);
        return reply(
            ctx,
            StatusCode::OK,
            "application/octet-stream",
            vec![b'x'; n],
        );
    }
    if let Some(ms) = path.split_once("/pause/").map(|(_, ms)| ms) {
        let pause = Duration::from_millis(ms.parse().unwrap_or(0));
        let mut r = reply(ctx, StatusCode::OK, "text/plain", "");
        *r.body_mut() = Either::Right(Paused {
            first: Some(format!("node={} paused\n", ctx.name).into()),
            pause: Box::pin(tokio::time::sleep(pause)),
            last: Some(Bytes::from_static(b"resumed\n")),
        });
        return r;
    }
    if let Some(ms) = path.split_once("/slow/").map(|(_, ms)| ms) {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        return reply(
            ctx,
            StatusCode::OK,
            "text/plain",
            format!("node={} slow\n", ctx.name),
        );
    }
    if path.contains("/echo") {
        let method = req.method().to_string();
        let uri = req.uri().to_string();
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in req.headers() {
            headers
                .entry(k.as_str().to_owned())
                .or_default()
                .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
        }
        let Ok(body) = req.into_body().collect().await else {
            return reply(ctx, StatusCode::BAD_REQUEST, "text/plain", "body error\n");
        };
        let trailers: Vec<String> = body
            .trailers()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        let body = body.to_bytes();
        let doc = serde_json::json!({
            "node": &*ctx.name,
            "method": method,
            "uri": uri,
            "headers": headers,
            "body_len": body.len(),
            "body_hash": digest(&body),
            "trailers": trailers,
        });
        return reply(ctx, StatusCode::OK, "application/json", doc.to_string());
    }
    reply(
        ctx,
        StatusCode::OK,
        "text/plain",
        format!("node={} path={path}\n", ctx.name),
    )
}

/// A fixed-key hash of `bytes` in hex: equal bodies, equal digests, in any process.
fn digest(bytes: &[u8]) -> String {
    use std::hash::{DefaultHasher, Hasher};
    let mut h = DefaultHasher::new();
    h.write(bytes);
    format!("{:016x}", h.finish())
}
