//! `gluu-bench lb`: gluu-lb against the real Debian nginx, in front of the same two
//! in-process HTTPS nodes (the testkit's Gluu-like node: a 1.7 KB OpenID configuration at
//! /oxauth/.well-known/openid-configuration, a 4 KB page under /identity).
//!
//! Three balancers run side by side on loopback: nginx with the guide's nginx.conf, nginx
//! with upstream keep-alive added (`keepalive 32; proxy_http_version 1.1; proxy_set_header
//! Connection "";`), and gluu-lb with the guide's file. All three write an access log to a
//! file (the guide's nginx logs to /var/log/nginx/access.log by default) and listen with
//! `http2`; nginx runs `worker_processes auto` (one per core), gluu-lb uses every core.
//! wrk drives HTTP/1.1 (keep-alive and `Connection: close`), h2load drives HTTP/2; then each
//! holds `idle` TLS client connections and its peak RSS is compared.
//!
//! With the guide's file Debian's nginx 1.22 speaks TLS 1.2 at most and gluu-lb TLS 1.3, and
//! a resumed TLS 1.2 session skips the key exchange that TLS 1.3 resumption keeps (forward
//! secrecy), on both sides of the connection. So the new-connection case is also run at one
//! version on both sides: nginx-ka against gluu-lb with `ssl_protocols TLSv1.2;`, and nginx-ka
//! with `ssl_protocols TLSv1.2 TLSv1.3;` against gluu-lb.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gluu_common::verify::{PeerPolicy, PeerVerifier};
use gluu_testkit::node::Node;
use gluu_testkit::{
    Cert, Proc, free_port, guide_nginx, keepalive_tuned, listening, nginx, readable_by_nginx,
    require, wait_for,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{cores, cpu_ticks, median, raise_fd_limit, rss_kib, sibling};

const OPENID: &str = "/oxauth/.well-known/openid-configuration";
const IDENTITY: &str = "/identity/home.htm";

struct Target {
    name: &'static str,
    port: u16,
    pid: i32,
    _proc: Proc,
}

impl Target {
    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// The process and its children (nginx's workers).
    fn pids(&self) -> Vec<i32> {
        let mut pids = vec![self.pid];
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                    continue;
                };
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<i32>().ok());
                if ppid == Some(self.pid) {
                    pids.push(pid);
                }
            }
        }
        pids
    }
}

/// One measurement: requests per second and, from wrk, p50 and p99 latency; the CPU time
/// (user + system) the balancer's processes, the two nodes and the load generator (wrk or
/// h2load) spent per request.
#[derive(Clone, Copy, Default)]
struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: f64,
    balancer_us: f64,
    nodes_us: f64,
    client_us: f64,
}

/// CPU time, in microseconds, of the child processes this one has waited for (wrk, h2load).
fn children_cpu_us() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e6 + t.tv_usec() as f64;
    us(usage.user_time()) + us(usage.system_time())
}

/// The unit of [`cpu_ticks`].
fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// Runs one load against `target` and charges the CPU time its processes, this one (which
/// runs the nodes) and the load generator used to the requests served.
fn measured(target: &Target, load: impl FnOnce() -> Sample) -> Sample {
    let own = [i32::try_from(std::process::id()).expect("pid")];
    let pids = target.pids();
    let (balancer, nodes, client) = (cpu_ticks(&pids), cpu_ticks(&own), children_cpu_us());
    let mut s = load();
    let per_request = |ticks: u64| ticks as f64 / ticks_per_second() * 1e6 / s.requests;
    s.balancer_us = per_request(cpu_ticks(&pids) - balancer);
    s.nodes_us = per_request(cpu_ticks(&own) - nodes);
    s.client_us = (children_cpu_us() - client) / s.requests;
    s
}

fn parse_ms(v: &str) -> f64 {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * scale
}

/// wrk's threads and connections.
#[derive(Clone, Copy)]
struct Clients {
    threads: u32,
    connections: u32,
}

/// The load every case puts on one target.
const CLIENTS: Clients = Clients {
    threads: 2,
    connections: 64,
};

/// Half of it: what each of two targets loaded at once gets.
const HALF: Clients = Clients {
    threads: CLIENTS.threads / 2,
    connections: CLIENTS.connections / 2,
};

/// wrk's `-H` for the new-connection loads.
const CLOSE: Option<&str> = Some("Connection: close");

/// wrk's `-H` for the compressed loads: a browser's `Accept-Encoding`.
const GZIP: Option<&str> = Some("Accept-Encoding: gzip, deflate, br");

