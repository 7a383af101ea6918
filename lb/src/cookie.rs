//! A node's `Set-Cookie` headers changed as `proxy_cookie_domain`, `proxy_cookie_path` and
//! `proxy_cookie_flags` ask (`config::cookie`), the way nginx changes them: the header is
//! cut at `;` into `name=value` and its attributes (spaces around each part dropped); a
//! `Domain` or `Path` attribute is replaced by the first line that matches it; the first
//! `proxy_cookie_flags` line of the cookie's name sets or removes `Secure`, `HttpOnly` and
//! `SameSite`. A header that anything changed is written again as `a=b; c; d=e`; any
//! other passes as the node sent it. Also how a request's `Cookie` is read for
//! `$cookie_NAME`.

use hyper::header::{self, HeaderMap, HeaderValue};
use regex::bytes::Captures;

use crate::config::cookie::{CookieSettings, Pattern, Rewrite};
use crate::config::proxy::Template;

/// `$cookie_NAME` of a `Cookie` line: nginx 1.22's reading (pairs cut at `;` or `,`, the
/// name without regard to case, the value from after `=` and any spaces to the next `;`).
pub fn request_cookie<'h>(line: &'h [u8], name: &[u8]) -> Option<&'h [u8]> {
    let spaces = |s: &'h [u8]| &s[s.iter().take_while(|&&c| c == b' ').count()..];
    let mut rest = line;
    while !rest.is_empty() {
        let value = rest
            .split_at_checked(name.len())
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, after)| spaces(after).strip_prefix(b"="));
        if let Some(v) = value {
            let v = spaces(v);
            return Some(&v[..v.iter().position(|&c| c == b';').unwrap_or(v.len())]);
        }
        let next = rest.iter().position(|&c| c == b';' || c == b',');
        rest = spaces(next.map_or(&[][..], |i| &rest[i + 1..]));
    }
    None
}

