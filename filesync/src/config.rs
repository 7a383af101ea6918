//! The configuration: a csync2 file (the guide's /etc/csync2.cfg), read with csync2's grammar
//! and meaning. `group` blocks (`host`, `key`, `include`, `exclude`, `auto`, `action`,
//! `backup-directory`, `backup-generations`), `prefix` blocks, `config` includes and `#`
//! comments. Anything else, including csync2 statements we do not support (`nossl`,
//! `database`), is an error naming file and line: a replication setup that silently ignores a
//! line is how a cluster ends up with nodes that disagree.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gluu_common::place::Place;

use crate::pattern::{Pattern, Rules};

/// csync2's port (IANA-registered); ours too unless a host says otherwise.
pub const DEFAULT_PORT: u16 = 30865;

/// A configuration error: where, and what is wrong. Printed as `MESSAGE in FILE:LINE`, the
/// wording of our other binaries' `-t`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} in {at}")]
pub struct ConfigError {
    pub at: String,
    pub message: String,
}

impl ConfigError {
    fn at(place: &Place, message: impl Into<String>) -> Self {
        Self {
            at: place.to_string(),
            message: message.into(),
        }
    }

    fn file(path: &Path, message: impl Into<String>) -> Self {
        Self {
            at: path.display().to_string(),
            message: message.into(),
        }
    }
}

/// How a conflict (a file changed on two nodes since they last agreed) is settled; csync2's
/// `auto` modes, with csync2's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auto {
    /// Report it; a human decides (`resolve`, `force`).
    None,
    /// The node that starts the exchange wins (csync2: "the host on which csync2 -x runs
    /// first").
    First,
    /// The version with the newer modification time wins.
    Younger,
    /// The version with the older modification time wins.
    Older,
    /// The bigger file wins.
    Bigger,
    /// The smaller file wins.
    Smaller,
    /// The node listed first (leftmost) in the group's `host` lines wins.
    Left,
    /// The node listed last wins.
    Right,
}

impl Auto {
    fn parse(word: &str) -> Option<Auto> {
        Some(match word {
            "none" => Auto::None,
            "first" => Auto::First,
            "younger" => Auto::Younger,
            "older" => Auto::Older,
            "bigger" => Auto::Bigger,
            "smaller" => Auto::Smaller,
            "left" => Auto::Left,
            "right" => Auto::Right,
            _ => return None,
        })
    }
}

/// One `host` of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    /// Where to reach it: `name@address[:port]`, else the name itself, on [`DEFAULT_PORT`].
    pub address: String,
    pub port: u16,
    /// `(name)`: it receives, but its own changes are never taken by the others.
    pub receive_only: bool,
}

impl Host {
    /// The socket address to connect to (resolved now: names may change between runs).
    pub fn resolve(&self) -> std::io::Result<SocketAddr> {
        (self.address.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{} resolves to nothing", self.address)))
    }

    /// Whether an `address` was given (`name@address`), so we listen on it rather than on
    /// every address.
    pub fn has_address(&self) -> bool {
        self.address != self.name
    }
}

/// An `action { ... }` block.
#[derive(Debug, Clone)]
pub struct Action {
    pub patterns: Rules,
    /// The command, split into argv words; `%%` becomes the changed paths.
    pub exec: Vec<String>,
    pub logfile: Option<PathBuf>,
    /// Also run after local changes, not only after changes received from peers.
    pub do_local: bool,
    pub place: Place,
}

/// One `group`.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub hosts: Vec<Host>,
    pub key_file: PathBuf,
    /// Include and exclude rules in file order; the last one matching wins.
    pub rules: Rules,
    /// The literal roots of the `include` statements, in file order (logical paths).
    pub roots: Vec<String>,
    pub auto: Auto,
    pub actions: Vec<Action>,
    pub backup_directory: Option<String>,
    pub backup_generations: u32,
    pub place: Place,
}

impl Group {
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

/// The whole file, and the files it included.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub groups: Vec<Group>,
    /// `prefix NAME { on HOST: PATH; }`: NAME -> (host or `*`) -> path.
    pub prefixes: BTreeMap<String, BTreeMap<String, PathBuf>>,
}

