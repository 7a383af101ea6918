//! The lines of Debian's and Ubuntu's stock `nginx.conf` (and of most hardened ones) that
//! concern what nginx does and gluu-lb does not (serve files, compress, tune its internal
//! hash tables), so that a file keeping them runs as it is with the guide's servers in
//! `conf.d`. Each is checked as nginx checks it. Those that have no effect on proxied
//! traffic in nginx either (`sendfile`, `tcp_nopush`, the hash sizes, `server_tokens off`)
//! are taken silently; those whose meaning gluu-lb lacks (`server_tokens on`,
//! `tcp_nodelay off`) with a warning that says so. (`gzip` is `super::gzip`'s.) `types` and
//! `default_type` have their nginx meaning: the `Content-Type` of a `return`'s text.

use std::sync::Arc;

use hyper::header::HeaderValue;

use super::Warning;
use super::grammar::{Directive, GrammarError};
use super::proxy::ProxySettings;

/// `charset_types`' default (nginx's), `text/html` first: a `charset_types` line always
/// has it too.
pub const CHARSET_TYPES: &[&str] = &[
    "text/html",
    "text/xml",
    "text/plain",
    "text/vnd.wap.wml",
    "application/javascript",
    "application/rss+xml",
];

/// nginx's `charset NAME`: the name put on a response's `Content-Type` (`; charset=NAME`)
/// when it names none, its type is among `charset_types`, and it is no 301 or 302 (nginx's
/// `ngx_http_charset_header_filter` without `charset_map`: gluu-lb recodes nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charset {
    name: HeaderValue,
    types: Arc<Vec<String>>,
}

/// `s`'s `charset_types` become `types`, and its `charset` rule follows them.
pub fn set_charset_types(s: &mut ProxySettings, types: Vec<String>) {
    s.charset_types = Arc::new(types);
    if let Some(c) = &mut s.charset {
        Arc::make_mut(c).types = s.charset_types.clone();
    }
}

impl Charset {
    pub fn new(name: HeaderValue, types: Arc<Vec<String>>) -> Charset {
        Charset { name, types }
    }

    /// Names the charset on `headers`' `Content-Type`, as the rule above has it.
    pub fn apply(&self, headers: &mut hyper::HeaderMap, status: hyper::StatusCode) {
        if matches!(status.as_u16(), 301 | 302) {
            return;
        }
        let Some(ct) = headers.get(hyper::header::CONTENT_TYPE) else {
            return;
        };
        let Ok(text) = ct.to_str() else { return };
        let named = text.split(';').skip(1).any(|p| {
            p.trim_start()
                .get(..8)
                .is_some_and(|k| k.eq_ignore_ascii_case("charset="))
        });
        // nginx looks the whole value up (a type with other parameters is not listed).
        let listed = self
            .types
            .iter()
            .any(|t| t == "*" || t.eq_ignore_ascii_case(text));
        if named || !listed {
            return;
        }
        let mut value = Vec::with_capacity(text.len() + 10 + self.name.len());
        value.extend_from_slice(text.as_bytes());
        value.extend_from_slice(b"; charset=");
        value.extend_from_slice(self.name.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&value) {
            headers.insert(hyper::header::CONTENT_TYPE, v);
        }
    }
}

/// nginx's `types`: file extensions (lower case) and their MIME types.
pub type Types = Arc<Vec<(String, String)>>;

/// The `Content-Type` of a `return`'s text for a request to `path`: the type of its last
/// segment's extension (`types`, looked up regardless of case), else `default_type`.
pub fn content_type<'a>(s: &'a ProxySettings, path: &str) -> &'a str {
    let last = path.rsplit('/').next().unwrap_or("");
    last.rsplit_once('.')
        .and_then(|(_, ext)| {
            s.types
                .iter()
                .find(|(e, _)| e.eq_ignore_ascii_case(ext))
                .map(|(_, t)| t.as_str())
        })
        .unwrap_or(&s.default_type)
}