fn wrk(url: &str, seconds: u64, header: Option<&str>, clients: Clients) -> Sample {
    let mut cmd = Command::new(require("wrk"));
    cmd.arg(format!("-t{}", clients.threads))
        .arg(format!("-c{}", clients.connections))
        .args(["--latency", "-d"])
        .arg(format!("{seconds}s"));
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}");
    assert!(
        !text.contains("Non-2xx"),
        "wrk saw error responses from {url}:\n{text}"
    );
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk output:\n{text}"))
    };
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(f64::NAN);
    Sample {
        rps: field("Requests/sec:").parse().unwrap_or(f64::NAN),
        p50_ms: parse_ms(&field("50%")),
        p99_ms: parse_ms(&field("99%")),
        requests,
        ..Sample::default()
    }
}

/// Runs h2load with `args` against `url`: its output, and its `requests:` line.
fn run_h2load(url: &str, args: &[String]) -> (String, String) {
    let out = Command::new(require("h2load"))
        .args(args)
        .arg(url)
        .output()
        .expect("run h2load");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "h2load failed: {text}");
    let done = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_default()
        .to_owned();
    (text, done)
}

fn h2load(url: &str, requests: u64) -> Sample {
    let args = ["-c64", "-m10", "-t2", "-n", &requests.to_string()].map(String::from);
    let (text, done) = run_h2load(url, &args);
    assert!(
        done.contains(&format!("{requests} succeeded")),
        "h2load against {url}: {done}\n{text}"
    );
    let rps = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|v| v.strip_suffix(" req/s"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    Sample {
        rps,
        requests: requests as f64,
        ..Sample::default()
    }
}

/// h2load for `seconds` with `clients` (10 streams each): for loading two targets at once,
/// where a fixed request count would let one finish first. (Not for nginx, which closes an
/// HTTP/2 connection after 1,000 requests.)
fn h2load_timed(url: &str, seconds: u64, clients: Clients) -> Sample {
    let args = [
        format!("-c{}", clients.connections),
        format!("-t{}", clients.threads),
        "-m10".to_owned(),
        "-D".to_owned(),
        seconds.to_string(),
    ];
    let (text, done) = run_h2load(url, &args);
    let count = |what: &str| {
        done.split(", ")
            .find_map(|f| f.strip_suffix(what))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {what:?} in h2load's {done:?}"))
    };
    assert_eq!(
        count(" failed"),
        0.0,
        "h2load against {url}: {done}\n{text}"
    );
    let requests = count(" succeeded");
    Sample {
        rps: requests / seconds as f64,
        requests,
        ..Sample::default()
    }
}

/// One run of a load generator against a target.
type Load<'a> = dyn Fn(&Target) -> Sample + 'a;

/// The case that compares new connections at one TLS version on both sides.
const SAME_VERSION: &str = "openid new connection, same TLS version";

/// The case that compares compression: nginx-ka and gluu-lb with [`GZIP_LINES`], keep-alive
/// clients that take gzip.
const GZIPPED: &str = "keep-alive, gzip";

/// What the compression case adds to the guide's server: the page is `text/html`, which
/// `gzip on` compresses; the OpenID configuration needs its type listed.
const GZIP_LINES: &str = "gzip on; gzip_types application/json;";

/// `conf` with `extra` after its `ssl on;` line (unchanged when `extra` is empty).
fn with_ssl(conf: &str, extra: &str) -> String {
    if extra.is_empty() {
        return conf.to_owned();
    }
    assert!(
        conf.contains("ssl on;\n"),
        "the guide's file has no `ssl on;`"
    );
    conf.replacen("ssl on;\n", &format!("ssl on;\n    {extra}\n"), 1)
}

/// Runs `load` `rounds` times against each target in turn and returns each one's medians.
/// Each round starts one target further on, so no target always follows the same one.
fn compare(targets: &[&Target], rounds: usize, load: &Load<'_>) -> Vec<Sample> {
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); targets.len()];
    for round in 0..rounds {
        for k in 0..targets.len() {
            let i = (round + k) % targets.len();
            let t = targets[i];
            samples[i].push(measured(t, || load(t)));
        }
    }
    samples
        .iter()
        .map(|s| {
            let med = |f: fn(&Sample) -> f64| median(s.iter().map(f).collect());
            Sample {
                rps: med(|x| x.rps),
                p50_ms: med(|x| x.p50_ms),
                p99_ms: med(|x| x.p99_ms),
                balancer_us: med(|x| x.balancer_us),
                nodes_us: med(|x| x.nodes_us),
                client_us: med(|x| x.client_us),
                ..Sample::default()
            }
        })
        .collect()
}

