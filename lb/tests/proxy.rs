//! gluu-lb in front of two in-process Gluu-like nodes, with the guide's nginx.conf:
//! routing, URIs, headers, the redirect, stickiness, HTTP/2, WebSocket, limits.

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use gluu_testkit::Cert;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use support::{
    Client, GUIDE_SETTINGS, HOST, Issued, Lab, crl, eventually, one_answer, with_locations,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn echo_location(text: String) -> String {
    with_locations(
        text,
        &format!(
            "    location /echo {{\n        proxy_pass https://backend;\n        {GUIDE_SETTINGS}\n    }}\n"
        ),
    )
}

/// A client's certificate reaches the node as Gluu's oxAuth reads it for mutual TLS
/// (`X-ClientCert`: the PEM, on one line), with the verdict on it; a client without one
/// gets the header removed, as an empty value removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_reaches_the_node_on_one_line() {
    let lab = Lab::start(|t| {
        with_locations(
            t.replace("http {\n", "http {\n  ssl_verify_client optional_no_ca;\n"),
            "    location /echo {\n        proxy_pass https://backend;\n        \
             proxy_set_header X-ClientCert $ssl_client_cert;\n        \
             proxy_set_header X-Verify $ssl_client_verify;\n    }\n",
        )
    })
    .await;
    let mine = Cert::new(lab.dir.path(), "alice");
    let pem = std::fs::read_to_string(&mine.cert).expect("read cert");
    let presenting = Client::presenting(&lab.cert, Some(&mine));
    let r = presenting.get(lab.https, "/echo/c").await.expect("echo");
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let h = &r.json()["headers"];
    let lines: Vec<&str> = pem.lines().collect();
    assert_eq!(h["x-clientcert"][0], lines.join(" "), "{h}");
    assert_eq!(h["x-verify"][0], "FAILED:self-signed certificate", "{h}");
    let r = lab.client.get(lab.https, "/echo/c").await.expect("echo");
    let h = &r.json()["headers"];
    assert!(h.get("x-clientcert").is_none(), "{h}");
    assert_eq!(h["x-verify"][0], "NONE", "{h}");
}

