//! `gluu-bench`: gluu-ha's daemons against the programs they replace, side by side in one
//! run on one machine. See bench/BENCHMARKING.md.
//!
//! `gluu-bench tunnel` runs Debian's redis-benchmark against a real redis-server three ways
//! (directly, through a stunnel client/server pair, through a gluu-tunnel pair, both pairs
//! with the same ECDSA P-256 certificate and both logging to a file) and prints ops/s and
//! the ratios; then it holds 1,000 idle tunneled connections through each pair and compares
//! the tunnels' peak resident memory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod fsync;
mod lb;

use clap::{Parser, Subcommand};
use gluu_testkit::{Cert, Proc, Redis, Side, free_port, guide_conf, require, stunnel, wait_for};

#[derive(Parser, Debug)]
#[command(
    name = "gluu-bench",
    version,
    about = "gluu-ha against the real nginx, stunnel and csync2, side by side"
)]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// redis-benchmark direct, through stunnel, through gluu-tunnel; idle-connection memory.
    Tunnel {
        /// Requests per redis-benchmark run at -P 1 (at -P 16: ten times as many).
        #[arg(long, default_value_t = 100_000)]
        requests: u64,
        /// Requests in the connection-churn runs (a new connection per request).
        #[arg(long, default_value_t = 5_000)]
        churn_requests: u64,
        /// Idle tunneled connections held for the memory comparison.
        #[arg(long, default_value_t = 1_000)]
        idle: usize,
        /// Bytes per SET/GET value (redis-benchmark's `-d`). Gluu's session and token
        /// entries run to several KB; a value over 4 KiB spans more than one rustls read.
        #[arg(long, default_value_t = 64)]
        value_size: usize,
        /// Rounds per case; each prints the median. Rounds alternate the three targets so
        /// that drift on a shared machine touches all of them alike.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// wrk and h2load through nginx (the guide's file, and with upstream keep-alive) and
    /// gluu-lb (the guide's file); idle-connection memory.
    Lb {
        /// Seconds per wrk run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Rounds per case; each prints the median.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Idle TLS client connections held for the memory comparison.
        #[arg(long, default_value_t = 5_000)]
        idle: usize,
        /// Requests per h2load run. nginx closes an HTTP/2 connection after 1,000 requests
        /// (`http2_max_requests`) and h2load counts the rest as failed: keep this under
        /// 64,000 (h2load's 64 connections x 1,000).
        #[arg(long, default_value_t = 50_000)]
        h2_requests: u64,
        /// Run only the cases whose name contains this (`keep-alive`, `new connection`,
        /// `HTTP/2`); all of them when absent.
        #[arg(long)]
        case: Option<String>,
        /// Another gluu-lb binary (an earlier build, say): compare gluu-lb with it alone,
        /// both loaded at the same time (the nginx targets are not started).
        #[arg(long)]
        baseline: Option<std::path::PathBuf>,
    },
    /// gluu-fsync against csync2 on the same trees: initial sync, 10 changes, a pass with
    /// nothing changed, and the daemon's write-to-in-place delay and idle CPU.
    Fsync {
        /// Small files (1-8 KB) in the initial sync.
        #[arg(long, default_value_t = 2_000)]
        files: usize,
        /// 20 MB files in the initial sync.
        #[arg(long, default_value_t = 5)]
        big: usize,
        /// Files in the tree for the nothing-changed pass.
        #[arg(long, default_value_t = 10_000)]
        idle_files: usize,
        /// Changes timed through the daemons.
        #[arg(long, default_value_t = 200)]
        changes: usize,
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Bench::Tunnel {
            requests,
            churn_requests,
            idle,
            value_size,
            rounds,
        } => tunnel(&TunnelOptions {
            requests,
            churn: churn_requests,
            idle,
            value_size,
            rounds: rounds.max(1),
        }),
        Bench::Lb {
            seconds,
            rounds,
            idle,
            h2_requests,
            case,
            baseline,
        } => lb::run(&lb::Options {
            seconds,
            rounds: rounds.max(1),
            idle,
            h2_requests,
            case,
            baseline,
        }),
        Bench::Fsync {
            files,
            big,
            idle_files,
            changes,
        } => fsync::run(files, big, idle_files, changes.max(1)),
    }
}

/// One redis-benchmark configuration.
struct Case {
    name: &'static str,
    args: String,
    requests: u64,
}

fn cases(requests: u64, churn: u64, value_size: usize) -> Vec<Case> {
    let case = |name, args: &str, requests| Case {
        name,
        args: format!("{args} -n {requests} -d {value_size}"),
        requests,
    };
    vec![
        case("SET -c 50 -P 1", "-t set -c 50 -P 1", requests),
        case("GET -c 50 -P 1", "-t get -c 50 -P 1", requests),
        case("SET -c 50 -P 16", "-t set -c 50 -P 16", requests * 10),
        case("GET -c 50 -P 16", "-t get -c 50 -P 16", requests * 10),
        // A new connection for every request: what a client without a pool costs.
        case("churn -c 1 -k 0 (conn/s)", "-t ping_mbulk -c 1 -k 0", churn),
        case(
            "churn -c 50 -k 0 (conn/s)",
            "-t ping_mbulk -c 50 -k 0",
            churn * 4,
        ),
    ]
}

