//! The connection between two nodes: TLS 1.3, then each side proves it holds the group key
//! with a keyed blake3 MAC over the TLS exporter (channel binding: the MAC is worthless on any
//! other connection, and the key never crosses the wire, where csync2 sends it in clear
//! inside TLS with every command). Certificates are self-signed and made on first start; they
//! carry no authority here, the key does. Then framed messages: a 4-byte length, a 1-byte
//! tag (message or raw data), the body; every length read from the wire is bounded.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::index::Version;

/// Largest message (an offer batch is at most [`OFFER_BATCH`] versions, each bounded by
/// path length): 16 MiB.
const MAX_MESSAGE: usize = 16 << 20;
/// Largest raw data frame: one chunk.
pub const MAX_DATA: usize = CHUNK;
/// Versions per offer message.
pub const OFFER_BATCH: usize = 1000;
/// Chunk size for large files: a small edit moves one or two of these.
pub const CHUNK: usize = 1 << 20;
/// Files above this size move as chunks, of which the receiver asks only the ones it lacks.
pub const CHUNKED_ABOVE: u64 = 4 << 20;
/// The `Ack` of a receiver that did not apply everything offered: no sequence number is this.
pub const ACK_NOTHING: u64 = u64::MAX;
/// How long a peer may take: to connect and finish the TLS handshake, and for each read or
/// write in the middle of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub handshake: Duration,
    pub io: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: Duration::from_secs(5),
            io: Duration::from_secs(30),
        }
    }
}

const EXPORTER_LABEL: &[u8] = b"EXPORTER-gluu-fsync-auth";
const KEY_CONTEXT: &str = "gluu-fsync group key v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Want {
    pub path: String,
    /// Only keep it as a conflict copy (the local version won); do not install it.
    pub copy: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Msg {
    /// Client to server, first: who I am, which group, proof of the key.
    Hello {
        node: String,
        group: String,
        mac: [u8; 32],
    },
    /// Server to client: the server's proof.
    Welcome { node: String, mac: [u8; 32] },
    /// Either side: not going on, and why.
    Refused { reason: String },
    /// Client to server: receive what I send (the server then asks with [`Msg::Ask`]).
    Push,
    /// The receiving side to the sending side: what I have of yours, and paths I want anyway.
    Ask {
        known_id: u64,
        since: u64,
        extra: Vec<String>,
    },
    /// The sending side: a batch of versions; `more` says another batch follows.
    Offer {
        id: u64,
        upto: u64,
        versions: Vec<Version>,
        more: bool,
    },
    /// The receiving side: of the last batch, these files' content.
    Wants { items: Vec<Want> },
    /// The sending side, per wanted file: its size and, for a large file, its chunk hashes;
    /// `gone` when the file changed or vanished since it was offered.
    FileHead {
        gone: bool,
        size: u64,
        chunks: Option<Vec<[u8; 32]>>,
    },
    /// The receiving side, for a chunked file: the chunk numbers it lacks.
    Need { chunks: Vec<u32> },
    /// The receiving side, at the end: everything up to `upto` is applied and stored
    /// ([`ACK_NOTHING`]: not everything offered, so nothing is acknowledged).
    Ack { upto: u64 },
    /// Client: done.
    Bye,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("peer sent a frame of {0} bytes (limit {1})")]
    TooBig(usize, usize),
    #[error("peer sent an unreadable message: {0}")]
    Garbled(String),
    #[error("peer sent {0} where {1} was expected")]
    Unexpected(&'static str, &'static str),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Tls(String),
}

const TAG_MESSAGE: u8 = 0;
const TAG_DATA: u8 = 1;

/// A framed, timed connection: each read and write has `io` to complete.
#[derive(Debug)]
pub struct Conn<S> {
    stream: S,
    io: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(stream: S, io: Duration) -> Self {
        Conn { stream, io }
    }

    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    async fn frame(&mut self, tag: u8, body: &[u8]) -> Result<(), WireError> {
        let mut head = [0u8; 5];
        head[..4].copy_from_slice(&(body.len() as u32).to_be_bytes());
        head[4] = tag;
        timed(self.io, async {
            self.stream.write_all(&head).await?;
            self.stream.write_all(body).await
        })
        .await?;
        Ok(())
    }

    pub async fn send(&mut self, msg: &Msg) -> Result<(), WireError> {
        let body = postcard::to_allocvec(msg).map_err(|e| WireError::Garbled(e.to_string()))?;
        self.frame(TAG_MESSAGE, &body).await?;
        self.flush().await
    }

    /// Queue raw data (flushed by the next [`Conn::send`] or [`Conn::flush`]).
    pub async fn send_data(&mut self, data: &[u8]) -> Result<(), WireError> {
        self.frame(TAG_DATA, data).await
    }

    pub async fn flush(&mut self) -> Result<(), WireError> {
        timed(self.io, self.stream.flush()).await?;
        Ok(())
    }

    async fn read_frame(&mut self, limit: usize) -> Result<(u8, Vec<u8>), WireError> {
        let mut head = [0u8; 5];
        timed(self.io, self.stream.read_exact(&mut head)).await?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > limit {
            return Err(WireError::TooBig(len, limit));
        }
        let mut body = vec![0u8; len];
        timed(self.io, self.stream.read_exact(&mut body)).await?;
        Ok((head[4], body))
    }

