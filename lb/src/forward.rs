//! One client request, end to end: the server and location in nginx's order, `return`,
//! the request rebuilt for the node (URI replacement, hop-by-hop headers removed,
//! `proxy_set_header`), nginx's choice of node with `proxy_next_upstream` retries, and the
//! response streamed back with the access log line written at its end.
//!
//! Retries follow nginx: each node at most once per request, `proxy_next_upstream_tries`
//! bounds them, a timeout answers 504 and other failures 502. Unlike nginx, request bodies
//! are streamed, not buffered to disk, so a request whose body has gone to a node is never
//! replayed; a request with no body is replayed after a failure unless its method is POST,
//! LOCK or PATCH (without `non_idempotent`). A request the node never received (connect
//! or TLS failure, a pooled connection found closed) always moves on.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use gluu_common::relay;
use http_body_util::{BodyExt, Either};
use hyper::body::{Body as HttpBody, Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::access_log::{AccessLog, Entry, More, Timing};
use crate::auth;
use crate::body::{self, Body, BodyError, Watched};
use crate::client_cert;
use crate::config::access;
use crate::config::cond::{Condition, If};
use crate::config::limit::{LimitSettings, LogLevel};
use crate::config::location::{Location, Matcher, Redirect, find, upstream_uri};
use crate::config::pages::{self, Overwrite, Target};
use crate::config::proxy::ProxySettings;
use crate::config::proxy::{self, Part, Template};
use crate::config::server::{Return, Server};
use crate::config::stock;
use crate::cookie;
use crate::discard::ClientBody;
use crate::files;
use crate::gzip::{self, Gzipped};
use crate::limit::{self, Applied, Limit, Verdict};
use crate::linger::Linger;
use crate::pace::Pace;
use crate::runtime::{Listener, LocationRt, Runtime};
use crate::send_timeout::Turn;
use crate::upstream::{InFlight, Lease, Route, lock};
use crate::uri;

/// What a request's connection knows.
#[derive(Debug)]
pub struct Conn {
    pub remote: SocketAddr,
    /// This end's address (a rewritten redirect names its port, as nginx's does).
    pub local: Option<SocketAddr>,
    pub scheme: &'static str,
    /// The TLS server name the client asked for.
    pub sni: Option<String>,
    /// Set when a response switched the connection to another protocol: the connection's
    /// task runs it once hyper has handed the socket over.
    pub upgraded: Mutex<Option<Upgrade>>,
    /// Requests received so far.
    pub requests: AtomicU64,
    /// Its timers between requests.
    pub pace: Arc<Pace>,
    /// How it closes while the client may still be sending.
    pub linger: Arc<Linger>,
    /// `keepalive_requests` reached on an HTTP/2 connection: it is to send GOAWAY, and
    /// end once its streams have.
    pub enough: tokio::sync::Notify,
    /// The TLS version and suite, as nginx's `$ssl_protocol` and `$ssl_cipher` name them
    /// (empty without TLS).
    pub tls: (&'static str, &'static str),
    /// The certificate the client sent, and the verdict on it.
    pub client_cert: Option<Box<client_cert::ClientCert>>,
}

impl Conn {
    pub fn new(
        remote: SocketAddr,
        local: Option<SocketAddr>,
        scheme: &'static str,
        sni: Option<String>,
        pace: Arc<Pace>,
        linger: Arc<Linger>,
    ) -> Conn {
        Conn {
            remote,
            local,
            scheme,
            sni,
            upgraded: Mutex::default(),
            requests: AtomicU64::new(0),
            pace,
            linger,
            enough: tokio::sync::Notify::new(),
            tls: ("", ""),
            client_cert: None,
        }
    }

    /// The TLS `session` of this connection, for the access log, and the client's
    /// certificate judged by `trust` (the SNI server's, when it asks for one).
    pub fn with_tls(
        mut self,
        session: &rustls::ServerConnection,
        trust: Option<&client_cert::Trust>,
    ) -> Conn {
        let version = match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        };
        let suite = session
            .negotiated_cipher_suite()
            .and_then(|s| gluu_common::ciphers::openssl_name(s.suite()))
            .unwrap_or("");
        self.tls = (version, suite);
        self.client_cert = trust
            .zip(session.peer_certificates())
            .and_then(|(t, chain)| t.judge(chain))
            .map(Box::new);
        self
    }
}

/// A connection switched to another protocol (a WebSocket). The client connection's own
/// task relays it ([`Upgrade::run`]), so it keeps its `worker_connections` slot and a
/// graceful stop waits for it; like nginx, it closes after `proxy_read_timeout` without a
/// byte either way.
pub struct Upgrade {
    client: OnUpgrade,
    node: OnUpgrade,
    done: (Lease, InFlight),
    log: Log,
    idle: Duration,
}

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrade")
            .field("node", &self.done.0)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl Upgrade {
    /// Relays both sockets until both ends close or `proxy_read_timeout` passes in silence,
    /// then writes the access log line (bytes sent to the client, as nginx counts them).
    pub async fn run(self) {
        let Upgrade {
            client,
            node,
            done,
            mut log,
            idle,
        } = self;
        let (Ok(client), Ok(node)) = tokio::join!(client, node) else {
            return;
        };
        let timeouts = relay::Timeouts { idle, close: idle };
        let (client, node) = (TokioIo::new(client), TokioIo::new(node));
        let relayed =
            relay::relay(client, node, timeouts, std::future::pending(), [None, None]).await;
        tracing::debug!(
            "upgraded connection to {} closed ({:?}): {} bytes up, {} down",
            done.0.address(),
            relayed.end,
            relayed.from_a,
            relayed.from_b
        );
        drop(done);
        if let Some(e) = log.entry.take() {
            e.write(relayed.from_b);
        }
    }
}

/// The values of nginx's variables for one request.
struct Vars<'a> {
    host: &'a str,
    request_uri: &'a str,
    scheme: &'a str,
    server_name: &'a str,
    remote_addr: String,
    forwarded_for: String,
    proxy_host: &'a str,
    cert: Option<&'a client_cert::ClientCert>,
    /// The client's headers as it sent them, hop-by-hop ones too, for `$http_NAME` and
    /// `$cookie_NAME`: kept when the server has a value that reads them.
    client: Option<Box<HeaderMap>>,
    conn: &'a Conn,
    /// `$request_id`, when a value or a log format of the server's has it.
    request_id: Option<String>,
    /// The client's port (0: a proxy's header named the client without one).
    remote_port: u16,
    method: Method,
    version: Version,
    /// The server's `merge_slashes`, for `$uri`.
    merge_slashes: bool,
    /// After an `error_page` sent the request to a URI: that URI, the source of `$uri` and
    /// `$args` from then on, and its method for `$request_method` (GET, or HEAD for a
    /// HEAD), as nginx's internal redirect changes them. `$request` stays the client's.
    redirected: Option<Box<(String, Method)>>,
}

impl Vars<'_> {
    /// `$name`'s value onto `out` (nothing for a variable the request has no value of).
    fn push(&self, name: &str, out: &mut String) {
        let uri = self.current_uri();
        let method = self.redirected.as_deref().map_or(&self.method, |(_, m)| m);
        let args = uri.split_once('?').map(|(_, a)| a);
        let local = self.conn.local;
        let text = match name {
            "host" => self.host,
            "request_uri" => self.request_uri,
            "scheme" => self.scheme,
            "server_name" => self.server_name,
            "remote_addr" => &self.remote_addr,
            "proxy_add_x_forwarded_for" => &self.forwarded_for,
            "proxy_host" => self.proxy_host,
            "request_method" => method.as_str(),
            "uri" | "document_uri" => {
                // The path as routed (decoded, normalized), made again: rarely asked for.
                let path = uri.split_once('?').map_or(uri, |(p, _)| p);
                if let Ok(p) = uri::normalize(path, self.merge_slashes) {
                    out.push_str(&String::from_utf8_lossy(&p.bytes));
                }
                return;
            }
            "args" | "query_string" => args.unwrap_or_default(),
            "is_args" if args.is_some_and(|a| !a.is_empty()) => "?",
            "https" if self.scheme == "https" => "on",
            "ssl_protocol" => self.conn.tls.0,
            "ssl_cipher" => self.conn.tls.1,
            "ssl_server_name" => self.conn.sni.as_deref().unwrap_or_default(),
            "hostname" => crate::access_log::hostname(),
            "server_protocol" => return out.push_str(&format!("{:?}", self.version)),
            "request" => {
                let (m, u, v) = (&self.method, self.request_uri, self.version);
                return out.push_str(&format!("{m} {u} {v:?}"));
            }
            "server_addr" => return push_some(out, local.map(|a| a.ip())),
            "server_port" => return push_some(out, local.map(|a| a.port())),
            "remote_port" => return push_some(out, Some(self.remote_port).filter(|p| *p > 0)),
            "realip_remote_addr" => return push_some(out, Some(self.conn.remote.ip())),
            "realip_remote_port" => return push_some(out, Some(self.conn.remote.port())),
            "connection_requests" => {
                let n = self
                    .conn
                    .requests
                    .load(std::sync::atomic::Ordering::Relaxed);
                return push_some(out, Some(n));
            }
            "pid" => return push_some(out, Some(std::process::id())),
            "request_id" => self.request_id.as_deref().unwrap_or_default(),
            "remote_user" => {
                let user = self
                    .client
                    .as_deref()
                    .and_then(crate::access_log::remote_user);
                return out.push_str(user.as_deref().unwrap_or_default());
            }
            _ => "",
        };
        out.push_str(text);
    }

    /// `$cookie_NAME`: the client's first cookie `name` (nginx 1.22's reading: lines in
    /// order, pairs cut at `;` or `,`, the name without regard to case, the value from
    /// after `=` and any spaces to the next `;`).
    fn cookie(&self, name: &str) -> Option<String> {
        let mut lines = self.client.iter().flat_map(|h| h.get_all(header::COOKIE));
        lines
            .find_map(|line| cookie::request_cookie(line.as_bytes(), name.as_bytes()))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn arg(&self, name: &str) -> Option<&str> {
        uri::arg(self.current_uri(), name)
    }

    /// The URI `$uri` and `$args` are read from: the request's, or where an `error_page`
    /// sent it.
    fn current_uri(&self) -> &str {
        self.redirected
            .as_deref()
            .map_or(self.request_uri, |(u, _)| u.as_str())
    }
}

