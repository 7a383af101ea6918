//! nginx's `allow` and `deny` (`ngx_http_access_module`) in `http`, `server` and
//! `location`: rules by client address, the first that matches deciding, none matching
//! letting the request through; a denied request gets 403. A block with a rule of its own
//! inherits none from above, as nginx has it.

use std::net::IpAddr;

use super::grammar::{Directive, GrammarError};
use super::proxy::{ProxySettings, Template};
use super::{Scope, Warning};

/// One `allow` or `deny` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    /// The network and its prefix length; `None`: `all`.
    pub net: Option<(IpAddr, u8)>,
}

impl Rule {
    fn matches(&self, client: IpAddr) -> bool {
        let Some((net, bits)) = self.net else {
            return true;
        };
        match (net, client) {
            (IpAddr::V4(n), IpAddr::V4(c)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(c) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(c)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
                u128::from(n) & mask == u128::from(c) & mask
            }
            _ => false,
        }
    }
}

/// What `rules` say of a request from `client`: the first rule that matches decides
/// (`Some(true)`: allowed); `None` when none matches (nginx's "declined": through, unless
/// `satisfy any` leaves the decision to a password).
pub fn decide(rules: &[Rule], client: IpAddr) -> Option<bool> {
    let client = client.to_canonical();
    rules.iter().find(|r| r.matches(client)).map(|r| r.allow)
}

/// Whether `rules` let a request from `client` through ([`decide`], none matching: yes).
#[cfg(test)]
pub fn allows(rules: &[Rule], client: IpAddr) -> bool {
    decide(rules, client).unwrap_or(true)
}

/// Reads an `allow` or `deny` line (`ADDRESS`, `ADDRESS/BITS` or `all`). Bits set below
/// the prefix are a warning and cleared, as nginx does.
pub fn rule(d: &Directive, warnings: &mut Vec<Warning>) -> Result<Rule, GrammarError> {
    let v = d.one_arg()?;
    let allow = d.name == "allow";
    if v == "all" {
        return Ok(Rule { allow, net: None });
    }
    Ok(Rule {
        allow,
        net: Some(network(d, v, warnings)?),
    })
}

/// Whether `client` is in the network `net` (an address and its prefix length).
pub fn contains((net, bits): (IpAddr, u8), client: IpAddr) -> bool {
    Rule {
        allow: true,
        net: Some((net, bits)),
    }
    .matches(client.to_canonical())
}

/// An `ADDRESS` or `ADDRESS/BITS` of line `d` (`allow`, `deny`, `set_real_ip_from`). Bits
/// set below the prefix are a warning and cleared, as nginx does.
pub fn network(
    d: &Directive,
    v: &str,
    warnings: &mut Vec<Warning>,
) -> Result<(IpAddr, u8), GrammarError> {
    if v.starts_with("unix:") {
        return Err(d.error(format!(
            "\"{} {v}\" is not supported: gluu-lb listens on TCP only",
            d.name
        )));
    }
    let bad = || d.error(format!("invalid parameter \"{v}\""));
    let (addr, bits) = match v.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u8>().map_err(|_| bad())?)),
        None => (v, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    if bits > max {
        return Err(bad());
    }
    let cleared = match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            IpAddr::from(std::net::Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            IpAddr::from(std::net::Ipv6Addr::from(u128::from(a) & mask))
        }
    };
    if cleared != addr {
        warnings.push(Warning {
            at: d.place.to_string(),
            message: format!("low address bits of {v} are meaningless"),
        });
    }
    Ok((cleared, bits))
}

/// What nginx's access phase holds a request to in a block: `allow`/`deny`, `auth_basic`
/// with its user file, and `satisfy`.
#[derive(Clone, Copy, Debug)]
pub struct Access<'a> {
    pub rules: &'a [Rule],
    /// `auth_basic`'s realm (`None`: off).
    pub realm: Option<&'a Template>,
    pub user_file: Option<&'a std::path::Path>,
    pub satisfy_any: bool,
}

