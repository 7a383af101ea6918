//! The commands an admin runs (`sync`, `test`, `status`, `force`, `resolve`, `conflicts`).
//! Each is a [`Request`] run against a [`Node`]: in-process when no daemon holds the state
//! directory, or by the daemon itself through its control socket, so that `force` or
//! `resolve` on a running cluster act on the live index rather than racing it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::index::{Kind, Order, Version, now_secs};
use crate::node::Node;
use crate::tree::Tree;

/// Exit codes: 0 in sync / done, 2 out of sync (differences, pending, conflicts), 1 error.
pub const IN_SYNC: i32 = 0;
pub const OUT_OF_SYNC: i32 = 2;
pub const FAILED: i32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    Sync {
        dry_run: bool,
    },
    Test {
        paths: Vec<PathBuf>,
    },
    Status,
    Force {
        paths: Vec<PathBuf>,
        recursive: bool,
    },
    Resolve {
        path: PathBuf,
        keep_remote: bool,
    },
    Conflicts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub code: i32,
    pub output: String,
}

pub async fn run(node: &Node, request: Request) -> Reply {
    match request {
        Request::Sync { dry_run: false } => sync(node).await,
        Request::Sync { dry_run: true } => compare(node, &[], true).await,
        Request::Test { paths } => compare(node, &paths, false).await,
        Request::Status => status(node).await,
        Request::Force { paths, recursive } => force(node, &paths, recursive).unwrap_or_else(|e| e),
        Request::Resolve { path, keep_remote } => {
            resolve(node, &path, keep_remote).unwrap_or_else(|e| e)
        }
        Request::Conflicts => conflicts(node),
    }
}

