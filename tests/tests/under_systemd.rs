//! The three units under a real systemd. `scripts/rootfs.sh` makes (once, then cached) a
//! minimal Debian root file system; each run copies it, installs gluu-ha into the copy with
//! `scripts/install.sh --destdir`, writes configurations, and boots it with
//! `systemd-nspawn --boot`, sharing the host's network (only 127.0.0.1 is used). With
//! `systemctl` inside the container: all three start (Type=notify: `start` returns after
//! READY=1), serve through their sandboxes (HTTPS through gluu-lb to nodes on the host, Redis
//! PING through gluu-tunnel, files replicated both ways with gluu-fsync, owner and mode
//! kept), gluu-lb's access log rotates with the installed logrotate file, a restart of
//! gluu-lb or gluu-tunnel refuses no connection (their sockets wait in systemd's store),
//! reload (a broken file is refused by ExecReload's `-t` and the daemon keeps
//! running), the watchdog restarts a frozen daemon, and they stop cleanly. Their journals
//! hold no permission errors from the sandbox.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use gluu_testkit::https::Client;
use gluu_testkit::node::Node;
use gluu_testkit::{Cert, Proc, Redis, Side, free_port, guide_conf, guide_nginx, listening};
use gluu_testkit::{repo, require, text_of, wait_for};

const UNITS: [&str; 3] = [
    "gluu-lb.service",
    "gluu-tunnel@redis-server.service",
    "gluu-fsync.service",
];
/// The replicated tree inside the container (one the unit's ReadWritePaths allows).
const TREE: &str = "opt/gluu-server/etc/gluu/conf";

/// Where `cargo test --workspace` put the daemons (next to this package's gluu-box).
fn built() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_gluu-box"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", text_of(&out));
    text_of(&out)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A booted container: its root, the systemd-nspawn process and, on the host, the PID of
/// its systemd (what `nsenter` joins).
struct Machine {
    root: PathBuf,
    nspawn: Proc,
    init: i32,
}

impl Machine {
    fn boot(root: &Path) -> Machine {
        let name = format!("gluu-test-{}", std::process::id());
        let nspawn = Proc::spawn(
            Command::new(require("systemd-nspawn"))
                .args(["--quiet", "--boot", "--register=no", "--keep-unit"])
                .args(["--console=read-only", "--machine", &name, "--directory"])
                .arg(root),
        );
        let parent = nspawn.pid();
        let init = wait_for(Duration::from_secs(20), "the container's systemd", || {
            let children =
                std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
            let pid: i32 = children.split_whitespace().next()?.parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == "systemd").then_some(pid)
        });
        let machine = Machine {
            root: root.to_owned(),
            nspawn,
            init,
        };
        // `is-system-running --wait` returns once start-up finished, whatever the outcome;
        // before the container's D-Bus is up it prints nothing, or "offline" (it cannot reach
        // the manager, though systemd is PID 1 there): both mean ask again.
        let state = wait_for(Duration::from_secs(60), "the container's boot", || {
            let out = machine.inside(&["systemctl", "is-system-running", "--wait"]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            (!state.is_empty() && state != "offline").then_some(state)
        });
        assert!(
            state == "running" || state == "degraded",
            "the container booted into {state:?}: {}",
            text_of(&machine.inside(&["systemctl", "--failed", "--no-pager"]))
        );
        machine
    }

