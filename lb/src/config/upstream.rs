//! `upstream NAME { ... }` read into typed form, with nginx's value syntax (times such as
//! `10s` or `1m30s`, sizes), nginx's defaults (`weight=1 max_fails=1 fail_timeout=10s`) and
//! its checks: a parameter nginx does not know, a weight of 0, `ip_hash` or `hash` with
//! `backup` servers, an upstream with no server, a bad `zone`, are errors at the
//! directive's place; a second balancing method is a warning, and the last one counts.

use std::time::Duration;

use super::Warning;
use super::grammar::{Directive, GrammarError, Place};
use super::proxy::parse_size;
use crate::balance::Peer;

/// How the upstream chooses a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Smooth weighted round robin (nginx's default).
    RoundRobin,
    /// `ip_hash;`: by the client's /24 (IPv6: whole address).
    IpHash,
    /// `hash $remote_addr consistent;`: a ring, so a server joining or leaving remaps about
    /// 1/N of the clients.
    ConsistentRemoteAddr,
    /// `least_conn;`: the server with the fewest requests in flight for its weight.
    LeastConn,
}

/// One `server` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// `host:port` as written (resolved when connecting).
    pub address: String,
    pub weight: u32,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub backup: bool,
    pub down: bool,
    /// `max_conns=N` (0: no limit).
    pub max_conns: usize,
    pub place: Place,
}

impl Server {
    /// The balancer's live state for this server.
    pub fn peer(&self) -> Peer {
        let mut peer = Peer::new(self.weight, self.max_fails, self.fail_timeout);
        peer.down = self.down;
        peer.max_conns = self.max_conns;
        peer
    }
}

/// `zone NAME [SIZE]`: nginx's shared memory for an upstream's state. gluu-lb's workers
/// always share it; the line is checked as nginx checks it (sizes across upstreams, names
/// against the `limit_*_zone` zones) and changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    pub name: String,
    /// `None`: another upstream's `zone` line gives it.
    pub size: Option<u64>,
    pub place: Place,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    pub method: Method,
    pub servers: Vec<Server>,
    /// `keepalive N`: idle connections kept per upstream (our pool's bound).
    pub keepalive: Option<usize>,
    /// `keepalive_timeout` (60s), `keepalive_requests` (1000), `keepalive_time` (1h): how
    /// long a node connection may sit idle, how many requests it may carry, how long it
    /// may live, nginx's defaults.
    pub reuse: Reuse,
    pub zone: Option<Zone>,
    pub place: Place,
}

/// When a node connection is not used again (nginx's upstream `keepalive_*` lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reuse {
    pub idle: Duration,
    pub requests: u32,
    pub lifetime: Duration,
}

impl Default for Reuse {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(60),
            requests: 1000,
            lifetime: Duration::from_secs(3600),
        }
    }
}

/// nginx's time syntax: a number with an optional unit (`ms`, `s`, `m`, `h`, `d`, `w`,
/// `M` for 30 days, `y` for 365), several of them added (`1m30s`); a bare number is
/// seconds.
pub fn parse_time(v: &str) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = v;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else {
            let secs = match rest.chars().next() {
                Some('s') => 1,
                Some('m') => 60,
                Some('h') => 3600,
                Some('d') => 86_400,
                Some('w') => 7 * 86_400,
                Some('M') => 30 * 86_400,
                Some('y') => 365 * 86_400,
                _ => return None,
            };
            (Duration::from_secs(secs), 1)
        };
        total += unit.checked_mul(u32::try_from(n).ok()?)?;
        rest = &rest[len..];
    }
    Some(total)
}

fn number(place: &Place, directive: &str, v: &str) -> Result<u32, GrammarError> {
    v.parse::<u32>().map_err(|_| {
        GrammarError::at(
            place,
            format!("invalid number \"{v}\" in \"{directive}\" directive"),
        )
    })
}

