//! What a request gets when gluu-lb answers with an error, and the files it can answer
//! with: `error_page`, `proxy_intercept_errors` and `root`, in `http`, `server` and
//! `location` (`alias` is a location's own, [`super::location`]).
//!
//! `error_page CODE ... [=[RESPONSE]] URI` as nginx reads it: codes from 300 to 599 (not
//! 499); `=RESPONSE` sends that status instead, `=` alone the status of what the URI
//! answers; a URI starting with `/` is served by the location it matches (as a GET unless
//! the request was a HEAD), one starting with `@` by that named location, anything else is
//! a redirect (302, or the `=RESPONSE` if it is 301, 302, 303, 307 or 308). A block with
//! an `error_page` line of its own inherits none of its parent's.

use std::path::{Path, PathBuf};

use super::Scope;
use super::grammar::{Directive, GrammarError, Place};
use super::map::Maps;
use super::proxy::{ProxySettings, Template, template};

/// What an `error_page` line makes of the status it lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorPage {
    pub codes: Vec<u16>,
    pub status: Overwrite,
    pub target: Target,
    pub place: Place,
}

/// The status sent with an error page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    /// No `=`: the error's own status.
    Keep,
    /// `=`: the status of what the page's URI answers.
    Page,
    /// `=CODE`.
    To(u16),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `/path[?args]`, variables allowed: served by the location it matches.
    Uri(Template),
    /// `@name`: served by that named location, URI and method unchanged.
    Named(String),
    /// Anything else: a URL the client is redirected to.
    Redirect(Template),
}

impl ErrorPage {
    /// The redirect status of a [`Target::Redirect`]: 302 unless `=` names another
    /// redirect status (nginx's rule).
    pub fn redirect_status(&self) -> u16 {
        match self.status {
            Overwrite::To(code @ (301 | 302 | 303 | 307 | 308)) => code,
            _ => 302,
        }
    }
}

/// Applies `d` when it is one of this module's lines (relative paths start at
/// `cx.root`); `Ok(false)` when not.
pub fn apply(s: &mut ProxySettings, d: &Directive, cx: &Scope<'_>) -> Result<bool, GrammarError> {
    match d.name.as_str() {
        "error_page" => s.error_pages.push(error_page(d, cx.maps)?),
        "proxy_intercept_errors" => s.intercept_errors = d.on_off()?,
        "root" => s.root = Some(directory(d, cx.root)?),
        _ => return Ok(false),
    }
    Ok(true)
}

/// The directory of a `root` or `alias` line: relative to `base`, as written otherwise
/// (nginx keeps a trailing `/` of `alias`, and so does the path joined to it).
pub fn directory(d: &Directive, base: &Path) -> Result<PathBuf, GrammarError> {
    let v = d.one_arg()?;
    if v.contains('$') {
        return Err(d.error(format!(
            "\"{} {v}\": variables in a file path are not supported",
            d.name
        )));
    }
    Ok(base.join(v))
}

fn error_page(d: &Directive, maps: &Maps) -> Result<ErrorPage, GrammarError> {
    let count = || d.error("invalid number of arguments in \"error_page\" directive");
    let [codes @ .., last] = d.args.as_slice() else {
        return Err(count());
    };
    if last.starts_with('=') {
        return Err(count());
    }
    let invalid = |v: &str| d.error(format!("invalid value \"{v}\""));
    let (codes, status) = match codes {
        [] => return Err(count()),
        [first, ..] if first.starts_with('=') => return Err(invalid(first)),
        [codes @ .., eq] if eq.starts_with('=') => {
            let status = match &eq[1..] {
                "" => Overwrite::Page,
                n => Overwrite::To(
                    n.parse()
                        .ok()
                        .filter(|c| (100..=999).contains(c))
                        .ok_or_else(|| invalid(eq))?,
                ),
            };
            (codes, status)
        }
        codes => (codes, Overwrite::Keep),
    };
    if codes.is_empty() {
        return Err(count());
    }
    let codes = codes
        .iter()
        .map(|c| match c.parse::<u16>() {
            Ok(499) | Err(_) => Err(invalid(c)),
            Ok(n) if (300..=599).contains(&n) => Ok(n),
            Ok(_) => Err(d.error(format!("value \"{c}\" must be between 300 and 599"))),
        })
        .collect::<Result<Vec<u16>, _>>()?;
    let target = if let Some(name) = last.strip_prefix('@') {
        if name.is_empty() || name.contains('$') {
            return Err(invalid(last));
        }
        Target::Named(last.clone())
    } else if last.starts_with('/') {
        Target::Uri(template(&d.place, last, maps)?)
    } else {
        Target::Redirect(template(&d.place, last, maps)?)
    };
    Ok(ErrorPage {
        codes,
        status,
        target,
        place: d.place.clone(),
    })
}

