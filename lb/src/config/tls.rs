//! A server's TLS settings, in `http` (inherited by every server) or `server`: nginx's
//! `ssl_certificate`, `ssl_certificate_key`, `ssl_protocols`, `ssl_ciphers`,
//! `ssl_prefer_server_ciphers`,
//! `ssl_session_cache`, `ssl_session_timeout` and `ssl_session_tickets`, with nginx's
//! meaning. The other lines of a hardened nginx TLS setup (Mozilla's generator writes
//! them) have no meaning for gluu-lb: they are accepted with a warning that says why, so
//! such a file runs as it is and nothing is silently dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::CipherSuite;

use super::Warning;
use super::grammar::{Directive, GrammarError};
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
    pub certificate: Option<PathBuf>,
    pub certificate_key: Option<PathBuf>,
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
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            certificate: None,
            certificate_key: None,
            protocols: None,
            ciphers: None,
            prefer_server_ciphers: None,
            session_cache: SessionCache::Sessions(SESSION_CACHE_DEFAULT),
            session_timeout: Duration::from_secs(300),
            session_tickets: true,
        }
    }
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
        "ssl_certificate" => s.certificate = Some(root.join(d.one_arg()?)),
        "ssl_certificate_key" => s.certificate_key = Some(root.join(d.one_arg()?)),
        "ssl_protocols" => {
            for p in &d.args {
                if !matches!(p.as_str(), "TLSv1.2" | "TLSv1.3") {
                    return Err(d.error(format!(
                        "\"ssl_protocols {p}\": gluu-lb speaks only TLSv1.2 and TLSv1.3 \
                         (rustls); older versions are broken"
                    )));
                }
            }
            s.protocols = Some(d.args.clone());
        }
        "ssl_ciphers" => s.ciphers = Some(ciphers(d, d.one_arg()?)?),
        "ssl_prefer_server_ciphers" => s.prefer_server_ciphers = Some(d.on_off()?),
        "ssl_session_tickets" => s.session_tickets = d.on_off()?,
        "ssl_session_timeout" => s.session_timeout = time(d)?,
        "ssl_session_cache" => s.session_cache = session_cache(d)?,
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
        "ssl_trusted_certificate" => {
            unused("it staples no OCSP responses and asks no client certificates")
        }
        "resolver" | "resolver_timeout" => unused(
            "it resolves upstream server names at start and at each reload, as nginx does \
             without \"resolve\", and fetches no OCSP responses",
        ),
        _ => return Ok(false),
    }
    Ok(true)
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

/// One TLS 1.2 suite gluu-lb has, with the words of OpenSSL's cipher strings that select
/// it (checked against `openssl ciphers` in the tests).
struct Suite {
    name: &'static str,
    suite: CipherSuite,
    words: &'static [&'static str],
    /// Bits, for `@STRENGTH`.
    strength: u16,
}

const ECDHE: &[&str] = &[
    "ALL", "DEFAULT", "HIGH", "TLSv1.2", "kECDHE", "kEECDH", "ECDHE", "EECDH", "ECDH",
];

macro_rules! suite {
    ($name:literal, $suite:ident, $strength:literal, [$($word:literal),*]) => {
        Suite {
            name: $name,
            suite: CipherSuite::$suite,
            words: &[$($word),*],
            strength: $strength,
        }
    };
}

/// In OpenSSL's own order (`openssl ciphers ALL`), which a word adds them in.
const SUITES: &[Suite] = &[
    suite!(
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        256,
        ["aECDSA", "ECDSA", "AES", "AESGCM", "AES256", "FIPS"]
    ),
    suite!(
        "ECDHE-RSA-AES256-GCM-SHA384",
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        256,
        ["aRSA", "AES", "AESGCM", "AES256", "FIPS"]
    ),
    suite!(
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        256,
        ["aECDSA", "ECDSA", "CHACHA20"]
    ),
    suite!(
        "ECDHE-RSA-CHACHA20-POLY1305",
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        256,
        ["aRSA", "CHACHA20"]
    ),
    suite!(
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        128,
        ["aECDSA", "ECDSA", "AES", "AESGCM", "AES128", "FIPS"]
    ),
    suite!(
        "ECDHE-RSA-AES128-GCM-SHA256",
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        128,
        ["aRSA", "AES", "AESGCM", "AES128", "FIPS"]
    ),
];

impl Suite {
    /// Whether the cipher string item `A+B+...` selects it: every part is its name or one
    /// of its words (a word OpenSSL knows but this suite lacks, or one it does not know,
    /// selects nothing, as in OpenSSL).
    fn selected_by(&self, item: &str) -> bool {
        item.split('+')
            .all(|w| w == self.name || ECDHE.contains(&w) || self.words.contains(&w))
    }
}

