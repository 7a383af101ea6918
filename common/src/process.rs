//! Unix process chores every daemon does the same way: the pid file (written after binding,
//! removed on a clean exit, as stunnel does) and dropping root after binding (`setuid`,
//! `setgid`).

use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

/// A pid file that is removed when dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("{}: cannot write pid file: {e}", path.display()),
            )
        })?;
        Ok(Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Resolves a user given by name or number.
pub fn lookup_user(spec: &str) -> Result<Uid, String> {
    if let Ok(n) = spec.parse::<u32>() {
        return Ok(Uid::from_raw(n));
    }
    match User::from_name(spec) {
        Ok(Some(u)) => Ok(u.uid),
        Ok(None) => Err(format!("no such user '{spec}'")),
        Err(e) => Err(format!("cannot look up user '{spec}': {e}")),
    }
}

/// Resolves a group given by name or number.
pub fn lookup_group(spec: &str) -> Result<Gid, String> {
    if let Ok(n) = spec.parse::<u32>() {
        return Ok(Gid::from_raw(n));
    }
    match Group::from_name(spec) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(format!("no such group '{spec}'")),
        Err(e) => Err(format!("cannot look up group '{spec}': {e}")),
    }
}

/// Whether a process running as `uid` with the one group `gid` (what [`drop_privileges`]
/// leaves) may read `path`, by its mode bits. `true` when the file cannot be looked at:
/// reading it reports that better.
pub fn readable_as(path: &Path, uid: Uid, gid: Gid) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::metadata(path) else {
        return true;
    };
    let bit = if uid.is_root() {
        return true;
    } else if md.uid() == uid.as_raw() {
        0o400
    } else if md.gid() == gid.as_raw() {
        0o040
    } else {
        0o004
    };
    md.mode() & bit != 0
}

/// Gives up root for the given group and user (group first: after setuid it is too late).
/// Supplementary groups are reduced to the one group, so nothing of root's is kept.
pub fn drop_privileges(user: Option<Uid>, group: Option<Gid>) -> Result<(), String> {
    if let Some(gid) = group {
        nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups({gid}): {e}"))?;
        nix::unistd::setgid(gid).map_err(|e| format!("setgid({gid}): {e}"))?;
    }
    if let Some(uid) = user {
        nix::unistd::setuid(uid).map_err(|e| format!("setuid({uid}): {e}"))?;
    }
    Ok(())
}
