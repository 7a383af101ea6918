//! nginx's `map SOURCE $NAME { KEY VALUE; ... }` (in `http`): a variable whose value is
//! looked up by the value of SOURCE (text with variables). As nginx looks: the exact keys
//! first, without regard to case; with `hostnames`, then the wildcard names
//! (`*.example.com`, `.example.com`, `www.example.*`, the most specific first); then the
//! `~` and `~*` regexes in their order (not tried for an empty value); else `default`, or
//! nothing. A value is text with variables too, and in a regex's value `$1`..`$9` and the
//! regex's named groups are its captures.
//!
//! A map is read once ([`Def`]) and compiled where a variable is used
//! ([`Maps::get`]): a value with variables means what the line that uses it allows.

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use regex::bytes::{Captures, Regex};

use super::grammar::{Directive, GrammarError, Place};
use super::location::regex;
use super::proxy::{Template, compile_value};
use super::{Warning, log_format};

/// A `map` block as read.
#[derive(Debug)]
pub struct Def {
    /// The variable it defines, without `$`.
    pub name: String,
    pub place: Place,
    source: String,
    hostnames: bool,
    keys: Vec<(Key, Value)>,
    default: Option<Value>,
}

#[derive(Debug)]
enum Key {
    /// Lowercase.
    Exact(String),
    /// `*.example.com` (and the wildcard half of `.example.com`) as `.example.com`.
    Head(String),
    /// `www.example.*` as `www.example.`.
    Tail(String),
    Regex(Regex),
}

#[derive(Debug)]
struct Value {
    text: String,
    place: Place,
}

/// A map compiled into values of `T`.
#[derive(Debug)]
pub struct Map<T> {
    pub name: String,
    pub source: T,
    hostnames: bool,
    exact: HashMap<String, T>,
    /// Longest first: the most specific wildcard matches.
    heads: Vec<(String, T)>,
    tails: Vec<(String, T)>,
    regexes: Vec<(Regex, T)>,
    default: Option<T>,
}