fn server(d: &Directive) -> Result<Server, GrammarError> {
    let Some((address, params)) = d.args.split_first() else {
        return Err(GrammarError::at(
            &d.place,
            "invalid number of arguments in \"server\" directive",
        ));
    };
    // nginx would take port 80 for a bare host; a TLS node there is nearly always a
    // mistake, so the port is required.
    match address.rsplit_once(':').filter(|(h, _)| !h.is_empty()) {
        Some((_, port)) if !port.ends_with(']') => {
            if port.parse::<u16>().ok().filter(|p| *p > 0).is_none() {
                return Err(GrammarError::at(
                    &d.place,
                    format!("invalid port in upstream \"{address}\""),
                ));
            }
        }
        _ => {
            return Err(GrammarError::at(
                &d.place,
                format!(
                    "no port in upstream \"{address}\": write HOST:PORT (the nodes listen on 443)"
                ),
            ));
        }
    }
    let mut s = Server {
        address: address.clone(),
        weight: 1,
        max_fails: 1,
        fail_timeout: Duration::from_secs(10),
        backup: false,
        down: false,
        max_conns: 0,
        place: d.place.clone(),
    };
    for p in params {
        match p.split_once('=') {
            Some(("weight", v)) => {
                s.weight = number(&d.place, "server", v)?;
                if s.weight == 0 {
                    return Err(GrammarError::at(&d.place, "invalid parameter \"weight=0\""));
                }
            }
            Some(("max_fails", v)) => s.max_fails = number(&d.place, "server", v)?,
            Some(("max_conns", v)) => {
                s.max_conns = v.parse().map_err(|_| {
                    GrammarError::at(&d.place, format!("invalid parameter \"{p}\""))
                })?;
            }
            Some(("fail_timeout", v)) => {
                s.fail_timeout = parse_time(v).ok_or_else(|| {
                    GrammarError::at(&d.place, format!("invalid parameter \"{p}\""))
                })?;
            }
            None if p == "backup" => s.backup = true,
            None if p == "down" => s.down = true,
            _ => {
                return Err(GrammarError::at(
                    &d.place,
                    format!("invalid parameter \"{p}\""),
                ));
            }
        }
    }
    Ok(s)
}

/// `backup` is for the methods that go round the servers in turn: nginx's hash methods
/// have no notion of one.
fn takes_backup(m: Method) -> bool {
    matches!(m, Method::RoundRobin | Method::LeastConn)
}

fn no_backup(backup: &Server, method: &Place) -> GrammarError {
    GrammarError::at(
        &backup.place,
        format!("balancing method does not support parameter \"backup\" (set at {method})"),
    )
}

