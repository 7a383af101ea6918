//! The configuration: nginx's grammar ([`grammar`]) read into a directive tree, then into
//! typed blocks ([`upstream`], [`server`], [`location`], [`proxy`]) with nginx's meaning. Directives
//! gluu-lb does not (yet) support are errors naming file, line and directive, never
//! silently ignored. Warnings (`ssl on;`, a redirect to a host no `server_name` has) are
//! collected for `-t` and start-up.

pub mod access;
pub mod cond;
pub mod cookie;
pub mod grammar;
pub mod gzip;
pub mod limit;
pub mod location;
pub mod log_format;
pub mod map;
pub mod pages;
pub mod proxy;
pub mod realip;
pub mod server;
pub mod stock;
pub mod tls;
pub mod upstream;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use grammar::{Directive, GrammarError};
use proxy::ProxySettings;
use server::Server;
use upstream::Upstream;

/// Something that runs but deserves the admin's attention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub at: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {}", self.message, self.at)
    }
}

/// What reading a block's lines needs besides the lines: where relative paths start (the
/// main file's directory) and the `map`s of `http`.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    pub root: &'a Path,
    pub maps: &'a map::Maps,
    /// The `charset` names of the http block, each as first spelled (nginx keeps one
    /// table of charsets, by name without regard to case, and names each as it first
    /// came).
    pub charsets: &'a [String],
}

/// The charset names of `charset` lines in `block` and the blocks in it, in file order,
/// each once (its first spelling).
fn charset_names(block: &[Directive], names: &mut Vec<String>) {
    for d in block {
        if let (true, [name]) = (d.name == "charset", d.args.as_slice())
            && name != "off"
            && !names.iter().any(|n| n.eq_ignore_ascii_case(name))
        {
            names.push(name.clone());
        }
        charset_names(d.block.as_deref().unwrap_or_default(), names);
    }
}

/// nginx's default `worker_connections`.
const DEFAULT_WORKER_CONNECTIONS: usize = 512;

/// `error_log FILE [LEVEL]`: where gluu-lb's own log goes (`stderr` is a file name nginx
/// knows too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorLog {
    /// `None` for `stderr`.
    pub path: Option<PathBuf>,
    pub level: tracing::Level,
}

/// Per-connection limits on clients, set in `http { }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// `client_header_timeout` (60s): the longest a client may take to send a request's
    /// headers; hyper's timer also runs while a keep-alive connection waits for its next
    /// request, so it is the idle limit as well.
    pub header_timeout: Duration,
    /// `large_client_header_buffers N SIZE`: the request line and headers together may use
    /// N * SIZE bytes (nginx's default 4 8k: 32 KiB); more is answered 431.
    pub max_header_bytes: usize,
    /// `ssl_handshake_timeout` (60s, nginx 1.25's directive).
    pub handshake_timeout: Duration,
    /// `send_timeout` (60s): the longest a write to the client may wait for it to read.
    pub send_timeout: Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(60),
            max_header_bytes: 4 * 8192,
            handshake_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
        }
    }
}

/// A validated nginx.conf.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    /// Every file the configuration was read from, with its text as read: `path`, then
    /// its includes.
    pub sources: Vec<grammar::Source>,
    /// `events { worker_connections N; }`: connections at once, client and upstream sides
    /// counted together, as nginx counts them.
    pub worker_connections: usize,
    /// `worker_processes N`: threads serving connections, each with its own event loop and
    /// upstream pools (nginx's worker processes). `None` (`auto`, or no line): one per core.
    pub workers: Option<usize>,
    /// `worker_shutdown_timeout` (default 30 s, nginx's is unbounded): how long a graceful
    /// stop waits for open requests.
    pub shutdown_timeout: Duration,
    pub pid: Option<PathBuf>,
    /// `user USER [GROUP]`: privileges dropped to after binding.
    pub user: Option<(String, Option<String>)>,
    pub error_log: Option<ErrorLog>,
    /// `metrics ADDRESS:PORT` in `http { }` (gluu-lb's own directive): Prometheus text at
    /// `/metrics`, every upstream server's state as JSON at `/status`.
    pub metrics: Option<SocketAddr>,
    pub limits: ClientLimits,
    /// `limit_req_zone` lines, in file order.
    pub limit_zones: Vec<limit::ZoneDef>,
    /// `log_format` lines, in file order.
    pub log_formats: Vec<Arc<log_format::LogFormat>>,
    pub upstreams: Vec<Upstream>,
    pub servers: Vec<Server>,
    pub warnings: Vec<Warning>,
}

/// nginx's words for a shared memory zone's name taken by another kind of zone.
fn different_use(name: &str, first: &grammar::Place) -> String {
    format!(
        "the shared memory zone \"{name}\" is already declared for a different use (at {first})"
    )
}

