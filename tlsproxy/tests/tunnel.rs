//! A gluu-tunnel server/client pair in front of a real `redis-server` with `requirepass`,
//! driven with the `redis` crate: data of every size, pipelines, concurrency, Redis
//! restarts, bad peers and bad bytes, limits, timeouts, reloads and shutdown.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use gluu_testkit::{Ca, Cert, wait_for};
use support::{Pair, client_conf, closed_silently, server_conf, start, tunnels};

#[test]
fn auth_ping_and_values_from_1_byte_to_4_mib() {
    let pair = Pair::start();
    let mut con = pair.con();
    let pong: String = redis::cmd("PING").query(&mut con).expect("ping");
    assert_eq!(pong, "PONG");
    for size in [1usize, 100, 16 * 1024 - 1, 16 * 1024 + 1, 1 << 20, 4 << 20] {
        let value: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let key = format!("k{size}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(&value)
            .query(&mut con)
            .expect("set");
        let got: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut con).expect("get");
        assert_eq!(got.len(), size);
        assert!(got == value, "value of {size} bytes came back altered");
    }
}

#[test]
fn wrong_password_is_redis_error_not_tunnel_error() {
    let pair = Pair::start();
    let client =
        redis::Client::open(("127.0.0.1", pair.client.addr("redis").port())).expect("client");
    let mut con = client.get_connection().expect("connect");
    let err = redis::cmd("AUTH")
        .arg("wrong")
        .query::<String>(&mut con)
        .expect_err("wrong password");
    assert!(
        err.to_string().contains("WRONGPASS") || err.to_string().contains("invalid"),
        "{err}"
    );
}

#[test]
fn pipeline_of_1000_commands() {
    let pair = Pair::start();
    let mut con = pair.con();
    let mut set = redis::pipe();
    for i in 0..1000 {
        set.cmd("SET").arg(format!("p{i}")).arg(i).ignore();
    }
    let _: () = set.query(&mut con).expect("pipelined sets");
    let mut get = redis::pipe();
    for i in 0..1000 {
        get.cmd("GET").arg(format!("p{i}"));
    }
    let values: Vec<i64> = get.query(&mut con).expect("pipelined gets");
    assert_eq!(values, (0..1000).collect::<Vec<_>>());
}

