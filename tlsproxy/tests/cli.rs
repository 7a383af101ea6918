//! The `gluu-tunnel` binary as an admin uses it: `-t` on the guide's files and on every
//! class of bad configuration, the guide's files running unchanged, `check`, signals, the
//! pid file and dropping privileges.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use gluu_testkit::{
    Cert, NotifySocket, Proc, Redis, Side, free_port, guide_conf, text_of, wait_for,
};

/// What every test starts from: its own directory, a real Redis with `requirepass`, and
/// the guide's shared `secureredis.pem`.
struct Site {
    dir: tempfile::TempDir,
    redis: Redis,
    cert: Cert,
}

fn site() -> Site {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start();
    let cert = Cert::new(dir.path(), "secureredis");
    Site { dir, redis, cert }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gluu-tunnel"))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

fn test_mode(path: &Path) -> (i32, String) {
    let out = bin().arg("-t").arg(path).output().expect("run -t");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The guide's redis-server.conf with paths and addresses changed.
fn guide_server(cert: &Path, accept: u16, redis: SocketAddr, pid: &Path) -> String {
    let pid = format!("pid = {}", pid.display());
    guide_conf(
        Side::RedisHost,
        cert,
        &pid,
        format!("127.0.0.1:{accept}"),
        redis,
    )
}

/// The guide's redis-client.conf with `client = yes` added.
fn guide_client(cert: &Path, accept: u16, server: u16) -> String {
    guide_conf(
        Side::Node,
        cert,
        "pid =",
        format!("127.0.0.1:{accept}"),
        format!("127.0.0.1:{server}"),
    )
}

fn spawn(config: &Path) -> Proc {
    let mut p = Proc::spawn(bin().arg(config));
    p.listening_addr("redis");
    p
}

fn check(config: &Path, password: Option<&Path>) -> Output {
    let mut cmd = bin();
    cmd.arg("check").arg(config).env_remove("REDISCLI_AUTH");
    if let Some(p) = password {
        cmd.arg("--password-file").arg(p);
    }
    cmd.output().expect("run check")
}

#[test]
fn test_mode_accepts_the_guides_files_and_flags_the_missing_client_yes() {
    let Site { dir, cert, .. } = site();
    let server = write(
        dir.path(),
        "redis-server.conf",
        &guide_server(
            &cert.combined,
            16379,
            "127.0.0.1:6379".parse().expect("a"),
            &dir.path().join("s.pid"),
        ),
    );
    let (code, err) = test_mode(&server);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("test is successful"), "{err}");
    assert!(
        err.contains("pinned to the key of certificate sha256"),
        "{err}"
    );
    assert!(!err.contains("warning"), "{err}");
    // The node-side file exactly as the guide writes it: no `client = yes`.
    let node = write(
        dir.path(),
        "redis-client.conf",
        &format!(
            "cert = {}\npid = /var/run/stunnel.pid\n[redis]\naccept = 127.0.0.2:16379\nconnect = 192.0.2.7:16379\n",
            cert.combined.display()
        ),
    );
    let (code, err) = test_mode(&node);
    assert_eq!(code, 0, "it would start, as stunnel does: {err}");
    assert!(err.contains("redis-client.conf:3: warning:"), "{err}");
    assert!(err.contains("add `client = yes`"), "{err}");
}

#[test]
fn test_mode_rejects_every_error_class_with_file_and_line() {
    let Site { dir, cert, .. } = site();
    let weak = Cert::openssl_rsa(dir.path(), "weak", 1024);
    let strong = Cert::openssl_rsa(dir.path(), "strong", 2048);
    let ok = |extra: &str, cert: &Path| {
        format!(
            "cert = {}\n[redis]\naccept = 1\nconnect = 2\n{extra}",
            cert.display()
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (
            ok("bogus = 1\n", &cert.combined),
            "t.conf:5: unknown option 'bogus'",
        ),
        (
            ok("accept = nowhere:x\n", &cert.combined),
            "t.conf:5: option 'accept': bad value",
        ),
        (
            ok("sslVersion = TLSv1\n", &cert.combined),
            "rustls speaks only TLSv1.2 and TLSv1.3",
        ),
        (
            ok("options = NO_SSLv3\n", &cert.combined),
            "cannot honour OpenSSL option and curve strings",
        ),
        (
            ok("ciphers = DHE-RSA-AES256-GCM-SHA384:RC4\n", &cert.combined),
            "t.conf:5: option 'ciphers': bad value `DHE-RSA-AES256-GCM-SHA384:RC4`: it selects none",
        ),
        (
            ok("PSKsecrets = /etc/psk\n", &cert.combined),
            "pre-shared keys",
        ),
        (
            ok("", Path::new("/nonexistent/secureredis.pem")),
            "t.conf:1: [redis] /nonexistent/secureredis.pem: cannot read",
        ),
        (ok("", &weak.combined), "shorter than 2048 bits"),
        (ok("", &cert.cert), "holds no private key"),
        (
            ok("checkHost = redis\n", &cert.combined),
            "`checkHost` needs `verifyChain = yes`",
        ),
        (
            ok("verifyChain = yes\n", &cert.combined),
            "`verifychain` needs `CAfile`",
        ),
    ];
    for (config, want) in cases {
        let path = write(dir.path(), "t.conf", &config);
        let (code, err) = test_mode(&path);
        assert_eq!(code, 64, "{config}\n{err}");
        assert!(err.contains(want), "want {want:?} in:\n{err}");
        assert!(err.contains("test failed"), "{err}");
    }
    // The weak key's message says how to make a good one.
    let (_, err) = test_mode(&write(dir.path(), "t.conf", &ok("", &weak.combined)));
    assert!(err.contains("openssl req -x509 -newkey ec"), "{err}");
    // The same recipe with 2048 bits is fine.
    let (code, err) = test_mode(&write(dir.path(), "t.conf", &ok("", &strong.combined)));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn test_mode_warns_about_accepting_anyone() {
    let Site { dir, cert, .. } = site();
    let path = write(
        dir.path(),
        "t.conf",
        &format!(
            "cert = {}\nverifyPeer = no\nrequireCert = no\n[redis]\naccept = 1\nconnect = 2\n",
            cert.combined.display()
        ),
    );
    let (code, err) = test_mode(&path);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("verifies no peer"), "{err}");
    assert!(err.contains("NO VERIFICATION"), "{err}");
}

#[test]
fn test_mode_warns_of_ciphers_the_certificate_cannot_use() {
    let Site { dir, cert, .. } = site();
    let conf = |ciphers: &str| {
        format!(
            "cert = {}\n[redis]\naccept = 1\nconnect = 2\n{ciphers}\n",
            cert.combined.display()
        )
    };
    // The test certificate has an ECDSA key.
    let (code, err) = test_mode(&write(dir.path(), "t.conf", &conf("ciphers = aRSA")));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("t.conf:5: warning: [redis] `ciphers`: none of the TLS 1.2 suites chosen")
            && err.contains("TLS 1.2 peers cannot connect (TLS 1.3 ones can)"),
        "{err}"
    );
    let (_, err) = test_mode(&write(dir.path(), "t.conf", &conf("ciphers = ECDSA")));
    assert!(!err.contains("`ciphers`"), "{err}");
}

#[test]
fn test_mode_warns_of_a_certificate_near_or_past_its_end() {
    let Site { dir, redis, .. } = site();
    let day = 86_400;
    for (seconds, said) in [(5 * day + 600, "expires on "), (-400 * day, "expired on ")] {
        // The guide's `openssl req -x509 ... -days 365`, a year on.
        let cert = Cert::ending_in(dir.path(), "secureredis", seconds);
        let pid = dir.path().join("s.pid");
        let conf = guide_server(&cert.combined, 16379, redis.addr(), &pid);
        let (code, err) = test_mode(&write(dir.path(), "redis-server.conf", &conf));
        assert_eq!(code, 0, "stunnel starts with it too: {err}");
        let line = err
            .lines()
            .find(|l| l.contains("[redis] certificate "))
            .unwrap_or_else(|| panic!("no warning for {seconds} s: {err}"));
        assert!(
            line.contains("redis-server.conf:")
                && line.contains(&cert.combined.display().to_string())
                && line.contains(said),
            "{line}"
        );
    }
}

#[test]
fn guide_files_run_unchanged_and_check_says_pong() {
    let Site {
        dir,
        mut redis,
        cert,
    } = site();
    let (sport, cport) = (free_port(), free_port());
    let pid = dir.path().join("server.pid");
    let server_conf = write(
        dir.path(),
        "redis-server.conf",
        &guide_server(&cert.combined, sport, redis.addr(), &pid),
    );
    let client_conf = write(
        dir.path(),
        "redis-client.conf",
        &guide_client(&cert.combined, cport, sport),
    );
    let _server = spawn(&server_conf);
    let _client = spawn(&client_conf);
    let password = write(dir.path(), "password", &format!("{}\n", Redis::PASSWORD));

    let out = check(&client_conf, Some(&password));
    assert!(out.status.success(), "{}", text_of(&out));
    assert!(
        text_of(&out).contains("PONG from Redis through [redis] at 127.0.0.1:"),
        "{}",
        text_of(&out)
    );

    let out = check(&client_conf, None);
    assert!(!out.status.success());
    assert!(
        text_of(&out).contains("requires a password"),
        "{}",
        text_of(&out)
    );

    let wrong = write(dir.path(), "wrong", "not-it\n");
    let out = check(&client_conf, Some(&wrong));
    assert!(!out.status.success());
    assert!(text_of(&out).contains("auth failed"), "{}", text_of(&out));

    // A node holding another certificate: the server refuses it, and check says so.
    let other = Cert::new(dir.path(), "other");
    let rogue_conf = write(
        dir.path(),
        "rogue.conf",
        &guide_client(&other.combined, free_port(), sport),
    );
    let _rogue = spawn(&rogue_conf);
    let out = check(&rogue_conf, Some(&password));
    assert!(!out.status.success());
    assert!(
        text_of(&out).contains("TLS rejected by 127.0.0.1:"),
        "{}",
        text_of(&out)
    );

    // Redis down: the handshake works, so check blames what is behind the far side.
    redis.stop();
    let out = check(&client_conf, Some(&password));
    assert!(!out.status.success());
    assert!(
        text_of(&out).contains("Redis behind it is probably down"),
        "{}",
        text_of(&out)
    );

    // Nothing listening.
    let idle_conf = write(
        dir.path(),
        "idle.conf",
        &guide_client(&cert.combined, free_port(), sport),
    );
    let out = check(&idle_conf, Some(&password));
    assert!(!out.status.success());
    assert!(
        text_of(&out).contains("refused: nothing listens on"),
        "{}",
        text_of(&out)
    );
}

#[test]
fn plaintext_from_a_node_missing_client_yes_is_explained_in_the_log() {
    let Site { dir, redis, cert } = site();
    let sport = free_port();
    let server_conf = write(
        dir.path(),
        "redis-server.conf",
        &guide_server(&cert.combined, sport, redis.addr(), &dir.path().join("p")),
    );
    let mut server = spawn(&server_conf);
    // The node's file exactly as the guide writes it: server mode, forwarding plaintext.
    let node_conf = write(
        dir.path(),
        "node.conf",
        &format!(
            "cert = {}\n[redis]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:{sport}\n",
            cert.combined.display()
        ),
    );
    let mut node = Proc::spawn(bin().arg(&node_conf));
    let node_addr = node.listening_addr("redis");
    // The application speaks plain Redis to the node, as oxAuth does.
    assert!(redis.connect_to(node_addr).is_err());
    let line = node.wait_line("plaintext arrived", Duration::from_secs(10));
    assert!(line.contains("probably missing `client = yes`"), "{line}");
    drop(server.wait_line("[redis] listening", Duration::from_secs(1)));
}

fn kill(signal: &str, pid: i32) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(ok.success());
}