/// Loads `a` and `b` at the same time, each with `load` (half the clients), `rounds` times. Both meet the same machine at the same instant, so the drift that moves
/// one-after-the-other comparisons of identical binaries by up to 10% on this VM cancels
/// out. Describes two ratios over the rounds (median, middle half, range): a's req/s to b's,
/// and b's CPU time per request to a's (above 1: a does the same work for less), with the
/// median CPU time per request of each.
fn at_once(
    a: &Target,
    b: &Target,
    path: &str,
    load: &(dyn Fn(&str) -> Sample + Sync),
    rounds: usize,
) -> String {
    let (ua, ub) = (a.url(path), b.url(path));
    let (pa, pb) = (a.pids(), b.pids());
    let (mut rps, mut cpu, mut us_a, mut us_b) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let us = |ticks: u64, requests: f64| ticks as f64 * 1e6 / ticks_per_second() / requests;
    for _ in 0..rounds {
        let (ta, tb) = (cpu_ticks(&pa), cpu_ticks(&pb));
        let (x, y) = std::thread::scope(|s| {
            let x = s.spawn(|| load(&ua));
            let y = load(&ub);
            (x.join().expect("wrk thread"), y)
        });
        let (ca, cb) = (cpu_ticks(&pa) - ta, cpu_ticks(&pb) - tb);
        let (a_us, b_us) = (us(ca, x.requests), us(cb, y.requests));
        rps.push(x.rps / y.rps);
        cpu.push(b_us / a_us);
        us_a.push(a_us);
        us_b.push(b_us);
    }
    let spread = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        format!(
            "{:.3}x (middle half {:.3}-{:.3}, all {:.3}-{:.3})",
            v[n / 2],
            v[n / 4],
            v[(3 * n - 1) / 4],
            v[0],
            v[n - 1]
        )
    };
    format!(
        "req/s {}/{} {} | CPU/req {} {:.1} us, {} {:.1} us, {}/{} {}",
        a.name,
        b.name,
        spread(rps),
        a.name,
        median(us_a),
        b.name,
        median(us_b),
        b.name,
        a.name,
        spread(cpu)
    )
}

/// The loads [`at_once`] compares: name, path, `Connection: close`.
const AT_ONCE: [(&str, &str, Option<&str>); 3] = [
    ("openid keep-alive", OPENID, None),
    ("identity keep-alive", IDENTITY, None),
    ("openid new connection", OPENID, CLOSE),
];

/// One line's worth of figures per target.
fn cells(targets: &[&Target], med: &[Sample]) -> String {
    let cells: Vec<String> = targets
        .iter()
        .zip(med)
        .map(|(t, s)| {
            let latency = if s.p50_ms > 0.0 {
                format!(" p50 {:.2} ms p99 {:.2} ms", s.p50_ms, s.p99_ms)
            } else {
                String::new()
            };
            format!(
                "{} {:>8.0} req/s{latency} CPU/req {:.0} us (nodes {:.0} us, client {:.0} us)",
                t.name, s.rps, s.balancer_us, s.nodes_us, s.client_us
            )
        })
        .collect();
    cells.join(" | ")
}

/// The TLS version the balancer on `port` picks for a client offering 1.2 and 1.3.
async fn negotiated(port: u16) -> String {
    let conn = open_one(&connector(), port).await;
    match conn.get_ref().1.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_owned(),
        other => format!("{other:?}"),
    }
}

fn nginx_target(name: &'static str, dir: &Path, text: &str, port: u16) -> Target {
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(&conf, text).expect("write nginx conf");
    let proc = nginx(dir, &conf, ([127, 0, 0, 1], port).into());
    Target {
        name,
        port,
        pid: proc.pid(),
        _proc: proc,
    }
}

fn started(name: &'static str, mut proc: Proc, port: u16) -> Target {
    wait_for(Duration::from_secs(20), "the balancer to listen", || {
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!("{name} exited with {status}: {}", proc.seen.join("\n"));
        }
        listening(([127, 0, 0, 1], port).into()).then_some(())
    });
    Target {
        name,
        port,
        pid: proc.pid(),
        _proc: proc,
    }
}