/// nginx's `$request_id`: 16 random bytes in hex.
fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        tracing::error!("no random bytes for $request_id");
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn push_some(out: &mut String, v: Option<impl std::fmt::Display>) {
    if let Some(v) = v {
        out.push_str(&v.to_string());
    }
}

impl cookie::Render for Vars<'_> {
    fn render(&self, t: &Template, captures: Option<&regex::bytes::Captures<'_>>) -> String {
        let mut out = String::new();
        render_into(&mut out, t, self, captures);
        out
    }
}

fn render(t: &Template, v: &Vars<'_>) -> String {
    let mut out = String::new();
    render_into(&mut out, t, v, None);
    out
}

/// [`render`] onto `out`; `captures`: the regex's whose map value `t` is.
fn render_into(
    out: &mut String,
    t: &[Part],
    v: &Vars<'_>,
    captures: Option<&regex::bytes::Captures<'_>>,
) {
    for p in t {
        match p {
            Part::Map(m) => {
                let source = render(&m.source, v);
                if let Some((value, captures)) = m.find(&source) {
                    render_into(out, value, v, captures.as_ref());
                }
            }
            Part::Capture(i) => {
                if let Some(c) = captures.and_then(|c| c.get(*i)) {
                    out.push_str(&String::from_utf8_lossy(c.as_bytes()));
                }
            }
            Part::Text(s) => out.push_str(s),
            Part::Header(name) => {
                let values = v.client.iter().flat_map(|h| h.get_all(name));
                for (i, value) in values.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&String::from_utf8_lossy(value.as_bytes()));
                }
            }
            Part::Cert(c) => out.push_str(&c.value(v.cert)),
            Part::Var(name) => v.push(name, out),
            Part::Cookie(name) => out.push_str(&v.cookie(name).unwrap_or_default()),
            Part::Arg(name) => out.push_str(v.arg(name).unwrap_or_default()),
            Part::Args(sep) => {
                if let Some((_, args)) = v
                    .current_uri()
                    .split_once('?')
                    .filter(|(_, a)| !a.is_empty())
                {
                    out.push(*sep);
                    out.push_str(args);
                }
            }
        }
    }
}

/// RFC 9110 section 7.6.1: headers that describe one connection, never forwarded (plus
/// those the `Connection` header names, and `Expect`, which hyper answers itself).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
    for h in named {
        headers.remove(h);
    }
}

/// Whether the `Connection` header lines name `option` (RFC 9110 7.6.1).
pub fn connection_has(headers: &HeaderMap, option: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(option))
}

fn wants_upgrade<B>(req: &Request<B>) -> Option<HeaderValue> {
    let connection_upgrade = connection_has(req.headers(), "upgrade");
    (req.version() == Version::HTTP_11 && connection_upgrade)
        .then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten()
}

/// `$host` as nginx takes it: the request line's host (absolute form, HTTP/2's
/// `:authority`), else the `Host` header; `None` for an HTTP/1.0 request without either.
/// `Err` is a 400, as in nginx: two `Host` headers, none in an HTTP/1.1 request (or in an
/// HTTP/2 one without `:authority`), an invalid host; and an HTTP/2 request whose `Host`
/// names another host than its `:authority` (RFC 9113 8.3.1; nginx 1.22 refuses any `Host`
/// beside `:authority`).
fn host_of(req: &Request<ClientBody>) -> Result<Option<String>, &'static str> {
    let mut headers = req.headers().get_all(header::HOST).iter();
    let header = headers.next();
    if headers.next().is_some() {
        return Err("two Host headers");
    }
    let authority = req.uri().authority().map(|a| a.as_str().as_bytes());
    let raw = match (req.version(), authority, header) {
        (Version::HTTP_11, _, None) | (Version::HTTP_2, None, None) => {
            return Err("no Host header");
        }
        (Version::HTTP_2, Some(a), Some(h)) if valid_host(h.as_bytes()) != valid_host(a) => {
            return Err("a Host header naming another host than :authority");
        }
        (_, Some(a), _) => a,
        (_, None, Some(h)) => h.as_bytes(),
        (_, None, None) => return Ok(None),
    };
    valid_host(raw).map(Some).ok_or("an invalid host")
}

/// `proxy_redirect default`: the node's `Location`, and the URL of its `Refresh`. As in
/// nginx, a `Location` the rewrite leaves relative is made absolute ([`absolute`]); one
/// the node sent relative is left alone.
fn rewrite_redirects(headers: &mut HeaderMap, r: &Redirect, base: impl FnOnce() -> Option<String>) {
    let location = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| r.rewrite(v, 0))
        .map(|v| absolute(v, base));
    let refresh = HeaderName::from_static("refresh");
    let refreshed = headers
        .get(&refresh)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let at = v.to_ascii_lowercase().find("url=")? + "url=".len();
            r.rewrite(v, at)
        });
    for (name, value) in [(header::LOCATION, location), (refresh, refreshed)] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(name, v);
        }
    }
}

/// A `Location` gluu-lb sets (a `return`, a rewritten node redirect) as nginx's header
/// filter sends it: one starting with `/` gets `base` in front, if that gives one.
fn absolute(location: String, base: impl FnOnce() -> Option<String>) -> String {
    match location.starts_with('/').then(base).flatten() {
        Some(base) => base + &location,
        None => location,
    }
}

/// A redirect of `status` to `url`, made [`absolute`] after `base`; `None` when the URL
/// cannot be a header value.
fn redirect(
    status: StatusCode,
    url: String,
    base: impl FnOnce() -> Option<String>,
) -> Option<Local> {
    let v = HeaderValue::from_str(&absolute(url, base)).ok()?;
    let mut r = plain(status, "");
    r.headers_mut().insert(header::LOCATION, v);
    Some(r)
}

/// `scheme://host[:port]` as nginx puts it in front of a relative redirect, as the block
/// `s` says: none with `absolute_redirect off`; the host is the server's first name with
/// `server_name_in_redirect on`, else the request's (else this end's address); the port
/// is there unless it is the scheme's own or `port_in_redirect off`.
fn redirect_base(
    conn: &Conn,
    host: &Option<String>,
    server_name: &str,
    s: &ProxySettings,
) -> Option<String> {
    if !s.absolute_redirect {
        return None;
    }
    let local = conn.local;
    let host = match (host, local) {
        _ if s.server_name_in_redirect => server_name.to_owned(),
        (Some(h), _) => h.clone(),
        (None, Some(SocketAddr::V6(a))) => format!("[{}]", a.ip()),
        (None, Some(a)) => a.ip().to_string(),
        (None, None) => String::new(),
    };
    let default = if conn.scheme == "https" { 443 } else { 80 };
    Some(
        match local
            .map(|a| a.port())
            .filter(|p| *p != default && s.port_in_redirect)
        {
            Some(port) => format!("{}://{host}:{port}", conn.scheme),
            None => format!("{}://{host}", conn.scheme),
        },
    )
}

/// The request headers nginx takes one line of (`ngx_http_process_unique_header_line`;
/// `Host` and `Content-Length` have checks of their own): a second is a 400.
const UNIQUE: [HeaderName; 9] = [
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::CONTENT_RANGE,
    header::IF_RANGE,
    header::TRANSFER_ENCODING,
    header::EXPECT,
    header::AUTHORIZATION,
];

/// What nginx refuses in a request's method, headers and body framing, in its order (a
/// request smuggled past one reader of it is read differently by the next): a method of
/// other than `A`-`Z`, `_` and `-` (400); a second line of a header nginx takes once
/// ([`UNIQUE`]: two `Authorization`s or `Transfer-Encoding`s, 400); two `Content-Length`s,
/// or one that is not digits alone (400); a transfer coding other than a single `chunked`
/// (501); then TRACE (405: it would echo the request, cookies and all, to a script) and
/// CONNECT (405, or 400 for a `host:port` target). Both a length and a coding never get
/// here: hyper reads such a request as chunked (RFC 9112) and drops the length.
fn refused_head(req: &Request<ClientBody>) -> Option<(StatusCode, String)> {
    let bad = |why: &str| Some((StatusCode::BAD_REQUEST, why.to_owned()));
    let method = req.method();
    if !method
        .as_str()
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
    {
        return bad("an invalid method");
    }
    let headers = req.headers();
    // Only a name with two lines makes the map hold more values than names.
    if headers.len() > headers.keys_len()
        && let Some(twice) = UNIQUE
            .iter()
            .find(|n| headers.get_all(*n).iter().nth(1).is_some())
    {
        return bad(&format!("a second {twice} header"));
    }
    let lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let length = headers.get(header::CONTENT_LENGTH);
    match (lengths, codings.next()) {
        (2.., _) => bad("two Content-Length headers"),
        (1, _) if !length.is_some_and(|v| v.as_bytes().iter().all(u8::is_ascii_digit)) => {
            bad("a Content-Length that is not a number")
        }
        (_, Some(te))
            if codings.next().is_some() || !te.as_bytes().eq_ignore_ascii_case(b"chunked") =>
        {
            Some((
                StatusCode::NOT_IMPLEMENTED,
                format!("Transfer-Encoding {te:?}: only chunked is known"),
            ))
        }
        _ if *method == Method::TRACE => Some((
            StatusCode::METHOD_NOT_ALLOWED,
            "the TRACE method".to_owned(),
        )),
        _ if *method == Method::CONNECT => match req.uri().path_and_query() {
            Some(_) => Some((
                StatusCode::METHOD_NOT_ALLOWED,
                "the CONNECT method".to_owned(),
            )),
            None => bad("a CONNECT to a host:port"),
        },
        _ => None,
    }
}

