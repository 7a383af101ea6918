//! nginx's `realip` module: behind another proxy or load balancer (a cloud LB, a CDN), the
//! client's address is the one that proxy reports in a header, for the proxies listed in
//! `set_real_ip_from` only. `real_ip_header` names the header (`X-Real-IP` unless set),
//! `real_ip_recursive` skips trusted addresses from the right of a list. The address
//! found then counts as the client's everywhere nginx counts it: `$remote_addr`, the
//! access log, `ip_hash`, `limit_req`, `allow`/`deny`, `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use hyper::header::{HeaderMap, HeaderName};

use super::Warning;
use super::access;
use super::grammar::{Directive, GrammarError};

/// Where the client's address is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `X-Real-IP` (nginx's default).
    XRealIp,
    /// `X-Forwarded-For`: every such header, the last first.
    XForwardedFor,
    /// Another header, its first line.
    Header(HeaderName),
}

/// The `realip` settings in force in a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealIp {
    /// `set_real_ip_from`: the proxies whose word is taken; empty: nobody's.
    pub from: Vec<(IpAddr, u8)>,
    pub source: Source,
    /// `real_ip_recursive`.
    pub recursive: bool,
}

impl Default for RealIp {
    fn default() -> Self {
        Self {
            from: Vec::new(),
            source: Source::XRealIp,
            recursive: false,
        }
    }
}

impl RealIp {
    /// The client's address as the trusted proxy `peer` reports it in `headers`, by
    /// nginx's reading; `None` when `peer` is not trusted or reports nothing usable. The
    /// port is the one reported with the address, else 0 (nginx's `$remote_port` is then
    /// empty).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Option<SocketAddr> {
        if self.from.is_empty() {
            return None;
        }
        let name = match &self.source {
            Source::XRealIp => "x-real-ip",
            Source::XForwardedFor => "x-forwarded-for",
            Source::Header(h) => h.as_str(),
        };
        let values: Vec<&[u8]> = match self.source {
            Source::XForwardedFor => headers.get_all(name).iter().map(|v| v.as_bytes()).collect(),
            _ => headers
                .get(name)
                .map(|v| v.as_bytes())
                .into_iter()
                .collect(),
        };
        let mut current = SocketAddr::new(peer, 0);
        let mut found = false;
        let mut last = Found::Not;
        // Several X-Forwarded-For lines are one list: the last line first.
        for v in values.iter().rev() {
            last = self.walk(&mut current, v);
            if !self.recursive {
                break;
            }
            if last == Found::Not && found {
                last = Found::Stopped;
                break;
            }
            if last != Found::All {
                break;
            }
            found = true;
        }
        (last != Found::Not).then_some(current)
    }

    fn trusts(&self, a: IpAddr) -> bool {
        self.from.iter().any(|net| access::contains(*net, a))
    }

    /// nginx's walk of one list from its right end: while the address so far is a
    /// trusted proxy's, the address to its left in the list is taken (only the last one
    /// unless `real_ip_recursive`).
    fn walk(&self, current: &mut SocketAddr, list: &[u8]) -> Found {
        let mut found = false;
        let mut len = list.len();
        let not = |found| if found { Found::Stopped } else { Found::Not };
        loop {
            if !self.trusts(current.ip()) || len == 0 {
                return not(found);
            }
            let mut p = len - 1;
            while p > 0 && matches!(list[p], b' ' | b',') {
                p -= 1;
                len -= 1;
            }
            while p > 0 {
                if matches!(list[p], b' ' | b',') {
                    p += 1;
                    break;
                }
                p -= 1;
            }
            let Some(a) = address(&list[p..len]) else {
                return not(found);
            };
            *current = a;
            found = true;
            if !(self.recursive && p > 0) {
                return Found::All;
            }
            len = p - 1;
        }
    }
}

/// How far a walk of a list went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    /// The first address it met was not a trusted proxy's (or not an address).
    Not,
    /// It took an address and stopped at an untrusted one, or at one it could not read.
    Stopped,
    /// It took every address it was allowed to.
    All,
}