/// `ssl_crl` is read again on reload: a client whose certificate the new CRL lists is
/// refused from then on (on new connections, resumed ones too), one it does not list still
/// gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_takes_effect_on_reload() {
    let files = tempfile::tempdir().expect("tempdir");
    let root = Issued::new("Test CA", true, |_| {}, None);
    let [alice, bob] = [("alice", 0x0A), ("bob", 0x0B)].map(|(cn, serial)| {
        Issued::new(
            cn,
            false,
            |p| p.serial_number = Some(vec![serial].into()),
            Some(&root),
        )
    });
    let (ca, crl_file) = (files.path().join("ca.pem"), files.path().join("crl.pem"));
    std::fs::write(&ca, &root.pem).expect("write ca.pem");
    std::fs::write(&crl_file, crl(&root, &[], (2019, 2099))).expect("write crl.pem");
    let lab = Lab::start(|t| {
        t.replace(
            "http {\n",
            &format!(
                "http {{\n  ssl_verify_client on; ssl_client_certificate {}; ssl_crl {};\n",
                ca.display(),
                crl_file.display()
            ),
        )
    })
    .await;
    let clients = [(&alice, "alice"), (&bob, "bob")]
        .map(|(c, name)| Client::presenting(&lab.cert, Some(&c.written(files.path(), name))));
    let path = "/oxauth/.well-known/openid-configuration";
    for client in &clients {
        let r = client.get(lab.https, path).await.expect("before");
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
    }
    std::fs::write(&crl_file, crl(&root, &[&alice], (2019, 2099))).expect("write crl.pem");
    let text = std::fs::read_to_string(&lab.conf).expect("read conf");
    lab.reload_with(&text).await;
    eventually(Duration::from_secs(10), "alice refused", || async {
        let r = clients[0].get(lab.https, path).await.expect("after");
        r.status == StatusCode::BAD_REQUEST
    })
    .await;
    let r = clients[1].get(lab.https, path).await.expect("bob after");
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_guide_location_reaches_its_pool_with_its_uri() {
    let lab = Lab::start(|t| t).await;
    for (path, want) in [
        ("/", "path=/\n"),
        ("/.well-known/webfinger?x=1", "path=/.well-known/webfinger"),
        ("/oxauth/restv1/token", "path=/oxauth/restv1/token"),
        ("/cas/login", "path=/cas/login"),
        ("/passport/auth/saml", "path=/passport/auth/saml"),
    ] {
        let r = lab.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {r:?}");
        assert!(r.body.contains(want), "{path}: {}", r.body);
    }
    let r = lab.get("/oxauth/.well-known/openid-configuration").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json()["issuer"],
        format!("https://{HOST}"),
        "the node's JSON passes unchanged"
    );
    let r = lab.get("/identity/home.htm").await;
    assert!(r.body.contains("path=/identity/home.htm") && r.body.len() > 4000);
    for path in ["/favicon.ico", "/robots.txt", "/index.html"] {
        assert_eq!(lab.get(path).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(lab.nodes[0].requests() + lab.nodes[1].requests(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_80_redirects_with_the_guides_host_and_the_request_uri() {
    let lab = Lab::start(|t| t).await;
    let tcp = tokio::net::TcpStream::connect(lab.http)
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let resp = sender
        .send_request(gluu_testkit::https::get("/identity/x?a=b"))
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        resp.headers()["location"],
        // The guide's own typo, kept: `-t` warns about it.
        "https://loadbalance.example.org/identity/x?a=b"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_as_the_guide_sets_them() {
    let lab = Lab::start(echo_location).await;
    let req = Request::get("/echo/h?q=1")
        .header("host", format!("{HOST}:443"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "hop")
        .header("te", "trailers")
        .header("cookie", "session=abc")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let r = lab
        .client
        .send(lab.https, Some("127.0.0.9".parse().expect("ip")), req)
        .await
        .expect("echo");
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let echo = r.json();
    let h = &echo["headers"];
    assert_eq!(echo["uri"], "/echo/h?q=1");
    assert_eq!(h["host"][0], HOST, "Host $host: the name without the port");
    assert_eq!(h["x-real-ip"][0], "127.0.0.9");
    assert_eq!(h["x-forwarded-for"][0], "203.0.113.9, 127.0.0.9");
    assert_eq!(h["x-forwarded-proto"][0], "https");
    assert_eq!(h["cookie"][0], "session=abc");
    for gone in ["x-secret", "te"] {
        assert!(h.get(gone).is_none(), "{gone} is hop-by-hop: {h}");
    }
    assert!(
        h.get("connection").is_none(),
        "HTTP/1.1 keep-alive to the node: {h}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_sticks_per_client_slash_24_and_the_rest_round_robins() {
    let lab = Lab::start(|t| t).await;
    let mut seen = std::collections::HashSet::new();
    for net in 1..=12u8 {
        let mut nodes = std::collections::HashSet::new();
        for host in [1u8, 77, 200] {
            let ip: IpAddr = format!("127.{net}.3.{host}").parse().expect("ip");
            let r = lab
                .client
                .get_from(lab.https, ip, "/identity/")
                .await
                .expect("identity");
            nodes.insert(r.node().to_owned());
        }
        assert_eq!(nodes.len(), 1, "127.{net}.3.0/24 went to {nodes:?}");
        seen.extend(nodes);
    }
    assert_eq!(
        seen.len(),
        2,
        "12 networks all hashed to one node: {seen:?}"
    );
    let mut rr = Vec::new();
    for _ in 0..4 {
        rr.push(lab.get("/oxauth/x").await.node().to_owned());
    }
    assert!(
        rr[0] != rr[1] && rr[0] == rr[2] && rr[1] == rr[3],
        "round robin: {rr:?}"
    );
}

type H2Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// A lab on the guide's configuration with HTTP/2 on and `http` (lines) added to `http {}`.
async fn h2_lab(http: &str) -> Lab {
    Lab::start(|t| {
        t.replace("    ssl on;", "    ssl on;\n    http2 on;")
            .replace("http {\n", &format!("http {{\n{http}"))
    })
    .await
}

/// An HTTP/2 connection to the balancer (ALPN h2): its sender and the task driving it.
async fn h2_connect(lab: &Lab) -> (H2Sender, tokio::task::JoinHandle<hyper::Result<()>>) {
    h2_connect_with_window(lab, None).await
}

/// [`h2_connect`] with the client's initial stream window (hyper's default when `None`).
async fn h2_connect_with_window(
    lab: &Lab,
    window: Option<u32>,
) -> (H2Sender, tokio::task::JoinHandle<hyper::Result<()>>) {
    let tls = lab
        .client
        .connect(lab.https, None, true)
        .await
        .expect("connect");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(window)
            .handshake(TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    (sender, tokio::spawn(conn))
}

/// A GET on an HTTP/2 connection: the response, its body unread.
async fn h2_send(sender: &mut H2Sender, path: &str) -> hyper::Response<hyper::body::Incoming> {
    let req = Request::get(format!("https://{HOST}{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    sender.send_request(req).await.expect("h2 request")
}

/// A GET on an HTTP/2 connection.
async fn h2_get(sender: &mut H2Sender, path: &str) -> gluu_testkit::https::Reply {
    gluu_testkit::https::read(h2_send(sender, path).await)
        .await
        .expect("read")
}

/// HTTP/2 clients, with an admin's HSTS line (`add_header ... always` in `http {}`, which
/// the guide's locations inherit) on every answer, node's or gluu-lb's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_via_alpn() {
    const HSTS: &str = "max-age=31536000; includeSubDomains";
    let lab = h2_lab(&format!(
        "  add_header Strict-Transport-Security \"{HSTS}\" always;\n"
    ))
    .await;
    let (mut sender, _conn) = h2_connect(&lab).await;
    let hsts = |r: &gluu_testkit::https::Reply| {
        let all: Vec<_> = r
            .headers
            .get_all("strict-transport-security")
            .iter()
            .collect();
        assert_eq!(all, [HSTS], "{:?}", r.headers);
    };
    for _ in 0..3 {
        let r = h2_get(&mut sender, "/oxauth/.well-known/openid-configuration").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["issuer"], format!("https://{HOST}"));
        hsts(&r);
    }
    // The path is normalized and :authority is the host, as over HTTP/1.1.
    let r = h2_get(&mut sender, "/oxauth/../identity//%68ome.htm").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("/identity/home.htm"), "{}", r.body);
    let r = h2_get(&mut sender, "/../x").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    hsts(&r);
    let r = h2_get(&mut sender, "/unrouted").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    hsts(&r);
    // Cookies sent as several fields (HPACK compresses them better so) reach the node on
    // one line, joined by "; " (RFC 9113 8.2.3); before session 32 the node got two
    // `Cookie` lines. Other repeated fields stay lines of their own.
    let req = Request::get(format!("https://{HOST}/oxauth/echo"))
        .header("cookie", "session_id=1")
        .header("cookie", "b=2; c=3")
        .header("x-two", "1")
        .header("x-two", "2")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let r = gluu_testkit::https::read(sender.send_request(req).await.expect("h2 request"))
        .await
        .expect("read");
    let headers = &r.json()["headers"];
    assert_eq!(
        headers["cookie"],
        serde_json::json!(["session_id=1; b=2; c=3"])
    );
    assert_eq!(headers["x-two"], serde_json::json!(["1", "2"]));
    // A `Host` beside `:authority` must name the same host (RFC 9113 8.3.1): another one
    // is a 400 (before session 32 `:authority` was taken and `Host` ignored).
    for (host, want) in [
        ("evil.example", StatusCode::BAD_REQUEST),
        ("a b", StatusCode::BAD_REQUEST),
        ("LoadBalancer.Example.org.:443", StatusCode::OK),
    ] {
        let req = Request::get(format!("https://{HOST}/oxauth/x"))
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let r = gluu_testkit::https::read(sender.send_request(req).await.expect("h2 request"))
            .await
            .expect("read");
        assert_eq!(r.status, want, "Host {host:?}");
    }
}

/// `keepalive_requests` on HTTP/2 (nginx 1.19.7's rule): the third request is answered
/// and the connection gets GOAWAY, ending once its streams have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_ends_after_keepalive_requests() {
    let lab = h2_lab("  keepalive_requests 3;\n").await;
    let (mut sender, conn) = h2_connect(&lab).await;
    for _ in 0..3 {
        assert_eq!(
            h2_get(&mut sender, "/oxauth/x").await.status,
            StatusCode::OK
        );
    }
    let end = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(end.is_ok(), "still open 5s after the third response");
    assert!(
        sender
            .send_request(
                Request::get(format!("https://{HOST}/oxauth/x"))
                    .body(Full::new(Bytes::new()))
                    .expect("request")
            )
            .await
            .is_err(),
        "a fourth request on it"
    );
}

/// `http2_max_concurrent_streams 2`: a third request on the connection waits for one of
/// the first two to end (the client queues it, as the server's SETTINGS say).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_gets_the_streams_http2_max_concurrent_streams_allows() {
    let lab = h2_lab("  http2_max_concurrent_streams 2;\n").await;
    let (mut sender, _conn) = h2_connect(&lab).await;
    // One request first: its answer comes after the server's SETTINGS, which the client
    // then knows (streams opened before them may be refused, REFUSED_STREAM, as nginx does).
    assert_eq!(
        h2_get(&mut sender, "/oxauth/x").await.status,
        StatusCode::OK
    );
    let start = Instant::now();
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let mut sender = sender.clone();
            tokio::spawn(async move { h2_get(&mut sender, "/oxauth/slow/1000").await.status })
        })
        .collect();
    for s in slow {
        assert_eq!(s.await.expect("join"), StatusCode::OK);
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "three 1 s requests over 2 streams took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_after_keepalive_timeout() {
    let lab = h2_lab("  keepalive_timeout 1s;\n").await;
    let (mut sender, conn) = h2_connect(&lab).await;
    // Requests keep it open past the timeout; the client answers every PING meanwhile.
    let mut pace = tokio::time::interval(Duration::from_millis(400));
    for _ in 0..6 {
        pace.tick().await;
        assert_eq!(
            h2_get(&mut sender, "/oxauth/x").await.status,
            StatusCode::OK
        );
    }
    let quiet = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(end.is_ok(), "still open 10s after the last request");
    let open = quiet.elapsed();
    // The limit counts from when gluu-lb sent the last response, a little before it
    // reached this client.
    assert!(
        open >= Duration::from_millis(500) && open < Duration::from_secs(8),
        "closed after {open:?} without a request; keepalive_timeout is 1s"
    );
    // A response slower than the limit arrives: a connection with a stream open is not
    // idle, and serves the next request.
    let (mut sender, _conn) = h2_connect(&lab).await;
    let r = h2_get(&mut sender, "/oxauth/slow/2500").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("slow"), "{}", r.body);
    assert_eq!(
        h2_get(&mut sender, "/oxauth/x").await.status,
        StatusCode::OK
    );
}

/// A new TLS connection to gluu-lb with `text` written on it, as it stands.
async fn sent_on_new_connection(
    lab: &Lab,
    text: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut tls = lab
        .client
        .connect(lab.https, None, false)
        .await
        .expect("connect");
    tls.write_all(text.as_bytes()).await.expect("write");
    tls
}

/// Opens a WebSocket to the nodes' echo through the balancer; panics unless it gets 101.
async fn websocket(lab: &Lab) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut tls = sent_on_new_connection(
        lab,
        &format!(
            "GET /oxauth/ws HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ),
    )
    .await;
    let head = read_head(&mut tls).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    tls
}

/// Sends `msg` and expects it back within 5 s.
async fn echo<S: AsyncReadExt + AsyncWriteExt + Unpin>(ws: &mut S, msg: &str) {
    ws.write_all(msg.as_bytes()).await.expect("write");
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), ws.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(back, msg.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_through() {
    let lab = Lab::start(|t| t).await;
    let mut ws = websocket(&lab).await;
    for msg in ["hello", "through the balancer"] {
        echo(&mut ws, msg).await;
    }
    // nginx's WebSocket recipe in every location: taken as met, upgrades and plain
    // requests alike.
    let lab = Lab::start(|t| {
        assert!(t.contains("proxy_set_header        Host            $host;"));
        t.replace(
            "proxy_set_header        Host            $host;",
            "proxy_set_header Host $host;\n proxy_http_version 1.1;\n\
             proxy_set_header Upgrade $http_upgrade;\n proxy_set_header Connection \"upgrade\";",
        )
    })
    .await;
    assert_eq!(lab.get("/oxauth/x").await.status, StatusCode::OK);
    let mut ws = websocket(&lab).await;
    echo(&mut ws, "with the recipe").await;
    // Its other form, `Connection $connection_upgrade` by a `map`: taken as met too, so
    // a plain request's node connection is kept (nginx sends the node `Connection:
    // close`): ten requests, one connection to each node.
    let lab = Lab::start(|t| {
        t.replacen(
            "http {",
            "http {\nmap $http_upgrade $connection_upgrade { default upgrade; '' close; }",
            1,
        )
        .replace(
            "proxy_set_header        Host            $host;",
            "proxy_set_header Host $host;\n proxy_http_version 1.1;\n\
             proxy_set_header Upgrade $http_upgrade;\n\
             proxy_set_header Connection $connection_upgrade;",
        )
    })
    .await;
    let mut sender = one_connection(&lab).await;
    for _ in 0..10 {
        let r = get_on(&mut sender, "/oxauth/x").await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_eq!(node_connects(&lab).await, 2.0);
    let mut ws = websocket(&lab).await;
    echo(&mut ws, "with the map").await;
}

/// An open WebSocket is a request being answered in `stub_status`, as nginx counts it,
/// until it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stub_status_counts_an_open_websocket_as_writing() {
    let lab = Lab::start(|t| with_locations(t, "location = /basic_status { stub_status; }")).await;
    let lab = &lab;
    let writing = || async move {
        let text = lab.get("/basic_status").await.body;
        let n = text
            .split("Writing: ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<u32>().ok());
        n.unwrap_or_else(|| panic!("no Writing count in {text:?}"))
    };
    let mut ws = websocket(lab).await;
    echo(&mut ws, "open").await;
    // The status request itself, and the WebSocket.
    assert_eq!(writing().await, 2);
    drop(ws);
    eventually(
        Duration::from_secs(10),
        "the closed WebSocket leaves the count",
        || async { writing().await == 1 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_keeps_its_slots_closes_after_proxy_read_timeout_and_drains_on_stop() {
    // One worker with a socket on port 80 and one on 443, each holding a slot while it waits
    // to accept (as in worker_connections_bound_clients_and_node_connections): 6 leave room
    // for 5 connections.
    let lab = Lab::start(|t| {
        format!("worker_processes 1;\nworker_shutdown_timeout 1s;\n{t}")
            .replace("worker_connections 6500;", "worker_connections 6;")
            .replace(
                "location /oxauth {\n",
                "location /oxauth {\n        proxy_read_timeout 2s;\n",
            )
    })
    .await;
    let mut ws = websocket(&lab).await;
    echo(&mut ws, "hello").await;
    // The WebSocket holds two, the client's connection and the node's, as nginx counts them:
    // three more clients get in, a fourth waits.
    let mut held = Vec::new();
    let waiting = loop {
        assert!(
            held.len() <= 3,
            "the WebSocket and {} more clients let in",
            held.len()
        );
        let (client, addr) = (lab.client.clone(), lab.https);
        let mut h = tokio::spawn(async move { client.connect(addr, None, false).await });
        match tokio::time::timeout(Duration::from_millis(700), &mut h).await {
            Ok(tls) => held.push(tls.expect("join").expect("handshake")),
            Err(_) => break h,
        }
    };
    assert_eq!(held.len(), 3, "a WebSocket takes two of the five slots");
    waiting.abort();
    drop(held);
    // Traffic keeps it open past proxy_read_timeout; 2 s without a byte either way closes it.
    let mut pace = tokio::time::interval(Duration::from_millis(500));
    for i in 0..7 {
        pace.tick().await;
        echo(&mut ws, &format!("message {i}")).await;
    }
    let quiet = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(10), ws.read(&mut [0u8; 16])).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "closed without a byte: {read:?}"
    );
    let open = quiet.elapsed();
    // The relay saw the last bytes a little before this client read them.
    assert!(
        open >= Duration::from_millis(1500) && open < Duration::from_secs(8),
        "closed after {open:?} without traffic; proxy_read_timeout is 2s"
    );
    // A graceful stop waits for an open WebSocket until worker_shutdown_timeout, then
    // closes it.
    let mut ws = websocket(&lab).await;
    echo(&mut ws, "still here").await;
    let took = lab.stop().await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "stopped in {took:?}; worker_shutdown_timeout is 1s"
    );
    let read = tokio::time::timeout(Duration::from_secs(5), ws.read(&mut [0u8; 16])).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "closed: {read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_too_large_requests() {
    let lab = Lab::start(|t| {
        echo_location(t.replace(
            "http {\n",
            "http {\n  large_client_header_buffers 2 4k;\n  client_max_body_size 1k;\n",
        ))
    })
    .await;
    let lab = &lab;
    let raw = |text: String| async move { exchange(lab, &text).await.0 };
    let bad = raw("GET /oxauth HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".into()).await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    let huge = raw(format!(
        "GET /oxauth HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    ))
    .await;
    assert!(huge.starts_with("HTTP/1.1 431"), "{huge}");
    let body = "x".repeat(2048);
    let req = Request::post("/echo")
        .header("host", HOST)
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let r = lab.client.send(lab.https, None, req).await.expect("post");
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(lab.nodes[0].posts() + lab.nodes[1].posts(), 0, "never sent");
    // Chunked, no length: stopped while streaming.
    let chunked = raw(format!(
        "POST /echo HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         800\r\n{}\r\n0\r\n\r\n",
        "y".repeat(2048)
    ))
    .await;
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
}

/// `lingering_close` (nginx's default `on`): a body gluu-lb does not read (a 413 here) is
/// drained after the answer, so the upload goes on and the client reads the answer; closed
/// at once, the connection was reset under the upload (curl: 2-6 uploads in 20 lost
/// their 413). The drain ends at `lingering_time`, or `lingering_timeout` after the last
/// byte; a connection whose request was read whole closes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_body_is_drained_so_that_the_client_reads_the_answer() {
    let lab = Lab::start(|t| {
        let text = t.replace("http {\n", "http {\n  client_max_body_size 1k;\n");
        with_locations(
            echo_location(text),
            &format!(
                "    location /short {{\n        lingering_time 2s;\n        \
                 lingering_timeout 10s;\n        proxy_pass https://backend;\n        \
                 {GUIDE_SETTINGS}\n    }}\n    location /quiet {{\n        \
                 lingering_timeout 1s;\n        proxy_pass https://backend;\n        \
                 {GUIDE_SETTINGS}\n    }}\n"
            ),
        )
    })
    .await;
    let chunk = vec![b'x'; 64 << 10];
    // 64 MiB, more than both ends' socket buffers hold: written whole, then the answer.
    let len = 1024 * chunk.len();
    let (mut answer, mut upload) = posted(&lab, "/echo", len).await;
    let all = tokio::time::timeout(Duration::from_secs(30), async {
        for sent in (0..len).step_by(chunk.len()) {
            if let Err(e) = upload.write_all(&chunk).await {
                panic!("the upload was reset after {sent} bytes: {e}");
            }
        }
    });
    all.await.expect("uploaded within 30 s");
    let mut got = Vec::new();
    let _ = answer.read_to_end(&mut got).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");

    // lingering_time 2s: a client that keeps sending is cut off 2 s after the answer.
    let (mut answer, mut upload) = posted(&lab, "/short", len).await;
    let answered = tokio::spawn(async move {
        let _ = answer.read_to_end(&mut Vec::new()).await;
        Instant::now()
    });
    let mut failed = None;
    for _ in 0..100 {
        if upload.write_all(&chunk[..1024]).await.is_err() {
            failed = Some(Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answered = answered.await.expect("join");
    let drained = failed.expect("cut off within 10 s") - answered;
    assert!(
        drained >= Duration::from_millis(1500) && drained < Duration::from_secs(6),
        "drained for {drained:?}; lingering_time is 2s"
    );

    // lingering_timeout 1s: closed 1 s after the last byte.
    let (_answer, mut upload) = posted(&lab, "/quiet", len).await;
    upload.write_all(&chunk).await.expect("drained");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        closed(&mut upload).await,
        "still draining 2.5 s after the last byte"
    );

    // Nothing unread: closed at once, not after lingering_timeout (5 s).
    let get = format!("GET /echo HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    let mut tls = sent_on_new_connection(&lab, &get).await;
    let mut reply = Vec::new();
    let _ = tls.read_to_end(&mut reply).await;
    assert!(reply.starts_with(b"HTTP/1.1 200"), "{reply:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(closed(&mut tls).await, "still draining after a GET");
}

/// A body gluu-lb answers without reading (a `return` here) is read to its end and thrown
/// away, as nginx discards it, and the connection goes on with the client's next request;
/// before session 34 hyper closed it after the answer (a pipelined request behind the body
/// was lost, and every such answer cost a new handshake). The discard ends `lingering_timeout`
/// after the last byte and at `lingering_time` in all, and the connection then closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_nothing_reads_is_discarded_and_the_connection_kept() {
    let lab = Lab::start(|t| {
        with_locations(
            t,
            "    location = /gone {\n        lingering_timeout 1s;\n        \
             lingering_time 2s;\n        return 410;\n    }\n",
        )
    })
    .await;
    let len = 512 << 10;
    let body = vec![b'x'; len];
    // The answer first, then the body, then the next request on the same connection.
    let (mut answer, mut upload) = posted(&lab, "/gone", len).await;
    assert!(
        one_answer(&mut answer, false)
            .await
            .0
            .starts_with("HTTP/1.1 410")
    );
    upload.write_all(&body).await.expect("body");
    let next = format!("GET /oxauth/x HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    upload.write_all(next.as_bytes()).await.expect("next");
    let (head, text) = one_answer(&mut answer, false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(text.contains("path=/oxauth/x"), "{text}");

    // A body that stops: closed lingering_timeout (1 s) after its last byte.
    let (mut answer, mut upload) = posted(&lab, "/gone", len).await;
    upload.write_all(&body[..1000]).await.expect("part");
    assert!(
        one_answer(&mut answer, false)
            .await
            .0
            .starts_with("HTTP/1.1 410")
    );
    let quiet = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(10), answer.read(&mut [0u8; 64])).await;
    assert!(matches!(end, Ok(Ok(0) | Err(_))), "{end:?}");
    let waited = quiet.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "closed {waited:?} after the last byte; lingering_timeout is 1s"
    );

    // A body that trickles on: closed at lingering_time (2 s).
    let (mut answer, mut upload) = posted(&lab, "/gone", len).await;
    assert!(
        one_answer(&mut answer, false)
            .await
            .0
            .starts_with("HTTP/1.1 410")
    );
    let started = Instant::now();
    let ended = tokio::spawn(async move {
        let _ = answer.read(&mut [0u8; 64]).await;
        Instant::now()
    });
    for _ in 0..100 {
        if ended.is_finished() || upload.write_all(&body[..1024]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = ended.await.expect("join") - started;
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "closed after {took:?}; lingering_time is 2s"
    );
}

/// Whether the connection under `w` has been closed (not only shut for writing, which a
/// draining one is too): a write to a closed socket is answered with a reset, which fails
/// a later write. Tries for about a second.
async fn closed<W: AsyncWriteExt + Unpin>(w: &mut W) -> bool {
    for _ in 0..20 {
        if w.write_all(&[b'x'; 1024]).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// `reset_timedout_connection on`: a client whose request head did not come within
/// `client_header_timeout`, or one dropped by `return 444`, is reset; with the line off
/// (the default) the connection is closed (a TLS client sees it end without
/// `close_notify`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_clients_are_reset_with_reset_timedout_connection() {
    let lab = Lab::start(|t| {
        with_locations(
            t.replace(
                "http {\n",
                "http {\n  client_header_timeout 1s;\n  reset_timedout_connection on;\n",
            ),
            "    location = /drop { return 444; }\n    \
             location = /dropped { reset_timedout_connection off; return 444; }\n",
        )
    })
    .await;
    let ended = |text: String| {
        let lab = &lab;
        async move {
            let mut tls = sent_on_new_connection(lab, &text).await;
            let mut buf = [0u8; 64];
            let read = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf));
            read.await.expect("ended").map_err(|e| e.kind())
        }
    };
    let reset = Err(std::io::ErrorKind::ConnectionReset);
    let slow = format!("GET /oxauth HTTP/1.1\r\nHost: {HOST}\r\n");
    assert_eq!(ended(slow).await, reset, "a head that did not come whole");
    assert_eq!(
        ended(format!("GET /drop HTTP/1.1\r\nHost: {HOST}\r\n\r\n")).await,
        reset
    );
    let closed = ended(format!("GET /dropped HTTP/1.1\r\nHost: {HOST}\r\n\r\n")).await;
    assert!(
        matches!(closed, Ok(0) | Err(std::io::ErrorKind::UnexpectedEof)),
        "{closed:?}"
    );
}

/// A POST's head to `path` declaring `len` bytes of body, on a new TLS connection: its
/// reading and writing halves.
async fn posted(
    lab: &Lab,
    path: &str,
    len: usize,
) -> (
    tokio::io::ReadHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    tokio::io::WriteHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
) {
    let head = format!("POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len}\r\n\r\n");
    tokio::io::split(sent_on_new_connection(lab, &head).await)
}

/// Writes `text` on a new TLS connection and reads until gluu-lb closes it (at most 10 s):
/// what came back, and how long the connection stayed open after the write.
async fn exchange(lab: &Lab, text: &str) -> (String, Duration) {
    let mut tls = sent_on_new_connection(lab, text).await;
    let start = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_by_their_timeouts() {
    let lab = Lab::start(|t| {
        echo_location(t.replace(
            "http {\n",
            "http {\n  client_header_timeout 1s;\n  ssl_handshake_timeout 1s;\n  client_body_timeout 1s;\n",
        ))
    })
    .await;
    let cut_off = |what: &str, open: Duration| {
        assert!(
            open >= Duration::from_millis(900) && open < Duration::from_secs(8),
            "{what}: closed after {open:?}, the timeout is 1s"
        );
    };

    // TCP only, no ClientHello: ssl_handshake_timeout.
    let mut tcp = tokio::net::TcpStream::connect(lab.https)
        .await
        .expect("connect");
    let start = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut [0u8; 16])).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "closed without a byte: {read:?}"
    );
    cut_off("silent TCP connection", start.elapsed());

    // Half a request head, then nothing: client_header_timeout.
    let (got, open) = exchange(&lab, "GET /oxauth/x HTTP/1.1\r\nHost: x\r\n").await;
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 408"),
        "nothing, or 408: {got}"
    );
    cut_off("half a request head", open);

    // A body that stops: client_body_timeout and 408. The body streams, so the node had the
    // request head; it never saw the rest.
    let (got, open) = exchange(
        &lab,
        &format!("POST /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100\r\n\r\n0123456789"),
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    cut_off("stalled request body", open);
    assert_eq!(lab.nodes[0].posts() + lab.nodes[1].posts(), 1);
    assert!(lab.get("/oxauth/x").await.body.contains("path=/oxauth/x"));
}

/// A request body the client breaks (a malformed chunk; a connection that ends before the
/// body does) is the client's fault: 400, as nginx answers, and no mark against the node.
/// Before session 33 it was a 502 that counted as the node's failure: with the guide's
/// `max_fails` of 1, one such request per node took every node out for `fail_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_the_client_breaks_counts_against_no_node() {
    let lab = Lab::start(echo_location).await;
    for method in ["POST", "GET"] {
        for chunks in ["zz\r\nhello\r\n0\r\n\r\n", "5\r\nhelloXX\r\n0\r\n\r\n"] {
            let (got, _) = exchange(
                &lab,
                &format!(
                    "{method} /echo HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}"
                ),
            )
            .await;
            assert!(
                got.starts_with("HTTP/1.1 400 "),
                "{method} {chunks:?}: {got}"
            );
        }
    }
    let mut tls = sent_on_new_connection(
        &lab,
        &format!("POST /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100\r\n\r\n0123456789"),
    )
    .await;
    tls.shutdown().await.expect("close");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    let got = String::from_utf8_lossy(&out);
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 400 "), "{got}");
    assert!(
        lab.nodes[0].posts() + lab.nodes[1].posts() > 0,
        "the bodies streamed"
    );
    let failures = lab.metrics_get("/metrics").await;
    assert!(
        !failures.contains("gluu_lb_upstream_failures_total"),
        "{failures}"
    );
    for n in 0..2 {
        assert_eq!(lab.node_state("backend", n).await, "up");
    }
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let r = lab.get("/oxauth/x").await;
        assert_eq!(r.status, StatusCode::OK);
        answered.insert(r.node().to_owned());
    }
    assert_eq!(answered.len(), 2, "both nodes still take requests");
}

/// A slow but steady upload is bounded by `client_body_timeout` between its pieces, not by
/// the node's timeouts: `proxy_read_timeout` starts once the body has all gone (nginx,
/// which buffers the body first, starts it then too). A node that stops reading a body is
/// cut off after `proxy_send_timeout` (504), and the request is not replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_timed_as_nginx_times_them() {
    let lab = Lab::start(|t| {
        echo_location(t)
            .replace(
                "proxy_connect_timeout 2;",
                "proxy_connect_timeout 2;\n        proxy_read_timeout 1s;\n        \
                 proxy_send_timeout 1s;\n        client_max_body_size 0;",
            )
            .replace("http {\n", "http {\n  client_body_timeout 3s;\n")
    })
    .await;
    // 3 s of body, a piece every 300 ms: longer than both node timeouts together.
    let head = format!(
        "POST /echo/upload HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let mut tls = sent_on_new_connection(&lab, &head).await;
    let start = Instant::now();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tls.write_all(b"a\r\n0123456789\r\n").await.expect("piece");
    }
    tls.write_all(b"0\r\n\r\n").await.expect("end");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    let got = String::from_utf8_lossy(&out);
    assert!(
        got.starts_with("HTTP/1.1 200"),
        "after {:?}: {got}",
        start.elapsed()
    );
    assert!(got.contains("\"body_len\":100"), "{got}");

    // The node takes the head, then reads nothing for 20 s: the body's writes block.
    let posts = lab.nodes[0].posts() + lab.nodes[1].posts();
    let body = 64 << 20;
    let head = format!(
        "POST /echo/slow/20000 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {body}\r\nConnection: close\r\n\r\n"
    );
    let tls = sent_on_new_connection(&lab, &head).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        let piece = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            if wr.write_all(&piece).await.is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), rd.read_to_end(&mut out)).await;
    let took = start.elapsed();
    writer.abort();
    let got = String::from_utf8_lossy(&out);
    assert!(got.starts_with("HTTP/1.1 504"), "after {took:?}: {got}");
    assert!(
        took < Duration::from_secs(10),
        "{took:?}: proxy_send_timeout is 1s"
    );
    assert_eq!(
        lab.nodes[0].posts() + lab.nodes[1].posts(),
        posts + 1,
        "not replayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_by_send_timeout() {
    let lab = Lab::start(|t| t.replace("http {\n", "http {\n  send_timeout 1s;\n")).await;
    // 32 MiB: far more than the socket buffers on both sides hold.
    let mut tls = sent_on_new_connection(
        &lab,
        &format!("GET /oxauth/big/33554432 HTTP/1.1\r\nHost: {HOST}\r\n\r\n"),
    )
    .await;
    let mut head = [0u8; 12];
    tls.read_exact(&mut head).await.expect("read");
    assert_eq!(&head, b"HTTP/1.1 200");
    // The client stops reading; the node's connection stays busy until gluu-lb gives up.
    // The timer may have started before the head was read (once the socket buffers
    // filled), so only the upper bound says something.
    let held = released(&lab, Instant::now()).await;
    assert!(
        held < Duration::from_secs(8),
        "released after {held:?}; send_timeout is 1s"
    );
    // What was sent before the cut arrives, then the end: far less than 32 MiB.
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => got += n,
            Err(_) => panic!("still open after the cut, {got} bytes read"),
        }
    }
    assert!(got < 32 << 20, "{got} bytes: the whole response was sent");
}

/// A GET on an open HTTP/1.1 connection.
async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
) -> gluu_testkit::https::Reply {
    sender.ready().await.expect("ready");
    let resp = sender
        .send_request(gluu_testkit::https::get(path))
        .await
        .expect("send");
    gluu_testkit::https::read(resp).await.expect("read")
}

