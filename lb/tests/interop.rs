//! gluu-lb in front of the real Debian nginx as the Gluu node (HTTPS, holding the
//! balancer's certificate, as the guide sets the nodes up), and the same client sources
//! sent through gluu-lb and through nginx's own `ip_hash` land on the same node.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use gluu_lb::{Balancer, Config, Control};
use gluu_testkit::{Cert, free_port, get_from, nginx, readable_by_nginx};
use hyper::StatusCode;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nginx_nodes_behind_gluu_lb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = Cert::new(dir.path(), "httpd");
    readable_by_nginx(dir.path(), Some(&cert));
    let nodes: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let front = free_port();
    let node_blocks: String = nodes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "server {{ listen 127.0.0.1:{p} ssl; ssl_certificate {c}; ssl_certificate_key {k};\n\
                 location / {{ return 200 \"{i} $request_uri host=$host real=$http_x_real_ip xff=$http_x_forwarded_for\"; }} }}\n",
                c = cert.cert.display(),
                k = cert.key.display()
            )
        })
        .collect();
    let servers: String = nodes
        .iter()
        .map(|p| format!("server 127.0.0.1:{p}; "))
        .collect();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "{prelude}http {{\n access_log off;\n upstream iph {{ ip_hash; {servers} }}\n{node_blocks}\
             server {{ listen 127.0.0.1:{front}; location / {{ proxy_pass https://iph; }} }}\n}}\n",
            prelude = gluu_testkit::nginx_prelude(dir.path()),
        ),
    )
    .expect("write nginx.conf");
    let front_addr: SocketAddr = ([127, 0, 0, 1], front).into();
    let _nginx = nginx(dir.path(), &conf, front_addr);

    let lb_conf = dir.path().join("gluu-lb.conf");
    std::fs::write(
        &lb_conf,
        format!(
            "events {{ worker_connections 256; }}\n\
             http {{\n  upstream iph {{ ip_hash; {servers} }}\n\
             server {{ listen 127.0.0.1:0 ssl; server_name {host};\n\
             ssl_certificate {c}; ssl_certificate_key {k};\n\
             location / {{ proxy_pass https://iph; proxy_set_header Host $host;\n\
             proxy_set_header X-Real-IP $remote_addr;\n\
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }} }}\n}}\n",
            host = support::HOST,
            c = cert.cert.display(),
            k = cert.key.display()
        ),
    )
    .expect("write gluu-lb conf");
    let balancer = Balancer::prepare(Config::load(&lb_conf).unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("{e}"));
    let bound = balancer.bind().await.expect("bind");
    let lb = bound.addrs()[0];
    let shutdown = CancellationToken::new();
    let (_reload, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(balancer.run(
        bound,
        Control {
            shutdown: shutdown.clone(),
            reload: rx,
        },
    ));
    let client = support::Client::new(&cert);

    let mut x: u32 = 4242;
    let mut seen = [0usize; 2];
    for _ in 0..24 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let [_, a, b, c] = x.to_be_bytes();
        let source = Ipv4Addr::new(127, a, b, c.max(2));
        let ours = client
            .get_from(lb, IpAddr::V4(source), "/oxauth/x?y=1")
            .await
            .expect("through gluu-lb");
        assert_eq!(ours.status, StatusCode::OK, "{ours:?}");
        let theirs = tokio::task::spawn_blocking(move || get_from(source, front_addr, "/"))
            .await
            .expect("join");
        let (our_node, rest) = ours.body.split_once(' ').expect("node index");
        let (their_node, _) = theirs.split_once(' ').expect("node index");
        assert_eq!(our_node, their_node, "ip_hash for {source}");
        assert_eq!(
            rest,
            format!(
                "/oxauth/x?y=1 host={} real={source} xff={source}",
                support::HOST
            )
        );
        seen[our_node.parse::<usize>().expect("index")] += 1;
    }
    assert!(seen[0] > 0 && seen[1] > 0, "both nodes used: {seen:?}");
    shutdown.cancel();
}
