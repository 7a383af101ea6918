//! Test support for gluu-ha: real `redis-server` and `stunnel` processes on loopback with
//! ephemeral ports, per-test certificates made with rcgen, daemons spawned from their
//! binaries with the addresses they log, and polling with deadlines instead of sleeps.
//!
//! Programs are installed by `scripts/setup.sh` (the README's test command runs it); a
//! missing one is a test failure that says so, never a silent skip.

pub mod https;
pub mod node;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Panics with the fix when `program` is not installed.
pub fn require(program: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin", "/sbin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!("{program} is not installed: run scripts/setup.sh (the README's test command does)");
}

/// The workspace's top directory (scripts/, systemd/, examples/).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// A finished command's stdout then stderr, as text (for assertion messages).
pub fn text_of(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls `f` every few milliseconds until it returns `Some`, or panics after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Checks `BIN --version`: the name, the workspace version, and where the binary came from
/// (the commit in release builds, the profile otherwise; target; compiler).
pub fn assert_version(bin: &str, name: &str) {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .expect("run --version");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let head = format!("{name} {} (", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&head), "{text}");
    assert!(
        text.contains(", x86_64-") || text.contains(", aarch64-"),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with(')') && text.contains("rustc 1."),
        "{text}"
    );
}

/// Checks `BIN --man-pages DIR`: exactly the pages named (`gluu-fsync`, `gluu-fsync-sync`,
/// ...), each with its sections, and each rendered by groff without a warning.
pub fn assert_man_pages(bin: &str, pages: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(bin)
        .arg("--man-pages")
        .arg(dir.path())
        .output()
        .expect("run --man-pages");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut written: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    let mut wanted: Vec<String> = pages.iter().map(|p| format!("{p}.8")).collect();
    wanted.sort();
    assert_eq!(written, wanted);
    let groff = require("groff");
    for page in &written {
        let path = dir.path().join(page);
        let text = std::fs::read_to_string(&path).expect("read page");
        for section in [".TH ", ".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS"] {
            assert!(text.contains(section), "{page} has no {section}:\n{text}");
        }
        let render = Command::new(&groff)
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .output()
            .expect("run groff");
        let warnings = String::from_utf8_lossy(&render.stderr);
        assert!(
            render.status.success() && warnings.trim().is_empty(),
            "{page}: {warnings}"
        );
    }
}

/// A port nobody listens on right now (for programs that cannot report the port they got),
/// and never one this process handed out before (two tests running side by side would
/// otherwise start their programs on the same port).
///
/// Chosen below the kernel's ephemeral range (`ip_local_port_range`, 32768-60999 by
/// default), at a random place in 20000-32767, and checked free by binding it: between
/// the choice and the program's own bind, a port of the ephemeral range can be taken by
/// anything else the tests do (another `bind(:0)`, or the source port of an outgoing
/// connection, which the kernel picks from that range), and the program then fails to
/// start; nothing here binds below the range but through this function.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_768;
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut seed = std::collections::hash_map::RandomState::new().build_hasher();
    seed.write_u32(std::process::id());
    let start = u16::try_from(seed.finish() % u64::from(SPAN)).expect("below SPAN");
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for k in 0..SPAN {
        let port = LOW + (start + k) % SPAN;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port in {LOW}-{}", LOW + SPAN - 1);
}

/// True once something accepts TCP connections on `addr`. A connection to itself (TCP's
/// simultaneous open: the kernel chose `addr` as the source port of a connect to `addr`
/// while nothing listened) does not count.
pub fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200))
        .is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
}

