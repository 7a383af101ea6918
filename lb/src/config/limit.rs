//! nginx's limits by client address: `limit_req_zone` and `limit_conn_zone` in `http`, and
//! `limit_req`/`limit_conn` with their `_status`, `_log_level` and `_dry_run` lines in
//! `http`, `server` and `location`, with `ngx_http_limit_req_module`'s and
//! `ngx_http_limit_conn_module`'s grammar and words. What they do at request time is in
//! `crate::limit`.

use super::grammar::{Directive, GrammarError, Place};
use super::proxy::parse_size;

/// `limit_req_zone KEY zone=NAME:SIZE rate=RATE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneDef {
    pub name: String,
    /// The key as written (`$binary_remote_addr` or `$remote_addr`: both the client's
    /// address).
    pub key: String,
    /// How many clients the zone remembers: nginx's "one megabyte zone can keep about 16
    /// thousand 64-byte states".
    pub states: usize,
    /// `limit_req_zone`: requests per second, in thousandths (nginx's unit: `30r/m` is
    /// 500). `None`: a `limit_conn_zone`.
    pub rate: Option<u64>,
    pub place: Place,
}

/// How many states a MiB of zone holds, as nginx's documentation counts them.
const STATES_PER_MIB: u64 = 16_000;

/// The most states a zone may hold (a 256m zone in nginx's terms).
const STATES_MAX: u64 = 1 << 22;

/// One `limit_req zone=NAME [burst=N] [nodelay | delay=N]` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitReq {
    pub zone: String,
    /// Requests beyond the rate that are let through (delayed or not); more are refused.
    pub burst: u64,
    /// How many of those go at once before the rest are delayed; `None`: `nodelay`, all.
    pub delay: Option<u64>,
    pub place: Place,
}

/// `limit_req_log_level`: the level of "limiting requests" lines; "delaying request" lines
/// are one below (nginx's rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    Notice,
    Warn,
    Error,
}

/// One `limit_conn ZONE N` line: at most N requests of one client at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitConn {
    pub zone: String,
    pub max: u32,
    pub place: Place,
}

/// The lines of one kind (`limit_req` or `limit_conn`) of a block, inherited as nginx
/// inherits them: a block with a `limit_req` (`limit_conn`) line of its own inherits none
/// of its parent's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits<L> {
    pub limits: Vec<L>,
    /// `limit_req_status`, `limit_conn_status` (503).
    pub status: u16,
    pub log_level: LogLevel,
    /// `limit_req_dry_run on`: counted and logged, never refused or delayed.
    pub dry_run: bool,
}

pub type LimitSettings = Limits<LimitReq>;
pub type ConnSettings = Limits<LimitConn>;

/// What a limit line has for the checks common to both kinds.
pub trait Line {
    fn zone(&self) -> &str;
    fn place(&self) -> &Place;
}

impl Line for LimitReq {
    fn zone(&self) -> &str {
        &self.zone
    }
    fn place(&self) -> &Place {
        &self.place
    }
}

impl Line for LimitConn {
    fn zone(&self) -> &str {
        &self.zone
    }
    fn place(&self) -> &Place {
        &self.place
    }
}

impl<L> Default for Limits<L> {
    fn default() -> Self {
        Self {
            limits: Vec::new(),
            status: 503,
            log_level: LogLevel::Error,
            dry_run: false,
        }
    }
}

/// Applies `d` when it is one of the `limit_req` or `limit_conn` lines of a block;
/// `Ok(false)` when not.
pub fn apply(
    req: &mut LimitSettings,
    conn: &mut ConnSettings,
    d: &Directive,
) -> Result<bool, GrammarError> {
    match d.name.as_str() {
        "limit_req" => push(req, limit_req(d)?, d)?,
        "limit_conn" => push(conn, limit_conn(d)?, d)?,
        _ => {
            return match d.name.strip_prefix("limit_req_") {
                Some(rest) => common(req, rest, d),
                None => match d.name.strip_prefix("limit_conn_") {
                    Some(rest) => common(conn, rest, d),
                    None => Ok(false),
                },
            };
        }
    }
    Ok(true)
}

/// A line of one kind, one per zone in a block.
fn push<L: Line>(s: &mut Limits<L>, l: L, d: &Directive) -> Result<(), GrammarError> {
    if s.limits.iter().any(|x| x.zone() == l.zone()) {
        return Err(d.error(format!("\"{}\" directive is duplicate", d.name)));
    }
    s.limits.push(l);
    Ok(())
}

