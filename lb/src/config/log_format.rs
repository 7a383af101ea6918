//! nginx's `log_format NAME [escape=default|json|none] STRING ...;` (in `http`), for
//! `access_log PATH NAME`: text and the request's variables, escaped as nginx escapes
//! them. The variables are those gluu-lb knows of a request; any other is an error at the
//! line, as nginx's `unknown "NAME" variable`. How a line is written is in
//! `crate::access_log`.

use std::sync::Arc;

use hyper::header::HeaderName;
use regex::bytes::Regex;

use super::grammar::{Directive, GrammarError, Place};
use super::map::{self, Map, Maps};
use super::proxy::{Raw, split_variables};
use crate::client_cert::CertVar;

/// How variables' values are escaped (`escape=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// `"`, `\` and bytes outside printable ASCII as `\xHH`; no value is `-`.
    Default,
    /// As a JSON string's content; no value is empty.
    Json,
    /// As they are; no value is `-`.
    None,
}

/// A variable a format may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Var {
    RemoteAddr,
    RemotePort,
    RealipRemoteAddr,
    RealipRemotePort,
    RemoteUser,
    TimeLocal,
    TimeIso8601,
    Msec,
    Request,
    RequestMethod,
    RequestUri,
    Uri,
    Args,
    ServerProtocol,
    Scheme,
    Https,
    Host,
    ServerName,
    Status,
    BodyBytesSent,
    RequestTime,
    UpstreamAddr,
    UpstreamConnectTime,
    UpstreamHeaderTime,
    UpstreamResponseTime,
    Pid,
    Hostname,
    SslProtocol,
    SslCipher,
    SslServerName,
    ServerAddr,
    ServerPort,
    ConnectionRequests,
    UpstreamStatus,
    RequestId,
    /// `$http_NAME`: a request header, by its index in [`LogFormat::headers`].
    Header(usize),
    /// `$ssl_client_*`: the client's certificate.
    Cert(CertVar),
}

const VARS: &[(&str, Var)] = &[
    ("remote_addr", Var::RemoteAddr),
    ("binary_remote_addr", Var::RemoteAddr),
    ("remote_port", Var::RemotePort),
    ("realip_remote_addr", Var::RealipRemoteAddr),
    ("realip_remote_port", Var::RealipRemotePort),
    ("remote_user", Var::RemoteUser),
    ("time_local", Var::TimeLocal),
    ("time_iso8601", Var::TimeIso8601),
    ("msec", Var::Msec),
    ("request", Var::Request),
    ("request_method", Var::RequestMethod),
    ("request_uri", Var::RequestUri),
    ("uri", Var::Uri),
    ("document_uri", Var::Uri),
    ("args", Var::Args),
    ("query_string", Var::Args),
    ("server_protocol", Var::ServerProtocol),
    ("scheme", Var::Scheme),
    ("https", Var::Https),
    ("host", Var::Host),
    ("server_name", Var::ServerName),
    ("status", Var::Status),
    ("body_bytes_sent", Var::BodyBytesSent),
    ("request_time", Var::RequestTime),
    ("upstream_addr", Var::UpstreamAddr),
    ("upstream_connect_time", Var::UpstreamConnectTime),
    ("upstream_header_time", Var::UpstreamHeaderTime),
    ("upstream_response_time", Var::UpstreamResponseTime),
    ("pid", Var::Pid),
    ("hostname", Var::Hostname),
    ("ssl_protocol", Var::SslProtocol),
    ("ssl_cipher", Var::SslCipher),
    ("ssl_server_name", Var::SslServerName),
    ("server_addr", Var::ServerAddr),
    ("server_port", Var::ServerPort),
    ("connection_requests", Var::ConnectionRequests),
    ("upstream_status", Var::UpstreamStatus),
    ("request_id", Var::RequestId),
];

