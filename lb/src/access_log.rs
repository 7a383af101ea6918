//! `access_log PATH [FORMAT]`: by default nginx's combined format with two fields added at
//! the end, `$upstream_addr` (every node tried, comma-separated, as nginx writes it) and
//! `$upstream_response_time` (each try's seconds, to the end of the answer it relayed); or
//! a `log_format`'s
//! text and variables, escaped as nginx escapes them. Times are UTC (`+0000`). A line is
//! written when the response body has gone out, so `$body_bytes_sent` is what the client
//! got. SIGUSR1 reopens the files (logrotate).
//!
//! On a worker thread, lines wait in the thread's buffer until the worker runs out of ready
//! work (its runtime's park hook calls [`flush`]) or [`FLUSH_AT`] bytes gathered: one
//! write(2) per pass of the event loop instead of one per request, and never later than
//! the pass that completed the request (nginx writes every line at once unless told
//! `buffer=`; a line per write cost 6% of the requests per second, measured).

use std::cell::RefCell;
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use gluu_common::logging::LogFile;
use hyper::header::HeaderName;

use crate::client_cert::CertVar;
use crate::config::log_format::{Escape, LogFormat, Piece, Var};
use crate::workers;

/// An `access_log` line made ready: its file, its format (`None`: combined) and its `if=`
/// condition.
#[derive(Clone, Debug)]
pub struct AccessLog {
    pub file: LogFile,
    pub format: Option<Arc<LogFormat>>,
    pub condition: Option<Arc<LogFormat>>,
}

impl AccessLog {
    /// The formats whose variables a request's [`More`] keeps.
    pub fn formats(&self) -> impl Iterator<Item = &LogFormat> {
        self.format.iter().chain(&self.condition).map(|f| &**f)
    }
}

/// What a `log_format` may ask of a request beyond the combined line's fields, taken only
/// for such formats.
#[derive(Debug, Default)]
pub struct More {
    /// 0 when the client's address came from a proxy's header without one (`$remote_port`
    /// is then empty, as in nginx).
    pub remote_port: u16,
    /// The connection's own peer when `set_real_ip_from` put the proxy's word in its
    /// place (`$realip_remote_addr`, `$realip_remote_port`).
    pub realip_remote: Option<std::net::SocketAddr>,
    pub method: String,
    pub request_uri: String,
    /// nginx's `$uri`: the path, normalized.
    pub uri: String,
    pub protocol: String,
    pub scheme: &'static str,
    pub host: String,
    pub server_name: String,
    /// The `$http_NAME` headers the formats name, each once, with the request's values.
    pub headers: Vec<(HeaderName, Option<String>)>,
    /// `$ssl_protocol`, `$ssl_cipher` (empty without TLS) and the client's SNI name.
    pub tls: (&'static str, &'static str),
    pub sni: Option<String>,
    /// The `$ssl_client_*` variables the formats name, each once, with their values.
    pub certs: Vec<(CertVar, String)>,
    /// The address the request came in on.
    pub server_addr: Option<std::net::SocketAddr>,
    /// The connection's requests so far, this one included.
    pub connection_requests: u64,
    /// Each node tried, its status (`None`: none came; a failed try is 502 or 504, as nginx
    /// counts it), parallel to `Entry::upstream_addrs`.
    pub upstream_statuses: Vec<Option<u16>>,
    /// `$request_id`, when a format or a value has it.
    pub request_id: Option<String>,
}

/// Bytes a worker gathers before it writes even in the middle of a pass.
pub const FLUSH_AT: usize = 32 * 1024;

/// What is known about a request when its response starts; the byte count comes at the end.
#[derive(Debug)]
pub struct Entry {
    /// The `access_log` lines in force: a line goes to each, in its format.
    pub logs: Arc<[AccessLog]>,
    /// Set when one of them has a `log_format`.
    pub more: Option<Box<More>>,
    pub remote: IpAddr,
    pub start: SystemTime,
    pub request_line: String,
    pub status: u16,
    pub referer: Option<String>,
    pub user_agent: Option<String>,
    /// `$remote_user` ([`remote_user`]).
    pub remote_user: Option<String>,
    pub upstream_addrs: Vec<String>,
    /// Each node tried, parallel to `upstream_addrs`.
    pub upstream_times: Vec<Timing>,
}

