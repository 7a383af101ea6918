//! nginx's `gzip` module: which responses are compressed for which clients, read as nginx
//! reads `gzip`, `gzip_types`, `gzip_comp_level`, `gzip_min_length`, `gzip_vary`,
//! `gzip_proxied`, `gzip_http_version`, `gzip_disable` and `gzip_buffers`. The decision
//! and the compression itself are `crate::gzip`'s.

use regex::bytes::Regex;

use super::Warning;
use super::grammar::{Directive, GrammarError};
use super::location::regex;
use super::proxy::parse_size;

/// `gzip_proxied`'s parameters: when a request that came through another proxy (it has a
/// `Via` header) still gets a compressed response. nginx's default is `off`: never; `off`
/// beside other parameters wins over them, as in nginx.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proxied {
    pub off: bool,
    pub expired: bool,
    pub no_cache: bool,
    pub no_store: bool,
    pub private: bool,
    pub no_last_modified: bool,
    pub no_etag: bool,
    pub auth: bool,
    pub any: bool,
}

impl Default for Proxied {
    fn default() -> Self {
        Self {
            off: true,
            ..Self::NONE
        }
    }
}

impl Proxied {
    /// A block's own `gzip_proxied` lines start from here.
    pub const NONE: Proxied = Proxied {
        off: false,
        expired: false,
        no_cache: false,
        no_store: false,
        private: false,
        no_last_modified: false,
        no_etag: false,
        auth: false,
        any: false,
    };

    /// The flag a parameter names, `None` for a word that is not one.
    pub fn flag(&mut self, word: &str) -> Option<&mut bool> {
        Some(match word {
            "off" => &mut self.off,
            "expired" => &mut self.expired,
            "no-cache" => &mut self.no_cache,
            "no-store" => &mut self.no_store,
            "private" => &mut self.private,
            "no_last_modified" => &mut self.no_last_modified,
            "no_etag" => &mut self.no_etag,
            "auth" => &mut self.auth,
            "any" => &mut self.any,
            _ => return None,
        })
    }
}

/// A `gzip_disable` regular expression: matched against the `User-Agent`, ignoring case.
#[derive(Clone, Debug)]
pub struct Pattern(pub Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Pattern {}

/// The `gzip_*` settings in force in a block, with nginx's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gzip {
    /// `gzip` (off).
    pub on: bool,
    /// `gzip_comp_level` (1).
    pub level: u32,
    /// `gzip_min_length` (20): a response whose `Content-Length` is below it passes as is.
    pub min_length: u64,
    /// `gzip_types`, lower case, `text/html` always among them; `None` after `*` (any).
    pub types: Option<Vec<String>>,
    /// `gzip_vary` (off): `Vary: Accept-Encoding` on every response that could be
    /// compressed, whether or not this client gets it compressed.
    pub vary: bool,
    pub proxied: Proxied,
    /// `gzip_http_version 1.0`: HTTP/1.0 clients get compressed responses too (the default,
    /// 1.1, leaves them out).
    pub http_1_0: bool,
    /// `gzip_disable msie6`.
    pub disable_msie6: bool,
    /// `gzip_disable`'s regular expressions.
    pub disable: Vec<Pattern>,
}

/// The type nginx compresses whatever `gzip_types` says.
const HTML: &str = "text/html";

impl Default for Gzip {
    fn default() -> Self {
        Self {
            on: false,
            level: 1,
            min_length: 20,
            types: Some(vec![HTML.to_owned()]),
            vary: false,
            proxied: Proxied::default(),
            http_1_0: false,
            disable_msie6: false,
            disable: Vec::new(),
        }
    }
}

/// A block's own `gzip_types`, `gzip_proxied` or `gzip_disable` lines replace what it
/// inherited (several lines in one block add up, as in nginx).
pub fn inherit(g: &mut Gzip, has: impl Fn(&str) -> bool) {
    if has("gzip_types") {
        g.types = Gzip::default().types;
    }
    if has("gzip_proxied") {
        g.proxied = Proxied::NONE;
    }
    if has("gzip_disable") {
        g.disable_msie6 = false;
        g.disable.clear();
    }
}

