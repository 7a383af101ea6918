//! A service ready to serve: its configuration plus the loaded TLS material, the peer
//! verification policy it implies, its connection limit and its metrics.
//!
//! Built once at start-up and again on every reload, from a [`ServiceConfig`]; a build that
//! fails leaves whatever was running untouched.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use gluu_common::ciphers;
use gluu_common::tls::{self, PROTOCOL_VERSIONS};
use gluu_common::validity::{self, Validity};
use gluu_common::verify::{PeerPolicy, PeerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::ServerName;
use tokio::sync::Semaphore;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{Config, ConfigError, Mode, ServiceConfig, Target, TlsVersion, Warning};
use crate::metrics::{Metrics, ServiceMetrics};

/// How many TLS sessions the server side remembers for resumption (TLS 1.2 ids and 1.3
/// stateful tickets): enough for every pooled connection of a large cluster.
const SESSION_CACHE: usize = 4096;

/// The TLS end of a service.
#[derive(Clone)]
pub enum Tls {
    Server(TlsAcceptor),
    Client(TlsConnector),
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tls::Server(_) => "Tls::Server",
            Tls::Client(_) => "Tls::Client",
        })
    }
}

/// A running service's immutable state (swapped whole on reload).
pub struct Service {
    pub config: ServiceConfig,
    pub tls: Tls,
    pub policy: PeerPolicy,
    pub limit: Arc<Semaphore>,
    pub metrics: ServiceMetrics,
    /// Next target for `failover = rr`.
    next: AtomicUsize,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.config.name)
            .field("mode", &self.config.mode)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Service {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Targets in the order this connection should try them.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        let n = self.config.connect.len();
        let start = match self.config.failover {
            crate::config::Failover::Prio => 0,
            crate::config::Failover::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        (0..n).map(move |i| &self.config.connect[(start + i) % n])
    }

    /// The name sent as SNI (when it is a DNS name) and given to the verifier.
    pub fn server_name(&self, target: &Target) -> Result<ServerName<'static>, String> {
        let name = self.config.tls.sni.as_deref().unwrap_or(&target.host);
        ServerName::try_from(name.to_owned()).map_err(|e| format!("`{name}`: {e}"))
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        let targets: Vec<_> = self.config.connect.iter().map(|t| t.to_string()).collect();
        let (inside, outside) = match self.config.mode {
            Mode::Server => ("TLS", "plaintext"),
            Mode::Client => ("plaintext", "TLS"),
        };
        format!(
            "[{}] {inside} on {} -> {outside} to {}; peer: {}",
            self.config.name,
            self.config.accept,
            targets.join(", "),
            self.policy.describe()
        )
    }
}

/// Loads TLS material and builds every service of `config`, with the warnings to print.
pub fn build_all(config: &Config, metrics: &Metrics) -> Result<Built, ConfigError> {
    let provider = tls::provider();
    let mut built = Built {
        services: Vec::with_capacity(config.services.len()),
        warnings: config.warnings.clone(),
        certificates: Vec::new(),
    };
    for s in &config.services {
        let svc = build(s, &provider, metrics, &mut built)?;
        built.services.push(Arc::new(svc));
    }
    Ok(built)
}

/// Every service of a configuration, what to warn about, and the certificate files served.
#[derive(Debug)]
pub struct Built {
    pub services: Vec<Arc<Service>>,
    pub warnings: Vec<Warning>,
    /// Each `cert` file once.
    pub certificates: Vec<Validity>,
}

fn build(
    s: &ServiceConfig,
    provider: &Arc<CryptoProvider>,
    metrics: &Metrics,
    built: &mut Built,
) -> Result<Service, ConfigError> {
    let warnings = &mut built.warnings;
    let identity = match &s.tls.cert {
        Some(cert) => {
            let key = s.tls.key.as_deref();
            let place = s.place_of(if key.is_some() { "key" } else { "cert" });
            warn_if_world_readable(key.unwrap_or(cert), &s.name, place, warnings);
            let identity = tls::load_certified_key(provider, cert, key)
                .map_err(|e| ConfigError::at(s.place_of("cert"), format!("[{}] {e}", s.name)))?;
            let now = SystemTime::now();
            if let Some(m) = validity::record(&mut built.certificates, cert, &identity.cert, now) {
                warnings.push(Warning {
                    at: s.place_of("cert").to_string(),
                    message: format!("[{}] {m}", s.name),
                });
            }
            Some(identity)
        }
        None => None,
    };
    let policy = peer_policy(s, identity.as_deref())?;
    if matches!(policy, PeerPolicy::Anyone | PeerPolicy::AnyCertificate) {
        warnings.push(Warning {
            at: s.place.to_string(),
            message: format!(
                "[{}] verifies no peer ({}): anyone who can reach {} {}. Remove the \
                 verification options to pin the peer to `cert`, or set `CAfile` with \
                 `verifyChain = yes`",
                s.name,
                policy.describe(),
                match s.mode {
                    Mode::Server => s.accept.to_string(),
                    Mode::Client => "the network path".to_owned(),
                },
                match s.mode {
                    Mode::Server => "reaches the target in plaintext",
                    Mode::Client => "can impersonate the server",
                }
            ),
        });
    }
    let verifier = Arc::new(
        PeerVerifier::new(policy.clone(), provider)
            .map_err(|e| ConfigError::at(s.place_of("cafile"), format!("[{}] {e}", s.name)))?,
    );
    let versions = versions(s);
    let tls12 = versions
        .iter()
        .any(|v| v.version == rustls::ProtocolVersion::TLSv1_2);
    if let (true, Some(chosen), Some(id)) = (tls12, &s.tls.ciphers, &identity)
        && let Some(why) = ciphers::unusable_with(id.key.algorithm(), chosen)
    {
        let fails = if versions.len() > 1 {
            "TLS 1.2 peers cannot connect (TLS 1.3 ones can)"
        } else {
            "no peer can connect"
        };
        warnings.push(Warning {
            at: s.place_of("ciphers").to_string(),
            message: format!("[{}] `ciphers`: {why}: {fails}", s.name),
        });
    }
    // `ciphers` and `ciphersuites` narrow what this service offers.
    let provider = &Arc::new(ciphers::restrict(
        provider,
        s.tls.ciphersuites.as_deref(),
        s.tls.ciphers.as_deref(),
    ));
    let tls_err = |e: rustls::Error| ConfigError::at(&s.place, format!("[{}] TLS: {e}", s.name));
    let tls = match s.mode {
        Mode::Server => {
            let Some(identity) = identity else {
                unreachable!("validation requires cert in server mode")
            };
            let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&versions)
                .map_err(tls_err)?;
            let builder = if matches!(policy, PeerPolicy::Anyone) {
                builder.with_no_client_auth()
            } else {
                builder.with_client_cert_verifier(verifier)
            };
            let mut config = builder.with_cert_resolver(Arc::new(tls::SingleIdentity(identity)));
            config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
            // One ticket per connection is enough to resume the next one; rustls' default
            // of two doubles the cache churn of every fresh connection.
            config.send_tls13_tickets = 1;
            Tls::Server(TlsAcceptor::from(Arc::new(config)))
        }
        Mode::Client => {
            let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&versions)
                .map_err(tls_err)?
                .dangerous()
                .with_custom_certificate_verifier(verifier);
            let config = match identity {
                Some(id) => builder.with_client_cert_resolver(Arc::new(tls::SingleIdentity(id))),
                None => builder.with_no_client_auth(),
            };
            Tls::Client(TlsConnector::from(Arc::new(config)))
        }
    };
    Ok(Service {
        config: s.clone(),
        tls,
        policy,
        limit: Arc::new(Semaphore::new(s.max_connections)),
        metrics: metrics.service(&s.name),
        next: AtomicUsize::new(0),
    })
}

