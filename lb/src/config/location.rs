//! `location` blocks: their matchers, nginx's order for choosing one, and `proxy_pass`
//! with nginx's URI replacement rule.
//!
//! nginx's order: an exact `=` match wins at once; otherwise the longest prefix is
//! remembered, and if it is `^~` it wins; otherwise regular expressions (`~`, `~*`) are
//! tried in file order and the first that matches wins; otherwise the longest prefix. No
//! match at all is a 404 from gluu-lb (the guide's nginx would look for a static file).

use regex::bytes::{Regex, RegexBuilder};

use super::grammar::{Directive, GrammarError, Place};
use super::proxy::{ProxySettings, apply, inherit, validate};
use super::server::{Return, ret};
use super::{Scope, Warning};
use crate::uri::{Path, escape};

#[derive(Clone, Debug)]
pub enum Matcher {
    /// `location = /path`
    Exact(String),
    /// `location /path` (`no_regex: false`) or `location ^~ /path` (`no_regex: true`).
    Prefix { prefix: String, no_regex: bool },
    /// `location ~ re` or `location ~* re` (case-insensitive).
    Regex(Regex),
    /// `location @name`: never matched by a URI, only named by `error_page`.
    Named(String),
}

/// `proxy_pass https://UPSTREAM[/uri]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyPass {
    pub upstream: String,
    /// The URI part, if any: it replaces the part of the request path the location matched.
    pub uri: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Location {
    pub matcher: Matcher,
    pub proxy_pass: Option<ProxyPass>,
    /// `return`: answered before anything else the location does (nginx's rewrite phase).
    pub ret: Option<Return>,
    /// The `if` blocks before `ret`, in their order.
    pub ifs: Vec<super::cond::If>,
    /// `alias`: where the files are, for the path after the location's prefix.
    pub alias: Option<std::path::PathBuf>,
    /// `internal`: only an `error_page` reaches it; a client's request gets 404.
    pub internal: bool,
    /// `stub_status`: answers with the connection and request counts.
    pub stub_status: bool,
    /// `limit_except`: other methods are held to its rules.
    pub limit_except: Option<super::access::LimitExcept>,
    pub settings: ProxySettings,
    pub place: Place,
}

/// `proxy_redirect default` (nginx's default): a node's `Location`, or the URL in its
/// `Refresh`, that starts with the `proxy_pass` URL gets the location's path in place of
/// it; without a URI part in `proxy_pass`, `https://UPSTREAM/` becomes `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub from: String,
    pub to: String,
}

impl Redirect {
    /// `value` with the part from byte `at` on rewritten, if it starts with `from`.
    pub fn rewrite(&self, value: &str, at: usize) -> Option<String> {
        let rest = value.get(at..)?.strip_prefix(self.from.as_str())?;
        Some(format!("{}{}{rest}", &value[..at], self.to))
    }
}

impl Location {
    /// What a request of `method` is held to here in nginx's access phase.
    pub fn access(&self, method: &hyper::Method) -> super::access::Access<'_> {
        let own = super::access::Access::of(&self.settings);
        match &self.limit_except {
            Some(l) => l.access(method.as_str(), own),
            None => own,
        }
    }

    /// Every set of rules a request may be held to here: the location's, and its
    /// `limit_except` block's.
    pub fn accesses(&self) -> impl Iterator<Item = super::access::Access<'_>> {
        let own = super::access::Access::of(&self.settings);
        std::iter::once(own).chain(self.limit_except.as_ref().map(|l| l.held(own)))
    }

    /// The path this location is named by (`location = /a`, `location /a`); empty for a
    /// regular expression or a named location.
    pub fn path(&self) -> &str {
        match &self.matcher {
            Matcher::Prefix { prefix: p, .. } | Matcher::Exact(p) => p,
            Matcher::Regex(_) | Matcher::Named(_) => "",
        }
    }

    /// How much of a path this location's own path covers: what `proxy_pass`'s URI part
    /// and `alias` replace (nothing for a regular expression or a named location).
    pub fn matched_len(&self) -> usize {
        self.path().len()
    }

    /// The rewrite `proxy_redirect default` makes here; `None` with `proxy_redirect off`.
    pub fn redirect(&self) -> Option<Redirect> {
        let pass = self
            .proxy_pass
            .as_ref()
            .filter(|_| !self.settings.redirect_off)?;
        Some(match (&pass.uri, &self.matcher) {
            (Some(uri), Matcher::Prefix { prefix: path, .. } | Matcher::Exact(path)) => Redirect {
                from: format!("https://{}{uri}", pass.upstream),
                to: path.clone(),
            },
            _ => Redirect {
                from: format!("https://{}/", pass.upstream),
                to: "/".to_owned(),
            },
        })
    }
}