/// Reads an `upstream` directive.
pub fn upstream(d: &Directive, warnings: &mut Vec<Warning>) -> Result<Upstream, GrammarError> {
    let [name] = d.args.as_slice() else {
        return Err(GrammarError::at(
            &d.place,
            "invalid number of arguments in \"upstream\" directive",
        ));
    };
    let Some(body) = &d.block else {
        return Err(GrammarError::at(
            &d.place,
            "directive \"upstream\" has no opening \"{\"",
        ));
    };
    let mut u = Upstream {
        name: name.clone(),
        method: Method::RoundRobin,
        servers: Vec::new(),
        keepalive: None,
        reuse: Reuse::default(),
        zone: None,
        place: d.place.clone(),
    };
    // The line of the method in force; nginx warns of a second one, and the last counts.
    let mut method_place: Option<&Place> = None;
    for inner in body {
        let mut set_method = |m: Method| {
            if method_place.is_some() {
                warnings.push(Warning {
                    at: inner.place.to_string(),
                    message: "load balancing method redefined".into(),
                });
            }
            u.method = m;
            method_place = Some(&inner.place);
        };
        match (inner.name.as_str(), inner.args.as_slice()) {
            ("server", _) => {
                let s = server(inner)?;
                if let Some(place) = method_place.filter(|_| s.backup && !takes_backup(u.method)) {
                    return Err(no_backup(&s, place));
                }
                u.servers.push(s);
            }
            ("ip_hash", []) => set_method(Method::IpHash),
            ("least_conn", []) => set_method(Method::LeastConn),
            ("least_conn", _) => {
                return Err(GrammarError::at(
                    &inner.place,
                    "invalid number of arguments in \"least_conn\" directive",
                ));
            }
            ("hash", [key, c]) if key == "$remote_addr" && c == "consistent" => {
                set_method(Method::ConsistentRemoteAddr);
            }
            ("zone", [name, size @ ..]) if size.len() < 2 => {
                u.zone = Some(zone(inner, name, size.first())?)
            }
            ("zone", _) => {
                return Err(GrammarError::at(
                    &inner.place,
                    "invalid number of arguments in \"zone\" directive",
                ));
            }
            ("hash", _) => {
                return Err(GrammarError::at(
                    &inner.place,
                    "only \"hash $remote_addr consistent\" is supported",
                ));
            }
            ("keepalive", [n]) => match number(&inner.place, "keepalive", n)? {
                0 => {
                    return Err(GrammarError::at(
                        &inner.place,
                        "invalid value \"0\" in \"keepalive\" directive",
                    ));
                }
                n => u.keepalive = Some(n as usize),
            },
            ("keepalive_timeout" | "keepalive_time", [t]) => {
                let t = parse_time(t).ok_or_else(|| {
                    GrammarError::at(
                        &inner.place,
                        format!("\"{}\" directive invalid value", inner.name),
                    )
                })?;
                if inner.name == "keepalive_time" {
                    u.reuse.lifetime = t;
                } else {
                    u.reuse.idle = t;
                }
            }
            ("keepalive_requests", [n]) => {
                u.reuse.requests = n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    GrammarError::at(
                        &inner.place,
                        "\"keepalive_requests\" directive invalid value",
                    )
                })?;
            }
            _ => {
                return Err(GrammarError::at(
                    &inner.place,
                    format!(
                        "unknown or misused directive \"{}\" in upstream",
                        inner.name
                    ),
                ));
            }
        }
    }
    if u.servers.is_empty() {
        return Err(GrammarError::at(
            &d.place,
            format!("no servers are inside upstream \"{name}\""),
        ));
    }
    // Also when the method's line comes after the server's, which nginx lets pass.
    if let Some(place) = method_place.filter(|_| !takes_backup(u.method))
        && let Some(b) = u.servers.iter().find(|s| s.backup)
    {
        return Err(no_backup(b, place));
    }
    Ok(u)
}

