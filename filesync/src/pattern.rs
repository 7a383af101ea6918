//! csync2's include/exclude rules: patterns that start with `/` (or a `%prefix%`) match the
//! path or any directory above it (fnmatch with FNM_LEADING_DIR); other patterns match the
//! base name; the last rule that matches decides. Like csync2, which does not descend into an
//! excluded directory, a path under an excluded directory is excluded too.
//!
//! Everything here works on *logical* paths, the paths as the configuration writes them
//! (with `%prefix%` unexpanded) and as they travel between nodes.

use glob::MatchOptions;
use gluu_common::place::Place;

use crate::config::ConfigError;

/// fnmatch(3) without FNM_PATHNAME or FNM_PERIOD, as csync2 calls it: `*` crosses `/`, a
/// leading dot is not special.
const FNMATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

#[derive(Debug, Clone)]
pub struct Pattern {
    glob: glob::Pattern,
    /// Matches the whole path (and its leading directories) rather than the base name.
    path: bool,
}

impl Pattern {
    pub fn new(text: &str, place: &Place) -> Result<Pattern, ConfigError> {
        let glob = glob::Pattern::new(text.trim_end_matches('/')).map_err(|e| ConfigError {
            at: place.to_string(),
            message: format!("bad pattern \"{text}\": {}", e.msg),
        })?;
        Ok(Pattern {
            glob,
            path: text.starts_with('/') || text.starts_with('%'),
        })
    }

    fn matches(&self, path: &str) -> bool {
        if self.path {
            ancestors(path).any(|p| self.glob.matches_with(p, FNMATCH))
        } else {
            let base = path.rsplit('/').next().unwrap_or(path);
            self.glob.matches_with(base, FNMATCH)
        }
    }
}

/// `path` and each directory above it, longest first: `/a/b/c`, `/a/b`, `/a`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path), |p| {
        p.rfind('/').filter(|i| *i > 0).map(|i| &p[..i])
    })
}

/// Include (`true`) and exclude rules in file order.
#[derive(Debug, Clone, Default)]
pub struct Rules(Vec<(bool, Pattern)>);

impl Rules {
    pub fn push(&mut self, include: bool, pattern: Pattern) {
        self.0.push((include, pattern));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What the last matching rule says of this one path (`None`: no rule matches).
    fn verdict(&self, path: &str) -> Option<bool> {
        self.0
            .iter()
            .rev()
            .find(|(_, p)| p.matches(path))
            .map(|(include, _)| *include)
    }

    /// Whether `path`, under the include root `root`, is replicated: included by the last
    /// rule matching it, and no directory between it and the root is excluded (what is
    /// above the root is the admin's business: a root under a hidden directory is fine).
    pub fn accepts(&self, root: &str, path: &str) -> bool {
        self.verdict(path) == Some(true)
            && ancestors(path)
                .skip(1)
                .take_while(|dir| dir.len() >= root.len())
                .all(|dir| self.verdict(dir) != Some(false))
    }

    /// [`Rules::accepts`] for a path whose directories are already known to be accepted.
    pub fn accepts_here(&self, path: &str) -> bool {
        self.verdict(path) == Some(true)
    }

    /// For action patterns: whether any rule matches (actions have no exclusions).
    pub fn any_matches(&self, path: &str) -> bool {
        self.0.iter().any(|(_, p)| p.matches(path))
    }
}

/// Whether a logical path from the wire is well formed: absolute (or starting with a
/// `%prefix%`), no empty, `.` or `..` components, no NUL, bounded length.
pub fn well_formed(path: &str) -> bool {
    const MAX_PATH: usize = 4096;
    let (prefixed, rest) = if let Some(rest) = path.strip_prefix('%') {
        match rest.split_once('%') {
            Some((name, rest)) if !name.is_empty() && !name.contains('/') => (true, rest),
            _ => return false,
        }
    } else {
        (false, path)
    };
    // A bare `%NAME%` is the root of `include %NAME%;` itself.
    let below = |rest: &str| {
        rest.starts_with('/')
            && rest[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..")
    };
    path.len() <= MAX_PATH && !path.contains('\0') && ((prefixed && rest.is_empty()) || below(rest))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;

    fn rules(list: &[(bool, &str)]) -> Rules {
        let place = Place {
            file: Arc::from(Path::new("t")),
            line: 1,
        };
        let mut rules = Rules::default();
        for (include, text) in list {
            rules.push(*include, Pattern::new(text, &place).unwrap());
        }
        rules
    }

    #[test]
    fn last_match_wins_and_basenames() {
        let r = rules(&[
            (true, "/etc/gluu"),
            (false, "*~"),
            (false, ".*"),
            (false, "/etc/gluu/secret"),
            (true, "/etc/gluu/secret/public.pem"),
        ]);
        assert!(r.accepts("/etc/gluu", "/etc/gluu"));
        assert!(r.accepts("/etc/gluu", "/etc/gluu/a/b.json"));
        assert!(!r.accepts("/etc/gluu", "/etc/gluu/a/b.json~"));
        assert!(
            !r.accepts("/etc/gluu", "/etc/gluu/.git/config"),
            "under an excluded dir"
        );
        assert!(!r.accepts("/etc/gluuish", "/etc/gluuish"));
        assert!(!r.accepts("/etc", "/etc"));
        assert!(!r.accepts("/etc/gluu", "/etc/gluu/secret/x"));
        // Included by the last rule, but its directory is excluded: csync2 never gets there.
        // Above the root, nothing is checked.
        let hidden = rules(&[(true, "/home/u/.config/gluu"), (false, ".*")]);
        assert!(hidden.accepts("/home/u/.config/gluu", "/home/u/.config/gluu/a"));
        assert!(!hidden.accepts("/home/u/.config/gluu", "/home/u/.config/gluu/.a/b"));
        assert!(!r.accepts("/etc/gluu", "/etc/gluu/secret/public.pem"));
    }

    #[test]
    fn wire_paths() {
        for good in ["/a", "/a/b c/d", "%root%/x", "%root%", "/a/.hidden"] {
            assert!(well_formed(good), "{good}");
        }
        for bad in [
            "", "a/b", "/a/../b", "/a//b", "/a/./b", "/a/", "%r%x", "%%/a", "%%", "/a\0b",
            "%root/x",
        ] {
            assert!(!well_formed(bad), "{bad:?}");
        }
    }
}