/// Whether process `pid` holds the socket listening on TCP `addr` (from /proc): unlike
/// [`listening`], not fooled by another program that took a [`free_port`] port between
/// the test choosing it and the program binding it.
pub fn listens(pid: u32, addr: SocketAddr) -> bool {
    let hex = |word: &[u8]| format!("{:08X}", u32::from_le_bytes(word.try_into().expect("4")));
    let (table, ip) = match addr.ip() {
        std::net::IpAddr::V4(ip) => ("/proc/net/tcp", hex(&ip.octets())),
        std::net::IpAddr::V6(ip) => ("/proc/net/tcp6", ip.octets().chunks(4).map(hex).collect()),
    };
    let local = format!("{ip}:{:04X}", addr.port());
    let table = std::fs::read_to_string(table).unwrap_or_default();
    // sl local_address rem_address st ... inode; state 0A is LISTEN.
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && f[1] == local && f[3] == "0A")
        .map(|f| format!("socket:[{}]", f[9]))
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .any(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
}

/// A self-signed certificate and key, as the guide makes them (one file holding both, like
/// `secureredis.pem`, plus separate files).
#[derive(Debug, Clone)]
pub struct Cert {
    /// Key then certificate, as `cat key.pem cert.pem > secureredis.pem` makes it.
    pub combined: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Cert {
    /// ECDSA P-256, for `name` (also valid for localhost and 127.0.0.1).
    pub fn new(dir: &Path, name: &str) -> Cert {
        Self::self_signed(dir, name, &rcgen::KeyPair::generate().expect("key"), |_| {})
    }

    /// As [`Cert::new`], but its validity ends `seconds` from now (negative: it has ended).
    pub fn ending_in(dir: &Path, name: &str, seconds: i64) -> Cert {
        let end = u64::try_from(unix_now() + seconds).expect("after 1970");
        let key = rcgen::KeyPair::generate().expect("key");
        Self::self_signed(dir, name, &key, |p| {
            p.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(end);
        })
    }

    /// Another certificate for the same key, written as `name`: a renewal made with
    /// `openssl req -new -x509 -key KEY ...`.
    pub fn renewed(&self, dir: &Path, name: &str) -> Cert {
        let key_pem = std::fs::read_to_string(&self.key).expect("read key");
        let key = rcgen::KeyPair::from_pem(&key_pem).expect("key");
        Self::self_signed(dir, name, &key, |_| {})
    }

    /// A certificate `key` signs for `name`, localhost and 127.0.0.1, `edit` applied to its
    /// parameters, written as `name`.
    fn self_signed(
        dir: &Path,
        name: &str,
        key: &rcgen::KeyPair,
        edit: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> Cert {
        let names = vec![
            name.to_owned(),
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ];
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        edit(&mut params);
        let cert = params.self_signed(key).expect("self-signed");
        Self::write(dir, name, &key.serialize_pem(), &cert.pem())
    }

    fn write(dir: &Path, name: &str, key: &str, cert: &str) -> Cert {
        let combined = dir.join(format!("{name}.pem"));
        let cert_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&combined, format!("{key}{cert}")).expect("write pem");
        std::fs::write(&cert_path, cert).expect("write crt");
        std::fs::write(&key_path, key).expect("write key");
        for p in [&combined, &key_path] {
            set_mode(p, 0o640);
        }
        Cert {
            combined,
            cert: cert_path,
            key: key_path,
        }
    }

    /// The guide's own recipe, run with openssl: `openssl genrsa -out key.pem BITS` and a
    /// self-signed certificate. With 1024 bits rustls must refuse the key.
    pub fn openssl_rsa(dir: &Path, name: &str, bits: u32) -> Cert {
        let openssl = require("openssl");
        let key_path = dir.join(format!("{name}.key"));
        let cert_path = dir.join(format!("{name}.crt"));
        run(Command::new(&openssl)
            .args(["genrsa", "-out"])
            .arg(&key_path)
            .arg(bits.to_string()));
        run(Command::new(&openssl)
            .args([
                "req",
                "-new",
                "-x509",
                "-days",
                "365",
                "-subj",
                "/CN=redis",
                "-key",
            ])
            .arg(&key_path)
            .arg("-out")
            .arg(&cert_path));
        let key = std::fs::read_to_string(&key_path).expect("read key");
        let cert = std::fs::read_to_string(&cert_path).expect("read cert");
        Self::write(dir, name, &key, &cert)
    }
}

/// Seconds since 1970 now (certificate dates are in these).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A private certificate authority, for the explicit `CAfile` + `verifyChain` settings.
#[derive(Debug)]
pub struct Ca {
    /// The CA certificate, as `CAfile` names it.
    pub cert: PathBuf,
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().expect("ca key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let cert = params.self_signed(&key).expect("ca cert");
        let path = dir.join(format!("{name}.crt"));
        std::fs::write(&path, cert.pem()).expect("write ca");
        Ca {
            cert: path,
            params,
            key,
        }
    }

