//! A configuration made ready to serve: listening sockets grouped as nginx groups them
//! (one socket per address, its servers chosen by SNI and `Host`), TLS material loaded, one
//! [`Group`] per upstream, each location's upstream TLS policy, and the access log files.
//! A reload builds a new `Runtime` beside the running one and swaps it in whole.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use gluu_common::ciphers;
use gluu_common::logging::LogFile;
use gluu_common::tls;
use gluu_common::validity::{self, Validity};
use gluu_common::verify::{PeerPolicy, PeerVerifier};
use hyper::header::HeaderName;
use rustls::crypto::CryptoProvider;
use rustls::server::{
    ClientHello, NoClientAuth, NoServerSessionStorage, ProducesTickets, ResolvesServerCert,
    ServerSessionMemoryCache, StoresServerSessions,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::Shared;
use crate::access_log::AccessLog;
use crate::client_cert::Trust;
use crate::config::grammar::GrammarError;
use crate::config::location::{Location, Redirect};
use crate::config::proxy::Part;
use crate::config::proxy::{AccessLogLine, ProxySettings};
use crate::config::server::Server;
use crate::config::tls::{ClientAuth, SessionCache, VerifyClient};
use crate::config::{Config, Warning};
use crate::limit::{Applied, ConnLimit, Limit, Zone};
use crate::served::Served;
use crate::sessions::{ExpiringCache, ExpiringTickets, KeyTickets};
use crate::upstream::lock;
use crate::upstream::{Group, UpstreamTls};

/// How many TLS sessions the client side (node connections) remembers for resumption.
const SESSION_CACHE: usize = 4096;

/// One listening socket and the servers behind it.
pub struct Listener {
    pub addr: SocketAddr,
    pub http2: bool,
    /// Indexes into `config.servers`; the first is the default server (`default_server`,
    /// else the first in the file).
    pub servers: Vec<usize>,
    pub tls: Option<Arc<Tls>>,
}

/// A TLS listening socket's handshake settings: one rustls configuration for each client
/// certificate policy among its servers (usually one), the server named by SNI choosing,
/// as nginx switches to that server's verification settings in the handshake.
pub struct Tls {
    /// The first is the default server's.
    configs: Vec<(TlsAcceptor, Option<Arc<Trust>>)>,
    /// Server names, and which of `configs` each one's server uses.
    names: Vec<(String, usize)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("configs", &self.configs.len())
            .field("names", &self.names)
            .finish()
    }
}

impl Tls {
    /// The one configuration, when the servers all have the same client certificate
    /// policy: the handshake needs no look at the client's hello first.
    pub fn single(&self) -> Option<&(TlsAcceptor, Option<Arc<Trust>>)> {
        (self.configs.len() == 1).then(|| &self.configs[0])
    }

    /// The configuration for a client that named `sni`.
    pub fn for_name(&self, sni: Option<&str>) -> &(TlsAcceptor, Option<Arc<Trust>>) {
        &self.configs[by_sni(&self.names, sni).copied().unwrap_or(0)]
    }
}

/// The value of the first of `names` that is `sni`, as nginx's SNI takes a server name
/// (exactly, in any case).
fn by_sni<'a, T>(names: &'a [(String, T)], sni: Option<&str>) -> Option<&'a T> {
    let sni = sni?;
    names
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(sni))
        .map(|(_, t)| t)
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("addr", &self.addr)
            .field("http2", &self.http2)
            .field("servers", &self.servers)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// What a location needs at request time besides its configuration.
#[derive(Debug)]
pub struct LocationRt {
    pub tls: Option<Arc<UpstreamTls>>,
    /// The server name (SNI, and the name checked with `proxy_ssl_verify on`).
    pub ssl_name: Option<ServerName<'static>>,
    /// Its `access_log` lines made ready (empty: none, or `off`).
    pub access_logs: Arc<[AccessLog]>,
    /// `proxy_redirect default`'s rewrite of a node's `Location` and `Refresh`.
    pub redirect: Option<Redirect>,
    /// Its `limit_req` and `limit_conn` lines with their zones.
    pub limits: Applied,
    /// The node response headers it hides (`ProxySettings::hidden`), worked out once.
    pub hidden: Vec<HeaderName>,
}

