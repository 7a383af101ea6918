//! The configuration: an stunnel file, read with stunnel's grammar ([`ini`]) and stunnel's
//! meaning, then validated into typed [`Config`]. Anything we do not support is an error that
//! names file, line and option; options rustls cannot honour say why. Certificates are loaded
//! later, by [`crate::service`], so that `-t` and start-up report them the same way.

pub mod ini;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gluu_common::ciphers;
use ini::{Entry, Place, Section};

/// A configuration error: where, and what is wrong. Printed as `file:line: message`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{at}: {message}")]
pub struct ConfigError {
    pub at: String,
    pub message: String,
}

impl ConfigError {
    pub fn at(place: &Place, message: impl Into<String>) -> Self {
        Self {
            at: place.to_string(),
            message: message.into(),
        }
    }

    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        Self {
            at: path.display().to_string(),
            message: message.into(),
        }
    }
}

/// Something that will run but that an admin should know about (`-t` and start-up print
/// these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub at: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: warning: {}", self.at, self.message)
    }
}

/// stunnel's `client`: which side of the tunnel speaks TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// TLS in on `accept`, plaintext out to `connect` (the Redis host's side).
    Server,
    /// Plaintext in on `accept`, TLS out to `connect` (each node's side, `client = yes`).
    Client,
}

/// stunnel's `failover` for several `connect` lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failover {
    /// Always try in the order written (stunnel's default).
    Prio,
    /// Start with the next one each connection.
    RoundRobin,
}

/// A `connect` target: resolved when connecting, so DNS changes are followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Target {
    pub fn is_local(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false)
    }
}

/// The TLS versions rustls offers; stunnel's `sslVersion*` can only narrow them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// TLS and verification options of one service, as written.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub verify_chain: Option<bool>,
    pub verify_peer: Option<bool>,
    pub require_cert: Option<bool>,
    pub check_host: Vec<String>,
    pub sni: Option<String>,
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
    /// `ciphers`: the TLS 1.2 suites an OpenSSL cipher string selects, in its order.
    pub ciphers: Option<Vec<rustls::CipherSuite>>,
    /// `ciphersuites`: the TLS 1.3 suites named, in their order.
    pub ciphersuites: Option<Vec<rustls::CipherSuite>>,
}

impl TlsOptions {
    /// Whether any verification option is set; if none is, the peer is pinned to our own
    /// certificate.
    pub fn verification_configured(&self) -> bool {
        self.verify_chain.is_some()
            || self.verify_peer.is_some()
            || self.require_cert.is_some()
            || self.ca_file.is_some()
            || !self.check_host.is_empty()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// `TIMEOUTconnect`: per target connection attempt (stunnel: 10 s).
    pub connect: Duration,
    /// `TIMEOUTidle`: no byte either way for this long closes the connection (stunnel: 12 h).
    pub idle: Duration,
    /// `TIMEOUTclose`: once one direction has ended, how long the other may go on (60 s).
    pub close: Duration,
    /// `TIMEOUTbusy`: the whole TLS handshake, including the first byte. stunnel waits
    /// 300 s; we default to 10 s so half-open handshakes cannot hold connection slots.
    pub handshake: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            idle: Duration::from_secs(43_200),
            close: Duration::from_secs(60),
            handshake: Duration::from_secs(10),
        }
    }
}

/// Default per-service connection limit (`maxConnections`): well above a Gluu node's Redis
/// pool, well below the default 1024-fd soft limit times the two sockets a tunnel holds
/// once systemd's `LimitNOFILE` is raised as our unit does.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Default grace period for open connections at shutdown (`TIMEOUTdrain`).
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// One `[service]`.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub name: String,
    pub place: Place,
    pub mode: Mode,
    pub accept: SocketAddr,
    pub connect: Vec<Target>,
    pub failover: Failover,
    pub tls: TlsOptions,
    pub timeouts: Timeouts,
    pub max_connections: usize,
    /// Where each option was last set, so load-time errors (a missing cert) can name the line.
    pub places: HashMap<String, Place>,
}

impl ServiceConfig {
    /// The place of `option` if it was written, else the section header.
    pub fn place_of(&self, option: &str) -> &Place {
        self.places.get(option).unwrap_or(&self.place)
    }
}

