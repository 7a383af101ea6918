//! A server's TLS settings, in `http` (inherited by every server) or `server`: nginx's
//! `ssl_certificate`, `ssl_certificate_key`, `ssl_protocols`, `ssl_ciphers`,
//! `ssl_prefer_server_ciphers`, `ssl_session_cache`, `ssl_session_timeout` and
//! `ssl_session_tickets`, with nginx's meaning. The other lines of a hardened nginx TLS setup (Mozilla's generator writes
//! them) have no meaning for gluu-lb: they are accepted with a warning that says why, so
//! such a file runs as it is and nothing is silently dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gluu_common::ciphers;
use rustls::{CipherSuite, NamedGroup};

use super::Warning;
use super::grammar::{Directive, GrammarError, Place};
use super::proxy::{parse_size, time};

/// `ssl_session_cache`: how many TLS sessions gluu-lb keeps for clients that resume by
/// session ID (TLS 1.2 without tickets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionCache {
    /// `off` and `none`: no cache.
    Off,
    /// `builtin[:N]` (N sessions) or `shared:NAME:SIZE` (nginx's "1m holds about 4000
    /// sessions").
    Sessions(usize),
}

/// gluu-lb's session cache when the file says nothing (nginx's default is `none`; a cache
/// lets TLS 1.2 clients without tickets resume, see README).
pub const SESSION_CACHE_DEFAULT: usize = 4096;

/// The most sessions a cache may hold (about 64 MiB of nginx's shared memory).
const SESSION_CACHE_MAX: usize = 1 << 18;

/// nginx's `ssl_session_cache shared:NAME:1m` holds about this many sessions per MiB.
const SESSIONS_PER_MIB: u64 = 4000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// `ssl_certificate` lines, in order; several for several key types (RSA and ECDSA),
    /// as nginx takes them.
    pub certificates: Vec<PathBuf>,
    /// `ssl_certificate_key` lines, in order: the Nth goes with the Nth certificate.
    pub certificate_keys: Vec<PathBuf>,
    /// `ssl_protocols` (TLSv1.2 and/or TLSv1.3); `None`: both.
    pub protocols: Option<Vec<String>>,
    /// `ssl_ciphers`: the TLS 1.2 suites it selects, in its order; `None`: all of
    /// gluu-lb's. TLS 1.3's suites are not set by it, as with nginx and OpenSSL.
    pub ciphers: Option<Vec<CipherSuite>>,
    /// `ssl_prefer_server_ciphers`; `None` (no line): gluu-lb's own order, where nginx
    /// takes the client's (README).
    pub prefer_server_ciphers: Option<bool>,
    pub session_cache: SessionCache,
    /// `ssl_session_timeout` (5m): how long a session can be resumed, by ticket or cache.
    pub session_timeout: Duration,
    /// `ssl_session_tickets` (on).
    pub session_tickets: bool,
    /// `ssl_session_ticket_key FILE` lines, with their places: the first encrypts new
    /// tickets, all decrypt (nginx's rotation). None: a key of gluu-lb's own, made at start.
    pub ticket_keys: Vec<(PathBuf, Place)>,
    /// `ssl_ecdh_curve`: the key exchange groups offered, in the server's order of
    /// preference; `None` (`auto`, nginx's default): rustls's (X25519, P-256, P-384, and
    /// the X25519MLKEM768 hybrid).
    pub curves: Option<Vec<NamedGroup>>,
    /// `ssl_reject_handshake on`: a TLS handshake that picks this server (by SNI, or as
    /// the default server of its address) fails, so no certificate is shown to a client
    /// that did not name a host served here; the server needs no certificate then.
    pub reject_handshake: bool,
    /// `ssl_verify_client`, `ssl_client_certificate`, `ssl_trusted_certificate`,
    /// `ssl_verify_depth` and `ssl_crl`: what this server asks of a client's certificate.
    pub client: ClientAuth,
}

/// nginx's `ssl_verify_client`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VerifyClient {
    /// No certificate is asked for (nginx's default).
    #[default]
    Off,
    /// A certificate that verifies is required: none is a 400 ("No required SSL
    /// certificate was sent"), one that does not verify a 400 ("The SSL certificate error").
    On,
    /// Asked for, not required; one that does not verify is a 400.
    Optional,
    /// Asked for, not required, and not required to chain to a trusted CA (an untrusted
    /// or self-signed one passes, with `$ssl_client_verify` saying why it failed; an
    /// expired one still is a 400, as in nginx).
    OptionalNoCa,
}