impl<T: PartialEq> PartialEq for Map<T> {
    /// Maps are one by their variable and what they map (a regex by its pattern).
    fn eq(&self, other: &Self) -> bool {
        let patterns = |m: &Self| {
            m.regexes
                .iter()
                .map(|(r, _)| r.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        self.name == other.name
            && self.source == other.source
            && self.hostnames == other.hostnames
            && self.exact == other.exact
            && self.heads == other.heads
            && self.tails == other.tails
            && patterns(self) == patterns(other)
            && self
                .regexes
                .iter()
                .map(|(_, v)| v)
                .eq(other.regexes.iter().map(|(_, v)| v))
            && self.default == other.default
    }
}

impl<T: Eq> Eq for Map<T> {}

impl<T> Map<T> {
    /// The source and every value.
    pub fn templates(&self) -> impl Iterator<Item = &T> {
        std::iter::once(&self.source)
            .chain(self.exact.values())
            .chain(self.heads.iter().chain(&self.tails).map(|(_, v)| v))
            .chain(self.regexes.iter().map(|(_, v)| v))
            .chain(&self.default)
    }

    /// The value `source` maps to, with the regex's captures when a regex matched and its
    /// value uses them; `None`: no key matched and there is no `default` (an empty value).
    pub fn find<'v>(&self, source: &'v str) -> Option<(&T, Option<Captures<'v>>)> {
        let source = match source.strip_suffix('.') {
            Some(s) if self.hostnames => s,
            _ => source,
        };
        let lower = source.to_ascii_lowercase();
        let wildcard = || {
            let head = self
                .heads
                .iter()
                .find(|(suffix, _)| lower.len() > suffix.len() && lower.ends_with(suffix.as_str()));
            let tail = || {
                self.tails.iter().find(|(prefix, _)| {
                    lower.len() > prefix.len() && lower.starts_with(prefix.as_str())
                })
            };
            head.or_else(tail).map(|(_, v)| (v, None))
        };
        let regexes = || {
            self.regexes
                .iter()
                .filter(|_| !source.is_empty())
                .find_map(|(re, v)| Some((v, Some(re.captures(source.as_bytes())?))))
        };
        self.exact
            .get(&lower)
            .map(|v| (v, None))
            .or_else(wildcard)
            .or_else(regexes)
            .or_else(|| self.default.as_ref().map(|v| (v, None)))
    }
}

/// Reads a `map` line and its block.
pub fn def(d: &Directive) -> Result<Def, GrammarError> {
    let [source, name] = d.args.as_slice() else {
        return Err(d.error("invalid number of arguments in \"map\" directive"));
    };
    let Some(body) = &d.block else {
        return Err(d.error("directive \"map\" has no opening \"{\""));
    };
    // nginx's variable names are without regard to case.
    let name = match name.strip_prefix('$') {
        Some(n) if !n.is_empty() => n.to_ascii_lowercase(),
        _ => return Err(d.error(format!("invalid variable name \"{name}\""))),
    };
    if super::proxy::builtin_variable(&name) {
        return Err(d.error(format!("the duplicate \"{name}\" variable")));
    }
    let mut m = Def {
        name,
        place: d.place.clone(),
        source: source.clone(),
        hostnames: false,
        keys: Vec::new(),
        default: None,
    };
    for e in body {
        match (e.name.as_str(), e.args.as_slice(), &e.block) {
            ("hostnames", [], None) => m.hostnames = true,
            // gluu-lb keeps no map's value: each use looks again, as `volatile` asks.
            ("volatile", [], None) => {}
            (key, [value], None) => {
                let value = Value {
                    text: value.clone(),
                    place: e.place.clone(),
                };
                m.entry(e, key, value)?;
            }
            _ => return Err(e.error("invalid number of the map parameters")),
        }
    }
    Ok(m)
}

impl Def {
    fn entry(&mut self, e: &Directive, key: &str, value: Value) -> Result<(), GrammarError> {
        if key == "default" {
            if self.default.is_some() {
                return Err(e.error("duplicate default map parameter"));
            }
            self.default = Some(value);
            return Ok(());
        }
        if let Some(pattern) = key.strip_prefix('~') {
            let (pattern, caseless) = match pattern.strip_prefix('*') {
                Some(p) => (p, true),
                None => (pattern, false),
            };
            self.keys
                .push((Key::Regex(regex(&e.place, pattern, caseless)?), value));
            return Ok(());
        }
        let key = key.strip_prefix('\\').unwrap_or(key).to_ascii_lowercase();
        let conflicting = || e.error(format!("conflicting parameter \"{key}\""));
        let mut keys = Vec::new();
        if self.hostnames {
            let invalid = || e.error(format!("invalid hostname or wildcard \"{key}\""));
            if key.matches('*').count() > 1 || key.contains("..") || key.contains('\0') {
                return Err(invalid());
            }
            if key.len() > 1 && key.starts_with('.') {
                keys.push(Key::Exact(key[1..].to_owned()));
                keys.push(Key::Head(key.clone()));
            } else if key.len() > 2 && key.starts_with("*.") {
                keys.push(Key::Head(key[1..].to_owned()));
            } else if key.len() > 2 && key.ends_with(".*") {
                keys.push(Key::Tail(key[..key.len() - 1].to_owned()));
            } else if key.contains('*') {
                return Err(invalid());
            }
        }
        if keys.is_empty() {
            keys.push(Key::Exact(key.clone()));
        }
        for k in keys {
            let taken = self.keys.iter().any(|(old, _)| match (old, &k) {
                (Key::Exact(a), Key::Exact(b))
                | (Key::Head(a), Key::Head(b))
                | (Key::Tail(a), Key::Tail(b)) => a == b,
                _ => false,
            });
            if taken {
                return Err(conflicting());
            }
            self.keys.push((
                k,
                Value {
                    text: value.text.clone(),
                    place: value.place.clone(),
                },
            ));
        }
        Ok(())
    }

    /// This map with its source and values compiled by `compile(text, place, regex)`
    /// (`regex`: the entry's, whose captures the value may use).
    pub fn compile<T>(
        &self,
        mut compile: impl FnMut(&str, &Place, Option<&Regex>) -> Result<T, GrammarError>,
    ) -> Result<Map<T>, GrammarError> {
        let mut m = Map {
            name: self.name.clone(),
            source: compile(&self.source, &self.place, None)?,
            hostnames: self.hostnames,
            exact: HashMap::new(),
            heads: Vec::new(),
            tails: Vec::new(),
            regexes: Vec::new(),
            default: None,
        };
        for (key, v) in &self.keys {
            let re = match key {
                Key::Regex(re) => Some(re),
                _ => None,
            };
            let value = compile(&v.text, &v.place, re)?;
            match key {
                Key::Exact(k) => {
                    m.exact.insert(k.clone(), value);
                }
                Key::Head(k) => m.heads.push((k.clone(), value)),
                Key::Tail(k) => m.tails.push((k.clone(), value)),
                Key::Regex(re) => m.regexes.push((re.clone(), value)),
            }
        }
        m.heads.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        m.tails.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        m.default = self
            .default
            .as_ref()
            .map(|v| compile(&v.text, &v.place, None))
            .transpose()?;
        Ok(m)
    }

