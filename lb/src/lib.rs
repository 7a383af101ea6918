//! gluu-lb: the Gluu cluster's TLS load balancer, reading the guide's nginx.conf.
//!
//! The binary is thin: it loads a [`Config`], [`Balancer::prepare`]s it (certificates,
//! TLS configurations, upstream groups), [`Balancer::bind`]s, drops privileges and calls
//! [`Balancer::run`] with a shutdown token and a reload channel. Tests do the same with
//! `listen 127.0.0.1:0`.

pub mod access_log;
pub mod auth;
pub mod balance;
pub mod body;
pub mod client_cert;
pub mod config;
pub mod cookie;
pub mod discard;
pub mod files;
pub mod forward;
pub mod gzip;
pub mod health;
pub mod limit;
pub mod linger;
pub mod metrics;
pub mod pace;
pub mod runtime;
pub mod send_timeout;
pub mod served;
pub mod sessions;
pub mod stub_status;
pub mod upstream;
pub mod uri;
pub mod workers;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use gluu_common::accept;
use gluu_common::fdstore;
use gluu_common::logging::LogFile;
use gluu_common::metrics::{Pages, SharedRegistry};
use gluu_common::notify;
use gluu_common::tap::Tapped;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use rustls::server::ProducesTickets;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::grammar::GrammarError;
pub use config::{Config, Warning};
use discard::ClientBody;
use forward::Conn;
pub use gluu_common::signal::Control;
use linger::Linger;
use metrics::Metrics;
use pace::{Ending, Pace, Stamp};
use runtime::Runtime;
use send_timeout::SendTimed;
use workers::{Dispatch, Workers};

/// What outlives a reload: the metric families, the `worker_connections` budget, the TLS
/// session ticket keys (a reload does not cost every client a full handshake) and the
/// number of workers.
#[derive(Debug)]
pub struct Shared {
    pub metrics: Metrics,
    /// One permit per open connection, client or node side, and per listening socket of
    /// each worker (nginx counts all three).
    pub permits: Arc<Semaphore>,
    pub tickets: Arc<dyn ProducesTickets>,
    /// Worker threads ([`workers`]), fixed at start like nginx's worker processes.
    pub workers: usize,
    /// The `limit_req_zone`s of the running configuration: a reload keeps those whose name
    /// and size stay, with the clients they remember (nginx keeps its shared memory zones).
    pub zones: Mutex<Vec<Arc<limit::Zone>>>,
    /// The client connections open now, for `stub_status`.
    pub live: stub_status::Live,
}

/// A listening address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {error}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub error: std::io::Error,
}

/// Sockets bound for a [`Balancer`], before privileges are dropped.
#[derive(Debug)]
pub struct Bound {
    listeners: Vec<Group>,
    metrics: Option<TcpListener>,
}

/// One listening address: a socket per worker, all bound with `SO_REUSEPORT`, so that the
/// kernel spreads new connections over the workers and each accepts its own (nginx's
/// `listen ... reuseport`).
type Group = Vec<std::net::TcpListener>;

impl Bound {
    /// The addresses really listened on, in the order of the configuration's `listen`
    /// lines (one per distinct address), each with whether it is TLS.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|g| g.first()?.local_addr().ok())
            .collect()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// A configuration with its TLS material loaded, ready to bind and run.
#[derive(Debug)]
pub struct Balancer {
    current: Arc<ArcSwap<Runtime>>,
    shared: Arc<Shared>,
    registry: SharedRegistry,
}

impl Balancer {
    pub fn prepare(config: Config) -> Result<Self, GrammarError> {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let permits = Arc::new(Semaphore::new(config.worker_connections));
        // Stateless tickets, as nginx's `ssl_session_tickets on` (its default): reusable by
        // a client until the key rotates (rustls: every 6 hours, 12-hour lifetime).
        let tickets = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| GrammarError {
            at: config.path.display().to_string(),
            message: format!("cannot make TLS session ticket keys: {e}"),
        })?;
        let shared = Shared {
            metrics,
            permits,
            tickets,
            workers: workers::count(config.workers),
            zones: Mutex::default(),
            live: stub_status::Live::default(),
        };
        let rt = Runtime::build(config, &shared)?;
        Ok(Self {
            current: Arc::new(ArcSwap::from_pointee(rt)),
            shared: Arc::new(shared),
            registry: Arc::new(Mutex::new(registry)),
        })
    }

