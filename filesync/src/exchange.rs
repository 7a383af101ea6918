//! One exchange between two nodes of a group, in one direction: the receiving side says what
//! it already has of the sender (`Ask`: the sender's index id and sequence number), the sender
//! offers every version changed since, in batches; the receiver decides per path with the
//! version vectors (take it, keep ours, settle a conflict per `auto`, or record it), asks
//! for the content it lacks (for a large file, only the chunks it lacks), installs each file
//! crash-safely, stores its index, and acknowledges. A sync is this twice, once each way, on
//! one connection.
//!
//! Every path from the wire is checked before anything is written: well formed, inside an
//! `include` of this group, not excluded, not through a symlink; a violation is logged with
//! the peer and refused.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering as AtomicOrdering;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Auto;
use crate::fsops;
use crate::index::{GroupState, Kind, Order, Version, VersionVector, now_secs};
use crate::tree::Tree;
use crate::wire::{ACK_NOTHING, CHUNK, CHUNKED_ABOVE, Conn, Msg, OFFER_BATCH, Want, WireError};

/// What the receiving side does with one offered version.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    /// We have it or something newer.
    Skip,
    /// Record this version; nothing on disk changes (same thing already here).
    Adopt(Version),
    /// Install this version. `conflict`: it beat a local version, which is kept as a copy.
    Take { version: Version, conflict: bool },
    /// Our version beat theirs in a conflict: ours gets a vector above both; theirs is
    /// fetched as a conflict copy if it is a file.
    Keep { merged: VersionVector, copy: bool },
    /// A conflict nobody settled: recorded for `status`/`resolve`.
    Conflict(Version),
}

/// Who the conflict rules pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Winner {
    Local,
    Remote,
}

/// Counts of one direction of an exchange.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// Logical paths changed on disk here.
    pub changed: Vec<String>,
    pub conflicts: Vec<String>,
    pub refused: usize,
    /// Content bytes that crossed the wire.
    pub bytes: u64,
    /// Local changes found on disk before any scan reported them (to push to peers).
    pub caught_up: Vec<String>,
}

fn decide(
    tree: &Tree,
    state: &GroupState,
    peer: &str,
    incoming: &Version,
    sender_initiated: bool,
) -> Plan {
    let Some(local) = state.records.get(&incoming.path) else {
        return if incoming.meta.kind == Kind::Deleted {
            Plan::Adopt(incoming.clone())
        } else {
            Plan::Take {
                version: incoming.clone(),
                conflict: false,
            }
        };
    };
    let mine = &local.version;
    let mut merged = mine.vector.clone();
    merged.merge(&incoming.vector);
    match mine.vector.compare(&incoming.vector) {
        Order::Newer => Plan::Skip,
        Order::Older => Plan::Take {
            version: incoming.clone(),
            conflict: false,
        },
        Order::Equal if mine.meta.same_as(&incoming.meta) => Plan::Skip,
        // Same vector, different content: only a race of two opposite decisions makes this.
        // Both sides pick the same one (by hash), so they converge.
        Order::Equal if incoming.meta.hash > mine.meta.hash => Plan::Take {
            version: incoming.clone(),
            conflict: true,
        },
        Order::Equal => Plan::Skip,
        Order::Concurrent if mine.meta.same_as(&incoming.meta) => Plan::Adopt(Version {
            vector: merged,
            ..incoming.clone()
        }),
        Order::Concurrent => {
            let taken = Version {
                vector: merged.clone(),
                ..incoming.clone()
            };
            let winner = if mine.meta.same_content(&incoming.meta) {
                // Only metadata differs (two nodes set up with the same files): nothing of
                // value is lost either way; the newer mtime wins, then the left host.
                Some(
                    pick(tree, Auto::Younger, mine, incoming, peer, sender_initiated)
                        .unwrap_or_else(|| left_of(tree, peer)),
                )
            } else if state
                .conflicts
                .get(&incoming.path)
                .is_some_and(|c| c.take_remote && c.peer == peer)
            {
                Some(Winner::Remote)
            } else if incoming.forced != mine.forced {
                Some(if incoming.forced {
                    Winner::Remote
                } else {
                    Winner::Local
                })
            } else {
                pick(
                    tree,
                    tree.group.auto,
                    mine,
                    incoming,
                    peer,
                    sender_initiated,
                )
            };
            match winner {
                Some(Winner::Remote) => Plan::Take {
                    version: taken,
                    conflict: !mine.meta.same_content(&incoming.meta),
                },
                Some(Winner::Local) => Plan::Keep {
                    merged,
                    copy: incoming.meta.kind == Kind::File
                        && !mine.meta.same_content(&incoming.meta),
                },
                None => Plan::Conflict(incoming.clone()),
            }
        }
    }
}