/// The `_status`, `_log_level` and `_dry_run` lines (`rest` is the suffix).
fn common<L>(s: &mut Limits<L>, rest: &str, d: &Directive) -> Result<bool, GrammarError> {
    match rest {
        "status" => {
            s.status = d
                .one_arg()?
                .parse()
                .ok()
                .filter(|c| (400..=599).contains(c))
                .ok_or_else(|| d.error("value must be between 400 and 599"))?;
        }
        "log_level" => {
            s.log_level = match d.one_arg()? {
                "info" => LogLevel::Info,
                "notice" => LogLevel::Notice,
                "warn" => LogLevel::Warn,
                "error" => LogLevel::Error,
                v => return Err(d.error(format!("invalid value \"{v}\""))),
            }
        }
        "dry_run" => s.dry_run = d.on_off()?,
        _ => return Ok(false),
    }
    Ok(true)
}

fn limit_conn(d: &Directive) -> Result<LimitConn, GrammarError> {
    let [zone, n] = d.args.as_slice() else {
        return Err(d.error("invalid number of arguments in \"limit_conn\" directive"));
    };
    let max = n
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| d.error(format!("invalid number of connections \"{n}\"")))?;
    Ok(LimitConn {
        zone: zone.clone(),
        max,
        place: d.place.clone(),
    })
}

fn limit_req(d: &Directive) -> Result<LimitReq, GrammarError> {
    if !(1..=3).contains(&d.args.len()) {
        return Err(d.error("invalid number of arguments in \"limit_req\" directive"));
    }
    let (mut zone, mut burst, mut delay) = (None, 0, Some(0));
    for a in &d.args {
        let positive = |v: &str| v.parse::<u64>().ok().filter(|n| *n > 0);
        if let Some(name) = a.strip_prefix("zone=") {
            zone = Some(name.to_owned());
        } else if let Some(v) = a.strip_prefix("burst=") {
            burst = positive(v).ok_or_else(|| d.error(format!("invalid burst value \"{a}\"")))?;
        } else if let Some(v) = a.strip_prefix("delay=") {
            delay =
                Some(positive(v).ok_or_else(|| d.error(format!("invalid delay value \"{a}\"")))?);
        } else if a == "nodelay" {
            delay = None;
        } else {
            return Err(d.error(format!("invalid parameter \"{a}\"")));
        }
    }
    let zone = zone.ok_or_else(|| d.error("\"limit_req\" must have \"zone\" parameter"))?;
    Ok(LimitReq {
        zone,
        burst,
        delay,
        place: d.place.clone(),
    })
}