/// The TLS 1.2 suites an OpenSSL cipher string selects, in its order, as OpenSSL's
/// `ssl_cipher_process_rulestr` applies it: a word adds the suites it selects that are not
/// in the list yet at the end, `-` takes them out (to the front of the ones that can come
/// back), `!` takes them out for good, `+` moves them to the end, `@STRENGTH` orders by
/// key length.
pub fn select(text: &str) -> Result<Vec<CipherSuite>, String> {
    // (index into SUITES, in the list)
    let mut list: Vec<(usize, bool)> = (0..SUITES.len()).map(|i| (i, false)).collect();
    for item in text.split([':', ' ', ',', ';']).filter(|s| !s.is_empty()) {
        if let Some(command) = item.strip_prefix('@') {
            if command == "STRENGTH" {
                for bits in [256, 128] {
                    move_to_end(&mut list, |i, on| on && SUITES[i].strength == bits);
                }
            } else if !command.starts_with("SECLEVEL=") {
                return Err(format!("\"{item}\" is not supported"));
            }
            continue;
        }
        if item.starts_with("SUITEB") {
            return Err(format!("\"{item}\" is not supported"));
        }
        let (op, words) = match item.as_bytes()[0] {
            b'!' | b'-' | b'+' => (item.as_bytes()[0], &item[1..]),
            _ => (b' ', item),
        };
        let hit = |i: usize| SUITES[i].selected_by(words);
        match op {
            b'!' => list.retain(|&(i, _)| !hit(i)),
            b'-' => {
                let (out, rest): (Vec<_>, Vec<_>) =
                    list.into_iter().partition(|&(i, on)| on && hit(i));
                list = out
                    .into_iter()
                    .map(|(i, _)| (i, false))
                    .chain(rest)
                    .collect();
            }
            b'+' => move_to_end(&mut list, |i, on| on && hit(i)),
            _ => {
                move_to_end(&mut list, |i, on| !on && hit(i));
                for entry in &mut list {
                    entry.1 |= hit(entry.0);
                }
            }
        }
    }
    Ok(list
        .into_iter()
        .filter(|&(_, on)| on)
        .map(|(i, _)| SUITES[i].suite)
        .collect())
}

/// Moves the entries `pick` chooses to the end of `list`, in their order.
fn move_to_end(list: &mut Vec<(usize, bool)>, pick: impl Fn(usize, bool) -> bool) {
    let (moved, rest): (Vec<_>, Vec<_>) = list.drain(..).partition(|&(i, on)| pick(i, on));
    list.extend(rest);
    list.extend(moved);
}

fn ciphers(d: &Directive, text: &str) -> Result<Vec<CipherSuite>, GrammarError> {
    let chosen = select(text).map_err(|why| d.error(format!("\"ssl_ciphers {text}\": {why}")))?;
    if chosen.is_empty() {
        let have: Vec<&str> = SUITES.iter().map(|s| s.name).collect();
        return Err(d.error(format!(
            "\"ssl_ciphers {text}\" selects none of gluu-lb's TLS 1.2 cipher suites ({})",
            have.join(":")
        )));
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<&'static str> {
        select(text)
            .expect("select")
            .into_iter()
            .map(|c| SUITES.iter().find(|s| s.suite == c).expect("ours").name)
            .collect()
    }

    #[test]
    fn a_list_of_names_is_taken_in_its_order() {
        assert_eq!(
            names(
                "ECDHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"
            ),
            ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"]
        );
        assert!(names("DHE-RSA-AES128-GCM-SHA256:RC4").is_empty());
        assert_eq!(names("HIGH:!aNULL:!MD5").len(), SUITES.len());
    }

    /// The suites and order OpenSSL's own parser makes of each string, of those gluu-lb has.
    #[test]
    fn cipher_strings_select_what_openssl_selects() {
        let openssl = gluu_testkit::require("openssl");
        for text in [
            "HIGH:!aNULL:!MD5",
            "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:\
             ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
             DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305",
            "EECDH+AESGCM:EDH+AESGCM",
            "EECDH+AESGCM:EDH+AESGCM:AES256+EECDH:AES256+EDH",
            "ECDHE-RSA-AES256-GCM-SHA384",
            "AES128:AES256:CHACHA20",
            "ALL:-AES256:AES256",
            "ALL:!AES256:AES256",
            "ALL:+AES128",
            "ALL:+aRSA:-CHACHA20",
            "CHACHA20:AES128:@STRENGTH",
            "AES128+ECDSA:ECDHE+aRSA:HIGH",
            "kEECDH+ECDSA+AES128:kEECDH+ECDSA:kEECDH:-ECDSA+AES256",
            "FIPS:!ECDSA",
            "DEFAULT:!CHACHA20",
            "ECDHE-RSA-CHACHA20-POLY1305,ECDHE-ECDSA-AES128-GCM-SHA256 HIGH",
            "CHACHA20:-ALL:ECDSA",
        ] {
            let out = std::process::Command::new(&openssl)
                .args(["ciphers", "-tls1_2", text])
                .output()
                .expect("openssl");
            let listed = String::from_utf8_lossy(&out.stdout);
            let theirs: Vec<&str> = listed
                .trim()
                .split(':')
                .filter(|n| SUITES.iter().any(|s| s.name == *n))
                .collect();
            assert_eq!(names(text), theirs, "{text}");
        }
    }

    #[test]
    fn commands_gluu_lb_cannot_follow_are_refused() {
        assert!(select("HIGH:@SECLEVEL=2").is_ok());
        assert!(select("HIGH:@FOO").is_err());
        assert!(select("SUITEB128").is_err());
    }
}
