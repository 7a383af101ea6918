//! The `gluu-lb` binary: `-t` on the guide's file (its two warnings), errors with file and
//! line and exit 64, running with `-c`, `-s reload` and `-s stop` through the pid file, with
//! READY/RELOADING/STOPPING and watchdog pings to systemd.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use gluu_testkit::{Cert, NotifySocket, Proc, wait_for};

fn lb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gluu-lb"))
}

fn guide(dir: &std::path::Path) -> std::path::PathBuf {
    guide_serving(dir, &Cert::new(dir, "httpd"))
}

fn guide_serving(dir: &std::path::Path, cert: &Cert) -> std::path::PathBuf {
    let nodes: Vec<SocketAddr> = vec!["127.0.0.1:1".parse().expect("a"); 2];
    let text = support::guide_conf(&nodes, cert, |t| {
        t.replace("  metrics 127.0.0.1:0;\n", "").replace(
            "events {",
            &format!("pid {}/gluu-lb.pid;\nevents {{", dir.display()),
        )
    });
    let path = dir.join("nginx.conf");
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn test_flag_reports_the_guides_warnings_and_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = guide(dir.path());
    let out = lb().arg("-t").arg("-c").arg(&path).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("[warn] the \"ssl\" directive is deprecated"),
        "{err}"
    );
    assert!(
        err.contains("did you mean \"loadbalancer.example.org\"?"),
        "{err}"
    );
    assert!(err.contains("nginx.conf:25"), "{err}");
    assert!(err.contains("test is successful"), "{err}");
    // A relative name is said in full, as nginx says it; so is the place of an error.
    let name = path.file_name().expect("a file name");
    let out = lb()
        .args(["-t", "-c"])
        .arg(name)
        .current_dir(dir.path())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    let full = format!("configuration file {} test is successful", path.display());
    assert!(out.status.success() && err.contains(&full), "{err}");
    assert!(err.contains(&format!("{}:25", path.display())), "{err}");
}

/// An `ssl_ciphers` line copied from elsewhere can leave only suites the certificate's key
/// cannot sign for (nginx starts with it, and TLS 1.2 handshakes fail): `-t` says so.
#[test]
fn test_flag_warns_of_ciphers_the_certificate_cannot_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = guide(dir.path());
    let text = std::fs::read_to_string(&path).expect("read");
    let said = |line: &str| {
        std::fs::write(
            &path,
            text.replace("    ssl on;", &format!("    ssl on;\n    {line}")),
        )
        .expect("write");
        let out = lb().arg("-t").arg("-c").arg(&path).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        err
    };
    // The test certificate has an ECDSA key.
    let err = said("ssl_ciphers ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305;");
    assert!(
        err.contains("ECDSA key (it needs ECDHE-ECDSA suites): TLS 1.2 clients cannot connect (TLS 1.3 ones can)"),
        "{err}"
    );
    let err = said("ssl_ciphers aRSA; ssl_protocols TLSv1.2;");
    assert!(err.contains("no client can connect"), "{err}");
    let err = said("ssl_ciphers HIGH;");
    assert!(!err.contains("ssl_ciphers on"), "{err}");
}

#[test]
fn test_flag_warns_of_a_certificate_near_or_past_its_end_and_still_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let day = 86_400;
    for (seconds, said) in [
        (10 * day + 600, "expires on "),
        (-3 * day - 600, "expired on "),
    ] {
        let cert = Cert::ending_in(dir.path(), "httpd", seconds);
        let path = guide_serving(dir.path(), &cert);
        let out = lb().arg("-t").arg("-c").arg(&path).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "nginx starts with it too: {err}");
        let line = err
            .lines()
            .find(|l| l.contains(&format!("certificate {} (CN=", cert.cert.display())))
            .unwrap_or_else(|| panic!("no warning for {seconds} s: {err}"));
        assert!(line.contains("[warn]") && line.contains(said), "{line}");
        let when = if seconds > 0 {
            "in 10 days"
        } else {
            "3 days ago"
        };
        assert!(
            line.contains(when) && line.contains("nginx.conf:"),
            "{line}"
        );
    }
    let cert = Cert::ending_in(dir.path(), "httpd", 31 * day + 600);
    let out = lb()
        .arg("-t")
        .arg("-c")
        .arg(guide_serving(dir.path(), &cert))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("(CN="), "{err}");
}

