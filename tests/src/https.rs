//! An HTTPS client for the balancer's tests and `gluu-box`: it pins the balancer's
//! certificate (as an admin's `curl --cacert httpd.crt` would), sends the guide's host name,
//! and can pick its source address in 127.0.0.0/8 (for `ip_hash`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use gluu_common::verify::{PeerPolicy, PeerVerifier};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;

use crate::Cert;

/// The balancer's name in the guide (`server_name`), sent as SNI and `Host`.
pub const HOST: &str = "loadbalancer.example.org";

/// A response, body read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn node(&self) -> &str {
        self.headers
            .get("x-node")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// An HTTPS client that pins the balancer's certificate.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Client {
    tls: TlsConnector,
    h2: TlsConnector,
}

impl Client {
    pub fn new(cert: &Cert) -> Client {
        Self::presenting(cert, None)
    }

    /// [`Client::new`], presenting `mine` (certificate and key) when the server asks for
    /// a client certificate.
    pub fn presenting(cert: &Cert, mine: Option<&Cert>) -> Client {
        let provider = gluu_common::tls::provider();
        let mine = mine.map(|m| {
            (
                gluu_common::tls::load_certs(&m.cert).expect("client cert"),
                gluu_common::tls::load_key(&m.key).expect("client key"),
            )
        });
        let pin = gluu_common::tls::load_certs(&cert.cert).expect("cert");
        let make = |alpn: &[u8]| {
            let verifier =
                PeerVerifier::new(PeerPolicy::Pinned(pin.clone()), &provider).expect("verifier");
            let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier));
            let mut c = match &mine {
                Some((chain, key)) => builder
                    .with_client_auth_cert(chain.clone(), key.clone_key())
                    .expect("client certificate"),
                None => builder.with_no_client_auth(),
            };
            c.alpn_protocols = vec![alpn.to_vec()];
            TlsConnector::from(Arc::new(c))
        };
        Client {
            tls: make(b"http/1.1"),
            h2: make(b"h2"),
        }
    }

    /// A TLS connection from `source` (any 127.0.0.0/8 address; `None`: the default).
    pub async fn connect(
        &self,
        to: SocketAddr,
        source: Option<IpAddr>,
        h2: bool,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let sock = TcpSocket::new_v4()?;
        if let Some(ip) = source {
            sock.bind(SocketAddr::new(ip, 0))?;
        }
        let tcp = sock.connect(to).await?;
        // As browsers and curl: without it, a request's second small write (an HTTP/2
        // body after its HEADERS) waits for the server's delayed ACK, about 40 ms.
        tcp.set_nodelay(true)?;
        let connector = if h2 { &self.h2 } else { &self.tls };
        connector
            .connect(ServerName::try_from(HOST).expect("name"), tcp)
            .await
    }

    /// Sends one request on a new connection.
    pub async fn send(
        &self,
        to: SocketAddr,
        source: Option<IpAddr>,
        req: Request<Full<Bytes>>,
    ) -> Result<Reply, String> {
        let tls = self
            .connect(to, source, false)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        read(resp).await
    }

    pub async fn get(&self, to: SocketAddr, path: &str) -> Result<Reply, String> {
        self.send(to, None, get(path)).await
    }

    pub async fn get_from(
        &self,
        to: SocketAddr,
        source: IpAddr,
        path: &str,
    ) -> Result<Reply, String> {
        self.send(to, Some(source), get(path)).await
    }
}

pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", HOST)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

pub async fn read(resp: hyper::Response<hyper::body::Incoming>) -> Result<Reply, String> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
