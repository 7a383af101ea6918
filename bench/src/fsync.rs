//! `gluu-bench fsync`: gluu-fsync against Debian's csync2 on the same trees, two nodes on
//! loopback (127.0.0.2 and 127.0.0.3, as the guide names its hosts by address), one run:
//! the initial sync of small files plus a few large ones, a change to 10 files, a pass with
//! nothing changed over 10,000 files, and for the daemon the delay from a write on one node
//! to the file being in place on the other, and its idle CPU.
//!
//! csync2 runs as the guide runs it: a server (`-ii`, inetd's job) on the receiving node and
//! `csync2 -x` on the sending node, with SSL and a key made by `gluu-fsync keygen` (the same
//! format as `csync2 -k`). gluu-fsync runs its daemon on the receiving node and
//! `gluu-fsync sync` (csync2 -x's job) on the sending one; then daemons on both for the delay.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gluu_testkit::{Proc, free_port, require, wait_for};

use super::{cpu_ticks, median, sibling};

const A: &str = "127.0.0.2";
const B: &str = "127.0.0.3";

/// Deterministic content: `len` bytes from `seed`.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Write `count` small files (1-8 KB) numbered from `first` under `root/conf/dNN/`.
fn small_files(roots: &[&Path], first: usize, count: usize) {
    for i in first..first + count {
        let rel = format!("conf/d{:02}/f{i:05}.xml", i % 50);
        let data = content(i as u64, 1024 + (i * 997) % 7168);
        for root in roots {
            let path = root.join(&rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, &data).expect("write");
        }
    }
}