/// Opens `n` TLS connections to `port`, one request on each, and keeps them.
async fn hold_idle(
    port: u16,
    n: usize,
) -> Vec<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let connector = connector();
    // 50 at a time: each one is a full TLS handshake and a proxied request.
    let mut conns = Vec::with_capacity(n);
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..n {
        let connector = connector.clone();
        opening.spawn(async move { open_one(&connector, port).await });
        if opening.len() >= 50 || i + 1 == n {
            while let Some(c) = opening.join_next().await {
                conns.push(c.expect("join"));
            }
        }
    }
    conns
}

/// A TLS client offering 1.2 and 1.3 that takes any certificate (the balancers serve a
/// self-signed one).
fn connector() -> tokio_rustls::TlsConnector {
    let provider = gluu_common::tls::provider();
    let verifier = PeerVerifier::new(PeerPolicy::Anyone, &provider).expect("verifier");
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `port` that has had one response.
async fn open_one(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    {
        let name =
            rustls_pki_types::ServerName::try_from("loadbalancer.example.org").expect("name");
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        tls.write_all(
            format!("GET {OPENID} HTTP/1.1\r\nHost: loadbalancer.example.org\r\n\r\n").as_bytes(),
        )
        .await
        .expect("request");
        // Read the head, then the Content-Length body.
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let (head_end, length) = loop {
            let k = tls.read(&mut buf).await.expect("response");
            assert!(k > 0, "connection closed during the idle test");
            got.extend_from_slice(&buf[..k]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..i]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .expect("content-length");
                break (i + 4, len);
            }
        };
        while got.len() < head_end + length {
            let k = tls.read(&mut buf).await.expect("body");
            assert!(k > 0, "connection closed during the idle test");
            got.extend_from_slice(&buf[..k]);
        }
        tls
    }
}

/// The answer to `GET path` from a client that takes gzip: its head (lower case) and the
/// length of its body as sent (de-chunked).
async fn fetch_gzipped(port: u16, path: &str) -> (String, usize) {
    let name = rustls_pki_types::ServerName::try_from("loadbalancer.example.org").expect("name");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut tls = connector().connect(name, tcp).await.expect("handshake");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: loadbalancer.example.org\r\n{}\r\nConnection: close\r\n\r\n",
        GZIP.unwrap_or_default()
    );
    tls.write_all(request.as_bytes()).await.expect("request");
    let mut got = Vec::new();
    // A balancer may end the TLS session without close_notify; what came is enough.
    let _ = tls.read_to_end(&mut got).await;
    let at = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(got.len());
    let head = String::from_utf8_lossy(&got[..at]).to_ascii_lowercase() + "\r\n";
    let mut body = got.get(at + 4..).unwrap_or_default();
    if !head.contains("\r\ntransfer-encoding: chunked\r\n") {
        return (head, body.len());
    }
    let mut length = 0;
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        length += size;
        body = body.get(eol + 4 + size..).unwrap_or_default();
    }
    (head, length)
}

/// What `gluu-bench lb` was asked for.
#[derive(Debug)]
pub struct Options {
    pub seconds: u64,
    pub rounds: usize,
    pub idle: usize,
    pub h2_requests: u64,
    pub case: Option<String>,
    pub baseline: Option<PathBuf>,
}

