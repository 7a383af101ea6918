//! nginx's gzip filter on gluu-lb's responses: [`Ask`] holds what the request says (does
//! the client take gzip, did it come through another proxy), [`Ask::decide`] applies
//! nginx's rules to a response's status and headers, and [`Gzipped`] compresses a body as
//! it streams. A response waits in the compressor only while more of it is ready: when the
//! node makes gluu-lb wait, what has been compressed so far goes out (a zlib sync flush),
//! so compression never holds a slow response back.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use flate2::{Compress, Compression, FlushCompress, Status};
use hyper::body::{Body as HttpBody, Bytes, Frame};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode, Version};

use crate::body::BoxError;
use crate::config::gzip::{Gzip, Proxied};

/// A request whose location has `gzip on`, and what it says about compression.
#[derive(Debug)]
pub struct Ask {
    settings: Arc<Gzip>,
    /// `Accept-Encoding` takes gzip, the HTTP version is `gzip_http_version` or later, and
    /// `gzip_disable` does not name the `User-Agent`.
    client: bool,
    /// The request has `Via`: it came through another proxy (`gzip_proxied`).
    via: bool,
    authorization: bool,
    /// A `HEAD`: the headers say gzip, there is no body to compress.
    head: bool,
}

impl Ask {
    /// `None` when `gzip` is off.
    pub fn of(
        settings: &Arc<Gzip>,
        method: &Method,
        version: Version,
        headers: &HeaderMap,
    ) -> Option<Ask> {
        if !settings.on {
            return None;
        }
        let agent = headers.get(header::USER_AGENT).map(HeaderValue::as_bytes);
        let disabled = agent.is_some_and(|a| {
            (settings.disable_msie6 && msie6(a)) || settings.disable.iter().any(|p| p.0.is_match(a))
        });
        let client = headers
            .get(header::ACCEPT_ENCODING)
            .is_some_and(|v| accepts_gzip(v.as_bytes()))
            && (version >= Version::HTTP_11 || settings.http_1_0)
            && !disabled;
        Some(Ask {
            settings: Arc::clone(settings),
            client,
            via: headers.contains_key(header::VIA),
            authorization: headers.contains_key(header::AUTHORIZATION),
            head: method == Method::HEAD,
        })
    }

    /// nginx's gzip header filter for a response of `status` with `headers`: when the
    /// response is one to compress (`gzip_types`, `gzip_min_length`, 200/403/404, not
    /// encoded already) and this client gets it compressed, the headers are rewritten
    /// (`Content-Encoding: gzip`, no `Content-Length` nor `Accept-Ranges`, a weak `ETag`)
    /// and the compressor for its body is returned (none for a `HEAD`: the node sends no
    /// body). `gzip_vary` adds `Vary: Accept-Encoding` to every response that could be
    /// compressed.
    pub fn decide(&self, status: StatusCode, headers: &mut HeaderMap) -> Option<Deflate> {
        self.rewrite(status, headers).filter(|_| !self.head)
    }

    /// [`Ask::decide`] for a response gluu-lb makes itself: `body` compressed whole when it
    /// is to be, for a `HEAD` too (whose `Content-Length` is then that of the `GET`).
    pub fn whole(&self, status: StatusCode, headers: &mut HeaderMap, body: Bytes) -> Bytes {
        let Some(z) = self.rewrite(status, headers) else {
            return body;
        };
        z.all(&body).unwrap_or_else(|e| {
            tracing::error!("gzip: {e}; the response goes uncompressed");
            headers.remove(header::CONTENT_ENCODING);
            body
        })
    }