    /// Runs `args` inside the container (all its namespaces).
    fn inside(&self, args: &[&str]) -> Output {
        Command::new(require("nsenter"))
            .args(["-t", &self.init.to_string(), "-a", "--"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter")
    }

    fn inside_ok(&self, args: &[&str]) -> String {
        let out = self.inside(args);
        assert!(
            out.status.success(),
            "{args:?} in the container: {}",
            text_of(&out)
        );
        text_of(&out)
    }

    fn property(&self, unit: &str, name: &str) -> String {
        self.inside_ok(&["systemctl", "show", "--value", "-p", name, unit])
            .trim()
            .to_owned()
    }

    fn journal(&self, unit: &str) -> String {
        self.inside_ok(&["journalctl", "--no-pager", "-o", "cat", "-u", unit])
    }

    /// `systemctl ACTION` on all three units; on failure, panics with their journals.
    fn all(&self, action: &[&str]) {
        let mut args = vec!["systemctl"];
        args.extend(action);
        args.extend(UNITS);
        let out = self.inside(&args);
        if !out.status.success() {
            let journals: Vec<String> = UNITS
                .iter()
                .map(|u| format!("--- {u}:\n{}", self.journal(u)))
                .collect();
            panic!(
                "{args:?} in the container: {}\n{}",
                text_of(&out),
                journals.join("\n")
            );
        }
    }

    /// A path inside the container, as the host sees it.
    fn path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }
}

impl Drop for Machine {
    /// Powers the container off (SIGTERM to systemd-nspawn asks its systemd to shut down);
    /// kills what is left after the deadline: the container's PID 1 takes its whole PID
    /// namespace with it.
    fn drop(&mut self) {
        if self.nspawn.terminate(Duration::from_secs(30)).is_none() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.init),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// AUTH and PING through `entry`; Redis's replies.
fn redis_ping(entry: SocketAddr, password: &str) -> String {
    try_redis_ping(entry, password).unwrap_or_else(|e| panic!("{e}"))
}

/// AUTH + PING through the tunnel at `entry`: what came back, or why nothing could be sent.
fn try_redis_ping(entry: SocketAddr, password: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(entry).map_err(|e| format!("connect to the tunnel: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| format!("timeout: {e}"))?;
    write!(
        s,
        "*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n*1\r\n$4\r\nPING\r\n",
        password.len()
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !got.ends_with(b"+PONG\r\n") && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// Runs `request` (`what` in the failure message) from four threads, each over and over,
/// while `systemctl restart UNIT` runs and 20 more times each after it (bounded: 2,000
/// each at most); checks that the unit's sockets were in systemd's store, that it really
/// restarted, and that no request failed.
fn across_a_restart(
    machine: &Machine,
    unit: &str,
    what: &str,
    request: impl Fn() -> Result<(), String> + Sync,
) {
    let stored: usize = machine
        .property(unit, "NFileDescriptorStore")
        .parse()
        .expect("a count");
    assert!(
        stored >= 1,
        "{unit}: no listening socket in systemd's store"
    );
    let pid = machine.property(unit, "MainPID");
    let restarted = std::sync::atomic::AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        let loads: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let (mut answered, mut failed, mut after) = (0, Vec::new(), 0);
                    for _ in 0..2_000 {
                        match request() {
                            Ok(()) => answered += 1,
                            Err(e) => failed.push(e),
                        }
                        if restarted.load(std::sync::atomic::Ordering::Relaxed) {
                            after += 1;
                            if after == 20 {
                                break;
                            }
                        }
                    }
                    (answered, failed)
                })
            })
            .collect();
        machine.inside_ok(&["systemctl", "restart", unit]);
        restarted.store(true, std::sync::atomic::Ordering::Relaxed);
        loads
            .into_iter()
            .map(|l| l.join().expect("load thread"))
            .fold((0, Vec::new()), |(a, mut f), (answered, failed)| {
                f.extend(failed);
                (a + answered, f)
            })
    });
    assert_ne!(machine.property(unit, "MainPID"), pid, "{unit} restarted");
    let (answered, failed) = result;
    assert!(
        failed.is_empty(),
        "{} of {} {what} failed across {unit}'s restart, the first: {:?}",
        failed.len(),
        answered + failed.len(),
        &failed[..failed.len().min(3)]
    );
}