fn versions(s: &ServiceConfig) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let min = s.tls.min_version.unwrap_or(TlsVersion::Tls12);
    let max = s.tls.max_version.unwrap_or(TlsVersion::Tls13);
    PROTOCOL_VERSIONS
        .iter()
        .copied()
        .filter(|v| {
            let v = if v.version == rustls::ProtocolVersion::TLSv1_3 {
                TlsVersion::Tls13
            } else {
                TlsVersion::Tls12
            };
            min <= v && v <= max
        })
        .collect()
}

/// stunnel's verification options mapped to a policy; with none set, the peer must present
/// the very certificate this side holds (the guide's one shared `secureredis.pem`).
fn peer_policy(
    s: &ServiceConfig,
    identity: Option<&CertifiedKey>,
) -> Result<PeerPolicy, ConfigError> {
    let t = &s.tls;
    if !t.verification_configured() {
        let Some(identity) = identity else {
            return Err(ConfigError::at(
                &s.place,
                format!(
                    "[{}] has no peer verification configured and no `cert` to pin the server \
                     to. Set `cert` (the guide's secureredis.pem, the same file the server \
                     holds), or `CAfile` with `verifyChain = yes`, or `verifyPeer = no` to \
                     accept any server",
                    s.name
                ),
            ));
        };
        return PeerPolicy::same_key_as(identity.cert[0].clone()).ok_or_else(|| {
            ConfigError::at(
                s.place_of("cert"),
                format!("[{}] the certificate cannot be read as X.509", s.name),
            )
        });
    }
    let ca = |option: &str| -> Result<_, ConfigError> {
        let Some(path) = &t.ca_file else {
            return Err(ConfigError::at(
                s.place_of(option),
                format!("[{}] `{option}` needs `CAfile`", s.name),
            ));
        };
        Ok(path.clone())
    };
    if !t.check_host.is_empty() && t.verify_chain != Some(true) {
        return Err(ConfigError::at(
            s.place_of("checkhost"),
            format!(
                "[{}] `checkHost` needs `verifyChain = yes` and `CAfile`",
                s.name
            ),
        ));
    }
    let load_err = |option: &str, e: tls::TlsError| {
        ConfigError::at(s.place_of(option), format!("[{}] {e}", s.name))
    };
    if t.verify_peer == Some(true) {
        let path = ca("verifypeer")?;
        let pins = tls::load_certs(&path).map_err(|e| load_err("cafile", e))?;
        return Ok(PeerPolicy::Pinned(pins));
    }
    if t.verify_chain == Some(true) {
        let path = ca("verifychain")?;
        let roots = tls::load_roots(&path).map_err(|e| load_err("cafile", e))?;
        let names = t
            .check_host
            .iter()
            .map(|h| {
                ServerName::try_from(h.clone()).map_err(|e| {
                    ConfigError::at(s.place_of("checkhost"), format!("[{}] `{h}`: {e}", s.name))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(PeerPolicy::Chain {
            roots: Arc::new(roots),
            names,
            depth: None,
            crls: Vec::new(),
        });
    }
    Ok(match (s.mode, t.require_cert) {
        (Mode::Server, Some(true)) => PeerPolicy::AnyCertificate,
        _ => PeerPolicy::Anyone,
    })
}

fn warn_if_world_readable(
    path: &std::path::Path,
    service: &str,
    place: &crate::config::ini::Place,
    warnings: &mut Vec<Warning>,
) {
    if gluu_common::tls::exposed_key(path, 0o004).is_some() {
        warnings.push(Warning {
            at: place.to_string(),
            message: format!(
                "[{service}] the private key in {} is readable by every user: chmod 640 it (as \
                 the guide does)",
                path.display()
            ),
        });
    }
}