#[test]
fn two_hundred_concurrent_connections() {
    let pair = Arc::new(Pair::start());
    let all_open = Arc::new(Barrier::new(200));
    let threads: Vec<_> = (0..200)
        .map(|i| {
            let (pair, all_open) = (pair.clone(), all_open.clone());
            std::thread::spawn(move || {
                let mut con = pair.con();
                all_open.wait(); // 200 tunneled connections open at once
                let _: () = redis::cmd("SET")
                    .arg(format!("c{i}"))
                    .arg(i)
                    .query(&mut con)
                    .expect("set");
                let v: i64 = redis::cmd("GET")
                    .arg(format!("c{i}"))
                    .query(&mut con)
                    .expect("get");
                assert_eq!(v, i);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    assert!(
        pair.client
            .metric("gluu_tunnel_connections_total{service=\"redis\"}")
            >= 200.0
    );
}

#[test]
fn redis_restart_needs_no_tunnel_restart() {
    let mut pair = Pair::start();
    let mut con = pair.con();
    let _: () = redis::cmd("SET")
        .arg("a")
        .arg(1)
        .query(&mut con)
        .expect("set");
    pair.redis.restart();
    // The old connection died with Redis; new ones through the same tunnels work.
    assert!(redis::cmd("PING").query::<String>(&mut con).is_err());
    let mut fresh = pair.con();
    let pong: String = redis::cmd("PING")
        .query(&mut fresh)
        .expect("ping after restart");
    assert_eq!(pong, "PONG");
}

#[test]
fn redis_down_closes_the_client_promptly_and_names_the_target() {
    let mut pair = Pair::start();
    pair.redis.stop();
    let start = Instant::now();
    let s = TcpStream::connect(pair.client.addr("redis")).expect("tunnel accepts");
    assert!(closed_silently(s), "connection should be closed");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    let failures = pair.server.metric(&format!(
        "gluu_tunnel_target_connect_failures_total{{service=\"redis\",target=\"{}\"}}",
        pair.redis.addr()
    ));
    assert_eq!(failures, 1.0);
}

#[test]
fn peer_with_another_certificate_never_reaches_redis() {
    let pair = Pair::start();
    let before = pair.redis_connections();
    // A node-side tunnel holding a different certificate: the server refuses it.
    let rogue_cert = Cert::new(pair.dir.path(), "rogue");
    let rogue = start(
        pair.dir.path(),
        "rogue-client.conf",
        &client_conf(&rogue_cert.combined, pair.server.addr("redis"), ""),
    );
    assert!(pair.redis.connect_to(rogue.addr("redis")).is_err());
    wait_for(Duration::from_secs(5), "the refusal to be counted", || {
        (pair.server.metric(
            "gluu_tunnel_handshake_failures_total{service=\"redis\",reason=\"bad_certificate\"}",
        ) >= 1.0
            || pair.server.metric(
                "gluu_tunnel_handshake_failures_total{service=\"redis\",reason=\"alert_received\"}",
            ) >= 1.0)
            .then_some(())
    });
    // The rogue's own side also refuses the server's certificate (it pins its own).
    assert!(
        rogue.metric(
            "gluu_tunnel_handshake_failures_total{service=\"redis\",reason=\"bad_certificate\"}"
        ) >= 1.0
    );
    assert_eq!(
        pair.redis_connections(),
        before + 1,
        "only our own INFO connection reached Redis"
    );
    // The tunnel keeps serving its legitimate peer.
    let pong: String = redis::cmd("PING").query(&mut pair.con()).expect("ping");
    assert_eq!(pong, "PONG");
}

#[test]
fn plaintext_on_the_tls_port_is_refused_and_counted() {
    let pair = Pair::start();
    let before = pair.redis_connections();
    // What a node-side stunnel without `client = yes` forwards: plaintext RESP.
    let mut s = TcpStream::connect(pair.server.addr("redis")).expect("connect");
    s.write_all(b"*2\r\n$4\r\nAUTH\r\n$11\r\ns3cret-gluu\r\n")
        .expect("write");
    assert!(closed_silently(s));
    // Garbage, and a TLS record header followed by garbage.
    let mut g = TcpStream::connect(pair.server.addr("redis")).expect("connect");
    g.write_all(&[0x00, 0xff, 0x13, 0x37, 0x42]).expect("write");
    assert!(closed_silently(g));
    let mut h = TcpStream::connect(pair.server.addr("redis")).expect("connect");
    h.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00])
        .expect("write");
    assert!(closed_silently(h));
    assert_eq!(
        pair.server
            .metric("gluu_tunnel_handshake_failures_total{service=\"redis\",reason=\"plaintext\"}"),
        2.0
    );
    assert_eq!(
        pair.server
            .metric("gluu_tunnel_handshake_failures_total{service=\"redis\",reason=\"protocol\"}"),
        1.0
    );
    assert_eq!(
        pair.redis_connections(),
        before + 1,
        "nothing reached Redis"
    );
    let pong: String = redis::cmd("PING")
        .query(&mut pair.con())
        .expect("still serving");
    assert_eq!(pong, "PONG");
}

#[test]
fn tls_on_the_plaintext_port_is_refused_and_nothing_reaches_redis() {
    let pair = Pair::start();
    let commands = |pair: &Pair| -> u64 {
        let mut c = pair.redis.connect_to(pair.redis.addr()).expect("direct");
        let info: String = redis::cmd("INFO").arg("stats").query(&mut c).expect("info");
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("total_commands_processed")
    };
    let before = commands(&pair);
    // A ClientHello's first bytes, as an application with TLS turned on would send, after
    // the tunnels' own handshake is over: the server has sent its TLS 1.3 session tickets
    // by then, and they must not count as the server speaking first.
    let mut s = TcpStream::connect(pair.client.addr("redis")).expect("connect");
    wait_for(Duration::from_secs(5), "the tunnels' handshake", || {
        (pair
            .server
            .metric("gluu_tunnel_handshakes_total{service=\"redis\",kind=\"full\"}")
            >= 1.0)
            .then_some(())
    });
    s.write_all(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ])
    .expect("write");
    assert!(closed_silently(s));
    assert_eq!(
        pair.client.metric("gluu_tunnel_handshake_failures_total{service=\"redis\",reason=\"tls_on_plaintext_port\"}"),
        1.0
    );
    // Our two INFO calls (AUTH is counted too: two connections, AUTH + INFO each).
    assert_eq!(
        commands(&pair),
        before + 2,
        "only our own commands reached Redis"
    );
}

#[test]
fn half_open_handshakes_do_not_starve_others() {
    // Eight slots, one-second handshake timeout: eight silent connections fill every slot,
    // and a real client still gets through once their handshakes time out.
    let pair = Pair::with("maxConnections = 8\nTIMEOUTbusy = 1", "");
    let silent: Vec<_> = (0..8)
        .map(|_| TcpStream::connect(pair.server.addr("redis")).expect("connect"))
        .collect();
    wait_for(Duration::from_secs(5), "8 connections active", || {
        (pair
            .server
            .metric("gluu_tunnel_connections_active{service=\"redis\"}")
            == 8.0)
            .then_some(())
    });
    let start = Instant::now();
    let pong: String = redis::cmd("PING")
        .query(&mut pair.con())
        .expect("served after the flood");
    assert_eq!(pong, "PONG");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        pair.server
            .metric("gluu_tunnel_handshake_failures_total{service=\"redis\",reason=\"timeout\"}")
            >= 1.0
    );
    drop(silent);
}

