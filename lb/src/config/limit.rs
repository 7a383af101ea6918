//! nginx's request rate limits: `limit_req_zone` in `http`, and `limit_req`,
//! `limit_req_status`, `limit_req_log_level` and `limit_req_dry_run` in `http`, `server`
//! and `location`, with `ngx_http_limit_req_module`'s grammar and words. What they do at
//! request time is in `crate::limit`.

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
    /// Requests per second, in thousandths (nginx's unit: `30r/m` is 500).
    pub rate: u64,
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

/// The `limit_req` settings of a block, inherited as nginx inherits them: a block with a
/// `limit_req` line of its own inherits none of its parent's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitSettings {
    pub limits: Vec<LimitReq>,
    /// `limit_req_status` (503).
    pub status: u16,
    pub log_level: LogLevel,
    /// `limit_req_dry_run on`: counted and logged, never refused or delayed.
    pub dry_run: bool,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            limits: Vec::new(),
            status: 503,
            log_level: LogLevel::Error,
            dry_run: false,
        }
    }
}

/// Applies `d` when it is one of the `limit_req` lines of a block; `Ok(false)` when not.
pub fn apply(s: &mut LimitSettings, d: &Directive) -> Result<bool, GrammarError> {
    match d.name.as_str() {
        "limit_req" => {
            let l = limit_req(d)?;
            if s.limits.iter().any(|x| x.zone == l.zone) {
                return Err(d.error("\"limit_req\" directive is duplicate"));
            }
            s.limits.push(l);
        }
        "limit_req_status" => {
            s.status = d
                .one_arg()?
                .parse()
                .ok()
                .filter(|c| (400..=599).contains(c))
                .ok_or_else(|| d.error("value must be between 400 and 599"))?;
        }
        "limit_req_log_level" => {
            s.log_level = match d.one_arg()? {
                "info" => LogLevel::Info,
                "notice" => LogLevel::Notice,
                "warn" => LogLevel::Warn,
                "error" => LogLevel::Error,
                v => return Err(d.error(format!("invalid value \"{v}\""))),
            }
        }
        "limit_req_dry_run" => s.dry_run = d.on_off()?,
        _ => return Ok(false),
    }
    Ok(true)
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

/// `limit_req_zone`, in `http`.
pub fn zone(d: &Directive) -> Result<ZoneDef, GrammarError> {
    let [key, params @ ..] = d.args.as_slice() else {
        return Err(d.error("invalid number of arguments in \"limit_req_zone\" directive"));
    };
    if params.len() != 2 {
        return Err(d.error("invalid number of arguments in \"limit_req_zone\" directive"));
    }
    if !matches!(key.as_str(), "$binary_remote_addr" | "$remote_addr") {
        return Err(d.error(format!(
            "\"limit_req_zone {key}\": gluu-lb limits requests by the client's address only \
             ($binary_remote_addr or $remote_addr)"
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
        } else if let Some(v) = a.strip_prefix("rate=") {
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
        zone.ok_or_else(|| d.error("\"limit_req_zone\" must have \"zone\" parameter"))?;
    Ok(ZoneDef {
        name,
        key: key.clone(),
        states: usize::try_from(states).unwrap_or(usize::MAX),
        rate,
        place: d.place.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directive(text: &str) -> Directive {
        let mut args: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        let name = args.remove(0);
        Directive {
            name,
            args,
            block: None,
            place: Place {
                file: std::path::Path::new("nginx.conf").into(),
                line: 7,
            },
        }
    }

    #[test]
    fn zones_and_limits_read_as_nginx_reads_them() {
        let z = zone(&directive(
            "limit_req_zone $binary_remote_addr zone=one:10m rate=30r/m",
        ))
        .expect("valid");
        assert_eq!((z.name.as_str(), z.states, z.rate), ("one", 160_000, 500));
        let z = zone(&directive(
            "limit_req_zone $remote_addr rate=5r/s zone=two:32k",
        ))
        .expect("valid");
        assert_eq!((z.name.as_str(), z.states, z.rate), ("two", 500, 5000));
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
        ] {
            let e = zone(&directive(text)).expect_err(text);
            assert!(
                e.to_string().contains(said) && e.at == "nginx.conf:7",
                "{text}: {e}"
            );
        }

        let mut s = LimitSettings::default();
        for line in [
            "limit_req zone=one burst=20 nodelay",
            "limit_req zone=two burst=5 delay=2",
            "limit_req zone=three",
            "limit_req_status 429",
            "limit_req_log_level warn",
            "limit_req_dry_run on",
        ] {
            assert!(apply(&mut s, &directive(line)).expect(line), "{line}");
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
            let e = apply(&mut s, &directive(text)).expect_err(text);
            assert!(e.to_string().contains(said), "{text}: {e}");
        }
        assert!(!apply(&mut s, &directive("proxy_pass x")).expect("not ours"));
    }
}