#[derive(Debug)]
pub struct Runtime {
    pub config: Config,
    pub listeners: Vec<Listener>,
    pub groups: HashMap<String, Arc<Group>>,
    /// `[server][location]`, parallel to `config.servers[s].locations`.
    pub locations: Vec<Vec<LocationRt>>,
    /// Each server's own access log (requests no location matches, `return`).
    pub server_logs: Vec<Arc<[AccessLog]>>,
    /// Each server's own `limit_req` and `limit_conn` lines (for requests no location
    /// matches).
    pub server_limits: Vec<Applied>,
    pub logs: Vec<LogFile>,
    pub warnings: Vec<Warning>,
    /// Each certificate file the servers serve, once.
    pub certificates: Vec<Validity>,
}

/// The zones of `config`'s `limit_req_zone` and `limit_conn_zone` lines: the running ones
/// where name, size and kind stay, new ones otherwise.
fn zones(config: &Config, shared: &Shared) -> Vec<Arc<Zone>> {
    let running = lock(&shared.zones);
    config
        .limit_zones
        .iter()
        .map(|def| {
            running
                .iter()
                .find(|z| z.fits(def))
                .cloned()
                .unwrap_or_else(|| Zone::new(def))
        })
        .collect()
}

/// A block's `limit_req` and `limit_conn` lines with their zones (every zone exists, of
/// the right kind: `Config` checked).
fn limits(s: &ProxySettings, config: &Config, zones: &[Arc<Zone>]) -> Applied {
    let zone = |name: &str| {
        let i = config.limit_zones.iter().position(|z| z.name == name)?;
        Some((&config.limit_zones[i], zones[i].clone()))
    };
    Applied {
        req: s
            .limit
            .limits
            .iter()
            .filter_map(|line| {
                let (def, z) = zone(&line.zone)?;
                Some(Limit::new(line, def.rate?, z))
            })
            .collect(),
        conn: s
            .limit_conn
            .limits
            .iter()
            .filter_map(|line| Some(ConnLimit::new(line, zone(&line.zone)?.1)))
            .collect(),
    }
}

/// Picks a server by SNI among the servers of one listening socket (the default server's
/// otherwise), then among its certificates the one for this client. `None`: the server
/// has `ssl_reject_handshake on`, and the handshake fails.
#[derive(Debug)]
struct BySni {
    names: Vec<(String, Option<Arc<Served>>)>,
    default: Option<Arc<Served>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let served = by_sni(&self.names, hello.server_name()).unwrap_or(&self.default);
        served.as_ref().map(|s| s.choose(&hello).clone())
    }
}

/// Matches nginx's `server_name` forms: exact, `*.example.org`, `.example.org`.
pub fn name_matches(pattern: &str, host: &str) -> bool {
    if let Some(suffix) = pattern.strip_prefix("*.") {
        return host.len() > suffix.len() + 1
            && host.ends_with(suffix)
            && host.as_bytes()[host.len() - suffix.len() - 1] == b'.';
    }
    if let Some(domain) = pattern.strip_prefix('.') {
        return host.eq_ignore_ascii_case(domain) || name_matches(&format!("*.{domain}"), host);
    }
    pattern.eq_ignore_ascii_case(host)
}

fn err(at: &crate::config::grammar::Place, message: impl Into<String>) -> GrammarError {
    GrammarError::at(at, message)
}

