//! Failure handling with nginx's semantics: a node killed under load, POSTs never
//! replayed, `proxy_next_upstream` off/tries/non_idempotent, max_fails/fail_timeout, active
//! health checks, all nodes down, a node's idle keep-alive connection closed, reload under
//! load, and the upstream TLS policy.

mod support;

use std::time::Duration;

use gluu_testkit::node::Node;
use gluu_testkit::{Ca, Cert};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use support::{GUIDE_SETTINGS, HOST, Lab, with_locations};

/// `fail_timeout=1s` instead of the guide's 10 s, so that tests see a node come back.
fn short_fail_timeout(t: String) -> String {
    t.replace("fail_timeout=10s", "fail_timeout=1s")
}

/// `workers` clients, each sending `per_worker` GETs (a new connection each); returns
/// (requests, failures).
async fn load(lab: &Lab, workers: usize, per_worker: usize, path: &str) -> (usize, usize) {
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (client, addr, path) = (lab.client.clone(), lab.https, path.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut failed = 0;
            for _ in 0..per_worker {
                match client.get(addr, &path).await {
                    Ok(r) if r.status == StatusCode::OK => {}
                    _ => failed += 1,
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await.expect("join");
    }
    (workers * per_worker, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_fails_no_get() {
    let mut lab = Lab::start(|t| t).await;
    let mut node1 = lab.nodes.remove(0);
    let counter = &node1;
    let started = async {
        support::eventually(Duration::from_secs(10), "load on node1", || {
            let n = counter.requests();
            async move { n > 20 }
        })
        .await;
    };
    let run = load(&lab, 4, 60, "/oxauth/.well-known/openid-configuration");
    tokio::pin!(run);
    let (total, failed) = tokio::select! {
        r = &mut run => r,
        _ = started => {
            node1.stop().await;
            run.await
        }
    };
    assert_eq!(failed, 0, "{failed} of {total} GETs failed");
    let after = lab.nodes[0].requests();
    assert!(after > 100, "node2 took over: {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_reached_a_node_is_not_replayed() {
    let lab = Lab::start(|t| {
        with_locations(
            t,
            &format!("    location /echo {{\n        proxy_pass https://backend;\n        {GUIDE_SETTINGS}\n    }}\n"),
        )
    })
    .await;
    // Both nodes answer 500, which the guide lists in proxy_next_upstream: a GET moves on
    // (and, every node failing, gets the last answer); a POST with a body stops at the first.
    lab.nodes[0].fail_with(500);
    lab.nodes[1].fail_with(500);
    let post = Request::post("/echo/token")
        .header("host", HOST)
        .body(Full::new(Bytes::from_static(b"grant_type=password")))
        .expect("request");
    let r = lab.client.send(lab.https, None, post).await.expect("post");
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(lab.nodes[0].posts() + lab.nodes[1].posts(), 1, "sent once");
    let before = lab.nodes[0].requests() + lab.nodes[1].requests();
    let r = lab.get("/echo/get").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        lab.nodes[0].requests() + lab.nodes[1].requests(),
        before + 2,
        "a GET tries each node once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_never_left_goes_to_the_next_node() {
    let mut lab = Lab::start(|t| {
        with_locations(
            t,
            &format!("    location /echo {{\n        proxy_pass https://backend;\n        {GUIDE_SETTINGS}\n    }}\n"),
        )
    })
    .await;
    lab.nodes[0].stop().await;
    for _ in 0..4 {
        let post = Request::post("/echo/token")
            .header("host", HOST)
            .body(Full::new(Bytes::from_static(b"grant_type=password")))
            .expect("request");
        let r = lab.client.send(lab.https, None, post).await.expect("post");
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.json()["body_len"], 19);
    }
    assert_eq!(lab.nodes[1].posts(), 4);
}

/// Sends `method path` (with `body`) and returns its status and how many requests the
/// nodes received for it.
async fn tries(lab: &Lab, method: &str, path: &str, body: &'static [u8]) -> (u16, usize) {
    let before: usize = lab.nodes.iter().map(Node::requests).sum();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", HOST)
        .body(Full::new(Bytes::from_static(body)))
        .expect("request");
    let r = lab.client.send(lab.https, None, req).await.expect("send");
    let after: usize = lab.nodes.iter().map(Node::requests).sum();
    (r.status.as_u16(), after - before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_next_upstream_off_tries_and_non_idempotent() {
    let location = |path: &str, lines: &str| {
        format!(
            "    location {path} {{\n        proxy_pass https://backend;\n        {lines}\n    }}\n"
        )
    };
    let locations = [
        location("/default", "proxy_next_upstream error timeout http_500;"),
        location(
            "/tries",
            "proxy_next_upstream error timeout http_500;\n        proxy_next_upstream_tries 1;",
        ),
        location("/off", "proxy_next_upstream off;"),
        location(
            "/non_idempotent",
            "proxy_next_upstream error timeout http_500 non_idempotent;",
        ),
    ]
    .concat();
    // max_fails=0: a failure never takes a node out, so every request meets both nodes.
    let mut lab =
        Lab::start(|t| with_locations(t.replace("max_fails=2", "max_fails=0"), &locations)).await;
    lab.nodes[0].fail_with(500);
    lab.nodes[1].fail_with(500);
    assert_eq!(tries(&lab, "GET", "/default/a", b"").await, (500, 2));
    assert_eq!(tries(&lab, "GET", "/tries/a", b"").await, (500, 1));
    assert_eq!(tries(&lab, "GET", "/off/a", b"").await, (500, 1));
    // A POST moves on only with non_idempotent, and then only while it has no body: a body
    // streams to the node, so once sent there is nothing left to replay.
    assert_eq!(tries(&lab, "POST", "/default/a", b"").await, (500, 1));
    assert_eq!(
        tries(&lab, "POST", "/non_idempotent/a", b"").await,
        (500, 2)
    );
    assert_eq!(
        tries(&lab, "POST", "/non_idempotent/a", b"x=1").await,
        (500, 1)
    );

    // A node that refuses connections: `off` answers 502 where the default moves on.
    lab.nodes[1].fail_with(0);
    lab.nodes[0].stop().await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(tries(&lab, "GET", "/off/a", b"").await);
    }
    for _ in 0..4 {
        assert_eq!(tries(&lab, "GET", "/default/a", b"").await, (200, 1));
    }
    assert!(statuses.contains(&(502, 0)), "{statuses:?}");
    assert!(statuses.contains(&(200, 1)), "{statuses:?}");
}

/// The guide's file with `params[i]` added to node i's `server` line in `upstream backend`
/// (the round-robin pool behind /oxauth) and `fail_timeout=1s`.
fn backend_servers(t: String, params: [&str; 2]) -> String {
    let start = t.find("upstream backend {").expect("upstream backend");
    let end = start + t[start..].find('}').expect("its end");
    let mut params = params.iter();
    let block: Vec<String> = t[start..end]
        .lines()
        .map(|l| match l.trim_start().starts_with("server ") {
            true => l.replace(';', &format!(" {};", params.next().expect("two servers"))),
            false => l.to_owned(),
        })
        .collect();
    short_fail_timeout(format!("{}{}{}", &t[..start], block.join("\n"), &t[end..]))
}

/// Which node answered each of `n` GETs on /oxauth.
async fn answered(lab: &Lab, n: usize) -> Vec<String> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        let r = lab.get("/oxauth/x").await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        nodes.push(r.node().to_owned());
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_down_and_weight_choose_as_nginx() {
    // weight=3: nginx's smooth round robin, three to one, interleaved.
    let lab = Lab::start(|t| backend_servers(t, ["weight=3", ""])).await;
    let got = answered(&lab, 8).await;
    assert_eq!(
        got,
        [
            "node1", "node1", "node2", "node1", "node1", "node1", "node2", "node1"
        ],
        "{got:?}"
    );

    // down: never chosen, and not counted as a failure.
    let lab = Lab::start(|t| backend_servers(t, ["down", ""])).await;
    assert!(answered(&lab, 6).await.iter().all(|n| n == "node2"));
    assert_eq!(lab.nodes[0].requests(), 0);
    assert_eq!(lab.node_state("backend", 0).await, "down");

    // backup: idle while the primary lives, takes over without a failed GET, gives the
    // traffic back once the primary answers again.
    let mut lab = Lab::start(|t| backend_servers(t, ["", "backup"])).await;
    assert!(answered(&lab, 6).await.iter().all(|n| n == "node1"));
    assert_eq!(lab.nodes[1].requests(), 0);
    lab.nodes[0].stop().await;
    assert!(answered(&lab, 6).await.iter().all(|n| n == "node2"));
    lab.nodes[0].restart().await;
    support::eventually(
        Duration::from_secs(5),
        "node1 back from its backup",
        || async { lab.get("/oxauth/x").await.node() == "node1" },
    )
    .await;
    assert!(answered(&lab, 4).await.iter().all(|n| n == "node1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_fails_takes_a_node_out_for_fail_timeout() {
    let mut lab = Lab::start(short_fail_timeout).await;
    lab.nodes[0].stop().await;
    // max_fails=2: two failed tries, then node1 is skipped until fail_timeout passes.
    for _ in 0..6 {
        assert_eq!(lab.get("/oxauth/x").await.status, StatusCode::OK);
    }
    assert_eq!(lab.node_state("backend", 0).await, "failing");
    let failures = "gluu_lb_upstream_failures_total{upstream=\"backend\",node=\"";
    let text = lab.metrics_get("/metrics").await;
    let count: f64 = text
        .lines()
        .filter(|l| l.starts_with(failures) && l.contains(&lab.nodes[0].addr.to_string()))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(count, 2.0, "tried exactly max_fails times:\n{text}");
    lab.nodes[0].restart().await;
    support::eventually(
        Duration::from_secs(5),
        "node1 back after fail_timeout",
        || async { lab.get("/oxauth/x").await.node() == "node1" },
    )
    .await;
    assert_eq!(lab.node_state("backend", 0).await, "up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_nodes_down_is_a_502_at_once_and_traffic_returns() {
    let mut lab = Lab::start(short_fail_timeout).await;
    lab.nodes[0].stop().await;
    lab.nodes[1].stop().await;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let r = lab.get("/oxauth/x").await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t.elapsed()
        );
    }
    lab.nodes[1].restart().await;
    support::eventually(Duration::from_secs(5), "traffic back on node2", || async {
        lab.get("/oxauth/x").await.status == StatusCode::OK
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_node_is_a_504() {
    let lab = Lab::start(|t| {
        t.replace(
            "proxy_connect_timeout   2;",
            "proxy_connect_timeout 2;\n        proxy_read_timeout 300ms;",
        )
    })
    .await;
    let r = lab.get("/oxauth/slow/2000").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_take_a_node_out_and_back_in() {
    let lab = Lab::start(|t| {
        t.replace(
            "location /oxauth {\n",
            "location /oxauth {\n        health_check uri=/oxauth/.well-known/openid-configuration interval=100ms fails=2 passes=2;\n",
        )
    })
    .await;
    lab.nodes[0].fail_with(503);
    support::eventually(Duration::from_secs(5), "node1 unhealthy", || async {
        lab.node_state("backend", 0).await == "unhealthy"
    })
    .await;
    let before = lab.nodes[0].requests();
    for _ in 0..6 {
        let r = lab.get("/cas/x").await;
        assert_eq!(r.node(), "node2", "no traffic to an unhealthy node");
    }
    // Only health checks reached node1 meanwhile.
    let status = lab.status().await;
    let last = &status["upstreams"]["backend"][0]["last_check"];
    assert_eq!(last["ok"], false, "{status}");
    assert!(
        last["detail"].as_str().unwrap_or("").contains("503"),
        "{status}"
    );
    assert!(lab.nodes[0].requests() - before <= 8);
    lab.nodes[0].fail_with(0);
    support::eventually(Duration::from_secs(5), "node1 back", || async {
        lab.node_state("backend", 0).await == "up"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_closed_by_the_node_is_retried_transparently() {
    let mut lab = Lab::start(|t| t).await;
    for _ in 0..4 {
        assert_eq!(lab.get("/oxauth/x").await.status, StatusCode::OK);
    }
    // A restart closes every connection the balancer keeps idle to the node.
    for n in &mut lab.nodes {
        n.stop().await;
        n.restart().await;
    }
    for _ in 0..4 {
        assert_eq!(lab.get("/oxauth/x").await.status, StatusCode::OK);
    }
    let status = lab.status().await;
    for n in status["upstreams"]["backend"].as_array().expect("nodes") {
        assert_eq!(
            n["fails"], 0,
            "a closed idle connection is no failure: {status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_nothing_and_a_broken_file_keeps_the_old_one() {
    let lab = Lab::start(|t| t).await;
    let original = std::fs::read_to_string(&lab.conf).expect("conf");
    let with_probe = with_locations(
        original.clone(),
        &format!(
            "    location /probe {{\n        proxy_pass https://backend;\n        {GUIDE_SETTINGS}\n    }}\n"
        ),
    );
    assert_eq!(lab.get("/probe").await.status, StatusCode::NOT_FOUND);
    let (total, failed) = {
        let run = load(&lab, 3, 60, "/oxauth/x");
        tokio::pin!(run);
        let reloads = async {
            for i in 0..6 {
                let text = if i % 2 == 0 { &with_probe } else { &original };
                lab.reload_with(text).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        };
        let (r, ()) = tokio::join!(run, reloads);
        r
    };
    assert_eq!(failed, 0, "{failed} of {total} failed during reloads");
    lab.reload_with(&with_probe).await;
    support::eventually(Duration::from_secs(5), "the new location", || async {
        lab.get("/probe").await.status == StatusCode::OK
    })
    .await;
    lab.reload_with(
        "http { server { listen 127.0.0.1:0; location / { proxy_pass https://nowhere; } } }\n",
    )
    .await;
    support::eventually(
        Duration::from_secs(5),
        "the failed reload counted",
        || async { lab.metric("gluu_lb_reloads_total{result=\"failed\"}").await >= 1.0 },
    )
    .await;
    assert_eq!(
        lab.get("/probe").await.status,
        StatusCode::OK,
        "old config still runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_opens_a_new_listen_address_on_every_worker_and_closes_a_removed_one() {
    let lab = Lab::start(|t| t).await;
    let original = std::fs::read_to_string(&lab.conf).expect("conf");
    let port = gluu_testkit::free_port();
    let added: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    lab.reload_with(&original.replace("ssl on;", &format!("ssl on;\n    listen {added};")))
        .await;
    support::eventually(Duration::from_secs(5), "the new address served", || async {
        lab.client
            .get(added, "/oxauth/x")
            .await
            .is_ok_and(|r| r.status == StatusCode::OK)
    })
    .await;
    // Each new connection lands on one worker's socket, by address and port: all answer.
    for _ in 0..16 {
        let r = tokio::time::timeout(Duration::from_secs(5), lab.client.get(added, "/oxauth/x"))
            .await
            .expect("every socket accepts")
            .expect("served");
        assert_eq!(r.status, StatusCode::OK);
    }
    lab.reload_with(&original).await;
    support::eventually(Duration::from_secs(5), "the address closed", || async {
        tokio::net::TcpStream::connect(added).await.is_err()
    })
    .await;
    assert_eq!(
        lab.get("/oxauth/x").await.status,
        StatusCode::OK,
        "the rest still served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_must_present_the_balancers_certificate_by_default() {
    let mut lab = Lab::start(|t| t).await;
    let addr = lab.nodes[0].addr;
    lab.nodes[0].stop().await;
    // node1 with its certificate renewed on the same key (not yet on the balancer): the key
    // is what is pinned, so renewing host by host loses no node.
    let renewed_cert = lab.cert.renewed(lab.dir.path(), "renewed");
    let renewed_cert_bytes = std::fs::read(&renewed_cert.cert).expect("read");
    assert_ne!(
        renewed_cert_bytes,
        std::fs::read(&lab.cert.cert).expect("read")
    );
    let mut renewed = Node::start("renewed", &renewed_cert, addr, "https://x").await;
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..4 {
        answered.insert(lab.get("/oxauth/x").await.node().to_owned());
    }
    assert_eq!(
        answered.into_iter().collect::<Vec<_>>(),
        ["node2", "renewed"],
        "both nodes answer"
    );
    renewed.stop().await;
    // node1 replaced by an impostor on the same address with another key.
    let impostor_cert = Cert::new(lab.dir.path(), "impostor");
    let _impostor = Node::start("impostor", &impostor_cert, addr, "https://x").await;
    for _ in 0..4 {
        let r = lab.get("/oxauth/x").await;
        assert_eq!(r.node(), "node2", "the impostor never answers");
    }
    let failures = lab
        .metric(&format!(
            "gluu_lb_upstream_failures_total{{upstream=\"backend\",node=\"{addr}\",reason=\"tls\"}}"
        ))
        .await;
    assert!(failures >= 1.0, "TLS refusals counted: {failures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_is_verified_with_proxy_ssl_verify_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "ca");
    let issued = ca.issue(dir.path(), "node", &["node.example.org"]);
    let any = "127.0.0.1:0".parse().expect("addr");
    let ca_node = Node::start("ca-node", &issued, any, "https://x").await;
    let (ca_path, ca_addr) = (ca.cert.display().to_string(), ca_node.addr);
    let verify = |name: &str| {
        format!(
            "proxy_pass https://signed;\n        proxy_ssl_verify on;\n        \
             proxy_ssl_trusted_certificate {ca_path};\n        proxy_ssl_name {name};\n"
        )
    };
    let (good, wrong) = (verify("node.example.org"), verify("other.example.org"));
    let lab = Lab::start(move |t| {
        let t = t.replace(
            "  upstream backend {",
            &format!("  upstream signed {{ server {ca_addr}; }}\n  upstream backend {{"),
        );
        with_locations(
            t,
            &format!(
                "    location /signed {{\n        {good}    }}\n    location /misnamed {{\n        {wrong}    }}\n    location /pinned {{\n        proxy_pass https://signed;\n    }}\n"
            ),
        )
    })
    .await;
    let r = lab.get("/signed/x").await;
    assert_eq!((r.status, r.node()), (StatusCode::OK, "ca-node"), "{r:?}");
    assert_eq!(
        lab.get("/misnamed/x").await.status,
        StatusCode::BAD_GATEWAY,
        "the name is checked"
    );
    assert_eq!(
        lab.get("/pinned/x").await.status,
        StatusCode::BAD_GATEWAY,
        "without proxy_ssl_verify the node must hold the balancer's certificate"
    );
}

/// `proxy_next_upstream_timeout`: once that long has passed since the first node was
/// tried, no other is; without it a request that timed out on one node goes to the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_next_node_after_proxy_next_upstream_timeout() {
    let lab = Lab::start(|t| {
        with_locations(
            t,
            "location /each/ { proxy_pass https://backend/oxauth/; proxy_read_timeout 1s; }\n\
             location /bounded/ { proxy_pass https://backend/oxauth/; proxy_read_timeout 1s;\n\
               proxy_next_upstream_timeout 1s; }",
        )
    })
    .await;
    let served = || lab.nodes.iter().map(|n| n.requests()).sum::<usize>();
    for (path, tries) in [("/each/slow/3000", 2), ("/bounded/slow/3000", 1)] {
        let before = served();
        let r = lab.get(path).await;
        assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{path}");
        assert_eq!(served() - before, tries, "{path}: nodes tried");
    }
}
