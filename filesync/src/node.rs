//! This node: its name, its groups ([`Tree`]s), its TLS identity and listening address; and
//! the two ends of a connection to a peer: [`Node::sync_with`] (client: push, then pull) and
//! [`Node::serve`] (server: authenticate, then do what the client asks).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::action;
use crate::config::{Config, Host};
use crate::exchange::{self, Received};
use crate::index::Version;
use crate::tree::Tree;
use crate::wire::{self, ACK_NOTHING, Conn, Msg, Timeouts, Tls, WireError};

/// The first message of a peer (before it is authenticated) is at most this big.
const HELLO_LIMIT: usize = 64 << 10;

#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub config: Config,
    pub trees: Vec<Arc<Tree>>,
    pub tls: Tls,
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    /// How long peers may take (`--handshake-timeout`, `--io-timeout`).
    pub timeouts: Timeouts,
    /// Wakes the daemon's peer links (local changes, a `force`, a `resolve`): a counter, so
    /// a link busy with an exchange still sees the kick when it finishes.
    kick: tokio::sync::watch::Sender<u64>,
}

impl Node {
    /// This node as the configuration sees it: the groups that list `name` as a host.
    pub fn open(config: Config, name: &str, state_dir: &Path) -> Result<Node, String> {
        let groups: Vec<_> = config
            .groups
            .iter()
            .filter(|g| g.host(name).is_some())
            .collect();
        let Some(first) = groups.first() else {
            return Err(format!(
                "this node ({name}) is not a host of any group in {} (set its name with -N)",
                config.file.display()
            ));
        };
        std::fs::create_dir_all(state_dir)
            .map_err(|e| format!("state directory {}: {e}", state_dir.display()))?;
        let own = first.host(name).expect("filtered on it");
        let listen = if own.has_address() {
            own.resolve()
                .map_err(|e| format!("cannot resolve {}: {e}", own.address))?
        } else {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, own.port))
        };
        let trees = groups
            .iter()
            .map(|g| Tree::new(&config, g, name, state_dir).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = Tls::load_or_create(state_dir, name).map_err(|e| e.to_string())?;
        Ok(Node {
            name: name.to_string(),
            config,
            trees,
            tls,
            state_dir: state_dir.to_path_buf(),
            listen,
            timeouts: Timeouts::default(),
            kick: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The same node with these limits on how long peers may take.
    pub fn with_timeouts(self, timeouts: Timeouts) -> Node {
        Node { timeouts, ..self }
    }

    /// Ask every peer link for an exchange now.
    pub fn kick(&self) {
        self.kick.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn kick_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.kick.subscribe()
    }

    pub fn tree(&self, group: &str) -> Option<&Arc<Tree>> {
        self.trees.iter().find(|t| t.group.name == group)
    }

    /// Connect to `peer` for `tree`'s group and prove we hold the key; check its proof.
    pub async fn connect(
        &self,
        tree: &Tree,
        peer: &Host,
    ) -> Result<Conn<tokio_rustls::client::TlsStream<TcpStream>>, WireError> {
        let addr = peer.resolve()?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.client.clone());
        let limit = self.timeouts.handshake;
        let tls = tokio::time::timeout(limit, async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            connector.connect(Tls::server_name(), tcp).await
        })
        .await
        .map_err(|_| WireError::Timeout(limit))??;
        let exporter = wire::exporter(tls.get_ref().1)?;
        let mut conn = Conn::new(tls, self.timeouts.io);
        conn.send(&Msg::Hello {
            node: self.name.clone(),
            group: tree.group.name.clone(),
            mac: wire::mac(&tree.key, "client", &tree.group.name, &self.name, &exporter),
        })
        .await?;
        match conn.recv_limited(HELLO_LIMIT).await? {
            Msg::Welcome { node, mac }
                if node == peer.name
                    && wire::mac_ok(
                        &wire::mac(&tree.key, "server", &tree.group.name, &node, &exporter),
                        &mac,
                    ) =>
            {
                Ok(conn)
            }
            Msg::Welcome { node, .. } => Err(WireError::Refused(format!(
                "{addr} (answering as {node}) did not prove it holds the key of group {}",
                tree.group.name
            ))),
            other => Err(WireError::Unexpected(other.name(), "a welcome")),
        }
    }

    /// One sync with one peer: push our changes, then pull theirs.
    pub async fn sync_with(&self, tree: &Tree, peer: &Host) -> Result<Received, WireError> {
        let result = async {
            let mut conn = self.connect(tree, peer).await?;
            if !tree.receive_only() {
                conn.send(&Msg::Push).await?;
                match conn.recv().await? {
                    Msg::Ask {
                        known_id,
                        since,
                        extra,
                    } => {
                        exchange::send(&mut conn, tree, &peer.name, known_id, since, extra).await?
                    }
                    other => return Err(WireError::Unexpected(other.name(), "an ask")),
                }
            }
            let received = if peer.receive_only {
                Received::default()
            } else {
                exchange::receive(&mut conn, tree, &peer.name, false).await?
            };
            conn.send(&Msg::Bye).await?;
            conn.shutdown().await;
            Ok(received)
        }
        .await;
        self.settle(tree, &peer.name, &result);
        result
    }

    /// After an exchange: record a failure for `status`, store the index, run actions.
    fn settle(&self, tree: &Tree, peer: &str, result: &Result<Received, WireError>) {
        match result {
            Ok(received) => {
                tree.state().collect_tombstones(&tree.peer_names());
                if !received.changed.is_empty() {
                    action::run_matching(tree, &self.config, &received.changed, false);
                }
                // Local edits the exchange found before the watcher did: theirs to push.
                if !received.caught_up.is_empty() {
                    action::run_matching(tree, &self.config, &received.caught_up, true);
                }
                // What was taken is offered on at once: the peer it came from acknowledges
                // it (it has it; nothing moves), so nothing stays "pending" for it, and a
                // peer that missed it gets it relayed.
                if !received.changed.is_empty() || !received.caught_up.is_empty() {
                    self.kick();
                }
            }
            Err(e) => {
                let mut state = tree.state();
                state.peers.entry(peer.to_string()).or_default().last_error = Some(e.to_string());
            }
        }
        if let Err(e) = tree.save() {
            tracing::error!(group = %tree.group.name, error = %e, "cannot store the index");
        }
    }

    /// Every version the peer has (for `test` and `sync --dry-run`); changes nothing.
    pub async fn fetch_all(&self, tree: &Tree, peer: &Host) -> Result<Vec<Version>, WireError> {
        let mut conn = self.connect(tree, peer).await?;
        conn.send(&Msg::Ask {
            known_id: 0,
            since: 0,
            extra: Vec::new(),
        })
        .await?;
        let mut all = Vec::new();
        loop {
            match conn.recv().await? {
                Msg::Offer { versions, more, .. } => {
                    all.extend(versions);
                    conn.send(&Msg::Wants { items: Vec::new() }).await?;
                    if !more {
                        break;
                    }
                }
                other => return Err(WireError::Unexpected(other.name(), "an offer")),
            }
        }
        // This look must not count as an exchange.
        conn.send(&Msg::Ack { upto: ACK_NOTHING }).await?;
        conn.send(&Msg::Bye).await?;
        conn.shutdown().await;
        Ok(all)
    }

    /// How long it takes to reach and authenticate with a peer.
    pub async fn probe(&self, tree: &Tree, peer: &Host) -> Result<Duration, WireError> {
        let start = Instant::now();
        let mut conn = self.connect(tree, peer).await?;
        let took = start.elapsed();
        conn.send(&Msg::Bye).await?;
        conn.shutdown().await;
        Ok(took)
    }

    /// Serve one peer connection: TLS, authentication, then the client's requests.
    pub async fn serve(&self, tcp: TcpStream, remote: SocketAddr) {
        let _ = tcp.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.server.clone());
        let tls = match tokio::time::timeout(self.timeouts.handshake, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::warn!(peer = %remote, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::warn!(peer = %remote, "TLS handshake timed out");
                return;
            }
        };
        let exporter = match wire::exporter(tls.get_ref().1) {
            Ok(exporter) => exporter,
            Err(e) => {
                tracing::warn!(peer = %remote, error = %e, "TLS session unusable");
                return;
            }
        };
        let mut conn = Conn::new(tls, self.timeouts.io);
        let (tree, peer) = match self.authenticate(&mut conn, &exporter).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(peer = %remote, error = %e, "refused a peer");
                return;
            }
        };
        if let Err(e) = self.serve_requests(&mut conn, &tree, &peer).await {
            tracing::warn!(peer = %remote, node = %peer, group = %tree.group.name, error = %e, "exchange failed");
            tree.state()
                .peers
                .entry(peer.clone())
                .or_default()
                .last_error = Some(e.to_string());
            if let Err(e) = tree.save() {
                tracing::error!(group = %tree.group.name, error = %e, "cannot store the index");
            }
        }
    }

    async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        conn: &mut Conn<S>,
        exporter: &[u8; 32],
    ) -> Result<(Arc<Tree>, String), WireError> {
        let (node, group, mac) = match conn.recv_limited(HELLO_LIMIT).await? {
            Msg::Hello { node, group, mac } => (node, group, mac),
            other => return Err(WireError::Unexpected(other.name(), "a hello")),
        };
        let refuse = |reason: String| WireError::Refused(reason);
        let tree = self
            .tree(&group)
            .ok_or_else(|| {
                refuse(format!(
                    "{node} asked for group {group}, which this node is not in"
                ))
            })?
            .clone();
        let ok = tree.peer(&node).is_some()
            && wire::mac_ok(
                &wire::mac(&tree.key, "client", &group, &node, exporter),
                &mac,
            );
        if !ok {
            let _ = conn
                .send(&Msg::Refused {
                    reason: "authentication failed".into(),
                })
                .await;
            return Err(refuse(format!(
                "claims to be {node} of group {group} but did not prove it holds the group key (or is not a host of the group)"
            )));
        }
        conn.send(&Msg::Welcome {
            node: self.name.clone(),
            mac: wire::mac(&tree.key, "server", &group, &self.name, exporter),
        })
        .await?;
        Ok((tree, node))
    }

    async fn serve_requests<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        conn: &mut Conn<S>,
        tree: &Tree,
        peer: &str,
    ) -> Result<(), WireError> {
        loop {
            match conn.recv().await {
                Ok(Msg::Push) => {
                    let result = exchange::receive(conn, tree, peer, true).await;
                    let failed = result.is_err();
                    self.settle(tree, peer, &result);
                    if failed {
                        return result.map(|_| ());
                    }
                }
                Ok(Msg::Ask {
                    known_id,
                    since,
                    extra,
                }) => exchange::send(conn, tree, peer, known_id, since, extra).await?,
                Ok(Msg::Bye) => return Ok(()),
                Ok(other) => return Err(WireError::Unexpected(other.name(), "a request")),
                Err(WireError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }
}