#[test]
fn errors_name_file_and_line_and_exit_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = guide(dir.path());
    let text = std::fs::read_to_string(&path).expect("read");
    let broken = dir.path().join("broken.conf");
    std::fs::write(
        &broken,
        text.replace(
            "proxy_connect_timeout   2;",
            "proxy_connect_timeout   2;\n        ssi on;",
        ),
    )
    .expect("write");
    let out = lb().arg("-t").arg("-c").arg(&broken).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("unknown directive \"ssi\" in location in ") && err.contains("broken.conf:34"),
        "{err}"
    );
    let missing_key = dir.path().join("nokey.conf");
    std::fs::write(&missing_key, text.replace("httpd.key", "absent.key")).expect("write");
    let out = lb()
        .arg("-t")
        .arg("-c")
        .arg(&missing_key)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("absent.key") && err.contains("cannot read"),
        "{err}"
    );
    // Three workers, each with a socket on 80 and on 443: six slots taken by listening.
    let few = dir.path().join("few.conf");
    std::fs::write(
        &few,
        format!("worker_processes 3;\n{text}")
            .replace("worker_connections 6500;", "worker_connections 6;"),
    )
    .expect("write");
    let out = lb().arg("-t").arg("-c").arg(&few).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("few.conf")
            && err.contains("6 worker_connections are not enough for 6 listening sockets"),
        "{err}"
    );
}

#[test]
fn runs_reloads_and_stops_through_the_pid_file_telling_systemd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = guide(dir.path());
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, format!("worker_processes 3;\n{text}")).expect("write");
    let notify = NotifySocket::bind(dir.path());
    let limit = Duration::from_secs(20);
    let mut proc = Proc::spawn(
        lb().arg("-c")
            .arg(&path)
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", "200000"),
    );
    proc.wait_line("listening on", Duration::from_secs(20));
    let ready = notify.wait_for("READY=1", limit);
    assert!(ready.contains("3 workers"), "{ready}");
    // A new thread names itself as it starts: poll until all three have.
    wait_for(limit, "three threads named gluu-lb-worker", || {
        let named = std::fs::read_dir(format!("/proc/{}/task", proc.pid()))
            .expect("tasks")
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim() == "gluu-lb-worker")
            })
            .count();
        assert!(named <= 3, "worker_processes 3 but {named} workers");
        (named == 3).then_some(())
    });
    for _ in 0..3 {
        assert_eq!(notify.recv(limit).trim_end(), "WATCHDOG=1");
    }
    let pid_file = dir.path().join("gluu-lb.pid");
    wait_for(Duration::from_secs(5), "the pid file", || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .filter(|p| p.trim() == proc.pid().to_string())
    });
    let ok = lb()
        .args(["-s", "reload", "-c"])
        .arg(&path)
        .status()
        .expect("run");
    assert!(ok.success());
    proc.wait_line("reloaded", Duration::from_secs(10));
    notify.wait_for("RELOADING=1", limit);
    notify.wait_for("READY=1", limit);
    let ok = lb()
        .args(["-s", "stop", "-c"])
        .arg(&path)
        .status()
        .expect("run");
    assert!(ok.success());
    notify.wait_for("STOPPING=1", limit);
    let status = wait_for(Duration::from_secs(10), "gluu-lb to exit", || {
        proc.child.try_wait().ok().flatten()
    });
    assert!(status.success(), "{status}");
}

#[test]
fn a_full_disk_under_the_access_log_is_said_once_and_costs_no_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = guide(dir.path());
    let text = std::fs::read_to_string(&path).expect("read");
    // /dev/full: every write fails with ENOSPC, as on a full /var/log.
    let text = text.replacen("http {\n", "http {\n  access_log /dev/full;\n", 1);
    std::fs::write(&path, text).expect("write");
    let mut proc = Proc::spawn(lb().arg("-c").arg(&path));
    let line = proc.wait_line("listening on 127.0.0.1:", Duration::from_secs(20));
    let http: SocketAddr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    for i in 0..300 {
        let mut s = std::net::TcpStream::connect(http).expect("connect");
        s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut reply = String::new();
        s.read_to_string(&mut reply).expect("read");
        assert!(reply.starts_with("HTTP/1.1 301 "), "request {i}: {reply}");
    }
    proc.wait_line("access log /dev/full", Duration::from_secs(5));
    assert!(
        proc.terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );
    // Exited: the rest of its stderr is there until the pipe's end.
    let rest = std::iter::from_fn(|| proc.stderr.recv_timeout(Duration::from_secs(5)).ok());
    let said: Vec<String> = (proc.seen.clone().into_iter().chain(rest))
        .filter(|l| l.contains("access log /dev/full"))
        .collect();
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(
        said[0].contains("No space left on device") && said[0].contains("said again every 60 s"),
        "{said:?}"
    );
}

#[test]
fn signal_without_a_pid_directive_says_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = guide(dir.path());
    let text = std::fs::read_to_string(&path).expect("read");
    let no_pid = dir.path().join("nopid.conf");
    let start = text.find("pid ").expect("pid line");
    let end = start + text[start..].find('\n').expect("eol");
    std::fs::write(&no_pid, format!("{}{}", &text[..start], &text[end + 1..])).expect("write");
    let out = lb()
        .args(["-s", "reload", "-c"])
        .arg(&no_pid)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64));
    assert!(err.contains("no \"pid\" directive"), "{err}");
}