    /// A certificate for `names` signed by this CA, written like [`Cert::new`]'s.
    pub fn issue(&self, dir: &Path, file: &str, names: &[&str]) -> Cert {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("params");
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("sign");
        Cert::write(dir, file, &key.serialize_pem(), &cert.pem())
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real `redis-server` with `requirepass` on an ephemeral loopback port, its data in a
/// temp dir; killed when dropped.
#[derive(Debug)]
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    pub password: String,
    dir: tempfile::TempDir,
}

impl Redis {
    pub const PASSWORD: &'static str = "s3cret-gluu";

    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut redis = Redis {
            child: None,
            port: 0,
            password: Self::PASSWORD.to_owned(),
            dir,
        };
        // Another process may take the port between free_port() and redis binding it.
        for _ in 0..5 {
            redis.port = free_port();
            if redis.spawn() {
                return redis;
            }
        }
        panic!("redis-server did not start; see {}", redis.log().display());
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new(require("redis-server"))
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--requirepass",
                &self.password,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false; // exited: port taken
            }
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn ping(&self) -> bool {
        let Ok(mut c) = self.connect_to(self.addr()) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut c).is_ok()
    }

    /// An authenticated connection to `addr` (Redis itself or a tunnel in front of it).
    pub fn connect_to(&self, addr: SocketAddr) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open((addr.ip().to_string(), addr.port()))?;
        let mut con = client.get_connection_with_timeout(Duration::from_secs(5))?;
        con.set_read_timeout(Some(Duration::from_secs(30)))?;
        redis::cmd("AUTH")
            .arg(&self.password)
            .query::<String>(&mut con)?;
        Ok(con)
    }

    /// Kills Redis (as a crash would) and starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the real nginx with `conf` (prefix `dir`, `daemon off;` in the file) and waits
/// until it listens on `wait_on` (its own socket: [`listens`]); panics with nginx's error
/// log if it exits first (another program took the port: a bind error there).
pub fn nginx(dir: &Path, conf: &Path, wait_on: SocketAddr) -> Proc {
    let mut proc = Proc::spawn_group(
        Command::new(require("nginx"))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(conf),
    );
    wait_for(Duration::from_secs(10), "nginx to listen", || {
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!(
                "nginx exited with {status}: {}\n{}",
                proc.seen.join("\n"),
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
        }
        listens(proc.child.id(), wait_on).then_some(())
    });
    proc
}

/// The top of a test nginx.conf: foreground, one worker, pid and error log in `dir`.
pub fn nginx_prelude(dir: &Path) -> String {
    format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 256; }}\n",
        d = dir.display()
    )
}

/// nginx's workers run as nobody: opens `dir` and `cert`'s key files to them.
pub fn readable_by_nginx(dir: &Path, cert: Option<&Cert>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    for p in cert.iter().flat_map(|c| [&c.key, &c.combined]) {
        set_mode(p, 0o644);
    }
}

/// A plain HTTP/1.0 GET from `source` (any 127.0.0.0/8 address); returns the body.
pub fn get_from(source: std::net::Ipv4Addr, to: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.bind(&SocketAddr::from((source, 0)).into())
        .expect("bind source");
    sock.connect_timeout(&to.into(), Duration::from_secs(5))
        .expect("connect");
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out.rsplit("\r\n\r\n").next().unwrap_or_default().to_owned()
}

