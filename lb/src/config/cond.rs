//! nginx's `if (CONDITION) { return ...; }` in a server or a location: the part of
//! nginx's `if` that is safe ("if is evil" elsewhere), as hardening and redirect snippets
//! use it (`if ($request_method !~ ^(GET|HEAD|POST)$) { return 405; }`, `if ($host ~
//! ^www\.(.+)$) { return 301 https://$1$request_uri; }`). A condition is a variable
//! (true unless empty or `0`), `$var = text`, `$var != text`, or `$var` against a regex
//! with `~`, `~*`, `!~`, `!~*`; a regex's captures are `$1`.. in the block's `return`;
//! or a file test, `-f`, `-d`, `-e`, `-x` and their `!` forms (the maintenance switch:
//! `if (-f /var/www/maintenance.on) { return 503; }`). Anything but one `return` in the
//! block is refused: gluu-lb does not run the rest of nginx's `if`.

use std::sync::Arc;

use regex::bytes::Regex;

use super::grammar::{Directive, GrammarError, Place};
use super::location::regex;
use super::map::Maps;
use super::proxy::{Part, Template, compile_value, template};
use super::server::{Return, ret};

/// What an `if` tests.
#[derive(Clone, Debug)]
pub enum Condition {
    /// `($var)`: not empty and not `0`.
    Set(Template),
    /// `($var = text)`, `!=` when `negated`.
    Equal {
        var: Template,
        text: Template,
        negated: bool,
    },
    /// `($var ~ regex)` (`~*`, `!~`, `!~*`).
    Matches {
        var: Template,
        regex: Arc<Regex>,
        negated: bool,
    },
    /// `(-f path)` (`-d`, `-e`, `-x`, and `!-f`..).
    File {
        path: Template,
        test: FileTest,
        negated: bool,
    },
}

/// What a file test asks of the path, as nginx answers it: the file opened for reading
/// (non-blocking, so a FIFO does not hang) and its status read, following links. A path
/// that cannot be opened is none of these (a reason other than "no such file" is logged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileTest {
    /// `-f`: a regular file.
    Plain,
    /// `-d`: a directory.
    Dir,
    /// `-e`: a regular file or a directory.
    Exists,
    /// `-x`: its owner may execute it.
    Exec,
}

impl FileTest {
    /// Whether `path` passes the test.
    pub fn holds(self, path: &str) -> bool {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let meta = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(path)
            .and_then(|f| f.metadata());
        let meta = match meta {
            Ok(m) => m,
            Err(e) => {
                let quiet = e.kind() == std::io::ErrorKind::NotFound
                    || matches!(
                        e.raw_os_error(),
                        Some(nix::libc::ENOTDIR | nix::libc::ENAMETOOLONG)
                    );
                if !quiet {
                    tracing::error!("open() \"{path}\" failed ({e})");
                }
                return false;
            }
        };
        match self {
            FileTest::Plain => meta.is_file(),
            FileTest::Dir => meta.is_dir(),
            FileTest::Exists => meta.is_file() || meta.is_dir(),
            FileTest::Exec => meta.permissions().mode() & 0o100 != 0,
        }
    }
}

/// An `if` block: its condition, and the `return` it answers with (none: an empty block).
#[derive(Clone, Debug)]
pub struct If {
    pub condition: Condition,
    pub ret: Option<Return>,
    pub place: Place,
}

impl If {
    /// The values it reads of a request.
    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        let (var, text) = match &self.condition {
            Condition::Set(var)
            | Condition::Matches { var, .. }
            | Condition::File { path: var, .. } => (var, None),
            Condition::Equal { var, text, .. } => (var, Some(text)),
        };
        let ret = self.ret.as_ref().and_then(|r| r.template.as_ref());
        std::iter::once(var).chain(text).chain(ret)
    }
}