impl Config {
    /// Read and check a csync2 configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut config = Config {
            file: path.to_path_buf(),
            groups: Vec::new(),
            prefixes: BTreeMap::new(),
        };
        let mut stack = Vec::new();
        config.read(path, &mut stack)?;
        if config.groups.is_empty() {
            return Err(ConfigError::file(path, "no group defined"));
        }
        Ok(config)
    }

    fn read(&mut self, path: &Path, stack: &mut Vec<PathBuf>) -> Result<(), ConfigError> {
        if stack.iter().any(|p| p == path) || stack.len() > 8 {
            return Err(ConfigError::file(path, "config files include each other"));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::file(path, format!("cannot read: {e}")))?;
        let file: Arc<Path> = Arc::from(path);
        let mut tokens = Tokens::new(&text, file);
        stack.push(path.to_path_buf());
        while let Some((word, place)) = tokens.lex()? {
            match word.as_str() {
                "group" => {
                    let name = tokens.word("a group name")?;
                    tokens.expect("{")?;
                    let group = parse_group(&mut tokens, name, place)?;
                    if self.groups.iter().any(|g| g.name == group.name) {
                        return Err(ConfigError::at(
                            &group.place,
                            format!("group \"{}\" defined twice", group.name),
                        ));
                    }
                    self.groups.push(group);
                }
                "prefix" => {
                    let name = tokens.word("a prefix name")?;
                    tokens.expect("{")?;
                    let on = parse_prefix(&mut tokens)?;
                    self.prefixes.insert(name, on);
                }
                "config" => {
                    let words = tokens.statement()?;
                    let [included] = words.as_slice() else {
                        return Err(ConfigError::at(&place, "config takes one file name"));
                    };
                    let included = path.parent().unwrap_or(Path::new("/")).join(&included.0);
                    self.read(&included, stack)?;
                }
                other => return Err(ConfigError::at(&place, unknown(other, ""))),
            }
        }
        stack.pop();
        Ok(())
    }

    /// The path a `%NAME%` prefix stands for on `node`.
    fn prefix_on(&self, name: &str, node: &str) -> Option<&Path> {
        let on = self.prefixes.get(name)?;
        on.get(node).or_else(|| on.get("*")).map(PathBuf::as_path)
    }

    /// Turn a logical path (as written in the configuration, as sent on the wire) into the
    /// path on `node`'s disk: `%NAME%` replaced by the prefix's path for that node.
    pub fn local_path(&self, logical: &str, node: &str) -> Result<PathBuf, String> {
        let mut out = String::new();
        let mut rest = logical;
        while let Some(start) = rest.find('%') {
            let Some(len) = rest[start + 1..].find('%') else {
                break;
            };
            let name = &rest[start + 1..start + 1 + len];
            let Some(path) = self.prefix_on(name, node) else {
                return Err(format!("prefix %{name}% has no path for host {node}"));
            };
            out.push_str(&rest[..start]);
            out.push_str(&path.to_string_lossy());
            rest = &rest[start + len + 2..];
        }
        out.push_str(rest);
        Ok(PathBuf::from(out))
    }
}

/// The error for a statement we do not take, with the reason for csync2's we know of.
fn unknown(word: &str, within: &str) -> String {
    match word {
        "nossl" => "\"nossl\" is not supported: gluu-fsync always uses TLS 1.3".into(),
        "database" => {
            "\"database\" is not supported: gluu-fsync keeps its own index in --state-dir".into()
        }
        other => format!("unknown statement \"{other}\"{within}"),
    }
}

fn parse_prefix(tokens: &mut Tokens<'_>) -> Result<BTreeMap<String, PathBuf>, ConfigError> {
    let mut on = BTreeMap::new();
    loop {
        let (word, place) = tokens.need_word("\"on HOST: PATH;\" or \"}\"")?;
        match word.as_str() {
            "}" => return Ok(on),
            "on" => {
                let words = tokens.statement()?;
                let (host, path) = match words.as_slice() {
                    [(host, _), (path, _)] if host.ends_with(':') => {
                        (host.trim_end_matches(':').to_string(), path)
                    }
                    [(host, _), (colon, _), (path, _)] if colon == ":" => (host.clone(), path),
                    _ => return Err(ConfigError::at(&place, "expected \"on HOST: PATH;\"")),
                };
                let host = host.trim_start_matches('@').to_string();
                if !path.starts_with('/') {
                    return Err(ConfigError::at(
                        &place,
                        format!("prefix path \"{path}\" is not absolute"),
                    ));
                }
                on.insert(host, PathBuf::from(path));
            }
            other => {
                return Err(ConfigError::at(
                    &place,
                    format!("unknown statement \"{other}\" in prefix"),
                ));
            }
        }
    }
}