/// How long a try of a node took, nginx's `$upstream_connect_time`, `$upstream_header_time`
/// and `$upstream_response_time` (`-` where there is none).
#[derive(Debug)]
pub struct Timing {
    pub start: Instant,
    /// To the connection (TCP and TLS); zero on a pooled one; `None`: none was made.
    pub connect: Option<Duration>,
    /// To the response head; `None`: none came.
    pub header: Option<Duration>,
    /// To the try's end (a failure, a response given up for the next node); `None` while
    /// its response is relayed: it ends with the line, written when that response has.
    pub end: Option<Duration>,
}

impl Timing {
    pub fn new() -> Timing {
        Timing {
            start: Instant::now(),
            connect: None,
            header: None,
            end: None,
        }
    }

    /// The try ends now, if it has not yet.
    pub fn ended(&mut self) {
        self.end.get_or_insert_with(|| self.start.elapsed());
    }
}

impl Default for Timing {
    fn default() -> Timing {
        Timing::new()
    }
}

/// Each try's `time` as nginx writes it (seconds with milliseconds, cut, not rounded; `-`
/// for none), comma-separated; `false` when there was no try.
fn push_times(
    out: &mut String,
    tries: &[Timing],
    time: impl Fn(&Timing) -> Option<Duration>,
) -> bool {
    for (i, t) in tries.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        match time(t) {
            Some(d) => push_seconds(out, d),
            None => out.push('-'),
        }
    }
    !tries.is_empty()
}

/// `d` as nginx writes a time (and `$msec`): seconds with milliseconds, cut, not rounded.
fn push_seconds(out: &mut String, d: Duration) {
    let _ = write!(out, "{}.{:03}", d.as_secs(), d.subsec_millis());
}

/// A try's time in all.
fn response_time(t: &Timing) -> Option<Duration> {
    Some(t.end.unwrap_or_else(|| t.start.elapsed()))
}

/// nginx's `$remote_user`: the name of an `Authorization: Basic` header, whatever the
/// location asks of it (an OAuth client authenticating with `client_secret_basic` is
/// logged by its client id), read as [`crate::auth::credentials`] reads it. A name that
/// is not UTF-8 is logged with U+FFFD in place of its stray bytes.
pub fn remote_user(headers: &hyper::HeaderMap) -> Option<String> {
    crate::auth::credentials(headers).map(|c| String::from_utf8_lossy(c.user()).into_owned())
}

/// nginx's `$time_local` layout (`24/Nov/2026:10:00:00 +0000`), from the HTTP date.
fn time_local(t: SystemTime) -> String {
    let http = httpdate::fmt_http_date(t); // "Tue, 24 Nov 2026 10:00:00 GMT"
    let parts: Vec<&str> = http.split(' ').collect();
    match parts.as_slice() {
        [_, day, month, year, clock, _] => format!("{day}/{month}/{year}:{clock} +0000"),
        _ => http,
    }
}

thread_local! {
    /// The last second formatted on this thread (nginx caches its time strings too).
    static LAST: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    /// This worker's lines not yet written, per file.
    static PENDING: RefCell<Vec<(LogFile, String)>> = const { RefCell::new(Vec::new()) };
}

fn write_out(log: &LogFile, text: &str) {
    match log.append(text.as_bytes()) {
        Some(t) if t.failing => tracing::error!("access log {}", t.text),
        Some(t) => tracing::warn!("access log {}", t.text),
        None => {}
    }
}

/// Writes this thread's pending lines. A file that had none since the last call is
/// forgotten, so a file a reload stopped using is not held open.
pub fn flush() {
    PENDING.with_borrow_mut(|pending| {
        pending.retain_mut(|(log, text)| {
            if text.is_empty() {
                return false;
            }
            write_out(log, text);
            text.clear();
            true
        });
    });
}

/// Appends [`time_local`] of `t`, formatting it only when the second changed.
fn push_time_local(out: &mut String, t: SystemTime) {
    let second = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LAST.with_borrow_mut(|(at, text)| {
        if *at != second {
            *text = time_local(t);
            *at = second;
        }
        out.push_str(text);
    });
}