#[test]
fn a_flood_of_idle_connections_below_the_limit_does_not_delay_anyone() {
    let pair = Pair::start();
    let flood: Vec<_> = (0..300)
        .map(|_| TcpStream::connect(pair.server.addr("redis")).expect("connect"))
        .collect();
    let start = Instant::now();
    let pong: String = redis::cmd("PING").query(&mut pair.con()).expect("ping");
    assert_eq!(pong, "PONG");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    drop(flood);
}

#[test]
fn idle_connections_are_closed_after_timeout_idle() {
    let pair = Pair::with("", "TIMEOUTidle = 1");
    let mut con = pair.con();
    // And one that never says a word, so the tunnel is still waiting to see who speaks first.
    let silent = TcpStream::connect(pair.client.addr("redis")).expect("connect");
    let start = Instant::now();
    wait_for(
        Duration::from_secs(10),
        "the idle connection to be closed",
        || {
            (pair
                .client
                .metric("gluu_tunnel_connections_active{service=\"redis\"}")
                == 0.0)
                .then_some(())
        },
    );
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert!(redis::cmd("PING").query::<String>(&mut con).is_err());
    assert!(closed_silently(silent));
}

#[test]
fn a_server_that_speaks_first_is_relayed() {
    // SMTP-style: the target greets, the client answers. Nothing but the tunnels between.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let greeter = listener.local_addr().expect("addr");
    let server_side = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.write_all(b"220 ready\r\n").expect("greet");
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).expect("read");
        s.write_all(format!("250 {line}").as_bytes())
            .expect("answer");
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = Cert::new(dir.path(), "secureredis");
    let (_server, client) = tunnels(dir.path(), &cert.combined, greeter, "", "");
    let s = TcpStream::connect(client.addr("redis")).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut reader = BufReader::new(&s);
    let mut line = String::new();
    reader.read_line(&mut line).expect("greeting");
    assert_eq!(line, "220 ready\r\n");
    (&s).write_all(b"HELO node\r\n").expect("write");
    line.clear();
    reader.read_line(&mut line).expect("answer");
    assert_eq!(line, "250 HELO node\r\n");
    server_side.join().expect("greeter");
    assert_eq!(
        client.metric("gluu_tunnel_bytes_total{service=\"redis\",direction=\"to_client\"}"),
        (b"220 ready\r\n".len() + b"250 HELO node\r\n".len()) as f64
    );
}

#[test]
fn failover_prio_skips_a_dead_target() {
    let pair = Pair::start();
    let dead = gluu_testkit::free_port();
    let text = format!(
        "cert = {}\nclient = yes\nmetrics = 127.0.0.1:0\n[redis]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:{dead}\nconnect = {}\nfailover = prio\n",
        pair.cert.combined.display(),
        pair.server.addr("redis")
    );
    let client = start(pair.dir.path(), "failover.conf", &text);
    for _ in 0..3 {
        let mut con = pair
            .redis
            .connect_to(client.addr("redis"))
            .expect("through failover");
        let pong: String = redis::cmd("PING").query(&mut con).expect("ping");
        assert_eq!(pong, "PONG");
    }
    let series = format!(
        "gluu_tunnel_target_connect_failures_total{{service=\"redis\",target=\"127.0.0.1:{dead}\"}}"
    );
    assert_eq!(
        client.metric(&series),
        3.0,
        "prio tries the first target every time"
    );
}