#[test]
fn version_names_the_build_and_man_pages_render() {
    gluu_testkit::assert_version(env!("CARGO_BIN_EXE_gluu-lb"), "gluu-lb");
    gluu_testkit::assert_man_pages(env!("CARGO_BIN_EXE_gluu-lb"), &["gluu-lb"]);
}

/// `user USER GROUP`: `-t` names each file a reload re-reads (included ones too) that
/// gluu-lb cannot read once it runs as them (nginx's master stays root; gluu-lb is one
/// process). `user USER` alone means the group named USER, as in nginx. A key every user
/// may read is a warning.
#[test]
fn user_warns_of_files_a_reload_could_not_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = guide(dir.path());
    let text = std::fs::read_to_string(&path).expect("read");
    let as_nobody = dir.path().join("nobody.conf");
    // An included file is read again on reload too, even one with nothing in it.
    let included = dir.path().join("site.conf");
    std::fs::write(&included, "# nothing here yet\n").expect("write");
    std::fs::set_permissions(
        &included,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    // So is a session ticket key, which should be no one's but the balancer's.
    let ticket = dir.path().join("ticket.key");
    std::fs::write(&ticket, [7u8; 80]).expect("write");
    std::fs::set_permissions(&ticket, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    // And user files, read at each request: one for the server, one for writes only.
    let users = dir.path().join("htpasswd");
    let writers = dir.path().join("writers");
    for file in [&users, &writers] {
        std::fs::write(file, "admin:{PLAIN}x\n").expect("write");
        std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
    }
    let text_with_ticket = text.replacen(
        "ssl on;",
        &format!(
            "ssl on;\nssl_session_ticket_key {};\nauth_basic staff;\nauth_basic_user_file {};\n\
             location /writes {{ limit_except GET {{ auth_basic_user_file {}; }} return 204; }}",
            ticket.display(),
            users.display(),
            writers.display()
        ),
        1,
    );
    assert_ne!(text_with_ticket, text);
    std::fs::write(
        &as_nobody,
        format!("user nobody nogroup;\ninclude site.conf;\n{text_with_ticket}"),
    )
    .expect("write");
    let key = dir.path().join("httpd.key");
    let t = |conf: &std::path::Path| {
        let out = lb().arg("-t").arg("-c").arg(conf).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), err)
    };
    // Cert::new leaves the key root's, mode 640.
    let (ok, err) = t(&as_nobody);
    assert!(ok, "{err}");
    let warning = format!(
        "[warn] {} is not readable by user nobody (group nogroup)",
        key.display()
    );
    assert!(err.contains(&warning), "{err}");
    assert!(err.contains("a reload (SIGHUP) would fail on it"), "{err}");
    let warning = format!(
        "[warn] {} is not readable by user nobody",
        included.display()
    );
    assert!(err.contains(&warning), "{err}");
    let warning = format!("[warn] {} is not readable by user nobody", ticket.display());
    assert!(err.contains(&warning), "{err}");
    for file in [&users, &writers] {
        let warning = format!(
            "[warn] {} is not readable by user nobody (group nogroup), whom gluu-lb runs as \
             after binding: every request that needs it would get 500",
            file.display()
        );
        assert!(err.contains(&warning), "{err}");
        std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod");
    }
    std::os::unix::fs::chown(&key, None, Some(65534)).expect("chgrp nogroup");
    std::os::unix::fs::chown(&ticket, None, Some(65534)).expect("chgrp nogroup");
    std::fs::set_permissions(&ticket, std::os::unix::fs::PermissionsExt::from_mode(0o640))
        .expect("chmod");
    std::fs::set_permissions(
        &included,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let (ok, err) = t(&as_nobody);
    assert!(
        ok && !err.contains("is not readable") && !err.contains("every user"),
        "{err}"
    );
    // A key anyone may read is a warning of its own, `user` or not.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let (ok, err) = t(&path);
    let warning = format!("{} is readable by every user (mode 644)", key.display());
    assert!(ok && err.contains(&warning), "{err}");

    // No group: the one named as the user, which Debian does not have for nobody.
    let no_group = dir.path().join("no-group.conf");
    std::fs::write(&no_group, format!("user nobody;\n{text}")).expect("write");
    let (ok, err) = t(&no_group);
    let has_nobody_group = std::fs::read_to_string("/etc/group")
        .expect("/etc/group")
        .lines()
        .any(|l| l.starts_with("nobody:"));
    assert_eq!(ok, has_nobody_group, "{err}");
    if !ok {
        assert!(err.contains("no such group 'nobody'"), "{err}");
        assert!(err.contains("`user nobody nogroup;`"), "{err}");
    }
}