/// Options before the first section that are not service defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Globals {
    pub pid: Option<PathBuf>,
    pub debug: tracing::Level,
    pub output: Option<PathBuf>,
    pub setuid: Option<String>,
    pub setgid: Option<String>,
    pub foreground: bool,
    /// Our extension `metrics = ADDR:PORT`: where Prometheus text is served.
    pub metrics: Option<SocketAddr>,
    /// Our extension `TIMEOUTdrain`: grace period for open connections at shutdown.
    pub drain: Duration,
}

impl Default for Globals {
    fn default() -> Self {
        Self {
            pid: None,
            debug: tracing::Level::INFO,
            output: None,
            setuid: None,
            setgid: None,
            foreground: true,
            metrics: None,
            drain: DEFAULT_DRAIN,
        }
    }
}

/// A validated configuration file.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub globals: Globals,
    pub services: Vec<ServiceConfig>,
    /// Warnings found while reading (TLS material adds more when loaded).
    pub warnings: Vec<Warning>,
}

/// Service options as they accumulate: the globals' copy is each section's starting point.
#[derive(Clone, Debug, Default)]
struct Draft {
    client: Option<bool>,
    accept: Option<SocketAddr>,
    connect: Vec<Target>,
    connect_in_section: bool,
    failover: Option<Failover>,
    tls: TlsOptions,
    timeouts: Timeouts,
    max_connections: Option<usize>,
    places: HashMap<String, Place>,
}

/// Options that only make sense before the first section.
const GLOBAL_ONLY: &[&str] = &[
    "pid",
    "debug",
    "output",
    "setuid",
    "setgid",
    "foreground",
    "syslog",
    "metrics",
    "timeoutdrain",
];

/// OpenSSL knobs rustls has no equivalent for: refused with a reason, never ignored.
fn unsupported(key: &str) -> Option<&'static str> {
    Some(match key {
        "curves" | "options" | "sslversion_openssl" => {
            "rustls cannot honour OpenSSL option and curve strings; it offers only modern \
             AEAD suites with forward secrecy on TLS 1.2 and 1.3 (which `ciphers` and \
             `ciphersuites` can narrow). Remove the line"
        }
        "psksecrets" | "pskidentity" => {
            "rustls does not support TLS pre-shared keys; remove it and rely on certificates \
             (by default both sides are pinned to the key of the certificate in `cert`)"
        }
        "capath"
        | "crlfile"
        | "crlpath"
        | "ocsp"
        | "ocspaia"
        | "ocspflag"
        | "ocspnonce"
        | "ocsprequire"
        | "engine"
        | "engineid"
        | "enginenum"
        | "enginectrl"
        | "enginedefault"
        | "fips"
        | "compression"
        | "renegotiation"
        | "sessioncachesize"
        | "sessioncachetimeout"
        | "dhparam"
        | "securitylevel"
        | "chroot"
        | "delay"
        | "retry"
        | "protocol"
        | "exec"
        | "execargs"
        | "local"
        | "transparent"
        | "socket"
        | "redirect"
        | "libwrap"
        | "service"
        | "stack"
        | "ticketkeysecret"
        | "ticketmacsecret"
        | "reset"
        | "logid"
        | "ident"
        | "sessionresume" => "not supported by gluu-tunnel (see README: gluu-tunnel configuration)",
        _ => return None,
    })
}

fn parse_bool(e: &Entry) -> Result<bool, ConfigError> {
    match e.value.to_ascii_lowercase().as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(bad(e, "expected `yes` or `no`")),
    }
}

fn parse_secs(e: &Entry) -> Result<Duration, ConfigError> {
    e.value
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| bad(e, "expected a number of seconds"))
}

fn bad(e: &Entry, why: impl fmt::Display) -> ConfigError {
    ConfigError::at(
        &e.place,
        format!("option '{}': bad value `{}`: {why}", e.key, e.value),
    )
}

/// `[host:]port`; stunnel's `accept` without a host listens on all IPv4 addresses.
fn parse_accept(e: &Entry) -> Result<SocketAddr, ConfigError> {
    let (host, port) = split_host_port(&e.value).map_err(|why| bad(e, why))?;
    let Some(host) = host else {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|err| bad(e, format!("cannot resolve `{host}`: {err}")))?
        .next()
        .ok_or_else(|| bad(e, format!("`{host}` has no address")))
}