/// Applies `d` when it is a `gzip` line; `Ok(false)` when not.
pub fn apply(
    g: &mut Gzip,
    d: &Directive,
    warnings: &mut Vec<Warning>,
) -> Result<bool, GrammarError> {
    let invalid_value = || d.error(format!("\"{}\" directive invalid value", d.name));
    let mut warn = |message: String| {
        warnings.push(Warning {
            at: d.place.to_string(),
            message,
        })
    };
    match d.name.as_str() {
        "gzip" => g.on = d.on_off()?,
        "gzip_vary" => g.vary = d.on_off()?,
        "gzip_comp_level" => {
            let v = d.one_arg()?;
            let n: u32 = v
                .parse()
                .map_err(|_| d.error("\"gzip_comp_level\" directive invalid number"))?;
            if !(1..=9).contains(&n) {
                return Err(d.error("value must be between 1 and 9"));
            }
            g.level = n;
        }
        "gzip_min_length" => g.min_length = parse_size(d.one_arg()?).ok_or_else(invalid_value)?,
        "gzip_http_version" => {
            g.http_1_0 = match d.one_arg()? {
                "1.0" => true,
                "1.1" => false,
                v => return Err(d.error(format!("invalid value \"{v}\""))),
            }
        }
        // nginx's output buffers; gluu-lb sends each piece as zlib gives it.
        "gzip_buffers" => match d.args.as_slice() {
            [n, size] => {
                let positive = |v: &str| parse_size(v).filter(|n| *n > 0);
                if n.parse::<u32>().ok().filter(|n| *n > 0).is_none() || positive(size).is_none() {
                    return Err(invalid_value());
                }
            }
            _ => {
                return Err(d.error("invalid number of arguments in \"gzip_buffers\" directive"));
            }
        },
        "gzip_types" => {
            if d.args.is_empty() {
                return Err(d.error("invalid number of arguments in \"gzip_types\" directive"));
            }
            for t in &d.args {
                let Some(types) = &mut g.types else {
                    break;
                };
                if t == "*" {
                    g.types = None;
                    break;
                }
                let t = t.to_ascii_lowercase();
                if types.contains(&t) {
                    warn(format!("duplicate MIME type \"{t}\""));
                } else {
                    types.push(t);
                }
            }
        }
        "gzip_proxied" => {
            if d.args.is_empty() {
                return Err(d.error("invalid number of arguments in \"gzip_proxied\" directive"));
            }
            for word in &d.args {
                match g.proxied.flag(word) {
                    Some(flag) if *flag => warn(format!("duplicate value \"{word}\"")),
                    Some(flag) => *flag = true,
                    None => return Err(d.error(format!("invalid value \"{word}\""))),
                }
            }
        }
        "gzip_disable" => {
            if d.args.is_empty() {
                return Err(d.error("invalid number of arguments in \"gzip_disable\" directive"));
            }
            for p in &d.args {
                if p == "msie6" {
                    g.disable_msie6 = true;
                } else {
                    g.disable.push(Pattern(regex(&d.place, p, true)?));
                }
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block of `lines`, in a block with nginx's defaults.
    fn read(lines: &[(&str, &[&str])]) -> Result<(Gzip, Vec<Warning>), GrammarError> {
        let mut g = Gzip::default();
        inherit(&mut g, |name| lines.iter().any(|(n, _)| *n == name));
        let mut warnings = Vec::new();
        for (i, (name, args)) in lines.iter().enumerate() {
            let d = Directive::for_test(name, args, i + 1);
            assert!(apply(&mut g, &d, &mut warnings)?, "{name} is a gzip line");
        }
        Ok((g, warnings))
    }

    #[test]
    fn lines_read_as_nginx_reads_them() {
        let (g, warnings) = read(&[
            ("gzip", &["on"]),
            ("gzip_comp_level", &["6"]),
            ("gzip_min_length", &["1k"]),
            ("gzip_vary", &["on"]),
            ("gzip_http_version", &["1.0"]),
            ("gzip_buffers", &["16", "8k"]),
            ("gzip_types", &["TEXT/CSS", "application/json", "text/html"]),
            ("gzip_types", &["text/css"]),
            ("gzip_proxied", &["expired", "no-cache", "auth", "auth"]),
            ("gzip_proxied", &["any"]),
            ("gzip_disable", &["msie6", "^Mozilla/4\\.0 .*Trident"]),
        ])
        .expect("valid");
        assert!(g.on && g.vary && g.http_1_0 && g.disable_msie6);
        assert_eq!((g.level, g.min_length), (6, 1024));
        assert_eq!(
            g.types.as_deref(),
            Some(&["text/html", "text/css", "application/json"].map(String::from)[..])
        );
        let p = g.proxied;
        assert!(p.expired && p.no_cache && p.auth && p.any && !p.private && !p.no_etag);
        assert!(!p.off, "a block's own gzip_proxied drops the default off");
        let (off, _) = read(&[("gzip_proxied", &["off", "any"])]).expect("valid");
        assert!(off.proxied.off && off.proxied.any);
        assert!(
            g.disable[0]
                .0
                .is_match(b"mozilla/4.0 (compatible; trident)")
        );
        let said: Vec<_> = warnings
            .iter()
            .map(|w| (w.message.as_str(), &w.at[..]))
            .collect();
        assert_eq!(
            said,
            [
                ("duplicate MIME type \"text/html\"", "nginx.conf:7"),
                ("duplicate MIME type \"text/css\"", "nginx.conf:8"),
                ("duplicate value \"auth\"", "nginx.conf:9"),
            ]
        );
        let (any, _) = read(&[("gzip_types", &["text/css", "*", "x/y"])]).expect("valid");
        assert_eq!(any.types, None);
    }

    #[test]
    fn nginx_words_for_bad_values() {
        for (name, args, says) in [
            ("gzip", &["yes"][..], "it must be \"on\" or \"off\""),
            ("gzip_comp_level", &["10"], "value must be between 1 and 9"),
            (
                "gzip_comp_level",
                &["x"],
                "\"gzip_comp_level\" directive invalid number",
            ),
            ("gzip_http_version", &["2.0"], "invalid value \"2.0\""),
            ("gzip_proxied", &["bogus"], "invalid value \"bogus\""),
            (
                "gzip_min_length",
                &["-1"],
                "\"gzip_min_length\" directive invalid value",
            ),
            ("gzip_buffers", &["16"], "invalid number of arguments"),
            (
                "gzip_buffers",
                &["x", "8k"],
                "\"gzip_buffers\" directive invalid value",
            ),
            (
                "gzip_buffers",
                &["16", "0"],
                "\"gzip_buffers\" directive invalid value",
            ),
            (
                "gzip_disable",
                &["("],
                "regular expression \"(\" cannot be used",
            ),
        ] {
            let e = read(&[(name, args)]).expect_err(name).to_string();
            assert!(
                e.contains(says) && e.contains("nginx.conf:1"),
                "{name} {args:?}: {e}"
            );
        }
    }

    #[test]
    fn a_block_with_its_own_lists_drops_the_inherited_ones() {
        let (mut g, _) = read(&[
            ("gzip_types", &["text/css"]),
            ("gzip_proxied", &["any"]),
            ("gzip_disable", &["msie6", "curl"]),
        ])
        .expect("valid");
        let parent = g.clone();
        inherit(&mut g, |name| name == "gzip_vary");
        assert_eq!(g, parent, "no list of its own: all inherited");
        inherit(&mut g, |name| name.starts_with("gzip_"));
        let fresh = Gzip {
            proxied: Proxied::NONE,
            ..Gzip::default()
        };
        assert_eq!(g, fresh);
    }
}
