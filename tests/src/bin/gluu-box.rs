//! `gluu-box`: the README's first command. Brings up, on loopback, what the guide builds by
//! hand for the Redis leg: a real `redis-server` with `requirepass`, a gluu-tunnel server in
//! front of it (the guide's redis-server.conf) and a gluu-tunnel client (the guide's
//! redis-client.conf with `client = yes`), then walks through what the guide promises and
//! prints each step with its result. It stays up until Ctrl-C; `--check` exits after the
//! walkthrough, non-zero if a step failed.
//!
//! The gluu-tunnel binary is taken from the directory this program was built into.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gluu_testkit::{Cert, Proc, Redis, Side, free_port, guide_conf};

struct Walk {
    failed: usize,
}

impl Walk {
    fn step<T: Display>(&mut self, what: &str, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => {
                println!("  [ ok ] {what}: {v}");
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
            "{} not found: build the workspace first (cargo build --release)",
            p.display()
        ))
    }
}

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

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

fn main() {
    let check_only = std::env::args().any(|a| a == "--check");
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: gluu-box [--check]\n\nStarts Redis behind a gluu-tunnel pair on loopback, walks through the guide's checks,\nand keeps running until Ctrl-C (--check: exit after the walkthrough; non-zero on failure)."
        );
        return;
    }
    let code = match walkthrough(check_only) {
        Ok(0) => 0,
        Ok(n) => {
            println!("\n{n} step(s) failed");
            1
        }
        Err(e) => {
            eprintln!("gluu-box: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn walkthrough(check_only: bool) -> Result<usize, String> {
    let tunnel = sibling("gluu-tunnel")?;
    let dir = tempfile::Builder::new()
        .prefix("gluu-box-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let d = dir.path();
    let mut walk = Walk { failed: 0 };
    println!(
        "gluu-box: the guide's Redis leg on loopback, in {}",
        d.display()
    );

    let redis = Redis::start();
    println!("  redis-server with requirepass on {}", redis.addr());
    let cert = Cert::new(d, "secureredis");
    let password = write(d, "redis-password", &format!("{}\n", redis.password));

    let (server_port, client_port) = (free_port(), free_port());
    let globals = |side: &str| {
        format!(
            "pid = {}\noutput = {}\nmetrics = 127.0.0.1:{}",
            d.join(format!("{side}.pid")).display(),
            d.join(format!("{side}.log")).display(),
            free_port()
        )
    };
    let server_conf = write(
        d,
        "redis-server.conf",
        &format!(
            "; the guide's /etc/stunnel/redis-server.conf (Redis host)\n{}",
            guide_conf(
                Side::RedisHost,
                &cert.combined,
                &globals("server"),
                format!("127.0.0.1:{server_port}"),
                redis.addr()
            )
        ),
    );
    let client_conf = write(
        d,
        "redis-client.conf",
        &format!(
            "; the guide's /etc/stunnel/redis-client.conf (each node), with client = yes\n{}",
            guide_conf(
                Side::Node,
                &cert.combined,
                &globals("client"),
                format!("127.0.0.1:{client_port}"),
                format!("127.0.0.1:{server_port}")
            )
        ),
    );

    for conf in [&server_conf, &client_conf] {
        walk.step(
            &format!("gluu-tunnel -t {}", conf.display()),
            run_tool(Command::new(&tunnel).arg("-t").arg(conf))
                .map(|out| out.lines().last().unwrap_or_default().to_owned()),
        );
    }
    let mut procs = Vec::new();
    for (conf, port) in [(&server_conf, server_port), (&client_conf, client_port)] {
        let p = Proc::spawn(Command::new(&tunnel).arg(conf));
        let up = wait_listening(port);
        walk.step(
            &format!("gluu-tunnel {} listening", conf.display()),
            up.map(|t| format!("127.0.0.1:{port} after {t:?}")),
        );
        procs.push(p);
    }

    walk.step(
        "gluu-tunnel check (AUTH + PING through the tunnel, the guide's 'you should get a PONG')",
        run_tool(
            Command::new(&tunnel)
                .arg("check")
                .arg(&client_conf)
                .arg("--password-file")
                .arg(&password),
        ),
    );

    let through = ([127, 0, 0, 1], client_port).into();
    walk.step(
        "SET/GET of 1 MiB through the tunnel with the redis crate",
        (|| {
            let mut con = redis.connect_to(through).map_err(|e| e.to_string())?;
            let value = vec![0x5au8; 1 << 20];
            let start = Instant::now();
            redis::cmd("SET")
                .arg("gluu-box")
                .arg(&value)
                .query::<()>(&mut con)
                .map_err(|e| e.to_string())?;
            let got: Vec<u8> = redis::cmd("GET")
                .arg("gluu-box")
                .query(&mut con)
                .map_err(|e| e.to_string())?;
            if got != value {
                return Err("value came back altered".to_owned());
            }
            Ok(format!("round trip in {:?}", start.elapsed()))
        })(),
    );

    let rogue_cert = Cert::new(d, "rogue");
    let rogue_port = free_port();
    let rogue_conf = write(
        d,
        "rogue-client.conf",
        &format!(
            "; a stranger: another certificate, and it verifies nobody itself\n{}",
            guide_conf(
                Side::Node,
                &rogue_cert.combined,
                &format!(
                    "verifyPeer = no\noutput = {}",
                    d.join("rogue.log").display()
                ),
                format!("127.0.0.1:{rogue_port}"),
                format!("127.0.0.1:{server_port}")
            )
        ),
    );
    let rogue = Proc::spawn(Command::new(&tunnel).arg(&rogue_conf));
    walk.step(
        "a node holding another certificate (and verifying nobody) starts",
        wait_listening(rogue_port).map(|t| format!("{t:?}")),
    );
    walk.step(
        "... and is refused by the Redis-side tunnel (pinned to secureredis.pem)",
        match run_tool(
            Command::new(&tunnel)
                .arg("check")
                .arg(&rogue_conf)
                .arg("--password-file")
                .arg(&password),
        ) {
            Ok(out) => Err(format!("it got through: {out}")),
            Err(why) if why.contains("TLS rejected") => {
                Ok(why.lines().last().unwrap_or_default().to_owned())
            }
            Err(why) => Err(why),
        },
    );
    drop(rogue);

    println!("\nRunning:");
    println!(
        "  Redis          {} (password in {})",
        redis.addr(),
        password.display()
    );
    println!(
        "  Redis side     TLS 127.0.0.1:{server_port}  config {}  log {}",
        server_conf.display(),
        d.join("server.log").display()
    );
    println!(
        "  node side      plain 127.0.0.1:{client_port}  config {}  log {}",
        client_conf.display(),
        d.join("client.log").display()
    );
    for conf in [&server_conf, &client_conf] {
        if let Some(m) = std::fs::read_to_string(conf).ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("metrics = ").map(str::to_owned))
        }) {
            println!("  metrics        http://{m}/metrics");
        }
    }
    println!(
        "  try: redis-cli -p {client_port} -a {} ping",
        redis.password
    );
    if check_only {
        return Ok(walk.failed);
    }
    println!("\nCtrl-C stops everything gluu-box started.");
    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .map_err(|e| e.to_string())?;
    let _ = rx.recv();
    println!("stopping");
    drop(procs);
    Ok(walk.failed)
}

fn wait_listening(port: u16) -> Result<Duration, String> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if gluu_testkit::listening(([127, 0, 0, 1], port).into()) {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("nothing listens on 127.0.0.1:{port} after 20 s"))
}
