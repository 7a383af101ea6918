//! The nodes behind an `upstream` block: nginx's choice of node ([`crate::balance`]) with
//! its failure accounting, a keep-alive pool of HTTP/1.1 connections per node (the guide's
//! nginx opens a new TCP and TLS connection for every request), the upstream TLS policy,
//! and each node's state for `/status`.
//!
//! Pooled connections are keyed by the TLS settings and server name they were opened with,
//! so a location that pins the node's certificate never reuses a connection another
//! location opened without verification.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use gluu_common::tap::Tapped;
use gluu_common::validity::{self, Validity};
use hyper::Request;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::balance::{IpHash, Peers, Ring, Tried};
use crate::body::{Body, BodyError};
use crate::config::upstream::Reuse;
use crate::config::upstream::{Method, Upstream};
use crate::metrics::{Metrics, NodeCounters};
use crate::send_timeout::SendTimed;
use crate::workers;

/// Idle connections kept per node when the upstream has no `keepalive` line, shared out
/// among the workers (a `keepalive N` line is per worker, as nginx's).
pub const DEFAULT_KEEPALIVE: usize = 256;

/// Bytes read from a node connection at a time: a whole TLS record and its header.
const NODE_READ_BUFFER: usize = 17 * 1024;

/// The most an HTTP/2 stream holds of a response its client does not read (hyper's
/// default: 400 KiB; an HTTP/2 client that opened 100 streams of 1 MiB and stopped reading
/// made gluu-lb hold 1.1 MiB per stream, bench/RESULTS.md, session 13). A node connection's
/// read buffer has the same bound by default: `proxy_buffer_size`.
pub const STREAM_BUFFER_MAX: usize = 64 * 1024;

/// A mutex's guard; a panic while it was held does not make the data unusable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a location talks TLS to its nodes; locations with the same settings share one.
pub struct UpstreamTls {
    pub connector: TlsConnector,
    /// What the node must present, in words (for logs and `-t`).
    pub policy: String,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// How a location reaches its nodes.
#[derive(Debug)]
pub struct Route<'a> {
    pub tls: &'a Arc<UpstreamTls>,
    pub name: &'a ServerName<'static>,
    /// `proxy_connect_timeout`: TCP and TLS together.
    pub connect_timeout: Duration,
    /// `proxy_send_timeout`: the longest a write to the node may stay blocked.
    pub send_timeout: Duration,
    /// `proxy_buffer_size`: the most hyper's read buffer on the connection grows to (its
    /// default: 400 KiB), and so the largest response head the node may send. While a
    /// client does not read, this is what a node connection holds of the response at most
    /// (plus one TLS record). hyper checks it between reads, so either may pass it by up
    /// to one read (a 70,000-byte head passed 64k in the interop test; 200,000 did not).
    pub buffer_size: usize,
    /// `proxy_socket_keepalive`: TCP keep-alive probes on the connection (SO_KEEPALIVE,
    /// with the kernel's timings), so a node that vanished is noticed on an idle one.
    pub socket_keepalive: bool,
}

/// What a pooled connection was opened with: a request reuses only one opened the same
/// way (TLS settings, server name, `proxy_send_timeout`, `proxy_buffer_size`,
/// `proxy_socket_keepalive`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct PoolKey {
    tls: usize,
    name: ServerName<'static>,
    send_timeout: Duration,
    buffer_size: usize,
    socket_keepalive: bool,
}

/// Why a request to a node failed, as `proxy_next_upstream` and the metrics see it.
#[derive(Debug)]
pub struct Failure {
    /// `connect`, `tls`, `timeout`, `invalid_header`, `closed`, `worker_connections`, or,
    /// not the node's fault, the client's body was too large (`client_max_body_size`), too
    /// slow (`client_body_timeout`) or could not be read (`client_body`).
    pub reason: &'static str,
    pub detail: String,
    /// The request never left: retrying cannot replay anything.
    pub request: Option<Request<Body>>,
}

impl Failure {
    pub fn is_timeout(&self) -> bool {
        self.reason == "timeout"
    }