/// `[host:]port`; stunnel's `connect` without a host means localhost.
fn parse_target(e: &Entry) -> Result<Target, ConfigError> {
    let (host, port) = split_host_port(&e.value).map_err(|why| bad(e, why))?;
    if port == 0 {
        return Err(bad(e, "port 0 cannot be connected to"));
    }
    Ok(Target {
        host: host.unwrap_or_else(|| "localhost".to_owned()),
        port,
    })
}

fn split_host_port(v: &str) -> Result<(Option<String>, u16), String> {
    let (host, port) = match v.rsplit_once(':') {
        Some((h, p)) => (Some(h), p),
        None => (None, v),
    };
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("`{port}` is not a port number (expected [host:]port)"))?;
    let host = match host {
        Some(h) => {
            let h = h
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(h);
            if h.is_empty() {
                return Err("empty host before `:`".to_owned());
            }
            if h.contains(':') && h.parse::<IpAddr>().is_err() {
                return Err(format!(
                    "`{h}` is not an address (write IPv6 as [addr]:port)"
                ));
            }
            Some(h.to_owned())
        }
        None => None,
    };
    Ok((host, port))
}

/// stunnel's `debug = [facility.]level`, level 0-7 or its syslog name.
fn parse_debug(e: &Entry) -> Result<tracing::Level, ConfigError> {
    let level = e
        .value
        .rsplit('.')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    Ok(match level.as_str() {
        "0" | "1" | "2" | "3" | "emerg" | "alert" | "crit" | "err" => tracing::Level::ERROR,
        "4" | "warning" => tracing::Level::WARN,
        "5" | "6" | "notice" | "info" => tracing::Level::INFO,
        "7" | "debug" => tracing::Level::DEBUG,
        _ => return Err(bad(e, "expected a level 0-7 or emerg..debug")),
    })
}

fn parse_version(e: &Entry) -> Result<Option<TlsVersion>, ConfigError> {
    match e.value.to_ascii_lowercase().as_str() {
        "all" => Ok(None),
        "tlsv1.2" => Ok(Some(TlsVersion::Tls12)),
        "tlsv1.3" => Ok(Some(TlsVersion::Tls13)),
        "sslv2" | "sslv3" | "tlsv1" | "tlsv1.1" => Err(bad(
            e,
            "rustls speaks only TLSv1.2 and TLSv1.3; older versions are broken and cannot be \
             honoured. Use TLSv1.2, TLSv1.3 or remove the line",
        )),
        _ => Err(bad(e, "expected TLSv1.2, TLSv1.3 or all")),
    }
}

