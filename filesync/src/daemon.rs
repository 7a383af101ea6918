//! `gluu-fsync daemon`: serve peers, watch the include roots (inotify through notify), and
//! push each batch of changes to every peer at once; rescan periodically and after the
//! watcher overflows; retry an unreachable peer with backoff until it has everything. Admin
//! commands reach the running daemon through a Unix socket in the state directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gluu_common::accept;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::action;
use crate::commands::{self, Reply, Request};
use crate::config::{Config, Host};
use crate::fsops;
use crate::node::Node;
use crate::tree::Tree;

#[derive(Debug, Clone)]
pub struct Options {
    /// Quiet time after the last event before a batch is scanned and pushed.
    pub debounce: Duration,
    /// A batch is pushed at the latest this long after its first event, even if writes go on.
    pub max_delay: Duration,
    /// Full rescan and exchange with every peer this often (a safety net; events do the work).
    pub rescan: Duration,
    /// How long a stop waits for exchanges in flight.
    pub grace: Duration,
    /// Peer connections served at once; more wait in the listen queue.
    pub max_connections: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            debounce: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            rescan: Duration::from_secs(60),
            grace: Duration::from_secs(10),
            max_connections: 64,
        }
    }
}

/// Retry an unreachable peer after this, doubling up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Watcher events queued before we fall back to a full rescan.
const EVENT_QUEUE: usize = 65536;
/// Largest control request.
const CONTROL_LIMIT: u64 = 64 << 10;

pub fn control_socket(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("control.sock")
}

/// Scan every tree on the blocking pool; returns per tree the paths that changed.
async fn scan(node: &Arc<Node>, under: Option<Vec<PathBuf>>) -> Vec<(Arc<Tree>, Vec<String>)> {
    let mut out = Vec::new();
    for tree in &node.trees {
        let paths: Option<Vec<PathBuf>> = under.as_ref().map(|all| {
            all.iter()
                .filter(|p| tree.logical(p).is_some())
                .cloned()
                .collect()
        });
        if paths.as_ref().is_some_and(Vec::is_empty) {
            continue;
        }
        let t = tree.clone();
        let changed = tokio::task::spawn_blocking(move || t.scan(paths.as_deref()))
            .await
            .unwrap_or_default();
        if !changed.is_empty() {
            tracing::info!(group = %tree.group.name, changes = changed.len(), "local changes");
            if let Err(e) = tree.save() {
                tracing::error!(group = %tree.group.name, error = %e, "cannot store the index");
            }
            action::run_matching(tree, &node.config, &changed, true);
        }
        out.push((tree.clone(), changed));
    }
    out
}

/// Why [`run`] returned.
#[derive(Debug)]
pub enum Exit {
    /// `shutdown` was cancelled.
    Stopped,
    /// SIGHUP with a configuration that checks out: run again with it.
    Reload(Box<Config>),
}