fn parse_group(tokens: &mut Tokens<'_>, name: String, at: Place) -> Result<Group, ConfigError> {
    let mut group = Group {
        name,
        hosts: Vec::new(),
        key_file: PathBuf::new(),
        rules: Rules::default(),
        roots: Vec::new(),
        auto: Auto::None,
        actions: Vec::new(),
        backup_directory: None,
        backup_generations: 3,
        place: at.clone(),
    };
    loop {
        let (word, place) = tokens.need_word("a group statement or \"}\"")?;
        match word.as_str() {
            "}" => break,
            "host" => {
                for (word, place) in tokens.statement()? {
                    let host = parse_host(&word).map_err(|m| ConfigError::at(&place, m))?;
                    if group.host(&host.name).is_some() {
                        return Err(ConfigError::at(
                            &place,
                            format!("host {} listed twice", host.name),
                        ));
                    }
                    group.hosts.push(host);
                }
            }
            "key" => {
                let words = tokens.statement()?;
                let [(file, _)] = words.as_slice() else {
                    return Err(ConfigError::at(&place, "key takes one file name"));
                };
                group.key_file = PathBuf::from(file);
            }
            "include" | "exclude" => {
                let include = word == "include";
                let words = tokens.statement()?;
                if words.is_empty() {
                    return Err(ConfigError::at(&place, format!("{word} takes patterns")));
                }
                for (text, place) in words {
                    if include {
                        let root = include_root(&text).map_err(|m| ConfigError::at(&place, m))?;
                        group.roots.push(root.clone());
                        group.rules.push(true, Pattern::new(&root, &place)?);
                    } else {
                        group.rules.push(false, Pattern::new(&text, &place)?);
                    }
                }
            }
            "auto" => {
                let words = tokens.statement()?;
                let [(mode, _)] = words.as_slice() else {
                    return Err(ConfigError::at(&place, "auto takes one mode"));
                };
                group.auto = Auto::parse(mode).ok_or_else(|| {
                    ConfigError::at(
                        &place,
                        format!(
                            "unknown auto mode \"{mode}\" (none, first, younger, older, bigger, smaller, left, right)"
                        ),
                    )
                })?;
            }
            "backup-directory" => {
                let words = tokens.statement()?;
                let [(dir, _)] = words.as_slice() else {
                    return Err(ConfigError::at(&place, "backup-directory takes one path"));
                };
                if !dir.starts_with('/') && !dir.starts_with('%') {
                    return Err(ConfigError::at(&place, "backup-directory must be absolute"));
                }
                group.backup_directory = Some(dir.trim_end_matches('/').to_string());
            }
            "backup-generations" => {
                let words = tokens.statement()?;
                let n = match words.as_slice() {
                    [(n, _)] => n.parse::<u32>().ok().filter(|n| (1..=100).contains(n)),
                    _ => None,
                };
                group.backup_generations = n.ok_or_else(|| {
                    ConfigError::at(&place, "backup-generations takes a number from 1 to 100")
                })?;
            }
            "action" => {
                tokens.expect("{")?;
                group.actions.push(parse_action(tokens, place)?);
            }
            other => return Err(ConfigError::at(&place, unknown(other, " in group"))),
        }
    }
    if group.hosts.len() < 2 {
        return Err(ConfigError::at(&at, "a group needs at least two hosts"));
    }
    if group.key_file.as_os_str().is_empty() {
        return Err(ConfigError::at(&at, "group has no \"key\""));
    }
    if group.roots.is_empty() {
        return Err(ConfigError::at(&at, "group has no \"include\""));
    }
    Ok(group)
}