/// nginx's `ngx_http_validate_host`: the host up to its port (or an `[IPv6]` literal),
/// one trailing dot dropped, lower case; `None` for an empty host, `..`, a `/`, a control
/// character or a space.
fn valid_host(raw: &[u8]) -> Option<String> {
    let mut end = raw.len();
    let mut last_dot = None;
    let mut literal = false;
    let mut rest = false;
    for (i, &c) in raw.iter().enumerate() {
        match c {
            b'.' => {
                if last_dot.is_some_and(|d| d + 1 == i) {
                    return None;
                }
                last_dot = Some(i);
            }
            b':' if !literal && !rest => {
                end = i;
                rest = true;
            }
            b'[' if i == 0 => literal = true,
            b']' if literal => {
                end = i + 1;
                literal = false;
                rest = true;
            }
            b'/' | 0..=b' ' | 0x7f => return None,
            _ => {}
        }
    }
    if end > 0 && last_dot == Some(end - 1) {
        end -= 1;
    }
    (end > 0).then(|| String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase())
}

/// A response gluu-lb makes itself: its whole body at hand.
type Local = Response<Bytes>;

fn plain(status: StatusCode, text: &str) -> Local {
    let mut r = Response::new(Bytes::from(format!(
        "{} {}\n{text}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Where one request stands for its access log line, and what its block does to its
/// response: the headers `add_header` puts on, and `gzip`.
struct Log {
    entry: Option<Entry>,
    added: Vec<Added>,
    /// `gzip on` in the request's block: what the request says about compression.
    gzip: Option<gzip::Ask>,
    /// `keepalive_requests` reached, or `keepalive_timeout 0`: the HTTP/1 connection
    /// closes after this response.
    close: bool,
    /// The connection closes after this response whatever the block says (a request
    /// refused for its client certificate, as nginx closes after one).
    close_anyway: bool,
    /// An HTTP/1.1 request other than HEAD: a response body of no stated length goes to
    /// the client in chunks.
    chunks: bool,
    /// `Keep-Alive: timeout=N` for an HTTP/1 response that keeps the connection open
    /// (`keepalive_timeout`'s second parameter).
    keep_alive: Option<HeaderValue>,
    /// What `limit_conn` counts this request in, until its response has been sent.
    held: Vec<limit::Held>,
    /// The status an `error_page` sends in place of its page's own.
    err_status: Option<StatusCode>,
    /// The `WWW-Authenticate` of a 401 an `error_page` took, sent with the page (nginx
    /// keeps it, so that a browser still asks for a password).
    challenge: Option<HeaderValue>,
    /// `charset`: named on the response's `Content-Type`.
    charset: Option<Arc<stock::Charset>>,
    /// `expires`: `Expires` and `Cache-Control` set on the response.
    expires: stock::Expires,
}

/// A header `add_header` puts on this response, its value rendered for the request (`None`:
/// it came out empty, which adds nothing, or removes the header it replaces).
struct Added {
    name: HeaderName,
    value: Option<HeaderValue>,
    always: bool,
    replaces: bool,
}

impl Log {
    /// The block whose `add_header` and `gzip` lines are in force for this request: the
    /// server's until a location is chosen, then the location's (inherited as nginx
    /// inherits them).
    fn settle<B>(&mut self, s: &ProxySettings, vars: &Vars<'_>, req: &Request<B>, conn: &Conn) {
        self.gzip = gzip::Ask::of(&s.gzip, req.method(), req.version(), req.headers());
        self.charset = s.charset.clone();
        self.expires = s.expires;
        conn.pace.set_keepalive(s.keepalive_timeout);
        conn.linger.set(s);
        let http1 = req.version() < Version::HTTP_2;
        let enough = s
            .keepalive_requests
            .is_some_and(|n| conn.requests.load(std::sync::atomic::Ordering::Relaxed) >= n);
        self.close = http1 && (self.close_anyway || s.keepalive_timeout.is_zero() || enough);
        if self.close {
            conn.linger.closing();
        }
        if enough && !http1 {
            conn.enough.notify_one();
        }
        self.keep_alive = s
            .keepalive_header
            .filter(|&secs| http1 && !self.close && secs > 0)
            .and_then(|secs| HeaderValue::try_from(format!("timeout={secs}")).ok());
        self.added = s
            .add_headers
            .iter()
            .map(|line| {
                // nginx turns NUL, CR and LF in a rendered value into spaces.
                let text = render(&line.value, vars).replace(['\0', '\r', '\n'], " ");
                Added {
                    name: line.name.clone(),
                    value: HeaderValue::from_bytes(text.as_bytes())
                        .ok()
                        .filter(|v| !v.is_empty()),
                    always: line.always,
                    replaces: line.replaces,
                }
            })
            .collect();
    }

    /// The HTTP/1 connection closes after this response, whatever the blocks say.
    fn end_connection(&mut self, http1: bool, conn: &Conn) {
        self.close_anyway = true;
        if http1 {
            self.close = true;
            self.keep_alive = None;
            conn.linger.closing();
        }
    }

    /// Puts the `add_header` headers on a response of `status`, and `Connection: close`
    /// or `Keep-Alive` as `keepalive_requests` and `keepalive_timeout` say.
    fn decorate(&self, headers: &mut HeaderMap, status: StatusCode) {
        if self.close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(v) = &self.keep_alive {
            headers.insert(HeaderName::from_static("keep-alive"), v.clone());
        }
        if let Some(c) = &self.charset {
            c.apply(headers, status);
        }
        if self.expires != stock::Expires::Off {
            let now = SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
            self.expires.apply(headers, status, now);
        }
        let safe = proxy::safe_status(status.as_u16());
        for a in self.added.iter().filter(|a| a.always || safe) {
            match (&a.value, a.replaces) {
                (Some(v), true) => {
                    headers.insert(a.name.clone(), v.clone());
                }
                (None, true) => {
                    headers.remove(&a.name);
                }
                (Some(v), false) => {
                    headers.append(a.name.clone(), v.clone());
                }
                (None, false) => {}
            }
        }
    }

    /// The status a response goes with, set on it, counted and kept for the log line; if
    /// an `error_page` sent the request here, the error's status (unless `=`) and a 401's
    /// challenge go on the page's response.
    fn status<B>(&mut self, resp: &mut Response<B>, shared: &Shared) -> StatusCode {
        if let Some(s) = self.err_status.take() {
            *resp.status_mut() = s;
        }
        if let Some(c) = self.challenge.take() {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, c);
        }
        self.answered(resp.status(), shared);
        resp.status()
    }

    /// A file from `root` or `alias`, logged when its last byte has gone (or the client has).
    fn file(mut self, mut resp: Response<Body>, idle: Duration, shared: &Shared) -> Response<Body> {
        let status = self.status(&mut resp, shared);
        let (mut parts, body) = resp.into_parts();
        // nginx's header filter: a file sent with another status has no modification time.
        if !matches!(status.as_u16(), 200 | 206 | 304) {
            parts.headers.remove(header::LAST_MODIFIED);
        }
        self.decorate(&mut parts.headers, status);
        let body = Watched::new(body, idle)
            .on_end(move |bytes, _| {
                if let Some(e) = self.entry.take() {
                    e.write(bytes);
                }
            })
            .boxed();
        Response::from_parts(parts, body)
    }

    /// The timing of the node being tried, when there is a log line.
    fn this_try(&mut self) -> Option<&mut Timing> {
        self.entry.as_mut()?.upstream_times.last_mut()
    }

    /// The response's status is known: counted, and kept for the log line.
    fn answered(&mut self, status: StatusCode, shared: &Shared) {
        shared.metrics.response(status.as_u16());
        if let Some(e) = &mut self.entry {
            e.status = status.as_u16();
        }
    }

    /// A response gluu-lb makes itself: compressed whole if `gzip` says so, logged at once.
    fn local(mut self, mut resp: Local, shared: &Shared) -> Response<Body> {
        let status = self.status(&mut resp, shared);
        let (mut parts, mut bytes) = resp.into_parts();
        self.decorate(&mut parts.headers, status);
        if let Some(a) = self.gzip.take() {
            bytes = a.whole(status, &mut parts.headers, bytes);
        }
        if let Some(e) = self.entry.take() {
            e.write(bytes.len() as u64);
        }
        Response::from_parts(parts, body::text(bytes))
    }
}

impl Drop for Log {
    /// The request ended before it had a response: the client went away while gluu-lb
    /// waited on a node (or on the client's own body). nginx logs that as 499.
    fn drop(&mut self) {
        if let Some(mut e) = self.entry.take() {
            if e.status == 0 {
                e.status = 499;
            }
            e.write(0);
        }
    }
}

/// The errors after which nginx ends an HTTP/1 connection whatever its keep-alive (its
/// special response handler): a request it cannot read in step (400, 413, 414, the client
/// certificate's 495-497) or a failure of its own (500, 501). A 413's body is not read on.
const ENDS_CONNECTION: &[u16] = &[400, 413, 414, 495, 496, 497, 500, 501];

/// A `return` a block answers with, and the text its `if`'s regex matched (for `$1`).
type Chosen<'r> = (&'r Return, Option<(String, Arc<regex::bytes::Regex>)>);

/// The `return` of the first of `ifs` whose condition holds (an `if` without one does
/// nothing), else the block's own `ret`.
fn chosen<'r>(ifs: &'r [If], ret: Option<&'r Return>, v: &Vars<'_>) -> Option<Chosen<'r>> {
    for i in ifs {
        let Some(r) = &i.ret else {
            continue;
        };
        let (holds, matched) = match &i.condition {
            Condition::Set(var) => {
                let s = render(var, v);
                (!(s.is_empty() || s == "0"), None)
            }
            Condition::Equal { var, text, negated } => {
                ((render(var, v) == render(text, v)) != *negated, None)
            }
            Condition::Matches {
                var,
                regex,
                negated,
            } => {
                let s = render(var, v);
                let hit = regex.is_match(s.as_bytes());
                // Only a match that holds has captures to give.
                (
                    hit != *negated,
                    (hit && !*negated).then(|| (s, regex.clone())),
                )
            }
            Condition::File {
                path,
                test,
                negated,
            } => (test.holds(&render(path, v)) != *negated, None),
        };
        if holds {
            return Some((r, matched));
        }
    }
    ret.map(|r| (r, None))
}

/// Marks a response that is not to be sent: the connection is closed instead (`return
/// 444`, nginx's way to drop a request).
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("closed without an answer (return 444)")]
pub struct Close;

