//! `gluu-box`: the README's first command. Brings up, on loopback, the guide's whole
//! topology with gluu-ha in place of nginx, stunnel and csync2:
//!
//! - two Gluu-like HTTPS nodes (the testkit's node: OpenID configuration, /identity pages
//!   naming the node, /cas, /passport, a /status/500 path) holding the balancer's
//!   certificate, as the guide copies httpd.crt/httpd.key;
//! - gluu-lb in front with the guide's nginx.conf (addresses and ports adapted);
//! - a real `redis-server` with `requirepass` behind a gluu-tunnel server (the guide's
//!   redis-server.conf) and a gluu-tunnel client per node (redis-client.conf, `client = yes`);
//! - a gluu-fsync daemon per node replicating the guide's csync2 includes, each node's tree
//!   under its own root (csync2's `prefix`).
//!
//! It walks through what the guide promises, printing each step with its result, then stays
//! up until Ctrl-C, which stops everything it started. `--check` exits after the walkthrough,
//! non-zero if a step failed (the test suite runs it). The daemons are taken from the
//! directory this program was built into.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gluu_testkit::https::{Client, HOST};
use gluu_testkit::node::Node;
use gluu_testkit::{Cert, Proc, Redis, Side, find_content, free_port, guide_conf, guide_nginx};

/// How long a daemon may take to come up, and a step to reach its result.
const LIMIT: Duration = Duration::from_secs(30);

struct Walk {
    failed: usize,
    passed: usize,
}

impl Walk {
    fn section(&self, title: &str) {
        println!("\n== {title}");
    }

    fn step<T: Display>(&mut self, what: &str, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => {
                println!("  [ ok ] {what}: {v}");
                self.passed += 1;
                Some(v)
            }
            Err(e) => {
                println!("  [FAIL] {what}: {e}");
                self.failed += 1;
                None
            }
        }
    }
}

fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let p = exe.with_file_name(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found: build the workspace first (cargo build --release --workspace)",
            p.display()
        ))
    }
}