/// csync2's `auto` modes; `None` when the mode is `none` or the versions tie.
fn pick(
    tree: &Tree,
    auto: Auto,
    mine: &Version,
    theirs: &Version,
    peer: &str,
    sender_initiated: bool,
) -> Option<Winner> {
    let by = |a: i128, b: i128, bigger_wins: bool| match a.cmp(&b) {
        std::cmp::Ordering::Equal => None,
        ord => Some(if (ord == std::cmp::Ordering::Greater) == bigger_wins {
            Winner::Local
        } else {
            Winner::Remote
        }),
    };
    let (m, t) = (&mine.meta, &theirs.meta);
    match auto {
        Auto::None => None,
        Auto::First => Some(if sender_initiated {
            Winner::Remote
        } else {
            Winner::Local
        }),
        Auto::Younger => by(m.mtime_ns.into(), t.mtime_ns.into(), true),
        Auto::Older => by(m.mtime_ns.into(), t.mtime_ns.into(), false),
        Auto::Bigger => by(m.size.into(), t.size.into(), true),
        Auto::Smaller => by(m.size.into(), t.size.into(), false),
        Auto::Left => Some(left_of(tree, peer)),
        Auto::Right => Some(match left_of(tree, peer) {
            Winner::Local => Winner::Remote,
            Winner::Remote => Winner::Local,
        }),
    }
}

/// Whether this node or `peer` is listed first in the group.
fn left_of(tree: &Tree, peer: &str) -> Winner {
    let position = |name: &str| tree.group.hosts.iter().position(|h| h.name == name);
    if position(&tree.me) < position(peer) {
        Winner::Local
    } else {
        Winner::Remote
    }
}