    pub async fn recv(&mut self) -> Result<Msg, WireError> {
        self.recv_limited(MAX_MESSAGE).await
    }

    /// Receive a message no larger than `limit` (the first message of an unauthenticated
    /// peer gets a small limit).
    pub async fn recv_limited(&mut self, limit: usize) -> Result<Msg, WireError> {
        match self.read_frame(limit).await? {
            (TAG_MESSAGE, body) => {
                let msg: Msg =
                    postcard::from_bytes(&body).map_err(|e| WireError::Garbled(e.to_string()))?;
                if let Msg::Refused { reason } = msg {
                    return Err(WireError::Refused(reason));
                }
                Ok(msg)
            }
            (TAG_DATA, _) => Err(WireError::Unexpected("data", "a message")),
            (tag, _) => Err(WireError::Garbled(format!("unknown frame tag {tag}"))),
        }
    }

    pub async fn recv_data(&mut self) -> Result<Vec<u8>, WireError> {
        match self.read_frame(MAX_DATA).await? {
            (TAG_DATA, body) => Ok(body),
            (TAG_MESSAGE, _) => Err(WireError::Unexpected("a message", "data")),
            (tag, _) => Err(WireError::Garbled(format!("unknown frame tag {tag}"))),
        }
    }

    pub async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
    }
}

async fn timed<T>(
    limit: Duration,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, WireError> {
    match tokio::time::timeout(limit, f).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(WireError::Timeout(limit)),
    }
}

impl Msg {
    /// For error messages: the variant's name.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Hello { .. } => "Hello",
            Msg::Welcome { .. } => "Welcome",
            Msg::Refused { .. } => "Refused",
            Msg::Push => "Push",
            Msg::Ask { .. } => "Ask",
            Msg::Offer { .. } => "Offer",
            Msg::Wants { .. } => "Wants",
            Msg::FileHead { .. } => "FileHead",
            Msg::Need { .. } => "Need",
            Msg::Ack { .. } => "Ack",
            Msg::Bye => "Bye",
        }
    }
}

/// The 32-byte MAC key derived from a csync2 key file's content.
pub fn group_key(key_file_content: &[u8]) -> [u8; 32] {
    blake3::derive_key(KEY_CONTEXT, key_file_content.trim_ascii())
}

/// The MAC one side sends: over its role, the group, its name and the TLS exporter.
pub fn mac(key: &[u8; 32], role: &str, group: &str, node: &str, exporter: &[u8; 32]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(key);
    for part in [role.as_bytes(), group.as_bytes(), node.as_bytes()] {
        hasher.update(&(part.len() as u32).to_be_bytes());
        hasher.update(part);
    }
    hasher.update(exporter);
    *hasher.finalize().as_bytes()
}

/// Compare MACs in constant time.
pub fn mac_ok(expected: &[u8; 32], got: &[u8; 32]) -> bool {
    blake3::Hash::from(*expected) == blake3::Hash::from(*got)
}

/// 32 bytes only this TLS session's two ends can compute (RFC 8446 7.5).
pub fn exporter<D>(conn: &rustls::ConnectionCommon<D>) -> Result<[u8; 32], WireError> {
    conn.export_keying_material([0u8; 32], EXPORTER_LABEL, None)
        .map_err(|e| WireError::Tls(format!("TLS exporter: {e}")))
}

/// The TLS side of a node: its certificate (made on first start) and the configs built on it.
#[derive(Debug, Clone)]
pub struct Tls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

impl Tls {
    /// Load `node.crt`/`node.key` from the state directory, making them first if absent.
    pub fn load_or_create(state_dir: &Path, name: &str) -> Result<Tls, WireError> {
        let cert_path = state_dir.join("node.crt");
        let key_path = state_dir.join("node.key");
        if !cert_path.exists() || !key_path.exists() {
            let made = rcgen::generate_simple_self_signed(vec![name.to_string()])
                .map_err(|e| WireError::Tls(format!("cannot make a certificate: {e}")))?;
            crate::fsops::write_durably(
                &key_path,
                made.signing_key.serialize_pem().as_bytes(),
                0o600,
            )?;
            crate::fsops::write_durably(&cert_path, made.cert.pem().as_bytes(), 0o644)?;
            tracing::info!(cert = %cert_path.display(), "made this node's TLS certificate");
        }
        let tls_error = |e: gluu_common::tls::TlsError| WireError::Tls(e.to_string());
        let certs: Vec<CertificateDer<'static>> =
            gluu_common::tls::load_certs(&cert_path).map_err(tls_error)?;
        let key: PrivateKeyDer<'static> =
            gluu_common::tls::load_key(&key_path).map_err(tls_error)?;
        let provider = gluu_common::tls::provider();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
            .map_err(|e| WireError::Tls(e.to_string()))?;
        let verifier = gluu_common::verify::PeerVerifier::new(
            gluu_common::verify::PeerPolicy::AnyCertificate,
            &provider,
        )
        .map_err(|e| WireError::Tls(e.to_string()))?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| WireError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Tls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    pub fn server_name() -> ServerName<'static> {
        ServerName::try_from("gluu-fsync").expect("a valid DNS name")
    }
}