/// The `error_page` line for `status` in `s`, if any.
pub fn page_for(s: &ProxySettings, status: u16) -> Option<&ErrorPage> {
    s.error_pages.iter().find(|p| p.codes.contains(&status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::grammar::parse_file;
    use crate::config::proxy::Part;

    fn read(line: &str) -> Result<ProxySettings, GrammarError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, line).expect("write");
        let mut s = ProxySettings::default();
        let cx = Scope {
            root: Path::new("/etc/nginx"),
            maps: &Maps::default(),
            charsets: &[],
        };
        for d in parse_file(&path)? {
            assert!(apply(&mut s, &d, &cx)?, "{}", d.name);
        }
        Ok(s)
    }

    #[test]
    fn error_pages_as_nginx_reads_them() {
        let s = read(
            "error_page 500 502 503 504 /50x.html;\nerror_page 404 =200 /empty;\n\
             error_page 403 = @denied;\nerror_page 410 =301 https://$host/gone;\n\
             error_page 401 http://idp.example.org/;\nroot html;\nproxy_intercept_errors on;",
        )
        .expect("valid");
        let p = &s.error_pages;
        assert_eq!(p.len(), 5);
        assert_eq!(p[0].codes, [500, 502, 503, 504]);
        assert_eq!(p[0].status, Overwrite::Keep);
        assert_eq!(
            p[0].target,
            Target::Uri(vec![Part::Text("/50x.html".into())])
        );
        assert_eq!(p[1].status, Overwrite::To(200));
        assert_eq!(
            (p[2].status, &p[2].target),
            (Overwrite::Page, &Target::Named("@denied".into()))
        );
        assert_eq!(p[3].redirect_status(), 301);
        assert!(matches!(&p[3].target, Target::Redirect(t) if t.len() == 3));
        assert_eq!(p[4].redirect_status(), 302);
        assert_eq!(page_for(&s, 503).map(|p| p.place.line), Some(1));
        assert!(page_for(&s, 501).is_none());
        assert_eq!(s.root.as_deref(), Some(Path::new("/etc/nginx/html")));
        assert!(s.intercept_errors);
    }

    #[test]
    fn nginx_words_for_bad_lines() {
        for (line, message) in [
            (
                "error_page;",
                "invalid number of arguments in \"error_page\"",
            ),
            (
                "error_page 404;",
                "invalid number of arguments in \"error_page\"",
            ),
            ("error_page 404 =200;", "invalid number of arguments"),
            (
                "error_page 200 /x;",
                "value \"200\" must be between 300 and 599",
            ),
            (
                "error_page 600 /x;",
                "value \"600\" must be between 300 and 599",
            ),
            ("error_page 499 /x;", "invalid value \"499\""),
            ("error_page 404 =abc /x;", "invalid value \"=abc\""),
            ("error_page 404 =-1 /x;", "invalid value \"=-1\""),
            ("error_page =200 /x;", "invalid value \"=200\""),
            ("error_page 404 /x /y;", "invalid value \"/x\""),
            ("error_page 404 @;", "invalid value \"@\""),
            ("error_page 404 $unknown;", "unknown \"unknown\" variable"),
            ("root;", "invalid number of arguments in \"root\""),
            (
                "root /srv/$host;",
                "variables in a file path are not supported",
            ),
            ("proxy_intercept_errors maybe;", "proxy_intercept_errors"),
        ] {
            let e = read(line).expect_err(line).to_string();
            assert!(e.contains(message), "{line}: {e}");
            assert!(e.contains("nginx.conf:1"), "{line}: {e}");
        }
    }
}