impl Draft {
    /// Applies one option of a service (or a service default, in the global part).
    fn apply(&mut self, e: &Entry, key: &str, in_section: bool) -> Result<(), ConfigError> {
        let path = |e: &Entry| ini::resolve(&e.place.file, &e.value);
        match key {
            "client" => self.client = Some(parse_bool(e)?),
            "accept" => {
                if !in_section {
                    return Err(ConfigError::at(
                        &e.place,
                        "option 'accept' belongs in a [service] section",
                    ));
                }
                self.accept = Some(parse_accept(e)?);
            }
            "connect" => {
                if in_section && !self.connect_in_section {
                    // A section's own `connect` lines replace the global default list.
                    self.connect.clear();
                    self.connect_in_section = true;
                }
                self.connect.push(parse_target(e)?);
            }
            "failover" => {
                self.failover = Some(match e.value.to_ascii_lowercase().as_str() {
                    "prio" => Failover::Prio,
                    "rr" => Failover::RoundRobin,
                    _ => return Err(bad(e, "expected `prio` or `rr`")),
                })
            }
            "cert" => self.tls.cert = Some(path(e)),
            "key" => self.tls.key = Some(path(e)),
            "cafile" => self.tls.ca_file = Some(path(e)),
            "verifychain" => self.tls.verify_chain = Some(parse_bool(e)?),
            "verifypeer" => self.tls.verify_peer = Some(parse_bool(e)?),
            "requirecert" => self.tls.require_cert = Some(parse_bool(e)?),
            "checkhost" => {
                if e.value.is_empty() {
                    return Err(bad(e, "expected a host name"));
                }
                self.tls.check_host.push(e.value.clone());
            }
            "sni" => {
                if e.value.is_empty() || e.value.contains(':') {
                    return Err(bad(
                        e,
                        "expected the server name to send (server-mode SNI routing, \
                         `service:pattern`, is not supported)",
                    ));
                }
                self.tls.sni = Some(e.value.clone());
            }
            "sslversion" => {
                let v = parse_version(e)?;
                self.tls.min_version = v;
                self.tls.max_version = v;
            }
            "sslversionmin" => self.tls.min_version = parse_version(e)?,
            "ciphers" => {
                self.tls.ciphers = Some(ciphers::select_tls12(&e.value).map_err(|w| bad(e, w))?)
            }
            "ciphersuites" => {
                self.tls.ciphersuites =
                    Some(ciphers::select_tls13(&e.value).map_err(|w| bad(e, w))?)
            }
            "sslversionmax" => self.tls.max_version = parse_version(e)?,
            "timeoutconnect" => self.timeouts.connect = parse_secs(e)?,
            "timeoutidle" => self.timeouts.idle = parse_secs(e)?,
            "timeoutclose" => self.timeouts.close = parse_secs(e)?,
            "timeoutbusy" => self.timeouts.handshake = parse_secs(e)?,
            "maxconnections" => {
                let n = e
                    .value
                    .parse::<usize>()
                    .map_err(|_| bad(e, "expected a number of connections"))?;
                if n == 0 {
                    return Err(bad(e, "must be at least 1"));
                }
                self.max_connections = Some(n);
            }
            _ => {
                return Err(match unsupported(key) {
                    Some(why) => ConfigError::at(&e.place, format!("option '{}': {why}", e.key)),
                    None => ConfigError::at(&e.place, format!("unknown option '{}'", e.key)),
                });
            }
        }
        self.places.insert(key.to_owned(), e.place.clone());
        Ok(())
    }

    fn finish(self, name: String, place: Place) -> Result<ServiceConfig, ConfigError> {
        let accept = self.accept.ok_or_else(|| {
            ConfigError::at(&place, format!("[{name}] needs `accept = [host:]port`"))
        })?;
        if self.connect.is_empty() {
            return Err(ConfigError::at(
                &place,
                format!("[{name}] needs `connect = [host:]port`"),
            ));
        }
        let mode = if self.client.unwrap_or(false) {
            Mode::Client
        } else {
            Mode::Server
        };
        if mode == Mode::Server && self.tls.cert.is_none() {
            return Err(ConfigError::at(
                &place,
                format!("[{name}] is a TLS server (no `client = yes`) and needs `cert`"),
            ));
        }
        if let (Some(min), Some(max)) = (self.tls.min_version, self.tls.max_version)
            && min > max
        {
            return Err(ConfigError::at(
                &place,
                format!("[{name}] sslVersionMin is above sslVersionMax"),
            ));
        }
        Ok(ServiceConfig {
            name,
            place,
            mode,
            accept,
            connect: self.connect,
            failover: self.failover.unwrap_or(Failover::Prio),
            tls: self.tls,
            timeouts: self.timeouts,
            max_connections: self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            places: self.places,
        })
    }
}

