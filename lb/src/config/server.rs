//! `server { ... }` blocks: listening addresses, names, TLS material, `return`, locations.
//! The guide's deprecated `ssl on;` is accepted (every `listen` of the block becomes TLS)
//! with a warning, as nginx 1.22 does; nginx 1.25 removed it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use regex::bytes::Regex;

use super::access::Access;
use super::cond::{If, if_block, rewrite};
use super::grammar::{Directive, GrammarError, Place};
use super::location::{Location, Matcher, location};
use super::map::Maps;
use super::pages::Target;
use super::proxy::{Part, ProxySettings, Template, apply, compile_value, inherit};
use super::tls::{self, TlsSettings};
use super::{Scope, Warning};

/// One `listen` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    pub ssl: bool,
    pub http2: bool,
    /// `default_server`: this server answers requests on the address that no
    /// `server_name` claims, and its certificate is the one shown without SNI (without
    /// the flag: the first server with the address).
    pub default_server: bool,
    pub place: Place,
}

/// `return CODE [URL|TEXT]` or `return URL` (302), in a server or a location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Return {
    pub code: u16,
    /// The URL (301, 302, 303, 307, 308) or the body text, as written.
    pub target: Option<String>,
    /// `target` with its variables (`$host`, `$request_uri`, ...) found.
    pub template: Option<Template>,
    /// A `rewrite`'s redirect: its regex's captures are escaped as nginx escapes them
    /// when the request's path was (`%`, `+`).
    pub escape_captures: bool,
    pub place: Place,
}

/// Reads a `return` line, as nginx does: a code from 200 to 599 (444: close the
/// connection without an answer) with an optional URL or text, or a URL alone for 302.
/// `re`: the regex of the `if` it is in, whose captures it may use.
pub fn ret(d: &Directive, maps: &Maps, re: Option<&Regex>) -> Result<Return, GrammarError> {
    let is_url = |t: &str| {
        ["http://", "https://", "$scheme"]
            .iter()
            .any(|p| t.starts_with(p))
    };
    let (code, target) = match d.args.as_slice() {
        [url] if is_url(url) => ("302", Some(url.clone())),
        [c] => (c.as_str(), None),
        [c, t] => (c.as_str(), Some(t.clone())),
        _ => {
            return Err(d.error("invalid number of arguments in \"return\" directive"));
        }
    };
    let code = code
        .parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .ok_or_else(|| d.error(format!("invalid return code \"{code}\"")))?;
    Ok(Return {
        code,
        template: target
            .as_deref()
            .map(|t| compile_value(&d.place, t, maps, re))
            .transpose()?,
        target,
        escape_captures: false,
        place: d.place.clone(),
    })
}

/// nginx's `stub_status [ARG]` (before 1.7.5 it took `on`; any one word is taken, and
/// ignored); its place.
pub fn stub_status(d: &Directive, warnings: &mut Vec<Warning>) -> Result<Place, GrammarError> {
    match d.args.as_slice() {
        [] => {}
        [arg] => {
            if arg == "off" {
                warnings.push(Warning {
                    at: d.place.to_string(),
                    message: "\"stub_status off\" turns it on, in nginx as here (the word is \
                              ignored): remove the line to turn it off"
                        .to_owned(),
                });
            }
        }
        _ => {
            return Err(d.error("invalid number of arguments in \"stub_status\" directive"));
        }
    }
    Ok(d.place.clone())
}

/// `i`, unless `ret` (the block's `return`, before it) answers first: then it never
/// runs, and a warning says so.
pub fn after_return(ret: &Option<Return>, i: &If, warnings: &mut Vec<Warning>) -> Option<If> {
    match ret {
        Some(r) => {
            warnings.push(Warning {
                at: i.place.to_string(),
                message: format!(
                    "this \"if\" never runs: the \"return\" at {} answers first",
                    r.place
                ),
            });
            None
        }
        None => Some(i.clone()),
    }
}

/// A virtual server.
#[derive(Clone, Debug)]
pub struct Server {
    pub listen: Vec<Listen>,
    pub names: Vec<String>,
    /// `ssl_certificate` and its key, `ssl_protocols`, `ssl_ciphers`, the session
    /// settings: the http block's, with the server's own lines on top.
    pub tls: TlsSettings,
    pub ret: Option<Return>,
    /// The `if` blocks before `ret` (one after it never runs), in their order.
    pub ifs: Vec<If>,
    pub locations: Vec<Location>,
    /// `stub_status` at the server level: the counts answer a request no location matches.
    pub stub_status: bool,
    /// The server level's proxy settings (what a request no location matches is logged
    /// with).
    pub settings: ProxySettings,
    /// Whether a value of the server's reads the client's headers (`$http_NAME`): they
    /// are kept for it from the request's start.
    pub reads_headers: bool,
    /// Whether a value of the server's has `$request_id`.
    pub reads_request_id: bool,
    pub place: Place,
}