    /// For a failure of the client's body, the status the client gets (nginx's): 413,
    /// 408, or 400 for a body that could not be read (a bad chunk).
    pub fn client_status(&self) -> Option<hyper::StatusCode> {
        match self.reason {
            "client_max_body_size" => Some(hyper::StatusCode::PAYLOAD_TOO_LARGE),
            "client_body_timeout" => Some(hyper::StatusCode::REQUEST_TIMEOUT),
            "client_body" => Some(hyper::StatusCode::BAD_REQUEST),
            _ => None,
        }
    }

    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            request: None,
        }
    }
}

/// The last active health check of a node.
#[derive(Clone, Debug)]
pub struct Check {
    pub at: SystemTime,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Default)]
struct Health {
    fails: u32,
    passes: u32,
    last: Option<Check>,
}

struct Idle {
    key: PoolKey,
    since: Instant,
    conn: Pooled,
}

/// A node connection between requests: the way to send on it, how many requests it has
/// carried and when it was made (`keepalive_requests`, `keepalive_time`).
struct Pooled {
    sender: SendRequest<Body>,
    uses: u32,
    born: Instant,
}

impl Pooled {
    /// Whether it may carry another request under `reuse` (idle `now - since`).
    fn usable(&self, reuse: &Reuse, idle: Duration) -> bool {
        !self.sender.is_closed()
            && idle < reuse.idle
            && self.uses < reuse.requests
            && self.born.elapsed() < reuse.lifetime
    }
}

/// One `server` line of an upstream.
pub struct Node {
    pub address: String,
    pub upstream: String,
    pub counters: NodeCounters,
    /// Idle connections kept per worker (nginx: per worker process).
    keepalive: usize,
    /// When a connection is not used again.
    reuse: Reuse,
    /// One pool per worker thread, index [`workers::current`] (0: the control thread): a
    /// connection is used only on the thread whose event loop drives it.
    idle: Vec<Mutex<Vec<Idle>>>,
    /// Requests using the node now: its peer's count ([`Peer::conns`]).
    active: Arc<AtomicUsize>,
    health: Mutex<Health>,
    presented: Mutex<Presented>,
}

/// The certificate chain a node presented at its last new connection.
#[derive(Debug, Default)]
struct Presented {
    leaf: Option<CertificateDer<'static>>,
    validity: Option<Validity>,
    /// When its end was last warned of.
    warned: Option<Instant>,
}

impl Presented {
    /// Notes `chain`, presented by `node` at `now`: the new end date when the certificate
    /// changed, and what to warn of (a certificate ending within [`validity::WARN_WITHIN`],
    /// ended, or not valid yet), said when first seen and again at most once every
    /// [`validity::REMIND_EVERY`] while new connections keep meeting it.
    fn see(
        &mut self,
        chain: &[CertificateDer<'static>],
        node: &str,
        now: (Instant, SystemTime),
    ) -> (Option<i64>, Option<String>) {
        let mut changed = None;
        if self.leaf.as_ref() != chain.first() {
            self.leaf = chain.first().cloned();
            self.validity = Validity::of(std::path::Path::new(node), chain);
            self.warned = None;
            changed = self.validity.as_ref().map(|v| v.not_after);
        }
        let due = self
            .warned
            .is_none_or(|t| now.0.duration_since(t) >= validity::REMIND_EVERY);
        let warning = self.validity.as_ref().filter(|_| due).and_then(|v| {
            v.warning_as(
                &format!("the certificate node {node} presents ({})", v.subject),
                "renew it on the node",
                now.1,
            )
        });
        if warning.is_some() {
            self.warned = Some(now.0);
        }
        (changed, warning)
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("address", &self.address)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

/// Counts a request as in flight on a node until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Node>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection lent to one request; [`Lease::release`] returns it to the pool.
pub struct Lease {
    node: Arc<Node>,
    key: PoolKey,
    conn: Pooled,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("node", &self.node.address)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// The node's `server` address.
    pub fn address(&self) -> &str {
        &self.node.address
    }

    /// The response was read to its end: the connection can serve the next request, unless
    /// it has carried `keepalive_requests` or lived `keepalive_time` (then it closes).
    pub fn release(self) {
        let reuse = &self.node.reuse;
        if !self.conn.usable(reuse, Duration::ZERO) {
            return;
        }
        let mut idle = lock(self.node.pool());
        let now = Instant::now();
        if idle.len() >= self.node.keepalive {
            // Full: drop the dead and expired, then (nginx's rule) the least recently used.
            idle.retain(|c| c.conn.usable(reuse, now.duration_since(c.since)));
            if idle.len() >= self.node.keepalive {
                idle.remove(0);
            }
        }
        idle.push(Idle {
            key: self.key,
            since: now,
            conn: self.conn,
        });
    }
}

/// The first error of type `E` among `e`'s sources.
fn source_of<E: std::error::Error + 'static>(e: &hyper::Error) -> Option<&E> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<E>() {
            return Some(b);
        }
        source = s.source();
    }
    None
}

