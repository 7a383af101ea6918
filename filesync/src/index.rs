//! The per-node index of one group: for every replicated path, what it is (type, mode, owner,
//! mtime, size, blake3 of the content), which version it is (a version vector), and when it
//! last changed here (a local sequence number, so a peer can ask for "everything since N").
//! Deleted paths stay as tombstones until every peer has acknowledged them.
//!
//! Stored as one file per group in the state directory, written to a temp file, fsynced and
//! renamed, with a blake3 checksum: after a crash the index is the old one or the new one,
//! and a damaged file is refused rather than silently replaced by an empty index (which
//! would turn every file into a conflict).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsops;

const MAGIC: &[u8] = b"gluu-fsync index 1\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A tombstone: the path was deleted.
    Deleted,
}

/// Which node changed a path how many times. Version A is newer than B when A has seen every
/// change B has (each counter >=) and more; when each has changes the other has not, the
/// path was changed on two nodes since they last agreed: a conflict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector(pub BTreeMap<String, u64>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Equal,
    Older,
    Newer,
    Concurrent,
}

impl VersionVector {
    pub fn bump(&mut self, node: &str) {
        *self.0.entry(node.to_string()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &VersionVector) {
        for (node, n) in &other.0 {
            let mine = self.0.entry(node.clone()).or_default();
            *mine = (*mine).max(*n);
        }
    }

    /// How `self` relates to `other`.
    pub fn compare(&self, other: &VersionVector) -> Order {
        let (mut less, mut more) = (false, false);
        for node in self.0.keys().chain(other.0.keys()) {
            let (a, b) = (
                self.0.get(node).copied().unwrap_or(0),
                other.0.get(node).copied().unwrap_or(0),
            );
            less |= a < b;
            more |= a > b;
        }
        match (less, more) {
            (false, false) => Order::Equal,
            (true, false) => Order::Older,
            (false, true) => Order::Newer,
            (true, true) => Order::Concurrent,
        }
    }
}

/// What a path is: everything that travels and is set on the receiving side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits (07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Owner and group by name: used on the receiving side when the name exists there, so
    /// nodes whose `jetty` user has different ids still agree.
    pub user: String,
    pub group: String,
    pub mtime_ns: i64,
    pub size: u64,
    /// blake3 of the content (files) or of the target (symlinks).
    pub hash: [u8; 32],
    pub target: Option<String>,
}

impl Meta {
    pub fn deleted() -> Meta {
        Meta {
            kind: Kind::Deleted,
            mode: 0,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            mtime_ns: 0,
            size: 0,
            hash: [0; 32],
            target: None,
        }
    }

    /// Whether two versions are the same thing on disk. A directory's mtime changes whenever
    /// an entry in it does, so it is not part of a directory's identity (else every file
    /// received would make its directory look changed and bounce back).
    pub fn same_as(&self, other: &Meta) -> bool {
        match (self.kind, other.kind) {
            (Kind::Deleted, Kind::Deleted) => true,
            (Kind::Dir, Kind::Dir) => {
                self.mode == other.mode && self.uid == other.uid && self.gid == other.gid
            }
            _ => self == other,
        }
    }

    /// Same bytes (type and content), whatever the metadata.
    pub fn same_content(&self, other: &Meta) -> bool {
        self.kind == other.kind && self.hash == other.hash && self.target == other.target
    }
}

/// One version of a path, as it travels between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub path: String,
    pub meta: Meta,
    pub vector: VersionVector,
    /// Set by `force`: this version wins a conflict against an unforced one.
    pub forced: bool,
}

/// What `stat` said when we last looked, to tell a change without reading the file (ctime and
/// inode catch a content change that kept size and mtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: Version,
    /// The group sequence number of this record's last change here.
    pub seq: u64,
    /// None for tombstones.
    pub stat: Option<Stat>,
}

/// What this node knows of one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerState {
    /// The peer's index id and the last of its sequence numbers we have applied.
    pub their_id: u64,
    pub received: u64,
    /// The last of our sequence numbers (of our current index id) the peer has applied.
    pub acked: u64,
    /// Unix seconds of the last exchange that completed, and the last failure: what the
    /// running daemon reports, not stored (an index write per exchange would cost an fsync
    /// for nothing when nothing changed).
    #[serde(skip)]
    pub last_exchange: Option<u64>,
    #[serde(skip)]
    pub last_error: Option<String>,
}

/// A path changed here and on `peer` since they last agreed, that `auto` did not settle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub peer: String,
    pub remote: Version,
    /// Unix seconds.
    pub detected: u64,
    /// `resolve --keep remote`: take the peer's version at the next exchange with it.
    pub take_remote: bool,
}

/// Everything this node keeps about one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// Random, chosen when the index is created: a peer that sees a new id knows our
    /// sequence numbers started again and asks for everything.
    pub id: u64,
    pub seq: u64,
    pub records: BTreeMap<String, Record>,
    pub peers: BTreeMap<String, PeerState>,
    pub conflicts: BTreeMap<String, Conflict>,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot read index {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error(
        "index {0} is damaged ({1}); move it away to start this node afresh (every file then counts as changed here)"
    )]
    Damaged(PathBuf, String),
    #[error("cannot write index {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