pub fn run(options: &Options) {
    let &Options {
        seconds,
        rounds,
        idle,
        h2_requests,
        ..
    } = options;
    raise_fd_limit(65_536);
    let bin = sibling("gluu-lb");
    let version = |cmd: &Path, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
            })
            .unwrap_or_default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = Cert::new(dir.path(), "httpd");
    readable_by_nginx(dir.path(), Some(&cert));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let nodes = rt.block_on(Node::pair(&cert, "https://loadbalancer.example.org"));
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let d = dir.path().display().to_string();
    let conf = |name: &str, port: u16| {
        let text = guide_nginx(
            &addrs,
            &cert,
            &format!("127.0.0.1:{}", free_port()),
            &format!("127.0.0.1:{port} http2"),
        );
        text.replace(
            "http {\n",
            &format!("http {{\n  access_log {d}/{name}.access.log;\n"),
        )
    };
    let nginx_prelude = |name: &str| {
        format!(
            "daemon off;\nworker_processes auto;\npid {d}/{name}.pid;\nerror_log {d}/{name}.error.log;\n\
             worker_rlimit_nofile 65536;\n"
        )
    };
    let keepalive_text = |name: &str, port: u16| keepalive_tuned(&conf(name, port));
    // `extra` goes after the guide's `ssl on;`.
    let gluu_lb = |name: &'static str, bin: &Path, extra: &str| {
        let port = free_port();
        let path = dir.path().join(format!("{name}.conf"));
        let text = format!(
            "error_log {d}/{name}.error.log warn;\n{}",
            with_ssl(&conf(name, port), extra)
        );
        std::fs::write(&path, text).expect("write gluu-lb conf");
        started(
            name,
            Proc::spawn(Command::new(bin).arg("-c").arg(&path)),
            port,
        )
    };
    let wanted = |name: &str| options.case.as_deref().is_none_or(|c| name.contains(c));
    if let Some(other) = &options.baseline {
        let pair = [gluu_lb("gluu-lb", &bin, ""), gluu_lb("baseline", other, "")];
        println!(
            "gluu-bench lb --baseline: {} cores; gluu-lb: {}; baseline: {} ({}); the guide's \
             nginx.conf; each loaded by its own wrk -t{} -c{} -d{seconds}s (HTTP/2: h2load -m10 as many), \
             both at once; {rounds} rounds",
            cores(),
            version(&bin, "--version"),
            other.display(),
            version(other, "--version"),
            HALF.threads,
            HALF.connections,
        );
        for t in &pair {
            wrk(&t.url(OPENID), 1, None, CLIENTS);
        }
        let [a, b] = &pair;
        for (name, path, header) in AT_ONCE {
            if wanted(name) {
                let load = |u: &str| wrk(u, seconds, header, HALF);
                println!("{name:<22} {}", at_once(a, b, path, &load, rounds));
            }
        }
        if wanted("openid HTTP/2") {
            let load = |u: &str| h2load_timed(u, seconds, HALF);
            println!(
                "{:<22} {}",
                "openid HTTP/2",
                at_once(a, b, OPENID, &load, rounds)
            );
        }
        drop(nodes);
        return;
    }
    let (p1, p2) = (free_port(), free_port());
    let guide = nginx_target(
        "nginx",
        dir.path(),
        &format!("{}{}", nginx_prelude("nginx"), conf("nginx", p1)),
        p1,
    );
    let keepalive = nginx_target(
        "nginx-ka",
        dir.path(),
        &format!(
            "{}{}",
            nginx_prelude("nginx-ka"),
            keepalive_text("nginx-ka", p2)
        ),
        p2,
    );
    let targets = [guide, keepalive, gluu_lb("gluu-lb", &bin, "")];
    // Debian's nginx 1.22 offers TLS 1.0-1.2 unless told otherwise, gluu-lb 1.2 and 1.3: the
    // same-version case pairs each with the other's protocol as well.
    let same_version = wanted(SAME_VERSION).then(|| {
        let port = free_port();
        let nginx13 = nginx_target(
            "nginx-ka13",
            dir.path(),
            &format!(
                "{}{}",
                nginx_prelude("nginx-ka13"),
                with_ssl(
                    &keepalive_text("nginx-ka13", port),
                    "ssl_protocols TLSv1.2 TLSv1.3;"
                )
            ),
            port,
        );
        (
            nginx13,
            gluu_lb("gluu-lb12", &bin, "ssl_protocols TLSv1.2;"),
        )
    });
    let gzipped = wanted(GZIPPED).then(|| {
        let port = free_port();
        let text = with_ssl(&keepalive_text("nginx-ka-gz", port), GZIP_LINES);
        let nginx_gz = nginx_target(
            "nginx-ka-gz",
            dir.path(),
            &format!("{}{text}", nginx_prelude("nginx-ka-gz")),
            port,
        );
        [nginx_gz, gluu_lb("gluu-lb-gz", &bin, GZIP_LINES)]
    });

    println!(
        "gluu-bench lb: {} cores; {}; {}; {}; {}",
        cores(),
        version(&require("nginx"), "-v"),
        version(&bin, "--version"),
        version(&require("wrk"), "-v"),
        version(&require("h2load"), "--version"),
    );
    println!(
        "targets: nginx (the guide's nginx.conf), nginx-ka (plus upstream keepalive 32), gluu-lb (the guide's nginx.conf); \
         wrk -t{} -c{} -d{seconds}s, h2load -c64 -m10 -n{h2_requests}; medians of {rounds} rounds",
        CLIENTS.threads, CLIENTS.connections
    );
    let all: Vec<&Target> = targets
        .iter()
        .chain(same_version.iter().flat_map(|(a, b)| [a, b]))
        .chain(gzipped.iter().flatten())
        .collect();
    let protocols: Vec<String> = all
        .iter()
        .map(|t| format!("{} {}", t.name, rt.block_on(negotiated(t.port))))
        .collect();
    println!(
        "TLS version each balancer picks for a client offering 1.2 and 1.3 (wrk's OpenSSL does): {}\n",
        protocols.join(", ")
    );
    // Warm up every path (TLS session caches, pools).
    for t in &all {
        wrk(&t.url(OPENID), 1, None, CLIENTS);
    }
    let keep_alive =
        |path: &'static str| move |t: &Target| wrk(&t.url(path), seconds, None, CLIENTS);
    let new_connection = |t: &Target| wrk(&t.url(OPENID), seconds, CLOSE, CLIENTS);
    let h2 = |t: &Target| h2load(&t.url(OPENID), h2_requests);
    let cases: [(&str, &Load<'_>); 4] = [
        ("openid keep-alive", &keep_alive(OPENID)),
        ("identity keep-alive", &keep_alive(IDENTITY)),
        ("openid new connection", &new_connection),
        ("openid HTTP/2", &h2),
    ];
    let targets_ref: Vec<&Target> = targets.iter().collect();
    for (name, runner) in cases.iter().filter(|(name, _)| wanted(name)) {
        let med = compare(&targets_ref, rounds, runner);
        println!(
            "{name:<22} {} | gluu/nginx {:.2}x, gluu/nginx-ka {:.2}x",
            cells(&targets_ref, &med),
            med[2].rps / med[0].rps,
            med[2].rps / med[1].rps
        );
    }
    // The keep-alive loads again, gluu-lb and nginx-ka at once: their CPU per request
    // compared without the drift between one run and the next.
    for (name, path, _) in AT_ONCE
        .iter()
        .filter(|(name, _, header)| header.is_none() && wanted(name))
    {
        println!(
            "{:<22} {}",
            format!("{name}, at once"),
            at_once(
                &targets[2],
                &targets[1],
                path,
                &|u: &str| wrk(u, seconds, None, HALF),
                rounds
            )
        );
    }
    if let Some(pair) = &gzipped {
        let pair: Vec<&Target> = pair.iter().collect();
        for (what, path) in [("identity", IDENTITY), ("openid", OPENID)] {
            let mut sizes = Vec::new();
            for t in &pair {
                let (head, length) = rt.block_on(fetch_gzipped(t.port, path));
                assert!(
                    head.contains("\r\ncontent-encoding: gzip\r\n"),
                    "{} does not compress {path}:\n{head}",
                    t.name
                );
                sizes.push(format!("{} {length} bytes", t.name));
            }
            println!("{what} compressed: {}", sizes.join(", "));
            let load = |t: &Target| wrk(&t.url(path), seconds, GZIP, CLIENTS);
            let med = compare(&pair, rounds, &load);
            println!(
                "{what} {GZIPPED}: {} | gluu/nginx-ka {:.2}x",
                cells(&pair, &med),
                med[1].rps / med[0].rps
            );
        }
    }
    if let Some((nginx13, gluu12)) = &same_version {
        let pairs = [
            ("TLS 1.2", [&targets[1], gluu12]),
            ("TLS 1.3", [nginx13, &targets[2]]),
        ];
        for (protocol, pair) in pairs {
            let med = compare(&pair, rounds, &new_connection);
            println!(
                "{SAME_VERSION}, {protocol}: {} | gluu/nginx-ka {:.2}x",
                cells(&pair, &med),
                med[1].rps / med[0].rps
            );
        }
    }

    if idle == 0 {
        return;
    }
    println!("\nmemory with {idle} idle TLS client connections (one request each, then held):");
    let mut peaks = Vec::new();
    // nginx and gluu-lb: the guide's nginx holds idle client connections as nginx-ka does.
    let measured: Vec<&Target> = targets.iter().filter(|t| t.name != "nginx-ka").collect();
    for t in &measured {
        let start = Instant::now();
        let conns = rt.block_on(hold_idle(t.port, idle));
        let pids = t.pids();
        let (hwm, rss) = rss_kib(&pids);
        println!(
            "  {:<8} peak RSS {:>7.1} MiB, now {:>7.1} MiB  ({} processes; {} connections in {:.2?})",
            t.name,
            hwm as f64 / 1024.0,
            rss as f64 / 1024.0,
            pids.len(),
            conns.len(),
            start.elapsed()
        );
        peaks.push(hwm);
        drop(conns);
    }
    for (t, peak) in measured.iter().zip(&peaks).skip(1) {
        println!(
            "  {} / nginx peak RSS: {:.2}",
            t.name,
            *peak as f64 / peaks[0] as f64
        );
    }
    drop(nodes);
}