/// The guide's nginx.conf for the load balancer, as the guide prints it.
pub const GUIDE_NGINX_CONF: &str = include_str!("../../lb/tests/data/guide-nginx.conf");

/// The guide's nginx.conf with the two nodes' addresses, the port-80 and port-443 `listen`
/// values (`127.0.0.1:0`, or `127.0.0.1:PORT http2`, say), and `cert` as httpd.crt/.key.
pub fn guide_nginx(nodes: &[SocketAddr], cert: &Cert, http: &str, https: &str) -> String {
    GUIDE_NGINX_CONF
        .replace("159.203.126.10:443", &nodes[0].to_string())
        .replace("138.197.65.243:443", &nodes[1].to_string())
        .replace("listen       80;", &format!("listen {http};"))
        .replace("listen 443;", &format!("listen {https};"))
        .replace("/etc/nginx/ssl/httpd.crt", &cert.cert.display().to_string())
        .replace("/etc/nginx/ssl/httpd.key", &cert.key.display().to_string())
}

/// The guide's nginx.conf (as [`guide_nginx`] writes it) tuned for upstream keep-alive the
/// way nginx's documentation says, and the issue's benchmark does: `keepalive 32;` in each
/// upstream, `proxy_http_version 1.1; proxy_set_header Connection "";` in each location.
pub fn keepalive_tuned(guide: &str) -> String {
    guide
        .replace("fail_timeout=10s;\n  }", "fail_timeout=10s;\n  keepalive 32;\n  }")
        .replace(
            "proxy_redirect          off;",
            "proxy_redirect off;\n        proxy_http_version 1.1;\n        proxy_set_header Connection \"\";",
        )
}

/// A child process killed when dropped (daemons under test, stunnel).
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    /// Spawned as the leader of its own process group, which a drop kills whole (nginx's
    /// workers outlive a master killed alone).
    group: bool,
    /// Lines the process wrote to stderr, as they come.
    pub stderr: mpsc::Receiver<String>,
    /// Every stderr line seen so far (filled by [`Proc::wait_line`]).
    pub seen: Vec<String>,
    /// The program, for the stderr a failing test prints when the process is dropped.
    program: String,
}

/// A failing test prints at most this many of each process's last stderr lines.
const LAST_LINES: usize = 200;

impl Proc {
    /// Spawns `cmd` with stderr captured line by line.
    pub fn spawn(cmd: &mut Command) -> Proc {
        Self::start(cmd, false)
    }

    /// [`Proc::spawn`] for a program that forks workers of its own: in a process group of
    /// its own, all of which goes when the `Proc` is dropped.
    pub fn spawn_group(cmd: &mut Command) -> Proc {
        Self::start(cmd.process_group(0), true)
    }

    fn start(cmd: &mut Command, group: bool) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let program = cmd.get_program().to_string_lossy().into_owned();
        let err = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            group,
            stderr: rx,
            seen: Vec::new(),
            program,
        }
    }

    /// Waits for a stderr line containing `needle` and returns it.
    pub fn wait_line(&mut self, needle: &str, limit: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line containing {needle:?} within {limit:?}; got:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The address in a gluu daemon's `[NAME] listening on ADDR` start-up line.
    pub fn listening_addr(&mut self, service: &str) -> SocketAddr {
        let line = self.wait_line(
            &format!("[{service}] listening on "),
            Duration::from_secs(20),
        );
        let addr = line.rsplit(' ').next().unwrap_or_default();
        addr.parse()
            .unwrap_or_else(|_| panic!("no address at the end of {line:?}"))
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits")
    }

    /// A graceful stop: SIGTERM, then up to `limit` for the exit (SIGKILL after that).
    /// Returns the exit status when it stopped by itself.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// For a failing test: the process's last stderr lines (it has exited; the reader
    /// thread gets what the pipe still holds within a second).
    fn print_last_lines(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while let Ok(line) = self
            .stderr
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        let skip = self.seen.len().saturating_sub(LAST_LINES);
        eprintln!(
            "--- {} (pid {}): last {} stderr lines ---",
            self.program,
            self.child.id(),
            self.seen.len() - skip
        );
        for line in &self.seen[skip..] {
            eprintln!("{line}");
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.group {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.pid()),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            self.print_last_lines();
        }
    }
}