impl GroupState {
    pub fn new() -> GroupState {
        GroupState {
            id: random_id(),
            seq: 0,
            records: BTreeMap::new(),
            peers: BTreeMap::new(),
            conflicts: BTreeMap::new(),
        }
    }

    pub fn file(state_dir: &Path, group: &str) -> PathBuf {
        state_dir.join(format!("{group}.index"))
    }

    /// The stored index (a new one if there is none) and its checksum (`None`: nothing
    /// stored yet), for [`Self::save`] to skip rewriting what is already there.
    pub fn load(path: &Path) -> Result<(GroupState, Option<[u8; 32]>), IndexError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((GroupState::new(), None));
            }
            Err(e) => return Err(IndexError::Read(path.to_path_buf(), e)),
        };
        let damaged = |why: &str| IndexError::Damaged(path.to_path_buf(), why.to_string());
        let body = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| damaged("not a gluu-fsync index"))?;
        if body.len() < 32 {
            return Err(damaged("truncated"));
        }
        let data = &body[..body.len() - 32];
        let sum = *blake3::hash(data).as_bytes();
        if body[body.len() - 32..] != sum {
            return Err(damaged("checksum mismatch"));
        }
        let state = postcard::from_bytes(data).map_err(|e| damaged(&e.to_string()))?;
        Ok((state, Some(sum)))
    }

    /// Each peer's last exchange and last error, a line per peer (`NAME<TAB>SECS<TAB>ERROR`):
    /// what `status` shows when no daemon runs. Kept beside the index, not in it, so that an
    /// exchange that changed nothing does not cost an index write.
    pub fn peer_notes(&self) -> String {
        let mut out = String::new();
        for (name, p) in &self.peers {
            let error = p.last_error.as_deref().unwrap_or("");
            let error: String = error
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let secs = p.last_exchange.map(|s| s.to_string()).unwrap_or_default();
            out.push_str(&format!("{name}\t{secs}\t{error}\n"));
        }
        out
    }

    /// Takes back what [`Self::peer_notes`] wrote; lines it cannot read are ignored.
    pub fn read_peer_notes(&mut self, text: &str) {
        for line in text.lines() {
            let mut fields = line.splitn(3, '\t');
            let (Some(name), Some(secs), Some(error)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let p = self.peers.entry(name.to_string()).or_default();
            p.last_exchange = secs.parse().ok();
            p.last_error = (!error.is_empty()).then(|| error.to_string());
        }
    }

    /// Store the index unless it is byte for byte what `last` says was stored; returns the
    /// checksum of what is stored now.
    pub fn save(&self, path: &Path, last: Option<[u8; 32]>) -> Result<[u8; 32], IndexError> {
        let data = postcard::to_allocvec(self)
            .map_err(|e| IndexError::Write(path.to_path_buf(), std::io::Error::other(e)))?;
        let sum = *blake3::hash(&data).as_bytes();
        if last == Some(sum) {
            return Ok(sum);
        }
        let mut bytes = Vec::with_capacity(MAGIC.len() + data.len() + 32);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&data);
        bytes.extend_from_slice(&sum);
        fsops::write_durably(path, &bytes, 0o600)
            .map_err(|e| IndexError::Write(path.to_path_buf(), e))?;
        Ok(sum)
    }

    /// Record a new version of `path` made here: next sequence number, our counter bumped.
    pub fn commit_local(&mut self, node: &str, path: &str, meta: Meta, stat: Option<Stat>) {
        self.seq += 1;
        let seq = self.seq;
        let record = self
            .records
            .entry(path.to_string())
            .or_insert_with(|| Record {
                version: Version {
                    path: path.to_string(),
                    meta: meta.clone(),
                    vector: VersionVector::default(),
                    forced: false,
                },
                seq,
                stat,
            });
        record.version.meta = meta;
        record.version.vector.bump(node);
        record.version.forced = false;
        record.seq = seq;
        record.stat = stat;
        self.conflicts.remove(path);
    }

    /// Our version won a conflict: give it a vector above both sides' (`merged`) so every
    /// peer takes it.
    pub fn supersede(&mut self, node: &str, path: &str, merged: &VersionVector) {
        self.seq += 1;
        let seq = self.seq;
        if let Some(record) = self.records.get_mut(path) {
            record.version.vector.merge(merged);
            record.version.vector.bump(node);
            record.seq = seq;
        }
        self.conflicts.remove(path);
    }

    /// `force`: this version wins its next conflict.
    pub fn force(&mut self, node: &str, path: &str) -> bool {
        if !self.records.contains_key(path) {
            return false;
        }
        let merged = self
            .conflicts
            .get(path)
            .map(|c| c.remote.vector.clone())
            .unwrap_or_default();
        self.supersede(node, path, &merged);
        if let Some(record) = self.records.get_mut(path) {
            record.version.forced = true;
        }
        true
    }

    /// Record a version taken from a peer (or merged with one): next sequence number, the
    /// given vector, and what the file now looks like here.
    pub fn commit_remote(&mut self, version: Version, stat: Option<Stat>) {
        self.seq += 1;
        let path = version.path.clone();
        self.conflicts.remove(&path);
        self.records.insert(
            path,
            Record {
                version: Version {
                    forced: false,
                    ..version
                },
                seq: self.seq,
                stat,
            },
        );
    }

    /// Versions changed here after `since` (all of them when the peer's idea of our id is
    /// stale), oldest change first.
    pub fn changed_since(&self, id: u64, since: u64) -> Vec<Version> {
        let since = if id == self.id { since } else { 0 };
        let mut out: Vec<&Record> = self.records.values().filter(|r| r.seq > since).collect();
        out.sort_by_key(|r| r.seq);
        out.into_iter().map(|r| r.version.clone()).collect()
    }

    /// How many of our changes `peer` has not acknowledged.
    pub fn pending_for(&self, peer: &str) -> usize {
        let acked = self.peers.get(peer).map_or(0, |p| p.acked);
        self.records.values().filter(|r| r.seq > acked).count()
    }

    /// Drop tombstones every peer has acknowledged.
    pub fn collect_tombstones(&mut self, peers: &[String]) {
        let acked = peers
            .iter()
            .map(|p| self.peers.get(p).map_or(0, |s| s.acked))
            .min()
            .unwrap_or(0);
        self.records
            .retain(|_, r| r.version.meta.kind != Kind::Deleted || r.seq > acked);
    }
}

