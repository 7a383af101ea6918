//! One group as this node sees it: its include roots on this node's disk, its peers, its key,
//! its index, and the scan that turns what is on disk into versions. A scan reads only
//! `lstat` for files whose metadata did not change since the last one, and hashes the rest
//! outside the index lock; it commits a change only if the file still has the metadata it
//! had when hashed (else a write is in progress and the next event or rescan takes it).
//!
//! A version received from a peer is noted in the install journal (beside the index) before
//! it goes on disk, and the journal is dropped when the index that records it is stored. A
//! daemon killed in between finds, at its next start, the versions whose content is on disk
//! and records them, instead of taking the received file for a local edit (which then met
//! the peer's next version as a conflict).

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard};

use crate::config::{Config, Group, Host};
use crate::fsops;
use crate::index::{GroupState, IndexError, Kind, Meta, Stat, Version};
use crate::pattern;

/// A wanted directory entry on its way into a scan: logical path, local path, the entry.
type Child = (String, PathBuf, std::fs::DirEntry);

#[derive(Debug)]
pub struct Tree {
    pub group: Group,
    /// This node's name.
    pub me: String,
    /// (logical root, its path here), in `include` order.
    pub roots: Vec<(String, PathBuf)>,
    pub peers: Vec<Host>,
    pub key: [u8; 32],
    pub backup_dir: Option<PathBuf>,
    /// Where conflict copies go when there is no backup directory (outside the watched tree).
    pub conflict_dir: PathBuf,
    pub state_file: PathBuf,
    /// File content bytes received from peers since start (chunks copied locally excluded).
    pub bytes_in: AtomicU64,
    state: Mutex<GroupState>,
    /// Checksum of the index as last stored (also serialises saves).
    saved: Mutex<Option<[u8; 32]>>,
    /// The peer notes as last written beside the index.
    noted: Mutex<String>,
    /// The files (path, content hash) an exchange is fetching now: see [`Tree::claim_fetch`].
    fetching: Mutex<HashSet<(String, [u8; 32])>>,
}

/// One exchange's claim on fetching one file version; released when dropped (installed,
/// dropped or failed).
#[derive(Debug)]
pub struct Fetching<'a> {
    tree: &'a Tree,
    key: (String, [u8; 32]),
}

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        self.tree
            .fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// A file found by a scan: logical path, path here, what lstat said.
type Seen = (String, PathBuf, Kind, Stat);

impl Tree {
    pub fn new(config: &Config, group: &Group, me: &str, state_dir: &Path) -> Result<Tree, String> {
        let key = std::fs::read(&group.key_file).map_err(|e| {
            format!(
                "group {}: key {}: {e}",
                group.name,
                group.key_file.display()
            )
        })?;
        if key.trim_ascii().len() < 32 {
            return Err(format!(
                "group {}: key {} is shorter than 32 characters (make one with gluu-fsync keygen)",
                group.name,
                group.key_file.display()
            ));
        }
        let mut roots = Vec::new();
        for root in &group.roots {
            roots.push((root.clone(), config.local_path(root, me)?));
        }
        let backup_dir = match &group.backup_directory {
            Some(dir) => Some(config.local_path(dir, me)?),
            None => None,
        };
        let state_file = GroupState::file(state_dir, &group.name);
        let (mut state, stored) = GroupState::load(&state_file).map_err(|e| e.to_string())?;
        let noted = std::fs::read_to_string(state_file.with_extension("peers")).unwrap_or_default();
        state.read_peer_notes(&noted);
        let tree = Tree {
            group: group.clone(),
            me: me.to_string(),
            roots,
            peers: group
                .hosts
                .iter()
                .filter(|h| h.name != me)
                .cloned()
                .collect(),
            key: crate::wire::group_key(&key),
            backup_dir,
            conflict_dir: state_dir.join("conflicts").join(&group.name),
            state_file,
            bytes_in: AtomicU64::new(0),
            state: Mutex::new(state),
            saved: Mutex::new(stored),
            noted: Mutex::new(noted),
            fetching: Mutex::new(HashSet::new()),
        };
        let recovered = tree.recover().map_err(|e| {
            format!(
                "group {}: install journal {}: {e}",
                group.name,
                tree.journal_path().display()
            )
        })?;
        if recovered > 0 {
            tracing::info!(group = %group.name, versions = recovered, "recorded versions received before the last stop");
        }
        Ok(tree)
    }

    fn journal_path(&self) -> PathBuf {
        self.state_file.with_extension("journal")
    }