    /// Everything `-t` and start-up should say besides errors.
    pub fn warnings(&self) -> Vec<Warning> {
        self.current.load().warnings.clone()
    }

    pub fn config(&self) -> Config {
        self.current.load().config.clone()
    }

    /// The log files of the running configuration (SIGUSR1 reopens them).
    pub fn log_files(&self) -> impl Fn() -> Vec<LogFile> + Send + Sync + 'static {
        let current = self.current.clone();
        move || current.load().logs.clone()
    }

    /// Binds every listening address, taking over the sockets a previous process left in
    /// systemd's store ([`fdstore`]), and gives systemd copies of them all.
    pub async fn bind(&self) -> Result<Bound, BindError> {
        let rt = self.current.load_full();
        let workers = self.shared.workers;
        let mut inherited = fdstore::Inherited::from_env();
        let mut listeners = Vec::new();
        for l in &rt.listeners {
            let mut group = inherited.take(l.addr);
            if group.is_empty() {
                group = bind_group(l.addr, workers)?;
            } else {
                tracing::info!(
                    "{}: {} listening socket(s) kept open by systemd across the restart",
                    l.addr,
                    group.len()
                );
                group = sized_group(l.addr, group, workers)?;
            }
            keep_in_store(&group);
            listeners.push(group);
        }
        inherited.close_rest();
        let metrics = match rt.config.metrics {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Bound { listeners, metrics })
    }

    /// Serves until `control.shutdown`, reloading on `control.reload`; then drains.
    pub async fn run(self, bound: Bound, mut control: Control) -> anyhow::Result<()> {
        let rt = self.current.load_full();
        let workers = Workers::start(self.shared.workers)
            .map_err(|e| anyhow::anyhow!("cannot start the worker threads: {e}"))?;
        let mut state = Running {
            conns: TaskTracker::new(),
            hard_stop: CancellationToken::new(),
            slots: Vec::new(),
            health: CancellationToken::new(),
            shared: self.shared.clone(),
            current: self.current.clone(),
            workers: workers.dispatch(),
        };
        for (i, listener) in bound.listeners.into_iter().enumerate() {
            state.open(&rt, i, listener);
        }
        if let Some(listener) = bound.metrics {
            tracing::info!(
                "metrics on http://{}/metrics and /status",
                listener.local_addr()?
            );
            let current = self.current.clone();
            let dispatch = state.workers.clone();
            tokio::spawn(gluu_common::metrics::serve(
                listener,
                Pages {
                    registry: self.registry.clone(),
                    status: Some(Arc::new(move || status_json(&current.load(), &dispatch))),
                },
                control.shutdown.child_token(),
            ));
        }
        for w in &rt.warnings {
            tracing::warn!("{w}");
        }
        let certificates = self.shared.metrics.certificates();
        certificates.set(rt.certificates.clone());
        certificates.spawn_reminders(control.shutdown.child_token());
        health::spawn_all(&rt, &self.shared, &state.health);
        let dispatch = state.workers.clone();
        notify::ready_checked(
            &format!(
                "{} listeners, {} workers",
                state.slots.len(),
                dispatch.workers()
            ),
            move |limit| {
                let dispatch = dispatch.clone();
                Box::pin(async move { dispatch.responsive(limit).await })
            },
        );
        drop(rt);
        loop {
            tokio::select! {
                _ = control.shutdown.cancelled() => break,
                Some(()) = control.reload.recv() => {
                    notify::reloading();
                    match state.reload().await {
                        Ok(()) => {
                            let rt = state.current.load();
                            tracing::info!("reloaded {}", rt.config.path.display());
                            certificates.set(rt.certificates.clone());
                            self.shared.metrics.reload(true);
                        }
                        Err(e) => {
                            tracing::error!("reload failed, the previous configuration keeps running: {e}");
                            self.shared.metrics.reload(false);
                        }
                    }
                    notify::ready("reloaded");
                }
            }
        }
        notify::stopping();
        let grace = state.current.load().config.shutdown_timeout;
        state.drain(grace).await;
        workers.stop().await;
        Ok(())
    }
}

