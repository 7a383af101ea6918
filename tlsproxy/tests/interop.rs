//! Interoperability with the real Debian stunnel, both ways, using the guide's files:
//! stunnel's node side talking to gluu-tunnel on the Redis host, and gluu-tunnel on a node
//! talking to stunnel on the Redis host. Default pinning on our side must accept stunnel
//! holding the same `secureredis.pem`, and refuse it holding another.

mod support;

use gluu_testkit::{Cert, Redis, free_port, stunnel};
use support::{client_conf, server_conf, start};

/// The guide's redis-client.conf for stunnel (with `client = yes`, which the guide omits).
fn stunnel_client(cert: &std::path::Path, accept: u16, server: std::net::SocketAddr) -> String {
    format!(
        "cert = {}\nclient = yes\n[redis]\naccept = 127.0.0.1:{accept}\nconnect = {server}\n",
        cert.display()
    )
}

#[test]
fn stunnel_client_to_gluu_tunnel_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start();
    let cert = Cert::new(dir.path(), "secureredis");
    let server = start(
        dir.path(),
        "redis-server.conf",
        &server_conf(&cert.combined, redis.addr(), ""),
    );
    let port = free_port();
    let _stunnel = stunnel(
        dir.path(),
        "stunnel-client",
        &stunnel_client(&cert.combined, port, server.addr("redis")),
        ([127, 0, 0, 1], port).into(),
    );
    let mut con = redis
        .connect_to(([127, 0, 0, 1], port).into())
        .expect("through stunnel + gluu-tunnel");
    let value = vec![9u8; 1 << 20];
    let _: () = redis::cmd("SET")
        .arg("x")
        .arg(&value)
        .query(&mut con)
        .expect("set");
    let got: Vec<u8> = redis::cmd("GET").arg("x").query(&mut con).expect("get");
    assert_eq!(got, value);
}

#[test]
fn gluu_tunnel_client_to_stunnel_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start();
    let cert = Cert::new(dir.path(), "secureredis");
    let port = free_port();
    // The guide's redis-server.conf, as written.
    let _stunnel = stunnel(
        dir.path(),
        "stunnel-server",
        &format!(
            "cert = {}\n[redis]\naccept = 127.0.0.1:{port}\nconnect = {}\n",
            cert.combined.display(),
            redis.addr()
        ),
        ([127, 0, 0, 1], port).into(),
    );
    let client = start(
        dir.path(),
        "redis-client.conf",
        &client_conf(&cert.combined, ([127, 0, 0, 1], port).into(), ""),
    );
    let mut con = redis
        .connect_to(client.addr("redis"))
        .expect("through gluu-tunnel + stunnel");
    let pong: String = redis::cmd("PING").query(&mut con).expect("ping");
    assert_eq!(pong, "PONG");
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.cmd("INCR").arg("n").ignore();
        let _ = i;
    }
    let _: () = pipe.query(&mut con).expect("pipeline");
    let n: i64 = redis::cmd("GET").arg("n").query(&mut con).expect("get");
    assert_eq!(n, 1000);
}

#[test]
fn stunnel_with_another_certificate_is_refused_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start();
    let ours = Cert::new(dir.path(), "secureredis");
    let theirs = Cert::new(dir.path(), "other");
    // stunnel client with another certificate -> our server refuses it.
    let server = start(
        dir.path(),
        "redis-server.conf",
        &server_conf(&ours.combined, redis.addr(), ""),
    );
    let port = free_port();
    let _c = stunnel(
        dir.path(),
        "stunnel-client",
        &stunnel_client(&theirs.combined, port, server.addr("redis")),
        ([127, 0, 0, 1], port).into(),
    );
    assert!(redis.connect_to(([127, 0, 0, 1], port).into()).is_err());
    assert!(
        server.metric(
            "gluu_tunnel_handshake_failures_total{service=\"redis\",reason=\"bad_certificate\"}"
        ) >= 1.0
    );
    // stunnel server with another certificate -> our client refuses it.
    let sport = free_port();
    let _s = stunnel(
        dir.path(),
        "stunnel-server",
        &format!(
            "cert = {}\n[redis]\naccept = 127.0.0.1:{sport}\nconnect = {}\n",
            theirs.combined.display(),
            redis.addr()
        ),
        ([127, 0, 0, 1], sport).into(),
    );
    let client = start(
        dir.path(),
        "redis-client.conf",
        &client_conf(&ours.combined, ([127, 0, 0, 1], sport).into(), ""),
    );
    assert!(redis.connect_to(client.addr("redis")).is_err());
    assert!(
        client.metric(
            "gluu_tunnel_handshake_failures_total{service=\"redis\",reason=\"bad_certificate\"}"
        ) >= 1.0
    );
}