impl Runtime {
    pub fn build(config: Config, shared: &Shared) -> Result<Runtime, GrammarError> {
        let provider = tls::provider();
        let mut warnings = config.warnings.clone();
        let mut keys: HashMap<usize, Arc<Served>> = HashMap::new();
        let mut certificates: Vec<Validity> = Vec::new();
        let mut exposed: Vec<PathBuf> = Vec::new();
        let now = SystemTime::now();
        for (i, s) in config.servers.iter().enumerate() {
            let (certs, key_paths) = (&s.tls.certificates, &s.tls.certificate_keys);
            if certs.is_empty() || key_paths.len() < certs.len() {
                continue;
            }
            let (served, dropped) = Served::load(&provider, certs, key_paths)
                .map_err(|e| err(&s.place, e.to_string()))?;
            let mut warn = |message| {
                warnings.push(Warning {
                    at: s.place.to_string(),
                    message,
                })
            };
            dropped.into_iter().for_each(&mut warn);
            for pair in served.pairs() {
                let cert = &pair.certificate;
                if let Some(message) =
                    validity::record(&mut certificates, cert, &pair.key.cert, now)
                {
                    warn(message);
                }
                let key = &pair.key_path;
                if exposed.contains(key) {
                    continue;
                }
                exposed.push(key.clone());
                if let Some(mode) = tls::exposed_key(key, 0o004) {
                    warn(format!(
                        "the private key {} is readable by every user (mode {mode:o}): \
                         chmod 600 it (gluu-lb reads it as root, before dropping privileges)",
                        key.display()
                    ));
                }
            }
            keys.insert(i, Arc::new(served));
        }
        let mut trusts: HashMap<usize, Arc<Trust>> = HashMap::new();
        for (i, s) in config.servers.iter().enumerate() {
            let c = &s.tls.client;
            if !keys.contains_key(&i) && !s.tls.reject_handshake {
                continue;
            }
            if let (VerifyClient::Off, Some((_, place))) = (c.verify, &c.trusted) {
                warnings.push(Warning {
                    at: place.to_string(),
                    message: "\"ssl_trusted_certificate\" is not used by gluu-lb: it staples \
                              no OCSP responses, and this server asks no client certificates \
                              (ssl_verify_client)"
                        .to_owned(),
                });
            }
            if let (VerifyClient::Off, Some((_, place))) = (c.verify, &c.crl) {
                warnings.push(Warning {
                    at: place.to_string(),
                    message: "\"ssl_crl\" is not used: this server asks no client certificates \
                              (ssl_verify_client)"
                        .to_owned(),
                });
            }
            if let Some(trust) = Trust::load(c, &provider)? {
                trusts.insert(i, trust);
            }
        }
        let tls = Handshakes {
            keys: &keys,
            trusts: &trusts,
            provider: &provider,
            tickets: &shared.tickets,
        };
        let listeners = listeners(&config, &tls, &mut warnings)?;
        // Every worker's socket on every address holds a connection slot while it waits to
        // accept (nginx counts listening sockets too, and refuses to start the same way).
        let sockets = listeners.len() * shared.workers;
        if config.worker_connections <= sockets {
            return Err(GrammarError {
                at: config.path.display().to_string(),
                message: format!(
                    "{} worker_connections are not enough for {sockets} listening sockets \
                     ({} addresses, {} workers)",
                    config.worker_connections,
                    listeners.len(),
                    shared.workers
                ),
            });
        }
        let groups: HashMap<String, Arc<Group>> = config
            .upstreams
            .iter()
            .map(|u| {
                (
                    u.name.clone(),
                    Arc::new(Group::new(u, &shared.metrics, shared.workers)),
                )
            })
            .collect();
        let mut tls_cache: HashMap<String, Arc<UpstreamTls>> = HashMap::new();
        let mut log_cache: HashMap<PathBuf, LogFile> = HashMap::new();
        let any_key = (0..config.servers.len()).find_map(|i| keys.get(&i).cloned());
        let zones = zones(&config, shared);
        let mut locations = Vec::new();
        let mut server_logs = Vec::new();
        let mut server_limits = Vec::new();
        for (i, s) in config.servers.iter().enumerate() {
            server_limits.push(limits(&s.settings, &config, &zones));
            server_logs.push(open_logs(&s.settings, &config, &mut log_cache)?);
            let own = keys.get(&i).or(any_key.as_ref());
            let mut per = Vec::new();
            for l in &s.locations {
                let mut rt = location_rt(l, own, &provider, &mut tls_cache, &mut warnings)?;
                rt.limits = limits(&l.settings, &config, &zones);
                rt.hidden = l.settings.hidden();
                rt.access_logs = open_logs(&l.settings, &config, &mut log_cache)?;
                per.push(rt);
            }
            locations.push(per);
        }
        *lock(&shared.zones) = zones;
        Ok(Runtime {
            server_limits,
            logs: log_cache.into_values().collect(),
            config,
            listeners,
            groups,
            locations,
            server_logs,
            warnings,
            certificates,
        })
    }