/// A server's client certificate settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientAuth {
    pub verify: VerifyClient,
    /// The line, for errors about the settings as a whole.
    pub verify_place: Option<Place>,
    /// `ssl_client_certificate`: CAs trusted and named to the client in the handshake.
    pub certificate: Option<(PathBuf, Place)>,
    /// `ssl_trusted_certificate`: CAs trusted but not named to the client.
    pub trusted: Option<(PathBuf, Place)>,
    /// `ssl_verify_depth` (1): how many intermediate CA certificates a chain may have
    /// between the client's certificate and the trusted CA (OpenSSL's meaning).
    pub depth: u32,
    /// `ssl_crl`: the CRLs a chain is checked against, every certificate of it.
    pub crl: Option<(PathBuf, Place)>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            certificates: Vec::new(),
            certificate_keys: Vec::new(),
            protocols: None,
            ciphers: None,
            prefer_server_ciphers: None,
            session_cache: SessionCache::Sessions(SESSION_CACHE_DEFAULT),
            session_timeout: Duration::from_secs(300),
            session_tickets: true,
            ticket_keys: Vec::new(),
            curves: None,
            reject_handshake: false,
            client: ClientAuth {
                depth: 1,
                ..ClientAuth::default()
            },
        }
    }
}

/// The settings a `server` starts from: the `http` block's, except that a block with an
/// `ssl_certificate` (or `ssl_certificate_key`) line of its own inherits none of those
/// lines, as nginx inherits the lists.
pub fn inherit(parent: &TlsSettings, block: &[Directive]) -> TlsSettings {
    let mut s = parent.clone();
    let has = |name: &str| block.iter().any(|d| d.name == name);
    if has("ssl_certificate") {
        s.certificates.clear();
    }
    if has("ssl_certificate_key") {
        s.certificate_keys.clear();
    }
    if has("ssl_session_ticket_key") {
        s.ticket_keys.clear();
    }
    s
}

/// Applies `d` to `s` when it is one of the TLS settings (or a line accepted with a
/// warning; relative paths start at `root`); `Ok(false)` when it is not.
pub fn apply(
    s: &mut TlsSettings,
    d: &Directive,
    root: &Path,
    warnings: &mut Vec<Warning>,
) -> Result<bool, GrammarError> {
    let mut unused = |why: &str| {
        warnings.push(Warning {
            at: d.place.to_string(),
            message: format!("\"{}\" is not used by gluu-lb: {why}", d.name),
        })
    };
    match d.name.as_str() {
        "ssl_certificate" => s.certificates.push(root.join(d.one_arg()?)),
        "ssl_certificate_key" => s.certificate_keys.push(root.join(d.one_arg()?)),
        "ssl_protocols" => s.protocols = Some(protocols(d, warnings)?),
        "ssl_ciphers" => s.ciphers = Some(cipher_list(d, d.one_arg()?)?),
        "ssl_prefer_server_ciphers" => s.prefer_server_ciphers = Some(d.on_off()?),
        "ssl_session_tickets" => s.session_tickets = d.on_off()?,
        "ssl_session_ticket_key" => {
            s.ticket_keys
                .push((root.join(d.one_arg()?), d.place.clone()));
        }
        "ssl_session_timeout" => s.session_timeout = time(d)?,
        "ssl_session_cache" => s.session_cache = session_cache(d)?,
        "ssl_ecdh_curve" => s.curves = curves(d, warnings)?,
        "ssl_reject_handshake" => s.reject_handshake = d.on_off()?,
        "ssl_verify_client" => {
            s.client.verify = match d.one_arg()? {
                "off" => VerifyClient::Off,
                "on" => VerifyClient::On,
                "optional" => VerifyClient::Optional,
                "optional_no_ca" => VerifyClient::OptionalNoCa,
                v => return Err(d.error(format!("invalid value \"{v}\""))),
            };
            s.client.verify_place = Some(d.place.clone());
        }
        "ssl_client_certificate" => {
            s.client.certificate = Some((root.join(d.one_arg()?), d.place.clone()));
        }
        "ssl_crl" => s.client.crl = Some((root.join(d.one_arg()?), d.place.clone())),
        "ssl_verify_depth" => {
            s.client.depth = d
                .one_arg()?
                .parse()
                .map_err(|_| d.error(format!("\"{}\" directive invalid number", d.name)))?;
        }
        "ssl_dhparam" => {
            d.one_arg()?;
            unused(
                "its TLS 1.2 suites all use ECDHE (rustls has no DHE suites), so it has no use for DH parameters",
            )
        }
        "ssl_stapling" => {
            if d.on_off()? {
                unused(
                    "it does not staple OCSP responses; clients check revocation themselves, \
                     as they do with nginx whenever the responder cannot be reached",
                )
            }
        }
        "ssl_stapling_verify" => unused("it staples no OCSP responses"),
        // Used only to verify client certificates (`ssl_verify_client`), as in nginx
        // without OCSP stapling.
        "ssl_trusted_certificate" => {
            s.client.trusted = Some((root.join(d.one_arg()?), d.place.clone()));
        }
        "resolver" | "resolver_timeout" => unused(
            "it resolves upstream server names at start and at each reload, as nginx does \
             without \"resolve\", and fetches no OCSP responses",
        ),
        _ => return Ok(false),
    }
    Ok(true)
}