/// `limit_req_zone` and `limit_conn_zone`, in `http`.
pub fn zone(d: &Directive) -> Result<ZoneDef, GrammarError> {
    let req = d.name == "limit_req_zone";
    let arguments = || {
        d.error(format!(
            "invalid number of arguments in \"{}\" directive",
            d.name
        ))
    };
    let [key, params @ ..] = d.args.as_slice() else {
        return Err(arguments());
    };
    if params.len() != if req { 2 } else { 1 } {
        return Err(arguments());
    }
    if !matches!(key.as_str(), "$binary_remote_addr" | "$remote_addr") {
        return Err(d.error(format!(
            "\"{} {key}\": gluu-lb limits by the client's address only \
             ($binary_remote_addr or $remote_addr)",
            d.name
        )));
    }
    let (mut zone, mut rate) = (None, 1000);
    for a in params {
        if let Some(v) = a.strip_prefix("zone=") {
            let (name, size) = v
                .split_once(':')
                .and_then(|(n, s)| Some((n, parse_size(s)?)))
                .ok_or_else(|| d.error(format!("invalid zone size \"{a}\"")))?;
            // nginx refuses a zone under 8 pages (32k).
            if size < 32 << 10 {
                return Err(d.error(format!("zone \"{a}\" is too small")));
            }
            let states = size.saturating_mul(STATES_PER_MIB) >> 20;
            zone = Some((name.to_owned(), states.min(STATES_MAX)));
        } else if let Some(v) = a.strip_prefix("rate=").filter(|_| req) {
            let (n, scale) = if let Some(n) = v.strip_suffix("r/s") {
                (n, 1)
            } else if let Some(n) = v.strip_suffix("r/m") {
                (n, 60)
            } else {
                (v, 1)
            };
            rate = n
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(1000))
                .map(|r| r / scale)
                .filter(|r| *r > 0)
                .ok_or_else(|| d.error(format!("invalid rate \"{a}\"")))?;
        } else {
            return Err(d.error(format!("invalid parameter \"{a}\"")));
        }
    }
    let (name, states) =
        zone.ok_or_else(|| d.error(format!("\"{}\" must have \"zone\" parameter", d.name)))?;
    Ok(ZoneDef {
        name,
        key: key.clone(),
        states: usize::try_from(states).unwrap_or(usize::MAX),
        rate: req.then_some(rate),
        place: d.place.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directive(text: &str) -> Directive {
        let words: Vec<&str> = text.split_whitespace().collect();
        Directive::for_test(words[0], &words[1..], 7)
    }

    #[test]
    fn zones_and_limits_read_as_nginx_reads_them() {
        let z = zone(&directive(
            "limit_req_zone $binary_remote_addr zone=one:10m rate=30r/m",
        ))
        .expect("valid");
        assert_eq!(
            (z.name.as_str(), z.states, z.rate),
            ("one", 160_000, Some(500))
        );
        let z = zone(&directive(
            "limit_req_zone $remote_addr rate=5r/s zone=two:32k",
        ))
        .expect("valid");
        assert_eq!(
            (z.name.as_str(), z.states, z.rate),
            ("two", 500, Some(5000))
        );
        let z = zone(&directive(
            "limit_conn_zone $binary_remote_addr zone=addr:1m",
        ))
        .expect("conn");
        assert_eq!((z.name.as_str(), z.states, z.rate), ("addr", 16_000, None));
        for (text, said) in [
            (
                "limit_req_zone $binary_remote_addr zone=one:1m",
                "invalid number of arguments",
            ),
            (
                "limit_req_zone $binary_remote_addr zone=one:16k rate=1r/s",
                "is too small",
            ),
            (
                "limit_req_zone $binary_remote_addr zone=one rate=1r/s",
                "invalid zone size",
            ),
            (
                "limit_req_zone $binary_remote_addr zone=one:1m rate=1.5r/s",
                "invalid rate",
            ),
            (
                "limit_req_zone $binary_remote_addr zone=one:1m rate=0r/s",
                "invalid rate",
            ),
            (
                "limit_req_zone $binary_remote_addr zone=one:1m rate=5r/h",
                "invalid rate",
            ),
            (
                "limit_req_zone $binary_remote_addr rate=1r/s sync",
                "invalid parameter \"sync\"",
            ),
            (
                "limit_req_zone $http_x zone=one:1m rate=1r/s",
                "by the client's address only",
            ),
            (
                "limit_conn_zone $binary_remote_addr zone=a:1m rate=1r/s",
                "invalid number of arguments",
            ),
        ] {
            let e = zone(&directive(text)).expect_err(text);
            assert!(
                e.to_string().contains(said) && e.at == "nginx.conf:7",
                "{text}: {e}"
            );
        }

        let mut s = LimitSettings::default();
        let mut c = ConnSettings::default();
        for line in [
            "limit_req zone=one burst=20 nodelay",
            "limit_req zone=two burst=5 delay=2",
            "limit_req zone=three",
            "limit_req_status 429",
            "limit_req_log_level warn",
            "limit_req_dry_run on",
        ] {
            assert!(
                apply(&mut s, &mut c, &directive(line)).expect(line),
                "{line}"
            );
        }
        let got: Vec<_> = s
            .limits
            .iter()
            .map(|l| (l.zone.as_str(), l.burst, l.delay))
            .collect();
        assert_eq!(
            got,
            [
                ("one", 20, None),
                ("two", 5, Some(2)),
                ("three", 0, Some(0))
            ]
        );
        assert_eq!(
            (s.status, s.log_level, s.dry_run),
            (429, LogLevel::Warn, true)
        );
        for (text, said) in [
            ("limit_req zone=one", "\"limit_req\" directive is duplicate"),
            ("limit_req burst=2", "must have \"zone\" parameter"),
            (
                "limit_req zone=x burst=0",
                "invalid burst value \"burst=0\"",
            ),
            ("limit_req zone=x delay=0", "invalid delay value"),
            (
                "limit_req zone=x burst=2 fast",
                "invalid parameter \"fast\"",
            ),
            (
                "limit_req zone=x burst=1 delay=1 nodelay",
                "invalid number of arguments",
            ),
            ("limit_req_status 200", "between 400 and 599"),
            ("limit_req_log_level debug", "invalid value \"debug\""),
        ] {
            let e = apply(&mut s, &mut c, &directive(text)).expect_err(text);
            assert!(e.to_string().contains(said), "{text}: {e}");
        }
        assert!(!apply(&mut s, &mut c, &directive("proxy_pass x")).expect("not ours"));
        for line in [
            "limit_conn addr 10",
            "limit_conn other 1",
            "limit_conn_status 429",
        ] {
            assert!(
                apply(&mut s, &mut c, &directive(line)).expect(line),
                "{line}"
            );
        }
        let got: Vec<_> = c.limits.iter().map(|l| (l.zone.as_str(), l.max)).collect();
        assert_eq!(got, [("addr", 10), ("other", 1)]);
        assert_eq!(c.status, 429);
        for (text, said) in [
            ("limit_conn addr 2", "\"limit_conn\" directive is duplicate"),
            ("limit_conn x 0", "invalid number of connections \"0\""),
            ("limit_conn x", "invalid number of arguments"),
        ] {
            let e = apply(&mut s, &mut c, &directive(text)).expect_err(text);
            assert!(e.to_string().contains(said), "{text}: {e}");
        }
    }
}