/// Every file under `dir` with its blake3, relative paths, sorted.
fn manifest(dir: &Path) -> Vec<(PathBuf, [u8; 32])> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(PathBuf, [u8; 32])>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(base, &path, out);
            } else if let Ok(bytes) = std::fs::read(&path) {
                let rel = path.strip_prefix(base).expect("under base").to_path_buf();
                out.push((rel, *blake3::hash(&bytes).as_bytes()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn assert_same(a: &Path, b: &Path, what: &str) {
    let (ma, mb) = (manifest(a), manifest(b));
    assert!(
        ma == mb,
        "{what}: {} and {} differ ({} vs {} files)",
        a.display(),
        b.display(),
        ma.len(),
        mb.len()
    );
}

/// Run a command to completion and return how long it took; panics with its output if it
/// fails.
fn timed(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let out = cmd.output().expect("run");
    let took = start.elapsed();
    assert!(
        out.status.success() || out.status.code() == Some(2),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// The guide's SSL files for csync2 (fixed paths in csync2), made only if absent.
fn csync2_ssl() {
    let (key, cert) = ("/etc/csync2_ssl_key.pem", "/etc/csync2_ssl_cert.pem");
    if Path::new(key).exists() && Path::new(cert).exists() {
        return;
    }
    let openssl = require("openssl");
    let ok = Command::new(openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=csync2",
        ])
        .args(["-keyout", key, "-out", cert])
        .output()
        .expect("openssl")
        .status
        .success();
    assert!(ok, "cannot make csync2's SSL certificate");
}

struct Csync2 {
    name: String,
    config: PathBuf,
    port: u16,
    dir: PathBuf,
}

impl Csync2 {
    fn cmd(&self, node: &str) -> Command {
        let mut cmd = Command::new(require("csync2"));
        cmd.args([
            "-C",
            &self.name,
            "-N",
            node,
            "-p",
            &self.port.to_string(),
            "-D",
        ])
        .arg(self.dir.join(format!("db-{node}")));
        cmd
    }
}

impl Drop for Csync2 {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

pub fn run(files: usize, big: usize, idle_files: usize, changes: usize) {
    let bin = sibling("gluu-fsync");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = |tool: &str, node: &str| dir.path().join(tool).join(node);
    let key = dir.path().join("csync2.key");
    Command::new(&bin)
        .arg("keygen")
        .arg(&key)
        .status()
        .expect("keygen");

    // csync2: config in /etc (its -C NAME means /etc/csync2_NAME.cfg), removed at the end.
    csync2_ssl();
    let csync2 = Csync2 {
        name: format!("gluubench{}", std::process::id()),
        config: PathBuf::from(format!("/etc/csync2_gluubench{}.cfg", std::process::id())),
        port: free_port(),
        dir: dir.path().join("csync2-state"),
    };
    for node in [A, B] {
        std::fs::create_dir_all(csync2.dir.join(format!("db-{node}"))).expect("mkdir");
        std::fs::create_dir_all(root("csync2", node).join("conf")).expect("mkdir");
        std::fs::create_dir_all(root("fsync", node).join("conf")).expect("mkdir");
    }
    let cfg = |tool: &str, hosts: &str| {
        format!(
            "prefix root {{\n  on {A}: {};\n  on {B}: {};\n}}\ngroup bench {{\n  host {hosts};\n  key {};\n  include %root%/conf;\n  exclude *~ .*;\n}}\n",
            root(tool, A).display(),
            root(tool, B).display(),
            key.display()
        )
    };
    std::fs::write(&csync2.config, cfg("csync2", &format!("{A} {B}"))).expect("write");
    let (pa, pb) = (free_port(), free_port());
    let fsync_cfg = dir.path().join("fsync.cfg");
    std::fs::write(
        &fsync_cfg,
        cfg("fsync", &format!("{A}@{A}:{pa} {B}@{B}:{pb}")),
    )
    .expect("write");
    let fsync = |node: &str| {
        let mut cmd = Command::new(&bin);
        cmd.arg("-c")
            .arg(&fsync_cfg)
            .args(["-N", node, "--state-dir"])
            .arg(dir.path().join("fsync").join(format!("state-{node}")));
        cmd
    };
    let daemon = |node: &str| {
        let mut proc = Proc::spawn(fsync(node).args(["daemon", "--rescan-secs", "3600"]));
        proc.wait_line("gluu-fsync ready", Duration::from_secs(60));
        proc
    };

    let mut csync2_server = Proc::spawn(csync2.cmd(B).arg("-ii"));
    wait_for(Duration::from_secs(10), "csync2 -ii listening", || {
        gluu_testkit::listening(format!("{B}:{}", csync2.port).parse().ok()?).then_some(())
    });
    let fsync_b = daemon(B);

    let (ca, cb) = (root("csync2", A), root("csync2", B));
    let (fa, fb) = (root("fsync", A), root("fsync", B));
    println!("== gluu-bench fsync: gluu-fsync vs csync2 (two nodes on loopback, same trees)");
    let report = |what: &str, theirs: Duration, ours: Duration| {
        println!(
            "{what:<60} csync2 {:>9.3} s   gluu-fsync {:>8.3} s   {:>6.1}x",
            theirs.as_secs_f64(),
            ours.as_secs_f64(),
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    };

    // 1. Initial sync.
    small_files(&[&ca, &fa], 0, files);
    for i in 0..big {
        let data = content(1_000_000 + i as u64, 20 << 20);
        for r in [&ca, &fa] {
            std::fs::write(r.join(format!("conf/big{i}.bin")), &data).expect("write");
        }
    }
    let theirs = timed(csync2.cmd(A).arg("-x"));
    assert_same(&ca.join("conf"), &cb.join("conf"), "csync2 initial sync");
    let ours = timed(fsync(A).arg("sync"));
    assert_same(
        &fa.join("conf"),
        &fb.join("conf"),
        "gluu-fsync initial sync",
    );
    report(
        &format!("initial sync: {files} files of 1-8 KB + {big} x 20 MB"),
        theirs,
        ours,
    );

    // 2. A change to 10 files.
    for i in 0..10 {
        let rel = format!("conf/d{:02}/f{i:05}.xml", i % 50);
        let data = content(5_000_000 + i, 2048);
        for r in [&ca, &fa] {
            std::fs::write(r.join(&rel), &data).expect("write");
        }
    }
    let theirs = timed(csync2.cmd(A).arg("-x"));
    assert_same(&ca.join("conf"), &cb.join("conf"), "csync2 10 changes");
    let ours = timed(fsync(A).arg("sync"));
    assert_same(&fa.join("conf"), &fb.join("conf"), "gluu-fsync 10 changes");
    report("propagate a change to 10 files (one pass)", theirs, ours);

    // 3. Nothing changed, 10,000 files.
    let more = idle_files.saturating_sub(files + big);
    small_files(&[&ca, &fa], files, more);
    timed(csync2.cmd(A).arg("-x"));
    timed(fsync(A).arg("sync"));
    assert_same(
        &ca.join("conf"),
        &cb.join("conf"),
        "csync2 before the idle pass",
    );
    assert_same(
        &fa.join("conf"),
        &fb.join("conf"),
        "gluu-fsync before the idle pass",
    );
    let total = files + big + more;
    let passes = |fsync_cmd: &mut dyn FnMut() -> Duration| {
        let (mut t, mut o) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            t.push(timed(csync2.cmd(A).arg("-x")).as_secs_f64());
            o.push(fsync_cmd().as_secs_f64());
        }
        (
            Duration::from_secs_f64(median(t)),
            Duration::from_secs_f64(median(o)),
        )
    };
    // A new gluu-fsync process per pass, as cron runs csync2 -x.
    let (theirs, ours) = passes(&mut || timed(fsync(A).arg("sync")));
    report(
        &format!("nothing changed, {total} files, new process (median of 5)"),
        theirs,
        ours,
    );
    // With the daemon running on A (how gluu-fsync is deployed): `sync` asks it.
    let fsync_a = daemon(A);
    let (theirs, ours) = passes(&mut || timed(fsync(A).arg("sync")));
    report(
        &format!("nothing changed, {total} files, via the daemon (median of 5)"),
        theirs,
        ours,
    );
    let _ = csync2_server.child.kill();

    // 4. The daemon: write on A, in place on B.
    std::fs::create_dir_all(fa.join("conf/delay")).expect("mkdir");
    let target = fb.join("conf/delay");
    wait_for(Duration::from_secs(10), "the delay directory on B", || {
        target.is_dir().then_some(())
    });
    let mut delays = Vec::with_capacity(changes);
    for i in 0..changes {
        let data = content(9_000_000 + i as u64, 4096);
        let dest = target.join(format!("c{i}.xml"));
        let start = Instant::now();
        std::fs::write(fa.join(format!("conf/delay/c{i}.xml")), &data).expect("write");
        let deadline = start + Duration::from_secs(10);
        loop {
            if std::fs::read(&dest).is_ok_and(|b| b == data) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "change {i} did not arrive in 10 s"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        delays.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    delays.sort_by(f64::total_cmp);
    let pct = |p: f64| delays[((delays.len() as f64 * p) as usize).min(delays.len() - 1)];
    println!(
        "{:<60} csync2 {:>9}     gluu-fsync p50 {:.1} ms, p99 {:.1} ms",
        format!("write on A -> in place on B ({changes} changes)"),
        "cron: 300 s",
        pct(0.50),
        pct(0.99)
    );

    // 5. Idle CPU of both daemons.
    let pids = [fsync_a.pid(), fsync_b.pid()];
    let hz = 100.0;
    let before = cpu_ticks(&pids);
    let idle = Duration::from_secs(10);
    std::thread::sleep(idle);
    let used = (cpu_ticks(&pids) - before) as f64 / hz;
    println!(
        "{:<60} {:.2}% of one core per daemon ({} ticks over {:?})",
        "idle CPU, two daemons watching 10,000 files",
        used / idle.as_secs_f64() / 2.0 * 100.0,
        cpu_ticks(&pids) - before,
        idle
    );
}
