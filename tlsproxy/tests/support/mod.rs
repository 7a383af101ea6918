//! In-process gluu-tunnel for tests: a tunnel on its own tokio runtime, started from a
//! configuration file on `127.0.0.1:0`, with the addresses it bound and handles to reload
//! and stop it; plus a server/client pair in front of a real Redis.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gluu_testkit::{Cert, Redis, Side, guide_conf};
use gluu_tunnel::{Config, Control, Tunnel};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub struct Running {
    pub path: PathBuf,
    pub addrs: HashMap<String, SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub shutdown: CancellationToken,
    reload: mpsc::Sender<()>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    rt: tokio::runtime::Runtime,
}

impl Running {
    pub fn addr(&self, service: &str) -> SocketAddr {
        self.addrs[service]
    }

    pub fn reload(&self) {
        self.reload.try_send(()).expect("reload channel");
    }

    /// Stops and waits for the drain to finish; returns how long that took.
    pub fn stop(mut self) -> Duration {
        let start = std::time::Instant::now();
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            self.rt
                .block_on(task)
                .expect("run task")
                .expect("run result");
        }
        start.elapsed()
    }

    /// The Prometheus text the tunnel serves.
    pub fn metrics_text(&self) -> String {
        let addr = self.metrics.expect("metrics configured");
        let mut s = TcpStream::connect(addr).expect("connect metrics");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }

    /// Value of one sample line (`name{labels}`) in the metrics, 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics_text()
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

fn tracing_level() -> tracing::Level {
    tracing::Level::WARN
}

pub fn start_file(path: &Path) -> Running {
    // Warnings and errors go to the test's output; RUST_LOG=debug shows every connection.
    let _ = gluu_common::logging::init(tracing_level(), None);
    let config = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tunnel = Tunnel::prepare(config).unwrap_or_else(|e| panic!("{e}"));
    let bound = rt.block_on(tunnel.bind()).expect("bind");
    let addrs = tunnel
        .services()
        .iter()
        .map(|s| {
            (
                s.name().to_owned(),
                bound.local_addr(s.name()).expect("bound"),
            )
        })
        .collect();
    let metrics = bound.metrics_addr();
    let shutdown = CancellationToken::new();
    let (reload, rx) = mpsc::channel(1);
    let task = rt.spawn(tunnel.run(
        bound,
        Control {
            shutdown: shutdown.clone(),
            reload: rx,
        },
    ));
    Running {
        path: path.to_owned(),
        addrs,
        metrics,
        shutdown,
        reload,
        task: Some(task),
        rt,
    }
}

/// Writes `text` as `name` in `dir` and starts a tunnel with it.
pub fn start(dir: &Path, name: &str, text: &str) -> Running {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    start_file(&path)
}

/// The guide's redis-server.conf, pointed at `redis`, with metrics and `extra` globals.
pub fn server_conf(cert: &Path, redis: SocketAddr, extra: &str) -> String {
    let globals = format!("metrics = 127.0.0.1:0\n{extra}");
    guide_conf(Side::RedisHost, cert, &globals, "127.0.0.1:0", redis)
}

/// The guide's redis-client.conf with `client = yes`, pointed at a server tunnel.
pub fn client_conf(cert: &Path, server: SocketAddr, extra: &str) -> String {
    let globals = format!("metrics = 127.0.0.1:0\n{extra}");
    guide_conf(Side::Node, cert, &globals, "127.0.0.1:0", server)
}

/// A server tunnel in front of `target` (redis-server.conf) and a client tunnel in front of
/// that (redis-client.conf), both with `cert` and their `extra` global options.
pub fn tunnels(
    dir: &Path,
    cert: &Path,
    target: SocketAddr,
    server_extra: &str,
    client_extra: &str,
) -> (Running, Running) {
    let server = start(
        dir,
        "redis-server.conf",
        &server_conf(cert, target, server_extra),
    );
    let client = start(
        dir,
        "redis-client.conf",
        &client_conf(cert, server.addr("redis"), client_extra),
    );
    (server, client)
}

/// Redis behind a server tunnel behind a client tunnel, all sharing one certificate.
pub struct Pair {
    pub dir: tempfile::TempDir,
    pub redis: Redis,
    pub cert: Cert,
    pub server: Running,
    pub client: Running,
}

impl Pair {
    pub fn start() -> Pair {
        Self::with("", "")
    }

    /// With extra global options for the server and client files.
    pub fn with(server_extra: &str, client_extra: &str) -> Pair {
        let dir = tempfile::tempdir().expect("tempdir");
        let redis = Redis::start();
        let cert = Cert::new(dir.path(), "secureredis");
        let (server, client) = tunnels(
            dir.path(),
            &cert.combined,
            redis.addr(),
            server_extra,
            client_extra,
        );
        Pair {
            dir,
            redis,
            cert,
            server,
            client,
        }
    }

    /// An authenticated Redis connection through both tunnels.
    pub fn con(&self) -> redis::Connection {
        self.redis
            .connect_to(self.client.addr("redis"))
            .expect("connect through the tunnel")
    }

    /// Redis' own count of connections it has accepted (direct, not through the tunnel).
    pub fn redis_connections(&self) -> u64 {
        let mut c = self.redis.connect_to(self.redis.addr()).expect("direct");
        let info: String = redis::cmd("INFO").arg("stats").query(&mut c).expect("info");
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("total_connections_received")
    }
}

/// True if the peer closes (EOF or reset) without sending a single byte.
pub fn closed_silently(mut s: TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(n) => n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}