/// One client connection to `lab`'s balancer (so one worker and its pools serve it).
async fn one_connection(lab: &Lab) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tls = lab
        .client
        .connect(lab.https, None, false)
        .await
        .expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

/// Node connections gluu-lb has made, all nodes together.
async fn node_connects(lab: &Lab) -> f64 {
    let text = lab.metrics_get("/metrics").await;
    text.lines()
        .filter(|l| l.starts_with("gluu_lb_upstream_connects_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_the_nodes_are_kept_alive() {
    let lab = Lab::start(|t| t).await;
    let mut sender = one_connection(&lab).await;
    for _ in 0..50 {
        assert_eq!(
            get_on(&mut sender, "/oxauth/x").await.status,
            StatusCode::OK
        );
    }
    // A body far larger than every buffer on the way comes whole, on the same connection.
    let r = get_on(&mut sender, "/oxauth/big/3000000").await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 3_000_000));
    let connects = node_connects(&lab).await;
    assert!(
        (2.0..=4.0).contains(&connects),
        "50 requests should reuse a connection per node, made {connects}"
    );
}

/// nginx's upstream `keepalive_requests`, `keepalive_timeout` and `keepalive_time`: a node
/// connection carries at most that many requests, and is not used again after sitting
/// idle that long (`/status` stops counting it) or living that long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_connections_end_after_their_requests_idle_time_and_lifetime() {
    let lab = Lab::start(|t| {
        t.replacen(
            "max_fails=2 fail_timeout=10s;\n  }",
            "max_fails=2 fail_timeout=10s;\n  keepalive_requests 2; keepalive_timeout 1s;\n  keepalive_time 1h;\n  }",
            2,
        )
    })
    .await;
    let mut sender = one_connection(&lab).await;
    let connects = || node_connects(&lab);
    for _ in 0..20 {
        assert_eq!(
            get_on(&mut sender, "/oxauth/x").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(connects().await, 10.0, "20 requests, 2 per connection");
    // Idle: usable pooled connections drop to none within a second or so.
    let idle = || async {
        let status: serde_json::Value =
            serde_json::from_str(&lab.metrics_get("/status").await).expect("status json");
        status["upstreams"]["backend"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter_map(|n| n["idle_connections"].as_u64())
            .sum::<u64>()
    };
    assert_eq!(
        get_on(&mut sender, "/oxauth/x").await.status,
        StatusCode::OK
    );
    assert!(
        idle().await > 0,
        "a connection with a request left waits in the pool"
    );
    eventually(Duration::from_secs(5), "the pool's idle limit", || async {
        idle().await == 0
    })
    .await;
    assert_eq!(
        get_on(&mut sender, "/oxauth/x").await.status,
        StatusCode::OK
    );
    assert_eq!(
        connects().await,
        12.0,
        "after the idle limit, a new connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_connections_bound_clients_and_node_connections() {
    // One worker with a socket on port 80 and one on 443: each holds a slot while it waits
    // to accept (nginx counts listening sockets too), so 4 leave room for 3 clients.
    let lab = Lab::start(|t| {
        format!("worker_processes 1;\n{t}")
            .replace("worker_connections 6500;", "worker_connections 4;")
    })
    .await;
    let handshake = |lab: &Lab| {
        let (client, addr) = (lab.client.clone(), lab.https);
        tokio::spawn(async move { client.connect(addr, None, false).await })
    };
    let mut held = Vec::new();
    let mut waiting = loop {
        assert!(
            held.len() <= 4,
            "worker_connections 4 let in {} clients",
            held.len()
        );
        let mut h = handshake(&lab);
        match tokio::time::timeout(Duration::from_millis(700), &mut h).await {
            Ok(tls) => held.push(tls.expect("join").expect("handshake")),
            Err(_) => break h,
        }
    };
    assert_eq!(held.len(), 3, "the fourth client waits in the listen queue");
    // Every slot is taken: a request that needs a node connection gets 502 at once.
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(held.remove(0)))
        .await
        .expect("http");
    tokio::spawn(conn);
    let r = get_on(&mut sender, "/oxauth/x").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    // A client leaves: the waiting one is let in.
    drop(held.pop());
    let tls = tokio::time::timeout(Duration::from_secs(5), &mut waiting)
        .await
        .expect("let in when a slot frees")
        .expect("join");
    assert!(tls.is_ok(), "{:?}", tls.err());
}

/// A GET of `path` from the source address `from` with this `User-Agent`: the reply, and
/// the address of the node that answered it.
async fn sent_from(
    lab: &Lab,
    from: &str,
    path: &str,
    agent: &str,
) -> (gluu_testkit::https::Reply, std::net::SocketAddr) {
    let req = Request::get(path)
        .header("host", HOST)
        .header("user-agent", agent)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let r = lab
        .client
        .send(lab.https, Some(from.parse().expect("ip")), req)
        .await
        .expect("get");
    let node = lab
        .nodes
        .iter()
        .find(|n| n.name == r.node())
        .expect("node")
        .addr;
    (r, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_is_nginx_combined_plus_upstream() {
    let lab =
        Lab::start(|t| t.replace("http {\n", "http {\n  access_log access.log combined;\n")).await;
    let (r, node) = sent_from(&lab, "127.0.0.5", "/oxauth/a?b=c", "test-agent/1").await;
    let len = r.body.len();
    lab.get("/nothing-here").await;
    let path = lab.dir.path().join("access.log");
    // The log's text once it has `n` lines.
    let logged = |n: usize| {
        let path = path.clone();
        async move {
            support::eventually(Duration::from_secs(5), "access log lines", || {
                let path = path.clone();
                async move { std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() >= n) }
            })
            .await;
            std::fs::read_to_string(&path).expect("log")
        }
    };
    let text = logged(2).await;
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("127.0.0.5 - - [")
            && lines[0].contains(&format!(
                "] \"GET /oxauth/a?b=c HTTP/1.1\" 200 {len} \"-\" \"test-agent/1\" {node} 0."
            )),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("\"GET /nothing-here HTTP/1.1\" 404 ") && lines[1].ends_with(" - -"),
        "{}",
        lines[1]
    );

    // A client that leaves while the node thinks: 499, as nginx logs it, with the node.
    leave_while_the_node_thinks(&lab).await;
    let text = logged(3).await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[2].contains("\"GET /oxauth/slow/3000 HTTP/1.1\" 499 0 ")
            && lines[2].contains(" 127.0.0.1:"),
        "{}",
        lines[2]
    );
}

/// A `log_format` with `escape=json`, as admins write them for a log pipeline: each line
/// is a JSON object with the request's values, a header the client did not send empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_takes_a_log_format() {
    let lab = Lab::start(|t| {
        t.replace(
            "http {\n",
            "http {\n  log_format json escape=json '{\"client\":\"$remote_addr\",\"request\":\"$request\",'\n\
             '\"uri\":\"$uri\",\"args\":\"$args\",\"status\":$status,\"bytes\":$body_bytes_sent,'\n\
             '\"agent\":\"$http_user_agent\",\"nope\":\"$http_x_nope\",\"node\":\"$upstream_addr\",'\n\
             '\"host\":\"$host\",\"scheme\":\"$scheme\",\"took\":$request_time,'\n\
             '\"tls\":\"$ssl_protocol $ssl_cipher\",\"sni\":\"$ssl_server_name\",'\n\
             '\"n\":$connection_requests,\"us\":\"$upstream_status\"}';\n\
             access_log access.json json;\n",
        )
    })
    .await;
    let (r, node) = sent_from(
        &lab,
        "127.0.0.6",
        "/oxauth//a%2e?b=c%22",
        "agent \"quoted\"",
    )
    .await;
    let path = lab.dir.path().join("access.json");
    eventually(Duration::from_secs(5), "the access log line", || async {
        std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() >= 1)
    })
    .await;
    let text = std::fs::read_to_string(&path).expect("log");
    let line: serde_json::Value = serde_json::from_str(text.lines().next().expect("a line"))
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    let want = serde_json::json!({
        "client": "127.0.0.6",
        "request": "GET /oxauth//a%2e?b=c%22 HTTP/1.1",
        "uri": "/oxauth/a.",
        "args": "b=c%22",
        "status": 200,
        "bytes": r.body.len(),
        "agent": "agent \"quoted\"",
        "nope": "",
        "node": node.to_string(),
        "host": HOST,
        "scheme": "https",
        "took": line["took"],
        "tls": "TLSv1.3 TLS_AES_128_GCM_SHA256",
        "sni": HOST,
        "n": 1,
        "us": "200",
    });
    assert_eq!(line, want, "{text}");
    assert!(line["took"].as_f64().is_some_and(|t| t < 5.0), "{text}");
}

