//! gluu-tunnel: stunnel's job on the Redis leg of a Gluu cluster, reading the guide's
//! stunnel files, pinning the peer by default, and reporting what it does.
//!
//! The binary is thin: it loads a [`Config`], [`Tunnel::prepare`]s it (certificates, TLS
//! configurations), [`Tunnel::bind`]s, drops privileges and calls [`Tunnel::run`] with a
//! shutdown token and a reload channel. Tests do the same on `127.0.0.1:0`.

pub mod check;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod service;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use gluu_common::accept;
use gluu_common::fdstore;
use gluu_common::metrics::SharedRegistry;
use gluu_common::notify;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use config::{Config, ConfigError, Warning};
pub use gluu_common::signal::Control;
use metrics::Metrics;
use service::Service;

/// A listening address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("[{service}] cannot listen on {addr}: {error}")]
pub struct BindError {
    pub service: String,
    pub addr: SocketAddr,
    pub error: std::io::Error,
}

/// Sockets bound for a [`Tunnel`], before privileges are dropped.
#[derive(Debug)]
pub struct Bound {
    listeners: Vec<(String, TcpListener)>,
    metrics: Option<TcpListener>,
}

impl Bound {
    /// The address a service really listens on (useful with port 0).
    pub fn local_addr(&self, service: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(name, _)| name == service)
            .and_then(|(_, l)| l.local_addr().ok())
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// A configuration with its TLS material loaded, ready to bind and run.
#[derive(Debug)]
pub struct Tunnel {
    config: Config,
    services: Vec<Arc<Service>>,
    warnings: Vec<Warning>,
    metrics: Metrics,
    registry: SharedRegistry,
}

impl Tunnel {
    /// Loads certificates and keys and builds every service; nothing is bound yet.
    pub fn prepare(config: Config) -> Result<Self, ConfigError> {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let service::Built {
            services,
            warnings,
            certificates,
        } = service::build_all(&config, &metrics)?;
        metrics.certificates().set(certificates);
        Ok(Self {
            config,
            services,
            warnings,
            metrics,
            registry: Arc::new(Mutex::new(registry)),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    /// Everything `-t` and start-up should say besides errors.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// Binds every service's `accept` address and the metrics address.
    /// Binds every service's `accept` address, taking over the sockets a previous process
    /// left in systemd's store ([`fdstore`]), and the metrics address.
    pub async fn bind(&self) -> Result<Bound, BindError> {
        let mut inherited = fdstore::Inherited::from_env();
        let mut listeners = Vec::with_capacity(self.services.len());
        for s in &self.services {
            let kept = inherited.take(s.config.accept).into_iter().next();
            let listener = match kept {
                Some(l) => {
                    tracing::info!(
                        "[{}] {}: listening socket kept open by systemd across the restart",
                        s.name(),
                        s.config.accept
                    );
                    l.set_nonblocking(true)
                        .and_then(|()| TcpListener::from_std(l))
                        .map_err(|error| BindError {
                            service: s.name().to_owned(),
                            addr: s.config.accept,
                            error,
                        })?
                }
                None => bind(s.name(), s.config.accept).await?,
            };
            listeners.push((s.name().to_owned(), listener));
        }
        inherited.close_rest();
        let metrics = match self.config.globals.metrics {
            Some(addr) => Some(bind("metrics", addr).await?),
            None => None,
        };
        Ok(Bound { listeners, metrics })
    }

    /// Serves until `control.shutdown`, reloading on `control.reload`; then drains.
    pub async fn run(self, bound: Bound, mut control: Control) -> anyhow::Result<()> {
        let mut state = Running {
            accepts: TaskTracker::new(),
            conns: TaskTracker::new(),
            hard_stop: CancellationToken::new(),
            slots: Vec::new(),
        };
        for (svc, (_, listener)) in self.services.iter().zip(bound.listeners) {
            state.open(svc.clone(), listener);
        }
        if let Some(listener) = bound.metrics {
            let addr = listener.local_addr()?;
            tracing::info!("metrics on http://{addr}/metrics");
            tokio::spawn(gluu_common::metrics::serve(
                listener,
                gluu_common::metrics::Pages {
                    registry: self.registry.clone(),
                    status: None,
                },
                control.shutdown.child_token(),
            ));
        }
        for w in &self.warnings {
            tracing::warn!("{w}");
        }
        self.metrics
            .certificates()
            .spawn_reminders(control.shutdown.child_token());
        for s in &self.services {
            tracing::info!("{}", s.describe());
        }
        notify::ready(&format!("{} services running", self.services.len()));
        let mut current = self.config;
        loop {
            tokio::select! {
                _ = control.shutdown.cancelled() => break,
                Some(()) = control.reload.recv() => {
                    notify::reloading();
                    match state.reload(&current, &self.metrics).await {
                        Ok(config) => {
                            tracing::info!("reloaded {}", config.path.display());
                            self.metrics.reload(true);
                            current = config;
                        }
                        Err(e) => {
                            tracing::error!("reload failed, the previous configuration keeps running: {e}");
                            self.metrics.reload(false);
                        }
                    }
                    notify::ready("reloaded");
                }
            }
        }
        notify::stopping();
        state.drain(current.globals.drain).await;
        Ok(())
    }
}

async fn bind(service: &str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|error| BindError {
        service: service.to_owned(),
        addr,
        error,
    })
}

/// One listening service: its socket's accept loop reads the current [`Service`] from here,
/// so a reload swaps the service without closing the socket.
struct Slot {
    name: String,
    configured: SocketAddr,
    local: SocketAddr,
    service: Arc<ArcSwap<Service>>,
    stop: CancellationToken,
}

struct Running {
    accepts: TaskTracker,
    conns: TaskTracker,
    /// Cut every open connection (the grace period is over).
    hard_stop: CancellationToken,
    slots: Vec<Slot>,
}

impl Running {
    fn open(&mut self, svc: Arc<Service>, listener: TcpListener) {
        let local = listener.local_addr().unwrap_or(svc.config.accept);
        tracing::info!("[{}] listening on {local}", svc.name());
        fdstore::store(local, std::slice::from_ref(&listener));
        let slot = Slot {
            name: svc.name().to_owned(),
            configured: svc.config.accept,
            local,
            service: Arc::new(ArcSwap::new(svc)),
            stop: CancellationToken::new(),
        };
        self.accepts.spawn(accept_loop(
            listener,
            slot.service.clone(),
            slot.stop.clone(),
            self.conns.clone(),
            self.hard_stop.clone(),
        ));
        self.slots.push(slot);
    }

    /// Re-reads the file; binds what is new, then swaps services in and closes what went
    /// away. Any error before the swap leaves everything as it was.
    async fn reload(&mut self, current: &Config, metrics: &Metrics) -> anyhow::Result<Config> {
        let config = Config::load(&current.path)?;
        let service::Built {
            services,
            warnings,
            certificates,
        } = service::build_all(&config, metrics)?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        if config.globals != current.globals {
            tracing::warn!(
                "global options (pid, output, debug, setuid, setgid, metrics, TIMEOUTdrain) \
                 changed: they take effect at the next restart"
            );
        }
        let mut fresh = Vec::new();
        let mut kept = Vec::new();
        for svc in services {
            let existing = self.slots.iter().position(|s| {
                s.name == svc.name()
                    && (s.configured == svc.config.accept
                        || (svc.config.accept.port() == 0
                            && s.local.ip() == svc.config.accept.ip()))
            });
            match existing {
                Some(i) => kept.push((i, svc)),
                None => {
                    let listener = bind(svc.name(), svc.config.accept).await?;
                    fresh.push((svc, listener));
                }
            }
        }
        let mut keep = vec![false; self.slots.len()];
        for (i, svc) in kept {
            keep[i] = true;
            tracing::info!("{}", svc.describe());
            self.slots[i].service.store(svc);
        }
        let mut i = 0;
        self.slots.retain(|slot| {
            let k = keep[i];
            i += 1;
            if !k {
                tracing::info!(
                    "[{}] removed: no longer listening on {}",
                    slot.name,
                    slot.local
                );
                fdstore::forget(slot.local);
                slot.stop.cancel();
            }
            k
        });
        for (svc, listener) in fresh {
            tracing::info!("{}", svc.describe());
            self.open(svc, listener);
        }
        metrics.certificates().set(certificates);
        Ok(config)
    }

    async fn drain(self, grace: Duration) {
        for slot in &self.slots {
            slot.stop.cancel();
        }
        self.accepts.close();
        self.accepts.wait().await;
        gluu_common::drain::wait(&self.conns, &self.hard_stop, grace, "TIMEOUTdrain").await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    slot: Arc<ArcSwap<Service>>,
    stop: CancellationToken,
    conns: TaskTracker,
    hard_stop: CancellationToken,
) {
    let mut at_limit = false;
    loop {
        let svc = slot.load_full();
        let report = || {
            tracing::warn!(
                "[{}] {} connections open (maxConnections): new ones wait in the listen queue",
                svc.name(),
                svc.config.max_connections
            )
        };
        let Some(permit) = accept::slot(&svc.limit, &stop, &mut at_limit, report).await else {
            return;
        };
        let Some((stream, peer)) = accept::next(&listener, &stop, svc.name()).await else {
            return;
        };
        let span = tracing::info_span!("conn", service = svc.name(), %peer);
        let hard_stop = hard_stop.clone();
        conns.spawn(
            async move {
                proxy::handle(&svc, stream, peer, hard_stop).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}