/// `/status`: every upstream's nodes and their state, and each worker's client connections.
fn status_json(rt: &Runtime, workers: &Dispatch) -> String {
    let mut upstreams = serde_json::Map::new();
    for u in &rt.config.upstreams {
        if let Some(g) = rt.groups.get(&u.name) {
            upstreams.insert(u.name.clone(), serde_json::Value::Array(g.status()));
        }
    }
    let certificates: Vec<_> = rt
        .certificates
        .iter()
        .map(|c| {
            serde_json::json!({
                "file": c.path.display().to_string(),
                "subject": c.subject,
                "not_after": c.not_after_text,
                "not_after_timestamp": c.not_after,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "config": rt.config.path.display().to_string(),
        "upstreams": upstreams,
        "worker_connections": workers.loads(),
        "certificates": certificates,
    });
    format!("{doc:#}\n")
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| BindError { addr, error })
}

/// A listening socket as tokio binds one (`SO_REUSEADDR`, backlog 1024), non-blocking,
/// with `SO_REUSEPORT` when `shared`. An IPv6 address is IPv6 only, nginx's default
/// (`ipv6only=on`): `listen 443;` and `listen [::]:443;` together then work as in nginx.
fn listen_socket(addr: SocketAddr, shared: bool) -> std::io::Result<std::net::TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    if shared {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// `n` sockets on `addr` sharing it with `SO_REUSEPORT` ([`Group`]). A socket without it is
/// bound first and closed: a port another process holds is then an error ("address in
/// use"), even when that process set `SO_REUSEPORT` too, rather than two balancers
/// silently sharing the traffic.
fn bind_group(addr: SocketAddr, n: usize) -> Result<Group, BindError> {
    let err = |error| BindError { addr, error };
    if addr.port() != 0 {
        drop(listen_socket(addr, false).map_err(err)?);
    }
    let first = listen_socket(addr, true).map_err(err)?;
    let local = first.local_addr().map_err(err)?;
    sized_group(local, vec![first], n)
}

/// `group` (sockets on `local`) cut or filled up to `n` sockets, at least one.
fn sized_group(local: SocketAddr, mut group: Group, n: usize) -> Result<Group, BindError> {
    group.truncate(n.max(1));
    while group.len() < n.max(1) {
        let socket =
            listen_socket(local, true).map_err(|error| BindError { addr: local, error })?;
        group.push(socket);
    }
    Ok(group)
}

/// Gives systemd copies of one address's sockets ([`fdstore`]).
fn keep_in_store(group: &Group) {
    if let Some(addr) = group.first().and_then(|l| l.local_addr().ok()) {
        fdstore::store(addr, group);
    }
}

/// Which runtime, and which of its listeners, a socket serves now.
#[derive(Debug)]
struct Binding {
    rt: Arc<Runtime>,
    listener: usize,
}

struct Slot {
    configured: SocketAddr,
    local: SocketAddr,
    binding: Arc<ArcSwap<Binding>>,
    stop: CancellationToken,
}

struct Running {
    conns: TaskTracker,
    hard_stop: CancellationToken,
    slots: Vec<Slot>,
    /// Cancelled when the health checks of the running configuration must stop.
    health: CancellationToken,
    shared: Arc<Shared>,
    current: Arc<ArcSwap<Runtime>>,
    workers: Dispatch,
}

fn describe(rt: &Runtime, i: usize, local: SocketAddr) -> String {
    let l = &rt.listeners[i];
    let names: Vec<&str> = l
        .servers
        .iter()
        .flat_map(|&s| rt.config.servers[s].names.iter().map(String::as_str))
        .collect();
    format!(
        "listening on {local} ({}{}; server_name {})",
        if l.tls.is_some() { "https" } else { "http" },
        if l.http2 { ", h2" } else { "" },
        if names.is_empty() {
            "\"\"".to_owned()
        } else {
            names.join(" ")
        }
    )
}

impl Running {
    fn open(&mut self, rt: &Arc<Runtime>, i: usize, group: Group) {
        let local = group
            .first()
            .and_then(|l| l.local_addr().ok())
            .unwrap_or(rt.listeners[i].addr);
        tracing::info!("{}", describe(rt, i, local));
        let slot = Slot {
            configured: rt.listeners[i].addr,
            local,
            binding: Arc::new(ArcSwap::from_pointee(Binding {
                rt: rt.clone(),
                listener: i,
            })),
            stop: CancellationToken::new(),
        };
        for (worker, listener) in group.into_iter().enumerate() {
            let binding = slot.binding.clone();
            let stop = slot.stop.clone();
            let serving = Serving {
                conns: self.conns.clone(),
                hard_stop: self.hard_stop.clone(),
                shared: self.shared.clone(),
                workers: self.workers.clone(),
            };
            self.workers.spawn_on(worker, &self.conns, move || {
                accept_loop(listener, binding, stop, serving)
            });
        }
        self.slots.push(slot);
    }

    /// Re-reads the file and builds a new runtime; binds what is new, then swaps it in and
    /// closes what went away. Any error before the swap leaves everything as it was.
    async fn reload(&mut self) -> anyhow::Result<()> {
        let old = self.current.load_full();
        let config = Config::load(&old.config.path)?;
        let rt = Arc::new(Runtime::build(config, &self.shared)?);
        for w in &rt.warnings {
            tracing::warn!("{w}");
        }
        let (a, b) = (&old.config, &rt.config);
        if a.worker_connections != b.worker_connections
            || a.workers != b.workers
            || a.pid != b.pid
            || a.user != b.user
            || a.error_log != b.error_log
            || a.metrics != b.metrics
        {
            tracing::warn!(
                "worker_connections, worker_processes, pid, user, error_log and metrics \
                 changed: they take effect at the next restart"
            );
        }
        let mut taken = vec![false; self.slots.len()];
        let mut plan = Vec::new();
        for (i, l) in rt.listeners.iter().enumerate() {
            let existing = self.slots.iter().enumerate().position(|(k, s)| {
                !taken[k]
                    && (s.configured == l.addr
                        || (l.addr.port() == 0 && s.local.ip() == l.addr.ip()))
            });
            match existing {
                Some(k) => {
                    taken[k] = true;
                    plan.push((i, Some(k), None));
                }
                None => {
                    let group = bind_group(l.addr, self.shared.workers)?;
                    keep_in_store(&group);
                    plan.push((i, None, Some(group)));
                }
            }
        }
        self.current.store(rt.clone());
        let mut kept = Vec::new();
        let mut fresh = Vec::new();
        for (i, k, listener) in plan {
            match (k, listener) {
                (Some(k), _) => {
                    self.slots[k].binding.store(Arc::new(Binding {
                        rt: rt.clone(),
                        listener: i,
                    }));
                    tracing::info!("{}", describe(&rt, i, self.slots[k].local));
                    kept.push(k);
                }
                (None, Some(listener)) => fresh.push((i, listener)),
                (None, None) => {}
            }
        }
        let mut k = 0;
        self.slots.retain(|slot| {
            let keep = taken[k];
            k += 1;
            if !keep {
                tracing::info!("no longer listening on {}", slot.local);
                fdstore::forget(slot.local);
                slot.stop.cancel();
            }
            keep
        });
        for (i, listener) in fresh {
            self.open(&rt, i, listener);
        }
        self.health.cancel();
        self.health = CancellationToken::new();
        health::spawn_all(&rt, &self.shared, &self.health);
        Ok(())
    }

    async fn drain(self, grace: Duration) {
        self.health.cancel();
        for slot in &self.slots {
            slot.stop.cancel();
        }
        gluu_common::drain::wait(
            &self.conns,
            &self.hard_stop,
            grace,
            "worker_shutdown_timeout",
        )
        .await;
    }
}

/// What every accepted connection is handed to.
struct Serving {
    conns: TaskTracker,
    hard_stop: CancellationToken,
    shared: Arc<Shared>,
    workers: Dispatch,
}

/// Accepts on one worker's socket of a listening address and serves each connection on
/// that worker. (Workers sharing one socket instead left the one that woke first with
/// nearly all of wrk's 64 connections; the control thread accepting and handing each
/// connection over cost a new connection an extra thread wake-up and two epoll_ctl calls:
/// 11% of the balancer's CPU per new connection, measured.)
async fn accept_loop(
    listener: std::net::TcpListener,
    binding: Arc<ArcSwap<Binding>>,
    stop: CancellationToken,
    serving: Serving,
) {
    let Serving {
        conns,
        hard_stop,
        shared,
        workers,
    } = serving;
    let label = listener
        .local_addr()
        .map_or_else(|_| "listener".to_owned(), |a| a.to_string());
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                "[{label}] worker {}: cannot listen: {e}",
                workers::current()
            );
            return;
        }
    };
    let mut at_limit = false;
    loop {
        let report = || {
            tracing::warn!(
                "[{label}] worker_connections are not enough: new connections wait in the \
                 listen queue"
            )
        };
        let Some(permit) = accept::slot(&shared.permits, &stop, &mut at_limit, report).await else {
            return;
        };
        let Some((stream, peer)) = accept::next(&listener, &stop, &label).await else {
            return;
        };
        let load = workers.count_here();
        let binding = binding.clone();
        let (stop, hard_stop, shared) = (stop.clone(), hard_stop.clone(), shared.clone());
        conns.spawn(async move {
            let _load = load;
            let _active = shared.metrics.connection();
            tokio::select! {
                _ = connection(stream, peer, binding, stop, &shared) => {}
                _ = hard_stop.cancelled() => {}
            }
            drop(permit);
        });
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    binding: Arc<ArcSwap<Binding>>,
    stop: CancellationToken,
    shared: &Arc<Shared>,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok();
    // What is per connection in nginx's HTTP/2 module comes from the listener's default
    // server, as nginx takes it (SNI aside).
    let (tls, limits, keepalive, streams, linger) = {
        let b = binding.load();
        let listener = &b.rt.listeners[b.listener];
        let default_server = &b.rt.config.servers[listener.servers[0]].settings;
        (
            listener.tls.clone(),
            b.rt.config.limits.clone(),
            default_server.keepalive_timeout,
            default_server.http2_max_concurrent_streams,
            Linger::new(default_server),
        )
    };
    let stream = SendTimed::new(stream, limits.send_timeout).lingering(linger.clone());
    let Some(tls) = tls else {
        let pace = Pace::new(limits.header_timeout, keepalive);
        let conn = Arc::new(Conn::new(peer, local, "http", None, pace, linger));
        return serve(stream, conn, None, binding, stop, shared, &limits).await;
    };
    // The TLS stream (rustls' state, about 1.3 KB) is boxed and the connection's facts
    // shared before they go to `serve`: a value moved into an awaited call keeps its
    // place in the caller's future as well, and every open connection held both twice.
    let (io, h2, conn) = {
        let accept = tokio::time::timeout(limits.handshake_timeout, handshake(&tls, stream));
        let (stream, trust) = match accept.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let reason = gluu_common::verify::failure_reason(&e);
                shared.metrics.handshake_failure(reason);
                tracing::debug!(
                    "TLS handshake with {peer} failed: {}",
                    gluu_common::verify::describe_failure(&e)
                );
                return;
            }
            Err(_) => {
                shared.metrics.handshake_failure("timeout");
                tracing::debug!("TLS handshake with {peer} timed out");
                return;
            }
        };
        let (_, session) = stream.get_ref();
        let h2 = (session.alpn_protocol() == Some(b"h2")).then_some(streams);
        let pace = Pace::new(limits.header_timeout, keepalive);
        let conn = Conn::new(
            peer,
            local,
            "https",
            session.server_name().map(str::to_owned),
            pace,
            linger,
        )
        .with_tls(session, trust.as_deref());
        (Box::new(stream), h2, Arc::new(conn))
    };
    serve(io, conn, h2, binding, stop, shared, &limits).await;
}