/// Reads a `rewrite REGEX REPLACEMENT [FLAG]` that redirects (`redirect`, `permanent`, or
/// a replacement starting with `http://`, `https://` or `$scheme`) as the `if` it
/// amounts to: `$uri` against REGEX, then `return 302` (301 for `permanent`) of the
/// replacement with the regex's captures, the request's arguments added as nginx adds
/// them (after `?`, or `&` when the replacement has one; none when it ends in `?`). An
/// internal rewrite (`last`, `break`, no flag) is refused at the line.
pub fn rewrite(d: &Directive, maps: &Maps) -> Result<If, GrammarError> {
    let (pattern, replacement, flag) = match d.args.as_slice() {
        [p, r] => (p, r, None),
        [p, r, f] => (p, r, Some(f.as_str())),
        _ => return Err(d.error("invalid number of arguments in \"rewrite\" directive")),
    };
    let url = ["http://", "https://", "$scheme"]
        .iter()
        .any(|s| replacement.starts_with(s));
    let code = match flag {
        Some("permanent") => 301,
        Some("redirect") => 302,
        Some("last" | "break") | None if url => 302,
        Some("last" | "break") | None => {
            return Err(d.error(
                "an internal \"rewrite\" (last, break, or no flag) is not supported: \
                 gluu-lb routes by the URI as sent; redirect (\"redirect\", \"permanent\") \
                 or give proxy_pass the URI",
            ));
        }
        Some(other) => return Err(d.error(format!("invalid parameter \"{other}\""))),
    };
    let re = Arc::new(regex(&d.place, pattern, false)?);
    let (text, args) = match replacement.strip_suffix('?') {
        Some(text) => (text, None),
        None => (
            replacement.as_str(),
            Some(if replacement.contains('?') { '&' } else { '?' }),
        ),
    };
    let mut target = compile_value(&d.place, text, maps, Some(&re))?;
    target.extend(args.map(Part::Args));
    Ok(If {
        condition: Condition::Matches {
            var: vec![Part::Var("uri")],
            regex: re,
            negated: false,
        },
        ret: Some(Return {
            code,
            target: Some(replacement.clone()),
            template: Some(target),
            escape_captures: true,
            place: d.place.clone(),
        }),
        place: d.place.clone(),
    })
}