/// Renders a value with the request's variables (and a regex's captures).
pub trait Render {
    fn render(&self, t: &Template, captures: Option<&Captures<'_>>) -> String;
}

/// Changes every `Set-Cookie` of `headers` as `s` asks, keeping their order.
pub fn rewrite_all(headers: &mut HeaderMap, s: &CookieSettings, r: &impl Render) {
    let old: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    if old.is_empty() {
        return;
    }
    headers.remove(header::SET_COOKIE);
    for v in old {
        let new = v
            .to_str()
            .ok()
            .and_then(|text| rewrite(text, s, r))
            .and_then(|text| HeaderValue::from_str(&text).ok());
        headers.append(header::SET_COOKIE, new.unwrap_or(v));
    }
}

/// A part of a cookie: `key` (`None`: removed) and its value (`None`: no `=`).
#[derive(Debug)]
struct Attr {
    key: Option<String>,
    value: Option<String>,
}

/// `value` changed, or `None` when nothing changes it.
pub fn rewrite(value: &str, s: &CookieSettings, r: &impl Render) -> Option<String> {
    let mut attrs: Vec<Attr> = value
        .split(';')
        .map(|part| {
            let part = part.trim_start_matches(' ');
            match part.split_once('=') {
                Some((k, v)) => Attr {
                    key: Some(k.trim_end_matches(' ').to_owned()),
                    value: Some(v.trim_matches(' ').to_owned()),
                },
                None => Attr {
                    key: Some(part.trim_end_matches(' ').to_owned()),
                    value: None,
                },
            }
        })
        .collect();
    attrs.first()?.value.as_ref()?;
    let mut changed = false;
    for a in &mut attrs[1..] {
        let (Some(key), Some(value)) = (&a.key, &mut a.value) else {
            continue;
        };
        let (rules, domain) = if key.eq_ignore_ascii_case("domain") {
            (&s.domains, true)
        } else if key.eq_ignore_ascii_case("path") {
            (&s.paths, false)
        } else {
            continue;
        };
        if let Some(v) = rules
            .iter()
            .find_map(|rule| replaced(value, rule, domain, r))
        {
            *value = v;
            changed = true;
        }
    }
    let name = attrs[0].key.clone().unwrap_or_default();
    if let Some(flags) = flags_of(&name, s, r) {
        edit_flags(&mut attrs, flags);
        changed = true;
    }
    if !changed {
        return None;
    }
    let mut out = String::with_capacity(value.len() + 32);
    for a in &attrs {
        let Some(key) = &a.key else {
            continue;
        };
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(key);
        if let Some(v) = &a.value {
            out.push('=');
            out.push_str(v);
        }
    }
    Some(out)
}

/// `value` as `rule` replaces it, if it matches: a domain (its leading dot kept) whole and
/// without regard to case, a path by its beginning, a regex anywhere (the whole value
/// replaced).
fn replaced(value: &str, rule: &Rewrite, domain: bool, r: &impl Render) -> Option<String> {
    match &rule.pattern {
        Pattern::Regex(re) => {
            let captures = re.captures(value.as_bytes())?;
            Some(r.render(&rule.replacement, Some(&captures)))
        }
        Pattern::Text(t) => {
            let pattern = r.render(t, None);
            if domain {
                let (dot, rest) = match value.strip_prefix('.') {
                    Some(rest) => (".", rest),
                    None => ("", value),
                };
                rest.eq_ignore_ascii_case(&pattern)
                    .then(|| format!("{dot}{}", r.render(&rule.replacement, None)))
            } else {
                let rest = value.strip_prefix(pattern.as_str())?;
                Some(format!("{}{rest}", r.render(&rule.replacement, None)))
            }
        }
    }
}

const SECURE: u8 = 1;
const NO_SECURE: u8 = 2;
const HTTPONLY: u8 = 4;
const NO_HTTPONLY: u8 = 8;
const STRICT: u8 = 16;
const LAX: u8 = 32;
const NONE: u8 = 64;
const NO_SAMESITE: u8 = 128;

/// The flags of the first `proxy_cookie_flags` line of cookie `name`; `None` when no line
/// is of it or its flags are none nginx knows.
fn flags_of(name: &str, s: &CookieSettings, r: &impl Render) -> Option<u8> {
    let line = s.flags.iter().find(|f| match &f.cookie {
        Pattern::Regex(re) => re.is_match(name.as_bytes()),
        Pattern::Text(t) => r.render(t, None).eq_ignore_ascii_case(name),
    })?;
    let bits = [
        SECURE,
        NO_SECURE,
        HTTPONLY,
        NO_HTTPONLY,
        STRICT,
        LAX,
        NONE,
        NO_SAMESITE,
    ];
    let mut flags = 0;
    for f in &line.flags {
        let f = r.render(f, None);
        let known = crate::config::cookie::FLAGS
            .iter()
            .position(|k| k.eq_ignore_ascii_case(&f));
        if let Some(i) = known {
            flags |= bits[i];
        }
    }
    (flags != 0).then_some(flags)
}

/// nginx's `ngx_http_proxy_edit_cookie_flags`: a flag already there stays as it is
/// written, a `no` flag removes it, `SameSite` of another value is set, and the flags
/// still missing are added in the order `Secure`, `HttpOnly`, `SameSite`.
fn edit_flags(attrs: &mut Vec<Attr>, mut flags: u8) {
    for a in attrs.iter_mut().skip(1) {
        let Some(key) = &a.key else {
            continue;
        };
        let on_off = |on: u8, off: u8, flags: &mut u8| {
            if *flags & on != 0 {
                *flags &= !on;
                false
            } else {
                *flags & off != 0
            }
        };
        let remove = if key.eq_ignore_ascii_case("secure") {
            on_off(SECURE, NO_SECURE, &mut flags)
        } else if key.eq_ignore_ascii_case("httponly") {
            on_off(HTTPONLY, NO_HTTPONLY, &mut flags)
        } else if key.eq_ignore_ascii_case("samesite") {
            let wanted = [(STRICT, "Strict"), (LAX, "Lax"), (NONE, "None")]
                .into_iter()
                .find(|(bit, _)| flags & bit != 0);
            match wanted {
                Some((bit, word)) => {
                    flags &= !bit;
                    let same = a
                        .value
                        .as_deref()
                        .is_some_and(|v| v.eq_ignore_ascii_case(word));
                    if !same {
                        a.key = Some("SameSite".into());
                        a.value = Some(word.into());
                    }
                    false
                }
                None => flags & NO_SAMESITE != 0,
            }
        } else {
            false
        };
        if remove {
            a.key = None;
        }
    }
    let mut add = |key: &str, value: Option<&str>| {
        attrs.push(Attr {
            key: Some(key.into()),
            value: value.map(str::to_owned),
        })
    };
    if flags & SECURE != 0 {
        add("Secure", None);
    }
    if flags & HTTPONLY != 0 {
        add("HttpOnly", None);
    }
    if let Some((_, word)) = [(STRICT, "Strict"), (LAX, "Lax"), (NONE, "None")]
        .into_iter()
        .find(|(bit, _)| flags & bit != 0)
    {
        add("SameSite", Some(word));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Scope;
    use crate::config::grammar::Directive;
    use crate::config::map::Maps;
    use crate::config::proxy::Part;

    /// Text and captures; no request.
    struct Plain;

    impl Render for Plain {
        fn render(&self, t: &Template, captures: Option<&Captures<'_>>) -> String {
            let mut out = String::new();
            for p in t {
                match p {
                    Part::Text(s) => out.push_str(s),
                    Part::Capture(i) => {
                        let c = captures.and_then(|c| c.get(*i));
                        out.push_str(&String::from_utf8_lossy(
                            c.map_or(&[][..], |c| c.as_bytes()),
                        ));
                    }
                    _ => {}
                }
            }
            out
        }
    }

    fn settings(lines: &str) -> CookieSettings {
        let maps = Maps::default();
        let cx = Scope {
            root: std::path::Path::new("."),
            maps: &maps,
            charsets: &[],
        };
        let mut s = CookieSettings::default();
        for d in Directive::parse_text(lines).expect("parsed") {
            let applied = crate::config::cookie::apply(&mut s, &d, &cx, &mut Vec::new());
            assert!(applied.expect("valid"), "{}", d.name);
        }
        s
    }

    #[test]
    fn cookies_are_cut_changed_and_written_again_as_nginx_does() {
        let s = settings(
            "proxy_cookie_domain .Example.org lb.example;\n\
             proxy_cookie_path /app /;\n\
             proxy_cookie_path ~^/x/(.*) /y/$1;\n\
             proxy_cookie_flags ~^s secure samesite=lax;\n\
             proxy_cookie_flags id nosecure nohttponly nosamesite;",
        );
        let cases = [
            // Nothing to change: as sent.
            ("a=1;Path=/other", None),
            // No `=` in the first part: never changed.
            ("a; Path=/app", None),
            (
                " a = 1 ;Path = /app/x; Domain=.example.ORG",
                Some("a=1; Path=//x; Domain=.lb.example"),
            ),
            (
                "a=1; path=/x/z; domain=sub.example.org",
                Some("a=1; path=/y/z; domain=sub.example.org"),
            ),
            (
                "sid=1; Secure; SameSite",
                Some("sid=1; Secure; SameSite=Lax"),
            ),
            ("SID=1; samesite=LAX", Some("SID=1; samesite=LAX; Secure")),
            ("id=1; Secure; HttpOnly; SameSite=None; x", Some("id=1; x")),
        ];
        for (cookie, want) in cases {
            assert_eq!(rewrite(cookie, &s, &Plain).as_deref(), want, "{cookie}");
        }
        let mut headers = HeaderMap::new();
        for c in ["sid=1", "b=2", "id=3; secure"] {
            headers.append(header::SET_COOKIE, HeaderValue::from_static(c));
        }
        rewrite_all(&mut headers, &s, &Plain);
        let after: Vec<_> = headers.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(after, ["sid=1; Secure; SameSite=Lax", "b=2", "id=3"]);
    }
}