/// What a `return` line answers; a text goes as `content_type` (nginx's `default_type`, or
/// the type `types` gives the path's extension), a relative URL after `base`.
fn returned(
    (ret, matched): &Chosen<'_>,
    vars: &Vars<'_>,
    content_type: &str,
    base: impl FnOnce() -> Option<String>,
) -> Local {
    let captures = matched
        .as_ref()
        .and_then(|(text, re)| re.captures(text.as_bytes()));
    // nginx escapes a redirecting rewrite's captures when the path came escaped.
    let path = vars.request_uri.split('?').next().unwrap_or_default();
    let escape = ret.escape_captures && path.contains(['%', '+']);
    let target = ret.template.as_ref().map(|t| {
        let mut out = String::new();
        for part in t {
            match (part, captures.as_ref()) {
                (Part::Capture(i), Some(c)) if escape => {
                    let bytes = c.get(*i).map_or(&[][..], |m| m.as_bytes());
                    uri::escape(bytes, uri::ESCAPE_ARGS, &mut out);
                }
                _ => render_into(
                    &mut out,
                    std::slice::from_ref(part),
                    vars,
                    captures.as_ref(),
                ),
            }
        }
        out
    });
    let status = StatusCode::from_u16(ret.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match (ret.code, target) {
        (444, _) => {
            let mut r = plain(status, "");
            r.extensions_mut().insert(Close);
            r
        }
        (301 | 302 | 303 | 307 | 308, Some(url)) => {
            redirect(status, url, base).unwrap_or_else(|| plain(StatusCode::BAD_REQUEST, ""))
        }
        (_, Some(text)) => {
            let mut r = Response::new(Bytes::from(text));
            *r.status_mut() = status;
            if let Ok(v) = HeaderValue::from_str(content_type) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            r
        }
        (_, None) => plain(status, ""),
    }
}

/// nginx's preaccess phase for a request from `client`: `limit_req`, then `limit_conn`
/// (what it counts the request in goes in `log`, held until the response has been sent).
/// The refusal to send, if one refuses. `who` describes the request for the log lines, as
/// nginx's do. Not run again for an `error_page`'s request (nginx counts a request once).
async fn admit(
    limits: &Applied,
    s: &ProxySettings,
    client: IpAddr,
    who: impl Fn() -> String,
    log: &mut Log,
    shared: &Shared,
) -> Option<Local> {
    if let Some(refused) = limit_req(&limits.req, &s.limit, client, &who, shared).await {
        return Some(refused);
    }
    if !limits.conn.is_empty() {
        let c = &s.limit_conn;
        let (held, over) = limit::hold(&limits.conn, client);
        if let Some(zone) = over {
            let dry = if c.dry_run { ", dry run," } else { "" };
            let line = format!("limiting connections{dry} by zone \"{zone}\", {}", who());
            log_at(levels(c.log_level).0, &line);
            let result = if c.dry_run {
                "rejected_dry_run"
            } else {
                "rejected"
            };
            shared.metrics.limited("limit_conn", zone, result);
            if !c.dry_run {
                return Some(plain(status_of(c.status), ""));
            }
        }
        log.held.extend(held);
    }
    None
}

/// The levels of a limit's refusal and delay lines: `limit_*_log_level`, and one below
/// for delays (nginx's rule).
fn levels(l: LogLevel) -> (tracing::Level, tracing::Level) {
    match l {
        LogLevel::Error => (tracing::Level::ERROR, tracing::Level::WARN),
        LogLevel::Warn => (tracing::Level::WARN, tracing::Level::INFO),
        LogLevel::Notice | LogLevel::Info => (tracing::Level::INFO, tracing::Level::INFO),
    }
}

fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

/// nginx's `limit_req` for this request: waits first when a limit says so, and gives the
/// refusal to send when one refuses (unless `limit_req_dry_run`).
async fn limit_req(
    limits: &[Limit],
    s: &LimitSettings,
    client: IpAddr,
    who: impl Fn() -> String,
    shared: &Shared,
) -> Option<Local> {
    if limits.is_empty() {
        return None;
    }
    let (refused, delay_level) = levels(s.log_level);
    let dry = if s.dry_run { ", dry run" } else { "" };
    let thousandths = |n: u64| format!("{}.{:03}", n / 1000, n % 1000);
    // nginx's words, and the result counted (`results[1]` in a dry run).
    let note = |level, line: String, zone: &str, results: [&'static str; 2]| {
        log_at(level, &line);
        let result = results[usize::from(s.dry_run)];
        shared.metrics.limited("limit_req", zone, result);
    };
    match limit::check(limits, client) {
        Verdict::Pass => None,
        Verdict::Reject { excess, zone } => {
            let excess = thousandths(excess);
            let line = format!(
                "limiting requests{dry}, excess: {excess} by zone \"{zone}\", {}",
                who()
            );
            note(refused, line, zone, ["rejected", "rejected_dry_run"]);
            (!s.dry_run).then(|| plain(status_of(s.status), ""))
        }
        Verdict::Delay { wait, excess, zone } => {
            let excess = thousandths(excess);
            let line = format!(
                "delaying request{dry}, excess: {excess}, by zone \"{zone}\", {}",
                who()
            );
            note(delay_level, line, zone, ["delayed", "delayed_dry_run"]);
            if !s.dry_run {
                tokio::time::sleep(wait).await;
            }
            None
        }
    }
}

/// nginx's `allow` and `deny`: the 403 to send when the rules refuse this client.
/// nginx's access phase: `allow`/`deny`, then `auth_basic`, under `satisfy`:
/// with `all` (the default) each must let the request through, with `any` one is enough
/// (a rule that allows it, or a user and password), and when none does the answer is the
/// password's (401, or 403/500 for the user file) before the rules' 403. Run again for an
/// `error_page`'s request, as nginx runs it.
async fn access_phase(
    a: access::Access<'_>,
    headers: &HeaderMap,
    vars: &Vars<'_>,
    client: IpAddr,
    who: impl Fn() -> String,
) -> Option<Local> {
    let ruled = access::decide(a.rules, client);
    if !a.satisfy_any {
        if ruled == Some(false) {
            tracing::error!("access forbidden by rule, {}", who());
            return Some(plain(StatusCode::FORBIDDEN, ""));
        }
        return match authenticate(a, headers, vars, who).await {
            Authenticated::Refused(answer) => Some(answer),
            Authenticated::Off | Authenticated::Passed => None,
        };
    }
    if ruled == Some(true) {
        return None;
    }
    match authenticate(a, headers, vars, who).await {
        Authenticated::Passed => None,
        Authenticated::Refused(answer) => Some(answer),
        Authenticated::Off => (ruled == Some(false)).then(|| plain(StatusCode::FORBIDDEN, "")),
    }
}

/// What `auth_basic` made of a request.
enum Authenticated {
    /// Not asked for here (no `auth_basic`, no user file, or a realm of `off`).
    Off,
    Passed,
    /// Its answer: 401 with the challenge, 403 or 500 for the user file.
    Refused(Local),
}

/// `auth_basic` with its user file: the answer, when it refuses, is 401 with the realm's
/// challenge, 403 when the file does not exist, or 500 when it cannot be read or its hash
/// for the user not checked (nginx's three). The file is read and the password hashed off
/// the worker thread (a bcrypt check takes tens of milliseconds; nginx's worker waits for
/// it, and other connections with it).
async fn authenticate(
    a: access::Access<'_>,
    headers: &HeaderMap,
    vars: &Vars<'_>,
    who: impl Fn() -> String,
) -> Authenticated {
    let (Some(realm), Some(file)) = (a.realm, a.user_file) else {
        return Authenticated::Off;
    };
    // Boxed: the wait for the check would otherwise make every request's future larger,
    // authenticated or not.
    Box::pin(check_credentials(realm, file, headers, vars, who)).await
}

/// [`authenticate`]'s work, for a block that has both lines.
async fn check_credentials(
    realm: &Template,
    file: &std::path::Path,
    headers: &HeaderMap,
    vars: &Vars<'_>,
    who: impl Fn() -> String,
) -> Authenticated {
    let realm = render(realm, vars);
    if realm == "off" {
        return Authenticated::Off;
    }
    let challenge = || {
        let mut r = plain(StatusCode::UNAUTHORIZED, "");
        match HeaderValue::from_bytes(format!("Basic realm=\"{realm}\"").as_bytes()) {
            Ok(v) => {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                r
            }
            Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, ""),
        }
    };
    let Some(given) = auth::credentials(headers) else {
        tracing::info!(
            "no user/password was provided for basic authentication, {}",
            who()
        );
        return Authenticated::Refused(challenge());
    };
    let verdict = auth::check_in_turn(file.to_owned(), given).await;
    Authenticated::Refused(match verdict {
        Ok(auth::Verdict::Passed) => return Authenticated::Passed,
        Ok(auth::Verdict::Refused(why)) => {
            tracing::error!("{why}, {}", who());
            challenge()
        }
        Ok(auth::Verdict::Missing(why)) => {
            tracing::error!("{why}, {}", who());
            plain(StatusCode::FORBIDDEN, "")
        }
        Ok(auth::Verdict::Failed(why)) => {
            tracing::error!("{why}, {}", who());
            plain(StatusCode::INTERNAL_SERVER_ERROR, "")
        }
        Err(e) => {
            tracing::error!("basic authentication: {e}, {}", who());
            plain(StatusCode::INTERNAL_SERVER_ERROR, "")
        }
    })
}

/// A log line at a level chosen at run time.
fn log_at(level: tracing::Level, line: &str) {
    match level {
        tracing::Level::ERROR => tracing::error!("{line}"),
        tracing::Level::WARN => tracing::warn!("{line}"),
        _ => tracing::info!("{line}"),
    }
}