    fn rewrite(&self, status: StatusCode, headers: &mut HeaderMap) -> Option<Deflate> {
        let s = &*self.settings;
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let eligible = matches!(status.as_u16(), 200 | 403 | 404)
            && headers
                .get(header::CONTENT_ENCODING)
                .is_none_or(HeaderValue::is_empty)
            && length.is_none_or(|n| n >= s.min_length)
            && headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|t| listed(s, t.as_bytes()));
        if !eligible {
            return None;
        }
        if s.vary {
            headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        if !self.client || (self.via && !self.proxied_ok(&s.proxied, headers)) {
            return None;
        }
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::ACCEPT_RANGES);
        weaken_etag(headers);
        Some(Deflate::new(s.level, length))
    }

    /// `gzip_proxied`: whether a request that came through a proxy gets this response
    /// compressed, in nginx's order of checks.
    fn proxied_ok(&self, p: &Proxied, headers: &HeaderMap) -> bool {
        if p.off {
            return false;
        }
        if p.any || (p.auth && self.authorization) {
            return true;
        }
        if let Some(expires) = headers.get(header::EXPIRES) {
            let date = |v: &HeaderValue| httpdate::parse_http_date(v.to_str().ok()?).ok();
            let now = match headers.get(header::DATE) {
                Some(d) => date(d),
                None => Some(SystemTime::now()),
            };
            return p.expired && matches!((date(expires), now), (Some(e), Some(n)) if e < n);
        }
        let directives = headers.get_all(header::CACHE_CONTROL);
        if directives.iter().next().is_some() {
            let has = |name: &str| {
                directives.iter().any(|v| {
                    v.as_bytes().split(|b| *b == b',').any(|d| {
                        let d = d.split(|b| matches!(b, b'=' | b';')).next().unwrap_or(d);
                        d.trim_ascii().eq_ignore_ascii_case(name.as_bytes())
                    })
                })
            };
            return (p.no_cache && has("no-cache"))
                || (p.no_store && has("no-store"))
                || (p.private && has("private"));
        }
        !(p.no_last_modified && headers.contains_key(header::LAST_MODIFIED)
            || p.no_etag && headers.contains_key(header::ETAG))
    }
}

/// Whether an `Accept-Encoding` value takes gzip, by nginx's reading: the token `gzip`
/// (any case) at the start or after `,` or a space, then the end, a `,`, or a `;q=` above
/// zero.
fn accepts_gzip(ae: &[u8]) -> bool {
    if ae.starts_with(b"gzip,") {
        return true;
    }
    let mut from = 0;
    let at = loop {
        let Some(i) = ae[from..]
            .windows(4)
            .position(|w| w.eq_ignore_ascii_case(b"gzip"))
            .map(|i| from + i)
        else {
            return false;
        };
        if i == 0 || matches!(ae[i - 1], b',' | b' ') {
            break i + 4;
        }
        from = i + 4;
    };
    let mut rest = ae[at..].iter();
    loop {
        match rest.next() {
            None | Some(b',') => return true,
            Some(b' ') => {}
            Some(b';') => break,
            Some(_) => return false,
        }
    }
    loop {
        match rest.next() {
            None => return true,
            Some(b'q' | b'Q') => break,
            Some(b' ') => {}
            Some(_) => return false,
        }
    }
    let rest = rest.as_slice();
    rest.len() >= 2 && rest[0] == b'=' && quantity(&rest[1..]) > 0
}

/// nginx's reading of a q-value: `0` or `1`, then `.` and at most three digits, up to a
/// `,` or a space; 0 for anything else, in thousandths otherwise... as nginx counts them,
/// where `0.5` is 5 and `1.000` 100: only zero or not matters.
fn quantity(q: &[u8]) -> u32 {
    let mut it = q.iter();
    let mut n = match it.next() {
        Some(b'0') => 0,
        Some(b'1') => 100,
        _ => return 0,
    };
    match it.next() {
        None | Some(b',' | b' ') => return n,
        Some(b'.') => {}
        Some(_) => return 0,
    }
    let mut digits = 0;
    for c in it {
        match c {
            b',' | b' ' => break,
            b'0'..=b'9' => {
                n += u32::from(c - b'0');
                digits += 1;
            }
            _ => return 0,
        }
    }
    if n > 100 || digits > 3 { 0 } else { n }
}

/// nginx's `msie6` mask: Internet Explorer 4, 5 and 6 (6 without SP2's "SV1").
fn msie6(agent: &[u8]) -> bool {
    let Some(at) = agent.windows(5).position(|w| w == b"MSIE ") else {
        return false;
    };
    let m = &agent[at..];
    if m.len() <= 7 || m[6] != b'.' {
        return false;
    }
    match m[5] {
        b'4' | b'5' => true,
        b'6' => !m[8..].windows(3).any(|w| w == b"SV1"),
        _ => false,
    }
}

/// Whether a `Content-Type` is one of `gzip_types`: its type compared without case, the
/// parameters left out only when one is a `charset` (as nginx reads the header).
fn listed(s: &Gzip, content_type: &[u8]) -> bool {
    let Some(types) = &s.types else {
        return true;
    };
    let mut end = content_type.len();
    for (i, _) in content_type.iter().enumerate().filter(|(_, b)| **b == b';') {
        let param = content_type[i + 1..].trim_ascii_start();
        if param.len() >= 8 && param[..8].eq_ignore_ascii_case(b"charset=") {
            end = i;
            break;
        }
    }
    let t = &content_type[..end];
    types.iter().any(|l| l.as_bytes().eq_ignore_ascii_case(t))
}

