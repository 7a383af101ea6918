//! Interoperability with the real Debian stunnel, both ways, using the guide's files:
//! stunnel's node side talking to gluu-tunnel on the Redis host, and gluu-tunnel on a node
//! talking to stunnel on the Redis host. Default pinning on our side must accept stunnel
//! holding the same `secureredis.pem`, and refuse it holding another.

mod support;

use std::net::SocketAddr;
use std::path::Path;

use gluu_testkit::{Cert, Redis, Side, free_port, guide_conf, stunnel};
use support::{client_conf, server_conf, start};

/// Real stunnel running one of the guide's files, listening on a fresh loopback port.
fn stunnel_guide(
    dir: &Path,
    side: Side,
    cert: &Path,
    connect: SocketAddr,
) -> (gluu_testkit::Proc, SocketAddr) {
    let accept = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let name = match side {
        Side::RedisHost => "stunnel-server",
        Side::Node => "stunnel-client",
    };
    let proc = stunnel(
        dir,
        name,
        &guide_conf(side, cert, "", accept, connect),
        accept,
    );
    (proc, accept)
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
    let (_stunnel, entry) =
        stunnel_guide(dir.path(), Side::Node, &cert.combined, server.addr("redis"));
    let mut con = redis
        .connect_to(entry)
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
    // The guide's redis-server.conf, as written.
    let (_stunnel, tls_port) =
        stunnel_guide(dir.path(), Side::RedisHost, &cert.combined, redis.addr());
    let client = start(
        dir.path(),
        "redis-client.conf",
        &client_conf(&cert.combined, tls_port, ""),
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
    let (_c, entry) = stunnel_guide(
        dir.path(),
        Side::Node,
        &theirs.combined,
        server.addr("redis"),
    );
    assert!(redis.connect_to(entry).is_err());
    assert!(
        server.metric(
            "gluu_tunnel_handshake_failures_total{service=\"redis\",reason=\"bad_certificate\"}"
        ) >= 1.0
    );
    // stunnel server with another certificate -> our client refuses it.
    let (_s, tls_port) = stunnel_guide(dir.path(), Side::RedisHost, &theirs.combined, redis.addr());
    let client = start(
        dir.path(),
        "redis-client.conf",
        &client_conf(&ours.combined, tls_port, ""),
    );
    assert!(redis.connect_to(client.addr("redis")).is_err());
    assert!(
        client.metric(
            "gluu_tunnel_handshake_failures_total{service=\"redis\",reason=\"bad_certificate\"}"
        ) >= 1.0
    );
}

/// stunnel's `ciphers` and `ciphersuites` mean the same to gluu-tunnel as to stunnel: a
/// gluu-tunnel client whose suites the stunnel server does not take is refused, one that
/// shares a suite gets through (TLS 1.2 by cipher string, TLS 1.3 by suite names).
#[test]
fn cipher_lines_mean_what_they_mean_to_stunnel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start();
    let cert = Cert::new(dir.path(), "secureredis");
    for (version, stunnel_says, refused, shared) in [
        (
            "TLSv1.2",
            "ciphers = ECDHE-ECDSA-AES256-GCM-SHA384",
            "ciphers = ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305",
            "ciphers = HIGH:!AES128",
        ),
        (
            "TLSv1.3",
            "ciphersuites = TLS_CHACHA20_POLY1305_SHA256",
            "ciphersuites = TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384",
            "ciphersuites = TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256",
        ),
    ] {
        let accept = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let globals = format!("sslVersion = {version}\n{stunnel_says}\n");
        let _stunnel = stunnel(
            dir.path(),
            &format!("stunnel-{version}"),
            &guide_conf(
                Side::RedisHost,
                &cert.combined,
                &globals,
                accept,
                redis.addr(),
            ),
            accept,
        );
        for (ours, gets_through) in [(refused, false), (shared, true)] {
            let client = start(
                dir.path(),
                "redis-client.conf",
                &client_conf(
                    &cert.combined,
                    accept,
                    &format!("sslVersion = {version}\n{ours}\n"),
                ),
            );
            let ping = redis
                .connect_to(client.addr("redis"))
                .and_then(|mut con| redis::cmd("PING").query::<String>(&mut con));
            assert_eq!(ping.is_ok(), gets_through, "{version}, {ours}: {ping:?}");
        }
    }
}