/// The receiving side of one direction. `sender_initiated`: the other side opened the
/// connection (what `auto first` looks at). `dry`: only collect the offers, change nothing.
pub async fn receive<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    tree: &Tree,
    peer: &str,
    sender_initiated: bool,
) -> Result<Received, WireError> {
    if tree.peer(peer).is_some_and(|h| h.receive_only) {
        let reason = format!("{peer} is receive-only in group {}", tree.group.name);
        tracing::warn!(group = %tree.group.name, peer, "refused changes from a receive-only host");
        conn.send(&Msg::Refused {
            reason: reason.clone(),
        })
        .await?;
        return Err(WireError::Refused(reason));
    }
    let (known_id, since, extra) = {
        let state = tree.state();
        let p = state.peers.get(peer).cloned().unwrap_or_default();
        let extra = state
            .conflicts
            .iter()
            .filter(|(_, c)| c.take_remote && c.peer == peer)
            .map(|(path, _)| path.clone())
            .collect();
        (p.their_id, p.received, extra)
    };
    conn.send(&Msg::Ask {
        known_id,
        since,
        extra,
    })
    .await?;
    let mut out = Received::default();
    // Directories files were renamed into: fsynced once each before the index records them.
    let mut renamed_in: BTreeSet<PathBuf> = BTreeSet::new();
    // Files left to another exchange fetching them: then this one acknowledges nothing.
    let mut deferred = Vec::new();
    loop {
        let (id, upto, versions, more) = match conn.recv().await? {
            Msg::Offer {
                id,
                upto,
                versions,
                more,
            } if versions.len() <= OFFER_BATCH => (id, upto, versions, more),
            other => return Err(WireError::Unexpected(other.name(), "an offer")),
        };
        // Each with whether its content must be fetched (decided under the same lock).
        let mut fetch: Vec<(Version, Plan, bool)> = Vec::new();
        {
            let mut state = tree.state();
            for version in versions {
                if tree.local(&version.path).is_none() {
                    tracing::warn!(group = %tree.group.name, peer, path = %version.path, "refused: not a path of this group (outside include, excluded, or malformed)");
                    out.refused += 1;
                    continue;
                }
                if tree.catch_up(&mut state, &version.path) {
                    out.caught_up.push(version.path.clone());
                }
                let plan = decide(tree, &state, peer, &version, sender_initiated);
                match plan {
                    Plan::Skip => {}
                    Plan::Adopt(version) => {
                        let stat = state.records.get(&version.path).and_then(|r| r.stat);
                        state.commit_remote(version, stat);
                    }
                    Plan::Conflict(theirs) => {
                        tracing::warn!(group = %tree.group.name, peer, path = %theirs.path, "conflict: changed here and on the peer; run gluu-fsync conflicts");
                        out.conflicts.push(theirs.path.clone());
                        state.conflicts.insert(
                            theirs.path.clone(),
                            crate::index::Conflict {
                                peer: peer.to_string(),
                                remote: theirs,
                                detected: now_secs(),
                                take_remote: false,
                            },
                        );
                    }
                    Plan::Keep { ref merged, copy } => {
                        tracing::info!(group = %tree.group.name, peer, path = %version.path, "conflict settled: the version here wins");
                        state.supersede(&tree.me, &version.path, merged);
                        if copy {
                            fetch.push((version, plan, true));
                        }
                    }
                    Plan::Take { version: ref v, .. } => {
                        let needs_content = v.meta.kind == Kind::File && !has_content(&state, v);
                        fetch.push((version, plan, needs_content));
                    }
                }
            }
        }
        // Installs that need no content (directories, symlinks, deletions, metadata) happen
        // now; files are asked for.
        let mut wants = Vec::new();
        let mut files = Vec::new();
        for (version, plan, needs_content) in fetch {
            if needs_content {
                let copy = matches!(plan, Plan::Keep { .. });
                // A conflict copy is not installed in the tree: nothing to leave to another.
                let claim = if copy {
                    None
                } else if let Some(claim) = tree.claim_fetch(&version) {
                    Some(claim)
                } else {
                    deferred.push(version.path);
                    continue;
                };
                wants.push(Want {
                    path: version.path.clone(),
                    copy,
                });
                files.push((version, plan, claim));
            } else if let Plan::Take {
                version: v,
                conflict,
            } = plan
            {
                match install(tree, peer, &v, None, conflict, &mut renamed_in) {
                    Ok(Installed::Yes) => out.changed.push(v.path.clone()),
                    Ok(Installed::Stale) => {}
                    Ok(Installed::ChangedHere) => out.caught_up.push(v.path.clone()),
                    Err(e) => {
                        tracing::warn!(group = %tree.group.name, peer, path = %v.path, error = %e, "not installed")
                    }
                }
            }
        }
        conn.send(&Msg::Wants { items: wants }).await?;
        for (offered, plan, _claim) in files {
            let (dest, chunks_from) = match &plan {
                Plan::Keep { .. } => (conflict_copy(tree, &offered.path, peer), None),
                _ => {
                    let (root, local) = tree.local(&offered.path).expect("checked above");
                    if let Err(e) = fsops::prepare_parent(root, &local) {
                        tracing::warn!(group = %tree.group.name, peer, path = %offered.path, error = %e, "refused");
                        out.refused += 1;
                        // Still read what the sender sends, into nowhere, to stay in step.
                        (tree.conflict_dir.join("discarded"), None)
                    } else {
                        (local.clone(), Some(local))
                    }
                }
            };
            let received = receive_file(conn, &dest, &offered, chunks_from.as_deref()).await?;
            let Some((temp, file, moved)) = received else {
                continue;
            };
            out.bytes += moved;
            tree.bytes_in.fetch_add(moved, AtomicOrdering::Relaxed);
            match plan {
                Plan::Keep { .. } => {
                    drop(file);
                    match std::fs::rename(temp.path(), &dest) {
                        Ok(()) => {
                            temp.disarm();
                            tracing::info!(group = %tree.group.name, peer, path = %offered.path, copy = %dest.display(), "kept the losing version as a conflict copy");
                        }
                        Err(e) => {
                            tracing::warn!(copy = %dest.display(), error = %e, "cannot keep the conflict copy")
                        }
                    }
                }
                Plan::Take { version, conflict } if chunks_from.is_some() => {
                    if let Err(e) = fsops::finish_temp(&file, &version.meta) {
                        tracing::warn!(group = %tree.group.name, path = %version.path, error = %e, "cannot set owner, mode or time");
                        continue;
                    }
                    drop(file);
                    match install(tree, peer, &version, Some(temp), conflict, &mut renamed_in) {
                        Ok(Installed::Yes) => out.changed.push(version.path.clone()),
                        Ok(Installed::Stale) => {}
                        Ok(Installed::ChangedHere) => out.caught_up.push(version.path.clone()),
                        Err(e) => {
                            tracing::warn!(group = %tree.group.name, peer, path = %version.path, error = %e, "not installed")
                        }
                    }
                }
                _ => {}
            }
        }
        if !more {
            for dir in std::mem::take(&mut renamed_in) {
                File::open(&dir)?.sync_all()?;
            }
            let acked = {
                let mut state = tree.state();
                let p = state.peers.entry(peer.to_string()).or_default();
                p.last_exchange = Some(now_secs());
                p.last_error = None;
                if !deferred.is_empty() {
                    // The other exchange may yet fail: the cursor stays where it was, so the
                    // next exchange offers these versions again (and skips what arrived).
                    ACK_NOTHING
                } else {
                    p.their_id = id;
                    p.received = upto;
                    upto
                }
            };
            tree.save()
                .map_err(|e| WireError::Io(std::io::Error::other(e)))?;
            for path in deferred {
                tracing::info!(group = %tree.group.name, peer, path, "already being fetched by another exchange: left to it, and this exchange not acknowledged");
            }
            conn.send(&Msg::Ack { upto: acked }).await?;
            return Ok(out);
        }
    }
}