/// An address as a proxy writes it: `ADDRESS`, `IPv4:PORT` or `[IPv6]:PORT` (port 0 for
/// none; a port of 0 is refused, as nginx refuses it).
fn address(token: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(token).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 0));
    }
    text.parse::<SocketAddr>().ok().filter(|a| a.port() > 0)
}

/// A block with `set_real_ip_from` lines of its own inherits none from above.
pub fn inherit(r: &mut RealIp, has: impl Fn(&str) -> bool) {
    if has("set_real_ip_from") {
        r.from.clear();
    }
}

/// Applies `d` when it is a `realip` line; `Ok(false)` when not.
pub fn apply(
    r: &mut RealIp,
    d: &Directive,
    warnings: &mut Vec<Warning>,
) -> Result<bool, GrammarError> {
    match d.name.as_str() {
        "set_real_ip_from" => {
            let v = d.one_arg()?;
            match access::network(d, v, warnings) {
                Ok(net) => r.from.push(net),
                Err(e) if v.starts_with("unix:") => return Err(e),
                // Not an address: a host name, resolved now, as nginx does.
                Err(_) => {
                    let addrs = (v, 0).to_socket_addrs().map_err(|_| {
                        d.error(format!("host not found in set_real_ip_from \"{v}\""))
                    })?;
                    for a in addrs {
                        let bits = if a.is_ipv4() { 32 } else { 128 };
                        r.from.push((a.ip(), bits));
                    }
                }
            }
        }
        "real_ip_header" => {
            r.source = match d.one_arg()? {
                "X-Real-IP" => Source::XRealIp,
                "X-Forwarded-For" => Source::XForwardedFor,
                "proxy_protocol" => {
                    return Err(d.error(
                        "\"real_ip_header proxy_protocol\" is not supported: gluu-lb's \
                         listeners do not take the PROXY protocol; have the proxy in front \
                         send X-Forwarded-For or X-Real-IP",
                    ));
                }
                name => Source::Header(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    d.error(format!(
                        "invalid header name \"{name}\" in \"real_ip_header\""
                    ))
                })?),
            }
        }
        "real_ip_recursive" => r.recursive = d.on_off()?,
        _ => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(lines: &[(&str, &str)]) -> Result<(RealIp, Vec<Warning>), GrammarError> {
        let mut r = RealIp::default();
        let mut warnings = Vec::new();
        for (i, (name, arg)) in lines.iter().enumerate() {
            let d = Directive::for_test(name, &[arg], i + 1);
            assert!(apply(&mut r, &d, &mut warnings)?, "{name} is a realip line");
        }
        Ok((r, warnings))
    }

    #[test]
    fn lines_read_as_nginx_reads_them() {
        let (r, warnings) = read(&[
            ("set_real_ip_from", "10.0.0.1/8"),
            ("set_real_ip_from", "2001:db8::/32"),
            ("set_real_ip_from", "192.0.2.7"),
            ("set_real_ip_from", "localhost"),
            ("real_ip_header", "CF-Connecting-IP"),
            ("real_ip_recursive", "on"),
        ])
        .expect("valid");
        assert_eq!(
            r.from[..3],
            [
                ("10.0.0.0".parse().expect("ip"), 8),
                ("2001:db8::".parse().expect("ip"), 32),
                ("192.0.2.7".parse().expect("ip"), 32),
            ]
        );
        assert!(
            r.from[3..].iter().any(|(a, _)| a.is_loopback()),
            "localhost resolved: {:?}",
            r.from
        );
        assert_eq!(
            r.source,
            Source::Header(HeaderName::from_static("cf-connecting-ip"))
        );
        assert!(r.recursive);
        assert_eq!(warnings.len(), 1, "low bits of 10.0.0.1/8: {warnings:?}");
        let (x, _) = read(&[("real_ip_header", "X-Forwarded-For")]).expect("valid");
        assert_eq!(x.source, Source::XForwardedFor);
    }

    fn client(r: &RealIp, peer: &str, headers: &[(&str, &str)]) -> Option<String> {
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        r.client(peer.parse().expect("peer"), &h)
            .map(|a| a.to_string())
    }

    #[test]
    fn the_client_as_nginx_finds_it() {
        let trusted = |recursive| RealIp {
            from: vec![("10.0.0.0".parse().expect("ip"), 8)],
            source: Source::XForwardedFor,
            recursive,
        };
        let (flat, deep) = (trusted(false), trusted(true));
        let xff = |v| [("x-forwarded-for", v)];
        let chain = "203.0.113.9, 198.51.100.2, 10.1.1.1";
        for (r, peer, headers, want) in [
            // Only a trusted peer is believed.
            (&flat, "192.0.2.1", &xff(chain)[..], None),
            (&flat, "10.9.9.9", &xff(chain), Some("10.1.1.1:0")),
            // Recursive: trusted addresses from the right are skipped.
            (&deep, "10.9.9.9", &xff(chain), Some("198.51.100.2:0")),
            (
                &deep,
                "10.9.9.9",
                &xff("10.0.0.1, 10.0.0.2"),
                Some("10.0.0.1:0"),
            ),
            (
                &deep,
                "10.9.9.9",
                &xff("junk, 10.0.0.2"),
                Some("10.0.0.2:0"),
            ),
            (
                &flat,
                "10.9.9.9",
                &xff("203.0.113.9,, "),
                Some("203.0.113.9:0"),
            ),
            (
                &flat,
                "10.9.9.9",
                &xff("203.0.113.9:4433"),
                Some("203.0.113.9:4433"),
            ),
            (
                &flat,
                "10.9.9.9",
                &xff("[2001:db8::1]:443"),
                Some("[2001:db8::1]:443"),
            ),
            (
                &flat,
                "10.9.9.9",
                &xff("2001:db8::1"),
                Some("[2001:db8::1]:0"),
            ),
            (&flat, "10.9.9.9", &xff("unknown"), None),
            (&flat, "10.9.9.9", &xff("203.0.113.9:0"), None),
            (&flat, "10.9.9.9", &[], None),
            // IPv4 peers on an IPv6 socket are IPv4 peers.
            (
                &flat,
                "::ffff:10.9.9.9",
                &xff("203.0.113.9"),
                Some("203.0.113.9:0"),
            ),
            // Several lines are one list, the last line last.
            (
                &deep,
                "10.9.9.9",
                &[
                    ("x-forwarded-for", "203.0.113.9"),
                    ("x-forwarded-for", "10.2.2.2"),
                ],
                Some("203.0.113.9:0"),
            ),
            (
                &flat,
                "10.9.9.9",
                &[
                    ("x-forwarded-for", "203.0.113.9"),
                    ("x-forwarded-for", "10.2.2.2"),
                ],
                Some("10.2.2.2:0"),
            ),
        ] {
            assert_eq!(
                client(r, peer, headers).as_deref(),
                want,
                "{peer} {headers:?}"
            );
        }
        let real = RealIp {
            source: Source::XRealIp,
            ..trusted(false)
        };
        let h = [
            ("x-real-ip", "203.0.113.9"),
            ("x-forwarded-for", "198.51.100.2"),
        ];
        assert_eq!(
            client(&real, "10.9.9.9", &h).as_deref(),
            Some("203.0.113.9:0")
        );
        let none = RealIp::default();
        assert_eq!(client(&none, "10.9.9.9", &h), None, "no set_real_ip_from");
    }

    #[test]
    fn nginx_words_for_bad_values() {
        for (name, arg, says) in [
            (
                "set_real_ip_from",
                "10.0.0.0/33",
                "host not found in set_real_ip_from \"10.0.0.0/33\"",
            ),
            ("set_real_ip_from", "nosuchhost.invalid", "host not found"),
            ("set_real_ip_from", "unix:", "gluu-lb listens on TCP only"),
            ("real_ip_header", "proxy_protocol", "PROXY protocol"),
            ("real_ip_header", "X Client", "invalid header name"),
            ("real_ip_recursive", "maybe", "it must be \"on\" or \"off\""),
        ] {
            let e = read(&[(name, arg)]).expect_err(arg).to_string();
            assert!(
                e.contains(says) && e.contains("nginx.conf:1"),
                "{name} {arg}: {e}"
            );
        }
    }
}