pub(super) fn regex(place: &Place, pattern: &str, caseless: bool) -> Result<Regex, GrammarError> {
    RegexBuilder::new(pattern)
        .case_insensitive(caseless)
        .build()
        .map_err(|e| {
            GrammarError::at(
                place,
                format!(
                    "regular expression \"{pattern}\" cannot be used (PCRE look-around and \
                     back-references are not supported): {e}"
                ),
            )
        })
}

/// An `alias` line, where nginx allows one (and where gluu-lb can follow it: nginx's
/// alias in a regular expression location needs captures).
fn alias(
    d: &Directive,
    matcher: &Matcher,
    body: &[Directive],
    root: &std::path::Path,
) -> Result<std::path::PathBuf, GrammarError> {
    match matcher {
        Matcher::Named(_) => {
            Err(d.error("\"alias\" directive cannot be used inside the named location"))
        }
        Matcher::Regex(_) => Err(d.error(
            "\"alias\" in a regular expression location is not supported (nginx's needs \
             the regex's captures); use a prefix location or \"root\"",
        )),
        _ => match body.iter().find(|x| x.name == "root") {
            Some(r) if r.place.line < d.place.line || position(body, r) < position(body, d) => {
                Err(d.error(
                    "\"alias\" directive is duplicate, \"root\" directive was specified earlier",
                ))
            }
            Some(r) => Err(r.error(
                "\"root\" directive is duplicate, \"alias\" directive was specified earlier",
            )),
            None => super::pages::directory(d, root),
        },
    }
}

fn position(body: &[Directive], d: &Directive) -> Option<usize> {
    body.iter().position(|x| std::ptr::eq(x, d))
}

fn proxy_pass(d: &Directive, is_regex: bool) -> Result<ProxyPass, GrammarError> {
    let [url] = d.args.as_slice() else {
        return Err(GrammarError::at(
            &d.place,
            "invalid number of arguments in \"proxy_pass\" directive",
        ));
    };
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(GrammarError::at(
            &d.place,
            format!(
                "\"proxy_pass {url}\": only https:// upstreams are supported (the Gluu nodes \
                 serve HTTPS)"
            ),
        ));
    };
    let (upstream, uri) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(rest[i..].to_owned())),
        None => (rest, None),
    };
    if uri.is_some() && is_regex {
        return Err(GrammarError::at(
            &d.place,
            "\"proxy_pass\" cannot have URI part in location given by regular expression, \
             or inside named location",
        ));
    }
    Ok(ProxyPass {
        upstream: upstream.to_owned(),
        uri,
    })
}