/// A client sends a request a node takes 3 s to answer, and leaves once the node has it.
async fn leave_while_the_node_thinks(lab: &Lab) {
    let reached = || lab.nodes.iter().map(|n| n.requests()).sum::<usize>();
    let before = reached();
    let tls = sent_on_new_connection(
        lab,
        &format!("GET /oxauth/slow/3000 HTTP/1.1\r\nHost: {HOST}\r\n\r\n"),
    )
    .await;
    support::eventually(Duration::from_secs(5), "the request at a node", || async {
        reached() > before
    })
    .await;
    drop(tls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_file_tuned_for_upstream_keep_alive_runs_as_it_is() {
    // The benchmark's "nginx + keepalive" file: what nginx needs to keep node connections
    // open is what gluu-lb does anyway.
    let lab = Lab::start(|t| gluu_testkit::keepalive_tuned(&t)).await;
    let text = std::fs::read_to_string(&lab.conf).expect("conf");
    assert_eq!(text.matches("proxy_http_version 1.1;").count(), 6, "{text}");
    assert_eq!(text.matches("keepalive 32;").count(), 2, "{text}");
    assert_eq!(lab.get("/identity/x").await.status, StatusCode::OK);
    for path in ["/oxauth/echo", "/passport/echo"] {
        let r = lab.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {r:?}");
        let seen = r.json();
        assert!(seen["headers"]["connection"].is_null(), "{seen}");
        assert_eq!(seen["headers"]["x-real-ip"][0], "127.0.0.1", "{seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_certificates_end_is_exported_and_follows_a_reload() {
    let lab = Lab::start(|t| t).await;
    let series = |c: &Cert| {
        format!(
            "gluu_lb_certificate_expiry_timestamp_seconds{{file=\"{}\"}}",
            c.cert.display()
        )
    };
    // rcgen's default end, 4096-01-01.
    assert_eq!(lab.metric(&series(&lab.cert)).await, 67_090_118_400.0);
    let renewed = Cert::ending_in(lab.dir.path(), "renewed", 20 * 86_400);
    let due = (gluu_testkit::unix_now() + 20 * 86_400) as f64;
    let text = std::fs::read_to_string(&lab.conf).expect("conf");
    let path = |p: &std::path::Path| p.display().to_string();
    lab.reload_with(
        &text
            .replace(&path(&lab.cert.cert), &path(&renewed.cert))
            .replace(&path(&lab.cert.key), &path(&renewed.key)),
    )
    .await;
    eventually(Duration::from_secs(5), "the renewed file", || async {
        lab.metric(&series(&renewed)).await > 0.0
    })
    .await;
    let end = lab.metric(&series(&renewed)).await;
    assert!((end - due).abs() < 5.0, "{end} against {due}");
    let metrics = lab.metrics_get("/metrics").await;
    assert!(!metrics.contains(&path(&lab.cert.cert)), "{metrics}");
    let status = lab.status().await;
    let certs = status["certificates"].as_array().expect("certificates");
    assert_eq!(certs.len(), 1, "{status}");
    assert_eq!(certs[0]["file"], path(&renewed.cert));
    assert_eq!(certs[0]["subject"], "CN=rcgen self signed cert");
    assert_eq!(certs[0]["not_after_timestamp"].as_f64(), Some(end));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_and_metrics() {
    let lab = Lab::start(|t| t).await;
    lab.get("/oxauth/x").await;
    let status = lab.status().await;
    let nodes = status["upstreams"]["backend"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0]["address"], lab.nodes[0].addr.to_string());
    assert_eq!(nodes[0]["state"], "up");
    assert!(status["upstreams"]["backend_id"].is_array());
    // The node that answered presented its certificate (rcgen's default end, 4096-01-01);
    // the other has not been connected to yet and has no date, nor a series.
    let seen: Vec<_> = nodes
        .iter()
        .filter(|n| !n["certificate"].is_null())
        .collect();
    assert_eq!(seen.len(), 1, "{status}");
    assert_eq!(
        seen[0]["certificate"]["subject"],
        "CN=rcgen self signed cert"
    );
    assert_eq!(
        seen[0]["certificate"]["not_after_timestamp"].as_i64(),
        Some(67_090_118_400)
    );
    let series = |n: &serde_json::Value| {
        format!(
            "gluu_lb_upstream_certificate_expiry_timestamp_seconds{{upstream=\"backend\",node=\"{}\"}}",
            n["address"].as_str().expect("address")
        )
    };
    assert_eq!(lab.metric(&series(seen[0])).await, 67_090_118_400.0);
    let unseen = nodes
        .iter()
        .find(|n| n["certificate"].is_null())
        .expect("unseen");
    let text = lab.metrics_get("/metrics").await;
    assert!(!text.contains(&series(unseen)), "{text}");
    assert_eq!(
        lab.metric("gluu_lb_requests_total{class=\"2xx\"}").await,
        1.0
    );
    // A client that left before its response (nginx's 499) is counted apart, access log
    // or not: it was sent no response.
    leave_while_the_node_thinks(&lab).await;
    support::eventually(Duration::from_secs(5), "an abandoned request", || async {
        lab.metric("gluu_lb_requests_abandoned_total").await == 1.0
    })
    .await;
    assert_eq!(
        lab.metric("gluu_lb_requests_total{class=\"4xx\"}").await,
        0.0
    );
    // No worker_processes line: a worker per core, each listing its client connections.
    // The kernel spreads connections over the workers' sockets by address and port: with
    // 24, one worker of two gets them all once in 8 million runs.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut held = Vec::new();
    for _ in 0..24 {
        held.push(
            lab.client
                .connect(lab.https, None, false)
                .await
                .expect("connect"),
        );
    }
    let loads = |status: serde_json::Value| -> Vec<u64> {
        status["worker_connections"]
            .as_array()
            .map(|l| l.iter().filter_map(|n| n.as_u64()).collect())
            .unwrap_or_default()
    };
    eventually(Duration::from_secs(5), "24 connections held", || async {
        let l = loads(lab.status().await);
        l.len() == cores && l.iter().sum::<u64>() == 24
    })
    .await;
    let l = loads(lab.status().await);
    assert!(
        cores == 1 || l.iter().filter(|&&n| n > 0).count() > 1,
        "every connection on one worker: {l:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_lets_a_request_finish() {
    let lab = Lab::start(|t| t).await;
    let client = lab.client.clone();
    let addr = lab.https;
    let slow = tokio::spawn(async move { client.get(addr, "/oxauth/slow/700").await });
    // The request is in flight when the node has it.
    support::eventually(Duration::from_secs(5), "the request at a node", || {
        let n = lab.nodes[0].requests() + lab.nodes[1].requests();
        async move { n == 1 }
    })
    .await;
    let stopping = tokio::spawn(lab.stop());
    let r = slow.await.expect("join").expect("finished");
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("slow"), "{}", r.body);
    let took = stopping.await.expect("join");
    assert!(took < Duration::from_secs(10), "drained in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_serves_the_first_request_of_a_connection_it_caught_before_any() {
    let lab = Lab::start(|t| t).await;
    // Connected and through TLS, the request not sent yet: what a restart catches.
    let caught = lab
        .client
        .connect(lab.https, None, false)
        .await
        .expect("tls");
    let mut silent = lab
        .client
        .connect(lab.https, None, false)
        .await
        .expect("tls");
    let addr = lab.https;
    let stopping = tokio::spawn(lab.stop());
    eventually(
        Duration::from_secs(5),
        "the listener closed",
        || async move { tokio::net::TcpStream::connect(addr).await.is_err() },
    )
    .await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(caught))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    // Answered, not closed.
    assert_eq!(
        get_on(&mut sender, "/oxauth/x").await.status,
        StatusCode::OK
    );
    // One that never asks is closed after the grace, and the stop ends.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    let took = stopping.await.expect("join");
    assert!(took < Duration::from_secs(5), "drained in {took:?}");
}

/// One HTTPS request on a new connection made with `config`: how the handshake went and
/// which suite it chose. The response is read whole, so the session ticket that follows
/// the handshake is stored for the next connection.
async fn handshake_with(
    lab: &Lab,
    config: &std::sync::Arc<rustls::ClientConfig>,
) -> (rustls::HandshakeKind, rustls::SupportedCipherSuite) {
    let tcp = tokio::net::TcpStream::connect(lab.https)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from(HOST).expect("name");
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .expect("handshake");
    let session = tls.get_ref().1;
    let seen = (
        session.handshake_kind().expect("handshake done"),
        session.negotiated_cipher_suite().expect("suite"),
    );
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http handshake");
    let driver = tokio::spawn(conn);
    let resp = sender
        .send_request(gluu_testkit::https::get(
            "/oxauth/.well-known/openid-configuration",
        ))
        .await
        .expect("request");
    let reply = gluu_testkit::https::read(resp).await.expect("response");
    assert_eq!(reply.status, StatusCode::OK);
    drop(sender);
    let _ = driver.await;
    seen
}

/// A client of `lab`'s balancer speaking `version`, which lists the SHA-384 suites first
/// (as OpenSSL clients do) or last (as gluu-lb does), and keeps its sessions.
fn client_config(
    lab: &Lab,
    version: &'static rustls::SupportedProtocolVersion,
    sha384_first: bool,
) -> std::sync::Arc<rustls::ClientConfig> {
    let pin = gluu_common::tls::load_certs(&lab.cert.cert).expect("cert");
    client_checking(
        gluu_common::verify::PeerPolicy::Pinned(pin),
        version,
        sha384_first,
    )
}

/// [`client_config`] for a client that checks the balancer's certificate by `policy`.
fn client_checking(
    policy: gluu_common::verify::PeerPolicy,
    version: &'static rustls::SupportedProtocolVersion,
    sha384_first: bool,
) -> std::sync::Arc<rustls::ClientConfig> {
    let provider = gluu_common::tls::provider();
    let verifier = gluu_common::verify::PeerVerifier::new(policy, &provider).expect("verifier");
    let mut order = (*provider).clone();
    order
        .cipher_suites
        .sort_by_key(|s| s.suite().as_str().is_some_and(|n| n.ends_with("SHA384")) != sha384_first);
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(order))
        .with_protocol_versions(&[version])
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    std::sync::Arc::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_resume_their_tls_session_across_a_reload_and_get_the_cheaper_suite() {
    let lab = Lab::start(|t| t).await;
    let config = client_config(&lab, &rustls::version::TLS13, true);

    let (kind, suite) = handshake_with(&lab, &config).await;
    assert_eq!(kind, rustls::HandshakeKind::Full);
    assert_eq!(
        suite.suite(),
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
        "the balancer's preference, not the client's"
    );
    for _ in 0..3 {
        let (kind, _) = handshake_with(&lab, &config).await;
        assert_eq!(kind, rustls::HandshakeKind::Resumed);
    }
    let text = std::fs::read_to_string(&lab.conf).expect("conf");
    lab.reload_with(&text).await;
    support::eventually(Duration::from_secs(5), "the reload", || async {
        lab.metric("gluu_lb_reloads_total{result=\"ok\"}").await >= 1.0
    })
    .await;
    let (kind, _) = handshake_with(&lab, &config).await;
    assert_eq!(
        kind,
        rustls::HandshakeKind::Resumed,
        "ticket keys outlive a reload"
    );
}

/// `ssl_session_ticket_key`: balancers given the same key file resume each other's
/// sessions (TLS 1.3 and 1.2), one with another file does not, and a reload that puts a
/// new file first keeps opening the old file's tickets while sealing new ones with the new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancers_with_one_ticket_key_file_resume_each_others_sessions() {
    use std::os::unix::fs::PermissionsExt as _;
    let keys = tempfile::tempdir().expect("tempdir");
    let [one, two] = [1u8, 2].map(|k| {
        let path = keys.path().join(format!("ticket{k}.key"));
        let bytes: Vec<u8> = (0..80u8)
            .map(|i| i.wrapping_mul(31).wrapping_add(k))
            .collect();
        std::fs::write(&path, bytes).expect("write key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    });
    let with_keys = |files: &[&std::path::Path]| {
        let lines: String = files
            .iter()
            .map(|f| format!("\n    ssl_session_ticket_key {};", f.display()))
            .collect();
        move |t: String| t.replace("    ssl on;", &format!("    ssl on;{lines}"))
    };
    let a = Lab::start(with_keys(&[&one])).await;
    let b = Lab::start(with_keys(&[&one])).await;
    let c = Lab::start(with_keys(&[&two])).await;
    // Each balancer has its own certificate: the client checks none (a resumed session
    // shows none anyway).
    let anyone = |version| client_checking(gluu_common::verify::PeerPolicy::Anyone, version, false);
    use rustls::HandshakeKind::{Full, Resumed};
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let kinds = [&a, &b, &c, &b];
        let config = anyone(version);
        let mut seen = Vec::new();
        for lab in kinds {
            seen.push(handshake_with(lab, &config).await.0);
        }
        // a's ticket resumes at b; c holds another key: a full handshake.
        assert_eq!(seen, [Full, Resumed, Full, Full], "{version:?}");
    }
    // b reloads with c's file first and a's second: a's tickets still open at b, and the
    // ticket b then gives is sealed with c's key.
    let text = std::fs::read_to_string(&b.conf).expect("conf");
    let two_first = text.replace(
        &format!("ssl_session_ticket_key {};", one.display()),
        &format!(
            "ssl_session_ticket_key {};\n    ssl_session_ticket_key {};",
            two.display(),
            one.display()
        ),
    );
    assert_ne!(two_first, text);
    b.reload_with(&two_first).await;
    support::eventually(Duration::from_secs(5), "the reload", || async {
        b.metric("gluu_lb_reloads_total{result=\"ok\"}").await >= 1.0
    })
    .await;
    let config = anyone(&rustls::version::TLS13);
    let mut seen = Vec::new();
    for lab in [&a, &b, &c] {
        seen.push(handshake_with(lab, &config).await.0);
    }
    assert_eq!(seen, [Full, Resumed, Resumed]);
}

/// A hardened TLS block (Mozilla's kind) with nginx's meaning: `ssl_ciphers` chooses the
/// TLS 1.2 suites, `ssl_prefer_server_ciphers off` lets the client choose, and with
/// `ssl_session_tickets off` sessions resume from the cache until `ssl_session_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_tls_lines_choose_the_suites_and_how_long_sessions_resume() {
    let lab = Lab::start(|t| {
        t.replace(
            "    ssl on;",
            "    ssl on;\n    ssl_ciphers ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384;\n    \
             ssl_prefer_server_ciphers off;\n    ssl_session_tickets off;\n    \
             ssl_session_timeout 1s;",
        )
    })
    .await;
    // The client's first choice over TLS 1.3: AES-256-GCM-SHA384, where gluu-lb's own
    // order gives AES-128 (the test above).
    let tls13 = client_config(&lab, &rustls::version::TLS13, true);
    let (_, suite) = handshake_with(&lab, &tls13).await;
    assert_eq!(suite.suite(), rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
    // Over TLS 1.2, a client that prefers AES-128 gets the AES-256 suite ssl_ciphers left.
    let tls12 = client_config(&lab, &rustls::version::TLS12, false);
    let (kind, suite) = handshake_with(&lab, &tls12).await;
    let made = Instant::now();
    assert_eq!(kind, rustls::HandshakeKind::Full);
    assert!(
        suite
            .suite()
            .as_str()
            .is_some_and(|n| n.ends_with("AES_256_GCM_SHA384")),
        "{suite:?}"
    );
    // No tickets: the session resumes from the cache by its ID, until it is 1 s old.
    let (kind, _) = handshake_with(&lab, &tls12).await;
    assert_eq!(kind, rustls::HandshakeKind::Resumed);
    let mut last = kind;
    while last == rustls::HandshakeKind::Resumed && made.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = handshake_with(&lab, &tls12).await.0;
    }
    let ended = made.elapsed();
    assert_eq!(
        last,
        rustls::HandshakeKind::Full,
        "still resumed after {ended:?}"
    );
    assert!(ended >= Duration::from_secs(1), "ended after {ended:?}");
}

/// Debian's and Ubuntu's stock `ssl_protocols TLSv1 TLSv1.1 TLSv1.2;` runs as nginx runs
/// it, less the versions rustls lacks: TLS 1.2 clients get in and TLS 1.3 ones, which the
/// line leaves out, do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_ssl_protocols_line_offers_what_it_lists_that_gluu_lb_speaks() {
    let lab = Lab::start(|t| {
        t.replace(
            "    ssl on;",
            "    ssl on;\n    ssl_protocols TLSv1 TLSv1.1 TLSv1.2;",
        )
    })
    .await;
    let tls12 = client_config(&lab, &rustls::version::TLS12, false);
    let (kind, suite) = handshake_with(&lab, &tls12).await;
    assert_eq!(kind, rustls::HandshakeKind::Full);
    assert_eq!(suite.version(), &rustls::version::TLS12);
    let tls13 = client_config(&lab, &rustls::version::TLS13, false);
    let tcp = tokio::net::TcpStream::connect(lab.https)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from(HOST).expect("name");
    let refused = tokio_rustls::TlsConnector::from(tls13)
        .connect(name, tcp)
        .await
        .expect_err("TLS 1.3 is not listed");
    assert!(refused.to_string().contains("ProtocolVersion"), "{refused}");
}

/// `limit_req` in the guide's file: a zone of one request a minute per client, the
/// server-level line limiting every location without one of its own and the requests no
/// location matches, `/oxauth` in dry run (counted, never refused), the refusals in the
/// metrics, and the clients' states kept across a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_req_refuses_past_the_burst_and_keeps_counting_across_a_reload() {
    let lab = Lab::start(|t| {
        t.replacen(
            "http {\n",
            "http {\n  limit_req_zone $binary_remote_addr zone=login:1m rate=1r/m;\n",
            1,
        )
        .replace(
            "    ssl on;",
            "    ssl on;\n    limit_req zone=login burst=1 nodelay;",
        )
        .replace(
            "proxy_pass https://backend/oxauth;",
            "proxy_pass https://backend/oxauth;\n        limit_req_dry_run on;",
        )
    })
    .await;
    let statuses = |paths: &'static [&'static str]| {
        let lab = &lab;
        async move {
            let mut got = Vec::new();
            for p in paths {
                got.push(lab.get(p).await.status.as_u16());
            }
            got
        }
    };
    assert_eq!(
        statuses(&["/identity/a", "/identity/b", "/identity/c"]).await,
        [200, 200, 503]
    );
    assert_eq!(
        statuses(&["/nowhere"]).await,
        [503],
        "no location: the server's line"
    );
    assert_eq!(
        statuses(&["/oxauth/a", "/oxauth/b"]).await,
        [200, 200],
        "dry run"
    );
    let series = |result: &str| {
        format!(
            "gluu_lb_limited_total{{directive=\"limit_req\",zone=\"login\",result=\"{result}\"}}"
        )
    };
    assert_eq!(lab.metric(&series("rejected")).await, 2.0);
    assert!(lab.metric(&series("rejected_dry_run")).await >= 2.0);

    let text = std::fs::read_to_string(&lab.conf).expect("conf");
    lab.reload_with(&text).await;
    eventually(Duration::from_secs(5), "the reload", || async {
        lab.metric("gluu_lb_reloads_total{result=\"ok\"}").await >= 1.0
    })
    .await;
    assert_eq!(
        statuses(&["/identity/d"]).await,
        [503],
        "the zone kept its state"
    );
    // A reload that changes the zone's size starts it afresh, as nginx does.
    lab.reload_with(&text.replace("zone=login:1m", "zone=login:2m"))
        .await;
    eventually(Duration::from_secs(5), "the second reload", || async {
        lab.metric("gluu_lb_reloads_total{result=\"ok\"}").await >= 2.0
    })
    .await;
    assert_eq!(statuses(&["/identity/e"]).await, [200], "a new zone");
}

/// `limit_conn`: one request of a client at a time on /oxauth; a second while the first is
/// served is refused, and once the first has been answered the client gets in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_conn_refuses_a_request_past_the_clients_number() {
    let lab = Lab::start(|t| {
        t.replacen(
            "http {\n",
            "http {\n  limit_conn_zone $binary_remote_addr zone=addr:1m;\n",
            1,
        )
        .replace(
            "proxy_pass https://backend/oxauth;",
            "proxy_pass https://backend/oxauth;\n        limit_conn addr 1;",
        )
    })
    .await;
    let slow = {
        let client = lab.client.clone();
        let to = lab.https;
        tokio::spawn(async move { client.get(to, "/oxauth/slow/1500").await })
    };
    eventually(
        Duration::from_secs(5),
        "the slow request at a node",
        || async { lab.nodes.iter().map(|n| n.requests()).sum::<usize>() >= 1 },
    )
    .await;
    assert_eq!(
        lab.get("/oxauth/x").await.status.as_u16(),
        503,
        "one at a time"
    );
    assert_eq!(
        lab.get("/identity/x").await.status.as_u16(),
        200,
        "not limited there"
    );
    let first = slow.await.expect("task").expect("the slow request");
    assert_eq!(first.status.as_u16(), 200);
    assert_eq!(
        lab.get("/oxauth/x").await.status.as_u16(),
        200,
        "room again"
    );
    let series =
        "gluu_lb_limited_total{directive=\"limit_conn\",zone=\"addr\",result=\"rejected\"}";
    assert_eq!(lab.metric(series).await, 1.0);
}

