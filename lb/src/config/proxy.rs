//! A location's proxy settings, read from its `proxy_*`, `add_header`, `health_check`,
//! `client_max_body_size` and `access_log` directives with nginx's defaults, and header
//! values as templates of nginx variables (only those gluu-lb can fill; any other is
//! nginx's `unknown "name" variable` error).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{self, HeaderName, HeaderValue};
use regex::bytes::Regex;

use super::Scope;
use super::access;
use super::cookie;
use super::grammar::{Directive, GrammarError, Place};
use super::gzip;
use super::limit::{self, ConnSettings, LimitSettings};
use super::map::{self, Map, Maps};
use super::realip;
use super::stock;
use super::tls;
use super::upstream::parse_time;
use super::{Warning, log_format};
use crate::client_cert::CertVar;

/// Variables a value may use, besides `$http_NAME`, `$cookie_NAME`, `$arg_NAME`,
/// `$ssl_client_*` and maps'.
pub const VARIABLES: &[&str] = &[
    "host",
    "request_uri",
    "scheme",
    "server_name",
    "remote_addr",
    "proxy_add_x_forwarded_for",
    "proxy_host",
    "request_method",
    "remote_user",
    "uri",
    "document_uri",
    "args",
    "query_string",
    "is_args",
    "https",
    "ssl_protocol",
    "ssl_cipher",
    "ssl_server_name",
    "hostname",
    "server_protocol",
    "request",
    "server_addr",
    "server_port",
    "remote_port",
    "realip_remote_addr",
    "realip_remote_port",
    "connection_requests",
    "pid",
    "request_id",
];

/// A value with variables: literal text and `$name`/`${name}` parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Var(&'static str),
    /// `$http_NAME`: the client's header NAME as it sent it, `_` read as `-`; several lines
    /// of it joined with `, `.
    Header(HeaderName),
    /// `$ssl_client_*`: the client's certificate on this connection.
    Cert(CertVar),
    /// `$cookie_NAME`, by its name in lowercase: the client's cookie.
    Cookie(String),
    /// `$arg_NAME`, by its name in lowercase: a query parameter, as sent.
    Arg(String),
    /// A `map`'s variable.
    Map(Arc<Map<Template>>),
    /// `$1`..`$9` or a named group: a capture of the regex a map's value belongs to.
    Capture(usize),
    /// The request's arguments after this character, when it has any (what a `rewrite`
    /// adds to its redirect).
    Args(char),
}

impl Part {
    /// Whether `is` holds of this part, or of one in its map.
    pub fn any(&self, is: &impl Fn(&Part) -> bool) -> bool {
        is(self) || matches!(self, Part::Map(m) if m.templates().flatten().any(|p| p.any(is)))
    }

    /// Whether the value reads the client's headers (`$http_NAME`, `$cookie_NAME`,
    /// `$remote_user`).
    pub fn reads_headers(&self) -> bool {
        self.any(&|p| {
            matches!(
                p,
                Part::Header(_) | Part::Cookie(_) | Part::Var("remote_user")
            )
        })
    }

    /// Whether the value has `$request_id`.
    pub fn reads_request_id(&self) -> bool {
        self.any(&|p| *p == Part::Var("request_id"))
    }
}

pub type Template = Vec<Part>;

/// A piece of a value with variables, as nginx's scripts split it.
#[derive(Debug, PartialEq, Eq)]
pub enum Raw<'a> {
    Text(&'a str),
    /// A `$name` or `${name}`, by its name.
    Var(&'a str),
}

/// Splits `v` into text and `$name`/`${name}` variables (not looked up).
pub fn split_variables<'a>(place: &Place, v: &'a str) -> Result<Vec<Raw<'a>>, GrammarError> {
    let mut parts = Vec::new();
    let mut rest = v;
    while let Some(i) = rest.find('$') {
        if i > 0 {
            parts.push(Raw::Text(&rest[..i]));
        }
        let after = &rest[i + 1..];
        // `$1`..`$9`: one digit, a regex's capture; what follows is text.
        let capture = after.starts_with(|c: char| ('1'..='9').contains(&c));
        let (name, consumed) = match after.strip_prefix('{') {
            _ if capture => (&after[..1], 1),
            Some(inner) => {
                let end = inner.find('}').ok_or_else(|| {
                    GrammarError::at(
                        place,
                        format!("the closing bracket in \"{v}\" variable is missing"),
                    )
                })?;
                (&inner[..end], end + 2)
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        if name.is_empty() {
            return Err(GrammarError::at(
                place,
                format!("invalid variable name in \"{v}\""),
            ));
        }
        parts.push(Raw::Var(name));
        rest = &after[consumed..];
    }
    if !rest.is_empty() {
        parts.push(Raw::Text(rest));
    }
    Ok(parts)
}

/// Splits `v` into text and known variables (`map`s' too).
pub fn template(place: &Place, v: &str, maps: &Maps) -> Result<Template, GrammarError> {
    compile_value(place, v, maps, None)
}

/// [`template`] for a header to the node.
fn header_template(place: &Place, v: &str, maps: &Maps) -> Result<Template, GrammarError> {
    let t = template(place, v, maps)?;
    if t.contains(&Part::Cert(CertVar::RawCert)) {
        return Err(GrammarError::at(
            place,
            "\"$ssl_client_raw_cert\" has line breaks, which a header cannot carry: use \
             $ssl_client_cert (one line to the node) or $ssl_client_escaped_cert",
        ));
    }
    Ok(t)
}

/// Whether `$name` (in lowercase) is one of the variables nginx has by itself (a `map`
/// cannot define it).
pub fn builtin_variable(name: &str) -> bool {
    VARIABLES.contains(&name) || log_format::known(name) || CertVar::named(name).is_some()
}

/// Splits `v` into text and known variables, `$1`..`$9` and named groups as captures of
/// `re`.
pub fn compile_value(
    place: &Place,
    v: &str,
    maps: &Maps,
    re: Option<&Regex>,
) -> Result<Template, GrammarError> {
    split_variables(place, v)?
        .into_iter()
        .map(|p| match p {
            Raw::Text(t) => Ok(Part::Text(t.to_owned())),
            Raw::Var(name) => {
                if let Some(i) = map::capture(place, name, re)? {
                    return Ok(Part::Capture(i));
                }
                if let Some(m) = maps.get(name)? {
                    return Ok(Part::Map(m));
                }
                let lower = name.to_ascii_lowercase();
                let header = match lower.as_str() {
                    "content_type" => Some(header::CONTENT_TYPE),
                    "content_length" => Some(header::CONTENT_LENGTH),
                    _ => lower
                        .strip_prefix("http_")
                        .and_then(|h| HeaderName::from_bytes(h.replace('_', "-").as_bytes()).ok()),
                };
                if let Some(h) = header {
                    return Ok(Part::Header(h));
                }
                if let Some(c) = lower.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
                    return Ok(Part::Cookie(c.to_owned()));
                }
                if let Some(a) = lower.strip_prefix("arg_").filter(|a| !a.is_empty()) {
                    return Ok(Part::Arg(a.to_owned()));
                }
                if let Some(c) = CertVar::named(&lower) {
                    return Ok(Part::Cert(c));
                }
                let unknown = || {
                    let message = if log_format::known(&lower) {
                        format!(
                            "\"${name}\" is a variable gluu-lb has in log_format only (the \
                             ones of values are listed in the README)"
                        )
                    } else {
                        format!("unknown \"{name}\" variable")
                    };
                    GrammarError::at(place, message)
                };
                VARIABLES
                    .iter()
                    .find(|k| **k == lower)
                    .map(|k| Part::Var(k))
                    .ok_or_else(unknown)
            }
        })
        .collect()
}

