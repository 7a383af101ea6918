//! nginx's `proxy_cookie_domain`, `proxy_cookie_path` and `proxy_cookie_flags`: what is
//! changed in the `Set-Cookie` headers of a node's answer (`crate::cookie` changes them).
//! Each is a list of lines, inherited from the block above unless the block has one of
//! its own; `off` stands alone in its block and means none. Values may have variables; a
//! regex's replacement may have its captures.

use std::sync::Arc;

use regex::bytes::Regex;

use super::grammar::{Directive, GrammarError};
use super::location::regex;
use super::proxy::{Template, compile_value, template};
use super::{Scope, Warning};

/// What a line's first parameter matches.
#[derive(Clone, Debug)]
pub enum Pattern {
    /// Text with variables.
    Text(Template),
    Regex(Arc<Regex>),
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Pattern::Text(a), Pattern::Text(b)) => a == b,
            (Pattern::Regex(a), Pattern::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for Pattern {}

/// A `proxy_cookie_domain` or `proxy_cookie_path` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    pub pattern: Pattern,
    pub replacement: Template,
}

/// A `proxy_cookie_flags` line: the cookie (by name, without regard to case, or a regex),
/// and its flags, each text with variables, read when a cookie is changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flags {
    pub cookie: Pattern,
    pub flags: Vec<Template>,
}

/// A location's cookie lines (none: cookies pass as the node sent them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CookieSettings {
    pub domains: Vec<Rewrite>,
    pub paths: Vec<Rewrite>,
    pub flags: Vec<Flags>,
}

impl CookieSettings {
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty() && self.paths.is_empty() && self.flags.is_empty()
    }

    /// The values of the lines, for what they read of a request.
    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        let rewrites = self.domains.iter().chain(&self.paths);
        let patterns = rewrites
            .clone()
            .map(|r| &r.pattern)
            .chain(self.flags.iter().map(|f| &f.cookie))
            .filter_map(|p| match p {
                Pattern::Text(t) => Some(t),
                Pattern::Regex(_) => None,
            });
        rewrites
            .map(|r| &r.replacement)
            .chain(self.flags.iter().flat_map(|f| &f.flags))
            .chain(patterns)
    }
}

/// The flags nginx knows, as `proxy_cookie_flags` names them.
pub const FLAGS: &[&str] = &[
    "secure",
    "nosecure",
    "httponly",
    "nohttponly",
    "samesite=strict",
    "samesite=lax",
    "samesite=none",
    "nosamesite",
];

/// Empties the lists the block has lines of its own of.
pub fn inherit(s: &mut CookieSettings, has: impl Fn(&str) -> bool) {
    if has("proxy_cookie_domain") {
        s.domains.clear();
    }
    if has("proxy_cookie_path") {
        s.paths.clear();
    }
    if has("proxy_cookie_flags") {
        s.flags.clear();
    }
}

/// Applies `d` when it is one of the cookie lines; `Ok(false)` when not. (`off` beside
/// another line of its kind in a block is the grammar's "is duplicate".)
pub fn apply(
    s: &mut CookieSettings,
    d: &Directive,
    cx: &Scope<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<bool, GrammarError> {
    if !matches!(
        d.name.as_str(),
        "proxy_cookie_domain" | "proxy_cookie_path" | "proxy_cookie_flags"
    ) {
        return Ok(false);
    }
    if d.args.len() == 1 && d.args[0] == "off" {
        return Ok(true);
    }
    let invalid = |a: &str| d.error(format!("invalid parameter \"{a}\""));
    match (d.name.as_str(), d.args.as_slice()) {
        // A cookie and up to three flags, as nginx takes them.
        ("proxy_cookie_flags", [cookie, flags @ ..]) if (1..=3).contains(&flags.len()) => {
            // A cookie's regex is without regard to case (nginx has no `~*` here).
            let cookie = match cookie.strip_prefix('~') {
                Some(p) => Pattern::Regex(Arc::new(regex(&d.place, p, true)?)),
                None => Pattern::Text(template(&d.place, cookie, cx.maps)?),
            };
            for f in flags {
                if !f.contains('$') && !FLAGS.iter().any(|k| k.eq_ignore_ascii_case(f)) {
                    warnings.push(Warning {
                        at: d.place.to_string(),
                        message: format!(
                            "\"{f}\" is not a flag of proxy_cookie_flags ({}): it does \
                             nothing, as in nginx",
                            FLAGS.join(", ")
                        ),
                    });
                }
            }
            let flags = flags
                .iter()
                .map(|f| template(&d.place, f, cx.maps))
                .collect::<Result<_, _>>()?;
            s.flags.push(Flags { cookie, flags });
        }
        (_, [only]) => return Err(invalid(only)),
        (name, [pattern, replacement]) => {
            let domain = name == "proxy_cookie_domain";
            // A domain's regex is without regard to case, as nginx has it; a path's
            // with `~*` only.
            let re = match pattern.strip_prefix('~') {
                Some(p) if domain => Some(regex(&d.place, p, true)?),
                Some(p) => {
                    let (p, caseless) = p.strip_prefix('*').map_or((p, false), |p| (p, true));
                    Some(regex(&d.place, p, caseless)?)
                }
                None => None,
            };
            let replacement = compile_value(&d.place, replacement, cx.maps, re.as_ref())?;
            let pattern = match re {
                Some(re) => Pattern::Regex(Arc::new(re)),
                None => {
                    // nginx drops a domain's leading dot, and matches it on either side.
                    let p = match pattern.strip_prefix('.') {
                        Some(p) if domain => p,
                        _ => pattern,
                    };
                    Pattern::Text(template(&d.place, p, cx.maps)?)
                }
            };
            let rewrite = Rewrite {
                pattern,
                replacement,
            };
            if domain {
                s.domains.push(rewrite);
            } else {
                s.paths.push(rewrite);
            }
        }
        _ => {
            return Err(d.error(format!(
                "invalid number of arguments in \"{}\" directive",
                d.name
            )));
        }
    }
    Ok(true)
}