/// A client's TLS handshake, with the configuration of the server its SNI names when the
/// servers of the address differ in what they ask of client certificates; also the trust
/// the client's certificate is judged by.
async fn handshake<I>(
    tls: &runtime::Tls,
    stream: I,
) -> std::io::Result<(
    tokio_rustls::server::TlsStream<I>,
    Option<Arc<client_cert::Trust>>,
)>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    if let Some((acceptor, trust)) = tls.single() {
        return Ok((acceptor.accept(stream).await?, trust.clone()));
    }
    let start =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
    let (acceptor, trust) = tls.for_name(start.client_hello().server_name());
    let stream = start.into_stream(acceptor.config().clone()).await?;
    Ok((stream, trust.clone()))
}

/// Serves a client connection: HTTP/2 when `h2` (its concurrent streams limit), else
/// HTTP/1.1.
async fn serve<I>(
    io: I,
    conn: Arc<Conn>,
    h2: Option<u32>,
    binding: Arc<ArcSwap<Binding>>,
    stop: CancellationToken,
    shared: &Arc<Shared>,
    limits: &config::ClientLimits,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (max_streams, h2) = (h2.unwrap_or_default(), h2.is_some());
    let info = conn.clone();
    let _live = shared.live.enter(&conn);
    let shared = shared.clone();
    // Per request, one reference count each for the configuration in force and `shared`
    // (cloning the struct itself touched eleven, and every count both workers share moves
    // a cache line between the cores).
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let b = binding.load_full();
        let (conn, shared) = (conn.clone(), shared.clone());
        conn.requests.fetch_add(1, Ordering::Relaxed);
        let open = conn.pace.begin();
        // An HTTP/2 stream's unread body is the stream's (hyper resets it).
        let req = ClientBody::of(req, (!h2).then(|| conn.linger.clone()));
        async move {
            let unanswered = shared.metrics.unanswered();
            let resp = forward::handle(req, &conn, &b.rt, b.listener, &shared).await;
            unanswered.answered();
            if resp.extensions().get::<forward::Close>().is_some() {
                // `return 444`: hyper closes the connection (HTTP/2: resets the stream)
                // without an answer.
                if !h2 {
                    conn.linger.timed_out();
                }
                return Err(forward::Close);
            }
            if h2 {
                // The response leaves the service: an HTTP/2 stream now waits on the
                // client, unless a node's body says it waits on the node.
                send_timeout::Turn::responded();
            }
            Ok(resp.map(|body| Ending::new(body, open)))
        }
    });
    if h2 {
        // Boxed, so that an HTTP/1 connection's future is not the size of HTTP/2's.
        Box::pin(async move {
            let streams = send_timeout::Streams::new(limits.send_timeout, info.remote);
            let mut builder = hyper::server::conn::http2::Builder::new(streams.clone());
            // What a stream buffers for a client that does not read is bounded like what a node
            // connection holds (hyper's default: 400 KiB per stream; 128 streams unless set).
            builder
                .timer(TokioTimer::new())
                .max_concurrent_streams(max_streams)
                .max_send_buf_size(upstream::STREAM_BUFFER_MAX)
                .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
                .keep_alive_interval(Some(limits.header_timeout))
                .keep_alive_timeout(Duration::from_secs(20));
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            drive(conn, &stop, &info, Some(&streams), |c| {
                c.graceful_shutdown()
            })
            .await;
        })
        .await;
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        // The header and idle timers are [`Pace`]'s, fed by [`Stamp`].
        builder
            .header_read_timeout(None)
            .max_header_size(limits.max_header_bytes);
        let io = TokioIo::new(Tapped::new(io, Stamp(info.pace.clone())));
        let conn = builder.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        drive(conn, &stop, &info, None, |c| c.graceful_shutdown()).await;
        // A WebSocket lives on in this task: its slot stays taken, a stop waits for it.
        let upgrade = upstream::lock(&info.upgraded).take();
        if let Some(upgrade) = upgrade {
            info.linger.without_drain();
            // Still a request being answered, as nginx counts it (`stub_status`' Writing).
            let _relaying = info.pace.begin();
            upgrade.run().await;
        }
    }
}