    /// The server for a request on `listener` with this `Host` (or SNI) name.
    pub fn server_for(&self, listener: &Listener, host: Option<&str>) -> usize {
        host.and_then(|h| {
            listener.servers.iter().copied().find(|&s| {
                self.config.servers[s]
                    .names
                    .iter()
                    .any(|n| name_matches(n, h))
            })
        })
        .unwrap_or(listener.servers[0])
    }
}

/// What the TLS listening sockets' handshakes are made of: each TLS server's certificates
/// and client certificate trust (by index into `config.servers`).
struct Handshakes<'a> {
    keys: &'a HashMap<usize, Arc<Served>>,
    trusts: &'a HashMap<usize, Arc<Trust>>,
    provider: &'a Arc<CryptoProvider>,
    tickets: &'a Arc<dyn ProducesTickets>,
}

fn listeners(
    config: &Config,
    tls: &Handshakes<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<Listener>, GrammarError> {
    let mut out: Vec<(Listener, bool)> = Vec::new();
    for (i, s) in config.servers.iter().enumerate() {
        for l in &s.listen {
            // Port 0 (tests) means "any free port": each such line gets its own socket.
            let existing = out
                .iter_mut()
                .find(|(x, _)| l.addr.port() != 0 && x.addr == l.addr);
            match existing {
                Some((x, ssl)) => {
                    if *ssl != l.ssl {
                        return Err(err(
                            &l.place,
                            format!("{} is both TLS and plain in different servers", l.addr),
                        ));
                    }
                    x.http2 |= l.http2;
                    if l.default_server {
                        x.servers.insert(0, i);
                    } else if !x.servers.contains(&i) {
                        x.servers.push(i);
                    }
                }
                None => out.push((
                    Listener {
                        addr: l.addr,
                        http2: l.http2,
                        servers: vec![i],
                        tls: None,
                    },
                    l.ssl,
                )),
            }
        }
    }
    let mut result = Vec::new();
    for (mut l, ssl) in out {
        if ssl {
            l.tls = Some(Arc::new(acceptor(config, &l, tls, warnings)?));
        }
        result.push(l);
    }
    Ok(result)
}

/// The tickets of `ssl_session_ticket_key` files, read now (at start and at each reload).
fn ticket_keys(
    files: &[(PathBuf, crate::config::grammar::Place)],
    warnings: &mut Vec<Warning>,
) -> Result<Arc<dyn ProducesTickets>, GrammarError> {
    let mut keys = Vec::new();
    for (path, place) in files {
        let bytes = std::fs::read(path).map_err(|e| {
            GrammarError::at(place, format!("open() \"{}\" failed ({e})", path.display()))
        })?;
        if let Some(mode) = tls::exposed_key(path, 0o004) {
            warnings.push(Warning {
                at: place.to_string(),
                message: format!(
                    "the session ticket key {} is readable by every user (mode {mode:o}): \
                     whoever reads it can decrypt recorded TLS 1.2 sessions; chmod 600 it",
                    path.display()
                ),
            });
        }
        keys.push(bytes);
    }
    let tickets = KeyTickets::new(&keys).map_err(|(i, why)| {
        let (path, place) = &files[i];
        GrammarError::at(place, format!("\"{}\" {why}", path.display()))
    })?;
    Ok(Arc::new(tickets))
}

fn acceptor(
    config: &Config,
    l: &Listener,
    tls: &Handshakes<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<Tls, GrammarError> {
    let servers: Vec<(usize, &Server, Option<Arc<Served>>)> = l
        .servers
        .iter()
        .filter_map(|&i| {
            let s = &config.servers[i];
            match tls.keys.get(&i) {
                _ if s.tls.reject_handshake => Some((i, s, None)),
                Some(k) => Some((i, s, Some(k.clone()))),
                None => None,
            }
        })
        .collect();
    let first = &config.servers[l.servers[0]];
    let Some((_, _, default)) = servers.first() else {
        return Err(err(&first.place, "a TLS listen without a certificate"));
    };
    let versions = versions(first.tls.protocols.as_deref());
    let t = &first.tls;
    let tls12 = versions
        .iter()
        .any(|v| v.version == rustls::ProtocolVersion::TLSv1_2);
    if let (true, Some(chosen)) = (tls12, &t.ciphers) {
        for (s, served) in servers
            .iter()
            .filter_map(|(_, s, k)| Some((s, k.as_ref()?)))
        {
            // TLS 1.2 fails only when none of the server's certificates can be used.
            let unusable: Option<Vec<String>> = served
                .pairs()
                .iter()
                .map(|p| ciphers::unusable_with(p.key.key.algorithm(), chosen))
                .collect();
            if let Some(why) = unusable.and_then(|w| w.into_iter().next()) {
                let fails = if versions.len() > 1 {
                    "TLS 1.2 clients cannot connect (TLS 1.3 ones can)"
                } else {
                    "no client can connect"
                };
                warnings.push(Warning {
                    at: s.place.to_string(),
                    message: format!("ssl_ciphers on {}: {why}: {fails}", l.addr),
                });
            }
        }
    }
    // TLS 1.3's suites in gluu-lb's order, then TLS 1.2's as `ssl_ciphers` chose them.
    let mut provider = ciphers::restrict(tls.provider, None, t.ciphers.as_deref());
    if let Some(curves) = &t.curves {
        provider.kx_groups = curves
            .iter()
            .filter_map(|n| {
                let all = rustls::crypto::aws_lc_rs::ALL_KX_GROUPS;
                all.iter().find(|g| g.name() == *n).copied()
            })
            .collect();
    }
    let provider = Arc::new(provider);
    let resolver = BySni {
        names: servers
            .iter()
            .flat_map(|(_, s, k)| s.names.iter().map(move |n| (n.clone(), k.clone())))
            .collect(),
        default: default.clone(),
    };
    let resolver: Arc<dyn ResolvesServerCert> = Arc::new(resolver);
    let cache: Arc<dyn StoresServerSessions> = match t.session_cache {
        SessionCache::Off => Arc::new(NoServerSessionStorage {}),
        SessionCache::Sessions(n) => ServerSessionMemoryCache::new(n),
    };
    let cache: Arc<dyn StoresServerSessions> =
        Arc::new(ExpiringCache::new(cache, t.session_timeout));
    let tickets = if t.ticket_keys.is_empty() {
        tls.tickets.clone()
    } else {
        ticket_keys(&t.ticket_keys, warnings)?
    };
    let ticketer: Arc<dyn ProducesTickets> = Arc::new(ExpiringTickets::new(
        tickets,
        t.session_timeout,
        t.session_tickets,
    ));
    let make = |trust: &Option<Arc<Trust>>| -> Result<TlsAcceptor, GrammarError> {
        let verifier = match trust {
            Some(t) => t.asks(),
            None => Arc::new(NoClientAuth),
        };
        let mut sc = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| err(&first.place, format!("TLS: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(resolver.clone());
        sc.alpn_protocols = if l.http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        sc.session_storage = cache.clone();
        sc.ticketer = ticketer.clone();
        sc.send_tls13_tickets = 1;
        // Without a line, our order (AES-128-GCM and ChaCha20 before the SHA-384 suite,
        // see tls::provider), not the client's: OpenSSL clients list AES-256-GCM-SHA384
        // first, and SHA-384's key schedule is the costliest part of a handshake here.
        sc.ignore_client_order = t.prefer_server_ciphers.unwrap_or(true);
        Ok(TlsAcceptor::from(Arc::new(sc)))
    };
    // One configuration per client certificate policy, the default server's first.
    let mut policies: Vec<&ClientAuth> = Vec::new();
    let mut configs = Vec::new();
    let mut names = Vec::new();
    for (i, s, _) in &servers {
        let at = match policies.iter().position(|p| **p == s.tls.client) {
            Some(at) => at,
            None => {
                let trust = tls.trusts.get(i).cloned();
                configs.push((make(&trust)?, trust));
                policies.push(&s.tls.client);
                configs.len() - 1
            }
        };
        names.extend(s.names.iter().map(|n| (n.clone(), at)));
    }
    Ok(Tls { configs, names })
}

/// The protocol versions an `ssl_protocols` (or `proxy_ssl_protocols`) line leaves, by
/// their canonical names; no line: both.
fn versions(listed: Option<&[String]>) -> Vec<&'static rustls::SupportedProtocolVersion> {
    tls::PROTOCOL_VERSIONS
        .iter()
        .copied()
        .filter(|v| {
            let name = if v.version == rustls::ProtocolVersion::TLSv1_3 {
                "TLSv1.3"
            } else {
                "TLSv1.2"
            };
            listed.is_none_or(|p| p.iter().any(|x| x == name))
        })
        .collect()
}

/// The name the node is addressed by: `proxy_ssl_name` (text and `$proxy_host` only), else
/// the upstream's name (nginx's default, `$proxy_host`).
fn ssl_name(l: &Location) -> Result<Option<ServerName<'static>>, GrammarError> {
    let Some(pass) = &l.proxy_pass else {
        return Ok(None);
    };
    let text = match &l.settings.ssl_name {
        None => pass.upstream.clone(),
        Some(parts) => {
            let mut s = String::new();
            for p in parts {
                match p {
                    Part::Text(t) => s.push_str(t),
                    Part::Var("proxy_host") => s.push_str(&pass.upstream),
                    Part::Var(_)
                    | Part::Header(_)
                    | Part::Cert(_)
                    | Part::Map(_)
                    | Part::Capture(_)
                    | Part::Cookie(_)
                    | Part::Arg(_)
                    | Part::Args(_) => {
                        return Err(err(
                            &l.place,
                            "\"proxy_ssl_name\" with a variable other than $proxy_host is not \
                             supported: gluu-lb checks one name per location",
                        ));
                    }
                }
            }
            s
        }
    };
    ServerName::try_from(text.clone()).map(Some).map_err(|_| {
        err(
            &l.place,
            format!("\"{text}\" is not a valid TLS server name"),
        )
    })
}

/// A block's `access_log` lines made ready, none after `access_log off`.
fn open_logs(
    s: &ProxySettings,
    config: &Config,
    cache: &mut HashMap<PathBuf, LogFile>,
) -> Result<Arc<[AccessLog]>, GrammarError> {
    if s.access_log_off {
        return Ok(Arc::new([]));
    }
    s.access_logs
        .iter()
        .map(|a| open_log(a, config, cache))
        .collect()
}

/// An `access_log` line's file (one `LogFile` per path, however many lines name it) and
/// format.
fn open_log(
    line: &AccessLogLine,
    config: &Config,
    cache: &mut HashMap<PathBuf, LogFile>,
) -> Result<AccessLog, GrammarError> {
    let path = &line.path;
    let file = match cache.get(path) {
        Some(f) => f.clone(),
        None => {
            let f = LogFile::open(path).map_err(|e| {
                err(
                    &line.place,
                    format!("access_log {}: cannot open: {e}", path.display()),
                )
            })?;
            cache.insert(path.to_owned(), f.clone());
            f
        }
    };
    Ok(AccessLog {
        file,
        format: config.log_format(&line.format),
        condition: line.condition.clone(),
    })
}

fn location_rt(
    l: &Location,
    own: Option<&Arc<Served>>,
    provider: &Arc<CryptoProvider>,
    tls_cache: &mut HashMap<String, Arc<UpstreamTls>>,
    warnings: &mut Vec<Warning>,
) -> Result<LocationRt, GrammarError> {
    let s = &l.settings;
    let name = ssl_name(l)?;
    let Some(name) = name else {
        return Ok(LocationRt {
            tls: None,
            ssl_name: None,
            access_logs: Arc::new([]),
            redirect: None,
            limits: Applied::default(),
            hidden: Vec::new(),
        });
    };
    let (policy, key) = match s.ssl_verify {
        Some(true) => {
            let trusted = s
                .ssl_trusted_certificate
                .as_deref()
                .expect("validated: proxy_ssl_verify on has a trusted certificate");
            let roots = tls::load_roots(trusted).map_err(|e| err(&l.place, e.to_string()))?;
            // As nginx, read only when the nodes are verified.
            let crls = match &s.ssl_crl {
                Some((path, place)) => {
                    tls::load_crls(path).map_err(|e| GrammarError::at(place, e.to_string()))?
                }
                None => Vec::new(),
            };
            (
                PeerPolicy::Chain {
                    roots: Arc::new(roots),
                    names: vec![name.clone()],
                    depth: Some(s.ssl_verify_depth as usize),
                    crls,
                },
                format!(
                    "chain {} {} depth={} crl={:?}",
                    trusted.display(),
                    name.to_str(),
                    s.ssl_verify_depth,
                    s.ssl_crl.as_ref().map(|(path, _)| path)
                ),
            )
        }
        Some(false) => {
            warnings.push(Warning {
                at: l.place.to_string(),
                message: "proxy_ssl_verify off: any host that answers on a node's address gets \
                          the users' requests, passwords and tokens. Remove it to pin the \
                          nodes to this server's certificate, or verify a chain with \
                          proxy_ssl_verify on and proxy_ssl_trusted_certificate"
                    .to_owned(),
            });
            (PeerPolicy::Anyone, "anyone".to_owned())
        }
        None => {
            let Some(own) = own else {
                return Err(err(
                    &l.place,
                    "no certificate to pin the nodes to: this configuration has no \
                     ssl_certificate; set proxy_ssl_verify on with \
                     proxy_ssl_trusted_certificate",
                ));
            };
            for (set, name) in [
                (
                    s.ssl_trusted_certificate.is_some(),
                    "proxy_ssl_trusted_certificate",
                ),
                (s.ssl_crl.is_some(), "proxy_ssl_crl"),
            ] {
                if set {
                    warnings.push(Warning {
                        at: l.place.to_string(),
                        message: format!(
                            "{name} without \"proxy_ssl_verify on\" is not used (the nodes \
                             are pinned to the key of this server's certificate)"
                        ),
                    });
                }
            }
            let leaves: Vec<CertificateDer<'static>> =
                own.pairs().iter().map(|p| p.key.cert[0].clone()).collect();
            let prints: Vec<_> = leaves.iter().map(tls::fingerprint).collect();
            let key = format!("pin {}", prints.join(","));
            let policy = PeerPolicy::same_key_as_any(leaves)
                .ok_or_else(|| err(&l.place, "the server's certificate cannot be read as X.509"))?;
            (policy, key)
        }
    };
    let cache_key = format!(
        "{key}|sni={}|protocols={:?}|ciphers={:?}|reuse={}|cert={:?},{:?}",
        s.ssl_server_name,
        s.ssl_protocols,
        s.ssl_ciphers,
        s.ssl_session_reuse,
        s.ssl_certificate,
        s.ssl_certificate_key
    );
    let tls = match tls_cache.get(&cache_key) {
        Some(t) => t.clone(),
        None => {
            let describe = policy.describe();
            let verifier = PeerVerifier::new(policy, provider)
                .map_err(|e| err(&l.place, format!("upstream TLS: {e}")))?;
            let provider = Arc::new(ciphers::restrict(provider, None, s.ssl_ciphers.as_deref()));
            let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&versions(s.ssl_protocols.as_deref()))
                .map_err(|e| err(&l.place, format!("upstream TLS: {e}")))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier));
            let mut cc = match (&s.ssl_certificate, &s.ssl_certificate_key) {
                (Some(cert), Some(key)) => {
                    let identity = tls::load_certified_key(&provider, cert, Some(key))
                        .map_err(|e| err(&l.place, format!("proxy_ssl_certificate: {e}")))?;
                    if let Some(mode) = tls::exposed_key(key, 0o004) {
                        warnings.push(Warning {
                            at: l.place.to_string(),
                            message: format!(
                                "the private key {} is readable by every user (mode {mode:o}): \
                                 chmod 600 it",
                                key.display()
                            ),
                        });
                    }
                    builder.with_client_cert_resolver(Arc::new(tls::SingleIdentity(identity)))
                }
                _ => builder.with_no_client_auth(),
            };
            cc.enable_sni = s.ssl_server_name;
            cc.alpn_protocols = vec![b"http/1.1".to_vec()];
            cc.resumption = if s.ssl_session_reuse {
                rustls::client::Resumption::in_memory_sessions(SESSION_CACHE)
            } else {
                rustls::client::Resumption::disabled()
            };
            let t = Arc::new(UpstreamTls {
                connector: TlsConnector::from(Arc::new(cc)),
                policy: describe,
            });
            tls_cache.insert(cache_key, t.clone());
            t
        }
    };
    Ok(LocationRt {
        tls: Some(tls),
        ssl_name: Some(name),
        access_logs: Arc::new([]),
        redirect: l.redirect(),
        limits: Applied::default(),
        hidden: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::name_matches;
    use crate::{Balancer, Config};

    #[test]
    fn the_default_server_takes_unknown_names_on_its_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nginx.conf");
        let servers = |flag: &str| {
            format!(
                "events {{ }}\nhttp {{\n\
                 server {{ listen 127.0.0.1:8; server_name a.example.org; return 404; }}\n\
                 server {{ listen 127.0.0.1:8 {flag}; server_name b.example.org; return 404; }}\n\
                 server {{ listen 127.0.0.2:8; server_name c.example.org; return 404; }}\n}}\n"
            )
        };
        for (flag, default) in [("", 0), ("default_server", 1)] {
            std::fs::write(&path, servers(flag)).expect("write");
            let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let balancer = Balancer::prepare(config).unwrap_or_else(|e| panic!("{e}"));
            let rt = balancer.current.load();
            let l = rt
                .listeners
                .iter()
                .find(|l| l.addr.to_string() == "127.0.0.1:8")
                .expect("127.0.0.1:8");
            assert_eq!(rt.server_for(l, Some("x.example.org")), default, "{flag}");
            assert_eq!(rt.server_for(l, None), default, "{flag}");
            assert_eq!(rt.server_for(l, Some("a.example.org")), 0, "{flag}");
            assert_eq!(rt.server_for(l, Some("B.example.org")), 1, "{flag}");
        }
    }

    #[test]
    fn server_names() {
        assert!(name_matches("lb.example.org", "LB.example.org"));
        assert!(name_matches("*.example.org", "a.example.org"));
        assert!(!name_matches("*.example.org", "example.org"));
        assert!(!name_matches("*.example.org", "aexample.org"));
        assert!(name_matches(".example.org", "example.org"));
        assert!(name_matches(".example.org", "x.y.example.org"));
        assert!(!name_matches("lb.example.org", "lb.example.org.evil"));
    }
}
