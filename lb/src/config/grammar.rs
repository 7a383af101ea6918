//! nginx's configuration grammar, as `ngx_conf_file.c` reads it: words separated by
//! whitespace, `;` ending a directive, `{ ... }` holding a block, `#` comments, single and
//! double quotes with backslash escapes, `${var}` braces that are not blocks, and
//! `include` (a file or a `*` pattern, relative to the main file's directory) spliced in
//! where it stands. The result is a tree of [`Directive`]s, each knowing its file and line;
//! errors read as `nginx -t` words them, with the place.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use gluu_common::place::Place;

/// A configuration error, printed `MESSAGE in FILE:LINE` as nginx prints them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} in {at}")]
pub struct GrammarError {
    pub at: String,
    pub message: String,
}

impl GrammarError {
    pub fn at(place: &Place, message: impl Into<String>) -> Self {
        Self {
            at: place.to_string(),
            message: message.into(),
        }
    }
}

/// One directive: its name, arguments (quotes removed, escapes applied), and its block if it
/// has one (`Some(vec![])` for `{}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Directive>>,
    pub place: Place,
}

impl Directive {
    /// An error at this directive's place.
    pub fn error(&self, message: impl Into<String>) -> GrammarError {
        GrammarError::at(&self.place, message)
    }

    /// The one argument this directive must have.
    pub fn one_arg(&self) -> Result<&str, GrammarError> {
        match self.args.as_slice() {
            [one] => Ok(one),
            _ => Err(self.error(format!(
                "invalid number of arguments in \"{}\" directive",
                self.name
            ))),
        }
    }

    /// An `on`/`off` flag.
    pub fn on_off(&self) -> Result<bool, GrammarError> {
        match self.one_arg()? {
            "on" => Ok(true),
            "off" => Ok(false),
            v => Err(self.error(format!(
                "invalid value \"{v}\" in \"{}\" directive, it must be \"on\" or \"off\"",
                self.name
            ))),
        }
    }
}

/// `nginx.conf:LINE`, for unit tests.
#[cfg(test)]
pub fn test_place(line: usize) -> Place {
    Place {
        file: Path::new("nginx.conf").into(),
        line,
    }
}

#[cfg(test)]
impl Directive {
    /// `NAME ARGS;` with no block at `nginx.conf:LINE`, for unit tests.
    pub fn for_test(name: &str, args: &[&str], line: usize) -> Directive {
        Directive {
            name: name.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            block: None,
            place: test_place(line),
        }
    }

    /// The directives of `text`, read from a file `nginx.conf` of a scratch directory.
    pub fn parse_text(text: &str) -> Result<Vec<Directive>, GrammarError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, text).expect("write");
        parse_file(&path)
    }
}