/// OpenSSL's names for the groups rustls offers (compared without case), and the groups.
const CURVES: &[(&str, NamedGroup)] = &[
    ("X25519", NamedGroup::X25519),
    ("prime256v1", NamedGroup::secp256r1),
    ("secp256r1", NamedGroup::secp256r1),
    ("P-256", NamedGroup::secp256r1),
    ("secp384r1", NamedGroup::secp384r1),
    ("P-384", NamedGroup::secp384r1),
    ("X25519MLKEM768", NamedGroup::X25519MLKEM768),
    ("SecP256r1MLKEM768", NamedGroup::secp256r1MLKEM768),
];

/// Groups OpenSSL (and so nginx) offers that rustls does not.
const CURVES_NOT_OFFERED: &[&str] = &[
    "secp521r1",
    "P-521",
    "X448",
    "ffdhe2048",
    "ffdhe3072",
    "ffdhe4096",
    "ffdhe6144",
    "ffdhe8192",
    "brainpoolP256r1",
    "brainpoolP384r1",
    "brainpoolP512r1",
    "secp224r1",
    "P-224",
];

/// `ssl_ecdh_curve auto | NAME[:NAME...]`: the groups listed that rustls offers, in the
/// line's order; those only OpenSSL offers are left out with a warning, a name neither
/// knows is an error (nginx: `SSL_CTX_set1_curves_list(...) failed`), and so is a line
/// that leaves nothing.
fn curves(
    d: &Directive,
    warnings: &mut Vec<Warning>,
) -> Result<Option<Vec<NamedGroup>>, GrammarError> {
    let v = d.one_arg()?;
    if v == "auto" {
        return Ok(None);
    }
    let mut groups = Vec::new();
    let mut left_out = Vec::new();
    for name in v.split(':') {
        if let Some((_, g)) = CURVES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            if !groups.contains(g) {
                groups.push(*g);
            }
        } else if CURVES_NOT_OFFERED
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
        {
            left_out.push(name);
        } else {
            return Err(d.error(format!(
                "SSL_CTX_set1_curves_list(\"{v}\") failed: group \"{name}\" cannot be set"
            )));
        }
    }
    if groups.is_empty() {
        return Err(d.error(format!(
            "\"ssl_ecdh_curve {v}\": gluu-lb offers none of these groups (rustls has X25519, \
             prime256v1, secp384r1 and X25519MLKEM768)"
        )));
    }
    if !left_out.is_empty() {
        warnings.push(Warning {
            at: d.place.to_string(),
            message: format!(
                "\"ssl_ecdh_curve\": {} not offered (rustls does not have {})",
                left_out.join(", "),
                if left_out.len() == 1 { "it" } else { "them" }
            ),
        });
    }
    Ok(Some(groups))
}

/// The versions nginx's `ssl_protocols` names (case aside), and whether gluu-lb offers
/// each.
const PROTOCOLS: [(&str, bool); 6] = [
    ("SSLv2", false),
    ("SSLv3", false),
    ("TLSv1", false),
    ("TLSv1.1", false),
    ("TLSv1.2", true),
    ("TLSv1.3", true),
];