/// Serves one request with the runtime current when it arrived.
pub async fn handle(
    mut req: Request<ClientBody>,
    conn: &Conn,
    rt: &Runtime,
    listener: usize,
    shared: &Shared,
) -> Response<Body> {
    let start = SystemTime::now();
    let listener: &Listener = &rt.listeners[listener];
    let host = host_of(&req);
    let si = rt.server_for(
        listener,
        host.as_ref()
            .ok()
            .and_then(Option::as_deref)
            .or(conn.sni.as_deref()),
    );
    let server = &rt.config.servers[si];
    drop_invalid_headers(req.headers_mut(), &server.settings, conn);
    let server_name = server.names.first().map_or("", String::as_str);
    let request_uri = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let merge_slashes = server.settings.merge_slashes;
    let path = uri::normalize(
        request_uri.split_once('?').map_or(&request_uri, |(p, _)| p),
        merge_slashes,
    );
    let found = path
        .as_ref()
        .ok()
        .and_then(|p| located(&server.locations, &p.bytes));
    let li = found.map(|(i, _)| i);
    let lrt = li.map(|i| &rt.locations[si][i]);
    // nginx's realip: the server's lines when the request is read, else the location's
    // before its limits (a server-level `return` answers before that).
    let realip = server
        .settings
        .realip
        .client(conn.remote.ip(), req.headers())
        .or_else(|| {
            let l = &server.locations[li.filter(|_| server.ret.is_none())?];
            l.settings.realip.client(conn.remote.ip(), req.headers())
        });
    let client = realip.unwrap_or(conn.remote);
    // What nginx refuses before anything else the server would do.
    let refused = host
        .as_ref()
        .err()
        .map(|e| (StatusCode::BAD_REQUEST, (*e).to_owned()))
        .or_else(|| {
            let e = path.as_ref().err()?;
            Some((StatusCode::BAD_REQUEST, e.to_string()))
        })
        .or_else(|| refused_head(&req));
    // A refused request is logged where the server's requests are, as nginx logs it
    // before a location is chosen.
    let logs = match (lrt, &refused) {
        (Some(l), None) => &l.access_logs,
        _ => &rt.server_logs[si],
    };
    let request_id = (server.reads_request_id
        || logs
            .iter()
            .flat_map(AccessLog::formats)
            .any(|f| f.request_id))
    .then(new_request_id);
    let mut log = Log {
        entry: (!logs.is_empty()).then(|| Entry {
            more: logs.iter().any(|a| a.formats().next().is_some()).then(|| {
                Box::new(More {
                    remote_port: client.port(),
                    realip_remote: realip.map(|_| conn.remote),
                    method: req.method().to_string(),
                    request_uri: request_uri.clone(),
                    uri: path.as_ref().map_or_else(
                        |_| String::new(),
                        |p| String::from_utf8_lossy(&p.bytes).into_owned(),
                    ),
                    protocol: format!("{:?}", req.version()),
                    scheme: conn.scheme,
                    host: host
                        .as_ref()
                        .ok()
                        .and_then(Option::as_deref)
                        .unwrap_or(server_name)
                        .to_owned(),
                    server_name: server_name.to_owned(),
                    headers: logged_headers(logs, &req),
                    tls: conn.tls,
                    sni: conn.sni.clone(),
                    certs: logged_certs(logs, conn.client_cert.as_deref()),
                    server_addr: conn.local,
                    connection_requests: conn.requests.load(std::sync::atomic::Ordering::Relaxed),
                    upstream_statuses: Vec::new(),
                    request_id: request_id.clone(),
                })
            }),
            logs: logs.clone(),
            remote: client.ip(),
            start,
            request_line: format!("{} {request_uri} {:?}", req.method(), req.version()),
            status: 0,
            referer: header_str(&req, header::REFERER),
            user_agent: header_str(&req, header::USER_AGENT),
            remote_user: crate::access_log::remote_user(req.headers()),
            upstream_addrs: Vec::new(),
            upstream_times: Vec::new(),
        }),
        added: Vec::new(),
        gzip: None,
        close: false,
        close_anyway: false,
        chunks: req.version() == Version::HTTP_11 && req.method() != Method::HEAD,
        keep_alive: None,
        held: Vec::new(),
        err_status: None,
        challenge: None,
        charset: None,
        expires: stock::Expires::Off,
    };
    let remote_addr = client.ip().to_string();
    let forwarded_for = {
        let mut prior: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        prior.push(&remote_addr);
        prior.join(", ")
    };
    let mut vars = Vars {
        host: host
            .as_ref()
            .ok()
            .and_then(Option::as_deref)
            .unwrap_or(server_name),
        request_uri: &request_uri,
        scheme: conn.scheme,
        server_name,
        remote_addr,
        forwarded_for,
        proxy_host: "",
        cert: conn.client_cert.as_deref(),
        client: server
            .reads_headers
            .then(|| Box::new(req.headers().clone())),
        conn,
        request_id,
        remote_port: client.port(),
        method: req.method().clone(),
        version: req.version(),
        merge_slashes,
        redirected: None,
    };
    if let Some((status, why)) = refused {
        tracing::info!(
            "{} {request_uri} from {}: {}, {why}",
            req.method(),
            client,
            status.as_u16()
        );
        // nginx ends the connection after each of these (keep-alive on it could be read
        // out of step).
        log.close_anyway = true;
        log.settle(&server.settings, &vars, &req, conn);
        return log.local(plain(status, ""), shared);
    }
    let (Ok(path), Ok(host)) = (path, host.as_ref()) else {
        unreachable!("an invalid path or host was refused above")
    };
    // nginx's check of the client's certificate, before anything the server does; its
    // 495 and 496 are answered as 400, or by the server's `error_page` for them.
    let mut pending = None;
    let verify = server.tls.client.verify;
    if conn.scheme == "https"
        && let Some(r) = client_cert::refusal(verify, conn.client_cert.as_deref())
    {
        tracing::info!(
            "{} {request_uri} from {client}: 400, {}",
            req.method(),
            r.log
        );
        log.close_anyway = true;
        log.settle(&server.settings, &vars, &req, conn);
        pending = Some((plain(StatusCode::BAD_REQUEST, r.text), r.code));
    }
    let server_ret = chosen(&server.ifs, server.ret.as_ref(), &vars);
    if let (Some(ret), None) = (&server_ret, &pending) {
        log.settle(&server.settings, &vars, &req, conn);
        let ct = stock::content_type(&server.settings, &String::from_utf8_lossy(&path.bytes));
        let base = || redirect_base(conn, host, server_name, &server.settings);
        return log.local(returned(ret, &vars, ct, base), shared);
    }
    let cx = Cx {
        conn,
        rt,
        server,
        shared,
        client,
        host,
        server_name,
        request_uri: &request_uri,
    };
    let http1 = req.version() < Version::HTTP_2;
    let mut req = req.map(Some);
    let found = found.filter(|_| pending.is_none());
    let (mut found, mut path, mut sent_uri) = (found, path, None::<String>);
    let mut redirected = false;
    loop {
        let li = found.map(|(i, _)| i);
        let s = li.map_or(&server.settings, |i| &server.locations[i].settings);
        let head = (!redirected && !s.error_pages.is_empty()).then(|| Head::of(&req));
        let at = At {
            li,
            lrt: li.map(|i| &rt.locations[si][i]),
            limits: &rt.server_limits[si],
            path: &path,
            sent_uri: sent_uri.as_deref(),
            internal: redirected,
            add_slash: found.is_some_and(|(_, slash)| slash),
        };
        let (local, code);
        if let Some((refused, c)) = pending.take() {
            (local, code) = (refused, c);
        } else {
            // Boxed: its state is most of a request's, and kept inline it would make this
            // future, which hyper moves, larger by all of it (measured: 3,456 bytes before
            // the error-page loop, 5,152 with it inline).
            (local, log) = match Box::pin(in_location(&cx, req, &at, &mut vars, log)).await {
                Ok(resp) => return resp,
                Err(failed) => failed,
            };
            code = local.status().as_u16();
        }
        let status = local.status();
        if ENDS_CONNECTION.contains(&code) {
            log.end_connection(http1, conn);
        }
        let page = head
            .filter(|_| local.extensions().get::<Close>().is_none())
            .and_then(|h| Some((pages::page_for(s, code)?, h)));
        let Some((page, head)) = page else {
            // nginx: an error while serving an error page is answered as itself.
            (log.err_status, log.challenge) = (None, None);
            return log.local(local, shared);
        };
        redirected = true;
        log.challenge = local.headers().get(header::WWW_AUTHENTICATE).cloned();
        log.err_status = match page.status {
            Overwrite::Keep => Some(status),
            Overwrite::Page => None,
            Overwrite::To(code) => Some(status_of(code)),
        };
        let mut method = head.method.clone();
        match &page.target {
            Target::Redirect(url) => {
                log.err_status = None;
                let status = status_of(page.redirect_status());
                let mut r = plain(status, "");
                match HeaderValue::from_str(&render(url, &vars)) {
                    Ok(v) => {
                        r.headers_mut().insert(header::LOCATION, v);
                    }
                    Err(_) => r = plain(StatusCode::INTERNAL_SERVER_ERROR, ""),
                }
                return log.local(r, shared);
            }
            Target::Uri(t) => {
                let target = render(t, &vars);
                let p = target.split_once('?').map_or(target.as_str(), |(p, _)| p);
                let Ok(p) = uri::normalize(p, server.settings.merge_slashes) else {
                    tracing::error!("error_page at {}: invalid URI \"{target}\"", page.place);
                    log.err_status = None;
                    return log.local(plain(StatusCode::INTERNAL_SERVER_ERROR, ""), shared);
                };
                path = uri::Path {
                    bytes: std::borrow::Cow::Owned(p.bytes.into_owned()),
                    quoted: p.quoted,
                };
                found = located(&server.locations, &path.bytes);
                if method != Method::HEAD {
                    method = Method::GET;
                }
                vars.redirected = Some(Box::new((target.clone(), method.clone())));
                sent_uri = Some(target);
            }
            Target::Named(name) => {
                found = server
                    .locations
                    .iter()
                    .position(|l| matches!(&l.matcher, Matcher::Named(n) if n == name))
                    .map(|i| (i, false));
            }
        }
        req = head.request(method);
    }
}

/// What the phases after the server's choice share.
struct Cx<'a> {
    conn: &'a Conn,
    rt: &'a Runtime,
    server: &'a Server,
    shared: &'a Shared,
    client: SocketAddr,
    host: &'a Option<String>,
    server_name: &'a str,
    request_uri: &'a str,
}

/// Where a request goes in its server: its location (none: the server's 404), its path,
/// and, after an `error_page` sent it elsewhere, the URI a node gets.
struct At<'a> {
    li: Option<usize>,
    lrt: Option<&'a LocationRt>,
    limits: &'a Applied,
    path: &'a uri::Path<'a>,
    sent_uri: Option<&'a str>,
    /// Sent here by `error_page`: the limits were applied already, `allow`/`deny` are
    /// again (nginx's rule), and no node's error is intercepted.
    internal: bool,
    /// The path is the location's name without its slash
    /// ([`crate::config::location::Found`]).
    add_slash: bool,
}