/// nginx's escaping of logged strings: `"`, `\` and bytes outside printable ASCII as `\xHH`.
fn escaped(out: &mut String, v: &str) {
    for b in v.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(char::from(b));
        }
    }
}

/// `escape=json`: a JSON string's content (nginx's `ngx_escape_json`).
fn json_escaped(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// nginx's `$time_iso8601` (`2026-11-24T10:00:00+00:00`), from the HTTP date.
fn time_iso8601(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let http = httpdate::fmt_http_date(t);
    let parts: Vec<&str> = http.split(' ').collect();
    match parts.as_slice() {
        [_, day, month, year, clock, _] => {
            let m = MONTHS.iter().position(|x| x == month).map_or(0, |i| i + 1);
            format!("{year}-{m:02}-{day}T{clock}+00:00")
        }
        _ => http,
    }
}

/// nginx's `$hostname`.
pub fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|n| n.into_string().ok())
            .unwrap_or_default()
    })
}

fn quoted_or_dash(out: &mut String, v: Option<&str>) {
    out.push('"');
    escaped(out, v.unwrap_or("-"));
    out.push('"');
}

impl Entry {
    /// The line for its first log.
    #[cfg(test)]
    fn line(&self, body_bytes_sent: u64) -> String {
        let mut out = String::new();
        self.push_line(&mut out, self.logs[0].format.as_deref(), body_bytes_sent);
        out
    }

    fn push_line(&self, out: &mut String, format: Option<&LogFormat>, body_bytes_sent: u64) {
        match (format, &self.more) {
            (Some(f), Some(more)) => self.push_formatted(out, f, more, body_bytes_sent),
            _ => self.push_combined(out, body_bytes_sent),
        }
    }

    /// A `log_format`'s line: its text, and each variable's value escaped its way.
    fn push_formatted(&self, out: &mut String, f: &LogFormat, more: &More, body_bytes_sent: u64) {
        let mut value = String::new();
        for piece in &f.pieces {
            value.clear();
            let found = match piece {
                Piece::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Piece::Var(v) => self.value(*v, f, more, body_bytes_sent, &mut value),
                Piece::Cookie(_) | Piece::Arg(_) => self.named(piece, more, &mut value),
                // A map's value, even an empty one, is found (nginx logs no `-` for it).
                Piece::Map(_) | Piece::Capture(_) => {
                    let piece = std::slice::from_ref(piece);
                    self.render(piece, f, more, body_bytes_sent, None, &mut value);
                    true
                }
            };
            match (f.escape, found) {
                (Escape::Json, false) => {}
                (_, false) => out.push('-'),
                (Escape::Default, true) => escaped(out, &value),
                (Escape::Json, true) => json_escaped(out, &value),
                (Escape::None, true) => out.push_str(&value),
            }
        }
        out.push('\n');
    }