    /// nginx's WebSocket recipe, `map $http_upgrade $connection_upgrade { default upgrade;
    /// '' close; }` (or `''` for `close`): `upgrade` when the client asks for one.
    pub fn is_websocket_recipe(&self) -> bool {
        let empty_is = |v: &Value| v.text.is_empty() || v.text.eq_ignore_ascii_case("close");
        self.source == "$http_upgrade"
            && self
                .default
                .as_ref()
                .is_some_and(|v| v.text.eq_ignore_ascii_case("upgrade"))
            && matches!(self.keys.as_slice(), [(Key::Exact(k), v)] if k.is_empty() && empty_is(v))
    }
}

/// `$name` in a value of the map line whose regex is `re`: `Some(group)` when it is one of
/// the regex's captures (`$1`..`$9`, or a named group); a capture anywhere else is an
/// error, gluu-lb having no `$1` of a location's regex.
pub fn capture(
    place: &Place,
    name: &str,
    re: Option<&Regex>,
) -> Result<Option<usize>, GrammarError> {
    let group = re.and_then(|re| {
        let numbered = name.parse().ok().filter(|n| *n < re.captures_len());
        numbered.or_else(|| re.capture_names().position(|g| g == Some(name)))
    });
    if group.is_none() && name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(GrammarError::at(
            place,
            format!(
                "\"${name}\" is a regex capture: gluu-lb knows captures only in the value of a \
                 map's regex line, of that regex"
            ),
        ));
    }
    Ok(group)
}

/// The `map` blocks of `http`, compiled into [`Template`]s as lines use their variables
/// (and into a log format's pieces by `log_format`).
#[derive(Debug, Default)]
pub struct Maps {
    defs: HashMap<String, Def>,
    built: RefCell<HashMap<String, Arc<Map<Template>>>>,
    /// The maps being compiled, in order: meeting one again is a loop.
    building: RefCell<Vec<String>>,
}

impl Maps {
    /// Reads the `map` blocks among `http`'s lines. A second map of one variable replaces
    /// the first, as in nginx, with a warning. Each map is compiled once here, so that a
    /// map no line uses is checked too.
    pub fn read(http: &[Directive], warnings: &mut Vec<Warning>) -> Result<Maps, GrammarError> {
        let mut maps = Maps::default();
        for d in http.iter().filter(|d| d.name == "map") {
            let def = def(d)?;
            match maps.defs.entry(def.name.clone()) {
                Entry::Occupied(mut old) => {
                    warnings.push(Warning {
                        at: d.place.to_string(),
                        message: format!(
                            "a second map of \"${}\": it replaces the one at {}",
                            def.name,
                            old.get().place
                        ),
                    });
                    old.insert(def);
                }
                Entry::Vacant(v) => {
                    v.insert(def);
                }
            }
        }
        let mut names: Vec<&String> = maps.defs.keys().collect();
        names.sort_unstable();
        for name in names {
            // A map is good when some line could use it: a value (the error is that one's)
            // or a log format, whose variables are others.
            if let Err(e) = maps.get(name) {
                log_format::map_pieces(name, &maps, &mut Vec::new()).map_err(|_| e)?;
            }
        }
        Ok(maps)
    }

    pub fn def(&self, name: &str) -> Option<&Def> {
        self.defs.get(&name.to_ascii_lowercase())
    }

    /// The map of `$name`; `None` when no map defines `$name`.
    pub fn get(&self, name: &str) -> Result<Option<Arc<Map<Template>>>, GrammarError> {
        let name = name.to_ascii_lowercase();
        if let Some(m) = self.built.borrow().get(&name) {
            return Ok(Some(m.clone()));
        }
        let m = self.compile_with(&name, |def| {
            def.compile(|text, place, re| compile_value(place, text, self, re))
        })?;
        let Some(m) = m.map(Arc::new) else {
            return Ok(None);
        };
        self.built.borrow_mut().insert(name, m.clone());
        Ok(Some(m))
    }