/// [`find`]'s location for `path` as its index in `locations`, and whether the answer is
/// the redirect that adds a slash.
fn located(locations: &[Location], path: &[u8]) -> Option<(usize, bool)> {
    let found = find(locations, path)?;
    let i = locations
        .iter()
        .position(|x| std::ptr::eq(x, found.location))?;
    Some((i, found.add_slash))
}

/// What an `error_page` needs of the request it sends elsewhere.
struct Head {
    method: Method,
    version: Version,
    headers: HeaderMap,
}

impl Head {
    fn of<B>(req: &Request<B>) -> Head {
        let mut headers = req.headers().clone();
        // Its body stays behind.
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
        headers.remove(header::UPGRADE);
        Head {
            method: req.method().clone(),
            version: req.version(),
            headers,
        }
    }

    fn request(self, method: Method) -> Request<Option<ClientBody>> {
        let mut r = Request::new(None);
        *r.method_mut() = method;
        *r.version_mut() = self.version;
        *r.headers_mut() = self.headers;
        r
    }
}

/// A request in its location: answered (`Ok`), or an error status gluu-lb answers itself
/// (`Err`, for `error_page`: `return CODE`, a refusal, a missing file, a node's failure,
/// or a node's error with `proxy_intercept_errors on`).
async fn in_location<'a>(
    cx: &Cx<'a>,
    mut req: Request<Option<ClientBody>>,
    at: &At<'_>,
    vars: &mut Vars<'a>,
    mut log: Log,
) -> Result<Response<Body>, (Local, Log)> {
    let Cx {
        conn,
        rt,
        server,
        shared,
        client,
        host,
        server_name,
        request_uri,
    } = *cx;
    let path = at.path;
    let who = || {
        format!(
            "client: {}, server: {server_name}, request: \"{} {request_uri} {:?}\", host: \"{}\"",
            client.ip(),
            req.method(),
            req.version(),
            host.as_deref().unwrap_or(server_name)
        )
    };
    let (Some(li), Some(lrt)) = (at.li, at.lrt) else {
        log.settle(&server.settings, vars, &req, conn);
        let s = &server.settings;
        let refused = match at.internal {
            true => None,
            false => admit(at.limits, s, client.ip(), who, &mut log, shared).await,
        };
        let refused = match refused {
            Some(r) => Some(r),
            None => {
                let access = access::Access::of(s);
                access_phase(access, req.headers(), vars, client.ip(), who).await
            }
        };
        return match refused {
            Some(refused) => Err((refused, log)),
            None if server.stub_status => stub_status(req.method(), shared, log).await,
            None => Err((plain(StatusCode::NOT_FOUND, ""), log)),
        };
    };
    let loc = &server.locations[li];
    if loc.internal && !at.internal {
        // nginx answers before anything else the location does (its find-config phase).
        log.settle(&loc.settings, vars, &req, conn);
        return Err((plain(StatusCode::NOT_FOUND, ""), log));
    }
    if at.add_slash {
        // Also nginx's find-config phase: `/a` for `location /a/ { proxy_pass ...; }`.
        log.settle(&loc.settings, vars, &req, conn);
        let query = at.sent_uri.unwrap_or(request_uri).split_once('?');
        let mut to = String::new();
        uri::escape(loc.path().as_bytes(), uri::ESCAPE_URI, &mut to);
        if let Some((_, q)) = query.filter(|(_, q)| !q.is_empty()) {
            to.push('?');
            to.push_str(q);
        }
        let base = || redirect_base(conn, host, server_name, &loc.settings);
        let answer = redirect(StatusCode::MOVED_PERMANENTLY, to, base)
            .unwrap_or_else(|| plain(StatusCode::BAD_REQUEST, ""));
        return Err((answer, log));
    }
    if let Some(pass) = &loc.proxy_pass {
        vars.proxy_host = &pass.upstream;
    }
    log.settle(&loc.settings, vars, &req, conn);
    if let Some(chosen) = chosen(&loc.ifs, loc.ret.as_ref(), vars) {
        let ret = chosen.0;
        let ct = stock::content_type(&loc.settings, &String::from_utf8_lossy(&path.bytes));
        let base = || redirect_base(conn, host, server_name, &loc.settings);
        let answer = returned(&chosen, vars, ct, base);
        // nginx sends a text (and drops a 444) as it is; a bare code or a redirect is an
        // error `error_page` may take.
        let text = ret.template.is_some() && !matches!(ret.code, 301 | 302 | 303 | 307 | 308);
        return if text || ret.code == 444 {
            Ok(log.local(answer, shared))
        } else {
            Err((answer, log))
        };
    }
    let (s, access) = (&loc.settings, loc.access(req.method()));
    let refused = match at.internal {
        true => None,
        false => admit(&lrt.limits, s, client.ip(), who, &mut log, shared).await,
    };
    let refused = match refused {
        Some(r) => Some(r),
        None => access_phase(access, req.headers(), vars, client.ip(), who).await,
    };
    if let Some(refused) = refused {
        return Err((refused, log));
    }
    if loc.stub_status {
        return stub_status(req.method(), shared, log).await;
    }
    let (Some(pass), Some(tls), Some(name)) = (&loc.proxy_pass, &lrt.tls, &lrt.ssl_name) else {
        return from_files(cx, loc, path, req.method(), log).await;
    };
    let Some(group) = rt.groups.get(&pass.upstream) else {
        return Err((plain(StatusCode::BAD_GATEWAY, ""), log));
    };
    let settings = &loc.settings;
    let max_body = settings.client_max_body_size;
    if max_body > 0
        && req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > max_body)
    {
        let too_large = plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than client_max_body_size\n",
        );
        return Err((too_large, log));
    }

    // The request as the node gets it.
    let upgrade = wants_upgrade(&req);
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let mut headers = std::mem::take(req.headers_mut());
    strip_hop_by_hop(&mut headers);
    if req.version() == Version::HTTP_2 {
        join_cookies(&mut headers);
    }
    headers.remove(header::EXPECT);
    headers.remove(header::HOST);
    if let Some(u) = upgrade {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if let Ok(v) = HeaderValue::from_str(&pass.upstream) {
        headers.insert(header::HOST, v);
    }
    // `scheme` is one of two literals: no copy, no check per request.
    headers.insert("x-forwarded-proto", HeaderValue::from_static(conn.scheme));
    for (name, template) in &settings.set_headers {
        let mut value = render(template, vars);
        if value.contains("\n\t") {
            // `$ssl_client_cert` is nginx's header folded over lines (obs-fold); a node
            // unfolds it to spaces (RFC 9112 section 5.2), and that is what goes, on one line.
            value = value.replace("\n\t", " ");
        }
        if value.is_empty() {
            headers.remove(name);
        } else if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name.clone(), v);
        }
    }
    let method = req.method().clone();
    let full = at.sent_uri.unwrap_or(request_uri);
    let query = full.split_once('?').map_or("", |(_, q)| q);
    let uri = upstream_uri(loc, full, path, query);
    let replayable = req.body().as_ref().is_none_or(HttpBody::is_end_stream);
    // A body of no stated length goes chunked whatever the method: left to hyper, a GET,
    // HEAD or CONNECT of unknown length goes with no body at all (its guess that they carry
    // none), and the node would miss what the client sent (nginx passes it).
    if !replayable && !headers.contains_key(header::CONTENT_LENGTH) {
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    let idempotent = !matches!(method.as_str(), "POST" | "LOCK" | "PATCH");
    // Set once the client's body has all been read: the wait for the node's answer starts.
    let sent = (!replayable).then(CancellationToken::new);
    let mut client_body: Option<Body> = sent.clone().zip(req.into_body()).map(|(sent, body)| {
        let linger = conn.linger.clone();
        Watched::new(
            body.map_err(BodyError::Broken),
            settings.client_body_timeout,
        )
        .limit(max_body)
        .on_end(move |_, complete| {
            sent.cancel();
            if complete {
                linger.unread(false);
            }
        })
        .boxed()
    });
    let nu = settings.next_upstream;
    let max_tries = settings.next_upstream_tries;

    let route = Route {
        tls,
        name,
        connect_timeout: settings.connect_timeout,
        send_timeout: settings.send_timeout,
        buffer_size: settings.buffer_size,
        socket_keepalive: settings.socket_keepalive,
    };
    let mut sel = group.selection(client.ip());
    let mut tries = 0u32;
    let mut failure_status = StatusCode::BAD_GATEWAY;
    let mut fallback = None;
    let t0 = Instant::now();
    while let Some((n, in_flight)) = group.choose(&mut sel) {
        tries += 1;
        if tries > 1 {
            shared.metrics.retry();
        }
        let node = &group.nodes[n];
        if let Some(e) = &mut log.entry {
            e.upstream_addrs.push(node.address.clone());
            e.upstream_times.push(Timing::new());
        }
        let mut upstream_req = Request::new(client_body.take().unwrap_or_else(body::empty));
        *upstream_req.method_mut() = method.clone();
        *upstream_req.version_mut() = Version::HTTP_11;
        *upstream_req.headers_mut() = headers.clone();
        match uri.parse() {
            Ok(u) => *upstream_req.uri_mut() = u,
            Err(_) => return Err((plain(StatusCode::BAD_REQUEST, ""), log)),
        }
        node.counters.requests.inc();
        let wait = (settings.read_timeout, sent.as_ref());
        let mut connected = None;
        let result = node
            .send(&route, upstream_req, wait, &mut connected, shared)
            .await;
        if let Some(t) = log.this_try() {
            t.connect = connected.map(|at| at - t.start);
            match &result {
                Ok(_) => t.header = Some(t.start.elapsed()),
                Err(_) => t.ended(),
            }
        }
        let tries_left = (max_tries == 0 || tries < max_tries)
            && (settings.next_upstream_timeout.is_zero()
                || t0.elapsed() < settings.next_upstream_timeout);
        if let Some(more) = log.entry.as_mut().and_then(|e| e.more.as_mut()) {
            more.upstream_statuses.push(match &result {
                Ok((resp, _)) => Some(resp.status().as_u16()),
                Err(f) if f.client_status().is_some() => None,
                Err(f) if f.is_timeout() => Some(504),
                Err(_) => Some(502),
            });
        }
        match result {
            Ok((mut resp, lease)) => {
                if let Some(r) = &lrt.redirect {
                    rewrite_redirects(resp.headers_mut(), r, || {
                        redirect_base(conn, host, server_name, settings)
                    });
                }
                if !settings.cookies.is_empty() {
                    cookie::rewrite_all(resp.headers_mut(), &settings.cookies, vars);
                }
                let status = resp.status().as_u16();
                let listed = match status {
                    500 => nu.http_500,
                    502 => nu.http_502,
                    503 => nu.http_503,
                    504 => nu.http_504,
                    _ => false,
                };
                if listed {
                    group.failed(n);
                    shared
                        .metrics
                        .upstream_failure(&group.name, &node.address, "http_5xx");
                    tracing::warn!(
                        "upstream {} ({}) answered {status} to {method} {uri} from {}",
                        node.address,
                        group.name,
                        client
                    );
                    if replayable && (idempotent || nu.non_idempotent) && tries_left {
                        if let Some(t) = log.this_try() {
                            t.ended();
                        }
                        fallback = Some((resp, (lease, in_flight)));
                        continue;
                    }
                } else {
                    group.succeeded(n);
                }
                if intercepted(settings, resp.status(), at.internal) {
                    return Err((plain(resp.status(), ""), log));
                }
                return Ok(respond(
                    resp,
                    (lease, in_flight),
                    log,
                    (settings.read_timeout, &lrt.hidden),
                    client_upgrade.map(|u| (u, conn)),
                    shared,
                ));
            }
            Err(f) if f.client_status().is_some() => {
                tracing::info!("{method} {uri} from {}: request body: {}", client, f.detail);
                let status = f.client_status().unwrap_or(StatusCode::BAD_REQUEST);
                if status == StatusCode::REQUEST_TIMEOUT {
                    conn.linger.timed_out();
                }
                return Err((plain(status, ""), log));
            }
            Err(f) => {
                if f.reason != "worker_connections" {
                    group.failed(n);
                }
                shared
                    .metrics
                    .upstream_failure(&group.name, &node.address, f.reason);
                tracing::warn!(
                    "upstream {} ({}) failed: {} while sending {method} {uri} from {}",
                    node.address,
                    group.name,
                    f.detail,
                    client
                );
                failure_status = if f.is_timeout() {
                    StatusCode::GATEWAY_TIMEOUT
                } else {
                    StatusCode::BAD_GATEWAY
                };
                let listed = match f.reason {
                    "timeout" => nu.timeout,
                    "invalid_header" => nu.invalid_header,
                    _ => nu.error,
                };
                let unsent = f.request.map(Request::into_body);
                let replay = match unsent {
                    Some(b) => {
                        client_body = (!replayable).then_some(b);
                        true
                    }
                    None => replayable && (idempotent || nu.non_idempotent),
                };
                if !(listed && replay && tries_left) {
                    break;
                }
            }
        }
    }
    if let Some((resp, done)) = fallback {
        if intercepted(settings, resp.status(), at.internal) {
            return Err((plain(resp.status(), ""), log));
        }
        let after = (settings.read_timeout, lrt.hidden.as_slice());
        return Ok(respond(resp, done, log, after, None, shared));
    }
    if tries == 0 {
        tracing::error!(
            "no live upstreams in \"{}\" for {method} {uri} from {}",
            group.name,
            client
        );
    }
    Err((plain(failure_status, ""), log))
}