fn parse_action(tokens: &mut Tokens<'_>, at: Place) -> Result<Action, ConfigError> {
    let mut action = Action {
        patterns: Rules::default(),
        exec: Vec::new(),
        logfile: None,
        do_local: false,
        place: at.clone(),
    };
    loop {
        let (word, place) = tokens.need_word("an action statement or \"}\"")?;
        match word.as_str() {
            "}" => break,
            "pattern" => {
                for (text, place) in tokens.statement()? {
                    action.patterns.push(true, Pattern::new(&text, &place)?);
                }
            }
            "exec" => {
                let words = tokens.statement()?;
                let [(command, _)] = words.as_slice() else {
                    return Err(ConfigError::at(&place, "exec takes one quoted command"));
                };
                action.exec = command.split_whitespace().map(str::to_string).collect();
                if action.exec.is_empty() {
                    return Err(ConfigError::at(&place, "exec command is empty"));
                }
            }
            "logfile" => {
                let words = tokens.statement()?;
                let [(file, _)] = words.as_slice() else {
                    return Err(ConfigError::at(&place, "logfile takes one file name"));
                };
                action.logfile = Some(PathBuf::from(file));
            }
            "do-local" => {
                tokens.statement()?;
                action.do_local = true;
            }
            other => {
                return Err(ConfigError::at(
                    &place,
                    format!("unknown statement \"{other}\" in action"),
                ));
            }
        }
    }
    if action.exec.is_empty() {
        return Err(ConfigError::at(&at, "action has no \"exec\""));
    }
    if action.patterns.is_empty() {
        return Err(ConfigError::at(&at, "action has no \"pattern\""));
    }
    Ok(action)
}

/// `name`, `name@address`, `name@address:port`, `name@[v6]:port`, each optionally in
/// parentheses (receive-only).
fn parse_host(word: &str) -> Result<Host, String> {
    let (word, receive_only) = match word.strip_prefix('(') {
        Some(inner) => (
            inner
                .strip_suffix(')')
                .ok_or_else(|| format!("unbalanced parenthesis in host \"{word}\""))?,
            true,
        ),
        None => (word, false),
    };
    let (name, address, port) = match word.split_once('@') {
        None => (word, word, DEFAULT_PORT),
        Some((name, at)) => {
            let (address, port) = if let Some(v6) = at.strip_prefix('[') {
                let (address, rest) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("unclosed [ in host \"{word}\""))?;
                (address, rest.strip_prefix(':'))
            } else {
                match at.rsplit_once(':') {
                    Some((address, port)) if !address.contains(':') => (address, Some(port)),
                    _ => (at, None),
                }
            };
            let port = match port {
                None => DEFAULT_PORT,
                Some(p) => p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("bad port \"{p}\" in host \"{word}\""))?,
            };
            (name, address, port)
        }
    };
    if name.is_empty() || address.is_empty() {
        return Err(format!("bad host \"{word}\""));
    }
    Ok(Host {
        name: name.to_string(),
        address: address.to_string(),
        port,
        receive_only,
    })
}

/// The root an `include` names: an absolute path (or one starting with a `%prefix%`), without
/// its trailing slash. Wildcards in `include` are not supported: the daemon watches each
/// root, so it must be a directory or file name.
fn include_root(text: &str) -> Result<String, String> {
    if !text.starts_with('/') && !text.starts_with('%') {
        return Err(format!("include \"{text}\" is not an absolute path"));
    }
    if text.contains(['*', '?', '[']) {
        return Err(format!(
            "include \"{text}\" has wildcards: gluu-fsync includes directories or files by name (use exclude for patterns)"
        ));
    }
    let root = text.trim_end_matches('/');
    if root.is_empty() {
        return Err("include \"/\" would replicate the whole disk".into());
    }
    if root.split('/').any(|c| c == ".." || c == ".") {
        return Err(format!("include \"{text}\" has . or .. in it"));
    }
    Ok(root.to_string())
}