/// Reads a `location` directive (relative paths in it start at `cx.root`); its settings
/// start from `inherited` (the server's).
pub fn location(
    d: &Directive,
    cx: &Scope<'_>,
    inherited: &ProxySettings,
    warnings: &mut Vec<Warning>,
) -> Result<Location, GrammarError> {
    let Some(body) = &d.block else {
        return Err(GrammarError::at(
            &d.place,
            "directive \"location\" has no opening \"{\"",
        ));
    };
    let matcher = match d.args.as_slice() {
        [m, p] if m == "=" => Matcher::Exact(p.clone()),
        [m, p] if m == "^~" => Matcher::Prefix {
            prefix: p.clone(),
            no_regex: true,
        },
        [m, p] if m == "~" => Matcher::Regex(regex(&d.place, p, false)?),
        [m, p] if m == "~*" => Matcher::Regex(regex(&d.place, p, true)?),
        [p] if p.starts_with('@') && p.len() > 1 => Matcher::Named(p.clone()),
        [p] if !p.starts_with('@') => Matcher::Prefix {
            prefix: p.clone(),
            no_regex: false,
        },
        _ => {
            return Err(GrammarError::at(
                &d.place,
                "invalid location modifier or arguments",
            ));
        }
    };
    let is_regex = matches!(matcher, Matcher::Regex(_) | Matcher::Named(_));
    let mut pass = None;
    let mut returned = None;
    let mut ifs = Vec::new();
    let mut alias = None;
    let mut internal = false;
    let mut stub_status = None;
    let mut limit_except = None;
    let mut settings = inherit(inherited, body);
    for inner in body {
        if inner.name == "proxy_pass" {
            pass = Some(proxy_pass(inner, is_regex)?);
        } else if inner.name == "proxy_redirect" && inner.args == ["default"] && pass.is_some() {
            settings.redirect_off = false;
        } else if inner.name == "return" {
            returned = Some(ret(inner, cx.maps, None)?);
        } else if inner.name == "if" || inner.name == "rewrite" {
            let i = match inner.name.as_str() {
                "if" => super::cond::if_block(inner, cx.maps)?,
                _ => super::cond::rewrite(inner, cx.maps)?,
            };
            ifs.extend(super::server::after_return(&returned, &i, warnings));
        } else if inner.name == "alias" {
            alias = Some(self::alias(inner, &matcher, body, cx.root)?);
        } else if inner.name == "internal" {
            if !inner.args.is_empty() {
                return Err(inner.error("invalid number of arguments in \"internal\" directive"));
            }
            internal = true;
        } else if inner.name == "limit_except" {
            limit_except = Some(super::access::limit_except(inner, cx, warnings)?);
        } else if inner.name == "stub_status" {
            stub_status = Some(super::server::stub_status(inner, warnings)?);
        } else if super::proxy::not_in_location(&inner.name) {
            return Err(inner.error(format!("\"{}\" directive is not allowed here", inner.name)));
        } else if !apply(&mut settings, inner, cx, warnings)? {
            return Err(GrammarError::at(
                &inner.place,
                format!("unknown directive \"{}\" in location", inner.name),
            ));
        }
    }
    validate(&settings, &d.place)?;
    if let (Some(at), Some(_)) = (&stub_status, &pass) {
        return Err(GrammarError::at(
            at,
            "\"stub_status\" and \"proxy_pass\" in one location: nginx answers with \
             whichever comes last; keep one",
        ));
    }
    Ok(Location {
        matcher,
        proxy_pass: pass,
        ret: returned,
        ifs,
        alias,
        internal,
        stub_status: stub_status.is_some(),
        limit_except,
        settings,
        place: d.place.clone(),
    })
}

/// Where nginx's find-config phase takes a request: the location for its path, and
/// whether that location only sends the client on to its own name.
#[derive(Clone, Copy, Debug)]
pub struct Found<'a> {
    pub location: &'a Location,
    /// nginx's `auto_redirect`: the path is `PATH`, a location named `PATH/` proxies, and no
    /// location is named `PATH` itself. The answer is a 301 to `PATH/` (with the query),
    /// before the location's `return`, limits and access rules.
    pub add_slash: bool,
}