fn block(d: &Directive) -> Result<&[Directive], GrammarError> {
    d.block
        .as_deref()
        .ok_or_else(|| d.error(format!("directive \"{}\" has no opening \"{{\"", d.name)))
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, GrammarError> {
        // Named in full from here on, as nginx names it (in errors, `-T`, reloads).
        let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let (top, sources) = grammar::parse_file_and_sources(path)?;
        let root = path.parent().unwrap_or(Path::new("."));
        let mut c = Config {
            path: path.to_owned(),
            sources,
            worker_connections: DEFAULT_WORKER_CONNECTIONS,
            workers: None,
            shutdown_timeout: Duration::from_secs(30),
            pid: None,
            user: None,
            error_log: None,
            metrics: None,
            limits: ClientLimits::default(),
            limit_zones: Vec::new(),
            log_formats: Vec::new(),
            upstreams: Vec::new(),
            servers: Vec::new(),
            warnings: Vec::new(),
        };
        let mut http_seen = false;
        let mut events_seen = false;
        let mut http2 = false;
        // `error_log` of the main context and of `http { }`, with where each was set.
        let (mut main_log, mut http_log) = (None, None);
        for d in &top {
            match d.name.as_str() {
                "worker_processes" => {
                    c.workers = match d.one_arg()? {
                        "auto" => None,
                        n => Some(n.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                            d.error(format!("invalid value \"{n}\" in \"worker_processes\""))
                        })?),
                    };
                }
                "worker_shutdown_timeout" => c.shutdown_timeout = proxy::time(d)?,
                "pid" => c.pid = Some(root.join(d.one_arg()?)),
                "user" => {
                    c.user = match d.args.as_slice() {
                        [u] => Some((u.clone(), None)),
                        [u, g] => Some((u.clone(), Some(g.clone()))),
                        _ => {
                            return Err(
                                d.error("invalid number of arguments in \"user\" directive")
                            );
                        }
                    }
                }
                "error_log" => main_log = Some((error_log(d, root)?, &d.place)),
                "events" => {
                    events_seen = true;
                    for e in block(d)? {
                        match (e.name.as_str(), e.args.as_slice()) {
                            ("worker_connections", [n]) => {
                                c.worker_connections =
                                    n.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(
                                        || {
                                            e.error(format!(
                                                "invalid number \"{n}\" in \"worker_connections\" \
                                                 directive"
                                            ))
                                        },
                                    )?;
                            }
                            _ => {
                                return Err(
                                    e.error(format!("unknown directive \"{}\" in events", e.name))
                                );
                            }
                        }
                    }
                }
                "http" => {
                    http_seen = true;
                    let body = block(d)?;
                    let maps = map::Maps::read(body, &mut c.warnings)?;
                    let mut charsets = Vec::new();
                    charset_names(body, &mut charsets);
                    let cx = Scope {
                        root,
                        maps: &maps,
                        charsets: &charsets,
                    };
                    let mut settings = proxy::inherit(&ProxySettings::default(), body);
                    let mut tls = tls::TlsSettings::default();
                    let mut own = Vec::new();
                    for h in body {
                        if !proxy::apply(&mut settings, h, &cx, &mut c.warnings)?
                            && !tls::apply(&mut tls, h, root, &mut c.warnings)?
                        {
                            own.push(h);
                        }
                    }
                    for h in own {
                        match h.name.as_str() {
                            "upstream" => {
                                let u = upstream::upstream(h, &mut c.warnings)?;
                                if let Some(prev) = c.upstreams.iter().find(|p| p.name == u.name) {
                                    return Err(h.error(format!(
                                        "duplicate upstream \"{}\" (first at {})",
                                        u.name, prev.place
                                    )));
                                }
                                if let Some(z) = &u.zone {
                                    c.check_upstream_zone(z)?;
                                }
                                c.upstreams.push(u);
                            }
                            "map" => {}
                            // Sizes of nginx's lookup tables; gluu-lb's maps grow as needed.
                            "map_hash_max_size" | "map_hash_bucket_size" => {
                                h.one_arg()?.parse::<u32>().map_err(|_| {
                                    h.error(format!("\"{}\" directive invalid number", h.name))
                                })?;
                            }
                            "server" => c.servers.push(server::server(
                                h,
                                &cx,
                                &settings,
                                &tls,
                                &mut c.warnings,
                            )?),
                            "http2" => http2 = h.on_off()?,
                            "log_format" => {
                                let f = log_format::log_format(h, &maps)?;
                                if f.name == "combined"
                                    || c.log_formats.iter().any(|p| p.name == f.name)
                                {
                                    return Err(h.error(format!(
                                        "duplicate \"log_format\" name \"{}\"",
                                        f.name
                                    )));
                                }
                                c.log_formats.push(Arc::new(f));
                            }
                            "limit_req_zone" | "limit_conn_zone" => {
                                let z = limit::zone(h)?;
                                if let Some(prev) = c.upstream_zones().find(|p| p.name == z.name) {
                                    return Err(h.error(different_use(&z.name, &prev.place)));
                                }
                                if let Some(prev) = c.limit_zones.iter().find(|p| p.name == z.name)
                                {
                                    return Err(h.error(
                                        if prev.rate.is_some() == z.rate.is_some() {
                                            format!(
                                                "{} \"{}\" is already bound to key \"{}\" (at {})",
                                                h.name, z.name, prev.key, prev.place
                                            )
                                        } else {
                                            different_use(&z.name, &prev.place)
                                        },
                                    ));
                                }
                                c.limit_zones.push(z);
                            }
                            "error_log" => http_log = Some((error_log(h, root)?, &h.place)),
                            "metrics" => {
                                let v = h.one_arg()?;
                                let addr = v.parse::<SocketAddr>().map_err(|_| {
                                    h.error(format!(
                                        "invalid address \"{v}\" in \"metrics\" directive \
                                         (write ADDRESS:PORT, e.g. 127.0.0.1:9145)"
                                    ))
                                })?;
                                if !addr.ip().is_loopback() {
                                    c.warnings.push(Warning {
                                        at: h.place.to_string(),
                                        message: format!(
                                            "metrics on {addr}, not a loopback address: the \
                                             status of every node is readable from the network"
                                        ),
                                    });
                                }
                                c.metrics = Some(addr);
                            }
                            "client_header_timeout" => c.limits.header_timeout = proxy::time(h)?,
                            "ssl_handshake_timeout" => c.limits.handshake_timeout = proxy::time(h)?,
                            "send_timeout" => c.limits.send_timeout = proxy::time(h)?,
                            "large_client_header_buffers" => {
                                c.limits.max_header_bytes = header_buffers(h)?
                            }
                            other => {
                                return Err(
                                    h.error(format!("unknown directive \"{other}\" in http"))
                                );
                            }
                        }
                    }
                }
                other => return Err(d.error(format!("unknown directive \"{other}\""))),
            }
        }
        if let (Some((_, main)), Some((http, place))) = (&main_log, &http_log) {
            c.warnings.push(Warning {
                at: place.to_string(),
                message: format!(
                    "\"error_log\" is also set in the main context ({main}): gluu-lb, one \
                     process, writes everything to this one ({}), where nginx writes its \
                     process messages (start, reload, signals) to the other",
                    http.path
                        .as_deref()
                        .map_or("stderr".into(), |p| p.display().to_string())
                ),
            });
        }
        c.error_log = http_log.or(main_log).map(|(log, _)| log);
        if http2 {
            for l in c.servers.iter_mut().flat_map(|s| &mut s.listen) {
                l.http2 |= l.ssl;
            }
        }
        let missing = |message: &str| GrammarError {
            at: path.display().to_string(),
            message: message.to_owned(),
        };
        if !events_seen {
            // nginx refuses to start without one, even an empty `events { }`.
            return Err(missing("no \"events\" section in configuration"));
        }
        if !http_seen {
            return Err(missing("no \"http\" block: nothing to serve"));
        }
        c.check_upstream_references()?;
        c.check_limit_zones()?;
        if let Some(z) = c.upstream_zones().find(|z| {
            z.size.is_none()
                && !c
                    .upstream_zones()
                    .any(|o| o.name == z.name && o.size.is_some())
        }) {
            return Err(GrammarError::at(
                &z.place,
                format!(
                    "zero size shared memory zone \"{}\" (give it a size: zone {} 64k;)",
                    z.name, z.name
                ),
            ));
        }
        c.check_log_formats()?;
        c.check_shared_addresses()?;
        c.check_redirect_hosts();
        Ok(c)
    }

    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    fn check_upstream_references(&self) -> Result<(), GrammarError> {
        for l in self.servers.iter().flat_map(|s| &s.locations) {
            if let Some(pass) = &l.proxy_pass
                && self.upstream(&pass.upstream).is_none()
            {
                return Err(GrammarError {
                    at: l.place.to_string(),
                    message: format!(
                        "host not found in upstream \"{}\" (proxy_pass names an upstream block)",
                        pass.upstream
                    ),
                });
            }
        }
        Ok(())
    }

    /// The `log_format` of an `access_log` line; `None` for `combined`.
    pub fn log_format(&self, name: &str) -> Option<Arc<log_format::LogFormat>> {
        self.log_formats.iter().find(|f| f.name == name).cloned()
    }

    /// Every `access_log` names `combined` or a `log_format`.
    fn check_log_formats(&self) -> Result<(), GrammarError> {
        let settings = self.servers.iter().flat_map(|s| {
            std::iter::once(&s.settings).chain(s.locations.iter().map(|l| &l.settings))
        });
        for a in settings.flat_map(|s| &s.access_logs) {
            if a.format != "combined" && self.log_format(&a.format).is_none() {
                return Err(GrammarError::at(
                    &a.place,
                    format!("unknown log format \"{}\"", a.format),
                ));
            }
        }
        Ok(())
    }

    /// Every `limit_req` names a `limit_req_zone`, every `limit_conn` a `limit_conn_zone`
    /// (defined anywhere in `http`, as in nginx).
    fn upstream_zones(&self) -> impl Iterator<Item = &upstream::Zone> {
        self.upstreams.iter().filter_map(|u| u.zone.as_ref())
    }

    /// nginx's checks of an upstream's `zone` against the zones declared before it: one
    /// name is one piece of shared memory, of one size and for one use.
    fn check_upstream_zone(&self, z: &upstream::Zone) -> Result<(), GrammarError> {
        if let Some(prev) = self.limit_zones.iter().find(|p| p.name == z.name) {
            return Err(GrammarError::at(
                &z.place,
                different_use(&z.name, &prev.place),
            ));
        }
        let sized = self
            .upstream_zones()
            .find(|p| p.name == z.name && p.size.is_some() && z.size.is_some());
        match sized {
            Some(prev) if prev.size != z.size => Err(GrammarError::at(
                &z.place,
                format!(
                    "the size {} of shared memory zone \"{}\" conflicts with already declared \
                     size {} (at {})",
                    z.size.unwrap_or_default(),
                    z.name,
                    prev.size.unwrap_or_default(),
                    prev.place
                ),
            )),
            _ => Ok(()),
        }
    }

    fn check_limit_zones(&self) -> Result<(), GrammarError> {
        let settings: Vec<&ProxySettings> = self
            .servers
            .iter()
            .flat_map(|s| {
                std::iter::once(&s.settings).chain(s.locations.iter().map(|l| &l.settings))
            })
            .collect();
        let lines = settings
            .iter()
            .flat_map(|s| s.limit.limits.iter().map(|l| (l as &dyn limit::Line, true)))
            .chain(settings.iter().flat_map(|s| {
                s.limit_conn
                    .limits
                    .iter()
                    .map(|l| (l as &dyn limit::Line, false))
            }));
        for (l, req) in lines {
            let message = match self.limit_zones.iter().find(|z| z.name == l.zone()) {
                None => format!(
                    "zero size shared memory zone \"{}\" (no {} defines it)",
                    l.zone(),
                    if req {
                        "limit_req_zone"
                    } else {
                        "limit_conn_zone"
                    }
                ),
                Some(z) if z.rate.is_some() != req => different_use(l.zone(), &z.place),
                Some(_) => continue,
            };
            return Err(GrammarError::at(l.place(), message));
        }
        Ok(())
    }

    /// nginx's checks across the servers of one address: one `default_server` at most (an
    /// error), and a `server_name` claimed by two of them (a warning: the first keeps it).
    /// Port 0 (tests) is a socket of its own per line.
    fn check_shared_addresses(&mut self) -> Result<(), GrammarError> {
        let mut defaults: Vec<SocketAddr> = Vec::new();
        let mut names: Vec<(SocketAddr, &str, usize)> = Vec::new();
        let mut found = Vec::new();
        for (i, s) in self.servers.iter().enumerate() {
            for l in s.listen.iter().filter(|l| l.addr.port() != 0) {
                if l.default_server {
                    if defaults.contains(&l.addr) {
                        return Err(GrammarError {
                            at: l.place.to_string(),
                            message: format!("a duplicate default server for {}", l.addr),
                        });
                    }
                    defaults.push(l.addr);
                }
                for n in &s.names {
                    match names.iter().find(|(a, m, _)| *a == l.addr && m == n) {
                        Some((_, _, j)) if *j != i => found.push(Warning {
                            at: s.place.to_string(),
                            message: format!(
                                "conflicting server name \"{n}\" on {}, ignored",
                                l.addr
                            ),
                        }),
                        Some(_) => {}
                        None => names.push((l.addr, n, i)),
                    }
                }
            }
        }
        self.warnings.extend(found);
        Ok(())
    }

    /// The guide redirects to `loadbalance.example.org` where every server is
    /// `loadbalancer.example.org`: a redirect to a host no `server_name` has, but one edit
    /// or two away from one, is flagged.
    fn check_redirect_hosts(&mut self) {
        let names: Vec<&str> = self
            .servers
            .iter()
            .flat_map(|s| s.names.iter().map(String::as_str))
            .collect();
        let mut found = Vec::new();
        for r in self.servers.iter().filter_map(|s| s.ret.as_ref()) {
            let Some(host) = r.target.as_deref().and_then(redirect_host) else {
                continue;
            };
            if names.contains(&host) {
                continue;
            }
            if let Some(near) = names.iter().find(|n| edit_distance(n, host) <= 2) {
                found.push(Warning {
                    at: r.place.to_string(),
                    message: format!(
                        "redirect to host \"{host}\", which no server_name has; did you mean \
                         \"{near}\"?"
                    ),
                });
            }
        }
        self.warnings.extend(found);
    }
}