#[test]
fn failover_rr_alternates_targets() {
    let pair = Pair::start();
    // A second server tunnel in front of the same Redis.
    let second = start(
        pair.dir.path(),
        "second.conf",
        &server_conf(&pair.cert.combined, pair.redis.addr(), ""),
    );
    let text = format!(
        "cert = {}\nclient = yes\n[redis]\naccept = 127.0.0.1:0\nconnect = {}\nconnect = {}\nfailover = rr\n",
        pair.cert.combined.display(),
        pair.server.addr("redis"),
        second.addr("redis")
    );
    let client = start(pair.dir.path(), "rr.conf", &text);
    for _ in 0..4 {
        let mut con = pair.redis.connect_to(client.addr("redis")).expect("rr");
        let _: String = redis::cmd("PING").query(&mut con).expect("ping");
    }
    let served =
        |r: &support::Running| r.metric("gluu_tunnel_connections_total{service=\"redis\"}");
    assert_eq!((served(&pair.server), served(&second)), (2.0, 2.0));
}

#[test]
fn sighup_rotates_certificates_and_keeps_open_connections() {
    let pair = Pair::start();
    let mut old_con = pair.con();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut old_con)
        .expect("set");
    let expiry = format!(
        "gluu_tunnel_certificate_expiry_timestamp_seconds{{file=\"{}\"}}",
        pair.cert.combined.display()
    );
    // rcgen's default end, 4096-01-01.
    assert_eq!(pair.server.metric(&expiry), 67_090_118_400.0);
    // Rotate: a new shared certificate written over the old file on both sides.
    let new_cert = Cert::ending_in(pair.dir.path(), "rotated", 50 * 86_400);
    let due = (gluu_testkit::unix_now() + 50 * 86_400) as f64;
    std::fs::copy(&new_cert.combined, &pair.cert.combined).expect("rotate");
    pair.server.reload();
    pair.client.reload();
    wait_for(Duration::from_secs(5), "both reloads", || {
        (pair
            .server
            .metric("gluu_tunnel_reloads_total{result=\"ok\"}")
            == 1.0
            && pair
                .client
                .metric("gluu_tunnel_reloads_total{result=\"ok\"}")
                == 1.0)
            .then_some(())
    });
    for side in [&pair.server, &pair.client] {
        let end = side.metric(&expiry);
        assert!((end - due).abs() < 5.0, "{end} against {due}");
    }
    // The open connection carries on.
    let v: String = redis::cmd("GET")
        .arg("k")
        .query(&mut old_con)
        .expect("old connection");
    assert_eq!(v, "v");
    // New connections work, and the server now presents the new certificate: a client that
    // still pins the old one is refused, one pinning the new one is served.
    let pong: String = redis::cmd("PING")
        .query(&mut pair.con())
        .expect("new connection");
    assert_eq!(pong, "PONG");
    let old_cert = Cert::new(pair.dir.path(), "old-copy");
    let stale = start(
        pair.dir.path(),
        "stale.conf",
        &client_conf(&old_cert.combined, pair.server.addr("redis"), ""),
    );
    assert!(pair.redis.connect_to(stale.addr("redis")).is_err());
    let fresh = start(
        pair.dir.path(),
        "fresh.conf",
        &client_conf(&new_cert.combined, pair.server.addr("redis"), ""),
    );
    let mut c = pair
        .redis
        .connect_to(fresh.addr("redis"))
        .expect("new cert accepted");
    let pong: String = redis::cmd("PING").query(&mut c).expect("ping");
    assert_eq!(pong, "PONG");
}

#[test]
fn a_certificate_renewed_on_the_same_key_reaches_the_hosts_one_by_one() {
    let pair = Pair::start();
    // The Redis host has the renewed file (`openssl req -new -x509 -key key.pem ...`, the
    // guide's own recipe a year on), the node not yet: each still accepts the other.
    let renewed = pair.cert.renewed(pair.dir.path(), "renewed");
    let server = start(
        pair.dir.path(),
        "renewed-server.conf",
        &server_conf(&renewed.combined, pair.redis.addr(), ""),
    );
    let client = start(
        pair.dir.path(),
        "old-client.conf",
        &client_conf(&pair.cert.combined, server.addr("redis"), ""),
    );
    let mut con = pair
        .redis
        .connect_to(client.addr("redis"))
        .expect("renewed and old certificate, one key");
    let pong: String = redis::cmd("PING").query(&mut con).expect("ping");
    assert_eq!(pong, "PONG");
    // Another key is still refused.
    let other = Cert::new(pair.dir.path(), "other");
    let stranger = start(
        pair.dir.path(),
        "other-client.conf",
        &client_conf(&other.combined, server.addr("redis"), ""),
    );
    assert!(pair.redis.connect_to(stranger.addr("redis")).is_err());
    let refused = |reason: &str| {
        server.metric(&format!(
            "gluu_tunnel_handshake_failures_total{{service=\"redis\",reason=\"{reason}\"}}"
        ))
    };
    wait_for(Duration::from_secs(5), "the stranger refused", || {
        (refused("bad_certificate") + refused("alert_received") >= 1.0).then_some(())
    });
}