/// A TLS connection to `lab`'s balancer from a client whose provider is `edit`ed (what it
/// can verify, which suites and groups it offers), speaking `versions`, taking any
/// certificate; `None` when the handshake fails.
async fn tls_with(
    lab: &Lab,
    versions: &[&'static rustls::SupportedProtocolVersion],
    edit: impl FnOnce(&mut rustls::crypto::CryptoProvider),
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    tls_named(lab, Some(HOST), versions, edit).await
}

/// [`tls_with`] naming `sni` in the handshake (none when `None`).
async fn tls_named(
    lab: &Lab,
    sni: Option<&str>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    edit: impl FnOnce(&mut rustls::crypto::CryptoProvider),
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut provider = (*gluu_common::tls::provider()).clone();
    edit(&mut provider);
    let provider = std::sync::Arc::new(provider);
    let verifier =
        gluu_common::verify::PeerVerifier::new(gluu_common::verify::PeerPolicy::Anyone, &provider)
            .expect("verifier");
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth();
    config.enable_sni = sni.is_some();
    let tcp = tokio::net::TcpStream::connect(lab.https)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from(sni.unwrap_or(HOST))
        .expect("name")
        .to_owned();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .ok()
}

/// The certificate gluu-lb presents to a client whose provider is `edit`ed, speaking
/// `version`.
async fn presented_to(
    lab: &Lab,
    version: &'static rustls::SupportedProtocolVersion,
    edit: impl FnOnce(&mut rustls::crypto::CryptoProvider),
) -> rustls::pki_types::CertificateDer<'static> {
    let tls = tls_with(lab, &[version], edit).await.expect("handshake");
    tls.get_ref().1.peer_certificates().expect("presented")[0].clone()
}