/// The client's request body failed (too large, too slow, unreadable) while it went to
/// the node: the client's fault, not the node's.
fn client_body_fault(e: &hyper::Error) -> Option<&BodyError> {
    source_of::<BodyError>(e)
}

fn tls_key(tls: &Arc<UpstreamTls>) -> usize {
    Arc::as_ptr(tls) as usize
}

impl Node {
    fn in_flight(self: &Arc<Self>) -> InFlight {
        self.active.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// This thread's pool.
    fn pool(&self) -> &Mutex<Vec<Idle>> {
        &self.idle[workers::current().min(self.idle.len() - 1)]
    }

    fn take_idle(&self, key: &PoolKey) -> Option<Pooled> {
        // Most recently used first; the match is nearly always the last entry, so this is
        // O(1) per request. Closed or expired entries met on the way are dropped.
        let mut idle = lock(self.pool());
        let now = Instant::now();
        while let Some(i) = idle.iter().rposition(|c| &c.key == key) {
            let c = idle.remove(i);
            if c.conn.usable(&self.reuse, now.duration_since(c.since)) {
                return Some(c.conn);
            }
        }
        None
    }

    /// The pooled connections of every worker that could carry a request now.
    fn idle_usable(&self) -> usize {
        let now = Instant::now();
        self.idle
            .iter()
            .map(|p| {
                lock(p)
                    .iter()
                    .filter(|c| c.conn.usable(&self.reuse, now.duration_since(c.since)))
                    .count()
            })
            .sum()
    }

    /// A new TCP + TLS + HTTP/1.1 connection the way `route` says, within its
    /// `connect_timeout`, holding one of the `worker_connections` permits while it lives.
    pub async fn connect(
        &self,
        route: &Route<'_>,
        permits: &Arc<Semaphore>,
    ) -> Result<SendRequest<Body>, Failure> {
        let (tls, name, timeout) = (route.tls, route.name, route.connect_timeout);
        let permit = permits.clone().try_acquire_owned().map_err(|_| {
            Failure::new(
                "worker_connections",
                "worker_connections are not enough to connect to the node",
            )
        })?;
        let deadline = tokio::time::Instant::now() + timeout;
        let tcp = tokio::time::timeout_at(deadline, TcpStream::connect(&self.address))
            .await
            .map_err(|_| Failure::new("timeout", format!("connect timed out after {timeout:?}")))?
            .map_err(|e| Failure::new("connect", format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        if route.socket_keepalive
            && let Err(e) = socket2::SockRef::from(&tcp).set_keepalive(true)
        {
            tracing::warn!("{}: SO_KEEPALIVE: {e}", self.address);
        }
        // rustls reads at most 4 KiB per call: through this buffer a response record of any
        // size (up to 16 KiB) comes in with one read(2), not one per 4 KiB.
        let tcp = BufReader::with_capacity(
            NODE_READ_BUFFER,
            SendTimed::to_node(tcp, route.send_timeout),
        );
        let stream = tokio::time::timeout_at(deadline, tls.connector.connect(name.clone(), tcp))
            .await
            .map_err(|_| {
                Failure::new(
                    "timeout",
                    format!("TLS handshake timed out after {timeout:?}"),
                )
            })?
            .map_err(|e| {
                Failure::new(
                    "tls",
                    format!(
                        "TLS handshake: {} (the node must present {})",
                        gluu_common::verify::describe_failure(&e),
                        tls.policy
                    ),
                )
            })?;
        if let Some(chain) = stream.get_ref().1.peer_certificates() {
            let now = (Instant::now(), SystemTime::now());
            let (changed, warning) = lock(&self.presented).see(chain, &self.address, now);
            if let Some(end) = changed {
                self.counters.certificate.set(end);
            }
            if let Some(w) = warning {
                tracing::warn!("upstream \"{}\": {w}", self.upstream);
            }
        }
        // The slot goes with the stream: back when hyper closes the connection or, for an
        // upgraded one (a WebSocket), when the relay that took the stream over ends.
        let stream = Tapped::new(stream, permit);
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(route.buffer_size)
            .handshake::<_, Body>(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::new("connect", format!("HTTP handshake: {e}")))?;
        let address = self.address.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("connection to {address}: {e}");
            }
        });
        Ok(sender)
    }