/// CPU time (user + system) the processes have used so far, in clock ticks.
fn cpu_ticks(pids: &[i32]) -> u64 {
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the parenthesised command name; utime and stime are 14th and 15th.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let f: Vec<&str> = rest.split_whitespace().collect();
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            n(11) + n(12)
        })
        .sum()
}

/// Runs redis-benchmark against `addr` and returns requests per second.
fn redis_benchmark(addr: SocketAddr, password: &str, case: &Case) -> f64 {
    let out = Command::new(require("redis-benchmark"))
        .args([
            "-h",
            &addr.ip().to_string(),
            "-p",
            &addr.port().to_string(),
            "-a",
            password,
        ])
        .arg("--csv")
        .args(case.args.split_whitespace())
        .output()
        .expect("run redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "redis-benchmark failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // CSV: "test","rps",... ; the header line has "rps" in its second field.
    text.lines()
        .filter_map(|l| l.split(',').nth(1))
        .find_map(|f| f.trim_matches('"').parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no rate in redis-benchmark output: {text}"))
}

/// The peak and current resident set of these processes together, in KiB.
fn rss_kib(pids: &[i32]) -> (u64, u64) {
    let (mut hwm, mut rss) = (0, 0);
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        hwm += field("VmHWM:");
        rss += field("VmRSS:");
    }
    (hwm, rss)
}

/// Opens `n` connections through a tunnel and runs AUTH + PING on each, so every leg (client
/// tunnel, TLS, server tunnel, Redis) is established, and keeps them open.
fn hold_idle(addr: SocketAddr, password: &str, n: usize) -> Vec<TcpStream> {
    let auth = format!(
        "*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n*1\r\n$4\r\nPING\r\n",
        password.len()
    );
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).expect("connect through the tunnel");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(auth.as_bytes()).expect("auth");
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while !got.ends_with(b"+PONG\r\n") {
            let k = s.read(&mut buf).expect("reply");
            assert!(k > 0, "tunnel closed an idle-test connection");
            got.extend_from_slice(&buf[..k]);
        }
        conns.push(s);
    }
    conns
}

struct Pair {
    name: &'static str,
    entry: SocketAddr,
    pids: Vec<i32>,
    _procs: Vec<Proc>,
}

fn gluu_pair(bin: &Path, dir: &Path, cert: &Cert, redis: SocketAddr) -> Pair {
    let (sport, cport) = (free_port(), free_port());
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write config");
        p
    };
    let log = |name: &str| format!("pid =\noutput = {}", dir.join(name).display());
    let server = write(
        "gluu-server.conf",
        guide_conf(
            Side::RedisHost,
            &cert.combined,
            &log("gluu-server.log"),
            format!("127.0.0.1:{sport}"),
            redis,
        ),
    );
    let client = write(
        "gluu-client.conf",
        guide_conf(
            Side::Node,
            &cert.combined,
            &log("gluu-client.log"),
            format!("127.0.0.1:{cport}"),
            format!("127.0.0.1:{sport}"),
        ),
    );
    let procs: Vec<Proc> = [(server, sport), (client, cport)]
        .into_iter()
        .map(|(conf, port)| {
            let p = Proc::spawn(Command::new(bin).arg(conf));
            wait_for(Duration::from_secs(20), "gluu-tunnel to listen", || {
                gluu_testkit::listening(([127, 0, 0, 1], port).into()).then_some(())
            });
            p
        })
        .collect();
    Pair {
        name: "gluu-tunnel",
        entry: ([127, 0, 0, 1], cport).into(),
        pids: procs.iter().map(Proc::pid).collect(),
        _procs: procs,
    }
}

fn stunnel_pair(dir: &Path, cert: &Cert, redis: SocketAddr) -> Pair {
    let (sport, cport) = (free_port(), free_port());
    // The guide's two files, with `client = yes` on the node side; logging to a file, as
    // gluu-tunnel does, at stunnel's default level.
    let (server_addr, client_addr) = (
        SocketAddr::from(([127, 0, 0, 1], sport)),
        SocketAddr::from(([127, 0, 0, 1], cport)),
    );
    let server = stunnel(
        dir,
        "stunnel-server",
        &guide_conf(Side::RedisHost, &cert.combined, "", server_addr, redis),
        server_addr,
    );
    let client = stunnel(
        dir,
        "stunnel-client",
        &guide_conf(Side::Node, &cert.combined, "", client_addr, server_addr),
        client_addr,
    );
    let procs = vec![server, client];
    Pair {
        name: "stunnel",
        entry: ([127, 0, 0, 1], cport).into(),
        pids: procs.iter().map(Proc::pid).collect(),
        _procs: procs,
    }
}