    /// Notes `version` before it goes on disk. The caller holds the index lock until the
    /// version is in the index, so a [`Tree::save`] never drops a note whose version it
    /// does not store. Not fsynced: the directory fsync and the index write at the end of
    /// the exchange make a received file durable, this only covers a killed process.
    pub fn journal(&self, version: &Version) -> std::io::Result<()> {
        let data = postcard::to_allocvec(version).map_err(std::io::Error::other)?;
        let len = u32::try_from(data.len()).map_err(std::io::Error::other)?;
        let mut entry = Vec::with_capacity(data.len() + 12);
        entry.extend_from_slice(&len.to_le_bytes());
        entry.extend_from_slice(&data);
        entry.extend_from_slice(&blake3::hash(&data).as_bytes()[..8]);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.journal_path())?
            .write_all(&entry)
    }

    /// Records the journal's versions that reached the disk, stores the index and drops
    /// the journal; returns how many were recorded. A torn last entry ends the journal.
    fn recover(&self) -> Result<usize, String> {
        let bytes = match std::fs::read(self.journal_path()) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.to_string()),
        };
        let mut recovered = 0;
        {
            let mut state = self.state();
            let mut rest = bytes.as_slice();
            while let Some((len, tail)) = rest.split_first_chunk::<4>() {
                let len = u32::from_le_bytes(*len) as usize;
                let Some((data, tail)) = tail.split_at_checked(len) else {
                    break;
                };
                let Some((sum, tail)) = tail.split_first_chunk::<8>() else {
                    break;
                };
                if blake3::hash(data).as_bytes()[..8] != sum[..] {
                    break;
                }
                rest = tail;
                let Ok(version) = postcard::from_bytes::<Version>(data) else {
                    break;
                };
                if let Some(stat) = self.on_disk(&version) {
                    state.commit_remote(version, stat);
                    recovered += 1;
                }
            }
        }
        self.save().map_err(|e| e.to_string())?;
        Ok(recovered)
    }

    /// `Some(stat)` when the disk holds `version` (its install got that far): same type,
    /// and same content or target.
    fn on_disk(&self, version: &Version) -> Option<Option<Stat>> {
        let (_, local) = self.local(&version.path)?;
        let here = fsops::lstat(&local).ok()?;
        let meta = &version.meta;
        match (meta.kind, here) {
            (Kind::Deleted, None) => Some(None),
            (Kind::Dir, Some((Kind::Dir, stat))) => Some(Some(stat)),
            (Kind::File, Some((Kind::File, stat))) => {
                (fsops::hash_file(&local).ok()? == meta.hash).then_some(Some(stat))
            }
            (Kind::Symlink, Some((Kind::Symlink, stat))) => {
                let target = std::fs::read_link(&local).ok()?;
                (target.to_str() == meta.target.as_deref()).then_some(Some(stat))
            }
            _ => None,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claim the fetching of `version`'s content, or `None` when another exchange (with the
    /// same peer over another connection, or with another peer that has the same version)
    /// is fetching it now: the content would cross twice, and the later install find itself
    /// stale.
    pub fn claim_fetch(&self, version: &Version) -> Option<Fetching<'_>> {
        let key = (version.path.clone(), version.meta.hash);
        let fresh = self
            .fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone());
        fresh.then_some(Fetching { tree: self, key })
    }

    /// Store the index if it changed since it was last stored.
    pub fn save(&self) -> Result<(), IndexError> {
        let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        // Under the index lock: no copy of a large index, and a write takes milliseconds.
        let state = self.state();
        *saved = Some(state.save(&self.state_file, *saved)?);
        // Every journaled version is in the index just stored (see `journal`).
        match std::fs::remove_file(self.journal_path()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %self.journal_path().display(), error = %e, "cannot drop the install journal");
            }
            _ => {}
        }
        let notes = state.peer_notes();
        let mut noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
        if *noted != notes {
            // Informational (status without a daemon): no fsync, and a failure only logged.
            let path = self.state_file.with_extension("peers");
            match std::fs::write(&path, &notes) {
                Ok(()) => *noted = notes,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write the peer notes")
                }
            }
        }
        Ok(())
    }

    pub fn peer(&self, name: &str) -> Option<&Host> {
        self.peers.iter().find(|h| h.name == name)
    }

    pub fn receive_only(&self) -> bool {
        self.group.host(&self.me).is_some_and(|h| h.receive_only)
    }

    pub fn peer_names(&self) -> Vec<String> {
        self.peers.iter().map(|h| h.name.clone()).collect()
    }

    /// The logical path of a path here, if it is under one of the roots.
    pub fn logical(&self, local: &Path) -> Option<String> {
        self.roots.iter().find_map(|(logical, root)| {
            let rest = local.strip_prefix(root).ok()?;
            let rest = rest.to_str()?;
            Some(if rest.is_empty() {
                logical.clone()
            } else {
                format!("{logical}/{rest}")
            })
        })
    }

    /// Where a logical path lives here, with the root it is under; `None` if it is not a
    /// path this group replicates (malformed, outside every include, excluded).
    pub fn local(&self, logical: &str) -> Option<(&Path, PathBuf)> {
        if !pattern::well_formed(logical) {
            return None;
        }
        self.roots.iter().find_map(|(root, local_root)| {
            let rest = logical.strip_prefix(root.as_str())?;
            if !self.group.rules.accepts(root, logical) {
                return None;
            }
            if rest.is_empty() {
                Some((local_root.as_path(), local_root.clone()))
            } else {
                let rest = rest.strip_prefix('/')?;
                Some((local_root.as_path(), local_root.join(rest)))
            }
        })
    }

    /// Look at the whole tree (`None`) or at these paths here and below, and record every
    /// change as a new local version. Returns the logical paths that changed.
    pub fn scan(&self, under: Option<&[PathBuf]>) -> Vec<String> {
        let mut seen: BTreeMap<String, (PathBuf, Kind, Stat)> = BTreeMap::new();
        // Logical paths whose subtree was looked at completely: records below them that were
        // not seen are deletions.
        let mut covered: Vec<String> = Vec::new();
        let starts: Vec<(String, PathBuf)> = match under {
            None => self
                .roots
                .iter()
                .filter(|(logical, local)| {
                    // A missing root is never read as "everything was deleted": an unmounted
                    // disk must not wipe the cluster.
                    let present = local.exists();
                    if !present {
                        tracing::warn!(group = %self.group.name, root = %local.display(), logical = %logical, "include root is missing here; not scanning it");
                    }
                    present
                })
                .cloned()
                .collect(),
            Some(paths) => paths
                .iter()
                .filter_map(|p| Some((self.logical(p)?, p.clone())))
                .collect(),
        };
        for (logical, local) in starts {
            if self.wanted(&logical, &local) {
                self.walk(&logical, &local, fsops::lstat(&local), true, &mut seen);
            }
            covered.push(logical);
        }
        let mut changed = Vec::new();
        // Which need hashing: new, or lstat differs from the last look.
        let to_describe: Vec<Seen> = {
            let state = self.state();
            seen.iter()
                .filter(|(path, (_, _, stat))| {
                    state
                        .records
                        .get(*path)
                        .is_none_or(|r| r.stat.as_ref() != Some(stat))
                })
                .map(|(path, (local, kind, stat))| (path.clone(), local.clone(), *kind, *stat))
                .collect()
        };
        let described: Vec<(Seen, Meta)> = to_describe
            .into_iter()
            .filter_map(|(path, local, kind, stat)| match fsops::describe(&local, kind, &stat) {
                Ok(meta) => Some(((path, local, kind, stat), meta)),
                Err(e) => {
                    tracing::debug!(path = %local.display(), error = %e, "changed while being read; will look again");
                    None
                }
            })
            .collect();
        let mut state = self.state();
        for ((path, local, _, stat), meta) in described {
            // Still what we hashed? (A receiver may have replaced it meanwhile, under this lock.)
            match fsops::lstat(&local) {
                Ok(Some((_, now))) if now == stat => {}
                _ => continue,
            }
            match state.records.get_mut(&path) {
                Some(record) if record.version.meta.same_as(&meta) => {
                    record.stat = Some(stat);
                }
                _ => {
                    state.commit_local(&self.me, &path, meta, Some(stat));
                    changed.push(path);
                }
            }
        }
        let gone: Vec<String> = state
            .records
            .iter()
            .filter(|(path, record)| {
                record.version.meta.kind != Kind::Deleted
                    && !seen.contains_key(*path)
                    && covered
                        .iter()
                        .any(|c| *path == c || path.starts_with(&format!("{c}/")))
            })
            .map(|(path, _)| path.clone())
            .collect();
        for path in gone {
            // Gone from our view; make sure it is really gone (not just excluded now).
            if let Some((_, local)) = self.local(&path)
                && matches!(fsops::lstat(&local), Ok(Some(_)))
            {
                continue;
            }
            state.commit_local(&self.me, &path, Meta::deleted(), None);
            changed.push(path);
        }
        changed
    }

    /// Records a change on disk that no scan has seen yet (made within the watcher's debounce
    /// window, say), so that a version arriving from a peer is weighed against what is really
    /// here and never installed over an edit the index does not know. Runs under the state
    /// lock the caller holds; returns whether it recorded a local change.
    pub fn catch_up(&self, state: &mut GroupState, logical: &str) -> bool {
        let Some((root, local)) = self.local(logical) else {
            return false;
        };
        let record = state.records.get(logical);
        let found = match fsops::lstat(&local) {
            Ok(found) => found,
            Err(_) => return false,
        };
        let meta = match (record, found) {
            (None, None) => return false,
            (Some(r), None) if r.version.meta.kind == Kind::Deleted => return false,
            // Gone without a scan noticing; a missing root is never read as deletions.
            (Some(_), None) if root.exists() => None,
            (Some(_), None) => return false,
            (Some(r), Some((_, stat))) if r.stat == Some(stat) => return false,
            (_, Some((kind, stat))) => match fsops::describe(&local, kind, &stat) {
                Ok(meta) => Some((meta, stat)),
                Err(_) => return false,
            },
        };
        match meta {
            None => state.commit_local(&self.me, logical, Meta::deleted(), None),
            Some((meta, stat)) => {
                if let Some(r) = state.records.get_mut(logical)
                    && r.version.meta.same_as(&meta)
                {
                    r.stat = Some(stat);
                    return false;
                }
                state.commit_local(&self.me, logical, meta, Some(stat));
            }
        }
        tracing::info!(group = %self.group.name, path = %logical, "changed here before the watcher reported it: recorded before weighing a peer's version");
        true
    }

    /// Whether a scan looks at this entry. The directories above were accepted on the way
    /// down: only its own rule is left to check.
    fn wanted(&self, logical: &str, local: &Path) -> bool {
        let name = local.file_name().and_then(|n| n.to_str()).unwrap_or("");
        !fsops::is_temp(name) && self.group.rules.accepts_here(logical)
    }

    /// Records a wanted entry, given what lstat said of it, and what is below a directory.
    /// With `fan_out`, the subtrees of a directory are walked on several threads (one per
    /// core, at most four): a scan is mostly `statx` calls, and they run in parallel.
    fn walk(
        &self,
        logical: &str,
        local: &Path,
        found: std::io::Result<Option<(Kind, Stat)>>,
        fan_out: bool,
        seen: &mut BTreeMap<String, (PathBuf, Kind, Stat)>,
    ) {
        let (kind, stat) = match found {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(path = %local.display(), error = %e, "skipped");
                return;
            }
        };
        seen.insert(logical.to_string(), (local.to_path_buf(), kind, stat));
        if kind != Kind::Dir {
            return;
        }
        let entries = match std::fs::read_dir(local) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(path = %local.display(), error = %e, "cannot list directory");
                return;
            }
        };
        let children: Vec<Child> = entries
            .flatten()
            .filter_map(|entry| {
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    tracing::warn!(path = %entry.path().display(), "skipped: name is not UTF-8");
                    return None;
                };
                let (logical, local) = (format!("{logical}/{name}"), entry.path());
                self.wanted(&logical, &local)
                    .then_some((logical, local, entry))
            })
            .collect();
        // Asked only where a fan-out is possible: it reads cgroup files each time.
        let threads = if fan_out && children.len() >= 2 {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
        } else {
            1
        };
        if threads < 2 {
            // A lone subdirectory passes the fan-out on to where the tree branches.
            let fan_out = fan_out && children.len() < 2;
            for (logical, local, entry) in children {
                self.walk(&logical, &local, fsops::lstat_entry(&entry), fan_out, seen);
            }
            return;
        }
        let mut shares: Vec<Vec<Child>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, child) in children.into_iter().enumerate() {
            shares[i % threads].push(child);
        }
        let parts: Vec<BTreeMap<String, (PathBuf, Kind, Stat)>> = std::thread::scope(|s| {
            let running: Vec<_> = shares
                .into_iter()
                .map(|share| {
                    s.spawn(move || {
                        let mut part = BTreeMap::new();
                        for (logical, local, entry) in share {
                            let found = fsops::lstat_entry(&entry);
                            self.walk(&logical, &local, found, false, &mut part);
                        }
                        part
                    })
                })
                .collect();
            running
                .into_iter()
                .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        for part in parts {
            seen.extend(part);
        }
    }

    /// Remove temp files a crash left behind (start-up only: a running receiver owns its own).
    pub fn clean_temps(&self) {
        for (_, root) in &self.roots {
            remove_temps(root);
        }
    }
}

fn remove_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            remove_temps(&path);
        } else if entry.file_name().to_str().is_some_and(fsops::is_temp) {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed a temp file left by an interrupted transfer")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale temp file")
                }
            }
        }
    }
}