/// nginx's recipe for WebSocket (`proxy_set_header Upgrade $http_upgrade;` and
/// `proxy_set_header Connection "upgrade";`) asks for what gluu-lb does by itself: a
/// client's upgrade goes to the node with its `Upgrade` and `Connection: upgrade`, and
/// only on a request that asks for one (nginx would also send `Connection: upgrade` with
/// every other request of the location).
/// The same holds of the recipe's other form, `proxy_set_header Connection
/// $connection_upgrade;` with its `map` (`close` when no upgrade is asked for: gluu-lb
/// keeps the node connection instead, for the next request).
fn websocket_recipe(name: &HeaderName, value: &str, maps: &Maps) -> bool {
    let mapped = || {
        value
            .strip_prefix('$')
            .and_then(|v| maps.def(v))
            .is_some_and(|m| m.is_websocket_recipe())
    };
    (name == header::UPGRADE && value == "$http_upgrade")
        || (name == header::CONNECTION && (value.eq_ignore_ascii_case("upgrade") || mapped()))
}

impl ProxySettings {
    /// The values with variables of this block's lines, `proxy_ssl_name` aside.
    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        let pages = self.error_pages.iter().filter_map(|p| match &p.target {
            super::pages::Target::Uri(t) | super::pages::Target::Redirect(t) => Some(t),
            super::pages::Target::Named(_) => None,
        });
        (self.set_headers.iter().map(|(_, t)| t))
            .chain(self.add_headers.iter().map(|a| &a.value))
            .chain(pages)
            .chain(self.cookies.templates())
            .chain(&self.auth_basic)
    }
}

/// `proxy_next_upstream`: when a failed attempt moves on to the next server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextUpstream {
    pub error: bool,
    pub timeout: bool,
    pub invalid_header: bool,
    pub http_500: bool,
    pub http_502: bool,
    pub http_503: bool,
    pub http_504: bool,
    /// Also retry POST, LOCK, PATCH once sent (nginx's `non_idempotent`).
    pub non_idempotent: bool,
}

/// NGINX Plus's `health_check`: active checks of every server of the location's upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub uri: String,
    pub interval: Duration,
    pub fails: u32,
    pub passes: u32,
    pub place: Place,
}

/// `access_log PATH [FORMAT]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogLine {
    pub path: PathBuf,
    /// `combined` (nginx's, plus the node's address and time) or a `log_format` name.
    pub format: String,
    /// `if=CONDITION`: no line for a request whose condition is empty or `0`.
    pub condition: Option<Arc<log_format::LogFormat>>,
    pub place: Place,
}

/// `add_header NAME VALUE [always]`: a header put on the responses to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddHeader {
    pub name: HeaderName,
    pub value: Template,
    /// On every response; without it only on those of a [`safe_status`], as nginx has it.
    pub always: bool,
    /// `Last-Modified` and `ETag` replace what the node sent (an empty value removes it);
    /// every other name adds a line beside the node's, as nginx does.
    pub replaces: bool,
}