/// The location for `path` (normalized, [`crate::uri::normalize`]), in nginx's order.
pub fn find<'a>(locations: &'a [Location], path: &[u8]) -> Option<Found<'a>> {
    let serve = |location| {
        Some(Found {
            location,
            add_slash: false,
        })
    };
    let mut longest: Option<(&Location, usize, bool)> = None;
    // The locations named `PATH/` (nginx keeps the exact one's settings for the redirect
    // when there are both), and whether one of them proxies.
    let (mut slashed, mut proxies) = (None::<&Location>, false);
    for l in locations {
        let name = match &l.matcher {
            Matcher::Exact(p) if p.as_bytes() == path => return serve(l),
            Matcher::Prefix { prefix, no_regex } => {
                if path.starts_with(prefix.as_bytes())
                    && longest.is_none_or(|(_, len, _)| prefix.len() > len)
                {
                    longest = Some((l, prefix.len(), *no_regex));
                }
                prefix
            }
            Matcher::Exact(p) => p,
            Matcher::Regex(_) | Matcher::Named(_) => continue,
        };
        if name.as_bytes().strip_suffix(b"/") == Some(path) {
            proxies |= l.proxy_pass.is_some();
            if slashed.is_none_or(|s| matches!(s.matcher, Matcher::Prefix { .. })) {
                slashed = Some(l);
            }
        }
    }
    // A prefix named `PATH` itself is found before the one named `PATH/` is looked at.
    if let Some(location) = slashed.filter(|_| proxies)
        && longest.is_none_or(|(_, len, _)| len < path.len())
    {
        return Some(Found {
            location,
            add_slash: true,
        });
    }
    if let Some((l, _, true)) = longest {
        return serve(l);
    }
    locations
        .iter()
        .find(|l| matches!(&l.matcher, Matcher::Regex(re) if re.is_match(path)))
        .or(longest.map(|(l, _, _)| l))
        .and_then(serve)
}