/// csync2's lexer: words separated by blanks, `{`, `}` and `;` as tokens of their own,
/// double-quoted strings, `#` comments to the end of the line.
struct Tokens<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
    file: Arc<Path>,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str, file: Arc<Path>) -> Self {
        Tokens {
            text,
            pos: 0,
            line: 1,
            file,
        }
    }

    fn place(&self) -> Place {
        Place {
            file: self.file.clone(),
            line: self.line,
        }
    }

    fn lex(&mut self) -> Result<Option<(String, Place)>, ConfigError> {
        let bytes = self.text.as_bytes();
        loop {
            while self.pos < bytes.len() && bytes[self.pos].is_ascii_whitespace() {
                if bytes[self.pos] == b'\n' {
                    self.line += 1;
                }
                self.pos += 1;
            }
            if self.pos < bytes.len() && bytes[self.pos] == b'#' {
                while self.pos < bytes.len() && bytes[self.pos] != b'\n' {
                    self.pos += 1;
                }
                continue;
            }
            break;
        }
        if self.pos >= bytes.len() {
            return Ok(None);
        }
        let place = self.place();
        let start = self.pos;
        match bytes[start] {
            b'{' | b'}' | b';' => {
                self.pos += 1;
                Ok(Some((self.text[start..start + 1].to_string(), place)))
            }
            b'"' => {
                let end = self.text[start + 1..].find('"').ok_or_else(|| {
                    ConfigError::at(&place, "unterminated quoted string".to_string())
                })?;
                let word = &self.text[start + 1..start + 1 + end];
                self.line += word.matches('\n').count();
                self.pos = start + end + 2;
                // A quoted word is never a `{`, `}` or `;` token: mark it so.
                Ok(Some((format!("\"{word}"), place)))
            }
            _ => {
                while self.pos < bytes.len()
                    && !bytes[self.pos].is_ascii_whitespace()
                    && !matches!(bytes[self.pos], b'{' | b'}' | b';' | b'#')
                {
                    self.pos += 1;
                }
                Ok(Some((self.text[start..self.pos].to_string(), place)))
            }
        }
    }

    fn need_word(&mut self, what: &str) -> Result<(String, Place), ConfigError> {
        match self.lex()? {
            Some(word) => Ok(word),
            None => Err(ConfigError::at(
                &self.place(),
                format!("unexpected end of file, expected {what}"),
            )),
        }
    }

    fn word(&mut self, what: &str) -> Result<String, ConfigError> {
        let (word, place) = self.need_word(what)?;
        if matches!(word.as_str(), "{" | "}" | ";") {
            return Err(ConfigError::at(
                &place,
                format!("expected {what}, found \"{word}\""),
            ));
        }
        Ok(unquote(word))
    }

    fn expect(&mut self, token: &str) -> Result<(), ConfigError> {
        let (word, place) = self.need_word(&format!("\"{token}\""))?;
        if word != token {
            return Err(ConfigError::at(
                &place,
                format!("expected \"{token}\", found \"{word}\""),
            ));
        }
        Ok(())
    }

    /// The words of a statement up to its `;` (quotes removed).
    fn statement(&mut self) -> Result<Vec<(String, Place)>, ConfigError> {
        let mut words = Vec::new();
        loop {
            let (word, place) = self.need_word("\";\"")?;
            match word.as_str() {
                ";" => return Ok(words),
                "{" | "}" => {
                    return Err(ConfigError::at(
                        &place,
                        format!("expected \";\" before \"{word}\""),
                    ));
                }
                _ => words.push((unquote(word), place)),
            }
        }
    }
}

fn unquote(word: String) -> String {
    match word.strip_prefix('"') {
        Some(inner) => inner.to_string(),
        None => word,
    }
}