#[test]
fn pid_file_sighup_and_sigterm() {
    let Site { dir, redis, cert } = site();
    let pid_path = dir.path().join("stunnel.pid");
    let conf = write(
        dir.path(),
        "redis-server.conf",
        &guide_server(&cert.combined, 0, redis.addr(), &pid_path),
    );
    let mut p = Proc::spawn(bin().arg(&conf));
    let addr = p.listening_addr("redis");
    let pid = p.pid();
    let written = wait_for(Duration::from_secs(5), "the pid file", || {
        std::fs::read_to_string(&pid_path).ok()
    });
    assert_eq!(written, format!("{pid}\n"));

    // A broken file on SIGHUP: logged, old configuration keeps running.
    std::fs::write(&conf, "cert = x\n[redis]\nwhat = ever\n").expect("break");
    kill("HUP", pid);
    let line = p.wait_line("reload failed", Duration::from_secs(5));
    assert!(line.contains("unknown option 'what'"), "{line}");
    assert!(TcpStream::connect(addr).is_ok(), "still listening");

    kill("TERM", pid);
    let status = wait_for(Duration::from_secs(10), "exit after SIGTERM", || {
        p.child.try_wait().ok().flatten()
    });
    assert!(status.success(), "{status}");
    assert!(!pid_path.exists(), "pid file removed on exit");
}