/// Directives nginx takes once per block: a second line is `"NAME" directive is duplicate`
/// (nginx's words), never a silent override.
const ONCE: &[&str] = &[
    "worker_processes",
    "worker_shutdown_timeout",
    "pid",
    "user",
    "events",
    "http",
    "worker_connections",
    "metrics",
    "http2",
    "ssl",
    "ssl_handshake_timeout",
    "client_header_timeout",
    "client_body_timeout",
    "send_timeout",
    "large_client_header_buffers",
    "client_max_body_size",
    "keepalive",
    "keepalive_requests",
    "keepalive_time",
    "keepalive_timeout",
    "http2_max_concurrent_streams",
    "ssl_early_data",
    "ssl_reject_handshake",
    "proxy_socket_keepalive",
    "lingering_close",
    "lingering_time",
    "lingering_timeout",
    "absolute_redirect",
    "reset_timedout_connection",
    "port_in_redirect",
    "server_name_in_redirect",
    "proxy_intercept_errors",
    "root",
    "alias",
    "internal",
    "limit_except",
    "proxy_pass",
    "proxy_redirect",
    "proxy_connect_timeout",
    "proxy_read_timeout",
    "proxy_send_timeout",
    "proxy_next_upstream_tries",
    "proxy_next_upstream_timeout",
    "proxy_ssl_verify",
    "proxy_ssl_name",
    "proxy_ssl_server_name",
    "proxy_ssl_trusted_certificate",
    "proxy_ssl_verify_depth",
    "proxy_ssl_crl",
    "proxy_ssl_certificate",
    "proxy_ssl_certificate_key",
    "proxy_ssl_ciphers",
    "proxy_ssl_session_reuse",
    "proxy_http_version",
    "proxy_buffering",
    "auth_basic",
    "auth_basic_user_file",
    "satisfy",
    "proxy_buffer_size",
    "ssl_ciphers",
    "ssl_prefer_server_ciphers",
    "ssl_session_tickets",
    "ssl_session_timeout",
    "ssl_ecdh_curve",
    "limit_req_status",
    "limit_conn_status",
    "limit_conn_log_level",
    "limit_conn_dry_run",
    "sendfile",
    "keepalive_disable",
    "log_not_found",
    "charset",
    "override_charset",
    "merge_slashes",
    "expires",
    "tcp_nopush",
    "tcp_nodelay",
    "server_tokens",
    "gzip",
    "gzip_vary",
    "gzip_comp_level",
    "gzip_min_length",
    "gzip_http_version",
    "gzip_buffers",
    "real_ip_header",
    "ignore_invalid_headers",
    "proxy_request_buffering",
    "proxy_ignore_client_abort",
    "client_body_buffer_size",
    "client_header_buffer_size",
    "ssl_buffer_size",
    "proxy_headers_hash_max_size",
    "proxy_headers_hash_bucket_size",
    "variables_hash_max_size",
    "variables_hash_bucket_size",
    "underscores_in_headers",
    "real_ip_recursive",
    "default_type",
    "types_hash_max_size",
    "types_hash_bucket_size",
    "map_hash_max_size",
    "map_hash_bucket_size",
    "server_names_hash_max_size",
    "server_names_hash_bucket_size",
    "limit_req_log_level",
    "limit_req_dry_run",
    "ssl_dhparam",
    "ssl_stapling",
    "ssl_stapling_verify",
    "ssl_trusted_certificate",
    "ssl_verify_client",
    "ssl_client_certificate",
    "ssl_verify_depth",
    "ssl_crl",
    "resolver",
    "resolver_timeout",
];

/// Directives nginx allows several of in a block (one more log or certificate, flags added
/// up, the first `return` winning) where gluu-lb takes one: a second line is an error
/// rather than a configuration that means something else here.
const ONE_HERE: &[&str] = &[
    "error_log",
    "ssl_protocols",
    "proxy_ssl_protocols",
    "ssl_session_cache",
    "proxy_next_upstream",
    "health_check",
    "return",
];

/// Checks every block of the tree for a second line of a directive taken once.
/// Directives whose `off` stands alone in a block: beside another line of its kind, the
/// later one is nginx's `"NAME" directive is duplicate`.
const OFF_ALONE: &[&str] = &[
    "proxy_cookie_domain",
    "proxy_cookie_path",
    "proxy_cookie_flags",
];

fn check_once(block: &[Directive]) -> Result<(), GrammarError> {
    let off = |d: &Directive| d.args.len() == 1 && d.args[0] == "off";
    for (i, d) in block.iter().enumerate() {
        let name = d.name.as_str();
        if OFF_ALONE.contains(&name)
            && block[..i]
                .iter()
                .any(|p| p.name == d.name && (off(p) || off(d)))
        {
            return Err(d.error(format!("\"{name}\" directive is duplicate")));
        }
        if (ONCE.contains(&name) || ONE_HERE.contains(&name))
            && let Some(first) = block[..i].iter().find(|p| p.name == d.name)
        {
            let mut message = format!("\"{name}\" directive is duplicate");
            if ONE_HERE.contains(&name) {
                message += &format!(
                    " (first at {}; nginx takes several, gluu-lb one per block)",
                    first.place
                );
            }
            return Err(d.error(message));
        }
        // A `map`'s lines are keys and values, not directives.
        if let Some(inner) = d.block.as_ref().filter(|_| d.name != "map") {
            check_once(inner)?;
        }
    }
    Ok(())
}

/// How deep `include` may nest before it is called a loop.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Reads `path` and its includes into a directive tree, in which no block has a second
/// line of a directive taken once.
pub fn parse_file(path: &Path) -> Result<Vec<Directive>, GrammarError> {
    parse_file_and_sources(path).map(|(top, _)| top)
}

/// A file the configuration was read from, as read (what `-T` prints).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub path: PathBuf,
    pub text: Arc<[u8]>,
}