/// The statuses `add_header` without `always` applies to (nginx's list).
pub fn safe_status(status: u16) -> bool {
    matches!(status, 200 | 201 | 204 | 206 | 301..=304 | 307 | 308)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySettings {
    /// `proxy_redirect off` passes `Location` through unchanged (the guide's setting).
    pub redirect_off: bool,
    /// `proxy_cookie_domain`, `proxy_cookie_path`, `proxy_cookie_flags`.
    pub cookies: cookie::CookieSettings,
    pub next_upstream: NextUpstream,
    /// 0: no limit beyond "each server once".
    pub next_upstream_tries: u32,
    /// `proxy_next_upstream_timeout`: no next node once this long has passed since the
    /// first try began; 0: no limit.
    pub next_upstream_timeout: Duration,
    /// Also bounds the upstream TLS handshake.
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub send_timeout: Duration,
    /// `proxy_set_header`: names parsed once here, not per request.
    pub set_headers: Vec<(HeaderName, Template)>,
    /// `add_header`, in file order.
    pub add_headers: Vec<AddHeader>,
    /// `log_not_found` (on): a file `root` or `alias` lacks is an error log line.
    pub log_not_found: bool,
    /// `merge_slashes` (on; `http` and `server`): `//` in a path is one `/` for locations.
    pub merge_slashes: bool,
    pub ssl_verify: Option<bool>,
    pub ssl_trusted_certificate: Option<PathBuf>,
    /// `proxy_ssl_verify_depth` (1): how many intermediate CA certificates a node's chain
    /// may pass through to a trusted one, under `proxy_ssl_verify on`.
    pub ssl_verify_depth: u32,
    /// `proxy_ssl_crl`: revocation lists for the nodes' chains, with its line.
    pub ssl_crl: Option<(PathBuf, Place)>,
    /// `proxy_ssl_certificate` and `proxy_ssl_certificate_key`: the certificate gluu-lb
    /// shows a node that asks for one (nodes that require client certificates).
    pub ssl_certificate: Option<PathBuf>,
    pub ssl_certificate_key: Option<PathBuf>,
    pub ssl_name: Option<Template>,
    pub ssl_server_name: bool,
    /// `proxy_ssl_protocols`: the versions offered to the nodes; `None`: TLSv1.2 and
    /// TLSv1.3.
    pub ssl_protocols: Option<Vec<String>>,
    /// `proxy_ssl_ciphers`: the TLS 1.2 suites offered to the nodes, in order; `None`: all
    /// of gluu-lb's.
    pub ssl_ciphers: Option<Vec<rustls::CipherSuite>>,
    /// `proxy_ssl_session_reuse` (on): new node connections resume a TLS session.
    pub ssl_session_reuse: bool,
    /// 0: no limit.
    pub client_max_body_size: u64,
    pub health_check: Option<HealthCheck>,
    /// `access_log PATH [FORMAT]` lines, in file order (nginx writes a line to each).
    pub access_logs: Vec<AccessLogLine>,
    /// `access_log off` in the block: none of them, whatever order the lines are in.
    pub access_log_off: bool,
    /// `client_body_timeout`: the longest wait between two reads of a request body.
    pub client_body_timeout: Duration,
    /// `proxy_buffer_size`: the largest response head a node may send (a larger one is a
    /// 502, nginx's "upstream sent too big header"), and what a node connection holds of a
    /// response its client does not read.
    pub buffer_size: usize,
    /// `limit_req` and its companions.
    pub limit: LimitSettings,
    /// `limit_conn` and its companions.
    pub limit_conn: ConnSettings,
    /// `allow` and `deny`, in file order.
    pub access: Vec<access::Rule>,
    /// `proxy_hide_header` and `proxy_pass_header` lines: node response headers hidden
    /// beyond nginx's defaults ([`HIDDEN`]), and defaults let through.
    pub hide_headers: Vec<HeaderName>,
    pub pass_headers: Vec<HeaderName>,
    /// `default_type` (`text/plain`) and `types` (nginx's built-in three unless set): the
    /// `Content-Type` of a `return`'s text.
    pub default_type: String,
    pub types: stock::Types,
    /// `expires` (off).
    pub expires: stock::Expires,
    /// `auth_basic REALM` (`None`: off, the default): with an `auth_basic_user_file`, a
    /// request needs a user and password of the file (see [`crate::auth`]).
    pub auth_basic: Option<Template>,
    /// `auth_basic_user_file`: the htpasswd file, read at each request.
    pub auth_basic_user_file: Option<PathBuf>,
    /// `satisfy any` (`all`, the default: false): an `allow` rule or a password is enough.
    pub satisfy_any: bool,
    /// `charset` with this block's `charset_types` (kept in step with them, so that a
    /// request takes the rule as it is); `None`: `charset off` (the default).
    pub charset: Option<std::sync::Arc<stock::Charset>>,
    /// `charset_types` (nginx's six, and always `text/html`; `*`: any type).
    pub charset_types: std::sync::Arc<Vec<String>>,
    /// `gzip` and its companions (shared: a request holds them while its response is
    /// decided).
    pub gzip: std::sync::Arc<gzip::Gzip>,
    /// `set_real_ip_from`, `real_ip_header`, `real_ip_recursive`.
    pub realip: realip::RealIp,
    /// `ignore_invalid_headers` (on) and `underscores_in_headers` (off), in `http` and
    /// `server`: a request header whose name has other than letters, digits and `-` (and
    /// `_` when allowed) is dropped, as nginx drops it.
    pub ignore_invalid_headers: bool,
    pub underscores_in_headers: bool,
    /// `keepalive_requests N`: an HTTP/1.1 client connection closes after its Nth request
    /// (0: after each); `None` (no line): never, where nginx closes after 1000.
    pub keepalive_requests: Option<u64>,
    /// `keepalive_timeout T [H]` (75 s): how long a client connection stays open after the
    /// response, waiting for the next request's first byte (0: it closes after each
    /// response, HTTP/1 `Connection: close`).
    pub keepalive_timeout: Duration,
    /// Its second parameter: the seconds an HTTP/1 keep-alive response names in
    /// `Keep-Alive: timeout=N` (nginx's parameter, inherited on its own: a block whose
    /// line has one parameter keeps the one from above).
    pub keepalive_header: Option<u64>,
    /// `http2_max_concurrent_streams` (128), in `http` and `server`: the streams an
    /// HTTP/2 client may have open at once (the listener's default server's value).
    pub http2_max_concurrent_streams: u32,
    /// `proxy_socket_keepalive on|off` (off): TCP keep-alive on node connections.
    pub socket_keepalive: bool,
    /// `lingering_close`, `lingering_time`, `lingering_timeout`.
    pub lingering: Lingering,
    /// `reset_timedout_connection on|off` (off): a client connection that ran out of time
    /// is reset rather than closed.
    pub reset_timedout_connection: bool,
    /// `absolute_redirect` (on), `port_in_redirect` (on), `server_name_in_redirect` (off):
    /// how a relative `Location` gluu-lb sets (a `return`'s, a node's rewritten one) is
    /// made absolute.
    pub absolute_redirect: bool,
    pub port_in_redirect: bool,
    pub server_name_in_redirect: bool,
    /// `error_page` lines ([`super::pages`]).
    pub error_pages: Vec<super::pages::ErrorPage>,
    /// `proxy_intercept_errors on`: a node's response with a status `error_page` lists
    /// is replaced by the error page.
    pub intercept_errors: bool,
    /// `root`: where a location without `proxy_pass` finds its files.
    pub root: Option<PathBuf>,
}

/// How a client connection closes while the client may still be sending
/// ([`crate::linger`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lingering {
    pub close: LingerClose,
    /// `lingering_time` (30 s): the longest a close drains.
    pub time: Duration,
    /// `lingering_timeout` (5 s): the longest it waits for the next bytes.
    pub timeout: Duration,
}

/// `lingering_close off|on|always` (on): `on` drains when the request's body was not all
/// read or more bytes are already there; `always` drains every close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LingerClose {
    Off,
    On,
    Always,
}

impl Default for Lingering {
    /// nginx's.
    fn default() -> Self {
        Lingering {
            close: LingerClose::On,
            time: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        }
    }
}

/// The directives nginx takes in `http` and `server` but not in a location.
const NOT_IN_LOCATION: &[&str] = &[
    "ignore_invalid_headers",
    "merge_slashes",
    "underscores_in_headers",
    "http2_max_concurrent_streams",
    "ssl_early_data",
];

/// Whether nginx refuses `name` in a location (it takes it in `http` and `server`).
pub fn not_in_location(name: &str) -> bool {
    NOT_IN_LOCATION.contains(&name) || OBSOLETE_HTTP2.iter().any(|(old, _)| *old == name)
}

/// nginx 1.19.7's HTTP/2 directives that it took back, each with the one that does its
/// job since: nginx warns and ignores the line, and so does gluu-lb (`http`, `server`).
const OBSOLETE_HTTP2: &[(&str, &str)] = &[
    ("http2_idle_timeout", "keepalive_timeout"),
    ("http2_max_requests", "keepalive_requests"),
    ("http2_recv_timeout", "client_header_timeout"),
    ("http2_max_field_size", "large_client_header_buffers"),
    ("http2_max_header_size", "large_client_header_buffers"),
];