    /// Sends `req` on a pooled connection, or a new one. A pooled connection the node closed
    /// while it sat idle gives the request back untouched: it goes again on a fresh one,
    /// transparently. The response headers must come within `wait` (`proxy_read_timeout`)
    /// of the request having gone whole: at once for a request without a body, else once
    /// `sent` says the client's body has all been read (nginx, which buffers the body first,
    /// starts the timer then too; a slow upload is bounded by `client_body_timeout`, a node
    /// that stops reading it by `proxy_send_timeout`).
    pub async fn send(
        self: &Arc<Self>,
        route: &Route<'_>,
        mut req: Request<Body>,
        (wait, sent): (Duration, Option<&CancellationToken>),
        connected: &mut Option<Instant>,
        shared: &Shared,
    ) -> Result<(hyper::Response<Incoming>, Lease), Failure> {
        let key = PoolKey {
            tls: tls_key(route.tls),
            name: route.name.clone(),
            send_timeout: route.send_timeout,
            buffer_size: route.buffer_size,
            socket_keepalive: route.socket_keepalive,
        };
        loop {
            let (mut conn, pooled) = match self.take_idle(&key) {
                Some(c) => (c, true),
                None => {
                    self.counters.connects.inc();
                    // Boxed: a connect is rare beside the pooled case, and its state
                    // (TCP, TLS handshake) would otherwise size every request's future,
                    // which hyper keeps a slot for on every client connection.
                    match Box::pin(self.connect(route, &shared.permits)).await {
                        Ok(sender) => (
                            Pooled {
                                sender,
                                uses: 0,
                                born: Instant::now(),
                            },
                            false,
                        ),
                        Err(mut f) => {
                            f.request = Some(req);
                            return Err(f);
                        }
                    }
                }
            };
            if pooled && conn.sender.ready().await.is_err() {
                continue;
            }
            connected.get_or_insert_with(Instant::now);
            let head_due = async {
                if let Some(sent) = sent {
                    sent.cancelled().await;
                }
                tokio::time::sleep(wait).await;
            };
            let result = tokio::select! {
                r = conn.sender.try_send_request(req) => Ok(r),
                () = head_due => Err(()),
            };
            match result {
                Err(()) => {
                    return Err(Failure::new(
                        "timeout",
                        format!("no response headers within {wait:?} of the request"),
                    ));
                }
                Ok(Ok(resp)) => {
                    conn.uses += 1;
                    let lease = Lease {
                        node: self.clone(),
                        key,
                        conn,
                    };
                    return Ok((resp, lease));
                }
                Ok(Err(mut e)) => match e.take_message() {
                    Some(back) if pooled => req = back,
                    back => {
                        if let Some(fault) = client_body_fault(e.error()) {
                            return Err(Failure {
                                reason: fault.reason(),
                                detail: fault.to_string(),
                                request: None,
                            });
                        }
                        let reason = if e.error().is_parse() {
                            "invalid_header"
                        } else if source_of::<std::io::Error>(e.error())
                            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
                        {
                            "timeout"
                        } else {
                            "closed"
                        };
                        return Err(Failure {
                            reason,
                            detail: e.error().to_string(),
                            request: back,
                        });
                    }
                },
            }
        }
    }