    /// The map of `$name` compiled by `compile`; `None` when no map defines `$name`. A map
    /// met again while it is being compiled leads back to itself: an error.
    pub fn compile_with<T>(
        &self,
        name: &str,
        compile: impl FnOnce(&Def) -> Result<T, GrammarError>,
    ) -> Result<Option<T>, GrammarError> {
        let Some(def) = self.def(name) else {
            return Ok(None);
        };
        let name = &def.name;
        if self.building.borrow().iter().any(|n| n == name) {
            let chain = self.building.borrow().join(" → $");
            return Err(GrammarError::at(
                &def.place,
                format!(
                    "the map of \"${name}\" refers back to itself (${chain} → ${name}): nginx \
                     would log \"cycle while evaluating variable\" for every request"
                ),
            ));
        }
        self.building.borrow_mut().push(name.to_owned());
        let compiled = compile(def);
        self.building.borrow_mut().pop();
        compiled.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Result<Vec<Directive>, GrammarError> {
        Directive::parse_text(text)
    }

    /// The value each source maps to, as the map's text (`-`: none).
    fn looked_up(map: &str, sources: &[&str]) -> Vec<String> {
        let top = lines(map).expect("valid");
        let m = def(&top[0])
            .expect("a map")
            .compile(|text, _, _| Ok(text.to_owned()))
            .expect("compiled");
        sources
            .iter()
            .map(|s| m.find(s).map_or("-".to_owned(), |(v, _)| v.clone()))
            .collect()
    }

    /// Answers the real nginx 1.22 gave (checked by hand, and in interop.rs).
    #[test]
    fn keys_are_tried_in_nginxs_order() {
        let hosts = "map $http_x $h { hostnames; *.example.com star; .ex.org dot;\n\
                     www.example.* tail; example.com exact; default none;\n\
                     ~^(?<sub>[a-z]+)\\.re\\.com$ re-$sub; ~*^UP up; }";
        let cases = [
            ("www.example.com", "star"),
            ("a.b.example.com", "star"),
            ("example.com", "exact"),
            ("ex.org", "dot"),
            ("a.ex.org", "dot"),
            ("www.example.co.uk", "tail"),
            ("www.example.", "none"),
            ("WWW.EXAMPLE.COM.", "star"),
            ("abc.re.com", "re-$sub"),
            ("ABC.re.com", "none"),
            ("upper", "up"),
            ("Up", "up"),
            ("", "none"),
            ("nothing", "none"),
        ];
        let (sources, want): (Vec<&str>, Vec<&str>) = cases.into_iter().unzip();
        assert_eq!(looked_up(hosts, &sources), want);
        // Exact keys without regard to case, regexes with; the most specific wildcard;
        // no `default`: no value; an empty value matches `''` only, never a regex.
        let cases = [
            ("abc", "lower"),
            ("ABC", "lower"),
            ("abcd", "-"),
            ("AbCd", "regex"),
            ("a.b.c", "deep"),
            ("x.c", "shallow"),
            ("", "empty"),
        ];
        let (sources, want): (Vec<&str>, Vec<&str>) = cases.into_iter().unzip();
        let plain = "map $http_x $low { hostnames; AbC lower; ~^AbC regex; *.c shallow;\n\
                     *.b.c deep; '' empty; ~^$ never; }";
        assert_eq!(looked_up(plain, &sources), want);
        // Without `hostnames` a `*` is a letter, and a trailing dot stays.
        let cases = [("*.c", "star"), ("x.c", "-"), ("a.", "dot"), ("a", "-")];
        let (sources, want): (Vec<&str>, Vec<&str>) = cases.into_iter().unzip();
        let names = "map $http_x $n { *.c star; a. dot; \\default escaped; }";
        assert_eq!(looked_up(names, &sources), want);
        assert_eq!(looked_up(names, &["default", "Default"]), ["escaped"; 2]);
    }

    #[test]
    fn regex_captures_are_found_for_their_value() {
        let top = lines("map $http_x $c { ~^(\\d+)-(?<b>\\d+)$ x; }").expect("valid");
        let m = def(&top[0])
            .expect("a map")
            .compile(|text, _, _| Ok(text.to_owned()))
            .expect("compiled");
        let (_, caps) = m.find("12-34").expect("matched");
        let caps = caps.expect("a regex matched");
        assert_eq!((&caps[1], &caps["b"]), (&b"12"[..], &b"34"[..]));
    }

    #[test]
    fn errors_are_nginxs() {
        for (text, said) in [
            ("map $a c { }", "invalid variable name \"c\""),
            ("map $a $ { }", "invalid variable name \"$\""),
            ("map $a $host { }", "the duplicate \"host\" variable"),
            ("map $a $c;", "has no opening"),
            ("map $a $c $d { }", "invalid number of arguments in \"map\""),
            (
                "map $a $c { a b c; }",
                "invalid number of the map parameters",
            ),
            (
                "map $a $c { a { } }",
                "invalid number of the map parameters",
            ),
            (
                "map $a $c { default a; default b; }",
                "duplicate default map",
            ),
            ("map $a $c { a b; A c; }", "conflicting parameter \"a\""),
            (
                "map $a $c { hostnames; a*b d; }",
                "invalid hostname or wildcard",
            ),
            (
                "map $a $c { hostnames; *.a.* d; }",
                "invalid hostname or wildcard",
            ),
            (
                "map $a $c { hostnames; a..b d; }",
                "invalid hostname or wildcard",
            ),
            (
                "map $a $c { hostnames; .a b; a c; }",
                "conflicting parameter",
            ),
            (
                "map $a $c { hostnames; .a b; *.a c; }",
                "conflicting parameter",
            ),
            ("map $a $c { ~(a b; }", "cannot be used"),
        ] {
            let top = lines(text).expect("parsed");
            let e = def(&top[0]).expect_err(text);
            assert!(e.to_string().contains(said), "{text}: {e}");
            assert!(e.to_string().ends_with("nginx.conf:1"), "{e}");
        }
    }

    #[test]
    fn maps_are_checked_whether_used_or_not() {
        let read = |text: &str| {
            let top = lines(&format!("{text}\n")).expect("parsed");
            let mut warnings = Vec::new();
            Maps::read(&top, &mut warnings).map(|_| warnings)
        };
        for (text, said, line) in [
            (
                "map $http_a $c {\ndefault $nope; }",
                "unknown \"nope\" variable",
                2,
            ),
            (
                "map $http_a $c { default $c; }",
                "refers back to itself ($c → $c)",
                1,
            ),
            (
                "map $http_a $c { default $d; }\nmap $http_b $d {\n~. $c; }",
                "($c → $d → $c)",
                1,
            ),
            (
                "map $http_a $c { default $1; }",
                "\"$1\" is a regex capture",
                1,
            ),
            (
                "map $http_a $c { ~(x) $2; }",
                "\"$2\" is a regex capture",
                1,
            ),
            (
                "map $http_a $c { ~(?<n>x) $m; }",
                "unknown \"m\" variable",
                1,
            ),
        ] {
            let e = read(text).expect_err(text);
            assert!(e.to_string().contains(said), "{text}: {e}");
            assert!(e.to_string().ends_with(&format!(":{line}")), "{e}");
        }
        // A map of a variable gluu-lb has in log formats only is for them.
        assert!(read("map $status $Log { ~^2 0; default $Request_Time; }").is_ok());
        let warnings =
            read("map $http_a $c { }\nmap $host $c { ~(x)(?<n>y) $1$n; }").expect("valid");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].message.contains("replaces the one at"));
    }

    #[test]
    fn nginxs_websocket_recipe_is_known() {
        let recipe = |text: &str| {
            let top = lines(text).expect("parsed");
            def(&top[0]).expect("valid").is_websocket_recipe()
        };
        assert!(recipe(
            "map $http_upgrade $u { default upgrade; '' close; }"
        ));
        assert!(recipe("map $http_upgrade $u { '' ''; default Upgrade; }"));
        assert!(!recipe(
            "map $http_upgrade $u { default upgrade; '' keep; }"
        ));
        assert!(!recipe("map $http_upgrade $u { default upgrade; }"));
        assert!(!recipe("map $http_x $u { default upgrade; '' close; }"));
        assert!(!recipe(
            "map $http_upgrade $u { default upgrade; '' close; x y; }"
        ));
    }
}