/// Runs a command to its end: Ok(stdout + stderr) on exit 0, Err(the same) otherwise.
fn run_tool(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text.trim().to_owned())
    } else {
        Err(text.trim().to_owned())
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Polls `f` until it returns `Some`, for at most `limit`.
fn poll<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("{what}: not after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn last_line(text: &str) -> String {
    text.lines().last().unwrap_or_default().to_owned()
}

fn main() {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: gluu-box [--check]\n\n\
             Starts the guide's cluster on loopback with gluu-ha in place of nginx, stunnel and\n\
             csync2: two Gluu-like HTTPS nodes, gluu-lb in front, Redis behind gluu-tunnel, and\n\
             gluu-fsync on each node. Walks through what the guide promises, then keeps running\n\
             until Ctrl-C, which stops everything it started.\n\n  \
             --check   exit after the walkthrough: 0 when every step passed, 1 otherwise"
        );
        return;
    }
    let check_only = std::env::args().any(|a| a == "--check");
    let code = match cluster(check_only) {
        Ok(walk) if walk.failed == 0 => {
            println!("\nall {} steps passed", walk.passed);
            0
        }
        Ok(walk) => {
            println!(
                "\n{} of {} steps failed",
                walk.failed,
                walk.failed + walk.passed
            );
            1
        }
        Err(e) => {
            eprintln!("gluu-box: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// Everything gluu-box started; dropping it stops the nodes, and [`Running::stop`] stops the
/// daemons gracefully.
struct Running {
    procs: Vec<(String, Proc)>,
    nodes: Vec<Node>,
    rt: tokio::runtime::Runtime,
}

impl Running {
    fn stop(mut self) {
        for (name, proc) in self.procs.iter_mut().rev() {
            match proc.terminate(Duration::from_secs(15)) {
                Some(status) => println!("  {name}: stopped ({status})"),
                None => println!("  {name}: did not stop within 15 s, killed"),
            }
        }
        let nodes = std::mem::take(&mut self.nodes);
        self.rt.block_on(async {
            for mut node in nodes {
                node.stop().await;
            }
        });
        println!("  nodes: stopped");
    }
}

fn cluster(check_only: bool) -> Result<Walk, String> {
    let bins = Bins {
        lb: sibling("gluu-lb")?,
        tunnel: sibling("gluu-tunnel")?,
        fsync: sibling("gluu-fsync")?,
    };
    let dir = tempfile::Builder::new()
        .prefix("gluu-box-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let d = dir.path();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut walk = Walk {
        failed: 0,
        passed: 0,
    };
    let mut running = Running {
        procs: Vec::new(),
        nodes: Vec::new(),
        rt,
    };
    println!(
        "gluu-box: the guide's Gluu cluster on loopback, in {}",
        d.display()
    );
    for bin in [&bins.lb, &bins.tunnel, &bins.fsync] {
        if let Ok(v) = run_tool(Command::new(bin).arg("--version")) {
            println!("  {v}");
        }
    }

    let lb = balancer(&bins, d, &mut walk, &mut running)?;
    let redis = redis_leg(&bins, d, &mut walk, &mut running)?;
    let fsync = fsync_leg(&bins, d, &mut walk, &mut running)?;

    println!(
        "\nRunning (everything on loopback, files in {}):",
        d.display()
    );
    println!(
        "  balancer       https://{HOST}:{port}/  (try: curl --cacert {crt} --resolve {HOST}:{port}:127.0.0.1 https://{HOST}:{port}/oxauth/.well-known/openid-configuration)",
        port = lb.https.port(),
        crt = lb.cert.cert.display()
    );
    println!(
        "                 http://127.0.0.1:{}/ redirects",
        lb.http.port()
    );
    println!(
        "  gluu-lb        config {}  access log {}  error log {}",
        lb.conf.display(),
        lb.access_log.display(),
        lb.error_log.display()
    );
    println!(
        "                 metrics http://{m}/metrics  status http://{m}/status",
        m = lb.metrics
    );
    for node in &running.nodes {
        println!("  {:<14} https://{}/", node.name, node.addr);
    }
    println!(
        "  Redis          {} (requirepass; password in {})",
        redis.redis.addr(),
        redis.password.display()
    );
    println!(
        "  gluu-tunnel    Redis side TLS {}  config {}",
        redis.server, redis.server_conf
    );
    for (i, (addr, conf)) in redis.clients.iter().enumerate() {
        println!(
            "                 node{} side {addr}  config {}  (try: redis-cli -h {} -p {} -a {} ping)",
            i + 1,
            conf.display(),
            addr.ip(),
            addr.port(),
            redis.redis.password
        );
    }
    for (i, root) in fsync.roots.iter().enumerate() {
        println!(
            "  gluu-fsync     node{} tree {}  state {}  (try: {} -c {} -N node{} --state-dir {} status)",
            i + 1,
            root.display(),
            fsync.states[i].display(),
            bins.fsync.display(),
            fsync.conf.display(),
            i + 1,
            fsync.states[i].display()
        );
    }
    println!("  daemon logs    {}/*.log", d.display());

    if !check_only {
        let (tx, rx) = mpsc::channel();
        ctrlc::set_handler(move || {
            let _ = tx.send(());
        })
        .map_err(|e| e.to_string())?;
        println!("\nCtrl-C stops everything gluu-box started.");
        let _ = rx.recv();
    }
    println!("\nstopping");
    running.stop();
    drop(redis);
    if walk.failed > 0 {
        // The logs are what tells why: keep them.
        println!("  logs and files kept in {}", dir.keep().display());
    }
    Ok(walk)
}

struct Bins {
    lb: PathBuf,
    tunnel: PathBuf,
    fsync: PathBuf,
}

/// Starts a daemon (its log goes to a file its configuration names) and waits until `ready`
/// says it is up; if it exits first, or is not up within [`LIMIT`], the error carries what
/// it wrote to stderr.
fn start(
    running: &mut Running,
    name: &str,
    cmd: &mut Command,
    mut ready: impl FnMut() -> bool,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut proc = Proc::spawn(cmd);
    let up = poll(LIMIT, &format!("{name} to come up"), || {
        if ready() {
            return Some(Ok(()));
        }
        proc.child
            .try_wait()
            .ok()
            .flatten()
            .map(|status| Err(format!("{name} exited ({status})")))
    })
    .and_then(|r| r);
    let result = up.map(|()| started.elapsed()).map_err(|e| {
        let said: Vec<String> = proc.stderr.try_iter().collect();
        format!("{e}: {}", said.join(" | "))
    });
    running.procs.push((name.to_owned(), proc));
    result
}

struct Balancer {
    cert: Cert,
    conf: PathBuf,
    access_log: PathBuf,
    error_log: PathBuf,
    http: SocketAddr,
    https: SocketAddr,
    metrics: SocketAddr,
}

/// Client addresses of one /24 each, for `ip_hash` (nginx keys it on the first three bytes).
fn from_net(net: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, net, host))
}

fn balancer(
    bins: &Bins,
    d: &Path,
    walk: &mut Walk,
    running: &mut Running,
) -> Result<Balancer, String> {
    walk.section("Load balancer: gluu-lb with the guide's nginx.conf, two Gluu nodes behind it");
    let lbdir = d.join("lb");
    std::fs::create_dir_all(&lbdir).map_err(|e| e.to_string())?;
    // One certificate for the balancer and both nodes, as the guide copies it around.
    let cert = Cert::new(&lbdir, "httpd");
    let issuer = format!("https://{HOST}");
    for (name, ip) in [("node1", [127, 0, 0, 11]), ("node2", [127, 0, 0, 12])] {
        let node =
            running
                .rt
                .block_on(Node::start(name, &cert, SocketAddr::from((ip, 0)), &issuer));
        println!("  {name}: Gluu-like HTTPS node on {}", node.addr);
        running.nodes.push(node);
    }
    let addrs: Vec<SocketAddr> = running.nodes.iter().map(|n| n.addr).collect();
    let (http, https, metrics) = (free_port(), free_port(), free_port());
    let b = Balancer {
        conf: lbdir.join("nginx.conf"),
        access_log: lbdir.join("access.log"),
        error_log: d.join("gluu-lb.log"),
        http: SocketAddr::from(([127, 0, 0, 1], http)),
        https: SocketAddr::from(([127, 0, 0, 1], https)),
        metrics: SocketAddr::from(([127, 0, 0, 1], metrics)),
        cert,
    };
    let text = guide_nginx(
        &addrs,
        &b.cert,
        &format!("127.0.0.1:{http}"),
        &format!("127.0.0.1:{https}"),
    )
    .replace(
        "http {\n",
        &format!(
            "http {{\n  # added for gluu-box: Prometheus and JSON status on loopback, the logs\n  metrics {};\n  access_log {} combined;\n  error_log {} info;\n",
            b.metrics,
            b.access_log.display(),
            b.error_log.display()
        ),
    );
    write(
        &b.conf,
        &format!("# the guide's nginx.conf; node addresses and ports changed for loopback\n{text}"),
    )?;

    walk.step(
        "gluu-lb -t on the guide's nginx.conf",
        run_tool(Command::new(&bins.lb).arg("-t").arg("-c").arg(&b.conf)).map(|out| {
            let warnings = out.lines().filter(|l| l.contains("[warn]")).count();
            for l in out.lines().filter(|l| l.contains("[warn]")) {
                println!("         {l}");
            }
            format!("{} ({warnings} warnings, above)", last_line(&out))
        }),
    );
    walk.step(
        "gluu-lb listening",
        start(
            running,
            "gluu-lb",
            Command::new(&bins.lb).arg("-c").arg(&b.conf),
            || gluu_testkit::listening(b.https) && gluu_testkit::listening(b.http),
        )
        .map(|t| format!("https {} and http {} after {t:?}", b.https, b.http)),
    );

    let client = Client::new(&b.cert);
    let rt = &running.rt;
    let get = |source: Option<IpAddr>, path: &str| {
        rt.block_on(async {
            match source {
                Some(ip) => client.get_from(b.https, ip, path).await,
                None => client.get(b.https, path).await,
            }
        })
    };

    walk.step(
        "OpenID configuration through the balancer",
        get(None, "/oxauth/.well-known/openid-configuration").and_then(|r| {
            let issuer_seen = serde_json::from_str::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v["issuer"].as_str().map(str::to_owned));
            match (r.status.as_u16(), issuer_seen) {
                (200, Some(i)) if i == issuer => Ok(format!(
                    "200 from {}, issuer {i}, {} bytes",
                    r.node(),
                    r.body.len()
                )),
                (status, i) => Err(format!("{status}, issuer {i:?}: {}", r.body)),
            }
        }),
    );
    walk.step(
        "port 80 redirects to https (the guide's return 301, host as the guide wrote it)",
        redirect(b.http),
    );

    // /identity: ip_hash on the client's /24.
    let mut owner: BTreeMap<u8, String> = BTreeMap::new();
    let sticky = (|| {
        for net in 1..=6u8 {
            let mut seen = Vec::new();
            for host in [10, 20, 30] {
                let r = get(Some(from_net(net, host)), "/identity/home.htm")?;
                if r.status != 200 {
                    return Err(format!("{} from {}", r.status, from_net(net, host)));
                }
                seen.push(r.node().to_owned());
            }
            seen.dedup();
            if seen.len() != 1 {
                return Err(format!("127.1.{net}.0/24 went to {seen:?}"));
            }
            owner.insert(net, seen.remove(0));
        }
        let used: std::collections::BTreeSet<_> = owner.values().collect();
        if used.len() < 2 {
            return Err(format!("every /24 went to {used:?}"));
        }
        Ok(owner
            .iter()
            .map(|(net, node)| format!("127.1.{net}.0/24 -> {node}"))
            .collect::<Vec<_>>()
            .join(", "))
    })();
    walk.step(
        "/identity sticks to one node per client /24 (ip_hash, 3 clients in each)",
        sticky,
    );
    walk.step(
        "other paths take turns (round robin over /oxauth, /cas, /passport)",
        (|| {
            let mut count: BTreeMap<String, usize> = BTreeMap::new();
            for path in ["/oxauth/authorize", "/cas/login", "/passport/auth"]
                .iter()
                .cycle()
                .take(6)
            {
                let r = get(None, path)?;
                if r.status != 200 {
                    return Err(format!("{path}: {}", r.status));
                }
                *count.entry(r.node().to_owned()).or_default() += 1;
            }
            if count.len() < 2 {
                return Err(format!("only {count:?}"));
            }
            Ok(format!("{count:?}"))
        })(),
    );
    walk.step(
        "a path no location matches",
        get(None, "/nowhere").and_then(|r| match r.status.as_u16() {
            404 => Ok("404 from gluu-lb itself, as nginx".to_owned()),
            s => Err(format!("{s} from {}", r.node())),
        }),
    );
    let node2_served = running.nodes[1].requests();
    running.nodes[1].fail_with(500);
    walk.step(
        "node2 sick (500 to everything): clients get 200 from node1 (proxy_next_upstream http_500); after max_fails=2 node2 is left alone",
        (|| {
            let mut answers: BTreeMap<String, usize> = BTreeMap::new();
            for _ in 0..6 {
                let r = get(None, "/oxauth/authorize")?;
                *answers
                    .entry(format!("{} from {}", r.status.as_u16(), r.node()))
                    .or_default() += 1;
            }
            let tried = running.nodes[1].requests() - node2_served;
            match (answers.len(), answers.get("200 from node1"), tried) {
                (1, Some(6), 2) => Ok(format!(
                    "6 x 200 from node1; node2 tried {tried} times, then skipped for fail_timeout"
                )),
                _ => Err(format!("{answers:?}, node2 tried {tried} times")),
            }
        })(),
    );
    running.nodes[1].fail_with(0);

    let node2_nets: Vec<u8> = owner
        .iter()
        .filter(|(_, n)| n.as_str() == "node2")
        .map(|(net, _)| *net)
        .collect();
    rt.block_on(running.nodes[1].stop());
    walk.step(
        "node2 stopped: every request still answered",
        (|| {
            let mut count: BTreeMap<String, usize> = BTreeMap::new();
            let start = Instant::now();
            for _ in 0..10 {
                let r = get(None, "/oxauth/.well-known/openid-configuration")?;
                if r.status != 200 {
                    return Err(format!("{} from {}", r.status, r.node()));
                }
                *count.entry(r.node().to_owned()).or_default() += 1;
            }
            for net in &node2_nets {
                let r = get(Some(from_net(*net, 10)), "/identity/home.htm")?;
                if r.status != 200 || r.node() != "node1" {
                    return Err(format!(
                        "/identity from 127.1.{net}.10: {} from {}",
                        r.status,
                        r.node()
                    ));
                }
            }
            Ok(format!(
                "10 x openid-configuration {count:?} in {:?}; /identity clients of node2 ({}) now on node1",
                start.elapsed(),
                node2_nets
                    .iter()
                    .map(|n| format!("127.1.{n}.0/24"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })(),
    );
    rt.block_on(running.nodes[1].restart());
    walk.step(
        "node2 started again: back in rotation once fail_timeout=10s has passed",
        {
            // Each upstream block keeps its own failure counts, as nginx's do: `backend`
            // and `backend_id` each take node2 back after their own fail_timeout.
            let start = Instant::now();
            poll(
                Duration::from_secs(30),
                "node2 serving both pools again",
                || {
                    let rr = get(None, "/oxauth/authorize").ok()?.node() == "node2";
                    let sticky = node2_nets.iter().all(|net| {
                        get(Some(from_net(*net, 10)), "/identity/home.htm")
                            .is_ok_and(|r| r.node() == "node2")
                    });
                    (rr && sticky).then_some(())
                },
            )
            .map(|()| {
                format!(
                    "after {:?}; round robin reaches it and its /identity clients are back",
                    start.elapsed()
                )
            })
        },
    );
    walk.step(
        "a 500 from every node (the nodes' /status/500 path): tried once on each, then passed on",
        (|| {
            let before: Vec<usize> = running.nodes.iter().map(Node::requests).collect();
            let r = get(None, "/oxauth/status/500")?;
            let tried: Vec<usize> = running
                .nodes
                .iter()
                .zip(&before)
                .map(|(n, b)| n.requests() - b)
                .collect();
            match (r.status.as_u16(), tried.as_slice()) {
                (500, [1, 1]) => {
                    Ok("500 to the client after node1 and node2 each answered 500".to_owned())
                }
                (status, _) => Err(format!("{status}; requests per node {tried:?}")),
            }
        })(),
    );
    walk.step(
        "status of every upstream server (metrics listener)",
        http_get(b.metrics, "/status").and_then(|body| {
            let v: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
            let mut out = Vec::new();
            for (name, servers) in v["upstreams"].as_object().into_iter().flatten() {
                for s in servers.as_array().into_iter().flatten() {
                    out.push(format!(
                        "{name} {} {} ({} fails)",
                        s["address"].as_str().unwrap_or("?"),
                        s["state"].as_str().unwrap_or("?"),
                        s["fails"]
                    ));
                }
            }
            match out.is_empty() {
                true => Err(format!("no upstreams in {body}")),
                false => Ok(out.join(", ")),
            }
        }),
    );
    walk.step(
        "when the served certificate ends (warned of 30 days ahead; a metric to alert on)",
        http_get(b.metrics, "/metrics").and_then(|text| {
            let series = "gluu_lb_certificate_expiry_timestamp_seconds{file=";
            let line = text
                .lines()
                .find(|l| l.starts_with(series))
                .ok_or_else(|| format!("no {series} in the metrics"))?;
            let status = http_get(b.metrics, "/status")?;
            let v: serde_json::Value =
                serde_json::from_str(&status).map_err(|e| format!("{e}: {status}"))?;
            let c = &v["certificates"][0];
            match c["not_after"].as_str() {
                Some(end) => Ok(format!(
                    "{} ends {end}; {line}",
                    c["file"].as_str().unwrap_or("?")
                )),
                None => Err(format!("no certificate in /status: {status}")),
            }
        }),
    );
    Ok(b)
}

/// A plain HTTP/1.1 GET; the body.
fn http_get(to: SocketAddr, path: &str) -> Result<String, String> {
    let head = raw_get(to, path)?;
    Ok(head
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

fn raw_get(to: SocketAddr, path: &str) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&to, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn redirect(http: SocketAddr) -> Result<String, String> {
    let reply = raw_get(http, "/identity/home.htm?x=1")?;
    let status = reply.lines().next().unwrap_or_default().to_owned();
    let location = reply
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or_else(|| l.strip_prefix("location: "))
        })
        .unwrap_or_default()
        .to_owned();
    match status.contains(" 301 ") && location.ends_with("/identity/home.htm?x=1") {
        true => Ok(format!("{status} -> {location}")),
        false => Err(format!("{status}, Location {location:?}")),
    }
}

struct RedisLeg {
    redis: Redis,
    password: PathBuf,
    server: SocketAddr,
    server_conf: String,
    clients: Vec<(SocketAddr, PathBuf)>,
}

fn redis_leg(
    bins: &Bins,
    d: &Path,
    walk: &mut Walk,
    running: &mut Running,
) -> Result<RedisLeg, String> {
    walk.section(
        "Redis: redis-server with requirepass, gluu-tunnel on the Redis host and on each node",
    );
    let rdir = d.join("redis");
    std::fs::create_dir_all(&rdir).map_err(|e| e.to_string())?;
    let redis = Redis::start();
    println!("  redis-server with requirepass on {}", redis.addr());
    let cert = Cert::new(&rdir, "secureredis");
    let password = rdir.join("redis-password");
    write(&password, &format!("{}\n", redis.password))?;
    let globals = |side: &str| {
        format!(
            "pid = {}\noutput = {}\nmetrics = 127.0.0.1:{}",
            rdir.join(format!("{side}.pid")).display(),
            d.join(format!("gluu-tunnel-{side}.log")).display(),
            free_port()
        )
    };
    let server = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let server_conf = rdir.join("redis-server.conf");
    write(
        &server_conf,
        &format!(
            "; the guide's /etc/stunnel/redis-server.conf (Redis host)\n{}",
            guide_conf(
                Side::RedisHost,
                &cert.combined,
                &globals("server"),
                server,
                redis.addr()
            )
        ),
    )?;
    let mut confs = vec![(server, server_conf.clone(), "redis-host".to_owned())];
    let mut clients = Vec::new();
    for i in 1..=2 {
        let accept = SocketAddr::from(([127, 0, 0, 10 + i], free_port()));
        let conf = rdir.join(format!("node{i}-redis-client.conf"));
        write(
            &conf,
            &format!(
                "; the guide's /etc/stunnel/redis-client.conf on node {i}, with client = yes\n{}",
                guide_conf(
                    Side::Node,
                    &cert.combined,
                    &globals(&format!("node{i}")),
                    accept,
                    server
                )
            ),
        )?;
        confs.push((accept, conf.clone(), format!("node{i}")));
        clients.push((accept, conf));
    }
    for (addr, conf, name) in &confs {
        walk.step(
            &format!("gluu-tunnel -t {}", conf.display()),
            run_tool(Command::new(&bins.tunnel).arg("-t").arg(conf)).map(|out| last_line(&out)),
        );
        walk.step(
            &format!("gluu-tunnel ({name}) listening"),
            start(
                running,
                &format!("gluu-tunnel ({name})"),
                Command::new(&bins.tunnel).arg(conf),
                || gluu_testkit::listening(*addr),
            )
            .map(|t| format!("{addr} after {t:?}")),
        );
    }
    for (i, (_, conf)) in clients.iter().enumerate() {
        walk.step(
            &format!(
                "node{}: AUTH + PING through its tunnel (the guide's \"you should get a PONG\")",
                i + 1
            ),
            run_tool(
                Command::new(&bins.tunnel)
                    .arg("check")
                    .arg(conf)
                    .arg("--password-file")
                    .arg(&password),
            ),
        );
    }
    walk.step(
        "a session written through node1's tunnel is read through node2's (one cache for the cluster)",
        (|| {
            let mut one = redis.connect_to(clients[0].0).map_err(|e| e.to_string())?;
            let mut two = redis.connect_to(clients[1].0).map_err(|e| e.to_string())?;
            let value = vec![0x5au8; 1 << 20];
            let start = Instant::now();
            redis::cmd("SET")
                .arg("gluu-box:session")
                .arg(&value)
                .query::<()>(&mut one)
                .map_err(|e| e.to_string())?;
            let got: Vec<u8> = redis::cmd("GET")
                .arg("gluu-box:session")
                .query(&mut two)
                .map_err(|e| e.to_string())?;
            match got == value {
                true => Ok(format!("1 MiB SET + GET in {:?}", start.elapsed())),
                false => Err("the value came back altered".to_owned()),
            }
        })(),
    );

    let rogue_cert = Cert::new(&rdir, "rogue");
    let rogue_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let rogue_conf = rdir.join("rogue-client.conf");
    write(
        &rogue_conf,
        &format!(
            "; a stranger: another certificate, and it verifies nobody itself\n{}",
            guide_conf(
                Side::Node,
                &rogue_cert.combined,
                &format!(
                    "verifyPeer = no\noutput = {}",
                    d.join("gluu-tunnel-rogue.log").display()
                ),
                rogue_addr,
                server
            )
        ),
    )?;
    walk.step(
        "a host holding another certificate (and verifying nobody) starts a tunnel",
        start(
            running,
            "gluu-tunnel (rogue)",
            Command::new(&bins.tunnel).arg(&rogue_conf),
            || gluu_testkit::listening(rogue_addr),
        )
        .map(|t| format!("{rogue_addr} after {t:?}")),
    );
    walk.step(
        "... and the Redis-side tunnel refuses it (pinned to secureredis.pem)",
        match run_tool(
            Command::new(&bins.tunnel)
                .arg("check")
                .arg(&rogue_conf)
                .arg("--password-file")
                .arg(&password),
        ) {
            Ok(out) => Err(format!("it got through: {out}")),
            Err(why) if why.contains("TLS rejected") => Ok(last_line(&why)),
            Err(why) => Err(why),
        },
    );
    if let Some((_, mut rogue)) = running.procs.pop() {
        rogue.terminate(Duration::from_secs(15));
    }
    Ok(RedisLeg {
        redis,
        password,
        server,
        server_conf: server_conf.display().to_string(),
        clients,
    })
}

struct FsyncLeg {
    conf: PathBuf,
    roots: Vec<PathBuf>,
    states: Vec<PathBuf>,
}

/// The guide's seven csync2 includes.
const INCLUDES: [&str; 7] = [
    "opt/gluu-server/opt/gluu/jetty/identity/conf/shibboleth3/idp/",
    "opt/gluu-server/opt/gluu/jetty/identity/conf/shibboleth3/sp/",
    "opt/gluu-server/opt/shibboleth-idp/conf",
    "opt/gluu-server/opt/shibboleth-idp/metadata/",
    "opt/gluu-server/opt/shibboleth-idp/sp/",
    "opt/gluu-server/opt/shibboleth-idp/temp_metadata/",
    "opt/gluu-server/etc/gluu/conf/",
];

fn fsync_leg(
    bins: &Bins,
    d: &Path,
    walk: &mut Walk,
    running: &mut Running,
) -> Result<FsyncLeg, String> {
    walk.section("Files: gluu-fsync on each node with the guide's csync2.cfg");
    let fdir = d.join("fsync");
    let key = fdir.join("csync2.key");
    std::fs::create_dir_all(&fdir).map_err(|e| e.to_string())?;
    walk.step(
        "gluu-fsync keygen (csync2 -k)",
        run_tool(Command::new(&bins.fsync).arg("keygen").arg(&key))
            .map(|_| format!("{} (mode 0600)", key.display())),
    );
    let roots: Vec<PathBuf> = (1..=2).map(|i| d.join(format!("node{i}"))).collect();
    let states: Vec<PathBuf> = (1..=2)
        .map(|i| d.join(format!("node{i}-fsync-state")))
        .collect();
    let ports = [free_port(), free_port()];
    for root in &roots {
        for inc in INCLUDES {
            std::fs::create_dir_all(root.join(inc)).map_err(|e| e.to_string())?;
        }
    }
    let conf = fdir.join("csync2.cfg");
    let includes: String = INCLUDES
        .iter()
        .map(|inc| format!("include %gluu%/{inc};\n"))
        .collect();
    write(
        &conf,
        &format!(
            "# the guide's /etc/csync2.cfg: its group, includes and excludes. For one machine, each\n\
             # node's tree is under its own root (csync2's prefix) and the hosts carry loopback ports.\n\
             prefix gluu\n{{\n  on node1: {r1};\n  on node2: {r2};\n}}\n\
             group gluucluster\n{{\nhost node1@127.0.0.1:{p1};\nhost node2@127.0.0.1:{p2};\n\n\
             key {key};\n{includes}\nexclude *~ .*;\n\
             backup-directory %gluu%/backup;\nbackup-generations 3;\n}}\n",
            r1 = roots[0].display(),
            r2 = roots[1].display(),
            p1 = ports[0],
            p2 = ports[1],
            key = key.display(),
        ),
    )?;
    let fsync = |i: usize| {
        let mut cmd = Command::new(&bins.fsync);
        cmd.arg("-c")
            .arg(&conf)
            .arg("-N")
            .arg(format!("node{}", i + 1))
            .arg("--state-dir")
            .arg(&states[i]);
        cmd
    };
    walk.step(
        "gluu-fsync -t (node1)",
        run_tool(fsync(0).arg("-t")).map(|out| last_line(&out)),
    );
    // What node 1 holds before replication starts (the guide's "primary" node).
    let idp = roots[0].join(INCLUDES[2]).join("idp.properties");
    write(
        &idp,
        "idp.entityID = https://loadbalancer.example.org/idp/shibboleth\n",
    )?;
    let ldap = roots[0].join(INCLUDES[6]).join("ox-ldap.properties");
    write(&ldap, "servers: ldap1:1636,ldap2:1636\n")?;
    let start_daemon = |i: usize, running: &mut Running| {
        let log = d.join(format!("gluu-fsync-node{}.log", i + 1));
        let _ = std::fs::remove_file(states[i].join("control.sock"));
        start(
            running,
            &format!("gluu-fsync (node{})", i + 1),
            fsync(i).arg("daemon").arg("--log").arg(&log),
            || states[i].join("control.sock").exists(),
        )
    };
    for (i, port) in ports.iter().enumerate() {
        walk.step(
            &format!("gluu-fsync daemon (node{})", i + 1),
            start_daemon(i, running).map(|t| format!("serving on 127.0.0.1:{port} after {t:?}")),
        );
    }
    let on2 = |p: &Path| roots[1].join(p.strip_prefix(&roots[0]).expect("under node1"));
    walk.step(
        "node1's files reach node2 at start (what csync2 -xvvv did by hand)",
        poll(
            LIMIT,
            "idp.properties and ox-ldap.properties on node2",
            || (on2(&idp).exists() && on2(&ldap).exists()).then_some(()),
        )
        .map(|()| format!("{} and {}", on2(&idp).display(), on2(&ldap).display())),
    );
    let salt = roots[0].join(INCLUDES[6]).join("salt");
    walk.step(
        "a file written on node1 appears on node2",
        (|| {
            let start = Instant::now();
            write(&salt, "encodeSalt = 1b2e3c4d\n")?;
            poll(Duration::from_secs(5), "salt on node2", || {
                (std::fs::read_to_string(on2(&salt)).ok()? == "encodeSalt = 1b2e3c4d\n")
                    .then_some(())
            })?;
            Ok(format!(
                "after {:?} (csync2 from cron: up to 5 minutes)",
                start.elapsed()
            ))
        })(),
    );

    // A conflict: node2's daemon down while both nodes change the same file.
    let node2_index = running
        .procs
        .iter()
        .position(|(n, _)| n == "gluu-fsync (node2)")
        .ok_or("node2's daemon is not running")?;
    let (_, mut node2) = running.procs.remove(node2_index);
    node2.terminate(Duration::from_secs(15));
    let mine = "encodeSalt = node1-version\n";
    let theirs = "encodeSalt = node2-version\n";
    write(&salt, mine)?;
    write(&on2(&salt), theirs)?;
    walk.step(
        "node2's daemon stopped; salt changed on both nodes; node2's daemon back",
        start_daemon(1, running).map(|t| format!("up again after {t:?}")),
    );
    walk.step(
        "gluu-fsync conflicts (node1) lists it (the guide's file has no auto: nobody wins by itself)",
        poll(LIMIT, "a conflict on salt", || {
            let out = fsync(0).arg("conflicts").output().ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (out.status.code() == Some(2) && text.contains("salt")).then_some(text)
        })
        .map(|text| last_line(&text)),
    );
    walk.step(
        "gluu-fsync force (node1): its version wins on node2 (csync2 -f)",
        (|| {
            let start = Instant::now();
            run_tool(fsync(0).arg("force").arg(&salt))?;
            poll(LIMIT, "node1's version on node2", || {
                (std::fs::read_to_string(on2(&salt)).ok()? == mine).then_some(())
            })?;
            let kept = find_content(&roots[1].join("backup"), theirs.as_bytes());
            match kept.first() {
                Some(p) => Ok(format!(
                    "after {:?}; node2's version kept in {}",
                    start.elapsed(),
                    p.display()
                )),
                None => Err("node2's version is not in its backup directory".to_owned()),
            }
        })(),
    );
    walk.step(
        "gluu-fsync test (node1): the nodes agree (csync2 -T)",
        poll(LIMIT, "test to exit 0", || {
            run_tool(fsync(0).arg("test")).ok()
        })
        .map(|out| {
            if out.is_empty() {
                "in sync".to_owned()
            } else {
                last_line(&out)
            }
        }),
    );
    Ok(FsyncLeg {
        conf,
        roots,
        states,
    })
}