    /// Records an active check's result; returns `Some(healthy)` when the node's state
    /// changes (after `fails` failures in a row, or `passes` successes in a row).
    pub fn record_check(
        &self,
        check: Check,
        fails: u32,
        passes: u32,
        unhealthy: bool,
    ) -> Option<bool> {
        let mut h = lock(&self.health);
        let ok = check.ok;
        h.last = Some(check);
        if ok {
            h.fails = 0;
            h.passes += 1;
            (unhealthy && h.passes >= passes).then_some(true)
        } else {
            h.passes = 0;
            h.fails += 1;
            (!unhealthy && h.fails >= fails).then_some(false)
        }
    }
}

/// Which node a request tries next: nginx's per-request state.
#[derive(Debug)]
pub struct Selection {
    tried: Tried,
    backup_tried: Tried,
    ip: Option<IpHash>,
    key: String,
}

/// An `upstream` block at run time.
#[derive(Debug)]
pub struct Group {
    pub name: String,
    method: Method,
    ring: Option<Ring>,
    primary: Mutex<Peers>,
    backup: Mutex<Peers>,
    /// Node `i` is `primary[slots[i].1]` or `backup[slots[i].1]`.
    slots: Vec<(bool, usize)>,
    pub nodes: Vec<Arc<Node>>,
}

impl Group {
    /// The nodes of `u`, each with a pool for each of `workers` and the control thread.
    pub fn new(u: &Upstream, metrics: &Metrics, workers: usize) -> Group {
        let keepalive = u
            .keepalive
            .unwrap_or(DEFAULT_KEEPALIVE.div_ceil(workers.max(1)));
        let mut primary = Vec::new();
        let mut backup = Vec::new();
        let mut slots = Vec::new();
        let mut nodes = Vec::new();
        for s in &u.servers {
            let list = if s.backup { &mut backup } else { &mut primary };
            slots.push((s.backup, list.len()));
            let peer = s.peer();
            let active = peer.conns().clone();
            list.push(peer);
            nodes.push(Arc::new(Node {
                address: s.address.clone(),
                upstream: u.name.clone(),
                counters: metrics.node(&u.name, &s.address),
                keepalive,
                reuse: u.reuse,
                idle: (0..=workers).map(|_| Mutex::new(Vec::new())).collect(),
                active,
                health: Mutex::new(Health::default()),
                presented: Mutex::new(Presented::default()),
            }));
        }
        let ring = (u.method == Method::ConsistentRemoteAddr).then(|| {
            Ring::new(
                u.servers
                    .iter()
                    .filter(|s| !s.backup)
                    .map(|s| (s.address.as_str(), s.weight)),
            )
        });
        Group {
            name: u.name.clone(),
            method: u.method,
            ring,
            primary: Mutex::new(Peers::new(primary)),
            backup: Mutex::new(Peers::backup(backup)),
            slots,
            nodes,
        }
    }

    pub fn selection(&self, client: IpAddr) -> Selection {
        Selection {
            tried: Tried::default(),
            backup_tried: Tried::default(),
            ip: (self.method == Method::IpHash).then(|| IpHash::new(client)),
            // `hash $remote_addr consistent` hashes the address as text; nothing else
            // needs it.
            key: if self.ring.is_some() {
                client.to_string()
            } else {
                String::new()
            },
        }
    }

    fn node_of(&self, backup: bool, i: usize) -> usize {
        self.slots
            .iter()
            .position(|s| *s == (backup, i))
            .unwrap_or_default()
    }