/// Whether the file here already has this version's content (then only metadata changes).
fn has_content(state: &GroupState, version: &Version) -> bool {
    state
        .records
        .get(&version.path)
        .is_some_and(|r| r.version.meta.same_content(&version.meta) && r.stat.is_some())
}

/// Where the losing version of a conflict is kept: the backup directory if the group has
/// one, else the state directory's `conflicts/GROUP/` (never inside the watched tree).
fn conflict_copy(tree: &Tree, path: &str, peer: &str) -> PathBuf {
    let local = tree
        .local(path)
        .map_or_else(|| PathBuf::from(path), |(_, l)| l);
    let base = tree.backup_dir.as_deref().unwrap_or(&tree.conflict_dir);
    let rel = local.strip_prefix("/").unwrap_or(&local);
    let mut name = base.join(rel).into_os_string();
    name.push(format!(".conflict-{peer}-{}", now_secs()));
    let name = PathBuf::from(name);
    if let Some(parent) = name.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    name
}

/// A temp file that is removed unless it was renamed into place.
#[derive(Debug)]
pub struct Temp(Option<PathBuf>);

impl Temp {
    fn path(&self) -> &Path {
        self.0.as_deref().expect("armed")
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Receive one file's content into a temp file next to `dest`, verifying every chunk and the
/// whole-file hash. For a chunked file, chunks already in `local` (the current file here)
/// are copied rather than fetched. `None` when the sender says the file is gone or the
/// content does not match the offered hash (the sender's next version comes later).
async fn receive_file<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    dest: &Path,
    version: &Version,
    local: Option<&Path>,
) -> Result<Option<(Temp, File, u64)>, WireError> {
    let (size, chunks) = match conn.recv().await? {
        Msg::FileHead { gone: true, .. } => return Ok(None),
        Msg::FileHead { size, chunks, .. } if size == version.meta.size => (size, chunks),
        other => return Err(WireError::Unexpected(other.name(), "a file head")),
    };
    // Any error here ends the exchange, since the stream would be out of step; the next
    // one asks again.
    fsops::room_for(dest, size)?;
    let temp_path = fsops::temp_for(dest);
    // Writing into nowhere (a refused path) still consumes the frames.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .open(&temp_path)
        .or_else(|_| tempfile::tempfile())
        .map_err(fsops::at(&temp_path))?;
    let temp = Temp(Some(temp_path));
    let mut hasher = blake3::Hasher::new();
    let mut moved = 0u64;
    match chunks {
        None => {
            let mut left = size;
            while left > 0 {
                let data = conn.recv_data().await?;
                if data.is_empty() || data.len() as u64 > left {
                    return Err(WireError::Garbled("file data longer than announced".into()));
                }
                file.write_all(&data).map_err(fsops::at(temp.path()))?;
                hasher.update(&data);
                left -= data.len() as u64;
                moved += data.len() as u64;
            }
        }
        Some(manifest) => {
            let count = size.div_ceil(CHUNK as u64);
            if manifest.len() as u64 != count || size <= CHUNKED_ABOVE {
                return Err(WireError::Garbled(
                    "chunk list does not match the size".into(),
                ));
            }
            let have = local.map(local_chunks).unwrap_or_default();
            let need: Vec<u32> = (0..count as u32)
                .filter(|i| !have.contains_key(&manifest[*i as usize]))
                .collect();
            conn.send(&Msg::Need {
                chunks: need.clone(),
            })
            .await?;
            let mut source = local.and_then(|p| File::open(p).ok());
            let mut buf = vec![0u8; CHUNK];
            for (i, expected) in manifest.iter().enumerate() {
                let len = (size - i as u64 * CHUNK as u64).min(CHUNK as u64) as usize;
                let data = if need.binary_search(&(i as u32)).is_ok() {
                    let data = conn.recv_data().await?;
                    moved += data.len() as u64;
                    data
                } else {
                    let (offset, source) = (have[expected], source.as_mut().expect("have chunks"));
                    source.seek(SeekFrom::Start(offset))?;
                    let n = fsops::read_full(source, &mut buf[..len])?;
                    buf[..n].to_vec()
                };
                if data.len() != len || blake3::hash(&data).as_bytes() != expected {
                    tracing::warn!(path = %version.path, chunk = i, "chunk does not match its hash; dropped");
                    // Consume the rest so the stream stays in step, then give up on the file.
                    for _ in need.iter().filter(|j| **j as usize > i) {
                        conn.recv_data().await?;
                    }
                    return Ok(None);
                }
                file.write_all(&data).map_err(fsops::at(temp.path()))?;
                hasher.update(&data);
            }
        }
    }
    if hasher.finalize().as_bytes() != &version.meta.hash {
        tracing::warn!(path = %version.path, "content does not match the offered hash (changed while sent); dropped");
        return Ok(None);
    }
    Ok(Some((temp, file, moved)))
}

/// The chunk hashes of the file here, each with its offset.
fn local_chunks(path: &Path) -> HashMap<[u8; 32], u64> {
    let mut out = HashMap::new();
    let Ok(mut file) = File::open(path) else {
        return out;
    };
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while let Ok(n) = fsops::read_full(&mut file, &mut buf) {
        if n == 0 {
            break;
        }
        out.entry(*blake3::hash(&buf[..n]).as_bytes())
            .or_insert(offset);
        offset += n as u64;
    }
    out
}

/// What [`install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Installed {
    Yes,
    /// The index moved on since the decision (a scan or another peer came first).
    Stale,
    /// The file here was changed and no scan had seen it yet: now recorded as a local
    /// change, and kept.
    ChangedHere,
}