/// Serve, watch and push until `shutdown` is cancelled, or until a message on `reload`
/// brings a configuration from `load` that passes the checks of `-t` (one that does not is
/// logged and the daemon carries on as it was). Either way the indexes are stored and the
/// exchanges in flight finish first; the listeners stay open for the next run.
pub async fn run(
    node: Arc<Node>,
    listener: Arc<TcpListener>,
    control: Arc<UnixListener>,
    shutdown: &CancellationToken,
    reload: &mut mpsc::Receiver<()>,
    load: &dyn Fn() -> Result<Config, String>,
    options: &Options,
) -> anyhow::Result<Exit> {
    // Everything this run started stops with it; a stop of the daemon stops it too.
    let shutdown = &shutdown.child_token();
    for tree in &node.trees {
        tree.clean_temps();
    }
    scan(&node, None).await;
    let conns = TaskTracker::new();
    let hard_stop = CancellationToken::new();

    // Peers.
    let accept = {
        let (node, conns, shutdown, hard_stop) = (
            node.clone(),
            conns.clone(),
            shutdown.clone(),
            hard_stop.clone(),
        );
        let (limit, max) = (
            Arc::new(Semaphore::new(options.max_connections)),
            options.max_connections,
        );
        tokio::spawn(async move {
            let mut at_limit = false;
            let report = || {
                tracing::warn!(
                    "{max} peer connections open (--max-connections): new ones wait in the \
                     listen queue"
                )
            };
            while let Some(slot) = accept::slot(&limit, &shutdown, &mut at_limit, report).await
                && let Some((tcp, remote)) = accept::next(&listener, &shutdown, "gluu-fsync").await
            {
                let (node, hard_stop) = (node.clone(), hard_stop.clone());
                conns.spawn(async move {
                    tokio::select! {
                        _ = node.serve(tcp, remote) => {}
                        _ = hard_stop.cancelled() => {}
                    }
                    drop(slot);
                });
            }
        })
    };

    // Admin commands.
    {
        let (node, shutdown) = (node.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    accepted = control.accept() => match accepted {
                        Ok((stream, _)) => {
                            tokio::spawn(answer(node.clone(), stream));
                        }
                        Err(e) => tracing::warn!(error = %e, "control socket accept"),
                    },
                }
            }
        });
    }

    // Links to every peer: sync at start, then whenever something changed here.
    let links = TaskTracker::new();
    for tree in &node.trees {
        for peer in tree.peers.clone() {
            let (node, tree, shutdown) = (node.clone(), tree.clone(), shutdown.clone());
            let interval = options.rescan;
            links.spawn(async move {
                tokio::select! {
                    _ = link(&node, &tree, &peer, interval) => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    }

    // Local changes.
    let overflow = Arc::new(AtomicBool::new(false));
    let (tx, mut events) = mpsc::channel::<PathBuf>(EVENT_QUEUE);
    let mut watcher = {
        let overflow = overflow.clone();
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if event.need_rescan() => overflow.store(true, Ordering::Relaxed),
            // Reads (ours included: a scan lists directories and hashes files) change
            // nothing; a close after writing does.
            Ok(event) if matches!(event.kind, EventKind::Access(kind) if kind != AccessKind::Close(AccessMode::Write)) =>
                {}
            Ok(event) => {
                for path in event.paths {
                    let ours = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(fsops::is_temp);
                    if !ours && tx.try_send(path).is_err() {
                        overflow.store(true, Ordering::Relaxed);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "file watcher error; rescanning");
                overflow.store(true, Ordering::Relaxed);
            }
        })?
    };
    for tree in &node.trees {
        for (logical, root) in &tree.roots {
            if let Err(e) = watcher.watch(root, RecursiveMode::Recursive) {
                tracing::warn!(group = %tree.group.name, root = %root.display(), %logical, error = %e, "cannot watch; changes here are found by the periodic rescan only");
            }
        }
    }
    tracing::info!(
        node = %node.name,
        listen = %node.listen,
        groups = node.trees.len(),
        "gluu-fsync ready"
    );
    gluu_common::notify::ready("watching and serving");

    let mut exit = Exit::Stopped;
    let mut rescan = tokio::time::interval(options.rescan);
    rescan.tick().await;
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(()) = reload.recv() => match load() {
                Ok(config) => {
                    exit = Exit::Reload(Box::new(config));
                    break;
                }
                Err(e) => {
                    tracing::error!("{e}; keeping the running configuration");
                    continue;
                }
            },
            _ = rescan.tick() => None,
            event = events.recv() => event,
        };
        let mut batch: Vec<PathBuf> = first.into_iter().collect();
        if !batch.is_empty() {
            let deadline = Instant::now() + options.max_delay;
            while Instant::now() < deadline {
                match tokio::time::timeout(options.debounce, events.recv()).await {
                    Ok(Some(path)) => batch.push(path),
                    _ => break,
                }
            }
        }
        let full = batch.is_empty() || overflow.swap(false, Ordering::Relaxed);
        if full && !batch.is_empty() {
            tracing::warn!("file watcher overflowed: rescanning everything");
        }
        batch.sort();
        batch.dedup();
        let changed = scan(&node, if full { None } else { Some(batch) }).await;
        if changed.iter().any(|(_, c)| !c.is_empty()) || full {
            node.kick();
        }
    }

    match exit {
        Exit::Stopped => gluu_common::notify::stopping(),
        Exit::Reload(_) => gluu_common::notify::reloading(),
    }
    shutdown.cancel();
    drop(watcher);
    accept.abort();
    links.close();
    links.wait().await;
    gluu_common::drain::wait(&conns, &hard_stop, options.grace, "--grace").await;
    for tree in &node.trees {
        if let Err(e) = tree.save() {
            tracing::error!(group = %tree.group.name, error = %e, "cannot store the index");
        }
    }
    Ok(exit)
}

/// Keep one peer up to date: an exchange now, then after every kick; on failure, retry with
/// backoff; in any case every `interval`.
async fn link(node: &Node, tree: &Tree, peer: &Host, interval: Duration) {
    let mut kicks = node.kick_watch();
    let mut backoff = MIN_BACKOFF;
    let mut failing = false;
    loop {
        kicks.mark_unchanged();
        let wait = match node.sync_with(tree, peer).await {
            Ok(received) => {
                if failing {
                    tracing::info!(group = %tree.group.name, peer = %peer.name, "peer is back");
                }
                failing = false;
                backoff = MIN_BACKOFF;
                if !received.changed.is_empty() {
                    tracing::debug!(group = %tree.group.name, peer = %peer.name, files = received.changed.len(), "pulled");
                }
                interval
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(group = %tree.group.name, peer = %peer.name, error = %e, "exchange failed; retrying with backoff");
                }
                failing = true;
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::select! {
            _ = kicks.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One admin command on the control socket: a JSON request line in, a JSON reply line out.
async fn answer(node: Arc<Node>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(CONTROL_LIMIT));
    let reply = match reader.read_line(&mut line).await {
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => commands::run(&node, request).await,
            Err(e) => Reply {
                code: commands::FAILED,
                output: format!("bad request: {e}\n"),
            },
        },
        Err(e) => Reply {
            code: commands::FAILED,
            output: format!("cannot read request: {e}\n"),
        },
    };
    let mut text = serde_json::to_string(&reply).unwrap_or_default();
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
}

/// The client side: send a request to the running daemon.
pub async fn ask(state_dir: &std::path::Path, request: &Request) -> anyhow::Result<Reply> {
    let path = control_socket(state_dir);
    let mut stream = UnixStream::connect(&path).await.map_err(|e| {
        anyhow::anyhow!(
            "the daemon holds {} but its control socket {} does not answer: {e}",
            state_dir.display(),
            path.display()
        )
    })?;
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    stream.write_all(text.as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).await?;
    Ok(serde_json::from_str(&line)?)
}
