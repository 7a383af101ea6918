//! stunnel's file grammar, as its `options.c` reads it: one `option = value` per line,
//! comment lines starting with `;` or `#`, `[service]` headers, options before the first
//! header being globals, and `include = DIR` (every file in DIR, in name order; we also take
//! a single file). There are no inline comments: `client = yes ; x` is a bad value, as in
//! stunnel. Every entry remembers its file and line for error messages.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ConfigError;

pub use gluu_common::place::Place;

#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub place: Place,
}

/// The global part (`name == None`) or one `[service]`.
#[derive(Debug)]
pub struct Section {
    pub name: Option<String>,
    pub place: Place,
    pub entries: Vec<Entry>,
}

/// Nesting bound for `include`, so that a directory including itself is an error, not a hang.
const MAX_INCLUDE_DEPTH: usize = 8;

/// Reads `path` and everything it includes into sections.
pub fn parse(path: &Path) -> Result<Vec<Section>, ConfigError> {
    let file: Arc<Path> = Arc::from(path);
    let mut sections = vec![Section {
        name: None,
        place: Place { file, line: 0 },
        entries: Vec::new(),
    }];
    parse_into(path, &mut sections, 0)?;
    Ok(sections)
}

fn parse_into(path: &Path, sections: &mut Vec<Section>, depth: usize) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::file(path, format!("cannot read configuration: {e}")))?;
    let file: Arc<Path> = Arc::from(path);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    for (i, raw) in text.lines().enumerate() {
        let place = Place {
            file: file.clone(),
            line: i + 1,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(ConfigError::at(
                    &place,
                    "section header needs a closing `]`",
                ));
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(ConfigError::at(&place, "empty section name `[]`"));
            }
            sections.push(Section {
                name: Some(name.to_owned()),
                place,
                entries: Vec::new(),
            });
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(ConfigError::at(
                &place,
                format!("expected `option = value`, found `{line}`"),
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(ConfigError::at(&place, "missing option name before `=`"));
        }
        if key.eq_ignore_ascii_case("include") {
            include(&place, value, sections, depth)?;
            continue;
        }
        if let Some(current) = sections.last_mut() {
            current.entries.push(Entry {
                key: key.to_owned(),
                value: value.to_owned(),
                place,
            });
        }
    }
    Ok(())
}

fn include(
    place: &Place,
    value: &str,
    sections: &mut Vec<Section>,
    depth: usize,
) -> Result<(), ConfigError> {
    if depth >= MAX_INCLUDE_DEPTH {
        return Err(ConfigError::at(
            place,
            format!("`include` nested deeper than {MAX_INCLUDE_DEPTH} levels (a loop?)"),
        ));
    }
    let target = resolve(&place.file, value);
    let meta = std::fs::metadata(&target).map_err(|e| {
        ConfigError::at(
            place,
            format!("option 'include': {}: {e}", target.display()),
        )
    })?;
    if !meta.is_dir() {
        return parse_into(&target, sections, depth + 1);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&target)
        .map_err(|e| {
            ConfigError::at(
                place,
                format!("option 'include': {}: {e}", target.display()),
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for f in files {
        parse_into(&f, sections, depth + 1)?;
    }
    Ok(())
}

/// Relative paths in a configuration are taken relative to the file that names them.
pub fn resolve(file: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_owned()
    } else {
        file.parent().unwrap_or(Path::new(".")).join(p)
    }
}