/// `zone NAME [SIZE]`, sized as nginx sizes shared memory (`k` or `m`, at least 32k).
fn zone(d: &Directive, name: &str, size: Option<&String>) -> Result<Zone, GrammarError> {
    let size = match size {
        None => None,
        Some(v) => {
            let n = parse_size(v)
                .filter(|_| !v.ends_with(['g', 'G']))
                .ok_or_else(|| GrammarError::at(&d.place, format!("invalid zone size \"{v}\"")))?;
            // nginx refuses a zone under 8 pages.
            if n < 32 << 10 {
                return Err(GrammarError::at(
                    &d.place,
                    format!("zone \"{name}\" is too small"),
                ));
            }
            Some(n)
        }
    };
    Ok(Zone {
        name: name.to_owned(),
        size,
        place: d.place.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::grammar::parse_file;

    fn read_warned(text: &str) -> Result<(Upstream, Vec<Warning>), GrammarError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, text).expect("write");
        let top = parse_file(&path)?;
        let mut warnings = Vec::new();
        Ok((upstream(&top[0], &mut warnings)?, warnings))
    }

    fn read(text: &str) -> Result<Upstream, GrammarError> {
        read_warned(text).map(|(u, _)| u)
    }

    /// `least_conn`, `max_conns` and `zone`; a second method line is nginx's warning, and
    /// the last one counts (a `backup` then depends on it, as in nginx).
    #[test]
    fn least_conn_max_conns_zone_and_a_redefined_method() {
        let u = read(
            "upstream b { zone b 64k; least_conn; server a:1 max_conns=10; server c:1 backup; }",
        )
        .expect("valid");
        assert_eq!(u.method, Method::LeastConn);
        assert_eq!((u.servers[0].max_conns, u.servers[1].max_conns), (10, 0));
        assert_eq!(u.servers[0].peer().max_conns, 10);
        let z = u.zone.expect("zone");
        assert_eq!((z.name.as_str(), z.size), ("b", Some(64 << 10)));
        assert_eq!(
            read("upstream b { zone z; server a:1; }")
                .expect("valid")
                .zone
                .map(|z| z.size),
            Some(None)
        );
        for (text, method) in [
            (
                "upstream b {\n ip_hash;\n least_conn;\n server a:1;\n server c:1 backup;\n}",
                Method::LeastConn,
            ),
            (
                "upstream b {\n least_conn;\n hash $remote_addr consistent;\n server a:1;\n}",
                Method::ConsistentRemoteAddr,
            ),
            (
                "upstream b {\n least_conn;\n least_conn;\n server a:1;\n}",
                Method::LeastConn,
            ),
        ] {
            let (u, warnings) = read_warned(text).expect(text);
            assert_eq!(u.method, method, "{text}");
            let [w] = warnings.as_slice() else {
                panic!("{text}: {warnings:?}")
            };
            assert_eq!(w.message, "load balancing method redefined");
            assert!(w.at.ends_with(":3"), "{}", w.at);
        }
    }

    /// nginx's upstream `keepalive_*` lines and their defaults.
    #[test]
    fn reuse_of_node_connections() {
        let u = read("upstream b { server 127.0.0.1:1; }").expect("valid");
        assert_eq!(u.reuse, Reuse::default());
        assert_eq!(
            (u.reuse.idle, u.reuse.requests, u.reuse.lifetime),
            (Duration::from_secs(60), 1000, Duration::from_secs(3600))
        );
        let u = read(
            "upstream b { server 127.0.0.1:1; keepalive 8; keepalive_timeout 4s;\n\
             keepalive_requests 100; keepalive_time 10m; }",
        )
        .expect("valid");
        assert_eq!(
            u.reuse,
            Reuse {
                idle: Duration::from_secs(4),
                requests: 100,
                lifetime: Duration::from_secs(600)
            }
        );
        for (line, said) in [
            (
                "keepalive_requests 0;",
                "\"keepalive_requests\" directive invalid value",
            ),
            (
                "keepalive_timeout soon;",
                "\"keepalive_timeout\" directive invalid value",
            ),
            ("keepalive_time;", "unknown or misused directive"),
        ] {
            let e = read(&format!("upstream b {{ server 127.0.0.1:1; {line} }}")).expect_err(line);
            assert!(e.to_string().contains(said), "{line}: {e}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_time("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_time("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_time("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_time("1h"), Some(Duration::from_secs(3600)));
        for bad in ["", "s", "10x", "ten", "10s5"] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_guides_upstreams() {
        let u = read("upstream backend_id {\n ip_hash;\n server 10.0.0.1:443 max_fails=2 fail_timeout=10s;\n server 10.0.0.2:443 max_fails=2 fail_timeout=10s;\n}\n")
            .expect("valid");
        assert_eq!(u.name, "backend_id");
        assert_eq!(u.method, Method::IpHash);
        assert_eq!(u.servers.len(), 2);
        assert_eq!(u.servers[1].address, "10.0.0.2:443");
        assert_eq!((u.servers[0].max_fails, u.servers[0].weight), (2, 1));
        assert_eq!(u.servers[0].fail_timeout, Duration::from_secs(10));
        let u = read("upstream b { hash $remote_addr consistent; server a:443 weight=3; server c:443 down; keepalive 16; }")
            .expect("valid");
        assert_eq!(u.method, Method::ConsistentRemoteAddr);
        assert!(!u.servers[0].backup && u.servers[1].down);
        assert_eq!(u.servers[0].weight, 3);
        assert_eq!(u.keepalive, Some(16));
        assert_eq!(
            (u.servers[1].max_fails, u.servers[1].fail_timeout),
            (1, Duration::from_secs(10))
        );
        let u = read("upstream b { server a:443; server c:443 backup; }").expect("valid");
        assert!(u.servers[1].backup);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (
                "upstream b {\n server a:443 wieght=2;\n}",
                "invalid parameter \"wieght=2\" in",
                ":2",
            ),
            (
                "upstream b {\n server a:443 weight=0;\n}",
                "invalid parameter \"weight=0\"",
                ":2",
            ),
            (
                "upstream b {\n server a:443 fail_timeout=soon;\n}",
                "invalid parameter \"fail_timeout=soon\"",
                ":2",
            ),
            (
                "upstream b {\n server nodeport;\n}",
                "no port in upstream \"nodeport\"",
                ":2",
            ),
            (
                "upstream b {\n server [::1];\n}",
                "no port in upstream \"[::1]\"",
                ":2",
            ),
            (
                "upstream b {\n server a:1;\n server node:70000;\n}",
                "invalid port in upstream \"node:70000\"",
                ":3",
            ),
            (
                "upstream b {\n server a:1;\n keepalive 0;\n}",
                "invalid value \"0\" in \"keepalive\"",
                ":3",
            ),
            (
                "upstream b {\n server a:1;\n keepalive 8;\n keepalive 9;\n}",
                "\"keepalive\" directive is duplicate",
                ":4",
            ),
            (
                "upstream b {\n}",
                "no servers are inside upstream \"b\"",
                ":1",
            ),
            (
                "upstream b {\n ip_hash;\n server a:1;\n server c:1 backup;\n}",
                "does not support parameter \"backup\"",
                ":4",
            ),
            (
                "upstream b {\n server c:1 backup;\n hash $remote_addr consistent;\n}",
                "does not support parameter \"backup\" (set at",
                ":2",
            ),
            (
                "upstream b {\n least_conn;\n ip_hash;\n server a:1;\n server c:1 backup;\n}",
                "does not support parameter \"backup\" (set at",
                ":5",
            ),
            // nginx checks at the server line: a later least_conn does not make it right.
            (
                "upstream b {\n ip_hash;\n server c:1 backup;\n least_conn;\n}",
                "does not support parameter \"backup\" (set at",
                ":3",
            ),
            (
                "upstream b {\n least_conn on;\n server a:1;\n}",
                "invalid number of arguments in \"least_conn\" directive",
                ":2",
            ),
            (
                "upstream b {\n server a:1 max_conns=-1;\n}",
                "invalid parameter \"max_conns=-1\"",
                ":2",
            ),
            (
                "upstream b {\n server a:1;\n zone;\n}",
                "invalid number of arguments in \"zone\" directive",
                ":3",
            ),
            (
                "upstream b {\n server a:1;\n zone b 64k more;\n}",
                "invalid number of arguments in \"zone\" directive",
                ":3",
            ),
            (
                "upstream b {\n server a:1;\n zone b 1g;\n}",
                "invalid zone size \"1g\"",
                ":3",
            ),
            (
                "upstream b {\n server a:1;\n zone b 31k;\n}",
                "zone \"b\" is too small",
                ":3",
            ),
            (
                "upstream b {\n hash $request_uri;\n server a:1;\n}",
                "only \"hash $remote_addr consistent\"",
                ":2",
            ),
        ];
        for (text, want, line) in cases {
            let e = read(text).expect_err(text).to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.ends_with(line), "{text:?}: {e}");
        }
    }
}