/// The URI sent upstream (nginx's rule): without a URI part in `proxy_pass`, the request
/// URI as the client sent it; with one, the normalized path with the location's part
/// replaced by it (escaped again if the client escaped anything), then the query as sent.
pub fn upstream_uri(
    location: &Location,
    request_uri: &str,
    path: &Path<'_>,
    query: &str,
) -> String {
    let matched = location.matched_len();
    let Some(ProxyPass { uri: Some(uri), .. }) = &location.proxy_pass else {
        return request_uri.to_owned();
    };
    let rest = path.bytes.get(matched..).unwrap_or_default();
    let mut out = String::with_capacity(uri.len() + rest.len() + query.len() + 1);
    out.push_str(uri);
    if path.quoted {
        escape(rest, crate::uri::ESCAPE_URI, &mut out);
    } else {
        // Nothing was decoded, so these are the client's own (ASCII) bytes.
        out.push_str(&String::from_utf8_lossy(rest));
    }
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::grammar::parse_file;
    use crate::config::map::Maps;

    fn read(text: &str) -> Result<Vec<Location>, GrammarError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, text).expect("write");
        parse_file(&path)?
            .iter()
            .map(|d| {
                let cx = Scope {
                    root: dir.path(),
                    maps: &Maps::default(),
                    charsets: &[],
                };
                location(d, &cx, &ProxySettings::default(), &mut Vec::new())
            })
            .collect()
    }

    fn chosen(ls: &[Location], path: &str) -> Option<usize> {
        find(ls, path.as_bytes()).filter(|f| !f.add_slash).map(|f| {
            ls.iter()
                .position(|x| std::ptr::eq(x, f.location))
                .expect("in list")
        })
    }

    /// What goes to the node for `request_uri` through location `l`.
    fn sent(l: &Location, request_uri: &str) -> String {
        let (path, query) = request_uri.split_once('?').unwrap_or((request_uri, ""));
        let path = crate::uri::normalize(path, true).expect("a valid path");
        upstream_uri(l, request_uri, &path, query)
    }

    #[test]
    fn the_guides_locations() {
        let ls = read(
            "location ~ ^(/)$ { proxy_pass https://backend; }\n\
             location /.well-known { proxy_pass https://backend/.well-known; }\n\
             location /oxauth { proxy_pass https://backend/oxauth; }\n\
             location /identity { proxy_pass https://backend_id/identity; }\n\
             location /cas { proxy_pass https://backend/cas; }\n\
             location /passport { proxy_pass https://backend/passport; }\n",
        )
        .expect("valid");
        assert_eq!(chosen(&ls, "/"), Some(0));
        assert_eq!(chosen(&ls, "/.well-known/openid-configuration"), Some(1));
        assert_eq!(chosen(&ls, "/oxauth/restv1/token"), Some(2));
        assert_eq!(chosen(&ls, "/identity/home.htm"), Some(3));
        assert_eq!(chosen(&ls, "/identityx"), Some(3), "a prefix, as in nginx");
        assert_eq!(chosen(&ls, "/cas/login"), Some(4));
        assert_eq!(chosen(&ls, "/passport/auth"), Some(5));
        assert_eq!(chosen(&ls, "/favicon.ico"), None);
        assert_eq!(
            ls[3].proxy_pass.as_ref().map(|p| p.upstream.as_str()),
            Some("backend_id")
        );
        assert_eq!(sent(&ls[3], "/identity/a?b=c"), "/identity/a?b=c");
        assert_eq!(sent(&ls[0], "/?x=1"), "/?x=1");
    }

    /// `/a` where `location /a/` proxies: a 301 to `/a/` (nginx's `auto_redirect`), found
    /// before any regex, unless a location is named `/a` itself or `/a/` only serves files.
    #[test]
    fn a_proxying_location_takes_its_name_without_the_slash() {
        let ls = read(
            "location / { }\n\
             location /a/ { proxy_pass https://up; }\n\
             location ~ ^/a { }\n\
             location /b/ { proxy_pass https://up; }\n\
             location = /b { }\n\
             location ^~ /c/ { proxy_pass https://up/x/; }\n\
             location /c { }\n\
             location = /d/ { return 204; }\n\
             location /d/ { proxy_pass https://up; }\n\
             location /e/ { }\n",
        )
        .expect("valid");
        let slash = |path: &str| {
            find(&ls, path.as_bytes())
                .filter(|f| f.add_slash)
                .map(|f| f.location.path().to_owned())
        };
        assert_eq!(slash("/a").as_deref(), Some("/a/"));
        assert_eq!(chosen(&ls, "/a/x"), Some(2), "the regex, as before");
        assert_eq!(slash("/b"), None, "an exact location named /b");
        assert_eq!(chosen(&ls, "/b"), Some(4));
        assert_eq!(slash("/c"), None, "a prefix named /c");
        assert_eq!(chosen(&ls, "/c"), Some(6));
        assert_eq!(
            find(&ls, b"/d")
                .map(|f| (f.add_slash, matches!(f.location.matcher, Matcher::Exact(_)))),
            Some((true, true)),
            "the exact location's settings, the prefix one's proxy_pass"
        );
        assert_eq!(slash("/e"), None, "no proxy_pass");
        assert_eq!(chosen(&ls, "/e"), Some(0));
        assert_eq!(slash("/a/"), None);
    }

    #[test]
    fn nginx_order_exact_then_no_regex_prefix_then_regex_then_prefix() {
        let ls = read(
            "location / { }\n\
             location = /exact { }\n\
             location ^~ /static { }\n\
             location ~* \\.(png|jpg)$ { }\n\
             location /images { }\n\
             location ~ ^/images/x { }\n",
        )
        .expect("valid");
        assert_eq!(chosen(&ls, "/exact"), Some(1));
        assert_eq!(chosen(&ls, "/exact/more"), Some(0));
        assert_eq!(
            chosen(&ls, "/static/a.png"),
            Some(2),
            "^~ stops the regex search"
        );
        assert_eq!(
            chosen(&ls, "/images/a.PNG"),
            Some(3),
            "regex beats a longer prefix"
        );
        assert_eq!(
            chosen(&ls, "/images/x.gif"),
            Some(5),
            "first matching regex in order"
        );
        assert_eq!(
            chosen(&ls, "/images/y.gif"),
            Some(4),
            "no regex: longest prefix"
        );
        assert_eq!(chosen(&ls, "/other"), Some(0));
    }

    #[test]
    fn uri_replacement() {
        let ls = read(
            "location /old { proxy_pass https://b/new; }\n\
             location = /one { proxy_pass https://b/other; }\n\
             location /keep { proxy_pass https://b; }\n",
        )
        .expect("valid");
        assert_eq!(sent(&ls[0], "/old/x?y=1"), "/new/x?y=1");
        assert_eq!(sent(&ls[1], "/one?q"), "/other?q");
        assert_eq!(sent(&ls[2], "/keep/z"), "/keep/z");
        // With a URI part the normalized path goes on, escaped again if the client
        // escaped anything, and an empty query loses its "?"; without one, what was sent.
        assert_eq!(sent(&ls[0], "/old//x/./y?"), "/new/x/y");
        assert_eq!(
            sent(&ls[0], "/old/%2e%2e/old/a%20b%2fc%41?q=%2e"),
            "/new/a%20b/cA?q=%2e"
        );
        assert_eq!(sent(&ls[0], "/old/caf%c3%a9"), "/new/caf%C3%A9");
        assert_eq!(sent(&ls[2], "/keep//z/../%41?"), "/keep//z/../%41?");
    }

    #[test]
    fn proxy_redirect_default_as_nginx_makes_it() {
        let ls = read(
            "location /oxauth { proxy_pass https://backend/oxauth; }\n\
             location /a/ { proxy_pass https://b; }\n\
             location ~ ^/r { proxy_pass https://b; }\n\
             location /off { proxy_pass https://b/x; proxy_redirect off; }\n\
             location /none { }\n",
        )
        .expect("valid");
        let r = ls[0].redirect().expect("default");
        assert_eq!(
            r.rewrite("https://backend/oxauth/login?x=1", 0).as_deref(),
            Some("/oxauth/login?x=1")
        );
        assert_eq!(r.rewrite("https://lb.example.org/oxauth/login", 0), None);
        assert_eq!(
            r.rewrite("0; url=https://backend/oxauth/x", 7).as_deref(),
            Some("0; url=/oxauth/x")
        );
        for l in &ls[1..3] {
            let r = l.redirect().expect("default");
            assert_eq!(r.rewrite("https://b/c", 0).as_deref(), Some("/c"));
        }
        assert_eq!(ls[3].redirect(), None);
        assert_eq!(ls[4].redirect(), None);
    }

    #[test]
    fn errors() {
        let cases = [
            ("location ~ ^/(a { }", "cannot be used"),
            ("location ~ ^/(?=a) { }", "look-around"),
            (
                "location ~ ^/a { proxy_pass https://b/x; }",
                "cannot have URI part",
            ),
            (
                "location /a { proxy_pass http://b; }",
                "only https:// upstreams",
            ),
            (
                "location /a { proxy_pass https://b; proxy_pass https://c; }",
                "is duplicate",
            ),
            ("location @ { }", "invalid location modifier"),
            (
                "location @n { proxy_pass https://b/x; }",
                "cannot have URI part in location given by regular expression, or inside named",
            ),
            (
                "location @n { alias /srv/; }",
                "cannot be used inside the named location",
            ),
            ("location ~ ^/a { alias /srv/; }", "not supported"),
            (
                "location /a { root /srv; alias /srv/; }",
                "\"alias\" directive is duplicate, \"root\" directive was specified earlier",
            ),
            (
                "location /a { alias /srv/; root /srv; }",
                "\"root\" directive is duplicate, \"alias\" directive was specified earlier",
            ),
            (
                "location /a { alias /srv/; alias /x/; }",
                "\"alias\" directive is duplicate",
            ),
            ("location /a;", "has no opening"),
            (
                "location /a { try_files $uri =404; }",
                "unknown directive \"try_files\" in location",
            ),
        ];
        for (text, want) in cases {
            let e = read(text).expect_err(text).to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.contains("nginx.conf:1"), "{text:?}: {e}");
        }
    }
}