impl<'a> Access<'a> {
    /// A block's own.
    pub fn of(s: &'a ProxySettings) -> Access<'a> {
        Access {
            rules: &s.access,
            realm: s.auth_basic.as_ref(),
            user_file: s.auth_basic_user_file.as_deref(),
            satisfy_any: s.satisfy_any,
        }
    }
}

/// nginx's `limit_except METHOD ... { ... }` in a location: requests of any other method
/// are held to the block's `allow`/`deny`, `auth_basic` and `auth_basic_user_file` (GET
/// lets HEAD through too); what the block does not set, and `satisfy`, the location's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitExcept {
    /// The methods let through, upper case.
    methods: Vec<String>,
    /// The block's own rules; `None`: the location's (nginx merges them in).
    rules: Option<Vec<Rule>>,
    /// The block's `auth_basic` (`Some(None)`: `off`).
    realm: Option<Option<Template>>,
    user_file: Option<std::path::PathBuf>,
}

/// The methods nginx 1.22 knows by name.
const METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "MKCOL",
    "COPY",
    "MOVE",
    "OPTIONS",
    "PROPFIND",
    "PROPPATCH",
    "LOCK",
    "UNLOCK",
    "PATCH",
];

impl LimitExcept {
    /// What a request of `method` is held to, the location's being `location`.
    pub fn access<'a>(&'a self, method: &str, location: Access<'a>) -> Access<'a> {
        let let_through = self
            .methods
            .iter()
            .any(|m| m == method || (m == "GET" && method == "HEAD"));
        if let_through {
            location
        } else {
            self.held(location)
        }
    }

    /// What a request of a method not let through is held to.
    pub fn held<'a>(&'a self, location: Access<'a>) -> Access<'a> {
        Access {
            rules: self.rules.as_deref().unwrap_or(location.rules),
            realm: self.realm.as_ref().map_or(location.realm, Option::as_ref),
            user_file: self.user_file.as_deref().or(location.user_file),
            satisfy_any: location.satisfy_any,
        }
    }
}