/// Put `version` in place here (with its content in `temp` for files) if the local record is
/// still what the decision saw, and record it.
fn install(
    tree: &Tree,
    peer: &str,
    version: &Version,
    temp: Option<Temp>,
    conflict: bool,
    renamed_in: &mut BTreeSet<PathBuf>,
) -> std::io::Result<Installed> {
    let (root, local) = tree
        .local(&version.path)
        .ok_or_else(|| std::io::Error::other("not a path of this group"))?;
    let mut state = tree.state();
    // Re-decide under the lock: a local change (scanned or not) or another peer may have
    // come first. A local edit found only now stays; the peer weighs it at the next exchange.
    if tree.catch_up(&mut state, &version.path) {
        return Ok(Installed::ChangedHere);
    }
    let still = decide(tree, &state, peer, version, false);
    if !matches!(still, Plan::Take { .. } | Plan::Adopt(_)) {
        return Ok(Installed::Stale);
    }
    let old = state
        .records
        .get(&version.path)
        .map(|r| r.version.meta.kind);
    if old == Some(Kind::File) && matches!(fsops::lstat(&local), Ok(Some((Kind::File, _)))) {
        let replaced = version.meta.kind != Kind::File || temp.is_some();
        if replaced {
            if let Some(dir) = &tree.backup_dir {
                fsops::backup(&local, dir, tree.group.backup_generations)?;
            } else if conflict {
                let copy = conflict_copy(tree, &version.path, &tree.me);
                std::fs::copy(&local, &copy)?;
                tracing::info!(path = %version.path, copy = %copy.display(), "kept the version here, which lost the conflict, as a copy");
            }
        }
    }
    if version.meta.kind != Kind::Deleted {
        fsops::prepare_parent(root, &local)?;
    }
    tree.journal(version)?;
    match version.meta.kind {
        Kind::File => match temp {
            Some(temp) => {
                fsops::commit_temp(temp.path(), &local)?;
                temp.disarm();
                if let Some(dir) = local.parent() {
                    renamed_in.insert(dir.to_path_buf());
                }
            }
            // Same content already here: only the metadata changes.
            None => {
                let file = File::open(&local)?;
                fsops::finish_temp(&file, &version.meta)?;
            }
        },
        Kind::Dir => fsops::make_dir(&local, &version.meta)?,
        Kind::Symlink => fsops::make_symlink(&local, &version.meta)?,
        Kind::Deleted => fsops::remove(&local)?,
    }
    let stat = match version.meta.kind {
        Kind::Deleted => None,
        _ => fsops::lstat(&local)?.map(|(_, s)| s),
    };
    state.commit_remote(version.clone(), stat);
    tracing::info!(group = %tree.group.name, peer, path = %version.path, kind = ?version.meta.kind, "received");
    Ok(Installed::Yes)
}