impl Default for GroupState {
    fn default() -> Self {
        GroupState::new()
    }
}

pub fn random_id() -> u64 {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random source works");
    u64::from_le_bytes(bytes)
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(pairs: &[(&str, u64)]) -> VersionVector {
        VersionVector(pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect())
    }

    #[test]
    fn vector_order() {
        assert_eq!(vv(&[("a", 1)]).compare(&vv(&[("a", 1)])), Order::Equal);
        assert_eq!(vv(&[("a", 1)]).compare(&vv(&[("a", 2)])), Order::Older);
        assert_eq!(
            vv(&[("a", 2), ("b", 1)]).compare(&vv(&[("a", 2)])),
            Order::Newer
        );
        assert_eq!(
            vv(&[("a", 2)]).compare(&vv(&[("a", 1), ("b", 1)])),
            Order::Concurrent
        );
        let mut m = vv(&[("a", 2)]);
        m.merge(&vv(&[("a", 1), ("b", 1)]));
        assert_eq!(m, vv(&[("a", 2), ("b", 1)]));
    }

    #[test]
    fn save_load_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.index");
        let (mut state, none) = GroupState::load(&path).unwrap();
        assert_eq!(none, None);
        state.commit_local("a", "/x", Meta::deleted(), None);
        let sum = state.save(&path, None).unwrap();
        assert_eq!(GroupState::load(&path).unwrap(), (state.clone(), Some(sum)));
        // Unchanged: not written again.
        std::fs::remove_file(&path).unwrap();
        state.save(&path, Some(sum)).unwrap();
        assert!(!path.exists());
        state.save(&path, None).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 40;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = GroupState::load(&path).unwrap_err().to_string();
        assert!(err.contains("damaged") && err.contains("g.index"), "{err}");
    }

    #[test]
    fn peer_notes_round_trip() {
        let mut state = GroupState::new();
        state.peers.entry("n1".into()).or_default().last_exchange = Some(1_795_000_000);
        state.peers.entry("n2".into()).or_default().last_error =
            Some("connect: refused\n\tagain".into());
        let notes = state.peer_notes();
        let mut back = GroupState::new();
        back.read_peer_notes(&format!("{notes}garbage line\n"));
        assert_eq!(back.peers["n1"].last_exchange, Some(1_795_000_000));
        assert_eq!(back.peers["n1"].last_error, None);
        assert_eq!(back.peers["n2"].last_exchange, None);
        assert_eq!(
            back.peers["n2"].last_error.as_deref(),
            Some("connect: refused  again")
        );
    }

    #[test]
    fn changes_since_and_tombstones() {
        let mut s = GroupState::new();
        s.commit_local("a", "/x", Meta::deleted(), None);
        s.commit_local("a", "/y", Meta::deleted(), None);
        assert_eq!(s.changed_since(s.id, 1).len(), 1);
        assert_eq!(
            s.changed_since(s.id ^ 1, 1).len(),
            2,
            "a new id means everything"
        );
        s.peers.insert(
            "b".into(),
            PeerState {
                acked: 1,
                ..Default::default()
            },
        );
        s.collect_tombstones(&["b".into()]);
        assert!(!s.records.contains_key("/x") && s.records.contains_key("/y"));
    }
}