/// nginx's weak ETag for a changed body: `"x"` becomes `W/"x"`, a weak one stays, one
/// that is neither goes.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(header::ETAG) else {
        return;
    };
    let v = etag.as_bytes();
    if v.starts_with(b"W/") {
        return;
    }
    let weak = v
        .starts_with(b"\"")
        .then(|| HeaderValue::from_bytes(&[b"W/", v].concat()).ok())
        .flatten();
    match weak {
        Some(w) => headers.insert(header::ETAG, w),
        None => headers.remove(header::ETAG),
    };
}

/// zlib's window for a body of `length`: halved while the body would fit the smaller one
/// (zlib's usable window is 262 bytes short of its size), down to zlib's least, 512 bytes.
fn window_bits(length: Option<u64>) -> u8 {
    let mut bits = 15u8;
    if let Some(n) = length.filter(|n| *n > 0) {
        while bits > 9 && n + 262 < 1 << (bits - 1) {
            bits -= 1;
        }
    }
    bits
}

/// A gzip stream being written: zlib's deflate with the gzip header and trailer.
pub struct Deflate {
    z: Compress,
}

impl std::fmt::Debug for Deflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflate")
            .field("in", &self.z.total_in())
            .field("out", &self.z.total_out())
            .finish()
    }
}

impl Deflate {
    /// At `gzip_comp_level` `level`; a body of known `length` gets a window no larger than
    /// it needs (nginx's rule), which is less memory per response being compressed.
    ///
    /// zlib-rs's level 1 is zlib-ng's "quick" deflate (fixed Huffman codes), which leaves
    /// a 1.8 KB OpenID configuration at 760 bytes where nginx's zlib at level 1 makes 596;
    /// its level 2 is zlib's fast deflate (584 bytes), so nginx's level 1 is run as 2.
    fn new(level: u32, length: Option<u64>) -> Deflate {
        let level = Compression::new(level.max(2));
        Deflate {
            z: Compress::new_gzip(level, window_bits(length)),
        }
    }

    /// Runs `input` through, with `flush`, adding what comes out to `out`.
    fn run(
        &mut self,
        mut input: &[u8],
        flush: FlushCompress,
        out: &mut Vec<u8>,
    ) -> Result<(), BoxError> {
        loop {
            out.reserve(input.len() / 2 + 64);
            let before = self.z.total_in();
            let status = self.z.compress_vec(input, out, flush)?;
            let taken = usize::try_from(self.z.total_in() - before)?;
            input = &input[taken..];
            // Done when the input is in and zlib had room to spare (nothing more is
            // pending); for the end, when zlib says the stream ended.
            let done = match flush {
                FlushCompress::Finish => status == Status::StreamEnd,
                _ => input.is_empty() && out.len() < out.capacity(),
            };
            if done {
                return Ok(());
            }
        }
    }

    /// All of `body`, compressed (a response gluu-lb makes itself).
    fn all(mut self, body: &[u8]) -> Result<Bytes, BoxError> {
        let mut out = Vec::with_capacity(body.len() / 2 + 64);
        self.run(body, FlushCompress::Finish, &mut out)?;
        Ok(out.into())
    }
}

/// Compressed output is sent once this much has collected (or sooner, when the node
/// makes gluu-lb wait, or at the end).
const SEND_AT: usize = 16 << 10;

/// A response body compressed as it streams.
#[derive(Debug)]
pub struct Gzipped<B> {
    inner: B,
    z: Deflate,
    out: Vec<u8>,
    /// Input went in since the last flush.
    unflushed: bool,
    finished: bool,
    trailers: Option<HeaderMap>,
}

impl<B> Gzipped<B> {
    pub fn new(inner: B, z: Deflate) -> Self {
        Self {
            inner,
            z,
            out: Vec::new(),
            unflushed: false,
            finished: false,
            trailers: None,
        }
    }

    fn send(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(Some(Ok(Frame::data(std::mem::take(&mut self.out).into()))))
    }