/// Every file under `dir` whose content is `content`.
pub fn find_content(dir: &Path, content: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(find_content(&path, content));
        } else if std::fs::read(&path).is_ok_and(|c| c == content) {
            out.push(path);
        }
    }
    out
}

/// systemd's notification socket, as a test sees it: spawn a daemon with
/// `NOTIFY_SOCKET=path` (and `WATCHDOG_USEC` to ask for watchdog pings) and read what it says.
#[derive(Debug)]
pub struct NotifySocket {
    pub path: PathBuf,
    sock: std::os::unix::net::UnixDatagram,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket { path, sock }
    }

    /// The next notification; panics after `limit` without one.
    pub fn recv(&self, limit: Duration) -> String {
        self.sock.set_read_timeout(Some(limit)).expect("timeout");
        let mut buf = [0u8; 4096];
        let n = self
            .sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification within {limit:?}: {e}"));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Reads notifications until one contains `needle`, within `limit`.
    pub fn wait_for(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no notification with {needle:?} within {limit:?}"
            );
            let got = self.recv(left);
            if got.contains(needle) {
                return got;
            }
        }
    }
}

/// Which of the guide's two stunnel files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `/etc/stunnel/redis-server.conf`: TLS in, plaintext to Redis.
    RedisHost,
    /// `/etc/stunnel/redis-client.conf` on each node, with the `client = yes` the guide omits.
    Node,
}

/// One of the guide's stunnel files with our addresses; `globals` are extra lines before
/// the `[redis]` section (pid, output, metrics, verification options).
pub fn guide_conf(
    side: Side,
    cert: &Path,
    globals: &str,
    accept: impl std::fmt::Display,
    connect: impl std::fmt::Display,
) -> String {
    let client = if side == Side::Node {
        "client = yes\n"
    } else {
        ""
    };
    let sep = if globals.is_empty() || globals.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    format!(
        "cert = {}\n{client}{globals}{sep}[redis]\naccept = {accept}\nconnect = {connect}\n",
        cert.display()
    )
}

/// The real Debian stunnel with `config` (written to `dir`), logging only to a file (as the
/// benchmarks need to be fair: `foreground = yes` would also copy every line to stderr);
/// waits until it listens on `wait_on` (its own socket: [`listens`]).
pub fn stunnel(dir: &Path, name: &str, config: &str, wait_on: SocketAddr) -> Proc {
    let path = dir.join(format!("{name}.conf"));
    let log = dir.join(format!("{name}.log"));
    let text = format!(
        "foreground = quiet\npid =\nsyslog = no\noutput = {}\n{config}",
        log.display()
    );
    std::fs::write(&path, text).expect("write stunnel config");
    let mut proc = Proc::spawn(Command::new(require("stunnel")).arg(&path));
    wait_for(Duration::from_secs(10), "stunnel to listen", || {
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!(
                "stunnel exited with {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        listens(proc.child.id(), wait_on).then_some(())
    });
    proc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listens_names_the_process_holding_the_socket() {
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let held = TcpListener::bind(host).expect("bind");
            let addr = held.local_addr().expect("addr");
            assert!(listens(std::process::id(), addr), "{addr}: ours");
            assert!(!listens(1, addr), "{addr}: not init's");
            drop(held);
            assert!(!listens(std::process::id(), addr), "{addr}: closed");
        }
    }
}