impl Server {
    /// Every set of access rules a request may be held to in this server: the server's
    /// own, each location's and its `limit_except` block's.
    pub fn accesses(&self) -> impl Iterator<Item = Access<'_>> {
        std::iter::once(Access::of(&self.settings))
            .chain(self.locations.iter().flat_map(Location::accesses))
    }
}

/// nginx's `listen` address: `PORT`, `ADDR:PORT`, `[V6]:PORT`, `*:PORT`.
fn listen_addr(place: &Place, v: &str) -> Result<SocketAddr, GrammarError> {
    if let Ok(port) = v.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Some(port) = v.strip_prefix("*:") {
        let port = port.parse::<u16>().map_err(|_| {
            GrammarError::at(
                place,
                format!("invalid port in \"{v}\" of the \"listen\" directive"),
            )
        })?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    v.parse::<SocketAddr>().map_err(|_| {
        GrammarError::at(
            place,
            format!("invalid address \"{v}\" in \"listen\" directive (write PORT, ADDRESS:PORT or [IPv6]:PORT)"),
        )
    })
}

/// The path `a` and `b` both match, when nginx counts them as one location: two `=`
/// locations, or two prefix ones (`^~` or not). Regular expressions may repeat (the first
/// wins).
fn same_path<'a>(a: &'a Location, b: &Location) -> Option<&'a str> {
    match (&a.matcher, &b.matcher) {
        (Matcher::Exact(x), Matcher::Exact(y)) if x == y => Some(x),
        (Matcher::Prefix { prefix: x, .. }, Matcher::Prefix { prefix: y, .. }) if x == y => Some(x),
        (Matcher::Named(x), Matcher::Named(y)) if x == y => Some(x),
        _ => None,
    }
}

