//! gluu-fsync: csync2's job (keep the Gluu and Shibboleth configuration identical on every
//! node) without the cron. Reads the guide's /etc/csync2.cfg; a daemon on every node watches
//! the included trees and pushes each change to every peer within a fraction of a second,
//! over TLS 1.3 with the group key proven, never sent.
//!
//! Layout: [`config`] and [`pattern`] (csync2's grammar and matching), [`index`] (versions
//! and the stored index), [`tree`] (one group here: scanning), [`fsops`] (crash-safe
//! writes), [`wire`] (framing, TLS, authentication), [`exchange`] (one direction of a
//! sync), [`node`] (client and server ends), [`daemon`], [`commands`], [`action`].

pub mod action;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod exchange;
pub mod fsops;
pub mod index;
pub mod node;
pub mod pattern;
pub mod tree;
pub mod wire;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub use config::{Config, ConfigError};
pub use node::Node;

/// csync2 -k: a new group key, 64 characters from `[A-Za-z0-9._]` (csync2's own alphabet,
/// so either program reads the other's keys), mode 0600. An existing file is never replaced.
pub fn keygen(path: &Path) -> std::io::Result<()> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._";
    let mut random = [0u8; 64];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| std::io::Error::other("no randomness"))?;
    let key: Vec<u8> = random
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()])
        .collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&key)?;
    file.sync_all()?;
    fsops::sync_dir(path)
}

/// What `-t` says beyond parse errors: per group, problems that stop this node (errors) and
/// things an admin should know (warnings).
pub fn check(config: &Config, name: &str) -> (Vec<String>, Vec<String>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let mine: Vec<_> = config
        .groups
        .iter()
        .filter(|g| g.host(name).is_some())
        .collect();
    if mine.is_empty() {
        errors.push(format!(
            "this node ({name}) is not a host of any group (set its name with -N)"
        ));
    }
    for group in mine {
        if let Err(e) = std::fs::metadata(&group.key_file) {
            errors.push(format!(
                "group {}: key {}: {e} (make one with gluu-fsync keygen)",
                group.name,
                group.key_file.display()
            ));
        } else if let Some(mode) = gluu_common::tls::exposed_key(&group.key_file, 0o077) {
            warnings.push(format!(
                "group {}: key {} is readable by others (mode {mode:o}); chmod 600 it",
                group.name,
                group.key_file.display(),
            ));
        }
        for root in &group.roots {
            match config.local_path(root, name) {
                Err(e) => errors.push(format!("group {}: include {root}: {e}", group.name)),
                Ok(local) if !local.exists() => warnings.push(format!(
                    "group {}: include {} does not exist on this node",
                    group.name,
                    local.display()
                )),
                Ok(_) => {}
            }
        }
        if group.auto == config::Auto::None {
            warnings.push(format!(
                "group {}: no \"auto\": conflicts wait for gluu-fsync resolve (csync2's default too)",
                group.name
            ));
        }
    }
    (errors, warnings)
}