/// A `limit_except` block.
pub fn limit_except(
    d: &Directive,
    cx: &Scope<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<LimitExcept, GrammarError> {
    let Some(body) = &d.block else {
        return Err(d.error("directive \"limit_except\" has no opening \"{\""));
    };
    if d.args.is_empty() {
        return Err(d.error("invalid number of arguments in \"limit_except\" directive"));
    }
    let mut methods = Vec::new();
    for m in &d.args {
        let known = METHODS
            .iter()
            .find(|k| k.eq_ignore_ascii_case(m))
            .ok_or_else(|| d.error(format!("invalid method \"{m}\"")))?;
        methods.push((*known).to_owned());
    }
    let mut rules: Option<Vec<Rule>> = None;
    // The block's auth lines, read as a block's are.
    let mut own = ProxySettings::default();
    let has = |name: &str| body.iter().any(|d| d.name == name);
    for inner in body {
        match inner.name.as_str() {
            "allow" | "deny" => rules.get_or_insert_default().push(rule(inner, warnings)?),
            "auth_basic" | "auth_basic_user_file" => {
                super::proxy::apply(&mut own, inner, cx, warnings)?;
            }
            other => {
                return Err(inner.error(format!(
                    "unknown directive \"{other}\" in limit_except (gluu-lb takes allow, \
                     deny, auth_basic and auth_basic_user_file there, as nginx)"
                )));
            }
        }
    }
    Ok(LimitExcept {
        methods,
        rules,
        realm: has("auth_basic").then_some(own.auth_basic),
        user_file: own.auth_basic_user_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, arg: &str, warnings: &mut Vec<Warning>) -> Result<Rule, GrammarError> {
        rule(&Directive::for_test(name, &[arg], 9), warnings)
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let mut warnings = Vec::new();
        let rules: Vec<Rule> = [
            ("deny", "10.1.2.3"),
            ("allow", "10.0.0.0/8"),
            ("allow", "2001:db8::/32"),
            ("allow", "192.168.1.77/24"),
            ("deny", "all"),
        ]
        .iter()
        .map(|(n, a)| line(n, a, &mut warnings).expect(a))
        .collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0]
                .message
                .contains("low address bits of 192.168.1.77/24")
        );
        for (client, allowed) in [
            ("10.1.2.3", false),
            ("10.1.2.4", true),
            ("::ffff:10.9.9.9", true),
            ("2001:db8:1::5", true),
            ("2001:db9::5", false),
            ("192.168.1.200", true),
            ("192.168.2.1", false),
            ("127.0.0.1", false),
        ] {
            let ip: IpAddr = client.parse().expect("ip");
            assert_eq!(allows(&rules, ip), allowed, "{client}");
        }
        assert!(
            allows(&[], "127.0.0.1".parse().expect("ip")),
            "no rule: allowed"
        );
        for bad in ["10.0.0.0/33", "foo", "::1/129", "10.0.0.0/x"] {
            let e = line("allow", bad, &mut warnings).expect_err(bad);
            assert!(e.to_string().contains("invalid parameter"), "{e}");
        }
        assert!(line("deny", "unix:", &mut warnings).is_err());
    }

    #[test]
    fn limit_except_holds_other_methods_to_its_rules() {
        let mut warnings = Vec::new();
        let maps = super::super::map::Maps::default();
        let cx = Scope {
            root: std::path::Path::new("/etc/nginx"),
            maps: &maps,
            charsets: &[],
        };
        let parsed = |text: &str| {
            let top = Directive::parse_text(text).expect("parse");
            limit_except(&top[0], &cx, &mut Vec::new())
        };
        let own = parsed("limit_except get POST { allow 10.0.0.0/8; deny all; }").expect("own");
        let location = [line("deny", "all", &mut warnings).expect("deny")];
        let settings = ProxySettings {
            access: location.to_vec(),
            ..ProxySettings::default()
        };
        let at_location = Access::of(&settings);
        for (method, allowed) in [
            ("GET", false),
            ("HEAD", false),
            ("POST", false),
            ("PUT", true),
        ] {
            let rules = own.access(method, at_location).rules;
            // The block's rules let 10/8 through; the location's let nobody.
            assert_eq!(
                allows(rules, "10.1.1.1".parse().expect("ip")),
                allowed,
                "{method}"
            );
        }
        let empty = parsed("limit_except GET { }").expect("empty");
        assert_eq!(empty.access("DELETE", at_location).rules, &location);
        // Its auth lines for the other methods; the location's rules, which it has none of.
        let auth = parsed("limit_except GET { auth_basic writes; auth_basic_user_file users; }")
            .expect("auth");
        let put = auth.access("PUT", at_location);
        assert!(put.realm.is_some() && !put.satisfy_any);
        assert_eq!(
            put.user_file,
            Some(std::path::Path::new("/etc/nginx/users"))
        );
        assert_eq!(put.rules, &location);
        let get = auth.access("GET", at_location);
        assert!(get.realm.is_none() && get.user_file.is_none() && !get.satisfy_any);
        let off = parsed("limit_except GET { auth_basic off; }").expect("off");
        let with_realm = ProxySettings {
            auth_basic: Some(Vec::new()),
            ..ProxySettings::default()
        };
        assert!(off.access("PUT", Access::of(&with_realm)).realm.is_none());
        assert!(off.access("GET", Access::of(&with_realm)).realm.is_some());
        let err = parsed("limit_except GET TRACE { }").expect_err("TRACE");
        assert!(
            err.to_string().contains("invalid method \"TRACE\""),
            "{err}"
        );
        for text in [
            "limit_except GET { proxy_pass https://b; }",
            "limit_except GET { satisfy any; }",
        ] {
            let err = parsed(text).expect_err(text);
            assert!(err.to_string().contains("in limit_except"), "{err}");
        }
    }
}