/// How long a stop waits for the first request of a connection that has sent none yet.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(2);

/// Runs a client connection to its end. When `stop` comes first, or the connection has
/// been idle for `keepalive_timeout` ([`Pace`]), or an HTTP/2 connection has had its
/// `keepalive_requests` ([`Conn::enough`]), lets the requests in flight finish and
/// closes (HTTP/1.1: after the response; HTTP/2: GOAWAY); when a request's head takes
/// longer than `client_header_timeout`, drops it. A connection accepted just before a
/// stop, whose first request has not come yet, gets [`FIRST_REQUEST_GRACE`] for it: closing
/// it at once (as nginx does) fails a request that a restart would otherwise not touch.
/// An HTTP/2 connection's streams held up by the client (`streams`) are reset throughout,
/// during that finish too.
async fn drive<C>(
    mut conn: std::pin::Pin<&mut C>,
    stop: &CancellationToken,
    info: &Conn,
    streams: Option<&send_timeout::Streams>,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
) where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
{
    let stalled = async {
        if let Some(streams) = streams {
            loop {
                tokio::time::sleep(streams.period()).await;
                streams.reset_stalled();
            }
        }
        std::future::pending::<Infallible>().await
    };
    let stopped = async {
        stop.cancelled().await;
        let deadline = Instant::now() + FIRST_REQUEST_GRACE;
        while info.requests.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let slow_head = || {
        info.linger.timed_out();
        tracing::debug!(
            "{}: no whole request head within client_header_timeout; closed",
            info.remote
        );
        Ok(())
    };
    let run = async {
        tokio::select! {
            r = conn.as_mut() => return r,
            () = stopped => {}
            () = info.enough.notified() => {}
            expired = info.pace.expired(true) => if expired == pace::Expired::Header {
                return slow_head();
            },
        }
        graceful(conn.as_mut());
        // A request head still on its way is bounded as before.
        tokio::select! {
            r = conn.as_mut() => r,
            _ = info.pace.expired(false) => slow_head(),
        }
    };
    let r = tokio::select! {
        r = run => r,
        never = stalled => match never {},
    };
    if let Err(e) = r {
        tracing::debug!("client connection: {e}");
    }
}

/// Loads and prepares `path` as `-t` does: the configuration's errors, or its warnings.
pub fn test_config(path: &Path) -> Result<Balancer, GrammarError> {
    Balancer::prepare(Config::load(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_address_is_a_socket_per_worker_and_a_held_port_is_an_error() {
        let group = bind_group("127.0.0.1:0".parse().expect("addr"), 3).expect("bind");
        let addrs: Vec<_> = group
            .iter()
            .map(|l| l.local_addr().expect("addr"))
            .collect();
        assert_eq!(addrs.len(), 3);
        assert!(
            addrs.iter().all(|a| *a == addrs[0] && a.port() != 0),
            "{addrs:?}"
        );
        // Held by a balancer still running (its sockets have SO_REUSEPORT) or by anything.
        let e = bind_group(addrs[0], 2).expect_err("the port is held");
        assert_eq!(e.error.kind(), std::io::ErrorKind::AddrInUse, "{e}");
        let plain = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let e = bind_group(plain.local_addr().expect("addr"), 2).expect_err("held");
        assert_eq!(e.error.kind(), std::io::ErrorKind::AddrInUse, "{e}");
        drop(group);
        assert!(bind_group(addrs[0], 2).is_ok(), "free again");
    }

    #[test]
    fn an_ipv6_listening_socket_is_ipv6_only() {
        let group = bind_group("[::1]:0".parse().expect("addr"), 2).expect("bind");
        for l in &group {
            assert!(socket2::SockRef::from(l).only_v6().expect("getsockopt"));
        }
        let v4 = bind_group("127.0.0.1:0".parse().expect("addr"), 1).expect("bind");
        assert!(
            socket2::SockRef::from(&v4[0]).only_v6().is_err(),
            "no such option on IPv4"
        );
    }
}