/// Every `error_page ... @name` in force in `s` names one of its locations (nginx finds out
/// at the first error, and answers 500).
fn named_pages_exist(s: &Server) -> Result<(), GrammarError> {
    let blocks = std::iter::once(&s.settings).chain(s.locations.iter().map(|l| &l.settings));
    for page in blocks.flat_map(|b| &b.error_pages) {
        if let Target::Named(name) = &page.target {
            let found = s
                .locations
                .iter()
                .any(|l| matches!(&l.matcher, Matcher::Named(n) if n == name));
            if !found {
                return Err(GrammarError::at(
                    &page.place,
                    format!(
                        "no \"location {name}\" in the server at {} for this \"error_page\"",
                        s.place
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Reads a `server` block; relative certificate paths are taken from `cx.root`. Its proxy
/// directives (wherever they stand in the block) apply on top of `inherited` (the http
/// block's) to every location.
pub fn server(
    d: &Directive,
    cx: &Scope<'_>,
    inherited: &ProxySettings,
    inherited_tls: &TlsSettings,
    warnings: &mut Vec<Warning>,
) -> Result<Server, GrammarError> {
    let Some(body) = &d.block else {
        return Err(GrammarError::at(
            &d.place,
            "directive \"server\" has no opening \"{\"",
        ));
    };
    let mut s = Server {
        listen: Vec::new(),
        names: Vec::new(),
        tls: tls::inherit(inherited_tls, body),
        ret: None,
        ifs: Vec::new(),
        locations: Vec::new(),
        stub_status: false,
        settings: ProxySettings::default(),
        reads_headers: false,
        reads_request_id: false,
        place: d.place.clone(),
    };
    let mut settings = inherit(inherited, body);
    let mut own = Vec::new();
    for inner in body {
        if !apply(&mut settings, inner, cx, warnings)?
            && !tls::apply(&mut s.tls, inner, cx.root, warnings)?
        {
            own.push(inner);
        }
    }
    let mut ssl_on = false;
    let mut http2_on = false;
    for inner in own {
        match inner.name.as_str() {
            "listen" => {
                let Some((addr, params)) = inner.args.split_first() else {
                    return Err(GrammarError::at(
                        &inner.place,
                        "invalid number of arguments in \"listen\" directive",
                    ));
                };
                let mut l = Listen {
                    addr: listen_addr(&inner.place, addr)?,
                    ssl: false,
                    http2: false,
                    default_server: false,
                    place: inner.place.clone(),
                };
                for p in params {
                    match p.as_str() {
                        "ssl" => l.ssl = true,
                        "http2" => l.http2 = true,
                        "default_server" | "default" => l.default_server = true,
                        other => {
                            return Err(GrammarError::at(
                                &inner.place,
                                format!("invalid parameter \"{other}\""),
                            ));
                        }
                    }
                }
                if l.addr.port() != 0 && s.listen.iter().any(|x| x.addr == l.addr) {
                    return Err(GrammarError::at(
                        &inner.place,
                        format!("a duplicate listen {}", l.addr),
                    ));
                }
                s.listen.push(l);
            }
            "server_name" => s.names.extend(inner.args.iter().cloned()),
            "ssl" => {
                ssl_on = inner.on_off()?;
                if ssl_on {
                    warnings.push(Warning {
                        at: inner.place.to_string(),
                        message: "the \"ssl\" directive is deprecated (removed in nginx 1.25), \
                                  use the \"listen ... ssl\" directive instead"
                            .to_owned(),
                    });
                }
            }
            "http2" => http2_on = inner.on_off()?,
            "return" => s.ret = Some(ret(inner, cx.maps, None)?),
            "stub_status" => {
                stub_status(inner, warnings)?;
                s.stub_status = true;
            }
            "if" | "rewrite" => {
                let i = match inner.name.as_str() {
                    "if" => if_block(inner, cx.maps)?,
                    _ => rewrite(inner, cx.maps)?,
                };
                if let Some(r) = after_return(&s.ret, &i, warnings) {
                    s.ifs.push(r);
                }
            }
            "location" => {
                let l = location(inner, cx, &settings, warnings)?;
                if let Some(path) = s.locations.iter().find_map(|p| same_path(p, &l)) {
                    return Err(GrammarError::at(
                        &inner.place,
                        format!("duplicate location \"{path}\""),
                    ));
                }
                s.locations.push(l);
            }
            other => {
                return Err(GrammarError::at(
                    &inner.place,
                    format!("unknown directive \"{other}\" in server"),
                ));
            }
        }
    }
    s.settings = settings;
    named_pages_exist(&s)?;
    if s.listen.is_empty() {
        // nginx's default when run as root.
        s.listen.push(Listen {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80),
            ssl: false,
            http2: false,
            default_server: false,
            place: d.place.clone(),
        });
    }
    for l in &mut s.listen {
        l.ssl |= ssl_on;
        l.http2 |= http2_on;
    }
    if s.listen.iter().any(|l| l.ssl) && !s.tls.reject_handshake {
        let (certs, keys) = (&s.tls.certificates, &s.tls.certificate_keys);
        if certs.is_empty() || keys.is_empty() {
            return Err(GrammarError::at(
                &d.place,
                "no \"ssl_certificate\" and \"ssl_certificate_key\" are defined for a TLS server",
            ));
        }
        if let Some(cert) = certs.get(keys.len()) {
            return Err(GrammarError::at(
                &d.place,
                format!(
                    "no \"ssl_certificate_key\" is defined for certificate \"{}\"",
                    cert.display()
                ),
            ));
        }
        for key in &keys[certs.len()..] {
            warnings.push(Warning {
                at: d.place.to_string(),
                message: format!(
                    "\"ssl_certificate_key {}\" has no \"ssl_certificate\" to go with and is \
                     not used (nginx ignores it too)",
                    key.display()
                ),
            });
        }
    }
    let unchecked = s
        .accesses()
        .any(|a| a.realm.is_some() && a.user_file.is_none());
    if unchecked {
        warnings.push(Warning {
            at: d.place.to_string(),
            message: "\"auth_basic\" without \"auth_basic_user_file\" checks nothing: nginx \
                      and gluu-lb let every request through there"
                .to_owned(),
        });
    }
    let returns = s
        .ret
        .iter()
        .chain(s.locations.iter().filter_map(|l| l.ret.as_ref()));
    let settings = std::iter::once(&s.settings).chain(s.locations.iter().map(|l| &l.settings));
    let ifs = s.ifs.iter().chain(s.locations.iter().flat_map(|l| &l.ifs));
    let parts: Vec<&Part> = returns
        .filter_map(|r| r.template.as_ref())
        .chain(settings.flat_map(ProxySettings::templates))
        .chain(ifs.flat_map(If::templates))
        .flatten()
        .collect();
    s.reads_headers = parts.iter().any(|p| p.reads_headers());
    s.reads_request_id = parts.iter().any(|p| p.reads_request_id());
    Ok(s)
}