/// The literal host of a redirect URL (`https://HOST[:port][/...|$var]`).
/// nginx's `syslog:` and `memory:` log destinations, which gluu-lb does not have: refused,
/// rather than taken as a file of that name.
pub(super) fn log_file(d: &Directive, path: &str) -> Result<(), GrammarError> {
    match path.split_once(':') {
        Some((kind @ ("syslog" | "memory"), _)) => Err(d.error(format!(
            "\"{} {kind}:...\" is not supported: gluu-lb writes its logs to files, or to \
             stderr, which systemd's journal keeps; have the syslog daemon read the file",
            d.name
        ))),
        _ => Ok(()),
    }
}

fn error_log(d: &Directive, root: &Path) -> Result<ErrorLog, GrammarError> {
    let (file, level) = match d.args.as_slice() {
        [f] => (f, "error"),
        [f, l] => (f, l.as_str()),
        _ => {
            return Err(d.error("invalid number of arguments in \"error_log\" directive"));
        }
    };
    log_file(d, file)?;
    let level = match level {
        "debug" => tracing::Level::DEBUG,
        "info" | "notice" => tracing::Level::INFO,
        "warn" => tracing::Level::WARN,
        "error" | "crit" | "alert" | "emerg" => tracing::Level::ERROR,
        other => return Err(d.error(format!("invalid log level \"{other}\""))),
    };
    Ok(ErrorLog {
        path: (file != "stderr").then(|| root.join(file)),
        level,
    })
}