/// `ssl_reject_handshake on` in a default server without a certificate (how an admin keeps
/// the IdP's certificate from clients that do not name its host): a client naming the
/// guide's server gets it, one naming another host or none fails its handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_for_a_server_with_ssl_reject_handshake_fails() {
    let port = gluu_testkit::free_port();
    let lab = Lab::start(|t| {
        // The guide's TLS server and a rejecting default server on one address.
        let listen = "listen 127.0.0.1:0;";
        let ssl = t.find("    ssl on;").expect("the guide's ssl on");
        let at = t[..ssl].rfind(listen).expect("its listen");
        let mut t = t.clone();
        t.replace_range(at..at + listen.len(), &format!("listen 127.0.0.1:{port};"));
        let end = t.rfind("\n}").expect("the http block's end");
        t.insert_str(
            end,
            &format!(
                "\n  server {{ listen 127.0.0.1:{port} ssl default_server; ssl_reject_handshake on; }}"
            ),
        );
        t
    })
    .await;
    assert_eq!(lab.https.port(), port);
    let all = rustls::ALL_VERSIONS;
    let named = tls_named(&lab, Some(HOST), all, |_| {}).await;
    let named = named.expect("the guide's server name gets its certificate");
    assert!(named.get_ref().1.peer_certificates().is_some());
    assert!(
        tls_named(&lab, Some("other.example.org"), all, |_| {})
            .await
            .is_none(),
        "another name: rejected"
    );
    assert!(
        tls_named(&lab, None, all, |_| {}).await.is_none(),
        "no name: the default server, rejected"
    );
    assert_eq!(
        lab.get("/oxauth/x").await.status,
        StatusCode::OK,
        "and the IdP is served"
    );
}