impl Default for ProxySettings {
    /// nginx's defaults.
    fn default() -> Self {
        Self {
            redirect_off: false,
            cookies: cookie::CookieSettings::default(),
            next_upstream: NextUpstream {
                error: true,
                timeout: true,
                ..NextUpstream::default()
            },
            next_upstream_tries: 0,
            next_upstream_timeout: Duration::ZERO,
            connect_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            set_headers: Vec::new(),
            add_headers: Vec::new(),
            log_not_found: true,
            merge_slashes: true,
            ssl_verify: None,
            ssl_trusted_certificate: None,
            ssl_verify_depth: 1,
            ssl_crl: None,
            ssl_certificate: None,
            ssl_certificate_key: None,
            ssl_name: None,
            ssl_server_name: false,
            ssl_protocols: None,
            ssl_ciphers: None,
            ssl_session_reuse: true,
            client_max_body_size: 1 << 20,
            health_check: None,
            access_logs: Vec::new(),
            access_log_off: false,
            client_body_timeout: Duration::from_secs(60),
            buffer_size: BUFFER_SIZE_DEFAULT,
            limit: LimitSettings::default(),
            limit_conn: ConnSettings::default(),
            access: Vec::new(),
            hide_headers: Vec::new(),
            pass_headers: Vec::new(),
            default_type: "text/plain".to_owned(),
            expires: stock::Expires::Off,
            auth_basic: None,
            auth_basic_user_file: None,
            satisfy_any: false,
            charset: None,
            charset_types: std::sync::Arc::new(
                stock::CHARSET_TYPES
                    .iter()
                    .map(|t| (*t).to_owned())
                    .collect(),
            ),
            types: std::sync::Arc::new(
                [
                    ("html", "text/html"),
                    ("gif", "image/gif"),
                    ("jpg", "image/jpeg"),
                ]
                .map(|(e, t)| (e.to_owned(), t.to_owned()))
                .to_vec(),
            ),
            gzip: std::sync::Arc::default(),
            realip: realip::RealIp::default(),
            ignore_invalid_headers: true,
            underscores_in_headers: false,
            keepalive_requests: None,
            keepalive_timeout: Duration::from_secs(75),
            keepalive_header: None,
            http2_max_concurrent_streams: 128,
            socket_keepalive: false,
            lingering: Lingering::default(),
            reset_timedout_connection: false,
            absolute_redirect: true,
            port_in_redirect: true,
            server_name_in_redirect: false,
            error_pages: Vec::new(),
            intercept_errors: false,
            root: None,
        }
    }
}

/// The node response headers nginx hides unless `proxy_pass_header` lets one through: the
/// node's date and software are the balancer's business, and `X-Accel-*` are instructions
/// to nginx itself, never meant for the client.
pub const HIDDEN: &[&str] = &[
    "date",
    "server",
    "x-pad",
    "x-accel-expires",
    "x-accel-redirect",
    "x-accel-limit-rate",
    "x-accel-buffering",
    "x-accel-charset",
];

impl ProxySettings {
    /// The node response headers this block hides: nginx's [`HIDDEN`] but those
    /// `proxy_pass_header` names, and those `proxy_hide_header` adds.
    pub fn hidden(&self) -> Vec<HeaderName> {
        HIDDEN
            .iter()
            .map(|h| HeaderName::from_static(h))
            .filter(|h| !self.pass_headers.contains(h))
            .chain(self.hide_headers.iter().cloned())
            .collect()
    }
}

/// `proxy_buffer_size` unless set: nginx's is one memory page (4k or 8k), which a node's
/// response with a few large cookies passes; gluu-lb's is roomier and still bounded.
pub const BUFFER_SIZE_DEFAULT: usize = 64 << 10;

/// `proxy_buffer_size`'s bounds: hyper reads a response head with no less than 8 KiB, and
/// a buffer is held per node connection.
const BUFFER_SIZE_RANGE: std::ops::RangeInclusive<u64> = (8 << 10)..=(16 << 20);

pub fn time(d: &Directive) -> Result<Duration, GrammarError> {
    let v = d.one_arg()?;
    parse_time(v).ok_or_else(|| {
        GrammarError::at(
            &d.place,
            format!("\"{}\" directive invalid value \"{v}\"", d.name),
        )
    })
}

/// nginx's size syntax: bytes, or a number with `k`, `m` or `g`.
pub fn parse_size(v: &str) -> Option<u64> {
    let (num, mult) = match v.char_indices().last()? {
        (i, 'k' | 'K') => (&v[..i], 1 << 10),
        (i, 'm' | 'M') => (&v[..i], 1 << 20),
        (i, 'g' | 'G') => (&v[..i], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// `buffer=SIZE` and `flush=TIME` of an `access_log` line are checked and taken as met:
/// gluu-lb already writes each worker's lines together, once per pass of its event loop
/// (`access_log`), which is what they ask for and sooner. `gzip` is refused.
fn access_log_param(d: &Directive, p: &str) -> Result<(), GrammarError> {
    let bad = || d.error(format!("invalid parameter \"{p}\""));
    if let Some(v) = p.strip_prefix("buffer=") {
        parse_size(v).filter(|n| *n > 0).ok_or_else(bad)?;
    } else if let Some(v) = p.strip_prefix("flush=") {
        parse_time(v).filter(|t| !t.is_zero()).ok_or_else(bad)?;
    } else if p == "gzip" || p.starts_with("gzip=") {
        return Err(d.error(format!(
            "\"access_log ... {p}\" is not supported: gluu-lb writes plain lines \
             (compress rotated files with logrotate)"
        )));
    } else {
        return Err(bad());
    }
    Ok(())
}

fn health_check(d: &Directive) -> Result<HealthCheck, GrammarError> {
    let mut h = HealthCheck {
        uri: "/".to_owned(),
        interval: Duration::from_secs(5),
        fails: 1,
        passes: 1,
        place: d.place.clone(),
    };
    for a in &d.args {
        let bad = || GrammarError::at(&d.place, format!("invalid parameter \"{a}\""));
        match a.split_once('=') {
            Some(("uri", v)) if v.starts_with('/') => h.uri = v.to_owned(),
            Some(("interval", v)) => {
                h.interval = parse_time(v).filter(|t| !t.is_zero()).ok_or_else(bad)?
            }
            Some(("fails", v)) => h.fails = v.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?,
            Some(("passes", v)) => h.passes = v.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?,
            _ => return Err(bad()),
        }
    }
    Ok(h)
}

/// The settings a block (`http`, `server`, `location`) starts from: its parent's, but as
/// nginx inherits the lists, a block with a `proxy_set_header` (or `add_header`,
/// `limit_req`, `allow` or `deny`) line of its own inherits none of its parent's lines of
/// that directive (`allow` and `deny` count as one list).
pub fn inherit(parent: &ProxySettings, block: &[Directive]) -> ProxySettings {
    let mut s = parent.clone();
    let has = |name: &str| block.iter().any(|d| d.name == name);
    if has("proxy_set_header") {
        s.set_headers.clear();
    }
    if has("add_header") {
        s.add_headers.clear();
    }
    if has("charset_types") {
        // nginx's `text/html` is always among them.
        stock::set_charset_types(&mut s, vec![stock::CHARSET_TYPES[0].to_owned()]);
    }
    if has("limit_req") {
        s.limit.limits.clear();
    }
    if has("limit_conn") {
        s.limit_conn.limits.clear();
    }
    if has("allow") || has("deny") {
        s.access.clear();
    }
    if has("proxy_hide_header") {
        s.hide_headers.clear();
    }
    if has("proxy_pass_header") {
        s.pass_headers.clear();
    }
    if has("error_page") {
        s.error_pages.clear();
    }
    if has("access_log") {
        s.access_logs.clear();
        s.access_log_off = false;
    }
    realip::inherit(&mut s.realip, has);
    cookie::inherit(&mut s.cookies, has);
    if ["gzip_types", "gzip_proxied", "gzip_disable"]
        .into_iter()
        .any(has)
    {
        gzip::inherit(std::sync::Arc::make_mut(&mut s.gzip), has);
    }
    s
}

/// The header `name` of the directive `d` (`proxy_set_header`, `add_header`).
fn header_name(d: &Directive, name: &str) -> Result<HeaderName, GrammarError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        d.error(format!(
            "invalid header name \"{name}\" in \"{}\" directive",
            d.name
        ))
    })
}