fn header_buffers(d: &Directive) -> Result<usize, GrammarError> {
    let [n, size] = d.args.as_slice() else {
        return Err(
            d.error("invalid number of arguments in \"large_client_header_buffers\" directive")
        );
    };
    let n = n.parse::<u64>().ok().filter(|n| *n > 0);
    let size = proxy::parse_size(size).filter(|s| *s >= 1024);
    n.zip(size)
        .and_then(|(n, s)| usize::try_from(n.checked_mul(s)?).ok())
        .ok_or_else(|| d.error("invalid value in \"large_client_header_buffers\" directive"))
}

fn redirect_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let end = rest.find(['/', ':', '$', '?']).unwrap_or(rest.len());
    Some(&rest[..end]).filter(|h| !h.is_empty())
}

/// Levenshtein distance, for spotting typos in host names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(prev + usize::from(ca != *cb));
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, GrammarError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, text).expect("write");
        Config::load(&path)
    }

    const BASE: &str = "upstream b { server 10.0.0.1:443; }\n";

    #[test]
    fn distances_and_hosts() {
        assert_eq!(
            edit_distance("loadbalancer.example.org", "loadbalance.example.org"),
            1
        );
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(
            redirect_host("https://h.example.org$request_uri"),
            Some("h.example.org")
        );
        assert_eq!(redirect_host("https://h:8443/x"), Some("h"));
        assert_eq!(redirect_host("/relative"), None);
    }

    #[test]
    fn errors_name_the_directive_and_line() {
        let cases = [
            (
                "events { worker_connections 0; }\nhttp { }",
                "invalid number \"0\" in \"worker_connections\" directive",
                ":1",
            ),
            (
                "events { use epoll; }\nhttp { }",
                "unknown directive \"use\" in events",
                ":1",
            ),
            ("gzip on;\nhttp { }", "unknown directive \"gzip\"", ":1"),
            (
                "\nworker_processes 0;\nhttp { }",
                "invalid value \"0\" in \"worker_processes\"",
                ":2",
            ),
            (
                "worker_processes 2 4;\nhttp { }",
                "invalid number of arguments in \"worker_processes\"",
                ":1",
            ),
            (
                "http { }\nhttp { }",
                "\"http\" directive is duplicate",
                ":2",
            ),
            (
                "http {\n ssi on;\n}",
                "unknown directive \"ssi\" in http",
                ":2",
            ),
            (
                "http {\n upstream b { server a:1; }\n upstream b { server c:1; }\n}",
                "duplicate upstream \"b\"",
                ":3",
            ),
            (
                "events { } http {\n server {\n  location / { proxy_pass https://nowhere; }\n }\n}",
                "host not found in upstream \"nowhere\"",
                ":3",
            ),
            (
                "http {\n server {\n  listen 443 ssl;\n }\n}",
                "no \"ssl_certificate\"",
                ":2",
            ),
            (
                "http {\n server {\n  listen 443 quic;\n }\n}",
                "invalid parameter \"quic\"",
                ":3",
            ),
            (
                "http {\n server {\n  listen 443 ssl;\n  ssl_protocols TLSv1 TLSv1.1;\n }\n}",
                "\"ssl_protocols TLSv1 TLSv1.1\": gluu-lb speaks only TLSv1.2 and TLSv1.3",
                ":4",
            ),
            (
                "http {\n server {\n  listen 443 ssl;\n  ssl_protocols TLSv1.2 TLSv1.4;\n }\n}",
                "invalid value \"TLSv1.4\"",
                ":4",
            ),
            (
                "http {\n keepalive_timeout 65;\n keepalive_timeout 75;\n}",
                "\"keepalive_timeout\" directive is duplicate",
                ":3",
            ),
            (
                "http {\n server {\n  return 999;\n }\n}",
                "invalid return code \"999\"",
                ":3",
            ),
            (
                "events { }\nhttp {\n error_page 502 @down;\n server {\n  location @up { }\n }\n}",
                "no \"location @down\" in the server at",
                ":3",
            ),
            (
                "http {\n server {\n  try_files $uri =404;\n }\n}",
                "unknown directive \"try_files\" in server",
                ":3",
            ),
            (
                "http {\n server {\n  listen 8080;\n  listen 8080;\n }\n}",
                "a duplicate listen 0.0.0.0:8080",
                ":4",
            ),
            (
                "events { } http {\n server { listen 8080 default_server; }\n server { listen 8080 default_server; }\n}",
                "a duplicate default server for 0.0.0.0:8080",
                ":3",
            ),
            (
                "http {\n server {\n  location /a { }\n  location ^~ /a { }\n }\n}",
                "duplicate location \"/a\"",
                ":4",
            ),
            (
                "http {\n server {\n  location = /a { }\n  location = /a { }\n }\n}",
                "duplicate location \"/a\"",
                ":4",
            ),
            (
                "http {\n server {\n  location /a {\n   proxy_read_timeout 5s;\n   proxy_read_timeout 9s;\n  }\n }\n}",
                "\"proxy_read_timeout\" directive is duplicate",
                ":5",
            ),
            (
                "events { }\nhttp {\n server {\n  access_log syslog:server=127.0.0.1 main;\n }\n}",
                "\"access_log syslog:...\" is not supported",
                ":4",
            ),
            (
                "events { }\nerror_log syslog:server=127.0.0.1;\nhttp { }",
                "\"error_log syslog:...\" is not supported",
                ":2",
            ),
            (
                "http {\n server {\n  error_log a.log;\n  error_log b.log;\n }\n}",
                "\"error_log\" directive is duplicate (first at",
                ":4",
            ),
            (
                "events { }\nhttp {\n upstream a { server a:1; zone z 64k; }\n\
                 upstream b { server b:1;\n zone z 128k; }\n}",
                "the size 131072 of shared memory zone \"z\" conflicts with already declared \
                 size 65536 (at ",
                ":5",
            ),
            (
                "events { }\nhttp {\n upstream a { server a:1;\n zone z; }\n}",
                "zero size shared memory zone \"z\" (give it a size: zone z 64k;)",
                ":4",
            ),
            (
                "events { }\nhttp {\n upstream a { server a:1; zone z 64k; }\n\
                 limit_req_zone $binary_remote_addr zone=z:1m rate=1r/s;\n}",
                "the shared memory zone \"z\" is already declared for a different use (at ",
                ":4",
            ),
            (
                "events { }\nhttp {\n limit_conn_zone $binary_remote_addr zone=z:1m;\n\
                 upstream a { server a:1;\n zone z 64k; }\n}",
                "the shared memory zone \"z\" is already declared for a different use (at ",
                ":5",
            ),
        ];
        for (text, want, line) in cases {
            let e = load(&format!("{text}\n")).expect_err(text).to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.ends_with(line), "{text:?}: {e}");
        }
        for (text, want) in [
            ("events { }\n", "no \"http\" block"),
            ("http { }\n", "no \"events\" section in configuration"),
            (
                "events { }\nevents { }\nhttp { }\n",
                "\"events\" directive is duplicate in",
            ),
            (
                "events { worker_connections 8;\nworker_connections 9; }\nhttp { }\n",
                "\"worker_connections\" directive is duplicate in",
            ),
        ] {
            let e = load(text).expect_err(text).to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn listen_forms_and_ssl_on() {
        let c = load(&format!(
            "events {{ }} http {{\n{BASE} server {{ listen 80; listen 127.0.0.1:8443 ssl http2; listen [::1]:9443; ssl on;\n ssl_certificate c.crt; ssl_certificate_key c.key; }}\n}}\n"
        ))
        .expect("valid");
        let s = &c.servers[0];
        assert_eq!(s.listen[0].addr, "0.0.0.0:80".parse().expect("a"));
        assert_eq!(s.listen[1].addr, "127.0.0.1:8443".parse().expect("a"));
        assert!(s.listen[1].http2);
        assert_eq!(s.listen[2].addr, "[::1]:9443".parse().expect("a"));
        assert!(
            s.listen.iter().all(|l| l.ssl),
            "ssl on makes every listen TLS"
        );
        assert!(s.tls.certificates[0].is_absolute());
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0].message.contains("deprecated"),
            "{:?}",
            c.warnings
        );
        assert_eq!(c.worker_connections, DEFAULT_WORKER_CONNECTIONS);
        assert_eq!(c.workers, None, "no worker_processes: one per core");
        // Regular expressions may repeat (the first wins), `=` and prefix share a path, and
        // a name two servers of one address claim is a warning.
        let c = load(
            "events { }\nhttp {\n server { listen 8080; server_name a; location ~ ^/a { } location ~ ^/a { }\n  location = /a { } location /a { } }\n server { listen 8080; server_name a; }\n}\n",
        )
        .expect("valid");
        assert_eq!(c.servers[0].locations.len(), 4);
        assert_eq!(
            c.warnings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [format!(
                "conflicting server name \"a\" on 0.0.0.0:8080, ignored in {}:5",
                c.path.display()
            )]
        );
        let workers = |line: &str| {
            load(&format!("{line}\nevents {{ }}\nhttp {{ }}\n"))
                .expect(line)
                .workers
        };
        assert_eq!(workers("worker_processes auto;"), None);
        assert_eq!(workers("worker_processes 3;"), Some(3));
    }

    /// TLS lines in `http` reach every server, which may set its own on top.
    #[test]
    fn tls_settings_are_inherited_from_http() {
        let c = load(
            "events { }\nhttp {\n ssl_ciphers AES256;\n ssl_session_timeout 10m;\n\
             ssl_certificate all.crt; ssl_certificate_key all.key;\n\
             server { listen 8443 ssl; ssl_session_timeout 1h; ssl_session_cache builtin:100; }\n\
             server { listen 8444 ssl; ssl_protocols TLSv1.3; ssl_session_tickets off;\n\
             ssl_certificate own.crt; ssl_certificate_key own.key;\n\
             ssl_certificate ec.crt; ssl_certificate_key ec.key; }\n}\n",
        )
        .expect("valid");
        let aes256 = vec![
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ];
        let (a, b) = (&c.servers[0].tls, &c.servers[1].tls);
        assert_eq!(a.ciphers.as_ref(), Some(&aes256));
        assert_eq!(b.ciphers.as_ref(), Some(&aes256));
        assert_eq!(a.session_timeout, Duration::from_secs(3600));
        assert_eq!(b.session_timeout, Duration::from_secs(600));
        assert_eq!(a.session_cache, tls::SessionCache::Sessions(100));
        assert_eq!(
            b.session_cache,
            tls::SessionCache::Sessions(tls::SESSION_CACHE_DEFAULT)
        );
        assert!(a.session_tickets && !b.session_tickets);
        assert_eq!(a.protocols, None);
        assert_eq!(b.protocols, Some(vec!["TLSv1.3".to_owned()]));
        let files = |p: &[PathBuf]| -> Vec<String> {
            p.iter()
                .filter_map(|p| Some(p.file_name()?.to_str()?.to_owned()))
                .collect()
        };
        assert_eq!(files(&a.certificates), ["all.crt"]);
        assert_eq!(files(&a.certificate_keys), ["all.key"]);
        // A server's own lines replace the http block's, however many.
        assert_eq!(files(&b.certificates), ["own.crt", "ec.crt"]);
        assert_eq!(files(&b.certificate_keys), ["own.key", "ec.key"]);
    }

    /// `limit_req` lines are inherited as nginx inherits lists: a block with one of its own
    /// takes none from above; the other `limit_req_*` lines are inherited one by one.
    #[test]
    fn limit_req_lines_are_inherited_as_a_list() {
        let c = load(
            "events { }\nhttp {\n limit_req_zone $binary_remote_addr zone=one:1m rate=1r/s;\n\
             limit_req_zone $binary_remote_addr zone=two:1m rate=1r/s;\n\
             limit_req zone=one; limit_req_status 429;\n\
             server { listen 80;\n location /a { }\n location /b { limit_req zone=two burst=3; }\n\
             location /c { limit_req_dry_run on; } }\n}\n",
        )
        .expect("valid");
        let s = &c.servers[0];
        let zones = |l: &proxy::ProxySettings| -> Vec<String> {
            l.limit.limits.iter().map(|x| x.zone.clone()).collect()
        };
        assert_eq!(zones(&s.settings), ["one"]);
        assert_eq!(zones(&s.locations[0].settings), ["one"]);
        assert_eq!(zones(&s.locations[1].settings), ["two"]);
        assert_eq!(zones(&s.locations[2].settings), ["one"]);
        assert!(s.locations.iter().all(|l| l.settings.limit.status == 429));
        assert!(s.locations[2].settings.limit.dry_run && !s.locations[0].settings.limit.dry_run);
    }

    /// `allow` and `deny` make one list, inherited as nginx inherits it.
    #[test]
    fn allow_and_deny_are_inherited_as_one_list() {
        let c = load(
            "events { }\nhttp {\n allow 10.0.0.0/8; deny all;\n\
             server { listen 80;\n location /a { }\n location /b { allow 127.0.0.1; } }\n}\n",
        )
        .expect("valid");
        let s = &c.servers[0];
        let ip = |v: &str| v.parse::<std::net::IpAddr>().expect("ip");
        let allowed =
            |p: &proxy::ProxySettings, client: &str| access::allows(&p.access, ip(client));
        assert!(allowed(&s.settings, "10.1.1.1") && !allowed(&s.settings, "127.0.0.1"));
        assert!(!allowed(&s.locations[0].settings, "127.0.0.1"));
        assert_eq!(s.locations[1].settings.access.len(), 1, "its own rule only");
        assert!(allowed(&s.locations[1].settings, "127.0.0.1"));
        assert!(
            allowed(&s.locations[1].settings, "192.0.2.1"),
            "no rule matches: allowed"
        );
    }

    /// Debian's and Ubuntu's stock `ssl_protocols` line runs: the versions gluu-lb lacks
    /// are dropped with a warning at the line, the rest kept by their canonical names.
    #[test]
    fn older_protocols_are_dropped_with_a_warning() {
        let c = load(
            "events { }\nhttp {\n ssl_certificate c.crt; ssl_certificate_key c.key;\n\
             ssl_protocols TLSv1 TLSv1.1 tlsv1.2 TLSv1.3 TLSv1;\n\
             server { listen 8443 ssl; }\n server { listen 8444 ssl; ssl_protocols TLSv1.3; }\n}\n",
        )
        .expect("valid");
        let both = vec!["TLSv1.2".to_owned(), "TLSv1.3".to_owned()];
        assert_eq!(c.servers[0].tls.protocols, Some(both));
        assert_eq!(c.servers[1].tls.protocols, Some(vec!["TLSv1.3".to_owned()]));
        let warnings: Vec<_> = c.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("\"ssl_protocols\": TLSv1, TLSv1.1 are not offered")
                && warnings[0].ends_with(":4"),
            "{warnings:?}"
        );
    }

    #[test]
    fn error_log_of_http_wins_over_the_main_one_with_a_warning() {
        let logs = |text: &str| {
            let c = load(text).expect(text);
            let warnings: Vec<_> = c.warnings.iter().map(ToString::to_string).collect();
            (c.error_log.and_then(|l| l.path), warnings, c.path)
        };
        // Either order: the main one before or after `http { }`.
        for (text, line) in [
            (
                "error_log main.log;\nevents { }\nhttp {\n error_log http.log warn;\n}\n",
                4,
            ),
            (
                "events { }\nhttp {\n error_log http.log warn;\n}\nerror_log main.log;\n",
                3,
            ),
        ] {
            let (log, warnings, path) = logs(text);
            let dir = path.parent().expect("dir");
            assert_eq!(log, Some(dir.join("http.log")), "{text}");
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(
                warnings[0].contains("\"error_log\" is also set in the main context")
                    && warnings[0].contains(&format!(
                        "writes everything to this one ({})",
                        dir.join("http.log").display()
                    ))
                    && warnings[0].ends_with(&format!("in {}:{line}", path.display())),
                "{}",
                warnings[0]
            );
        }
        let (log, warnings, path) = logs("error_log main.log;\nevents { }\nhttp { }\n");
        assert_eq!(log, Some(path.parent().expect("dir").join("main.log")));
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}