/// A server with an RSA and an ECDSA certificate (nginx's several `ssl_certificate`
/// lines) gives each client one it can use, as nginx does: ECDSA to a client that can
/// verify ECDSA signatures and has a suite for it, RSA to one that cannot (by signature
/// scheme, or, over TLS 1.2, by the suites it offers). The nodes, which present the ECDSA
/// one, are pinned to either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rsa_and_an_ecdsa_certificate_each_reach_the_clients_that_can_use_them() {
    let extra = tempfile::tempdir().expect("tempdir");
    let rsa = Cert::openssl_rsa(extra.path(), "rsa", 2048);
    let lab = Lab::start(|t| {
        t.replace(
            "    ssl on;",
            &format!(
                "    ssl on;\n    ssl_certificate {};\n    ssl_certificate_key {};",
                rsa.cert.display(),
                rsa.key.display()
            ),
        )
    })
    .await;
    let der = |path: &std::path::Path| gluu_common::tls::load_certs(path).expect("cert")[0].clone();
    let (ecdsa, rsa) = (der(&lab.cert.cert), der(&rsa.cert));
    let rsa_schemes_only = |p: &mut rustls::crypto::CryptoProvider| {
        let mapping: Vec<_> = p
            .signature_verification_algorithms
            .mapping
            .iter()
            .filter(|(scheme, _)| scheme.as_str().is_some_and(|n| n.starts_with("RSA")))
            .copied()
            .collect();
        p.signature_verification_algorithms.mapping = Vec::leak(mapping);
    };
    let rsa_suites_only = |p: &mut rustls::crypto::CryptoProvider| {
        p.cipher_suites
            .retain(|s| s.suite().as_str().is_some_and(|n| n.contains("_RSA_")));
    };
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        assert_eq!(
            presented_to(&lab, version, |_| {}).await,
            ecdsa,
            "{version:?}"
        );
        assert_eq!(
            presented_to(&lab, version, rsa_schemes_only).await,
            rsa,
            "{version:?}"
        );
    }
    assert_eq!(
        presented_to(&lab, &rustls::version::TLS12, rsa_suites_only).await,
        rsa
    );
    let reply = lab
        .client
        .get(lab.https, "/oxauth/x")
        .await
        .expect("request");
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the nodes' certificate is one served"
    );
}

/// Asks for 32 MiB on an HTTP/2 connection and never reads the body: the stream's
/// flow-control window closes while the TCP connection stays healthy (hyper's client
/// answers PINGs) and no write to it blocks, so the connection's send_timeout never runs.
/// Returns the response and when it stalled.
async fn stall_a_stream(
    sender: &mut H2Sender,
) -> (hyper::Response<hyper::body::Incoming>, Instant) {
    let resp = h2_send(sender, "/oxauth/big/33554432").await;
    assert_eq!(resp.status(), StatusCode::OK);
    (resp, Instant::now())
}