fn add_header(d: &Directive, maps: &Maps) -> Result<AddHeader, GrammarError> {
    let (name, value, always) = match d.args.as_slice() {
        [name, value] => (name, value, false),
        [name, value, always] if always == "always" => (name, value, true),
        [_, _, other] => {
            return Err(GrammarError::at(
                &d.place,
                format!("invalid parameter \"{other}\""),
            ));
        }
        _ => {
            return Err(GrammarError::at(
                &d.place,
                "invalid number of arguments in \"add_header\" directive",
            ));
        }
    };
    let name = header_name(d, name)?;
    let replaces = name == header::LAST_MODIFIED || name == header::ETAG;
    Ok(AddHeader {
        name,
        value: template(&d.place, value, maps)?,
        always,
        replaces,
    })
}

/// Applies `d` to `s` when it is one of the proxy directives (allowed in `http`, `server`
/// and `location`, inherited downwards as nginx inherits them, see [`inherit`]; relative
/// paths start at `cx.root`); `Ok(false)` when it is not.
pub fn apply(
    s: &mut ProxySettings,
    d: &Directive,
    cx: &Scope<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<bool, GrammarError> {
    if let Some((old, new)) = OBSOLETE_HTTP2.iter().find(|(old, _)| *old == d.name) {
        d.one_arg()?;
        warnings.push(Warning {
            at: d.place.to_string(),
            message: format!(
                "the \"{old}\" directive is obsolete, use the \"{new}\" directive instead"
            ),
        });
        return Ok(true);
    }
    match d.name.as_str() {
        "proxy_redirect" => {
            s.redirect_off = match d.one_arg()? {
                "off" => true,
                // A location's line after its `proxy_pass` is taken there (`location`).
                "default" => {
                    return Err(d.error(
                        "\"proxy_redirect default\" should be placed after the \"proxy_pass\" \
                         directive",
                    ));
                }
                v => {
                    return Err(GrammarError::at(
                        &d.place,
                        format!(
                            "\"proxy_redirect {v}\": only \"off\" and \"default\" are supported"
                        ),
                    ));
                }
            }
        }
        "proxy_next_upstream" => {
            let mut n = NextUpstream::default();
            for a in &d.args {
                match a.as_str() {
                    "error" => n.error = true,
                    "timeout" => n.timeout = true,
                    "invalid_header" => n.invalid_header = true,
                    "http_500" => n.http_500 = true,
                    "http_502" => n.http_502 = true,
                    "http_503" => n.http_503 = true,
                    "http_504" => n.http_504 = true,
                    "non_idempotent" => n.non_idempotent = true,
                    "off" if d.args.len() == 1 => {}
                    _ => {
                        return Err(GrammarError::at(
                            &d.place,
                            format!(
                                "invalid value \"{a}\" in \"proxy_next_upstream\" directive \
                                 (\"off\" stands alone)"
                            ),
                        ));
                    }
                }
            }
            s.next_upstream = n;
        }
        "proxy_next_upstream_timeout" => s.next_upstream_timeout = time(d)?,
        "proxy_next_upstream_tries" => {
            s.next_upstream_tries = d.one_arg()?.parse().map_err(|_| {
                GrammarError::at(
                    &d.place,
                    "invalid number in \"proxy_next_upstream_tries\" directive",
                )
            })?;
        }
        "proxy_connect_timeout" => s.connect_timeout = time(d)?,
        "proxy_read_timeout" => s.read_timeout = time(d)?,
        "proxy_send_timeout" => s.send_timeout = time(d)?,
        "proxy_set_header" => {
            let [name, value] = d.args.as_slice() else {
                return Err(GrammarError::at(
                    &d.place,
                    "invalid number of arguments in \"proxy_set_header\" directive",
                ));
            };
            let name = header_name(d, name)?;
            if !websocket_recipe(&name, value, cx.maps) {
                s.set_headers
                    .push((name, header_template(&d.place, value, cx.maps)?));
            }
        }
        "add_header" => s.add_headers.push(add_header(d, cx.maps)?),
        "proxy_ssl_verify" => s.ssl_verify = Some(d.on_off()?),
        "auth_basic" => {
            s.auth_basic = match d.one_arg()? {
                "off" => None,
                realm => Some(template(&d.place, realm, cx.maps)?),
            };
        }
        "satisfy" => {
            s.satisfy_any = match d.one_arg()? {
                "all" => false,
                "any" => true,
                v => {
                    return Err(d.error(format!(
                        "invalid value \"{v}\" in \"satisfy\" directive, it must be \"all\" \
                         or \"any\""
                    )));
                }
            };
        }
        "auth_basic_user_file" => {
            let file = d.one_arg()?;
            if file.contains('$') {
                return Err(d.error(
                    "variables in \"auth_basic_user_file\" are not supported: name the file",
                ));
            }
            let path = cx.root.join(file);
            // nginx reads it at each request, and starts without it or with hashes it
            // cannot check.
            warnings.extend(
                crate::auth::survey(&path)
                    .into_iter()
                    .map(|message| Warning {
                        at: d.place.to_string(),
                        message,
                    }),
            );
            s.auth_basic_user_file = Some(path);
        }
        "proxy_ssl_trusted_certificate" => {
            s.ssl_trusted_certificate = Some(cx.root.join(d.one_arg()?))
        }
        "charset" => {
            s.charset = match d.one_arg()? {
                "off" => None,
                name => {
                    let first = cx
                        .charsets
                        .iter()
                        .find(|n| n.eq_ignore_ascii_case(name))
                        .map_or(name, String::as_str);
                    let name = HeaderValue::from_str(first)
                        .map_err(|_| d.error(format!("invalid charset \"{name}\"")))?;
                    Some(std::sync::Arc::new(stock::Charset::new(
                        name,
                        s.charset_types.clone(),
                    )))
                }
            };
        }
        "proxy_ssl_verify_depth" => {
            s.ssl_verify_depth = d
                .one_arg()?
                .parse()
                .map_err(|_| d.error(format!("\"{}\" directive invalid number", d.name)))?;
        }
        "proxy_ssl_crl" => s.ssl_crl = Some((cx.root.join(d.one_arg()?), d.place.clone())),
        "proxy_ssl_certificate" => s.ssl_certificate = Some(cx.root.join(d.one_arg()?)),
        "proxy_ssl_certificate_key" => s.ssl_certificate_key = Some(cx.root.join(d.one_arg()?)),
        "proxy_ssl_name" => s.ssl_name = Some(template(&d.place, d.one_arg()?, cx.maps)?),
        "proxy_ssl_server_name" => s.ssl_server_name = d.on_off()?,
        "allow" | "deny" => s.access.push(access::rule(d, warnings)?),
        "proxy_hide_header" => s.hide_headers.push(header_name(d, d.one_arg()?)?),
        "proxy_pass_header" => s.pass_headers.push(header_name(d, d.one_arg()?)?),
        "proxy_ssl_protocols" => s.ssl_protocols = Some(tls::protocols(d, warnings)?),
        "proxy_ssl_ciphers" => s.ssl_ciphers = Some(tls::cipher_list(d, d.one_arg()?)?),
        "proxy_ssl_session_reuse" => s.ssl_session_reuse = d.on_off()?,
        "ignore_invalid_headers" => s.ignore_invalid_headers = d.on_off()?,
        "proxy_socket_keepalive" => s.socket_keepalive = d.on_off()?,
        "lingering_close" => {
            s.lingering.close = match d.one_arg()? {
                "off" => LingerClose::Off,
                "on" => LingerClose::On,
                "always" => LingerClose::Always,
                v => return Err(d.error(format!("invalid value \"{v}\""))),
            };
        }
        "lingering_time" => s.lingering.time = time(d)?,
        "reset_timedout_connection" => s.reset_timedout_connection = d.on_off()?,
        "absolute_redirect" => s.absolute_redirect = d.on_off()?,
        "port_in_redirect" => s.port_in_redirect = d.on_off()?,
        "server_name_in_redirect" => s.server_name_in_redirect = d.on_off()?,
        "lingering_timeout" => s.lingering.timeout = time(d)?,
        "http2_max_concurrent_streams" => {
            s.http2_max_concurrent_streams = d.one_arg()?.parse().map_err(|_| {
                d.error("\"http2_max_concurrent_streams\" directive invalid number")
            })?;
        }
        "ssl_early_data" => {
            if d.on_off()? {
                return Err(d.error(
                    "\"ssl_early_data on\" is not supported: a request sent as TLS 1.3 early \
                     data can be replayed by anyone who saw it, and gluu-lb accepts none; \
                     set it off or remove the line",
                ));
            }
        }
        "underscores_in_headers" => s.underscores_in_headers = d.on_off()?,
        "client_max_body_size" => {
            let v = d.one_arg()?;
            s.client_max_body_size = parse_size(v).ok_or_else(|| {
                GrammarError::at(
                    &d.place,
                    format!("\"client_max_body_size\" directive invalid value \"{v}\""),
                )
            })?;
        }
        "health_check" => s.health_check = Some(health_check(d)?),
        "access_log" => {
            let line = |path: &String, format: &str, condition| AccessLogLine {
                path: cx.root.join(path),
                format: format.to_owned(),
                condition,
                place: d.place.clone(),
            };
            match d.args.as_slice() {
                [off] if off == "off" => s.access_log_off = true,
                [path, rest @ ..] => {
                    super::log_file(d, path)?;
                    let (format, params) = match rest.split_first() {
                        Some((f, params)) if !f.contains('=') && f != "gzip" => {
                            (f.as_str(), params)
                        }
                        _ => ("combined", rest),
                    };
                    let mut condition = None;
                    for p in params {
                        match p.strip_prefix("if=") {
                            Some(c) => {
                                condition = Some(Arc::new(log_format::condition(d, c, cx.maps)?))
                            }
                            None => access_log_param(d, p)?,
                        }
                    }
                    s.access_logs.push(line(path, format, condition));
                }
                [] => {
                    return Err(d.error("invalid number of arguments in \"access_log\" directive"));
                }
            }
        }
        "client_body_timeout" => s.client_body_timeout = time(d)?,
        "proxy_buffer_size" => {
            let v = d.one_arg()?;
            let size = parse_size(v).ok_or_else(|| {
                GrammarError::at(
                    &d.place,
                    format!("\"proxy_buffer_size\" directive invalid value \"{v}\""),
                )
            })?;
            if !BUFFER_SIZE_RANGE.contains(&size) {
                return Err(GrammarError::at(
                    &d.place,
                    format!(
                        "\"proxy_buffer_size {v}\": gluu-lb takes 8k to 16m (a response head \
                         is read with no less than 8k)"
                    ),
                ));
            }
            s.buffer_size = usize::try_from(size).expect("at most 16m");
        }
        // What gluu-lb does anyway, so an nginx.conf tuned for upstream keep-alive
        // (`keepalive N; proxy_http_version 1.1; proxy_set_header Connection "";`) runs as it is.
        "proxy_http_version" => match d.one_arg()? {
            "1.1" => {}
            "1.0" => {
                return Err(GrammarError::at(
                    &d.place,
                    "\"proxy_http_version 1.0\": gluu-lb speaks HTTP/1.1 to the nodes, over \
                     connections it keeps alive; remove the line",
                ));
            }
            v => {
                return Err(GrammarError::at(
                    &d.place,
                    format!(
                        "invalid value \"{v}\" in \"proxy_http_version\" directive, it must be \
                         \"1.0\" or \"1.1\""
                    ),
                ));
            }
        },
        "proxy_buffering" => {
            if d.on_off()? {
                return Err(GrammarError::at(
                    &d.place,
                    "\"proxy_buffering on\": gluu-lb streams responses as nginx does with \
                     \"proxy_buffering off\" (what a node connection holds for a slow client is \
                     proxy_buffer_size); set it off or remove the line",
                ));
            }
        }
        "proxy_request_buffering" => {
            if d.on_off()? {
                return Err(d.error(
                    "\"proxy_request_buffering on\": gluu-lb streams request bodies to the node \
                     as nginx does with \"proxy_request_buffering off\" (client_body_timeout \
                     bounds a slow upload); set it off or remove the line",
                ));
            }
        }
        "proxy_ignore_client_abort" => {
            if d.on_off()? {
                return Err(d.error(
                    "\"proxy_ignore_client_abort on\" is not supported: gluu-lb ends the node's \
                     request when its client leaves, as nginx does by default; remove the line",
                ));
            }
        }
        "keepalive_requests" => {
            let n = d
                .one_arg()?
                .parse::<u64>()
                .map_err(|_| d.error("\"keepalive_requests\" directive invalid number"))?;
            s.keepalive_requests = Some(n);
        }
        "keepalive_timeout" => {
            let invalid = |v: &str| {
                d.error(format!(
                    "\"keepalive_timeout\" directive invalid value \"{v}\""
                ))
            };
            let (timeout, header) = match d.args.as_slice() {
                [t] => (t, None),
                [t, h] => (t, Some(h)),
                _ => {
                    return Err(
                        d.error("invalid number of arguments in \"keepalive_timeout\" directive")
                    );
                }
            };
            s.keepalive_timeout = parse_time(timeout).ok_or_else(|| invalid(timeout))?;
            if let Some(h) = header {
                // nginx reads it in whole seconds.
                let t = parse_time(h)
                    .filter(|t| t.subsec_nanos() == 0)
                    .ok_or_else(|| invalid(h))?;
                s.keepalive_header = Some(t.as_secs());
            }
        }
        "proxy_buffers"
        | "proxy_busy_buffers_size"
        | "proxy_max_temp_file_size"
        | "proxy_temp_file_write_size"
        | "proxy_temp_path" => {
            return Err(GrammarError::at(
                &d.place,
                format!(
                    "\"{}\" has no meaning here: gluu-lb streams responses, never to disk, as \
                     nginx does with \"proxy_buffering off\", and what a node connection holds \
                     is proxy_buffer_size; remove the line",
                    d.name
                ),
            ));
        }
        _ => {
            return Ok(stock::apply(s, d, warnings)?
                || super::pages::apply(s, d, cx)?
                || (d.name.starts_with("gzip")
                    && gzip::apply(std::sync::Arc::make_mut(&mut s.gzip), d, warnings)?)
                || realip::apply(&mut s.realip, d, warnings)?
                || cookie::apply(&mut s.cookies, d, cx, warnings)?
                || limit::apply(&mut s.limit, &mut s.limit_conn, d)?);
        }
    }
    Ok(true)
}

/// The checks that need a location's settings complete (inherited ones included).
pub fn validate(s: &ProxySettings, at: &Place) -> Result<(), GrammarError> {
    if s.ssl_verify == Some(true) && s.ssl_trusted_certificate.is_none() {
        return Err(GrammarError::at(
            at,
            "no \"proxy_ssl_trusted_certificate\" for \"proxy_ssl_verify on\"",
        ));
    }
    if let (Some(cert), None) = (&s.ssl_certificate, &s.ssl_certificate_key) {
        return Err(GrammarError::at(
            at,
            format!(
                "no \"proxy_ssl_certificate_key\" is defined for certificate \"{}\"",
                cert.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::grammar::parse_file;

    fn here(maps: &Maps) -> Scope<'_> {
        Scope {
            root: std::path::Path::new("."),
            maps,
            charsets: &[],
        }
    }

    fn read(body: &str) -> Result<ProxySettings, GrammarError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, format!("location / {{\n{body}\n}}\n")).expect("write");
        let top = parse_file(&path)?;
        let mut s = ProxySettings::default();
        for d in top[0].block.as_deref().unwrap_or_default() {
            let cx = Scope {
                root: dir.path(),
                maps: &Maps::default(),
                charsets: &[],
            };
            if !apply(&mut s, d, &cx, &mut Vec::new())? {
                return Err(d.error("not a proxy directive"));
            }
        }
        validate(&s, &top[0].place)?;
        Ok(s)
    }

    #[test]
    fn the_guides_location_settings() {
        let s = read(
            "proxy_redirect off;\nproxy_next_upstream error timeout invalid_header http_500;\n\
             proxy_connect_timeout 2;\nproxy_set_header Host $host;\n\
             proxy_set_header X-Real-IP $remote_addr;\n\
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        )
        .expect("valid");
        assert!(s.redirect_off);
        let n = s.next_upstream;
        assert!(
            n.error
                && n.timeout
                && n.invalid_header
                && n.http_500
                && !n.http_502
                && !n.non_idempotent
        );
        assert_eq!(s.connect_timeout, Duration::from_secs(2));
        assert_eq!(s.read_timeout, Duration::from_secs(60), "nginx's default");
        assert_eq!(
            s.set_headers[0],
            (HeaderName::from_static("host"), vec![Part::Var("host")])
        );
        assert_eq!(
            s.set_headers[2].1,
            vec![Part::Var("proxy_add_x_forwarded_for")]
        );
        assert_eq!(s.client_max_body_size, 1 << 20);
    }

    #[test]
    fn defaults_templates_sizes_and_health_checks() {
        let d = ProxySettings::default();
        assert!(d.next_upstream.error && d.next_upstream.timeout && !d.next_upstream.http_500);
        let place = Place {
            file: std::sync::Arc::from(std::path::Path::new("x")),
            line: 1,
        };
        assert_eq!(
            template(
                &place,
                "https://${host}:8443$request_uri?a",
                &Maps::default()
            )
            .expect("ok"),
            vec![
                Part::Text("https://".into()),
                Part::Var("host"),
                Part::Text(":8443".into()),
                Part::Var("request_uri"),
                Part::Text("?a".into())
            ]
        );
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("1x"), None);
        let s = read("health_check uri=/oxauth/.well-known/openid-configuration interval=2s fails=3 passes=2;\nclient_max_body_size 0;\nproxy_next_upstream off;")
            .expect("valid");
        let h = s.health_check.expect("health_check");
        assert_eq!(
            (h.uri.as_str(), h.interval, h.fails, h.passes),
            (
                "/oxauth/.well-known/openid-configuration",
                Duration::from_secs(2),
                3,
                2
            )
        );
        assert_eq!(s.client_max_body_size, 0);
        assert_eq!(s.next_upstream, NextUpstream::default());
        assert_eq!(d.buffer_size, 64 << 10);
        assert_eq!(
            read("proxy_buffer_size 16k;").expect("valid").buffer_size,
            16 << 10
        );
    }

    #[test]
    fn keepalive_timeout_and_its_header_parameter() {
        let d = ProxySettings::default();
        assert_eq!(
            (d.keepalive_timeout, d.keepalive_header),
            (Duration::from_secs(75), None),
            "nginx's defaults"
        );
        let s = read("keepalive_timeout 65;").expect("Debian's line");
        assert_eq!(s.keepalive_timeout, Duration::from_secs(65));
        let s = read("keepalive_timeout 500ms 1m;").expect("valid");
        assert_eq!(
            (s.keepalive_timeout, s.keepalive_header),
            (Duration::from_millis(500), Some(60))
        );
        // A block's one-parameter line keeps the header from above, as nginx merges them.
        let line = directive("keepalive_timeout", "10");
        let mut child = inherit(&s, std::slice::from_ref(&line));
        assert!(apply(&mut child, &line, &here(&Maps::default()), &mut Vec::new()).expect("ok"));
        assert_eq!(
            (child.keepalive_timeout, child.keepalive_header),
            (Duration::from_secs(10), Some(60))
        );
        refused(&[
            ("keepalive_timeout soon;", "invalid value \"soon\""),
            ("keepalive_timeout 10 500ms;", "invalid value \"500ms\""),
            ("keepalive_timeout 1 2 3;", "invalid number of arguments"),
        ]);
    }

    #[test]
    fn lingering_lines() {
        let s = read("lingering_close always;\nlingering_time 1m;\nlingering_timeout 500ms;")
            .expect("valid");
        assert_eq!(
            s.lingering,
            Lingering {
                close: LingerClose::Always,
                time: Duration::from_secs(60),
                timeout: Duration::from_millis(500),
            }
        );
        assert_eq!(
            read("lingering_close off;").expect("valid").lingering.close,
            LingerClose::Off
        );
        refused(&[
            ("lingering_close sometimes;", "invalid value \"sometimes\""),
            ("lingering_time soon;", "invalid value \"soon\""),
            ("lingering_timeout 1 2;", "invalid number of arguments"),
        ]);
    }

    /// Each line, alone in a block, is an error at its line saying the words given.
    fn refused(cases: &[(&str, &str)]) {
        for (line, error) in cases {
            let e = read(line).expect_err(line).to_string();
            assert!(e.contains(error) && e.contains(":2"), "{line}: {e}");
        }
    }

    /// One directive line, at line 1.
    fn directive(name: &str, arg: &str) -> Directive {
        Directive {
            name: name.to_owned(),
            args: vec![arg.to_owned()],
            block: None,
            place: crate::config::grammar::test_place(1),
        }
    }

    #[test]
    fn http2_lines_and_the_lines_refused_for_what_they_would_turn_on() {
        assert_eq!(ProxySettings::default().http2_max_concurrent_streams, 128);
        let s = read("http2_max_concurrent_streams 16;\nssl_early_data off;").expect("valid");
        assert_eq!(s.http2_max_concurrent_streams, 16);
        refused(&[
            ("http2_max_concurrent_streams -1;", "invalid number"),
            ("ssl_early_data on;", "can be replayed"),
        ]);
        let obsolete = directive("http2_idle_timeout", "3m");
        let mut warnings = Vec::new();
        let mut s = ProxySettings::default();
        let maps = Maps::default();
        assert!(apply(&mut s, &obsolete, &here(&maps), &mut warnings).expect("ok"));
        assert_eq!(s, ProxySettings::default(), "the value is ignored");
        assert_eq!(
            warnings[0].message,
            "the \"http2_idle_timeout\" directive is obsolete, use the \"keepalive_timeout\" \
             directive instead"
        );
        assert!(not_in_location("http2_idle_timeout") && not_in_location("ssl_early_data"));
    }

    #[test]
    fn client_headers_and_nginxs_websocket_recipe() {
        let s = read(
            "proxy_set_header Upgrade $http_upgrade;\nproxy_set_header Connection \"Upgrade\";\n\
             proxy_set_header X-Client \"$http_x_client_id/${http_upgrade}\";\n\
             proxy_set_header Connection close;",
        )
        .expect("valid");
        // The recipe's two lines are what gluu-lb does anyway; the others stay.
        assert_eq!(
            s.set_headers,
            [
                (
                    HeaderName::from_static("x-client"),
                    vec![
                        Part::Header(HeaderName::from_static("x-client-id")),
                        Part::Text("/".into()),
                        Part::Header(header::UPGRADE),
                    ]
                ),
                (header::CONNECTION, vec![Part::Text("close".into())]),
            ]
        );
        // `$http_NAME` in the other lines with values too.
        let s =
            read("add_header X-Origin $http_origin;\nerror_page 502 /e?$http_x;").expect("valid");
        let mut templates = s.templates();
        assert_eq!(
            templates.next(),
            Some(&vec![Part::Header(HeaderName::from_static("origin"))])
        );
        assert!(
            templates
                .next()
                .is_some_and(|t| t.iter().any(Part::reads_headers))
        );
    }

    #[test]
    fn an_nginx_conf_tuned_for_upstream_keep_alive_reads_as_it_is() {
        let s = read(
            "proxy_http_version 1.1;\nproxy_set_header Connection \"\";\nproxy_buffering off;",
        )
        .expect("what gluu-lb does anyway");
        assert_eq!(s.set_headers.len(), 1, "Connection \"\" removes the header");
    }

    #[test]
    fn errors() {
        let cases = [
            (
                "proxy_set_header Host $hots;",
                "unknown \"hots\" variable",
                ":2",
            ),
            ("proxy_set_header X ${host;", "closing bracket", ":2"),
            (
                "proxy_set_header X $ssl_client_raw_cert;",
                "has line breaks",
                ":2",
            ),
            ("add_header X $1;", "\"$1\" is a regex capture", ":2"),
            ("add_header X $status;", "in log_format only", ":2"),
            (
                "proxy_set_header \"X Y\" 1;",
                "invalid header name \"X Y\"",
                ":2",
            ),
            (
                "proxy_next_upstream error http_418;",
                "invalid value \"http_418\"",
                ":2",
            ),
            (
                "proxy_connect_timeout soon;",
                "invalid value \"soon\"",
                ":2",
            ),
            (
                "proxy_redirect http://a/ http://b/;",
                "invalid number of arguments",
                ":2",
            ),
            (
                "proxy_ssl_verify on;",
                "no \"proxy_ssl_trusted_certificate\"",
                ":1",
            ),
            (
                "health_check match=ok;",
                "invalid parameter \"match=ok\"",
                ":2",
            ),
            ("client_max_body_size lots;", "invalid value \"lots\"", ":2"),
            ("proxy_buffer_size lots;", "invalid value \"lots\"", ":2"),
            ("proxy_buffer_size 4k;", "gluu-lb takes 8k to 16m", ":2"),
            ("proxy_buffer_size 1g;", "gluu-lb takes 8k to 16m", ":2"),
            ("access_log /var/log/x main gzip;", "is not supported", ":2"),
            (
                "access_log /var/log/x buffer=big;",
                "invalid parameter \"buffer=big\"",
                ":2",
            ),
            ("proxy_http_version 1.0;", "gluu-lb speaks HTTP/1.1", ":2"),
            (
                "proxy_http_version 2;",
                "it must be \"1.0\" or \"1.1\"",
                ":2",
            ),
            ("proxy_buffering on;", "set it off or remove the line", ":2"),
            (
                "proxy_buffering maybe;",
                "it must be \"on\" or \"off\"",
                ":2",
            ),
            (
                "proxy_buffers 8 16k;",
                "\"proxy_buffers\" has no meaning here",
                ":2",
            ),
            ("proxy_busy_buffers_size 32k;", "is proxy_buffer_size", ":2"),
            ("proxy_temp_path /var/cache/x;", "never to disk", ":2"),
        ];
        for (body, want, line) in cases {
            let e = read(body).expect_err(body).to_string();
            assert!(e.contains(want), "{body:?}: {e}");
            assert!(e.ends_with(line), "{body:?}: {e}");
        }
    }
}
