//! The balancer's test bench: the guide's nginx.conf with loopback addresses, two
//! in-process Gluu-like HTTPS nodes holding the balancer's certificate (as the guide copies
//! httpd.crt/httpd.key), gluu-lb running in-process, and an HTTPS client that pins the
//! balancer's certificate and can pick its source address in 127.0.0.0/8.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gluu_lb::{Balancer, Config, Control};
use gluu_testkit::Cert;
use gluu_testkit::node::Node;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use gluu_testkit::https::{Client, HOST, Reply};

/// The guide's file with the nodes' addresses, loopback listeners, the test certificate,
/// a metrics listener, and `edit` applied last.
pub fn guide_conf(nodes: &[SocketAddr], cert: &Cert, edit: impl Fn(String) -> String) -> String {
    let text = gluu_testkit::guide_nginx(nodes, cert, "127.0.0.1:0", "127.0.0.1:0")
        .replace("http {\n", "http {\n  metrics 127.0.0.1:0;\n");
    edit(text)
}

/// Adds `block` (one or more `location`s) to the TLS server of the guide's file.
pub fn with_locations(text: String, block: &str) -> String {
    let end = text
        .rfind("\n  }\n}")
        .expect("the guide's file ends its server block so");
    format!("{}\n{block}{}", &text[..end], &text[end..])
}

/// The guide's proxy settings, for extra test locations.
pub const GUIDE_SETTINGS: &str = "proxy_redirect off;
        proxy_next_upstream error timeout invalid_header http_500;
        proxy_connect_timeout 2;
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;";

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub cert: Cert,
    pub nodes: Vec<Node>,
    pub conf: PathBuf,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub metrics: SocketAddr,
    pub client: Client,
    shutdown: CancellationToken,
    reload: mpsc::Sender<()>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

fn init_logging() {
    let _ = gluu_common::logging::init(tracing::Level::WARN, None);
}

impl Lab {
    /// Two nodes and gluu-lb with the guide's configuration, edited by `edit`.
    pub async fn start(edit: impl Fn(String) -> String) -> Lab {
        init_logging();
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = Cert::new(dir.path(), "httpd");
        let nodes = Node::pair(&cert, &format!("https://{HOST}")).await;
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, guide_conf(&addrs, &cert, edit)).expect("write conf");
        let config = Config::load(&conf).unwrap_or_else(|e| panic!("{e}"));
        let balancer = Balancer::prepare(config).unwrap_or_else(|e| panic!("{e}"));
        let bound = balancer.bind().await.expect("bind");
        let listen = bound.addrs();
        let metrics = bound.metrics_addr().expect("metrics listener");
        let shutdown = CancellationToken::new();
        let (reload, rx) = mpsc::channel(1);
        let task = tokio::spawn(balancer.run(
            bound,
            Control {
                shutdown: shutdown.clone(),
                reload: rx,
            },
        ));
        Lab {
            client: Client::new(&cert),
            dir,
            cert,
            nodes,
            conf,
            http: listen[0],
            https: listen[1],
            metrics,
            shutdown,
            reload,
            task: Some(task),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.client
            .get(self.https, path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Rewrites the configuration file and asks for a reload (SIGHUP's path).
    pub async fn reload_with(&self, text: &str) {
        std::fs::write(&self.conf, text).expect("write conf");
        self.reload.send(()).await.expect("reload");
    }

    /// GET on the metrics listener.
    pub async fn metrics_get(&self, path: &str) -> String {
        let tcp = tokio::net::TcpStream::connect(self.metrics)
            .await
            .expect("metrics");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", "metrics")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = sender.send_request(req).await.expect("metrics request");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.metrics_get("/status").await).expect("status json")
    }

    /// One node's `state` in `/status`.
    pub async fn node_state(&self, upstream: &str, node: usize) -> String {
        self.status().await["upstreams"][upstream][node]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Value of one sample line (`name{labels}`), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        self.metrics_get("/metrics")
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// Graceful stop; returns how long it took.
    pub async fn stop(mut self) -> Duration {
        let t = std::time::Instant::now();
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("run");
        }
        t.elapsed()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `f` every 20 ms until it returns true; panics after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A certificate of the client-certificate tests, its key, and what signs with it.
pub struct Issued {
    pub der: rustls_pki_types::CertificateDer<'static>,
    pub pem: String,
    pub key: rcgen::KeyPair,
    pub params: rcgen::CertificateParams,
}

impl Issued {
    /// A certificate for `cn` (organization `Gluu Test, Inc.`), a CA when `ca`, `edit`
    /// applied to its parameters, signed by `issuer` (none: by itself).
    pub fn new(
        cn: &str,
        ca: bool,
        edit: impl FnOnce(&mut rcgen::CertificateParams),
        issuer: Option<&Issued>,
    ) -> Issued {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CountryName, "US");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Gluu Test, Inc.");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        edit(&mut params);
        let cert = match issuer {
            None => params.self_signed(&key).expect("self-signed"),
            Some(i) => {
                let by = rcgen::Issuer::from_params(&i.params, &i.key);
                params.signed_by(&key, &by).expect("signed")
            }
        };
        Issued {
            der: cert.der().clone(),
            pem: cert.pem(),
            key,
            params,
        }
    }

    /// Its certificate and key written to files in `dir`, as a client presents them.
    pub fn written(&self, dir: &std::path::Path, name: &str) -> Cert {
        let [combined, cert, key] =
            ["pem", "crt", "key"].map(|ext| dir.join(format!("{name}.{ext}")));
        let key_pem = self.key.serialize_pem();
        std::fs::write(&combined, format!("{key_pem}{}", self.pem)).expect("write pem");
        std::fs::write(&cert, &self.pem).expect("write crt");
        std::fs::write(&key, key_pem).expect("write key");
        Cert {
            combined,
            cert,
            key,
        }
    }
}

/// A CRL of `by`'s, listing `revoked`, valid from the year `from` to the year `until`.
pub fn crl(by: &Issued, revoked: &[&Issued], (from, until): (i32, i32)) -> String {
    let params = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(from, 1, 1),
        next_update: rcgen::date_time_ymd(until, 1, 1),
        crl_number: rcgen::SerialNumber::from(1),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|r| rcgen::RevokedCertParams {
                serial_number: r.params.serial_number.clone().expect("a serial to revoke"),
                revocation_time: rcgen::date_time_ymd(2019, 6, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    params
        .signed_by(&rcgen::Issuer::from_params(&by.params, &by.key))
        .expect("CRL")
        .pem()
        .expect("CRL PEM")
}

/// Reads one HTTP/1 answer from `r` (at most 10 s): its head and its body (`Content-Length`
/// bytes, or none; none at all for the answer to a HEAD, `head_only`). Panics if the
/// connection ends before the answer does.
pub async fn one_answer<R>(r: &mut R, head_only: bool) -> (String, String)
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length || head_only {
                return (head.to_owned(), body.to_owned());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), r.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .expect("read");
        assert!(n > 0, "closed before a whole answer: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
}