/// [`parse_file`], and every file it read: `path` first, then each included file in the
/// order read (what a reload reads again).
pub fn parse_file_and_sources(path: &Path) -> Result<(Vec<Directive>, Vec<Source>), GrammarError> {
    let root = path.parent().unwrap_or(Path::new(".")).to_owned();
    let parser = Parser {
        root,
        read: RefCell::default(),
    };
    let top = parser.file(path, 0)?;
    check_once(&top)?;
    Ok((top, parser.read.into_inner()))
}

struct Parser {
    /// Relative `include` paths are taken from here (nginx: the configuration prefix).
    root: PathBuf,
    /// The files read so far.
    read: RefCell<Vec<Source>>,
}

/// What ended a token.
#[derive(Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
    Eof,
}

struct Lexer<'a> {
    text: &'a [u8],
    pos: usize,
    line: usize,
    file: Arc<Path>,
}

impl Lexer<'_> {
    fn place(&self) -> Place {
        Place {
            file: self.file.clone(),
            line: self.line,
        }
    }

    fn bump(&mut self) -> Option<u8> {
        let c = *self.text.get(self.pos)?;
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    /// The next token and the line it starts on.
    fn next(&mut self) -> Result<(Token, Place), GrammarError> {
        loop {
            match self.peek() {
                None => return Ok((Token::Eof, self.place())),
                Some(c) if c.is_ascii_whitespace() => {
                    self.bump();
                }
                Some(b'#') => {
                    while let Some(c) = self.bump() {
                        if c == b'\n' {
                            break;
                        }
                    }
                }
                Some(_) => break,
            }
        }
        let place = self.place();
        let token = match self.peek() {
            Some(b';') => {
                self.bump();
                Token::Semicolon
            }
            Some(b'{') => {
                self.bump();
                Token::Open
            }
            Some(b'}') => {
                self.bump();
                Token::Close
            }
            Some(q @ (b'"' | b'\'')) => {
                self.bump();
                let word = self.quoted(q, &place)?;
                match self.peek() {
                    // `)`: nginx's `if ($a = "b")`, the `)` a word of its own.
                    None | Some(b';' | b'{' | b'}' | b')') => {}
                    Some(c) if c.is_ascii_whitespace() => {}
                    Some(c) => {
                        return Err(GrammarError::at(
                            &self.place(),
                            format!("unexpected \"{}\"", c as char),
                        ));
                    }
                }
                Token::Word(word)
            }
            Some(_) => Token::Word(self.bare()),
            None => Token::Eof,
        };
        Ok((token, place))
    }

    fn quoted(&mut self, quote: u8, start: &Place) -> Result<String, GrammarError> {
        let mut out = Vec::new();
        loop {
            match self.bump() {
                None => {
                    return Err(GrammarError::at(
                        start,
                        "unexpected end of file, expecting closing quote",
                    ));
                }
                Some(b'\\') => {
                    if let Some(c) = self.bump() {
                        unescape(c, &mut out);
                    }
                }
                Some(c) if c == quote => break,
                Some(c) => out.push(c),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn bare(&mut self) -> String {
        let mut out = Vec::new();
        let mut in_var_braces = false;
        while let Some(c) = self.peek() {
            match c {
                b'\\' => {
                    self.bump();
                    if let Some(n) = self.bump() {
                        unescape(n, &mut out);
                    }
                    continue;
                }
                b'{' if out.last() == Some(&b'$') => in_var_braces = true,
                b'}' if in_var_braces => in_var_braces = false,
                b';' | b'{' | b'}' => break,
                c if c.is_ascii_whitespace() => break,
                _ => {}
            }
            out.push(c);
            self.bump();
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// nginx's escapes after a backslash: quotes and backslash stand for themselves, `t` `r`
/// `n` are control characters, anything else keeps its backslash (regexes need `\w`).
fn unescape(c: u8, out: &mut Vec<u8>) {
    match c {
        b'"' | b'\'' | b'\\' => out.push(c),
        b't' => out.push(b'\t'),
        b'r' => out.push(b'\r'),
        b'n' => out.push(b'\n'),
        _ => out.extend_from_slice(&[b'\\', c]),
    }
}

impl Parser {
    fn file(&self, path: &Path, depth: usize) -> Result<Vec<Directive>, GrammarError> {
        let text = std::fs::read(path).map_err(|e| GrammarError {
            at: path.display().to_string(),
            message: format!("open() \"{}\" failed ({e})", path.display()),
        })?;
        let text: Arc<[u8]> = text.into();
        self.read.borrow_mut().push(Source {
            path: path.to_owned(),
            text: text.clone(),
        });
        let mut lexer = Lexer {
            text: &text,
            pos: 0,
            line: 1,
            file: Arc::from(path),
        };
        self.block(&mut lexer, depth, None)
    }

    /// Directives until `}` (when `opened` is the place of its `{`) or end of file.
    fn block(
        &self,
        lexer: &mut Lexer<'_>,
        depth: usize,
        opened: Option<&Place>,
    ) -> Result<Vec<Directive>, GrammarError> {
        let mut out = Vec::new();
        loop {
            let (token, place) = lexer.next()?;
            let name = match token {
                Token::Word(w) => w,
                Token::Eof => {
                    return match opened {
                        None => Ok(out),
                        Some(_) => Err(GrammarError::at(
                            &place,
                            "unexpected end of file, expecting \"}\"",
                        )),
                    };
                }
                Token::Close if opened.is_some() => return Ok(out),
                Token::Close => return Err(GrammarError::at(&place, "unexpected \"}\"")),
                Token::Semicolon => return Err(GrammarError::at(&place, "unexpected \";\"")),
                Token::Open => return Err(GrammarError::at(&place, "unexpected \"{\"")),
            };
            let mut args = Vec::new();
            let block = loop {
                let (token, at) = lexer.next()?;
                match token {
                    Token::Word(w) => args.push(w),
                    Token::Semicolon => break None,
                    Token::Open => break Some(self.block(lexer, depth, Some(&at))?),
                    Token::Close | Token::Eof => {
                        return Err(GrammarError::at(
                            &at,
                            if token == Token::Eof {
                                "unexpected end of file, expecting \";\" or \"}\""
                            } else {
                                "unexpected \"}\""
                            },
                        ));
                    }
                }
            };
            if name == "include" && block.is_none() {
                out.extend(self.include(&place, &args, depth)?);
                continue;
            }
            out.push(Directive {
                name,
                args,
                block,
                place,
            });
        }
    }

    fn include(
        &self,
        place: &Place,
        args: &[String],
        depth: usize,
    ) -> Result<Vec<Directive>, GrammarError> {
        let [pattern] = args else {
            return Err(GrammarError::at(
                place,
                "invalid number of arguments in \"include\" directive",
            ));
        };
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(GrammarError::at(
                place,
                format!("\"include\" nested deeper than {MAX_INCLUDE_DEPTH} levels (a loop?)"),
            ));
        }
        let full = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            self.root.join(pattern)
        };
        let files = expand(&full).map_err(|e| GrammarError::at(place, e))?;
        let mut out = Vec::new();
        for f in files {
            out.extend(self.file(&f, depth + 1)?);
        }
        Ok(out)
    }
}

/// A path whose last component may hold `*` wildcards, expanded in name order, as nginx
/// does with glob(3). A pattern matching nothing is fine; a plain path must exist.
fn expand(path: &Path) -> Result<Vec<PathBuf>, String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if !name.contains('*') {
        return if path.exists() {
            Ok(vec![path.to_owned()])
        } else {
            Err(format!(
                "open() \"{}\" failed (No such file or directory)",
                path.display()
            ))
        };
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let parts: Vec<&str> = name.split('*').collect();
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter(|e| e.file_name().to_str().is_some_and(|n| wildcard(&parts, n)))
        .map(|e| e.path())
        .collect();
    found.sort();
    Ok(found)
}

/// Whether `name` matches the pattern split at its `*`s.
fn wildcard(parts: &[&str], name: &str) -> bool {
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Directive>, GrammarError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, text).expect("write");
        parse_file(&path)
    }

    fn names(ds: &[Directive]) -> Vec<&str> {
        ds.iter().map(|d| d.name.as_str()).collect()
    }

    #[test]
    fn blocks_args_lines_and_comments() {
        let ds = parse("events {\n  worker_connections 6500; # comment\n}\nhttp {\n upstream b { ip_hash; server 10.0.0.1:443 max_fails=2; }\n}\n")
            .expect("valid");
        assert_eq!(names(&ds), ["events", "http"]);
        let events = ds[0].block.as_ref().expect("block");
        assert_eq!(events[0].args, ["6500"]);
        assert_eq!(events[0].place.line, 2);
        let upstream = &ds[1].block.as_ref().expect("http")[0];
        assert_eq!(upstream.args, ["b"]);
        assert_eq!(upstream.place.line, 5);
        let inner = upstream.block.as_ref().expect("upstream");
        assert_eq!(names(inner), ["ip_hash", "server"]);
        assert_eq!(inner[1].args, ["10.0.0.1:443", "max_fails=2"]);
    }

    #[test]
    fn quotes_escapes_and_variable_braces() {
        let ds = parse(
            "a \"x y\" 'it s' \"q\\\"t\" b\\;c;\nlocation ~ ^/(\\w+)${x}$ { }\nreturn 301 https://h${request_uri};\n",
        );
        let ds = ds.expect("valid");
        assert_eq!(
            ds[0].args,
            ["x y", "it s", "q\"t", "b\\;c"].map(String::from)
        );
        // `${x}` is a variable, the `{` after it opens the block; `\w` keeps its backslash.
        assert_eq!(ds[1].args, ["~", "^/(\\w+)${x}$"]);
        assert_eq!(ds[1].block, Some(vec![]));
        assert_eq!(ds[2].args, ["301", "https://h${request_uri}"]);
    }

    #[test]
    fn errors_read_like_nginx_t() {
        let cases = [
            ("http {\n", "unexpected end of file, expecting \"}\" in"),
            (
                "a b\n",
                "unexpected end of file, expecting \";\" or \"}\" in",
            ),
            ("}\n", "unexpected \"}\" in"),
            ("a \"x\"y;\n", "unexpected \"y\" in"),
            ("a \"open\n", "expecting closing quote in"),
            ("\n\n;", "unexpected \";\" in"),
            (
                "include a b;\n",
                "invalid number of arguments in \"include\"",
            ),
            ("include missing.conf;\n", "open() \""),
        ];
        for (text, want) in cases {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.contains("nginx.conf:"), "{text:?}: {e}");
        }
        let e = parse("\n\n;").expect_err("semicolon").to_string();
        assert!(e.ends_with("nginx.conf:3"), "{e}");
    }

    #[test]
    fn include_files_and_patterns_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("conf.d")).expect("mkdir");
        std::fs::write(dir.path().join("conf.d/b.conf"), "b;\n").expect("w");
        std::fs::write(dir.path().join("conf.d/a.conf"), "a;\n").expect("w");
        std::fs::write(dir.path().join("conf.d/skip.txt"), "nope;\n").expect("w");
        std::fs::write(dir.path().join("one.conf"), "one;\n").expect("w");
        let main = dir.path().join("nginx.conf");
        std::fs::write(
            &main,
            "first;\nhttp { include conf.d/*.conf; include one.conf; }\nlast;\n",
        )
        .expect("w");
        let (ds, sources) = parse_file_and_sources(&main).expect("valid");
        assert_eq!(names(&ds), ["first", "http", "last"]);
        let http = ds[1].block.as_ref().expect("block");
        assert_eq!(names(http), ["a", "b", "one"]);
        assert!(http[0].place.file.ends_with("a.conf"));
        let read: Vec<_> = ["nginx.conf", "conf.d/a.conf", "conf.d/b.conf", "one.conf"]
            .iter()
            .map(|f| dir.path().join(f))
            .collect();
        let paths: Vec<_> = sources.iter().map(|s| s.path.clone()).collect();
        assert_eq!(paths, read);
        assert_eq!(&*sources[3].text, b"one;\n");
        std::fs::write(dir.path().join("loop.conf"), "include loop.conf;\n").expect("w");
        std::fs::write(&main, "include loop.conf;\n").expect("w");
        let e = parse_file(&main).expect_err("loop").to_string();
        assert!(e.contains("nested deeper"), "{e}");
    }

    #[test]
    fn wildcards() {
        fn p(pat: &str) -> Vec<&str> {
            pat.split('*').collect()
        }
        assert!(wildcard(&p("*.conf"), "a.conf"));
        assert!(!wildcard(&p("*.conf"), "a.conf.bak"));
        assert!(wildcard(&p("a*b*c"), "axxbyyc"));
        assert!(!wildcard(&p("a*b*c"), "ac"));
        assert!(wildcard(&p("*"), "anything"));
    }
}