    /// The text of `pieces` (a variable without a value as nothing), onto `out`;
    /// `captures`: the regex's of the map line whose value they are.
    fn render(
        &self,
        pieces: &[Piece],
        f: &LogFormat,
        more: &More,
        body_bytes_sent: u64,
        captures: Option<&regex::bytes::Captures<'_>>,
        out: &mut String,
    ) {
        for p in pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(v) => {
                    self.value(*v, f, more, body_bytes_sent, out);
                }
                Piece::Cookie(_) | Piece::Arg(_) => {
                    self.named(p, more, out);
                }
                Piece::Map(m) => {
                    let mut source = String::new();
                    self.render(&m.source, f, more, body_bytes_sent, None, &mut source);
                    if let Some((value, captures)) = m.find(&source) {
                        self.render(value, f, more, body_bytes_sent, captures.as_ref(), out);
                    }
                }
                Piece::Capture(i) => {
                    if let Some(c) = captures.and_then(|c| c.get(*i)) {
                        out.push_str(&String::from_utf8_lossy(c.as_bytes()));
                    }
                }
            }
        }
    }

    /// `$cookie_NAME` or `$arg_NAME` onto `out`; `false` when the request has none.
    fn named(&self, piece: &Piece, more: &More, out: &mut String) -> bool {
        let cookie = || {
            more.headers
                .iter()
                .find(|(n, _)| *n == hyper::header::COOKIE)
        };
        let value = match piece {
            Piece::Cookie(name) => cookie()
                .and_then(|(_, line)| line.as_deref())
                .and_then(|line| crate::cookie::request_cookie(line.as_bytes(), name.as_bytes()))
                .map(String::from_utf8_lossy),
            Piece::Arg(name) => crate::uri::arg(&more.request_uri, name).map(Into::into),
            _ => None,
        };
        value.map(|v| out.push_str(&v)).is_some()
    }

    /// Whether `to` takes this request's line: its `if=` condition, if any, is neither
    /// empty nor `0`.
    fn wanted(&self, to: &AccessLog, body_bytes_sent: u64) -> bool {
        let (Some(c), Some(more)) = (&to.condition, &self.more) else {
            return true;
        };
        let mut value = String::new();
        self.render(&c.pieces, c, more, body_bytes_sent, None, &mut value);
        !(value.is_empty() || value == "0")
    }

    /// Puts `var`'s value in `out`; `false` when the request has none (nginx's "not
    /// found", logged as `-`).
    fn value(
        &self,
        var: Var,
        f: &LogFormat,
        more: &More,
        body_bytes_sent: u64,
        out: &mut String,
    ) -> bool {
        let text = |out: &mut String, v: &str| {
            out.push_str(v);
            true
        };
        let port = |out: &mut String, p: u16| {
            if p > 0 {
                out.push_str(&p.to_string());
            }
            true
        };
        match var {
            Var::RemoteAddr => text(out, &self.remote.to_string()),
            Var::RemotePort => port(out, more.remote_port),
            Var::RealipRemoteAddr => {
                let ip = more.realip_remote.map_or(self.remote, |a| a.ip());
                text(out, &ip.to_string())
            }
            Var::RealipRemotePort => port(
                out,
                more.realip_remote.map_or(more.remote_port, |a| a.port()),
            ),
            Var::RemoteUser => match &self.remote_user {
                Some(user) => text(out, user),
                None => false,
            },
            Var::TimeLocal => {
                push_time_local(out, self.start);
                true
            }
            Var::TimeIso8601 => text(out, &time_iso8601(self.start)),
            Var::Msec => {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                push_seconds(out, now);
                true
            }
            Var::Request => text(out, &self.request_line),
            Var::RequestMethod => text(out, &more.method),
            Var::RequestUri => text(out, &more.request_uri),
            Var::Uri => text(out, &more.uri),
            Var::Args => match more.request_uri.split_once('?') {
                Some((_, q)) => text(out, q),
                None => false,
            },
            Var::ServerProtocol => text(out, &more.protocol),
            Var::Scheme => text(out, more.scheme),
            Var::Https => text(out, if more.scheme == "https" { "on" } else { "" }),
            Var::Host => text(out, &more.host),
            Var::ServerName => text(out, &more.server_name),
            Var::Status => text(out, &self.status.to_string()),
            Var::BodyBytesSent => text(out, &body_bytes_sent.to_string()),
            Var::RequestTime => {
                push_seconds(out, self.start.elapsed().unwrap_or_default());
                true
            }
            Var::UpstreamAddr if self.upstream_addrs.is_empty() => false,
            Var::UpstreamAddr => text(out, &self.upstream_addrs.join(", ")),
            Var::UpstreamConnectTime => push_times(out, &self.upstream_times, |t| t.connect),
            Var::UpstreamHeaderTime => push_times(out, &self.upstream_times, |t| t.header),
            Var::UpstreamResponseTime => push_times(out, &self.upstream_times, response_time),
            Var::Pid => text(out, &std::process::id().to_string()),
            Var::Hostname => text(out, hostname()),
            Var::SslProtocol if more.tls.0.is_empty() => false,
            Var::SslProtocol => text(out, more.tls.0),
            Var::SslCipher if more.tls.1.is_empty() => false,
            Var::SslCipher => text(out, more.tls.1),
            Var::SslServerName => match &more.sni {
                Some(n) => text(out, n),
                None => false,
            },
            Var::ServerAddr => match more.server_addr {
                Some(a) => text(out, &a.ip().to_string()),
                None => false,
            },
            Var::ServerPort => match more.server_addr {
                Some(a) => text(out, &a.port().to_string()),
                None => false,
            },
            Var::ConnectionRequests => text(out, &more.connection_requests.to_string()),
            Var::UpstreamStatus if more.upstream_statuses.is_empty() => false,
            Var::UpstreamStatus => {
                let all: Vec<String> = more
                    .upstream_statuses
                    .iter()
                    .map(|s| s.map_or("-".to_owned(), |s| s.to_string()))
                    .collect();
                text(out, &all.join(", "))
            }
            Var::RequestId => match &more.request_id {
                Some(id) => text(out, id),
                None => false,
            },
            Var::Cert(c) => match more.certs.iter().find(|(v, _)| *v == c) {
                Some((_, value)) if !value.is_empty() => text(out, value),
                _ => false,
            },
            Var::Header(i) => {
                let seen = more
                    .headers
                    .iter()
                    .find(|(n, _)| Some(n) == f.headers.get(i));
                match seen.and_then(|(_, v)| v.as_deref()) {
                    Some(v) => text(out, v),
                    None => false,
                }
            }
        }
    }

    fn push_combined(&self, out: &mut String, body_bytes_sent: u64) {
        let _ = write!(out, "{} - ", self.remote);
        escaped(out, self.remote_user.as_deref().unwrap_or("-"));
        out.push_str(" [");
        push_time_local(out, self.start);
        out.push_str("] ");
        quoted_or_dash(out, Some(&self.request_line));
        let _ = write!(out, " {} {body_bytes_sent} ", self.status);
        quoted_or_dash(out, self.referer.as_deref());
        out.push(' ');
        quoted_or_dash(out, self.user_agent.as_deref());
        out.push(' ');
        if self.upstream_addrs.is_empty() {
            out.push('-');
        } else {
            out.push_str(&self.upstream_addrs.join(", "));
        }
        out.push(' ');
        if !push_times(out, &self.upstream_times, response_time) {
            out.push('-');
        }
        out.push('\n');
    }

    /// Writes the line: at once off the workers, else with the worker's pass (module
    /// docs). A failed write is logged, never fatal to the request.
    pub fn write(&self, body_bytes_sent: u64) {
        for log in self.logs.iter() {
            self.write_to(log, body_bytes_sent);
        }
    }

    fn write_to(&self, to: &AccessLog, body_bytes_sent: u64) {
        if !self.wanted(to, body_bytes_sent) {
            return;
        }
        let format = to.format.as_deref();
        if workers::current() == 0 {
            let mut line = String::with_capacity(160);
            self.push_line(&mut line, format, body_bytes_sent);
            write_out(&to.file, &line);
            return;
        }
        PENDING.with_borrow_mut(|pending| {
            let i = match pending.iter().position(|(l, _)| l.same_file(&to.file)) {
                Some(i) => i,
                None => {
                    pending.push((to.file.clone(), String::with_capacity(4096)));
                    pending.len() - 1
                }
            };
            let (log, text) = &mut pending[i];
            self.push_line(text, format, body_bytes_sent);
            if text.len() >= FLUSH_AT {
                write_out(log, text);
                text.clear();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_plus_upstream() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = Entry {
            logs: Arc::new([AccessLog {
                file: LogFile::open(&dir.path().join("a.log")).expect("open"),
                format: None,
                condition: None,
            }]),
            more: None,
            remote: "192.0.2.7".parse().expect("ip"),
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777),
            request_line: "GET /oxauth/x?\"q\" HTTP/1.1".into(),
            status: 200,
            referer: None,
            user_agent: Some("curl/7.88".into()),
            remote_user: None,
            upstream_addrs: vec!["10.0.0.1:443".into(), "10.0.0.2:443".into()],
            upstream_times: vec![
                Timing {
                    end: Some(Duration::from_micros(3999)),
                    ..Timing::new()
                },
                Timing {
                    end: Some(Duration::from_millis(1012)),
                    ..Timing::new()
                },
            ],
        };
        assert_eq!(
            e.line(1234),
            "192.0.2.7 - - [06/Nov/1994:08:49:37 +0000] \"GET /oxauth/x?\\x22q\\x22 HTTP/1.1\" \
             200 1234 \"-\" \"curl/7.88\" 10.0.0.1:443, 10.0.0.2:443 0.003, 1.012\n"
        );
        let next = Entry {
            start: e.start + Duration::from_millis(1500),
            ..e
        };
        assert!(
            next.line(0).contains("[06/Nov/1994:08:49:38 +0000]"),
            "the cached second moves on: {}",
            next.line(0)
        );
        let e = Entry {
            start: next.start - Duration::from_secs(3600),
            ..next
        };
        assert!(e.line(0).contains("[06/Nov/1994:07:49:38 +0000]"));
        let named = Entry {
            remote_user: Some("client \"7\"".into()),
            ..e
        };
        assert!(
            named
                .line(0)
                .starts_with("192.0.2.7 - client \\x227\\x22 [06/Nov/1994:07:49:38 +0000]"),
            "{}",
            named.line(0)
        );
        let e = Entry {
            remote_user: None,
            ..named
        };
        e.write(5);
        let text = std::fs::read_to_string(dir.path().join("a.log")).expect("read");
        assert!(
            text.ends_with(" 0.003, 1.012\n") && text.contains(" 200 5 "),
            "{text}"
        );
    }

    #[test]
    fn remote_user_is_read_as_nginx_reads_it() {
        let user = |value: &str| {
            let mut h = hyper::HeaderMap::new();
            h.insert(hyper::header::AUTHORIZATION, value.parse().expect("value"));
            remote_user(&h)
        };
        for (value, name) in [
            ("Basic dXNlcjpwYXNz", Some("user")),       // user:pass
            ("basic   Zm9vOg==", Some("foo")),          // foo:
            ("BASIC dXNlcjpwYXNz=junk!", Some("user")), // after `=`: ignored
            ("Basic dSJxOng", Some("u\"q")),            // u"q:x, unpadded
            ("Basic dXNlcjpwYXNzZh", Some("user")),     // spare bits not checked
            ("Basic OnBhc3M=", None),                   // :pass
            ("Basic dXNlcg==", None),                   // user
            ("Basic dXNl!jpw", None),
            ("Basic d", None),
            ("Basic ", None),
            ("Basic", None),
            ("Bearer dXNlcjpwYXNz", None),
            ("Basicx dXNlcjpwYXNz", None),
        ] {
            assert_eq!(user(value).as_deref(), name, "{value}");
        }
        assert_eq!(remote_user(&hyper::HeaderMap::new()), None);
    }

    /// A `log_format` line: each variable's value, `-` (or, with `escape=json`, nothing)
    /// for one the request has not, escaped nginx's way.
    #[test]
    fn log_formats_render_their_variables() {
        use crate::config::grammar::Directive;
        let format = |args: &[&str]| {
            let d = Directive::for_test("log_format", args, 1);
            Arc::new(
                crate::config::log_format::log_format(&d, &Default::default()).expect("format"),
            )
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = Entry {
            logs: Arc::new([AccessLog {
                file: LogFile::open(&dir.path().join("a.log")).expect("open"),
                format: None,
                condition: None,
            }]),
            more: Some(Box::new(More {
                remote_port: 40000,
                method: "GET".into(),
                request_uri: "/oxauth/x?a=\"b\"".into(),
                uri: "/oxauth/x".into(),
                protocol: "HTTP/1.1".into(),
                scheme: "https",
                host: "lb.example.org".into(),
                server_name: "lb.example.org".into(),
                headers: vec![
                    (
                        HeaderName::from_static("user-agent"),
                        Some("curl/8 \"x\"\u{1}".into()),
                    ),
                    (HeaderName::from_static("x-nope"), None),
                ],
                ..More::default()
            })),
            remote: "192.0.2.7".parse().expect("ip"),
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777),
            request_line: "GET /oxauth/x?a=\"b\" HTTP/1.1".into(),
            status: 200,
            referer: None,
            user_agent: None,
            remote_user: None,
            upstream_addrs: vec!["10.0.0.1:443".into()],
            upstream_times: Vec::new(),
        };
        e.logs = formatted(
            &e,
            format(&[
                "main",
                "$remote_addr:$remote_port $remote_user [$time_local] $time_iso8601 \"$request\" ",
                "$request_method $request_uri $uri $args $server_protocol $scheme $https $host ",
                "$server_name $status $body_bytes_sent $upstream_addr $upstream_response_time ",
                "\"$http_user_agent\" $http_x_nope",
            ]),
        );
        assert_eq!(
            e.line(1234),
            "192.0.2.7:40000 - [06/Nov/1994:08:49:37 +0000] 1994-11-06T08:49:37+00:00 \
             \"GET /oxauth/x?a=\\x22b\\x22 HTTP/1.1\" GET /oxauth/x?a=\\x22b\\x22 /oxauth/x \
             a=\\x22b\\x22 HTTP/1.1 https on lb.example.org lb.example.org 200 1234 10.0.0.1:443 - \
             \"curl/8 \\x22x\\x22\\x01\" -\n"
        );
        e.logs = formatted(
            &e,
            format(&[
                "j",
                "escape=json",
                "{\"ua\":\"$http_user_agent\",\"nope\":\"$http_x_nope\",\"up\":\"$upstream_response_time\"}",
            ]),
        );
        assert_eq!(
            e.line(0),
            "{\"ua\":\"curl/8 \\\"x\\\"\\u0001\",\"nope\":\"\",\"up\":\"\"}\n"
        );
        e.logs = formatted(
            &e,
            format(&["raw", "escape=none", "$http_user_agent|$http_x_nope"]),
        );
        assert_eq!(e.line(0), "curl/8 \"x\"\u{1}|-\n");
        let timed = format(&["t", "$msec $request_time $pid $hostname"]);
        e.logs = formatted(&e, timed);
        e.start = SystemTime::now() - Duration::from_millis(1500);
        let line = e.line(0);
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields[0].parse::<f64>().is_ok_and(|t| t > 1.7e9), "{line}");
        assert!(
            fields[1]
                .parse::<f64>()
                .is_ok_and(|t| (1.5..60.0).contains(&t)),
            "{line}"
        );
        assert_eq!(fields[2], std::process::id().to_string());
        assert!(!fields[3].is_empty() && fields[3] != "-", "{line}");
    }

    /// `e`'s first log's file, in `format`.
    fn formatted(e: &Entry, format: Arc<LogFormat>) -> Arc<[AccessLog]> {
        Arc::new([AccessLog {
            file: e.logs[0].file.clone(),
            format: Some(format),
            condition: None,
        }])
    }

    fn lines_in(path: &std::path::Path) -> usize {
        std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
    }

    #[tokio::test]
    async fn a_worker_writes_its_lines_when_it_runs_out_of_work() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        let entry = Entry {
            logs: Arc::new([AccessLog {
                file: LogFile::open(&path).expect("open"),
                format: None,
                condition: None,
            }]),
            more: None,
            remote: "192.0.2.7".parse().expect("ip"),
            start: SystemTime::now(),
            request_line: "GET / HTTP/1.1".into(),
            status: 200,
            referer: None,
            user_agent: None,
            remote_user: None,
            upstream_addrs: Vec::new(),
            upstream_times: Vec::new(),
        };
        entry.write(1);
        assert_eq!(
            lines_in(&path),
            1,
            "off the workers a line is written at once"
        );

        let workers = workers::Workers::start(1).expect("workers");
        let tracker = tokio_util::task::TaskTracker::new();
        let (seen_tx, seen) = tokio::sync::oneshot::channel();
        let many = FLUSH_AT / entry.line(2).len() + 1;
        let p = path.clone();
        workers
            .dispatch()
            .spawn_on(0, &tracker, move || async move {
                for _ in 0..3 {
                    entry.write(2);
                }
                let during_pass = lines_in(&p);
                for _ in 0..many {
                    entry.write(2);
                }
                let past_flush_at = lines_in(&p);
                let _ = seen_tx.send((during_pass, past_flush_at));
            });
        let (during_pass, past_flush_at) = seen.await.expect("the task ran");
        assert_eq!(during_pass, 1, "lines wait for the end of the pass");
        assert!(
            past_flush_at > 1 && past_flush_at < 1 + 3 + many,
            "{FLUSH_AT} bytes are written in the pass: {past_flush_at} lines"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while lines_in(&path) < 1 + 3 + many {
            assert!(std::time::Instant::now() < deadline, "the rest never came");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(lines_in(&path), 1 + 3 + many);
        workers.stop().await;
    }
}