    fn finish(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.finished = true;
        match self.z.run(&[], FlushCompress::Finish, &mut self.out) {
            Ok(()) => self.send(),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}

impl<B> HttpBody for Gzipped<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.finished {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if let Err(e) = this.z.run(&data, FlushCompress::None, &mut this.out) {
                            return Poll::Ready(Some(Err(e)));
                        }
                        this.unflushed = true;
                        if this.out.len() >= SEND_AT {
                            return this.send();
                        }
                    }
                    Err(frame) => {
                        this.trailers = frame.into_trailers().ok();
                        return this.finish();
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => return this.finish(),
                Poll::Pending => {
                    if std::mem::take(&mut this.unflushed) {
                        if let Err(e) = this.z.run(&[], FlushCompress::Sync, &mut this.out) {
                            return Poll::Ready(Some(Err(e)));
                        }
                        return this.send();
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use http_body_util::BodyExt;

    use super::*;
    use crate::body::Channel;
    use crate::config::gzip::Pattern;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .expect("a whole gzip stream");
        out
    }

    fn ask(settings: Gzip, request: &[(&str, &str)]) -> Ask {
        let mut headers = HeaderMap::new();
        for (n, v) in request {
            headers.append(
                header::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        Ask::of(
            &Arc::new(settings),
            &Method::GET,
            Version::HTTP_11,
            &headers,
        )
        .expect("on")
    }

    fn on() -> Gzip {
        Gzip {
            on: true,
            ..Gzip::default()
        }
    }

    fn response(headers: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(
                header::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn accept_encoding_read_as_nginx_reads_it() {
        for (ae, takes) in [
            ("gzip", true),
            ("gzip, deflate, br", true),
            ("deflate, gzip", true),
            ("br,gzip", true),
            ("GZIP", true),
            ("gzip;q=0.5", true),
            ("gzip; q=1", true),
            ("deflate, gzip;q=0.001", true),
            ("gzip;q=0", false),
            ("gzip;q=0.000", false),
            ("gzip;q=2", false),
            ("gzip;q=0.0001", false),
            ("x-gzip", false),
            ("gzipx", false),
            ("identity", false),
            ("", false),
            ("deflate;q=0.5, xgzip, gzip", true),
        ] {
            assert_eq!(accepts_gzip(ae.as_bytes()), takes, "{ae:?}");
        }
    }

    #[test]
    fn msie6_as_nginx_masks_it() {
        for (ua, masked) in [
            ("Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)", true),
            (
                "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; SV1)",
                false,
            ),
            ("Mozilla/4.0 (compatible; MSIE 5.5; Windows 98)", true),
            ("Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.0)", false),
            ("Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0", false),
        ] {
            assert_eq!(msie6(ua.as_bytes()), masked, "{ua}");
        }
    }

    #[test]
    fn which_responses_are_compressed() {
        let html = [("content-type", "text/html; charset=UTF-8")];
        let client = [("accept-encoding", "gzip, deflate")];
        let compressed = |a: &Ask, status: u16, headers: &[(&str, &str)]| {
            let mut h = response(headers);
            let z = a.decide(StatusCode::from_u16(status).expect("status"), &mut h);
            let gzip = h.get(header::CONTENT_ENCODING).is_some_and(|v| v == "gzip");
            assert_eq!(z.is_some(), gzip);
            z.is_some()
        };
        let a = ask(on(), &client);
        assert!(compressed(&a, 200, &html));
        assert!(compressed(&a, 404, &html) && compressed(&a, 403, &html));
        assert!(!compressed(&a, 500, &html) && !compressed(&a, 206, &html));
        assert!(!compressed(
            &a,
            200,
            &[("content-type", "application/json")]
        ));
        assert!(!compressed(&a, 200, &[]), "no type: not listed");
        assert!(
            !compressed(&a, 200, &[("content-type", "text/html;level=1")]),
            "a parameter other than charset is part of the type, as nginx reads it"
        );
        assert!(compressed(&a, 200, &[("content-type", "TEXT/HTML")]));
        let encoded = [("content-type", "text/html"), ("content-encoding", "br")];
        assert!(!compressed(&a, 200, &encoded));
        let short = [("content-type", "text/html"), ("content-length", "19")];
        assert!(!compressed(&a, 200, &short));
        let enough = [("content-type", "text/html"), ("content-length", "20")];
        assert!(compressed(&a, 200, &enough));
        assert!(
            !compressed(&ask(on(), &[]), 200, &html),
            "client without gzip"
        );
        let json = Gzip {
            types: Some(vec!["text/html".into(), "application/json".into()]),
            ..on()
        };
        assert!(compressed(
            &ask(json, &client),
            200,
            &[("content-type", "application/json")]
        ));
        let any = Gzip {
            types: None,
            ..on()
        };
        assert!(compressed(
            &ask(any, &client),
            200,
            &[("content-type", "image/png")]
        ));
        let curl = Gzip {
            disable: vec![Pattern(regex::bytes::Regex::new("(?i)^CURL/").expect("re"))],
            ..on()
        };
        let agent = [client[0], ("user-agent", "curl/8.1")];
        assert!(!compressed(&ask(curl, &agent), 200, &html));
        let mut old = HeaderMap::new();
        old.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        let a10 = Ask::of(&Arc::new(on()), &Method::GET, Version::HTTP_10, &old).expect("on");
        assert!(!compressed(&a10, 200, &html), "gzip_http_version 1.1");
        let s10 = Arc::new(Gzip {
            http_1_0: true,
            ..on()
        });
        let a10 = Ask::of(&s10, &Method::GET, Version::HTTP_10, &old).expect("on");
        assert!(compressed(&a10, 200, &html));
        assert!(
            Ask::of(
                &Arc::new(Gzip::default()),
                &Method::GET,
                Version::HTTP_11,
                &old
            )
            .is_none()
        );
    }

    #[test]
    fn headers_of_a_compressed_response() {
        let vary = Gzip { vary: true, ..on() };
        let a = ask(vary.clone(), &[("accept-encoding", "gzip")]);
        let mut h = response(&[
            ("content-type", "text/html"),
            ("content-length", "3000"),
            ("accept-ranges", "bytes"),
            ("etag", "\"abc\""),
            ("vary", "Cookie"),
        ]);
        assert!(a.decide(StatusCode::OK, &mut h).is_some());
        assert_eq!(h[header::CONTENT_ENCODING], "gzip");
        assert!(!h.contains_key(header::CONTENT_LENGTH) && !h.contains_key(header::ACCEPT_RANGES));
        assert_eq!(h[header::ETAG], "W/\"abc\"");
        let vary_values: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(vary_values, ["Cookie", "Accept-Encoding"]);
        for (etag, after) in [("W/\"x\"", Some("W/\"x\"")), ("bare", None)] {
            let mut h = response(&[("content-type", "text/html"), ("etag", etag)]);
            assert!(a.decide(StatusCode::OK, &mut h).is_some());
            assert_eq!(
                h.get(header::ETAG).map(|v| v.to_str().expect("ascii")),
                after
            );
        }
        // The client does not take gzip: Vary all the same, nothing else changes.
        let mut h = response(&[("content-type", "text/html"), ("content-length", "3000")]);
        assert!(ask(vary, &[]).decide(StatusCode::OK, &mut h).is_none());
        assert_eq!(h[header::VARY], "Accept-Encoding");
        assert_eq!(h[header::CONTENT_LENGTH], "3000");
        // HEAD: the headers of the GET, no body to compress.
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        let head = Ask::of(&Arc::new(on()), &Method::HEAD, Version::HTTP_11, &headers).expect("on");
        let mut h = response(&[("content-type", "text/html"), ("content-length", "3000")]);
        assert!(head.decide(StatusCode::OK, &mut h).is_none());
        assert_eq!(h[header::CONTENT_ENCODING], "gzip");
        assert!(!h.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn gzip_proxied_in_nginx_order() {
        let with = |words: &[&str]| {
            let mut p = Proxied::NONE;
            for w in words {
                *p.flag(w).expect("a word") = true;
            }
            on_with(p)
        };
        fn on_with(proxied: Proxied) -> Gzip {
            Gzip { proxied, ..on() }
        }
        let via = [("accept-encoding", "gzip"), ("via", "1.1 cdn")];
        let html = ("content-type", "text/html");
        let gets = |s: Gzip, request: &[(&str, &str)], more: &[(&str, &str)]| {
            let mut headers = vec![html];
            headers.extend_from_slice(more);
            ask(s, request)
                .decide(StatusCode::OK, &mut response(&headers))
                .is_some()
        };
        assert!(
            gets(on(), &via[..1], &[]),
            "not proxied: gzip_proxied has no say"
        );
        assert!(!gets(on(), &via, &[]), "default off");
        assert!(gets(with(&["any"]), &via, &[]));
        assert!(!gets(with(&["off", "any"]), &via, &[]), "off wins");
        let auth = [via[0], via[1], ("authorization", "Bearer x")];
        assert!(gets(with(&["auth"]), &auth, &[("cache-control", "public")]));
        assert!(!gets(with(&["auth"]), &via, &[("cache-control", "public")]));
        let past = ("expires", "Thu, 01 Jan 1970 00:00:01 GMT");
        let future = ("expires", "Fri, 01 Jan 2100 00:00:00 GMT");
        assert!(gets(with(&["expired"]), &via, &[past]));
        assert!(!gets(with(&["expired"]), &via, &[future]));
        assert!(!gets(with(&["expired"]), &via, &[("expires", "0")]));
        assert!(
            !gets(with(&["no-cache"]), &via, &[past]),
            "Expires decides alone"
        );
        let cc = ("cache-control", "max-age=0, No-Cache=\"Set-Cookie\"");
        assert!(gets(with(&["no-cache"]), &via, &[cc]));
        assert!(!gets(with(&["no-store", "private"]), &via, &[cc]));
        assert!(gets(
            with(&["private"]),
            &via,
            &[("cache-control", "private")]
        ));
        assert!(gets(with(&["no_etag"]), &via, &[]));
        assert!(!gets(with(&["no_etag"]), &via, &[("etag", "\"1\"")]));
        assert!(!gets(
            with(&["no_last_modified"]),
            &via,
            &[("last-modified", past.1)]
        ));
        assert!(
            gets(with(&["expired"]), &via, &[]),
            "nothing to say no: nginx compresses"
        );
    }

    #[test]
    fn the_window_fits_a_known_length() {
        // nginx's figures: 1700 bytes fit 2 KiB less 262, not 1 KiB less 262.
        for (length, bits) in [
            (None, 15),
            (Some(0), 15),
            (Some(1 << 20), 15),
            (Some(16384 - 262), 15),
            (Some(16384 - 263), 14),
            (Some(1700), 11),
            (Some(1786), 12),
            (Some(20), 9),
        ] {
            assert_eq!(window_bits(length), bits, "{length:?}");
            let text = vec![b'a'; usize::try_from(length.unwrap_or(5)).expect("small")];
            let z = Deflate::new(1, length).all(&text).expect("gzip");
            assert_eq!(gunzip(&z), text, "{length:?}");
        }
    }

    /// nginx 1.22 with Debian's zlib, `gzip_comp_level 1`, sends the testkit's OpenID
    /// configuration for https://loadbalancer.example.org in 596 bytes (measured with the
    /// bench's nginx-ka-gz); gluu-lb at the same level sends no more.
    #[test]
    fn level_1_compresses_as_well_as_nginxs_zlib() {
        let doc = gluu_testkit::node::openid_configuration("https://loadbalancer.example.org");
        let length = doc.len() as u64;
        let z = Deflate::new(1, Some(length))
            .all(doc.as_bytes())
            .expect("gzip");
        assert!(z.len() <= 596, "{} bytes", z.len());
        assert_eq!(gunzip(&z), doc.as_bytes());
    }

    #[test]
    fn a_local_body_compresses_whole() {
        let text = b"<html>hello hello hello hello hello</html>".repeat(50);
        let z = Deflate::new(6, Some(text.len() as u64))
            .all(&text)
            .expect("gzip");
        assert!(z.len() < text.len() / 4, "{} of {}", z.len(), text.len());
        assert_eq!(gunzip(&z), text);
        assert_eq!(gunzip(&Deflate::new(1, None).all(b"").expect("gzip")), b"");
    }

    #[tokio::test]
    async fn a_streamed_body_goes_out_when_the_node_pauses() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut body = Gzipped::new(Channel(rx), Deflate::new(1, None));
        let data = |s: &'static [u8]| Ok(Frame::data(Bytes::from_static(s)));
        tx.send(data(b"first part, ")).await.expect("send");
        // The node pauses: what came so far is flushed out, and is a valid prefix.
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
            .await
            .expect("a frame while the node pauses")
            .expect("a frame")
            .expect("ok");
        let first = first.into_data().expect("data");
        let mut inflate = flate2::Decompress::new_gzip(15);
        let mut seen = Vec::with_capacity(1024);
        inflate
            .decompress_vec(&first, &mut seen, flate2::FlushDecompress::Sync)
            .expect("inflate");
        assert_eq!(seen, b"first part, ");
        tx.send(data(b"second part")).await.expect("send");
        drop(tx);
        let mut all = first.to_vec();
        while let Some(frame) = body.frame().await {
            all.extend_from_slice(&frame.expect("ok").into_data().expect("data"));
        }
        assert!(body.is_end_stream());
        assert_eq!(gunzip(&all), b"first part, second part");
    }
}