/// Waits until no request is in flight at the nodes; returns how long that took.
async fn released(lab: &Lab, since: Instant) -> Duration {
    eventually(
        Duration::from_secs(15),
        "the request no longer in flight",
        || async {
            lab.status().await["upstreams"]["backend"]
                .as_array()
                .is_some_and(|nodes| nodes.iter().all(|n| n["active"] == 0))
        },
    )
    .await;
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_the_client_stops_reading_is_reset_after_send_timeout() {
    let lab = h2_lab("  send_timeout 1s;\n").await;
    let (mut sender, _conn) = h2_connect(&lab).await;
    let (resp, stalled) = stall_a_stream(&mut sender).await;
    let held = released(&lab, stalled).await;
    assert!(
        held < Duration::from_secs(8),
        "released after {held:?}; send_timeout is 1s"
    );
    // That stream was reset; the connection serves the next one.
    let e = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect_err("reset");
    assert!(format!("{e:?}").contains("CANCEL"), "{e:?}");
    assert_eq!(
        h2_get(&mut sender, "/oxauth/x").await.status,
        StatusCode::OK
    );
    // A client that reads gets a body far larger than every buffer on the way, whole.
    let r = h2_get(&mut sender, "/oxauth/big/3000000").await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 3_000_000));
    // The timer runs only while the client holds the stream up: a node that pauses
    // mid-body for longer than send_timeout is waited for (proxy_read_timeout's business).
    let r = h2_get(&mut sender, "/oxauth/pause/2500").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.ends_with("paused\nresumed\n"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_held_up_by_the_client_is_reset_during_a_graceful_stop_too() {
    let lab = h2_lab("  send_timeout 3s;\n").await;
    let (mut sender, conn) = h2_connect(&lab).await;
    let (resp, stalled) = stall_a_stream(&mut sender).await;
    // The stop sends GOAWAY and waits for the stream, which the client holds up until
    // send_timeout resets it; then the connection, and the stop, end.
    let stopping = tokio::spawn(lab.stop());
    let end = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(end.is_ok(), "the connection still open 10s into the stop");
    let held = stalled.elapsed();
    assert!(
        held >= Duration::from_secs(2),
        "ended after {held:?}; send_timeout is 3s"
    );
    let e = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect_err("reset");
    assert!(format!("{e:?}").contains("CANCEL"), "{e:?}");
    let took = stopping.await.expect("join");
    assert!(took < Duration::from_secs(10), "drained in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_gluu_lb_makes_itself_is_reset_too_when_the_client_holds_it_up() {
    let lab = h2_lab("  send_timeout 1s;\n").await;
    // A window of 0: not one byte of any body may be sent until the client opens it.
    let (mut sender, _conn) = h2_connect_with_window(&lab, Some(0)).await;
    let resp = h2_send(&mut sender, "/nowhere").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let held = Instant::now();
    let body = http_body_util::BodyExt::collect(resp.into_body());
    let e = tokio::time::timeout(Duration::from_secs(8), body)
        .await
        .expect("the stream still open 8s on; send_timeout is 1s")
        .expect_err("reset");
    assert!(format!("{e:?}").contains("CANCEL"), "{e:?}");
    assert!(
        held.elapsed() >= Duration::from_millis(900),
        "{:?}",
        held.elapsed()
    );
}

/// `gzip on` with a node that pauses mid-body: gluu-lb sends what it has compressed when
/// the node makes it wait, so the client reads the first part before the node sends the
/// rest; the whole body is one gzip stream. Over HTTP/2, where a frame is a frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_does_not_hold_back_a_response_the_node_pauses() {
    use hyper::body::Body as _;
    let lab = h2_lab("  gzip on;\n  gzip_types text/plain;\n").await;
    let (mut sender, _conn) = h2_connect(&lab).await;
    let req = Request::get(format!("https://{HOST}/oxauth/pause/3000"))
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let asked = Instant::now();
    let resp = sender.send_request(req).await.expect("h2 request");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let mut body = resp.into_body();
    let mut inflate = flate2::Decompress::new_gzip(15);
    let mut plain = Vec::with_capacity(1 << 10);
    let mut gzipped = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let data = frame.expect("frame").into_data().expect("data");
        gzipped.extend_from_slice(&data);
        inflate
            .decompress_vec(&data, &mut plain, flate2::FlushDecompress::Sync)
            .expect("inflate");
        if plain.ends_with(b"paused\n") {
            break;
        }
    }
    let first = asked.elapsed();
    assert!(
        first < Duration::from_millis(2500),
        "the first part came after {first:?}; the node paused 3 s after it"
    );
    let rest = http_body_util::BodyExt::collect(body)
        .await
        .expect("the rest");
    gzipped.extend_from_slice(&rest.to_bytes());
    let mut whole = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gzipped[..]), &mut whole)
        .expect("one whole gzip stream");
    assert!(whole.ends_with(" paused\nresumed\n"), "{whole}");
    assert!(asked.elapsed() >= Duration::from_secs(3));
    // The same location for a client that does not take gzip: as the node sent it.
    let r = h2_get(&mut sender, "/oxauth/pause/10").await;
    assert!(r.headers.get("content-encoding").is_none());
    assert!(r.body.ends_with(" paused\nresumed\n"), "{}", r.body);
}

/// `ssl_ecdh_curve` chooses the key exchange groups clients get: with `secp384r1` only, a
/// client that would start with X25519 is asked again and gets P-384, and one that has
/// only X25519 cannot connect; without the line (`auto`), X25519.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_ecdh_curve_chooses_the_key_exchange() {
    async fn group(
        lab: &Lab,
        groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
    ) -> Option<rustls::NamedGroup> {
        let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
        let tls = tls_with(lab, &versions, |p| p.kx_groups = groups).await?;
        tls.get_ref()
            .1
            .negotiated_key_exchange_group()
            .map(|g| g.name())
    }
    use rustls::crypto::aws_lc_rs::kx_group::{SECP384R1, X25519};
    let lab =
        Lab::start(|t| t.replace("    ssl on;", "    ssl on;\n    ssl_ecdh_curve secp384r1;"))
            .await;
    assert_eq!(
        group(&lab, vec![X25519, SECP384R1]).await,
        Some(rustls::NamedGroup::secp384r1)
    );
    assert_eq!(group(&lab, vec![X25519]).await, None, "no group in common");
    let auto = Lab::start(|t| t).await;
    assert_eq!(
        group(&auto, vec![X25519, SECP384R1]).await,
        Some(rustls::NamedGroup::X25519)
    );
}

/// Reads a response head from `tls` (all of the response, for a HEAD request).
async fn read_head(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut byte))
            .await
            .expect("a response within 10s")
            .expect("read");
        assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("ascii head")
}

/// nginx's two timers between requests: `keepalive_timeout` from a response's end to the
/// next byte, then `client_header_timeout` from that byte to a whole head (hyper's one timer
/// started at the response's end and ran both). `keepalive_timeout`'s second parameter is
/// the `Keep-Alive` header; a block's `keepalive_timeout 0` closes after its response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_head_connections_close_on_nginx_s_two_timers() {
    let lab = Lab::start(|t| {
        with_locations(
            t.replace(
                "http {\n",
                "http {\n  client_header_timeout 2s;\n  keepalive_timeout 3s 7;\n",
            ),
            "location /once/ { proxy_pass https://backend/oxauth/; keepalive_timeout 0; }",
        )
    })
    .await;
    let head = format!("HEAD /oxauth/x HTTP/1.1\r\nHost: {HOST}\r\n\r\n");

    // Idle after a response: open for keepalive_timeout, not client_header_timeout.
    let (got, open) = exchange(&lab, &head).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("\r\nkeep-alive: timeout=7\r\n"), "{got}");
    assert!(
        open >= Duration::from_millis(2700) && open < Duration::from_secs(6),
        "an idle connection closed after {open:?}; keepalive_timeout is 3s"
    );

    // The next head begins 1.5s into the idle time and trickles in: cut off 2s after its
    // first byte (not when the idle time would have ended), whatever the bytes after it.
    let mut tls = sent_on_new_connection(&lab, &head).await;
    assert!(read_head(&mut tls).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let first = Instant::now();
    let mut line = format!("HEAD /oxauth/x HTTP/1.1\r\nHost: {HOST}\r\n");
    let mut closed = None;
    for i in 0..20 {
        if tls.write_all(line.as_bytes()).await.is_err() {
            closed = Some(first.elapsed());
            break;
        }
        line = format!("X-Slow-{i}: byte\r\n");
        let read = tokio::time::timeout(Duration::from_millis(250), tls.read(&mut [0u8; 64])).await;
        if let Ok(r) = read {
            assert!(
                matches!(r, Ok(0) | Err(_)),
                "no answer to a half head: {r:?}"
            );
            closed = Some(first.elapsed());
            break;
        }
    }
    let closed = closed.expect("still open 5s into a head; client_header_timeout is 2s");
    assert!(
        closed >= Duration::from_millis(1800) && closed < Duration::from_millis(3500),
        "a trickling head cut off {closed:?} after its first byte; client_header_timeout is 2s"
    );

    // keepalive_timeout 0 in the request's block: the response closes the connection.
    let (got, open) = exchange(
        &lab,
        &format!("HEAD /once/x HTTP/1.1\r\nHost: {HOST}\r\n\r\n"),
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("\r\nconnection: close\r\n"), "{got}");
    assert!(!got.contains("keep-alive"), "{got}");
    assert!(
        open < Duration::from_secs(1),
        "open {open:?} after the response"
    );
}

/// The TCP timers of this machine's established connections to `node` (`ss -o`), one
/// line per connection.
fn timers_to(node: std::net::SocketAddr) -> Vec<String> {
    let out = std::process::Command::new(gluu_testkit::require("ss"))
        .args(["-tnoH", "state", "established", "dst"])
        .arg(node.to_string())
        .output()
        .expect("ss");
    assert!(out.status.success(), "{}", gluu_testkit::text_of(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `proxy_socket_keepalive on`: gluu-lb's pooled connections to the nodes have TCP
/// keep-alive probes armed (`ss` shows their keepalive timer); without the line, none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_socket_keepalive_arms_tcp_keep_alive_on_node_connections() {
    for on in [true, false] {
        let line = if on {
            "  proxy_socket_keepalive on;\n"
        } else {
            ""
        };
        let lab = Lab::start(|t| t.replace("http {\n", &format!("http {{\n{line}"))).await;
        for _ in 0..2 {
            assert_eq!(lab.get("/oxauth/x").await.status, StatusCode::OK);
        }
        let lines: Vec<String> = lab.nodes.iter().flat_map(|n| timers_to(n.addr)).collect();
        assert!(!lines.is_empty(), "pooled connections to the nodes");
        assert!(
            lines.iter().all(|l| l.contains("timer:(keepalive") == on),
            "proxy_socket_keepalive {on}: {lines:?}"
        );
    }
}

/// nginx's client-side `keepalive_requests`: the connection's third response says
/// `Connection: close` and the connection ends there; a location's own line counts for
/// its requests. (The upstream block's line of the same name is the node side.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_connection_closes_after_keepalive_requests() {
    let lab = Lab::start(|t| {
        with_locations(
            t.replace("http {\n", "http {\n  keepalive_requests 3;\n"),
            "location /once/ { proxy_pass https://backend/oxauth/; keepalive_requests 1; }",
        )
    })
    .await;
    let mut sender = one_connection(&lab).await;
    for i in 1..=3 {
        let r = get_on(&mut sender, "/oxauth/x").await;
        assert_eq!(r.status, StatusCode::OK);
        let close = r.headers.get("connection").is_some_and(|v| v == "close");
        assert_eq!(close, i == 3, "request {i}: {:?}", r.headers);
    }
    sender
        .ready()
        .await
        .expect_err("the connection ended after the third response");
    let mut sender = one_connection(&lab).await;
    let r = get_on(&mut sender, "/once/x").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["connection"], "close");
}