impl Config {
    /// Reads and validates `path` (certificates are not opened yet).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let sections = ini::parse(path)?;
        let mut sections = sections.into_iter();
        let global = sections
            .next()
            .ok_or_else(|| ConfigError::file(path, "empty configuration"))?;
        let mut globals = Globals::default();
        let mut defaults = Draft::default();
        let mut warnings = Vec::new();
        for e in &global.entries {
            let key = e.key.to_ascii_lowercase();
            if GLOBAL_ONLY.contains(&key.as_str()) {
                apply_global(&mut globals, e, &key, &mut warnings)?;
            } else {
                defaults.apply(e, &key, false)?;
            }
        }
        let mut services: Vec<ServiceConfig> = Vec::new();
        for section in sections {
            let Section {
                name,
                place,
                entries,
            } = section;
            let name = name.unwrap_or_default();
            if let Some(prev) = services.iter().find(|s| s.name == name) {
                return Err(ConfigError::at(
                    &place,
                    format!("service [{name}] is already defined at {}", prev.place),
                ));
            }
            let mut draft = defaults.clone();
            for e in &entries {
                let key = e.key.to_ascii_lowercase();
                if GLOBAL_ONLY.contains(&key.as_str()) {
                    return Err(ConfigError::at(
                        &e.place,
                        format!(
                            "option '{}' is global: move it above the first [section]",
                            e.key
                        ),
                    ));
                }
                draft.apply(e, &key, true)?;
            }
            let service = draft.finish(name, place)?;
            if service.accept.port() != 0
                && let Some(other) = services.iter().find(|s| s.accept == service.accept)
            {
                return Err(ConfigError::at(
                    service.place_of("accept"),
                    format!(
                        "[{}] accepts on {}, as [{}] already does",
                        service.name, service.accept, other.name
                    ),
                ));
            }
            warnings.extend(service_warnings(&service));
            services.push(service);
        }
        if services.is_empty() {
            return Err(ConfigError::file(
                path,
                "no [service] section: nothing to run (the guide's files have `[redis]`)",
            ));
        }
        Ok(Config {
            path: path.to_owned(),
            globals,
            services,
            warnings,
        })
    }

    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }
}

fn apply_global(
    g: &mut Globals,
    e: &Entry,
    key: &str,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let path = |e: &Entry| ini::resolve(&e.place.file, &e.value);
    match key {
        // stunnel: an empty `pid =` means no pid file.
        "pid" => g.pid = (!e.value.is_empty()).then(|| path(e)),
        "debug" => g.debug = parse_debug(e)?,
        "output" => g.output = Some(path(e)),
        "setuid" => g.setuid = Some(e.value.clone()),
        "setgid" => g.setgid = Some(e.value.clone()),
        "foreground" => {
            g.foreground = match e.value.to_ascii_lowercase().as_str() {
                "yes" | "quiet" => true,
                "no" => false,
                _ => return Err(bad(e, "expected `yes`, `quiet` or `no`")),
            }
        }
        "syslog" => {
            if parse_bool(e)? {
                warnings.push(Warning {
                    at: e.place.to_string(),
                    message: "gluu-tunnel logs to stderr (the journal under systemd, which \
                              forwards to syslog) or to `output`; it does not open /dev/log"
                        .to_owned(),
                });
            }
        }
        "metrics" => {
            let addr = e
                .value
                .parse::<SocketAddr>()
                .map_err(|_| bad(e, "expected ADDRESS:PORT, e.g. 127.0.0.1:9716"))?;
            if !addr.ip().is_loopback() {
                warnings.push(Warning {
                    at: e.place.to_string(),
                    message: format!(
                        "metrics are served on {addr}, which is not a loopback address: \
                         anyone who can reach it sees connection counts and peers"
                    ),
                });
            }
            g.metrics = Some(addr);
        }
        "timeoutdrain" => g.drain = parse_secs(e)?,
        _ => unreachable!("GLOBAL_ONLY lists only handled options"),
    }
    Ok(())
}

/// Things that run but are probably not what the admin meant.
fn service_warnings(s: &ServiceConfig) -> Vec<Warning> {
    let mut out = Vec::new();
    let mut warn = |place: &Place, message: String| {
        out.push(Warning {
            at: place.to_string(),
            message,
        })
    };
    if s.mode == Mode::Server && s.connect.iter().any(|t| !t.is_local()) {
        let remote: Vec<_> = s.connect.iter().map(|t| t.to_string()).collect();
        warn(
            &s.place,
            format!(
                "[{}] runs in server mode (no `client = yes`): it expects TLS on {} and sends \
                 the decrypted traffic in plaintext to {}, another host. On a node (the \
                 guide's redis-client.conf) this is backwards and no traffic will pass: add \
                 `client = yes`",
                s.name,
                s.accept,
                remote.join(", ")
            ),
        );
    }
    if s.tls.ca_file.is_some()
        && s.tls.verify_chain != Some(true)
        && s.tls.verify_peer != Some(true)
    {
        warn(
            s.place_of("cafile"),
            format!(
                "[{}] has `CAfile` but neither `verifyChain = yes` nor `verifyPeer = yes`: as \
                 in stunnel, the CA file alone verifies nothing",
                s.name
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests;