/// Scan every tree; store what changed.
fn scan_all(node: &Node) -> Result<(), String> {
    for tree in &node.trees {
        tree.scan(None);
        tree.save().map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn sync(node: &Node) -> Reply {
    let mut out = String::new();
    if let Err(e) = scan_all(node) {
        return Reply {
            code: FAILED,
            output: e,
        };
    }
    let mut code = IN_SYNC;
    for tree in &node.trees {
        let mut reached = Vec::new();
        let mut received = 0;
        for peer in &tree.peers {
            match node.sync_with(tree, peer).await {
                Ok(r) => {
                    received += r.changed.len() + r.caught_up.len();
                    reached.push(peer);
                    let _ = writeln!(
                        out,
                        "{} {}: {} received ({} bytes), {} conflicts, {} refused",
                        tree.group.name,
                        peer.name,
                        r.changed.len(),
                        r.bytes,
                        r.conflicts.len(),
                        r.refused
                    );
                    if !r.conflicts.is_empty() && code == IN_SYNC {
                        code = OUT_OF_SYNC;
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "{} {}: FAILED: {e}", tree.group.name, peer.name);
                    code = FAILED;
                }
            }
        }
        // What the pass took is offered once more to the peers it reached: its sender
        // acknowledges it (nothing moves), the others get it relayed; what the daemon does
        // after every exchange that took something. A failure here leaves it pending, as
        // `status` then says.
        if received > 0 {
            for peer in reached {
                if let Err(e) = node.sync_with(tree, peer).await {
                    tracing::debug!(peer = %peer.name, error = %e, "offering back what the pass took");
                }
            }
        }
    }
    Reply { code, output: out }
}

/// One difference between this node and a peer.
fn difference(mine: Option<&Version>, theirs: Option<&Version>) -> Option<&'static str> {
    fn live(v: Option<&Version>) -> Option<&Version> {
        v.filter(|v| v.meta.kind != Kind::Deleted)
    }
    match (live(mine), live(theirs)) {
        (None, None) => None,
        (Some(_), None) if theirs.is_none() => Some("only here"),
        (None, Some(_)) if mine.is_none() => Some("only there"),
        _ => {
            let (m, t) = (mine.expect("one is live"), theirs.expect("one is live"));
            match m.vector.compare(&t.vector) {
                _ if m.meta.same_as(&t.meta) => None,
                Order::Newer => Some("newer here"),
                Order::Older => Some("newer there"),
                Order::Equal | Order::Concurrent => Some("conflict"),
            }
        }
    }
}

/// `test` (and `sync --dry-run`): what differs between this node and each peer.
async fn compare(node: &Node, only: &[PathBuf], dry_run: bool) -> Reply {
    if let Err(e) = scan_all(node) {
        return Reply {
            code: FAILED,
            output: e,
        };
    }
    let mut out = String::new();
    let mut code = IN_SYNC;
    for tree in &node.trees {
        let prefixes: Vec<String> = only.iter().filter_map(|p| tree.logical(p)).collect();
        if !only.is_empty() && prefixes.is_empty() {
            continue;
        }
        let wanted = |path: &str| {
            prefixes.is_empty()
                || prefixes
                    .iter()
                    .any(|p| path == p || path.starts_with(&format!("{p}/")))
        };
        let mine: BTreeMap<String, Version> = tree
            .state()
            .records
            .iter()
            .filter(|(path, _)| wanted(path))
            .map(|(path, r)| (path.clone(), r.version.clone()))
            .collect();
        for peer in &tree.peers {
            let theirs: BTreeMap<String, Version> = match node.fetch_all(tree, peer).await {
                Ok(all) => all
                    .into_iter()
                    .filter(|v| wanted(&v.path))
                    .map(|v| (v.path.clone(), v))
                    .collect(),
                Err(e) => {
                    let _ = writeln!(out, "{} {}: FAILED: {e}", tree.group.name, peer.name);
                    code = FAILED;
                    continue;
                }
            };
            let paths: std::collections::BTreeSet<&String> =
                mine.keys().chain(theirs.keys()).collect();
            for path in paths {
                let Some(what) = difference(mine.get(path), theirs.get(path)) else {
                    continue;
                };
                if code == IN_SYNC {
                    code = OUT_OF_SYNC;
                }
                let local = tree
                    .local(path)
                    .map_or_else(|| path.clone(), |(_, l)| l.display().to_string());
                let line = match (dry_run, what) {
                    (false, _) => format!("{what} (vs {}): {local}", peer.name),
                    (true, "only here" | "newer here") => {
                        format!("would send to {}: {local}", peer.name)
                    }
                    (true, "only there" | "newer there") => {
                        format!("would take from {}: {local}", peer.name)
                    }
                    (true, _) => format!("conflict with {}: {local}", peer.name),
                };
                let _ = writeln!(out, "{line}");
            }
        }
    }
    if code == IN_SYNC && !dry_run {
        out.push_str("in sync\n");
    }
    Reply { code, output: out }
}

fn ago(secs: Option<u64>) -> String {
    match secs {
        None => "never".into(),
        Some(t) => format!("{} s ago", now_secs().saturating_sub(t)),
    }
}

async fn status(node: &Node) -> Reply {
    let mut out = String::new();
    let mut code = IN_SYNC;
    for tree in &node.trees {
        let (entries, seq, conflicts) = {
            let state = tree.state();
            (state.records.len(), state.seq, state.conflicts.len())
        };
        let _ = writeln!(
            out,
            "group {} on {}: {entries} paths, change #{seq}, {conflicts} conflicts, {} bytes received since start",
            tree.group.name,
            node.name,
            tree.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
        );
        if conflicts > 0 {
            code = OUT_OF_SYNC;
        }
        for peer in &tree.peers {
            let reach = match node.probe(tree, peer).await {
                Ok(took) => format!("reachable ({:.1} ms)", took.as_secs_f64() * 1000.0),
                Err(e) => {
                    code = OUT_OF_SYNC;
                    format!("UNREACHABLE ({e})")
                }
            };
            let (pending, last, error, peer_conflicts) = {
                let state = tree.state();
                let p = state.peers.get(&peer.name).cloned().unwrap_or_default();
                let peer_conflicts = state
                    .conflicts
                    .values()
                    .filter(|c| c.peer == peer.name)
                    .count();
                (
                    if tree.receive_only() {
                        0
                    } else {
                        state.pending_for(&peer.name)
                    },
                    p.last_exchange,
                    p.last_error,
                    peer_conflicts,
                )
            };
            if pending > 0 {
                code = OUT_OF_SYNC;
            }
            let _ = writeln!(
                out,
                "  peer {} ({}:{}{}): {reach}, last exchange {}, {pending} changes pending, {peer_conflicts} conflicts{}",
                peer.name,
                peer.address,
                peer.port,
                if peer.receive_only {
                    ", receive-only"
                } else {
                    ""
                },
                ago(last),
                error
                    .map(|e| format!(", last error: {e}"))
                    .unwrap_or_default(),
            );
        }
    }
    Reply { code, output: out }
}

/// The records `path` names in some tree (with `recursive`, everything below it too).
fn named(tree: &Tree, path: &std::path::Path, recursive: bool) -> Vec<String> {
    let Some(logical) = tree.logical(path) else {
        return Vec::new();
    };
    let below = format!("{logical}/");
    tree.state()
        .records
        .keys()
        .filter(|p| **p == logical || (recursive && p.starts_with(&below)))
        .cloned()
        .collect()
}

/// A failure to store the index, as a reply.
impl From<crate::index::IndexError> for Reply {
    fn from(e: crate::index::IndexError) -> Reply {
        Reply {
            code: FAILED,
            output: format!("{e}\n"),
        }
    }
}

fn force(node: &Node, paths: &[PathBuf], recursive: bool) -> Result<Reply, Reply> {
    let mut out = String::new();
    let mut forced = 0;
    for tree in &node.trees {
        let mine: Vec<PathBuf> = paths
            .iter()
            .filter(|p| tree.logical(p).is_some())
            .cloned()
            .collect();
        if mine.is_empty() {
            continue;
        }
        // Unlike csync2 -f, which only marks files it already knows as dirty, look first:
        // on a fresh state the files are indexed now and then forced.
        tree.scan(Some(&mine));
        let names: Vec<String> = mine
            .iter()
            .flat_map(|path| named(tree, path, recursive))
            .collect();
        let mut state = tree.state();
        for logical in names {
            if state.force(&tree.me, &logical) {
                forced += 1;
            }
        }
        drop(state);
        tree.save()?;
    }
    node.kick();
    let _ = writeln!(
        out,
        "{forced} paths forced: they win their next conflict on every peer"
    );
    Ok(Reply {
        code: if forced > 0 { IN_SYNC } else { FAILED },
        output: out,
    })
}

fn resolve(node: &Node, path: &std::path::Path, keep_remote: bool) -> Result<Reply, Reply> {
    for tree in &node.trees {
        let Some(logical) = tree.logical(path) else {
            continue;
        };
        let mut state = tree.state();
        let Some(conflict) = state.conflicts.get_mut(&logical) else {
            continue;
        };
        let output = if keep_remote {
            conflict.take_remote = true;
            format!(
                "{}: the version of {} will replace this one at the next exchange\n",
                path.display(),
                conflict.peer
            )
        } else {
            let theirs = conflict.remote.vector.clone();
            state.supersede(&tree.me, &logical, &theirs);
            format!(
                "{}: the version here wins; it goes to every peer at the next exchange\n",
                path.display()
            )
        };
        drop(state);
        tree.save()?;
        node.kick();
        return Ok(Reply {
            code: IN_SYNC,
            output,
        });
    }
    Err(Reply {
        code: FAILED,
        output: format!("no conflict recorded for {}\n", path.display()),
    })
}

fn conflicts(node: &Node) -> Reply {
    let mut out = String::new();
    let mut count = 0;
    for tree in &node.trees {
        let state = tree.state();
        for (path, c) in &state.conflicts {
            count += 1;
            let local = tree
                .local(path)
                .map_or_else(|| path.clone(), |(_, l)| l.display().to_string());
            let here = state.records.get(path).map(|r| &r.version.meta);
            let _ = writeln!(
                out,
                "{local}: changed here ({}) and on {} ({}), detected {}{}",
                here.map_or_else(|| "absent".into(), describe),
                c.peer,
                describe(&c.remote.meta),
                ago(Some(c.detected)),
                if c.take_remote {
                    "; taking the peer's version at the next exchange"
                } else {
                    ""
                },
            );
        }
    }
    Reply {
        code: if count == 0 { IN_SYNC } else { OUT_OF_SYNC },
        output: out,
    }
}

fn describe(meta: &crate::index::Meta) -> String {
    match meta.kind {
        Kind::Deleted => "deleted".into(),
        Kind::Dir => "a directory".into(),
        Kind::Symlink => format!("symlink to {}", meta.target.as_deref().unwrap_or("?")),
        Kind::File => format!(
            "{} bytes, mtime {}, blake3 {}",
            meta.size,
            meta.mtime_ns / 1_000_000_000,
            &blake3::Hash::from(meta.hash).to_hex()[..12]
        ),
    }
}