/// The sending side of one direction, after the receiver's `Ask`.
pub async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    tree: &Tree,
    peer: &str,
    known_id: u64,
    since: u64,
    extra: Vec<String>,
) -> Result<(), WireError> {
    let (id, upto, versions) = {
        let state = tree.state();
        let mut versions = state.changed_since(known_id, since);
        let listed: BTreeSet<String> = versions.iter().map(|v| v.path.clone()).collect();
        for path in extra.iter().take(OFFER_BATCH) {
            if !listed.contains(path)
                && let Some(record) = state.records.get(path)
            {
                versions.push(record.version.clone());
            }
        }
        (state.id, state.seq, versions)
    };
    let batches: Vec<&[Version]> = if versions.is_empty() {
        vec![&[]]
    } else {
        versions.chunks(OFFER_BATCH).collect()
    };
    let last = batches.len() - 1;
    for (n, batch) in batches.into_iter().enumerate() {
        let offered: HashMap<&str, &Version> = batch.iter().map(|v| (v.path.as_str(), v)).collect();
        conn.send(&Msg::Offer {
            id,
            upto,
            versions: batch.to_vec(),
            more: n < last,
        })
        .await?;
        let items = match conn.recv().await? {
            Msg::Wants { items } if items.len() <= batch.len() => items,
            other => return Err(WireError::Unexpected(other.name(), "wants")),
        };
        for item in items {
            let Some(version) = offered.get(item.path.as_str()) else {
                return Err(WireError::Garbled(format!(
                    "asked for {} which was not offered",
                    item.path
                )));
            };
            let local = tree.local(&version.path).map(|(_, l)| l);
            send_file(conn, local.as_deref(), version).await?;
        }
    }
    match conn.recv().await? {
        Msg::Ack { upto: acked } => {
            let mut state = tree.state();
            if acked == upto && state.id == id {
                let p = state.peers.entry(peer.to_string()).or_default();
                p.acked = p.acked.max(acked);
                p.last_exchange = Some(now_secs());
                p.last_error = None;
            }
            Ok(())
        }
        other => Err(WireError::Unexpected(other.name(), "an ack")),
    }
}