#[test]
fn a_broken_reload_keeps_the_old_configuration() {
    let pair = Pair::start();
    let mut con = pair.con();
    std::fs::write(
        &pair.server.path,
        "cert = /nonexistent.pem\n[redis]\naccept = 1\nfrobnicate = 1\n",
    )
    .expect("break the file");
    pair.server.reload();
    wait_for(Duration::from_secs(5), "the failed reload", || {
        (pair
            .server
            .metric("gluu_tunnel_reloads_total{result=\"failed\"}")
            == 1.0)
            .then_some(())
    });
    let pong: String = redis::cmd("PING").query(&mut con).expect("old connection");
    assert_eq!(pong, "PONG");
    let pong: String = redis::cmd("PING")
        .query(&mut pair.con())
        .expect("new connection");
    assert_eq!(pong, "PONG");
}

#[test]
fn shutdown_stops_accepting_and_drains_open_connections() {
    let pair = Pair::with("TIMEOUTdrain = 20", "");
    let mut con = pair.con();
    let server_addr = pair.server.addr("redis");
    pair.server.shutdown.cancel();
    wait_for(Duration::from_secs(5), "the listener to close", || {
        TcpStream::connect(server_addr).is_err().then_some(())
    });
    // In flight: a 4 MiB round trip on the connection opened before the stop.
    let value = vec![7u8; 4 << 20];
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&value)
        .query(&mut con)
        .expect("set while draining");
    let got: Vec<u8> = redis::cmd("GET")
        .arg("big")
        .query(&mut con)
        .expect("get while draining");
    assert_eq!(got.len(), value.len());
    drop(con);
    let Pair { server, .. } = pair;
    let took = server.stop();
    assert!(
        took < Duration::from_secs(10),
        "drain took {took:?} after the last connection closed"
    );
}

#[test]
fn drain_is_bounded_by_timeout_drain() {
    let pair = Pair::with("TIMEOUTdrain = 1", "");
    let _held = pair.con();
    let Pair { server, .. } = pair;
    let took = server.stop();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "took {took:?}"
    );
}

#[test]
fn metrics_report_connections_and_bytes_per_direction() {
    let pair = Pair::start();
    let mut con = pair.con();
    let _: () = redis::cmd("SET")
        .arg("m")
        .arg(vec![1u8; 10_000])
        .query(&mut con)
        .expect("set");
    let text = pair.client.metrics_text();
    assert!(text.contains("200 OK"), "{text}");
    assert!(
        text.contains("gluu_tunnel_connections_active{service=\"redis\"} 1"),
        "{text}"
    );
    assert!(
        pair.client
            .metric("gluu_tunnel_bytes_total{service=\"redis\",direction=\"to_target\"}")
            > 10_000.0
    );
    assert!(
        pair.client
            .metric("gluu_tunnel_bytes_total{service=\"redis\",direction=\"to_client\"}")
            > 0.0
    );
}

#[test]
fn client_side_resumes_tls_sessions() {
    let pair = Pair::start();
    for _ in 0..3 {
        let pong: String = redis::cmd("PING").query(&mut pair.con()).expect("ping");
        assert_eq!(pong, "PONG");
    }
    let kind = |k: &str| {
        pair.client.metric(&format!(
            "gluu_tunnel_handshakes_total{{service=\"redis\",kind=\"{k}\"}}"
        ))
    };
    assert_eq!(
        kind("full"),
        1.0,
        "only the first connection needs a full handshake"
    );
    assert_eq!(kind("resumed"), 2.0);
}

#[test]
fn tls_1_2_only_peer_is_served() {
    let pair = Pair::start();
    let text = client_conf(
        &pair.cert.combined,
        pair.server.addr("redis"),
        "sslVersion = TLSv1.2",
    );
    let old = start(pair.dir.path(), "tls12.conf", &text);
    let mut con = pair.redis.connect_to(old.addr("redis")).expect("TLS 1.2");
    let pong: String = redis::cmd("PING").query(&mut con).expect("ping");
    assert_eq!(pong, "PONG");
}