/// Reads an `if` block, with nginx's words for a malformed condition.
pub fn if_block(d: &Directive, maps: &Maps) -> Result<If, GrammarError> {
    let invalid = || {
        d.error(format!(
            "invalid condition \"{}\"",
            d.args.first().map_or("", String::as_str)
        ))
    };
    let Some(body) = &d.block else {
        return Err(d.error("directive \"if\" has no opening \"{\""));
    };
    // `(` and `)` are the first word's first and the last word's last character, or
    // words of their own.
    let mut words: Vec<&str> = d.args.iter().map(String::as_str).collect();
    let first = words
        .first_mut()
        .and_then(|w| w.strip_prefix('('))
        .ok_or_else(invalid)?;
    if first.is_empty() {
        words.remove(0);
    } else {
        words[0] = first;
    }
    let last = words
        .last_mut()
        .and_then(|w| w.strip_suffix(')'))
        .ok_or_else(invalid)?;
    if last.is_empty() {
        words.pop();
    } else if let Some(w) = words.last_mut() {
        *w = last;
    }
    let var = |w: &str| {
        if w.len() < 2 || !w.starts_with('$') {
            return Err(d.error(format!("invalid variable name \"{w}\"")));
        }
        template(&d.place, w, maps)
    };
    let (condition, re) = match words.as_slice() {
        [v] => (Condition::Set(var(v)?), None),
        [v, op @ ("=" | "!="), text] => (
            Condition::Equal {
                var: var(v)?,
                text: template(&d.place, text, maps)?,
                negated: *op == "!=",
            },
            None,
        ),
        [v, op @ ("~" | "~*" | "!~" | "!~*"), pattern] => {
            let re = Arc::new(regex(&d.place, pattern, op.ends_with('*'))?);
            let negated = op.starts_with('!');
            let condition = Condition::Matches {
                var: var(v)?,
                regex: re.clone(),
                negated,
            };
            // A negated match has no captures to give.
            (condition, (!negated).then_some(re))
        }
        [op, path] if matches!(op.strip_prefix('!').unwrap_or(op).as_bytes(), [b'-', _]) => {
            let negated = op.starts_with('!');
            let test = match &op[op.len() - 1..] {
                "f" => FileTest::Plain,
                "d" => FileTest::Dir,
                "e" => FileTest::Exists,
                "x" => FileTest::Exec,
                _ => return Err(d.error(format!("invalid condition \"{op}\""))),
            };
            let path = template(&d.place, path, maps)?;
            (
                Condition::File {
                    path,
                    test,
                    negated,
                },
                None,
            )
        }
        [_, op, _] => return Err(d.error(format!("unexpected \"{op}\" in condition"))),
        _ => return Err(invalid()),
    };
    let mut returned = None;
    for inner in body {
        if inner.name != "return" {
            return Err(inner.error(format!(
                "\"{}\" inside \"if\" is not supported: gluu-lb runs only \"return\" there \
                 (nginx's \"if is evil\" for the rest)",
                inner.name
            )));
        }
        returned = Some(ret(inner, maps, re.as_deref())?);
    }
    Ok(If {
        condition,
        ret: returned,
        place: d.place.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<If, GrammarError> {
        if_block(&Directive::parse_text(text)?[0], &Maps::default())
    }

    #[test]
    fn conditions_read_as_nginx_reads_them() {
        let forms = [
            "if ($host) { }",
            "if ( $host ) { return 403; }",
            "if ($host = a) { }",
            "if ($host != \"a b\") { }",
            "if ($host ~ \"^(a b)$\") { return 301 https://$1; }",
            "if ($host !~* ^a) { }",
            "if (-f /var/www/maintenance.on) { return 503; }",
            "if (!-d $http_x_dir) { }",
            "if ( -e /a ) { }",
            "if (!-x \"/a b\") { }",
        ];
        for f in forms {
            assert!(read(f).is_ok(), "{f}: {:?}", read(f));
        }
        let i = read("if ($host ~ ^(?<sub>.+)\\.example$) { return 301 https://$sub$1; }")
            .expect("valid");
        let template = i.ret.and_then(|r| r.template).expect("a URL");
        assert!(template.contains(&crate::config::proxy::Part::Capture(1)));
        for (text, said) in [
            ("if $host { }", "invalid condition \"$host\""),
            ("if (a = b) { }", "invalid variable name \"a\""),
            ("if ($host == b) { }", "unexpected \"==\" in condition"),
            ("if ($host = a b) { }", "invalid condition"),
            ("if (-z $uri) { }", "invalid condition \"-z\""),
            ("if (!-q /a) { }", "invalid condition \"!-q\""),
            (
                "if ($host !~ (x)) { return 301 $1; }",
                "\"$1\" is a regex capture",
            ),
            ("if ($host);", "has no opening"),
            (
                "if ($host) { add_header X y; }",
                "runs only \"return\" there",
            ),
        ] {
            let e = read(text).expect_err(text);
            assert!(e.to_string().contains(said), "{text}: {e}");
        }
    }

    #[test]
    fn redirecting_rewrites_are_ifs_of_the_uri() {
        let read = |text: &str| rewrite(&Directive::parse_text(text)?[0], &Maps::default());
        for (text, code, args) in [
            ("rewrite ^/a(.*) /b$1 permanent;", 301, Some('?')),
            ("rewrite ^/a /b?x=1 redirect;", 302, Some('&')),
            ("rewrite ^/a /b? redirect;", 302, None),
            ("rewrite ^/a https://b/ last;", 302, Some('?')),
            ("rewrite ^/a $scheme://b/;", 302, Some('?')),
        ] {
            let i = read(text).expect(text);
            let ret = i.ret.expect("a return");
            let template = ret.template.expect("a URL");
            assert_eq!(ret.code, code, "{text}");
            let added = template.last().and_then(|p| match p {
                Part::Args(c) => Some(*c),
                _ => None,
            });
            assert_eq!(added, args, "{text}");
        }
        for (text, said) in [
            ("rewrite ^/a;", "invalid number of arguments"),
            ("rewrite ^/a /b c d;", "invalid number of arguments"),
            ("rewrite ^/a /b foo;", "invalid parameter \"foo\""),
            ("rewrite ^/a /b last;", "an internal \"rewrite\""),
            ("rewrite ^/a /b;", "an internal \"rewrite\""),
            ("rewrite (a /b redirect;", "cannot be used"),
        ] {
            let e = read(text).expect_err(text);
            assert!(e.to_string().contains(said), "{text}: {e}");
        }
    }
}