/// Send one file's content as offered, or `gone` if it is no longer that version.
async fn send_file<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    local: Option<&Path>,
    version: &Version,
) -> Result<(), WireError> {
    let gone = Msg::FileHead {
        gone: true,
        size: 0,
        chunks: None,
    };
    let Some(mut file) = local.and_then(|p| File::open(p).ok()) else {
        return conn.send(&gone).await;
    };
    let size = version.meta.size;
    if size <= CHUNKED_ABOVE {
        let mut content = Vec::with_capacity(size as usize);
        std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, size + 1), &mut content)?;
        if content.len() as u64 != size || blake3::hash(&content).as_bytes() != &version.meta.hash {
            return conn.send(&gone).await;
        }
        conn.send(&Msg::FileHead {
            gone: false,
            size,
            chunks: None,
        })
        .await?;
        for piece in content.chunks(CHUNK) {
            conn.send_data(piece).await?;
        }
        return conn.flush().await;
    }
    let mut manifest = Vec::new();
    let mut whole = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = fsops::read_full(&mut file, &mut buf)?;
        if n == 0 {
            break;
        }
        manifest.push(*blake3::hash(&buf[..n]).as_bytes());
        whole.update(&buf[..n]);
        total += n as u64;
    }
    if total != size || whole.finalize().as_bytes() != &version.meta.hash {
        return conn.send(&gone).await;
    }
    let count = manifest.len();
    conn.send(&Msg::FileHead {
        gone: false,
        size,
        chunks: Some(manifest),
    })
    .await?;
    let need = match conn.recv().await? {
        Msg::Need { chunks }
            if chunks.len() <= count
                && chunks.windows(2).all(|w| w[0] < w[1])
                && chunks.iter().all(|c| (*c as usize) < count) =>
        {
            chunks
        }
        other => return Err(WireError::Unexpected(other.name(), "a chunk list")),
    };
    for i in need {
        file.seek(SeekFrom::Start(i as u64 * CHUNK as u64))?;
        let n = fsops::read_full(&mut file, &mut buf)?;
        conn.send_data(&buf[..n]).await?;
    }
    conn.flush().await
}