/// `proxy_intercept_errors on`: a node's answer with a status an `error_page` of the
/// location lists gives way to the error page (not twice: nginx's `recursive_error_pages
/// off`).
fn intercepted(s: &ProxySettings, status: StatusCode, internal: bool) -> bool {
    s.intercept_errors
        && !internal
        && status.as_u16() >= 300
        && pages::page_for(s, status.as_u16()).is_some()
}

/// A location without `proxy_pass`: its file under `alias` or `root`, or a 404 without
/// either (nginx would look under its built-in root; gluu-lb serves no file it was not
/// pointed at).
async fn from_files(
    cx: &Cx<'_>,
    loc: &Location,
    path: &uri::Path<'_>,
    method: &Method,
    log: Log,
) -> Result<Response<Body>, (Local, Log)> {
    let file = match (&loc.alias, &loc.settings.root) {
        (Some(dir), _) => {
            let rest = path.bytes.get(loc.matched_len()..).unwrap_or_default();
            files::path_of(dir, rest)
        }
        (None, Some(dir)) => files::path_of(dir, &path.bytes),
        (None, None) => return Err((plain(StatusCode::NOT_FOUND, ""), log)),
    };
    let name = String::from_utf8_lossy(&path.bytes);
    let ct = stock::content_type(&loc.settings, &name);
    match files::serve(file, method, ct, loc.settings.log_not_found).await {
        files::Served::File(resp) => Ok(log.file(resp, loc.settings.send_timeout, cx.shared)),
        files::Served::Failed(status) => Err((plain(status, ""), log)),
        files::Served::Slash => {
            // nginx: the URI with its `/`, and the query as it came.
            let query = cx.request_uri.split_once('?').map(|(_, q)| q);
            let mut to = format!("{name}/");
            if let Some(q) = query {
                to.push('?');
                to.push_str(q);
            }
            let base = || redirect_base(cx.conn, cx.host, cx.server_name, &loc.settings);
            let r = redirect(StatusCode::MOVED_PERMANENTLY, to, base)
                .unwrap_or_else(|| plain(StatusCode::NOT_FOUND, ""));
            Err((r, log))
        }
    }
}

/// `stub_status`: a GET or HEAD gets the counts as text, another method 405.
async fn stub_status(
    method: &Method,
    shared: &Shared,
    log: Log,
) -> Result<Response<Body>, (Local, Log)> {
    if method != Method::GET && method != Method::HEAD {
        return Err((plain(StatusCode::METHOD_NOT_ALLOWED, ""), log));
    }
    let (active, accepted) = shared.metrics.connection_counts();
    let mut r = Response::new(Bytes::from(shared.live.counts(active, accepted).text()));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(log.local(r, shared))
}

/// nginx's `ignore_invalid_headers`: a request header whose name has other than letters,
/// digits and `-` (`_` too with `underscores_in_headers on`) is dropped before anything
/// reads it, so that no node takes `X_Forwarded_For` for `X-Forwarded-For` (a CGI-style
/// backend maps both to one variable).
fn drop_invalid_headers(headers: &mut HeaderMap, s: &ProxySettings, conn: &Conn) {
    if !s.ignore_invalid_headers {
        return;
    }
    let valid = |n: &HeaderName| {
        n.as_str().bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b == b'-'
                || (b == b'_' && s.underscores_in_headers)
        })
    };
    if headers.keys().all(valid) {
        return;
    }
    let invalid: Vec<HeaderName> = headers.keys().filter(|n| !valid(n)).cloned().collect();
    for name in invalid {
        tracing::info!(
            "client sent invalid header line: \"{name}\" (ignored), client: {}",
            conn.remote
        );
        headers.remove(name);
    }
}

/// The `$http_NAME` headers the `logs`' formats name, each once, with `req`'s values.
fn logged_headers(
    logs: &[AccessLog],
    req: &Request<ClientBody>,
) -> Vec<(HeaderName, Option<String>)> {
    let mut names: Vec<&HeaderName> = Vec::new();
    for name in logs
        .iter()
        .flat_map(AccessLog::formats)
        .flat_map(|f| &f.headers)
    {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
        .into_iter()
        .map(|n| (n.clone(), header_str(req, n.clone())))
        .collect()
}

/// The `$ssl_client_*` variables the formats of `logs` name, each once, with their values
/// for the connection's certificate `cert`.
fn logged_certs(
    logs: &[AccessLog],
    cert: Option<&client_cert::ClientCert>,
) -> Vec<(client_cert::CertVar, String)> {
    let mut out: Vec<(client_cert::CertVar, String)> = Vec::new();
    for c in logs
        .iter()
        .flat_map(AccessLog::formats)
        .flat_map(|f| f.certs.iter().copied())
    {
        if !out.iter().any(|(v, _)| *v == c) {
            out.push((c, c.value(cert).into_owned()));
        }
    }
    out
}

/// A request header as nginx 1.22's `$http_NAME` gives it: the first line, but for
/// `X-Forwarded-For` (every line, joined by ", ") and `Cookie` (by "; ").
fn header_str(req: &Request<ClientBody>, name: HeaderName) -> Option<String> {
    let glue: &[u8] = match name.as_str() {
        "x-forwarded-for" => b", ",
        "cookie" => COOKIE_GLUE,
        _ => {
            let v = req.headers().get(name)?;
            return Some(String::from_utf8_lossy(v.as_bytes()).into_owned());
        }
    };
    let lines = joined(req.headers(), &name, glue)?;
    Some(String::from_utf8_lossy(&lines).into_owned())
}

/// What joins cookie lines into one (RFC 9113 8.2.3; nginx's `$http_cookie`).
const COOKIE_GLUE: &[u8] = b"; ";

/// Every line of `name`, joined by `glue`; `None` without any.
fn joined(headers: &HeaderMap, name: &HeaderName, glue: &[u8]) -> Option<Vec<u8>> {
    let lines: Vec<_> = headers
        .get_all(name)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    (!lines.is_empty()).then(|| lines.join(glue))
}

/// HTTP/2 lets a client send its cookies as several fields; an HTTP/1.1 node gets them on
/// one line, joined by "; " (RFC 9113 8.2.3), as nginx joins them.
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let one = joined(headers, &header::COOKIE, COOKIE_GLUE)
        .and_then(|j| HeaderValue::from_bytes(&j).ok());
    if let Some(one) = one {
        headers.insert(header::COOKIE, one);
    }
}