#[test]
fn setuid_and_setgid_drop_root_after_binding() {
    let Site { dir, redis, cert } = site();
    let conf = write(
        dir.path(),
        "t.conf",
        &format!(
            "setuid = nobody\nsetgid = nogroup\npid =\n{}",
            guide_server(&cert.combined, 0, redis.addr(), Path::new("")).replace("pid = \n", "")
        ),
    );
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let root = status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    let mut p = Proc::spawn(bin().arg(&conf));
    if !root {
        let line = p.wait_line("setgroups", Duration::from_secs(10));
        assert!(line.contains("EPERM"), "{line}");
        return;
    }
    p.listening_addr("redis");
    let proc_status = wait_for(Duration::from_secs(5), "privileges dropped", || {
        let s = std::fs::read_to_string(format!("/proc/{}/status", p.pid())).ok()?;
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("65534"))
            .then_some(s)
    });
    assert!(
        proc_status
            .lines()
            .any(|l| l.starts_with("Gid:") && l.split_whitespace().nth(1) == Some("65534")),
        "{proc_status}"
    );
}

#[test]
fn sd_notify_ready_watchdog_reloading_stopping() {
    let Site { dir, redis, cert } = site();
    let conf = write(
        dir.path(),
        "t.conf",
        &guide_server(&cert.combined, 0, redis.addr(), &dir.path().join("p")),
    );
    let notify = NotifySocket::bind(dir.path());
    let limit = Duration::from_secs(10);
    let p = Proc::spawn(
        bin()
            .arg(&conf)
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", "200000"),
    );
    // Before READY, a copy of the listening socket for systemd's store (kept across a
    // restart), named after its address.
    let stored = notify.wait_for("FDSTORE=1", limit);
    assert!(stored.contains("FDNAME=listen_127.0.0.1_"), "{stored}");
    notify.wait_for("READY=1", limit);
    // WatchdogSec=0.2: a ping every 0.1 s; three in a row prove it keeps feeding.
    for _ in 0..3 {
        assert_eq!(notify.recv(limit).trim_end(), "WATCHDOG=1");
    }
    kill("HUP", p.pid());
    let reloading = notify.wait_for("RELOADING=1", limit);
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    notify.wait_for("READY=1", limit);
    kill("TERM", p.pid());
    notify.wait_for("STOPPING=1", limit);
}