    /// The next node for this request, `None` when no live node is left untried. The node
    /// counts the request as in flight from before the choice is let go, so that the next
    /// choice (`least_conn`, `max_conns`) sees it, as nginx counts under its lock.
    pub fn choose(&self, sel: &mut Selection) -> Option<(usize, InFlight)> {
        let now = Instant::now();
        {
            let mut peers = lock(&self.primary);
            let chosen = match (&mut sel.ip, &self.ring) {
                (Some(ip), _) => peers.ip_hash(ip, &mut sel.tried, now),
                (None, Some(ring)) => peers.consistent(ring, &sel.key, &mut sel.tried, now),
                (None, None) if self.method == Method::LeastConn => {
                    peers.least_conn(&mut sel.tried, now)
                }
                (None, None) => peers.round_robin(&mut sel.tried, now),
            };
            if let Some(i) = chosen {
                let n = self.node_of(false, i);
                return Some((n, self.nodes[n].in_flight()));
            }
        }
        let mut peers = lock(&self.backup);
        let i = match self.method {
            Method::LeastConn => peers.least_conn(&mut sel.backup_tried, now),
            _ => peers.round_robin(&mut sel.backup_tried, now),
        }?;
        let n = self.node_of(true, i);
        Some((n, self.nodes[n].in_flight()))
    }

    fn with_peers<R>(&self, node: usize, f: impl FnOnce(&mut Peers, usize) -> R) -> R {
        let (backup, i) = self.slots[node];
        let mut peers = lock(if backup { &self.backup } else { &self.primary });
        f(&mut peers, i)
    }

    pub fn failed(&self, node: usize) {
        self.with_peers(node, |p, i| p.failed(i, Instant::now()));
    }

    pub fn succeeded(&self, node: usize) {
        self.with_peers(node, |p, i| p.succeeded(i));
    }

    pub fn set_unhealthy(&self, node: usize, unhealthy: bool) {
        self.with_peers(node, |p, i| p.set_unhealthy(i, unhealthy));
    }

    pub fn is_unhealthy(&self, node: usize) -> bool {
        self.with_peers(node, |p, i| p.get(i).unhealthy)
    }

    /// Every node's state, for `/status`.
    pub fn status(&self) -> Vec<serde_json::Value> {
        let now = Instant::now();
        self.nodes
            .iter()
            .enumerate()
            .map(|(n, node)| {
                let (state, fails) = self.with_peers(n, |p, i| (p.get(i).state(now), p.get(i).fails()));
                let last = lock(&node.health).last.clone();
                serde_json::json!({
                    "address": node.address,
                    "backup": self.slots[n].0,
                    "state": state,
                    "fails": fails,
                    "active": node.active.load(Ordering::Relaxed),
                    "idle_connections": node.idle_usable(),
                    "certificate": lock(&node.presented).validity.as_ref().map(|v| serde_json::json!({
                        "subject": v.subject,
                        "not_after": v.not_after_text,
                        "not_after_timestamp": v.not_after,
                    })),
                    "last_check": last.map(|c| serde_json::json!({
                        "at": c.at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default(),
                        "ok": c.ok,
                        "detail": c.detail,
                    })),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gluu_testkit::Cert;

    #[test]
    fn a_node_certificate_near_its_end_is_warned_of_once_a_day() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chain = |c: Cert| gluu_common::tls::load_certs(&c.cert).expect("load");
        let near = chain(Cert::ending_in(dir.path(), "near", 10 * 86_400));
        let far = chain(Cert::new(dir.path(), "far"));
        let node = "10.0.0.1:443";
        let mut p = Presented::default();
        let (t0, wall) = (Instant::now(), SystemTime::now());
        let (end, warning) = p.see(&near, node, (t0, wall));
        assert!(end.is_some_and(|e| e > 0));
        let w = warning.expect("warned");
        assert!(
            w.starts_with("the certificate node 10.0.0.1:443 presents (CN=")
                && w.contains(" days: renew it on the node"),
            "{w}"
        );
        // The same certificate on the next connections: said again a day later, not before.
        let hour = t0 + Duration::from_secs(3600);
        assert_eq!(p.see(&near, node, (hour, wall)), (None, None));
        let day = t0 + validity::REMIND_EVERY;
        assert!(p.see(&near, node, (day, wall)).1.is_some());
        // Renewed on the node: its new end, and nothing to say.
        assert_eq!(p.see(&far, node, (day, wall)), (Some(67_090_118_400), None));
    }
}