/// A node's `Content-Length` and `Content-Type` as a client may get them. hyper checks the
/// length only where it frames a body by it, so the answer to a HEAD, a 204 or a 304 comes
/// as the node wrote it: two lengths (which hyper then refuses to send, and the client got
/// no answer at all) are one if they agree and dropped if not, one that is not a number is
/// dropped (nginx 1.22 drops it too), leading zeros go (nginx sends the number it read);
/// a 204 has none (RFC 9110 8.6: hyper drops it on HTTP/1.1, not on HTTP/2), nor an answer
/// with a `Transfer-Encoding` (hyper read the body by the coding, so the length is not
/// this body's; RFC 9112 6.3 has a proxy drop it). Of two types the last is taken and an
/// empty one is dropped, as nginx does.
fn one_of_each(headers: &mut HeaderMap, status: StatusCode) {
    if status == StatusCode::NO_CONTENT || headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    // Only a name with two lines makes the map hold more values than names.
    let twice = headers.len() > headers.keys_len();
    let lengths = headers.get_all(header::CONTENT_LENGTH);
    if let Some(first) = lengths.iter().next() {
        let more = twice && lengths.iter().nth(1).is_some();
        let digits = first.as_bytes();
        let number = !digits.is_empty() && digits.iter().all(u8::is_ascii_digit);
        let zeros = digits
            .iter()
            .take_while(|b| **b == b'0')
            .count()
            .min(digits.len().saturating_sub(1));
        if !number || (more && lengths.iter().any(|v| v != first)) {
            headers.remove(header::CONTENT_LENGTH);
        } else if zeros > 0 || more {
            let one = HeaderValue::from_bytes(&digits[zeros..]).expect("digits");
            headers.insert(header::CONTENT_LENGTH, one);
        }
    }
    let types = headers.get_all(header::CONTENT_TYPE);
    match types.iter().next_back() {
        Some(last) if last.is_empty() => {
            headers.remove(header::CONTENT_TYPE);
        }
        Some(last) if twice && types.iter().nth(1).is_some() => {
            let last = last.clone();
            headers.insert(header::CONTENT_TYPE, last);
        }
        _ => {}
    }
}

/// nginx's `proxy_hide_header` defaults and the location's own lines: the node's software
/// and version are nobody's business, the date is the balancer's (hyper adds it),
/// `X-Accel-*` were meant for nginx.
fn hide(headers: &mut HeaderMap, hidden: &[HeaderName]) {
    for name in hidden {
        headers.remove(name);
    }
}

/// The node's response on its way to the client; `done` goes back (the connection to the
/// pool, the in-flight count) when the body has been sent. `upgrade` is the client's side
/// of a requested protocol switch and its connection, where a 101 leaves the relay.
fn respond(
    mut resp: Response<Incoming>,
    done: (Lease, InFlight),
    mut log: Log,
    (read_timeout, hidden): (Duration, &[HeaderName]),
    upgrade: Option<(OnUpgrade, &Conn)>,
    shared: &Shared,
) -> Response<Body> {
    let status = log.status(&mut resp, shared);
    if let (StatusCode::SWITCHING_PROTOCOLS, Some((client, conn))) = (status, upgrade) {
        let node = hyper::upgrade::on(&mut resp);
        let (mut parts, _) = resp.into_parts();
        let protocol = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        hide(&mut parts.headers, hidden);
        log.decorate(&mut parts.headers, status);
        if let Some(u) = protocol {
            parts.headers.insert(header::UPGRADE, u);
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        *lock(&conn.upgraded) = Some(Upgrade {
            client,
            node,
            done,
            log,
            idle: read_timeout,
        });
        return Response::from_parts(parts, body::empty());
    }
    let (lease, in_flight) = done;
    let (mut parts, incoming) = resp.into_parts();
    one_of_each(&mut parts.headers, status);
    strip_hop_by_hop(&mut parts.headers);
    hide(&mut parts.headers, hidden);
    log.decorate(&mut parts.headers, status);
    let incoming = match log
        .gzip
        .take()
        .and_then(|a| a.decide(status, &mut parts.headers))
    {
        Some(z) => Either::Right(Gzipped::new(incoming, z)),
        None => Either::Left(incoming),
    };
    // hyper's choice for the client: a length it does not know goes in chunks.
    let chunked = log.chunks
        && !matches!(status.as_u16(), 100..=199 | 204 | 304)
        && !parts.headers.contains_key(header::CONTENT_LENGTH)
        && !incoming.is_end_stream()
        && incoming.size_hint().exact().is_none();
    let body = Watched::new(incoming, read_timeout)
        .turn(Turn::current())
        .chunked(chunked)
        .on_end(move |bytes, complete| {
            if complete {
                lease.release();
            }
            drop(in_flight);
            if let Some(e) = log.entry.take() {
                e.write(bytes);
            }
        })
        .boxed();
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bodyless_answer_gets_one_length_and_one_type() {
        let cl = header::CONTENT_LENGTH.as_str();
        let ct = header::CONTENT_TYPE.as_str();
        for (lines, want) in [
            (&[(cl, "2")][..], &[(cl, "2")][..]),
            (&[(cl, "0")], &[(cl, "0")]),
            (&[(cl, "2"), (cl, "2")], &[(cl, "2")]),
            (&[(cl, "2"), (cl, "1")], &[]),
            (&[(cl, "abc")], &[]),
            (&[(cl, "")], &[]),
            (&[(cl, "+2")], &[]),
            (&[(cl, "007")], &[(cl, "7")]),
            (&[(cl, "000")], &[(cl, "0")]),
            (&[(ct, "text/html")], &[(ct, "text/html")]),
            (&[(ct, "text/css"), (ct, "text/html")], &[(ct, "text/html")]),
            (&[(ct, "text/css"), (ct, "")], &[]),
            (&[(ct, "")], &[]),
        ] {
            let mut headers = HeaderMap::new();
            for (name, value) in lines {
                headers.append(*name, HeaderValue::from_static(value));
            }
            one_of_each(&mut headers, StatusCode::OK);
            let got: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.to_str().expect("text")))
                .collect();
            assert_eq!(got, want, "{lines:?}");
        }
        let mut headers = HeaderMap::new();
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        one_of_each(&mut headers, StatusCode::NO_CONTENT);
        assert!(headers.is_empty(), "a 204's length: {headers:?}");
    }

    #[test]
    fn hosts_as_nginx_validates_them() {
        for (raw, want) in [
            ("LB.Example.org:443", Some("lb.example.org")),
            ("lb.", Some("lb")),
            ("a.:80", Some("a")),
            ("[::1]:8443", Some("[::1]")),
            ("a:b:c", Some("a")),
            (".lb", Some(".lb")),
            ("a..b", None),
            ("a:b..c", None),
            ("a/b", None),
            ("a b", None),
            (":80", None),
            ("", None),
        ] {
            assert_eq!(valid_host(raw.as_bytes()).as_deref(), want, "{raw:?}");
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::COOKIE, HeaderValue::from_static("a=b"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::COOKIE));
    }

    #[test]
    fn templates_render_nginx_variables() {
        let conn = Conn::new(
            "192.0.2.1:40000".parse().expect("addr"),
            Some("198.51.100.2:8443".parse().expect("addr")),
            "https",
            Some("lb.example.org".into()),
            Pace::new(Duration::from_secs(1), Duration::from_secs(1)),
            Linger::new(&ProxySettings::default()),
        );
        let mut client = HeaderMap::new();
        for cookie in ["a=1; Session = x y , z;b=2", "SESSION=second", "c"] {
            client.append(header::COOKIE, HeaderValue::from_static(cookie));
        }
        let mut v = Vars {
            host: "lb.example.org",
            request_uri: "/a?b",
            scheme: "https",
            server_name: "lb",
            remote_addr: "192.0.2.1".into(),
            forwarded_for: "10.0.0.9, 192.0.2.1".into(),
            proxy_host: "backend",
            cert: None,
            client: Some(Box::new(client)),
            conn: &conn,
            request_id: Some(new_request_id()),
            remote_port: 40000,
            method: Method::POST,
            version: Version::HTTP_2,
            merge_slashes: true,
            redirected: None,
        };
        let t = vec![
            Part::Var("scheme"),
            Part::Text("://".into()),
            Part::Var("host"),
            Part::Var("request_uri"),
            Part::Text(" ".into()),
            Part::Var("proxy_add_x_forwarded_for"),
        ];
        assert_eq!(
            render(&t, &v),
            "https://lb.example.org/a?b 10.0.0.9, 192.0.2.1"
        );
        let all = [
            "request_method",
            "uri",
            "args",
            "is_args",
            "https",
            "server_protocol",
            "request",
            "server_addr",
            "server_port",
            "remote_port",
            "ssl_server_name",
            "connection_requests",
        ];
        let t: Template = all
            .iter()
            .flat_map(|n| [Part::Var(n), Part::Text("|".into())])
            .collect();
        assert_eq!(
            render(&t, &v),
            "POST|/a|b|?|on|HTTP/2.0|POST /a?b HTTP/2.0|198.51.100.2|8443|40000|lb.example.org|0|"
        );
        // After `error_page 404 /err/x?c=d`, as nginx's internal redirect: the page's URI
        // and method, the client's request line.
        v.redirected = Some(Box::new(("/err/x?c=d".into(), Method::GET)));
        assert_eq!(
            render(&t, &v),
            "GET|/err/x|c=d|?|on|HTTP/2.0|POST /a?b HTTP/2.0|198.51.100.2|8443|40000|lb.example.org|0|"
        );
        assert_eq!(v.arg("c"), Some("d"));
        v.redirected = None;
        // nginx 1.22's `$cookie_NAME` and `$arg_NAME`.
        let cookie = |name: &str| v.cookie(name);
        assert_eq!(cookie("a").as_deref(), Some("1"));
        assert_eq!(cookie("session").as_deref(), Some("x y , z"));
        assert_eq!(cookie("b").as_deref(), Some("2"));
        assert_eq!(cookie("c"), None);
        assert_eq!(cookie("z"), None);
        for (uri, name, want) in [
            ("/?a=1&A=2", "a", Some("1")),
            ("/?xa=1&a=2", "a", Some("2")),
            ("/?a&a=", "a", Some("")),
            ("/?b=1", "a", None),
            ("/", "a", None),
        ] {
            v.request_uri = uri;
            assert_eq!(v.arg(name), want, "{uri}");
        }
    }
}