impl fmt::Display for Auto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Auto::None => "none",
            Auto::First => "first",
            Auto::Younger => "younger",
            Auto::Older => "older",
            Auto::Bigger => "bigger",
            Auto::Smaller => "smaller",
            Auto::Left => "left",
            Auto::Right => "right",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("csync2.cfg");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    /// The guide's file, as written.
    const GUIDE: &str = "group gluucluster\n{\nhost 159.203.126.10;\nhost 138.197.65.243;\n \nkey /etc/csync2.key;\ninclude /opt/gluu-server/opt/gluu/jetty/identity/conf/shibboleth3/idp/;\ninclude /opt/gluu-server/opt/gluu/jetty/identity/conf/shibboleth3/sp/;\ninclude /opt/gluu-server/opt/shibboleth-idp/conf;\ninclude /opt/gluu-server/opt/shibboleth-idp/metadata/;\ninclude /opt/gluu-server/opt/shibboleth-idp/sp/;\ninclude /opt/gluu-server/opt/shibboleth-idp/temp_metadata/;\ninclude /opt/gluu-server/etc/gluu/conf/;\n \nexclude *~ .*;\n}\n";

    #[test]
    fn the_guides_file_parses() {
        let config = load(GUIDE).unwrap();
        let group = &config.groups[0];
        assert_eq!(group.name, "gluucluster");
        assert_eq!(group.hosts.len(), 2);
        assert_eq!(group.hosts[0].address, "159.203.126.10");
        assert_eq!(group.hosts[0].port, DEFAULT_PORT);
        assert_eq!(group.roots.len(), 7);
        assert_eq!(group.roots[6], "/opt/gluu-server/etc/gluu/conf");
        assert!(group.rules.accepts(
            &group.roots[6],
            "/opt/gluu-server/etc/gluu/conf/oxauth.json"
        ));
        assert!(!group.rules.accepts(
            &group.roots[6],
            "/opt/gluu-server/etc/gluu/conf/oxauth.json~"
        ));
        assert!(
            !group
                .rules
                .accepts(&group.roots[6], "/opt/gluu-server/etc/gluu/conf/.hidden")
        );
        assert!(
            !group
                .rules
                .accepts(&group.roots[6], "/opt/gluu-server/etc/gluu/other")
        );
        assert_eq!(group.auto, Auto::None);
    }

    #[test]
    fn host_forms() {
        let h = parse_host("a@127.0.0.2:4000").unwrap();
        assert_eq!(
            (h.name.as_str(), h.address.as_str(), h.port),
            ("a", "127.0.0.2", 4000)
        );
        let h = parse_host("(b@[::1]:5)").unwrap();
        assert!(h.receive_only);
        assert_eq!((h.address.as_str(), h.port), ("::1", 5));
        let h = parse_host("c@host.example").unwrap();
        assert_eq!((h.address.as_str(), h.port), ("host.example", DEFAULT_PORT));
        assert!(parse_host("d@x:0").is_err());
        assert!(parse_host("(e").is_err());
    }

    #[test]
    fn prefixes_and_full_groups() {
        let config = load(
            "prefix root { on a: /tmp/a; on b: /tmp/b; }\n\
             group g { host a@127.0.0.1:1 b@127.0.0.1:2; key /k; include %root%/etc;\n\
             auto younger; backup-directory %root%/backup; backup-generations 5;\n\
             action { pattern %root%/etc/*.xml; exec \"/bin/true %%\"; logfile /tmp/log; do-local; }\n}\n",
        )
        .unwrap();
        assert_eq!(
            config.local_path("%root%/etc/x", "b").unwrap(),
            PathBuf::from("/tmp/b/etc/x")
        );
        assert!(config.local_path("%root%/etc/x", "c").is_err());
        let g = &config.groups[0];
        assert_eq!(g.auto, Auto::Younger);
        assert_eq!(g.backup_generations, 5);
        assert_eq!(g.actions[0].exec, vec!["/bin/true", "%%"]);
        assert!(g.actions[0].do_local);
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, message) in [
            (
                "group g {\nhost a b;\nkey /k;\ninclude /x;\ncompare x;\n}",
                5,
                "unknown statement \"compare\" in group",
            ),
            ("nossl * *;\n", 1, "\"nossl\" is not supported"),
            (
                "\ndatabase sqlite3:///x;",
                2,
                "\"database\" is not supported",
            ),
            (
                "group g {\nhost a;\nkey /k;\ninclude /x;\n}",
                1,
                "at least two hosts",
            ),
            (
                "group g {\nhost a b;\nkey /k;\ninclude /x/*.conf;\n}",
                4,
                "wildcards",
            ),
            (
                "group g {\nhost a b;\nkey /k;\ninclude /x;\nauto newest;\n}",
                5,
                "unknown auto mode",
            ),
            (
                "group g {\nhost a b;\nkey /k;\ninclude /x\n}",
                5,
                "expected \";\" before \"}\"",
            ),
            ("group g {\nhost a b;\n", 3, "unexpected end of file"),
        ] {
            let err = load(text).unwrap_err();
            assert!(err.message.contains(message), "{text:?}: {err}");
            assert!(err.at.ends_with(&format!(":{line}")), "{text:?}: {err}");
        }
    }
}
