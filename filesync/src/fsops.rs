//! The file system side: reading what a path is (`lstat`, never following symlinks), hashing
//! it, and putting a received version in place so that a crash at any instant leaves the old
//! or the new file, whole: content goes to a temp file in the same directory, owner, mode and
//! mtime are set on the temp file, it is fsynced, renamed over the target, and the directory
//! is fsynced. Temp files carry a name the scanner and the watcher ignore, so what we are
//! writing is never taken for a local change and sent back.

use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::index::{Kind, Meta, Stat};

const TEMP_PREFIX: &str = ".gluu-fsync.";
const TEMP_SUFFIX: &str = ".tmp";

/// Whether a file name is one of our temp files.
pub fn is_temp(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)
}

/// A fresh temp file name next to `path`.
pub fn temp_for(path: &Path) -> PathBuf {
    let id = crate::index::random_id();
    path.with_file_name(format!("{TEMP_PREFIX}{id:016x}{TEMP_SUFFIX}"))
}

/// Write `bytes` to `path` durably and atomically (state files, keys).
pub fn write_durably(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let temp = temp_for(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        sync_dir(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// fsync the directory holding `path`, so a rename in it survives a power cut.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    File::open(dir)?.sync_all()
}

fn nanos(secs: i64, nsecs: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsecs)
}

/// What `lstat` says of a path; `None` if it does not exist. Other file types (sockets,
/// devices, FIFOs) come back as `Err` with the reason, for the caller to warn about.
pub fn lstat(path: &Path) -> io::Result<Option<(Kind, Stat)>> {
    found(fs::symlink_metadata(path))
}

/// [`lstat`] of a directory entry: `statx` relative to the open directory, with no path
/// walk from `/` for each name (a scan of 10,000 files spent a third of its time there).
pub fn lstat_entry(entry: &fs::DirEntry) -> io::Result<Option<(Kind, Stat)>> {
    found(entry.metadata())
}

fn found(md: io::Result<fs::Metadata>) -> io::Result<Option<(Kind, Stat)>> {
    let md = match md {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let ft = md.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else {
        return Err(io::Error::other("not a regular file, directory or symlink"));
    };
    Ok(Some((
        kind,
        Stat {
            ino: md.ino(),
            size: if kind == Kind::Dir { 0 } else { md.size() },
            mtime_ns: nanos(md.mtime(), md.mtime_nsec()),
            ctime_ns: nanos(md.ctime(), md.ctime_nsec()),
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
        },
    )))
}

/// Everything a version carries about `path` as it is now: reads the content (files) or
/// the target (symlinks) to hash it.
pub fn describe(path: &Path, kind: Kind, stat: &Stat) -> io::Result<Meta> {
    let (hash, target, size) = match kind {
        Kind::File => (hash_file(path)?, None, stat.size),
        Kind::Symlink => {
            let target = fs::read_link(path)?.to_string_lossy().into_owned();
            (
                *blake3::hash(target.as_bytes()).as_bytes(),
                Some(target.clone()),
                target.len() as u64,
            )
        }
        Kind::Dir | Kind::Deleted => ([0; 32], None, 0),
    };
    Ok(Meta {
        kind,
        mode: if kind == Kind::Symlink {
            0o777
        } else {
            stat.mode
        },
        uid: stat.uid,
        gid: stat.gid,
        user: user_name(stat.uid),
        group: group_name(stat.gid),
        // A symlink's own mtime is not worth a version.
        mtime_ns: if kind == Kind::Symlink {
            0
        } else {
            stat.mtime_ns
        },
        size,
        hash,
        target,
    })
}

pub fn hash_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::open(path)?)?;
    Ok(*hasher.finalize().as_bytes())
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(String::new, |u| u.name)
}

fn group_name(gid: u32) -> String {
    nix::unistd::Group::from_gid(gid.into())
        .ok()
        .flatten()
        .map_or_else(String::new, |g| g.name)
}

/// The owner to set here: by name when the name exists on this node, else by number.
fn owner_here(meta: &Meta) -> (u32, u32) {
    let uid = nix::unistd::User::from_name(&meta.user)
        .ok()
        .flatten()
        .filter(|_| !meta.user.is_empty())
        .map_or(meta.uid, |u| u.uid.as_raw());
    let gid = nix::unistd::Group::from_name(&meta.group)
        .ok()
        .flatten()
        .filter(|_| !meta.group.is_empty())
        .map_or(meta.gid, |g| g.gid.as_raw());
    (uid, gid)
}

fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// Check that nothing between `root` and `path` is a symlink (a peer must not be able to
/// write through one), creating missing directories on the way (mode 0755; their own
/// versions arrive in the same exchange and set the real mode).
pub fn prepare_parent(root: &Path, path: &Path) -> io::Result<()> {
    let rel = path
        .strip_prefix(root)
        .map_err(|_| io::Error::other("outside its include root"))?;
    let mut dir = root.to_path_buf();
    let components: Vec<Component<'_>> = rel.components().collect();
    for component in components.iter().take(components.len().saturating_sub(1)) {
        let Component::Normal(name) = component else {
            return Err(io::Error::other("path has . or .. in it"));
        };
        dir.push(name);
        match fs::symlink_metadata(&dir) {
            Ok(md) if md.file_type().is_symlink() => {
                return Err(io::Error::other(format!(
                    "{} is a symlink: refusing to write through it",
                    dir.display()
                )));
            }
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} is not a directory",
                    dir.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new().mode(0o755).create(&dir)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Set owner, mode and mtime on an open temp file and make it durable: owner first (chown
/// clears set-id bits), then mode, then times, then fsync.
pub fn finish_temp(file: &File, meta: &Meta) -> io::Result<()> {
    let (uid, gid) = owner_here(meta);
    std::os::unix::fs::fchown(file, Some(uid), Some(gid))?;
    file.set_permissions(fs::Permissions::from_mode(meta.mode))?;
    file.set_times(FileTimes::new().set_modified(system_time(meta.mtime_ns)))?;
    file.sync_all()
}

/// Put a finished temp file in place of `path` (rename). The caller fsyncs the directory
/// (once per batch of files: [`sync_dir`]) before it records the new version anywhere.
pub fn commit_temp(temp: &Path, path: &Path) -> io::Result<()> {
    // A directory where a file now belongs: only an empty one may go.
    if let Ok(md) = fs::symlink_metadata(path)
        && md.is_dir()
    {
        fs::remove_dir(path)?;
    }
    fs::rename(temp, path)
}

/// Create or update a directory with the version's owner, mode and mtime.
pub fn make_dir(path: &Path, meta: &Meta) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => {
            fs::remove_file(path)?;
            fs::create_dir(path)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(path)?,
        Err(e) => return Err(e),
    }
    let (uid, gid) = owner_here(meta);
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode))?;
    File::open(path)?.set_times(FileTimes::new().set_modified(system_time(meta.mtime_ns)))?;
    sync_dir(path)
}

/// Create a symlink through a temp name and rename it in place.
pub fn make_symlink(path: &Path, meta: &Meta) -> io::Result<()> {
    let target = meta
        .target
        .as_deref()
        .ok_or_else(|| io::Error::other("symlink without a target"))?;
    let temp = temp_for(path);
    std::os::unix::fs::symlink(target, &temp)?;
    let (uid, gid) = owner_here(meta);
    let result = std::os::unix::fs::lchown(&temp, Some(uid), Some(gid))
        .and_then(|()| commit_temp(&temp, path))
        .and_then(|()| sync_dir(path));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Remove what is at `path`. A directory is removed only when empty: anything still in it
/// (an excluded file, say) is not ours to delete.
pub fn remove(path: &Path) -> io::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    result?;
    sync_dir(path)
}

/// Keep the version at `path` (a regular file) before it is overwritten or deleted:
/// `DIR/<path>.1` is the newest, older ones shift up to `.generations`, the oldest is dropped.
pub fn backup(path: &Path, dir: &Path, generations: u32) -> io::Result<PathBuf> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let base = dir.join(rel);
    if let Some(parent) = base.parent() {
        fs::create_dir_all(parent)?;
    }
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", base.display()));
    for n in (1..generations).rev() {
        if numbered(n).exists() {
            fs::rename(numbered(n), numbered(n + 1))?;
        }
    }
    let target = numbered(1);
    let temp = temp_for(&target);
    fs::copy(path, &temp)?;
    File::open(&temp)?.sync_all()?;
    fs::rename(&temp, &target)?;
    sync_dir(&target)?;
    Ok(target)
}

/// Prefixes an error with the path it happened on, keeping its kind.
pub fn at(path: &Path) -> impl Fn(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Refuses a file of `size` bytes for `dest` when its file system has less room (what this
/// process may use: root may use the blocks reserved for root), before any of it is
/// written or fetched. A disk that fills anyway fails the write, as any write fails.
pub fn room_for(dest: &Path, size: u64) -> io::Result<()> {
    // The file system of the nearest directory there is (a conflict copy's may not be yet).
    let mut dir = dest.parent().unwrap_or(Path::new("/"));
    let fs = loop {
        match (nix::sys::statvfs::statvfs(dir), dir.parent()) {
            (Ok(fs), _) => break fs,
            (Err(nix::errno::Errno::ENOENT), Some(up)) => dir = up,
            (Err(e), _) => return Err(at(dir)(e.into())),
        }
    };
    let blocks = if nix::unistd::geteuid().is_root() {
        fs.blocks_free()
    } else {
        fs.blocks_available()
    };
    let free = blocks.saturating_mul(fs.fragment_size());
    if size > free {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "{}: {size} bytes do not fit ({free} bytes free on its file system)",
                dest.display()
            ),
        ));
    }
    Ok(())
}

/// Read up to `buf.len()` bytes, fewer only at the end of the file.
pub fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_writing_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink("/tmp", root.join("link")).unwrap();
        let err = prepare_parent(&root, &root.join("link/x")).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        prepare_parent(&root, &root.join("a/b/c")).unwrap();
        assert!(root.join("a/b").is_dir());
    }

    #[test]
    fn backups_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        let backups = dir.path().join("backups");
        for n in 0..4 {
            fs::write(&file, format!("v{n}")).unwrap();
            backup(&file, &backups, 2).unwrap();
        }
        let rel = file.strip_prefix("/").unwrap();
        let base = backups.join(rel);
        assert_eq!(
            fs::read_to_string(format!("{}.1", base.display())).unwrap(),
            "v3"
        );
        assert_eq!(
            fs::read_to_string(format!("{}.2", base.display())).unwrap(),
            "v2"
        );
        assert!(!Path::new(&format!("{}.3", base.display())).exists());
    }
}