#[test]
fn chain_verification_with_check_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = gluu_testkit::Redis::start();
    let ca = Ca::new(dir.path(), "ca");
    let server_cert = ca.issue(dir.path(), "redis-host", &["redis.example.org"]);
    let node_cert = ca.issue(dir.path(), "node1", &["node1.example.org"]);
    let verify =
        |extra: &str| format!("CAfile = {}\nverifyChain = yes\n{extra}", ca.cert.display());
    let server = start(
        dir.path(),
        "server.conf",
        &server_conf(
            &server_cert.combined,
            redis.addr(),
            &verify("checkHost = node1.example.org"),
        ),
    );
    let good = start(
        dir.path(),
        "good.conf",
        &client_conf(
            &node_cert.combined,
            server.addr("redis"),
            &verify("checkHost = redis.example.org"),
        ),
    );
    let mut con = redis
        .connect_to(good.addr("redis"))
        .expect("chain and names verified");
    let pong: String = redis::cmd("PING").query(&mut con).expect("ping");
    assert_eq!(pong, "PONG");
    // The node expects another name: refused on its side.
    let wrong_name = start(
        dir.path(),
        "wrong-name.conf",
        &client_conf(
            &node_cert.combined,
            server.addr("redis"),
            &verify("checkHost = cache.example.org"),
        ),
    );
    assert!(redis.connect_to(wrong_name.addr("redis")).is_err());
    assert!(
        wrong_name.metric(
            "gluu_tunnel_handshake_failures_total{service=\"redis\",reason=\"bad_certificate\"}"
        ) >= 1.0
    );
    // A node certificate from another CA: refused by the Redis side.
    let other_ca = Ca::new(dir.path(), "other-ca");
    let stranger = other_ca.issue(dir.path(), "stranger", &["node1.example.org"]);
    let rogue = start(
        dir.path(),
        "rogue.conf",
        &client_conf(
            &stranger.combined,
            server.addr("redis"),
            &verify("checkHost = redis.example.org"),
        ),
    );
    assert!(redis.connect_to(rogue.addr("redis")).is_err());
    wait_for(Duration::from_secs(5), "the refusal to be counted", || {
        (server.metric(
            "gluu_tunnel_handshake_failures_total{service=\"redis\",reason=\"bad_certificate\"}",
        ) >= 1.0)
            .then_some(())
    });
}

/// A TCP echo server that echoes until the client's EOF, then ends its own side: the
/// target for checking that half-close passes through both tunnels one direction at a time.
fn echo_until_eof() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind echo");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            loop {
                match std::io::Read::read(&mut s, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            // Answer once more after the client's EOF: only a tunnel that keeps the other
            // direction open delivers it.
            let _ = s.write_all(b"after-eof");
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
    });
    addr
}

#[test]
fn half_close_is_relayed_one_direction_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = Cert::new(dir.path(), "secureredis");
    let echo = echo_until_eof();
    let (_server, client) = tunnels(dir.path(), &cert.combined, echo, "", "");
    let mut s = TcpStream::connect(client.addr("redis")).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"hello").expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut got).expect("read to EOF");
    assert_eq!(got, b"helloafter-eof");
}

#[test]
fn a_stranger_that_verifies_nobody_is_refused_by_the_redis_side() {
    let pair = Pair::start();
    let before = pair.redis_connections();
    let stranger_cert = Cert::new(pair.dir.path(), "stranger");
    let stranger = start(
        pair.dir.path(),
        "stranger.conf",
        &client_conf(
            &stranger_cert.combined,
            pair.server.addr("redis"),
            "verifyPeer = no",
        ),
    );
    assert!(pair.redis.connect_to(stranger.addr("redis")).is_err());
    // The Redis side refuses the certificate; in TLS 1.3 the stranger learns it from the
    // alert after its own side of the handshake, and says so.
    wait_for(Duration::from_secs(5), "both sides to count it", || {
        (pair.server.metric(
            "gluu_tunnel_handshake_failures_total{service=\"redis\",reason=\"bad_certificate\"}",
        ) >= 1.0
            && stranger.metric(
                "gluu_tunnel_handshake_failures_total{service=\"redis\",reason=\"alert_received\"}",
            ) >= 1.0)
            .then_some(())
    });
    assert_eq!(
        pair.redis_connections(),
        before + 1,
        "only our own INFO connection reached Redis"
    );
}