/// Whether `name` is a variable of a request a log format may use.
pub fn known(name: &str) -> bool {
    VARS.iter().any(|(n, _)| *n == name)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Var(Var),
    /// A `map`'s variable.
    Map(Arc<Map<Vec<Piece>>>),
    /// A capture of the regex of the map line whose value this is.
    Capture(usize),
    /// `$cookie_NAME`, by its name in lowercase (the `Cookie` header is kept for it).
    Cookie(String),
    /// `$arg_NAME`, by its name in lowercase.
    Arg(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFormat {
    pub name: String,
    pub escape: Escape,
    pub pieces: Vec<Piece>,
    /// The request headers `$http_NAME` variables name, captured when a request starts.
    pub headers: Vec<HeaderName>,
    /// The `$ssl_client_*` variables it has, its maps' included, each once.
    pub certs: Vec<CertVar>,
    /// Whether it has `$request_id`, itself or in a map.
    pub request_id: bool,
}

impl LogFormat {
    fn new(name: String, escape: Escape, pieces: Vec<Piece>, headers: Vec<HeaderName>) -> Self {
        fn walk(pieces: &[Piece], out: &mut Vec<Var>) {
            for p in pieces {
                match p {
                    Piece::Var(v) if !out.contains(v) => out.push(*v),
                    Piece::Map(m) => m.templates().for_each(|t| walk(t, out)),
                    _ => {}
                }
            }
        }
        let mut vars = Vec::new();
        walk(&pieces, &mut vars);
        let certs = vars
            .iter()
            .filter_map(|v| match v {
                Var::Cert(c) => Some(*c),
                _ => None,
            })
            .collect();
        LogFormat {
            name,
            escape,
            pieces,
            headers,
            certs,
            request_id: vars.contains(&Var::RequestId),
        }
    }
}

/// Reads a `log_format` line.
pub fn log_format(d: &Directive, maps: &Maps) -> Result<LogFormat, GrammarError> {
    let (name, rest) = d
        .args
        .split_first()
        .ok_or_else(|| d.error("invalid number of arguments in \"log_format\" directive"))?;
    let (escape, strings) = match rest.split_first() {
        Some((e, strings)) if e.starts_with("escape=") => {
            let escape = match &e["escape=".len()..] {
                "default" => Escape::Default,
                "json" => Escape::Json,
                "none" => Escape::None,
                other => {
                    return Err(d.error(format!("unknown log format escaping \"{other}\"")));
                }
            };
            (escape, strings)
        }
        _ => (Escape::Default, rest),
    };
    if strings.is_empty() {
        return Err(d.error("invalid number of arguments in \"log_format\" directive"));
    }
    let (mut all, mut headers) = (Vec::new(), Vec::new());
    for s in strings {
        all.extend(pieces(&d.place, s, &mut headers, maps, None)?);
    }
    Ok(LogFormat::new(name.clone(), escape, all, headers))
}

/// An `access_log ... if=CONDITION`: the condition read as a format (no escaping) whose
/// value, empty or `0`, keeps a request's line out of the log.
pub fn condition(d: &Directive, text: &str, maps: &Maps) -> Result<LogFormat, GrammarError> {
    let mut headers = Vec::new();
    let all = pieces(&d.place, text, &mut headers, maps, None)?;
    Ok(LogFormat::new(
        format!("if={text}"),
        Escape::None,
        all,
        headers,
    ))
}

/// The map of `$name` as a log format's pieces, its headers added to `headers`; `None`
/// when no map defines `$name`.
pub fn map_pieces(
    name: &str,
    maps: &Maps,
    headers: &mut Vec<HeaderName>,
) -> Result<Option<Arc<Map<Vec<Piece>>>>, GrammarError> {
    let m = maps.compile_with(name, |def| {
        def.compile(|text, place, re| pieces(place, text, headers, maps, re))
    })?;
    Ok(m.map(Arc::new))
}

/// Splits `s` into text and variables (`$http_NAME` ones added to `headers`); `re`: the
/// regex of the map line whose value `s` is.
fn pieces(
    place: &Place,
    s: &str,
    headers: &mut Vec<HeaderName>,
    maps: &Maps,
    re: Option<&Regex>,
) -> Result<Vec<Piece>, GrammarError> {
    let mut out = Vec::new();
    for p in split_variables(place, s)? {
        out.push(match p {
            Raw::Text(t) => Piece::Text(t.to_owned()),
            Raw::Var(name) => match map::capture(place, name, re)? {
                Some(i) => Piece::Capture(i),
                None => match map_pieces(name, maps, headers)? {
                    Some(m) => Piece::Map(m),
                    None => named(name, headers)
                        .map_or_else(|| var(place, name, headers).map(Piece::Var), Ok)?,
                },
            },
        });
    }
    Ok(out)
}

/// `$cookie_NAME` (its header added to `headers`) or `$arg_NAME`.
fn named(name: &str, headers: &mut Vec<HeaderName>) -> Option<Piece> {
    let lower = name.to_ascii_lowercase();
    if let Some(c) = lower.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
        if !headers.contains(&hyper::header::COOKIE) {
            headers.push(hyper::header::COOKIE);
        }
        return Some(Piece::Cookie(c.to_owned()));
    }
    let a = lower.strip_prefix("arg_").filter(|a| !a.is_empty())?;
    Some(Piece::Arg(a.to_owned()))
}

fn var(place: &Place, name: &str, headers: &mut Vec<HeaderName>) -> Result<Var, GrammarError> {
    let error = |message: String| GrammarError::at(place, message);
    let lower = name.to_ascii_lowercase();
    if let Some(header) = lower.strip_prefix("http_") {
        let header = HeaderName::from_bytes(header.replace('_', "-").as_bytes())
            .map_err(|_| error(format!("unknown \"{name}\" variable")))?;
        let i = match headers.iter().position(|h| *h == header) {
            Some(i) => i,
            None => {
                headers.push(header);
                headers.len() - 1
            }
        };
        return Ok(Var::Header(i));
    }
    if let Some((_, v)) = VARS.iter().find(|(n, _)| *n == lower) {
        return Ok(*v);
    }
    if let Some(c) = CertVar::named(&lower) {
        return Ok(Var::Cert(c));
    }
    let prefixed = ["sent_http_", "upstream_http_"]
        .iter()
        .any(|p| lower.starts_with(p));
    if NOT_KEPT.contains(&lower.as_str()) || prefixed {
        return Err(error(format!(
            "\"${name}\" is an nginx variable gluu-lb's access log does not keep; the ones it \
             keeps are listed in the README"
        )));
    }
    Err(error(format!("unknown \"{name}\" variable")))
}

/// nginx variables a log format might name that gluu-lb does not measure or keep.
const NOT_KEPT: &[&str] = &[
    "upstream_response_length",
    "upstream_bytes_received",
    "upstream_bytes_sent",
    "upstream_cache_status",
    "bytes_sent",
    "request_length",
    "connection",
    "gzip_ratio",
    "pipe",
    "limit_req_status",
    "request_body",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn directive(args: &[&str]) -> Directive {
        Directive::for_test("log_format", args, 3)
    }

    #[test]
    fn formats_read_as_nginx_reads_them() {
        let f = log_format(&directive(&[
            "main",
            "$remote_addr [$time_local] \"$request\" ",
            "$status ${body_bytes_sent}b $http_user_agent $HTTP_X_FORWARDED_FOR $http_user_agent",
        ]), &Maps::default())
        .expect("valid");
        assert_eq!(f.escape, Escape::Default);
        assert_eq!(f.headers, ["user-agent", "x-forwarded-for"]);
        assert_eq!(
            f.pieces,
            [
                Piece::Var(Var::RemoteAddr),
                Piece::Text(" [".into()),
                Piece::Var(Var::TimeLocal),
                Piece::Text("] \"".into()),
                Piece::Var(Var::Request),
                Piece::Text("\" ".into()),
                Piece::Var(Var::Status),
                Piece::Text(" ".into()),
                Piece::Var(Var::BodyBytesSent),
                Piece::Text("b ".into()),
                Piece::Var(Var::Header(0)),
                Piece::Text(" ".into()),
                Piece::Var(Var::Header(1)),
                Piece::Text(" ".into()),
                Piece::Var(Var::Header(0)),
            ]
        );
        let f = log_format(
            &directive(&["j", "escape=json", "{\"s\":$status}"]),
            &Maps::default(),
        )
        .expect("json");
        assert_eq!(f.escape, Escape::Json);
        for (args, said) in [
            (&["main"][..], "invalid number of arguments"),
            (&["main", "escape=json"][..], "invalid number of arguments"),
            (
                &["main", "escape=xml", "$status"][..],
                "unknown log format escaping",
            ),
            (&["main", "$nope"][..], "unknown \"nope\" variable"),
            (&["main", "${status"][..], "closing bracket"),
            (&["main", "a $ b"][..], "invalid variable name"),
            (&["main", "$upstream_response_length"][..], "does not keep"),
            (&["main", "$sent_http_content_type"][..], "does not keep"),
        ] {
            let e = log_format(&directive(args), &Maps::default()).expect_err(said);
            assert!(
                e.to_string().contains(said) && e.at == "nginx.conf:3",
                "{args:?}: {e}"
            );
        }
    }
}