/// Applies `d` when it is one of these lines; `Ok(false)` when not.
pub fn apply(
    s: &mut ProxySettings,
    d: &Directive,
    warnings: &mut Vec<Warning>,
) -> Result<bool, GrammarError> {
    let mut warn = |message: &str| {
        warnings.push(Warning {
            at: d.place.to_string(),
            message: format!("\"{} {}\": {message}", d.name, d.args.join(" ")),
        })
    };
    match d.name.as_str() {
        "sendfile" | "tcp_nopush" => {
            d.on_off()?;
        }
        "tcp_nodelay" => {
            if !d.on_off()? {
                warn("gluu-lb always sends without delay (TCP_NODELAY), as nginx does by default");
            }
        }
        // Buffers nginx reads into and writes from; gluu-lb's are its own (bounded by
        // `large_client_header_buffers`, `proxy_buffer_size` and rustls's record size).
        "client_body_buffer_size" | "client_header_buffer_size" | "ssl_buffer_size" => {
            let v = d.one_arg()?;
            super::proxy::parse_size(v)
                .ok_or_else(|| d.error(format!("\"{}\" directive invalid value", d.name)))?;
        }
        "types_hash_max_size"
        | "types_hash_bucket_size"
        | "server_names_hash_max_size"
        | "server_names_hash_bucket_size"
        | "proxy_headers_hash_max_size"
        | "proxy_headers_hash_bucket_size"
        | "variables_hash_max_size"
        | "variables_hash_bucket_size" => {
            let v = d.one_arg()?;
            v.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| d.error(format!("\"{}\" directive invalid value", d.name)))?;
        }
        "server_tokens" => match d.one_arg()? {
            "off" => {}
            "on" | "build" => warn("gluu-lb sends no Server header and no version at all"),
            v => {
                return Err(d.error(format!(
                    "invalid value \"{v}\" in \"server_tokens\" directive, it must be \"on\", \
                     \"off\" or \"build\""
                )));
            }
        },
        "default_type" => s.default_type = d.one_arg()?.to_owned(),
        // Lines add up (the block's list starts anew: `proxy::inherit`).
        "charset_types" => {
            let mut types = s.charset_types.to_vec();
            types.extend(d.args.iter().map(|t| t.to_ascii_lowercase()));
            set_charset_types(s, types);
        }
        "override_charset" => {
            if d.on_off()? {
                return Err(d.error(
                    "\"override_charset on\" is not supported: gluu-lb recodes no body \
                     (nginx's charset_map), so a node's own charset is kept",
                ));
            }
        }
        // nginx closes the connection after each response to the browsers named (MSIE 6
        // after a POST, its default; Safari and its kin on macOS and iOS); gluu-lb treats
        // every client alike.
        "keepalive_disable" => {
            if d.args.is_empty() {
                return Err(
                    d.error("invalid number of arguments in \"keepalive_disable\" directive")
                );
            }
            for v in &d.args {
                match v.as_str() {
                    "none" | "msie6" => {}
                    "safari" => {
                        warn("gluu-lb keeps connections from Safari alive, as from any client")
                    }
                    _ => return Err(d.error(format!("invalid value \"{v}\""))),
                }
            }
        }
        "log_not_found" => s.log_not_found = d.on_off()?,
        "merge_slashes" => s.merge_slashes = d.on_off()?,
        "expires" => s.expires = Expires::parse(d)?,
        "types" => {
            let Some(block) = &d.block else {
                return Err(d.error("directive \"types\" has no opening \"{\""));
            };
            let mut types = Vec::new();
            for t in block {
                if t.args.is_empty() || t.block.is_some() {
                    return Err(t.error("invalid number of arguments in \"types\" directive"));
                }
                for ext in &t.args {
                    types.push((ext.to_ascii_lowercase(), t.name.clone()));
                }
            }
            s.types = Arc::new(types);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// nginx's `expires` (`ngx_http_headers_filter_module`): `Expires` and `Cache-Control` on
/// responses of the statuses `add_header` calls safe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Expires {
    #[default]
    Off,
    /// `epoch`: long expired, `no-cache`.
    Epoch,
    /// `max`: 2037, ten years' `max-age`.
    Max,
    /// `TIME` (seconds, negative for the past) from the response.
    Access(i64),
    /// `modified TIME`: from the response's `Last-Modified` (without one, from now).
    Modified(i64),
    /// `@TIME`: the next such time of day (UTC), seconds after midnight.
    Daily(i64),
}

impl Expires {
    /// `expires [modified] TIME|epoch|max|off`.
    pub fn parse(d: &Directive) -> Result<Expires, GrammarError> {
        let invalid = || d.error("\"expires\" directive invalid value");
        let (modified, v) = match d.args.as_slice() {
            [v] => (false, v.as_str()),
            [m, v] if m == "modified" => (true, v.as_str()),
            [_, _] => return Err(invalid()),
            _ => return Err(d.error("invalid number of arguments in \"expires\" directive")),
        };
        if v.contains('$') {
            return Err(
                d.error("\"expires\" with variables is not supported: give the time itself")
            );
        }
        match (modified, v) {
            (false, "epoch") => return Ok(Expires::Epoch),
            (false, "max") => return Ok(Expires::Max),
            (false, "off") => return Ok(Expires::Off),
            _ => {}
        }
        let secs = |t: &str| {
            super::upstream::parse_time(t)
                .filter(|t| t.subsec_nanos() == 0)
                .and_then(|t| i64::try_from(t.as_secs()).ok())
                .ok_or_else(invalid)
        };
        if let Some(t) = v.strip_prefix('@') {
            if modified {
                return Err(d.error("daily time cannot be used with \"modified\" parameter"));
            }
            let t = secs(t)?;
            if t > 86_400 {
                return Err(d.error("daily time value must be less than 24 hours"));
            }
            return Ok(Expires::Daily(t));
        }
        let t = match v.strip_prefix('-') {
            Some(t) => -secs(t)?,
            None => secs(v.strip_prefix('+').unwrap_or(v))?,
        };
        Ok(if modified {
            Expires::Modified(t)
        } else {
            Expires::Access(t)
        })
    }

    /// Sets `Expires` and `Cache-Control` (in place of the node's) on a response of
    /// `status` at `now` (Unix seconds), as nginx does.
    pub fn apply(&self, headers: &mut hyper::HeaderMap, status: hyper::StatusCode, now: i64) {
        if *self == Expires::Off
            || !matches!(
                status.as_u16(),
                200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
            )
        {
            return;
        }
        let date = |at: i64| {
            let at = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(u64::try_from(at).unwrap_or(0));
            HeaderValue::try_from(httpdate::fmt_http_date(at)).ok()
        };
        let (expires, control) = match *self {
            Expires::Off => return,
            Expires::Epoch => (date(1), "no-cache".to_owned()),
            Expires::Max => (date(2_145_916_555), "max-age=315360000".to_owned()),
            Expires::Access(0) | Expires::Modified(0) => (date(now), "max-age=0".to_owned()),
            Expires::Daily(t) => {
                let today = now - now.rem_euclid(86_400) + t;
                let at = if today <= now { today + 86_400 } else { today };
                (date(at), format!("max-age={}", at - now))
            }
            Expires::Access(t) | Expires::Modified(t) => {
                let modified = match self {
                    Expires::Modified(_) => headers
                        .get(hyper::header::LAST_MODIFIED)
                        .and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok())
                        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                        .and_then(|m| i64::try_from(m.as_secs()).ok()),
                    _ => None,
                };
                let (at, max_age) = match modified {
                    Some(m) => (m + t, m + t - now),
                    None => (now + t, t),
                };
                let control = if t < 0 || max_age < 0 {
                    "no-cache".to_owned()
                } else {
                    format!("max-age={max_age}")
                };
                (date(at), control)
            }
        };
        if let Some(v) = expires {
            headers.insert(hyper::header::EXPIRES, v);
        }
        if let Ok(v) = HeaderValue::try_from(control) {
            headers.insert(hyper::header::CACHE_CONTROL, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(e: Expires, headers: &mut hyper::HeaderMap, now: i64) -> (String, String) {
        e.apply(headers, hyper::StatusCode::OK, now);
        let get = |h| {
            headers
                .get(h)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        (
            get(hyper::header::EXPIRES),
            get(hyper::header::CACHE_CONTROL),
        )
    }

    #[test]
    fn expiry_by_the_clock_and_by_last_modified() {
        // Tue, 24 Nov 2026 10:00:00 GMT.
        let now = 1_795_514_400;
        let mut h = hyper::HeaderMap::new();
        assert_eq!(
            set(Expires::Daily(9 * 3600), &mut h, now),
            (
                "Wed, 25 Nov 2026 09:00:00 GMT".to_owned(),
                "max-age=82800".to_owned()
            ),
            "a time of day already past today is tomorrow's"
        );
        assert_eq!(
            set(Expires::Daily(11 * 3600), &mut h, now).1,
            "max-age=3600"
        );
        h.insert(
            hyper::header::LAST_MODIFIED,
            HeaderValue::from_static("Tue, 24 Nov 2026 08:00:00 GMT"),
        );
        assert_eq!(
            set(Expires::Modified(3600), &mut h, now),
            (
                "Tue, 24 Nov 2026 09:00:00 GMT".to_owned(),
                "no-cache".to_owned()
            ),
            "expired an hour ago by its modification time"
        );
        let mut gone = hyper::HeaderMap::new();
        Expires::Max.apply(&mut gone, hyper::StatusCode::GONE, now);
        assert!(gone.is_empty(), "{gone:?}");
    }
}