fn raise_fd_limit(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < want
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard);
    }
}

fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let p = exe.with_file_name(name);
    assert!(
        p.exists(),
        "{} not found: cargo build --release --workspace first",
        p.display()
    );
    p
}

/// The machine's cores, as the benchmarks' first line reports them.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `gluu-bench tunnel`'s command line.
#[derive(Debug)]
struct TunnelOptions {
    requests: u64,
    churn: u64,
    idle: usize,
    value_size: usize,
    rounds: usize,
}

fn tunnel(opts: &TunnelOptions) {
    let &TunnelOptions {
        requests,
        churn,
        idle,
        value_size,
        rounds,
    } = opts;
    raise_fd_limit(16_384);
    let bin = sibling("gluu-tunnel");
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start();
    let cert = Cert::new(dir.path(), "secureredis");
    // The first line naming the program (stunnel prints a note about inetd mode first).
    let version = |cmd: &str, arg: &str, word: &str| -> String {
        let out = Command::new(cmd).arg(arg).output().map(|o| {
            let t = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            t.lines()
                .find(|l| l.contains(word))
                .unwrap_or_default()
                .to_owned()
        });
        out.unwrap_or_default()
    };
    println!(
        "gluu-bench tunnel: {} cores; {}; {}; {}",
        cores(),
        version("redis-server", "--version", "Redis"),
        version("stunnel", "-version", "stunnel "),
        version(
            bin.to_str().unwrap_or("gluu-tunnel"),
            "--version",
            "gluu-tunnel"
        )
    );
    println!(
        "certificate: ECDSA P-256 (rcgen), one file for both sides of both pairs; value size {value_size} bytes"
    );
    println!("each figure: ops/s, median of {rounds} rounds\n");

    let stunnel = stunnel_pair(dir.path(), &cert, redis.addr());
    let gluu = gluu_pair(&bin, dir.path(), &cert, redis.addr());
    let targets: [(&str, SocketAddr, &[i32]); 3] = [
        ("direct", redis.addr(), &[]),
        (stunnel.name, stunnel.entry, &stunnel.pids),
        (gluu.name, gluu.entry, &gluu.pids),
    ];
    let ticks_per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;

    let mut fresh = None;
    for case in cases(requests, churn, value_size) {
        let mut samples = vec![Vec::with_capacity(rounds); targets.len()];
        let mut ticks = vec![0u64; targets.len()];
        for _ in 0..rounds {
            for (t, (_, addr, pids)) in targets.iter().enumerate() {
                let before = cpu_ticks(pids);
                samples[t].push(redis_benchmark(*addr, &redis.password, &case));
                ticks[t] += cpu_ticks(pids) - before;
            }
        }
        let rates: Vec<f64> = samples.into_iter().map(median).collect();
        // CPU the two tunnel processes spent per request, in microseconds.
        let cpu = |t: usize| {
            ticks[t] as f64 / ticks_per_sec * 1e6 / (case.requests * rounds as u64) as f64
        };
        println!(
            "{:<26} direct {:>9.0}  stunnel {:>8.0}  gluu-tunnel {:>8.0}  gluu/stunnel {:>4.2}x  gluu/direct {:>4.2}  tunnel CPU/req: stunnel {:>4.0} us, gluu {:>4.0} us",
            case.name,
            rates[0],
            rates[1],
            rates[2],
            rates[2] / rates[1],
            rates[2] / rates[0],
            cpu(1),
            cpu(2)
        );
        if case.name.starts_with("churn -c 1") {
            fresh = Some(rates);
        }
    }
    if let Some(rates) = fresh {
        println!(
            "\nfresh connection + PING, serial: direct {:.3} ms, stunnel {:.3} ms, gluu-tunnel {:.3} ms ({:.2}x faster than stunnel)",
            1000.0 / rates[0],
            1000.0 / rates[1],
            1000.0 / rates[2],
            rates[2] / rates[1]
        );
    }

    println!("\nmemory with {idle} idle tunneled connections (client + server tunnel processes):");
    let mut peaks = Vec::new();
    for pair in [&stunnel, &gluu] {
        let start = Instant::now();
        let conns = hold_idle(pair.entry, &redis.password, idle);
        let (hwm, rss) = rss_kib(&pair.pids);
        println!(
            "  {:<12} peak RSS {:>7.1} MiB, now {:>7.1} MiB  ({} connections opened in {:.2?})",
            pair.name,
            hwm as f64 / 1024.0,
            rss as f64 / 1024.0,
            conns.len(),
            start.elapsed()
        );
        peaks.push(hwm);
        drop(conns);
    }
    println!(
        "  gluu-tunnel / stunnel peak RSS: {:.2}",
        peaks[1] as f64 / peaks[0] as f64
    );
}