/// `ssl_protocols` (and `proxy_ssl_protocols`): the versions gluu-lb offers among those listed, by their canonical
/// names. Older ones are dropped with a warning, so a line written for nginx's older
/// defaults (`TLSv1 TLSv1.1 TLSv1.2`, Debian's and Ubuntu's stock `nginx.conf`) runs as
/// it is; a line with none of TLSv1.2 and TLSv1.3 is an error, since nothing would be left.
pub(super) fn protocols(
    d: &Directive,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<String>, GrammarError> {
    if d.args.is_empty() {
        return Err(d.error("invalid number of arguments in \"ssl_protocols\" directive"));
    }
    let (mut offered, mut dropped) = (Vec::new(), Vec::new());
    for a in &d.args {
        let Some(&(name, ours)) = PROTOCOLS.iter().find(|(n, _)| n.eq_ignore_ascii_case(a)) else {
            return Err(d.error(format!("invalid value \"{a}\"")));
        };
        let list = if ours { &mut offered } else { &mut dropped };
        if !list.contains(&name) {
            list.push(name);
        }
    }
    if offered.is_empty() {
        return Err(d.error(format!(
            "\"ssl_protocols {}\": gluu-lb speaks only TLSv1.2 and TLSv1.3 (rustls); older \
             versions are broken (RFC 8996) and cannot be offered: add TLSv1.2",
            d.args.join(" ")
        )));
    }
    if !dropped.is_empty() {
        warnings.push(Warning {
            at: d.place.to_string(),
            message: format!(
                "\"ssl_protocols\": {} not offered: gluu-lb speaks only TLSv1.2 and TLSv1.3 \
                 (rustls; RFC 8996 retires the older versions), so a client that speaks \
                 nothing newer cannot connect",
                match dropped.as_slice() {
                    [one] => format!("{one} is"),
                    more => format!("{} are", more.join(", ")),
                }
            ),
        });
    }
    Ok(offered.into_iter().map(str::to_owned).collect())
}

fn session_cache(d: &Directive) -> Result<SessionCache, GrammarError> {
    let bad = |a: &str| d.error(format!("invalid session cache \"{a}\""));
    if d.args.is_empty() {
        return Err(d.error("invalid number of arguments in \"ssl_session_cache\" directive"));
    }
    let mut sessions = None;
    for a in &d.args {
        let n = match a.as_str() {
            "off" | "none" if d.args.len() == 1 => return Ok(SessionCache::Off),
            "builtin" => 20480,
            _ => {
                if let Some(n) = a.strip_prefix("builtin:") {
                    n.parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad(a))?
                } else if let Some(rest) = a.strip_prefix("shared:") {
                    let (name, size) = rest.rsplit_once(':').ok_or_else(|| bad(a))?;
                    let bytes = parse_size(size).filter(|_| !name.is_empty());
                    // nginx refuses a zone under 8 pages (32k).
                    let bytes = bytes.filter(|b| *b >= 32 << 10).ok_or_else(|| bad(a))?;
                    usize::try_from(bytes.saturating_mul(SESSIONS_PER_MIB) >> 20)
                        .unwrap_or(usize::MAX)
                } else {
                    return Err(bad(a));
                }
            }
        };
        sessions = Some(sessions.unwrap_or(0usize).max(n));
    }
    let n = sessions.expect("one argument at least");
    Ok(SessionCache::Sessions(n.min(SESSION_CACHE_MAX)))
}

pub(super) fn cipher_list(d: &Directive, text: &str) -> Result<Vec<CipherSuite>, GrammarError> {
    ciphers::select_tls12(text).map_err(|why| d.error(format!("\"{} {text}\": {why}", d.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(v: &str) -> (Result<Option<Vec<NamedGroup>>, GrammarError>, Vec<Warning>) {
        let mut warnings = Vec::new();
        let d = Directive::for_test("ssl_ecdh_curve", &[v], 4);
        (curves(&d, &mut warnings), warnings)
    }

    #[test]
    fn ssl_ecdh_curve_read_as_openssl_names_groups() {
        let (auto, _) = read("auto");
        assert_eq!(auto.expect("auto"), None);
        let (mozilla, warnings) = read("X25519:prime256v1:secp384r1");
        assert_eq!(
            mozilla.expect("valid"),
            Some(vec![
                NamedGroup::X25519,
                NamedGroup::secp256r1,
                NamedGroup::secp384r1
            ])
        );
        assert!(warnings.is_empty());
        let (names, _) = read("P-384:x25519:secp256r1:P-256");
        assert_eq!(
            names.expect("valid"),
            Some(vec![
                NamedGroup::secp384r1,
                NamedGroup::X25519,
                NamedGroup::secp256r1
            ]),
            "other names of the same groups, case aside, each once"
        );
        let (some, warnings) = read("X448:prime256v1:secp521r1");
        assert_eq!(some.expect("valid"), Some(vec![NamedGroup::secp256r1]));
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].message.contains("X448, secp521r1 not offered"),
            "{warnings:?}"
        );
        for (v, says) in [
            ("prime256v1:foo", "group \"foo\" cannot be set"),
            ("X448", "offers none of these groups"),
        ] {
            let (e, _) = read(v);
            let e = e.expect_err(v).to_string();
            assert!(e.contains(says) && e.contains("nginx.conf:4"), "{v}: {e}");
        }
    }
}