#[test]
fn the_units_start_serve_reload_and_stop_under_systemd_and_its_watchdog_restarts_a_frozen_daemon() {
    let out = Command::new("bash")
        .arg(repo().join("scripts/rootfs.sh"))
        .output()
        .expect("run scripts/rootfs.sh");
    assert!(out.status.success(), "scripts/rootfs.sh: {}", text_of(&out));
    // The path is stdout's last line; what it did (a first debootstrap) went to stderr.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let base = PathBuf::from(stdout.lines().last().expect("rootfs path").trim());
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    run_ok(
        Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(&base)
            .arg(&root),
    );
    let out = Command::new("bash")
        .arg(repo().join("scripts/install.sh"))
        .arg("--destdir")
        .arg(&root)
        .arg("--from")
        .arg(built())
        .output()
        .expect("run install.sh");
    assert!(out.status.success(), "{}", text_of(&out));
    let unrooted = |p: &Path| {
        format!(
            "/{}",
            p.strip_prefix(&root).expect("inside the root").display()
        )
    };

    // Two nodes on the host behind gluu-lb in the container (same network namespace).
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for d in ["etc/nginx/ssl", "etc/stunnel", TREE] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    let cert = Cert::new(&root.join("etc/nginx/ssl"), "httpd");
    let nodes = rt.block_on(Node::pair(&cert, "https://loadbalancer.example.org"));
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let (http, https) = (free_port(), free_port());
    let lb_https: SocketAddr = ([127, 0, 0, 1], https).into();
    let nginx_conf = guide_nginx(
        &addrs,
        &cert,
        &format!("127.0.0.1:{http}"),
        &format!("127.0.0.1:{https}"),
    )
    .replace(&root.display().to_string(), "")
    // Where the example nginx.conf logs, and the installed logrotate file rotates.
    .replacen(
        "http {\n",
        "http {\n  access_log /var/log/gluu-lb/access.log;\n",
        1,
    );
    write(&root.join("etc/nginx/nginx.conf"), &nginx_conf);

    // Redis on the host behind gluu-tunnel in the container; a gluu-tunnel client on the host.
    let redis = Redis::start();
    let redis_cert = Cert::new(&root.join("etc/stunnel"), "secureredis");
    let tunnel_port = free_port();
    write(
        &root.join("etc/stunnel/redis-server.conf"),
        &guide_conf(
            Side::RedisHost,
            Path::new(&unrooted(&redis_cert.combined)),
            "",
            format!("127.0.0.1:{tunnel_port}"),
            redis.addr(),
        ),
    );
    let client_port = free_port();
    let client_conf = dir.path().join("redis-client.conf");
    write(
        &client_conf,
        &guide_conf(
            Side::Node,
            &redis_cert.combined,
            "",
            format!("127.0.0.1:{client_port}"),
            format!("127.0.0.1:{tunnel_port}"),
        ),
    );

    // gluu-fsync: node1 in the container, node2 on the host; one key, the same group.
    let key = root.join("etc/csync2.key");
    run_ok(
        Command::new(built().join("gluu-fsync"))
            .arg("keygen")
            .arg(&key),
    );
    let host_tree = dir.path().join("node2-tree");
    std::fs::create_dir_all(&host_tree).expect("mkdir");
    let (p1, p2) = (free_port(), free_port());
    let csync2 = |key: &str| {
        format!(
            "prefix gluu\n{{\n  on node1: /{TREE};\n  on node2: {};\n}}\n\
             group gluucluster\n{{\nhost node1@127.0.0.1:{p1};\nhost node2@127.0.0.1:{p2};\n\
             key {key};\ninclude %gluu%;\nexclude *~ .*;\n}}\n",
            host_tree.display()
        )
    };
    write(&root.join("etc/csync2.cfg"), &csync2("/etc/csync2.key"));
    write(
        &root.join("etc/default/gluu-fsync"),
        "GLUU_FSYNC_ARGS=\"-N node1\"\n",
    );
    let host_conf = dir.path().join("csync2.cfg");
    write(&host_conf, &csync2(&key.display().to_string()));
    let host_state = dir.path().join("node2-state");
    let mut node2 = Proc::spawn(
        Command::new(built().join("gluu-fsync"))
            .arg("-c")
            .arg(&host_conf)
            .args(["-N", "node2", "--state-dir"])
            .arg(&host_state)
            .arg("daemon"),
    );

    // The watchdog, shortened for the test: a frozen daemon is aborted after 2 s.
    write(
        &root.join("etc/systemd/system/gluu-tunnel@redis-server.service.d/watchdog.conf"),
        "[Service]\nWatchdogSec=2s\nTimeoutAbortSec=2s\nRestartSec=1s\n",
    );

    let machine = Machine::boot(&root);
    machine.all(&["enable", "--now"]);
    for unit in UNITS {
        assert_eq!(machine.property(unit, "ActiveState"), "active", "{unit}");
        assert_eq!(machine.property(unit, "Type"), "notify", "{unit}");
        let journal = machine.journal(unit);
        assert!(
            !journal.contains('\x1b'),
            "colour codes in the journal:\n{journal}"
        );
    }
    // Each line carries its priority: the guide's `ssl on;` warning is a journald warning.
    let warnings = machine.inside_ok(&[
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        "-p",
        "warning",
        "-u",
        UNITS[0],
    ]);
    assert!(
        warnings.contains("\"ssl\" directive is deprecated"),
        "journalctl -p warning -u gluu-lb:\n{warnings}"
    );

    // gluu-lb: the OpenID configuration through the balancer, from a node on the host.
    let client = Client::new(&cert);
    let get = |path: &str| {
        rt.block_on(client.get(lb_https, path))
            .unwrap_or_else(|e| panic!("GET {path} through gluu-lb under systemd: {e}"))
    };
    let r = get("/oxauth/.well-known/openid-configuration");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.node().starts_with("node"), "{r:?}");

    // The installed logrotate file: yesterday's lines in access.log.1, and gluu-lb, told by
    // SIGUSR1, writes the next request to the new access.log.
    let logged = |inside: &str, what: &str| {
        std::fs::read_to_string(machine.path(inside)).is_ok_and(|t| t.contains(what))
    };
    let access = "/var/log/gluu-lb/access.log";
    wait_for(Duration::from_secs(10), "the request in access.log", || {
        logged(access, "openid-configuration").then_some(())
    });
    machine.inside_ok(&["logrotate", "-f", "/etc/logrotate.d/gluu-lb"]);
    assert!(logged(&format!("{access}.1"), "openid-configuration"));
    assert_eq!(get("/identity/after-rotation.htm").status, 200);
    wait_for(
        Duration::from_secs(10),
        "the next request in the new file",
        || logged(access, "after-rotation").then_some(()),
    );
    assert!(!logged(&format!("{access}.1"), "after-rotation"));

    // gluu-tunnel: PONG from Redis through the container's tunnel.
    let mut tunnel_client =
        Proc::spawn(Command::new(built().join("gluu-tunnel")).arg(&client_conf));
    let entry: SocketAddr = ([127, 0, 0, 1], client_port).into();
    wait_for(Duration::from_secs(10), "the host's tunnel client", || {
        listening(entry).then_some(())
    });
    let reply = redis_ping(entry, &redis.password);
    assert_eq!(
        reply, "+OK\r\n+PONG\r\n",
        "through the tunnel under systemd"
    );

    // gluu-fsync: a file owned by another user, both ways.
    node2.wait_line("listening on", Duration::from_secs(20));
    let from_host = host_tree.join("ox-ldap.properties");
    std::fs::write(&from_host, "servers: ldap1:1636\n").expect("write");
    std::fs::set_permissions(&from_host, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    std::os::unix::fs::chown(&from_host, Some(4321), Some(4322)).expect("chown");
    let arrived = machine.path(&format!("/{TREE}/ox-ldap.properties"));
    let meta = wait_for(
        Duration::from_secs(10),
        "the host's file in the container",
        || {
            let m = std::fs::symlink_metadata(&arrived).ok()?;
            (std::fs::read(&arrived).ok()? == b"servers: ldap1:1636\n").then_some(m)
        },
    );
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (4321, 4322, 0o640),
        "owner, group and mode set by the sandboxed daemon"
    );
    let from_container = machine.path(&format!("/{TREE}/idp.properties"));
    std::fs::write(&from_container, "idp.entityID = https://lb/idp\n").expect("write");
    wait_for(
        Duration::from_secs(10),
        "the container's file on the host",
        || {
            (std::fs::read(host_tree.join("idp.properties")).ok()?
                == b"idp.entityID = https://lb/idp\n")
                .then_some(())
        },
    );

    // Reload: all three re-read their files and keep serving; a broken file is refused by
    // ExecReload's -t and the running daemon is left alone.
    machine.all(&["reload"]);
    let conf = root.join("etc/nginx/nginx.conf");
    write(&conf, &format!("{nginx_conf}\nbogus_directive on;\n"));
    let refused = machine.inside(&["systemctl", "reload", "gluu-lb.service"]);
    assert!(
        !refused.status.success(),
        "reload of a broken file succeeded"
    );
    write(&conf, &nginx_conf);
    for unit in UNITS {
        assert_eq!(machine.property(unit, "ActiveState"), "active", "{unit}");
        assert_eq!(machine.property(unit, "NRestarts"), "0", "{unit}");
    }
    assert!(
        machine
            .journal("gluu-lb.service")
            .contains("bogus_directive"),
        "the journal names the broken directive: {}",
        machine.journal("gluu-lb.service")
    );
    assert_eq!(get("/identity/home.htm").status, 200);
    assert_eq!(redis_ping(entry, &redis.password), "+OK\r\n+PONG\r\n");

    // A restart (an upgrade): the listening sockets stay open in systemd's file descriptor
    // store, so clients connecting over and over through it are never refused.
    across_a_restart(&machine, UNITS[0], "requests", || {
        let path = "/oxauth/.well-known/openid-configuration";
        match rt.block_on(client.get(lb_https, path)) {
            Ok(r) if r.status == 200 => Ok(()),
            Ok(r) => Err(r.status.to_string()),
            Err(e) => Err(e),
        }
    });
    across_a_restart(&machine, UNITS[1], "PINGs", || {
        match try_redis_ping(entry, &redis.password)? {
            r if r == "+OK\r\n+PONG\r\n" => Ok(()),
            r => Err(format!("{r:?}")),
        }
    });
    for unit in &UNITS[..2] {
        assert!(
            machine
                .journal(unit)
                .contains("kept open by systemd across the restart"),
            "{unit}: {}",
            machine.journal(unit)
        );
    }

    // The watchdog: a frozen gluu-tunnel stops pinging; systemd aborts and restarts it.
    let tunnel = UNITS[1];
    let pid = machine.property(tunnel, "MainPID");
    machine.inside_ok(&["systemctl", "kill", "-s", "SIGSTOP", tunnel]);
    wait_for(Duration::from_secs(30), "the watchdog's restart", || {
        (machine.property(tunnel, "NRestarts") == "1"
            && machine.property(tunnel, "ActiveState") == "active")
            .then_some(())
    });
    assert_ne!(machine.property(tunnel, "MainPID"), pid);
    assert!(
        machine.journal(tunnel).contains("Watchdog timeout"),
        "{}",
        machine.journal(tunnel)
    );
    wait_for(Duration::from_secs(10), "PONG after the restart", || {
        (redis_ping(entry, &redis.password) == "+OK\r\n+PONG\r\n").then_some(())
    });

    // Stop: each exits by itself, successfully.
    machine.all(&["stop"]);
    for unit in UNITS {
        assert_eq!(machine.property(unit, "ActiveState"), "inactive", "{unit}");
        assert_eq!(machine.property(unit, "Result"), "success", "{unit}");
        let journal = machine.journal(unit);
        for bad in [
            "Operation not permitted",
            "Permission denied",
            "Read-only file system",
            "refused",
        ] {
            assert!(!journal.contains(bad), "{unit}: {bad}:\n{journal}");
        }
    }
    assert!(!listening(lb_https), "gluu-lb still listens after stop");
    tunnel_client.terminate(Duration::from_secs(5));
    node2.terminate(Duration::from_secs(10));
    drop(machine);
    drop(nodes);
}