#[test]
fn running_out_of_file_descriptors_backs_off_and_recovers() {
    let Site { dir, redis, cert } = site();
    let conf = write(
        dir.path(),
        "t.conf",
        &format!(
            "TIMEOUTbusy = 1\n{}",
            guide_server(&cert.combined, 0, redis.addr(), &dir.path().join("p"))
        ),
    );
    // 32 descriptors: a few for the runtime and the listener, the rest go fast.
    let mut p = Proc::spawn(
        Command::new(gluu_testkit::require("prlimit"))
            .arg("--nofile=32")
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_gluu-tunnel"))
            .arg(&conf),
    );
    let addr = p.listening_addr("redis");
    // Silent connections: each holds a descriptor until its handshake times out.
    let flood: Vec<TcpStream> = (0..60)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    let line = p.wait_line("retrying in", Duration::from_secs(10));
    assert!(line.contains("Too many open files"), "{line}");
    assert!(
        p.child.try_wait().expect("status").is_none(),
        "still running"
    );
    drop(flood);
    // Once the silent ones time out, a new connection is served again (and told off for
    // speaking plaintext, which proves it was accepted and read).
    wait_for(Duration::from_secs(20), "service after the flood", || {
        let mut s = TcpStream::connect(addr).ok()?;
        std::io::Write::write_all(&mut s, b"PING\r\n").ok()?;
        let seen = p.stderr.recv_timeout(Duration::from_millis(500)).ok()?;
        p.seen.push(seen);
        p.seen
            .iter()
            .any(|l| l.contains("plaintext arrived"))
            .then_some(())
    });
}

#[test]
fn sigusr1_reopens_the_log_file_after_rotation() {
    let Site { dir, redis, cert } = site();
    let log = dir.path().join("stunnel.log");
    let conf = write(
        dir.path(),
        "t.conf",
        &format!(
            "output = {}\n{}",
            log.display(),
            guide_server(&cert.combined, 0, redis.addr(), &dir.path().join("p"))
        ),
    );
    let mut p = Proc::spawn(bin().arg(&conf));
    wait_for(
        Duration::from_secs(10),
        "the start-up lines in the log",
        || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("listening on"))
                .map(|_| ())
        },
    );
    // What logrotate does: move the file away, then SIGUSR1.
    let rotated = dir.path().join("stunnel.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    kill("USR1", p.pid());
    wait_for(Duration::from_secs(10), "a fresh log file", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("SIGUSR1: reopened"))
            .map(|_| ())
    });
    kill("HUP", p.pid());
    wait_for(
        Duration::from_secs(10),
        "the reload logged in the new file",
        || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("reloaded"))
                .map(|_| ())
        },
    );
    assert!(
        !std::fs::read_to_string(&rotated)
            .expect("rotated")
            .contains("reloaded")
    );
    assert!(
        p.child.try_wait().expect("status").is_none(),
        "SIGUSR1 must not kill it"
    );
}

#[test]
fn version_names_the_build_and_man_pages_render() {
    gluu_testkit::assert_version(env!("CARGO_BIN_EXE_gluu-tunnel"), "gluu-tunnel");
    gluu_testkit::assert_man_pages(
        env!("CARGO_BIN_EXE_gluu-tunnel"),
        &["gluu-tunnel", "gluu-tunnel-check"],
    );
}
