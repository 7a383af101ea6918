//! Faults: a wrong group key, a tampered TLS stream, a peer that knows the key but sends
//! paths outside the group, more connections than `--max-connections`, a peer that never
//! starts its handshake or stalls mid-exchange, kill -9 of the receiving daemon in the middle
//! of a 100 MB transfer, and a file its disk cannot hold. Each is refused, held off, cut off
//! or survived with nothing partial written.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use gluu_fsync::index::{Kind, Meta, Version, VersionVector};
use gluu_fsync::wire::{Conn, Msg};
use gluu_fsync::{Config, Node};
use gluu_testkit::wait_for;
use support::Cluster;

const SOON: Duration = Duration::from_secs(10);

/// A copy of the cluster's configuration with `from` replaced by `to`.
fn variant(c: &Cluster, name: &str, from: &str, to: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&c.config).unwrap();
    assert!(text.contains(from));
    let path = c.dir.path().join(name);
    std::fs::write(&path, text.replace(from, to)).unwrap();
    path
}

fn sync_with_config(c: &Cluster, i: usize, config: &std::path::Path) -> std::process::Output {
    let node = &c.nodes[i];
    std::process::Command::new(support::BIN)
        .arg("-c")
        .arg(config)
        .args(["-N", &node.name, "--state-dir"])
        .arg(&node.state)
        .arg("sync")
        .output()
        .unwrap()
}

/// A file version of `content` at `path`, made once on node `by`.
fn file_version(path: &str, content: &[u8], by: &str) -> Version {
    Version {
        path: path.to_string(),
        meta: Meta {
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            user: "root".into(),
            group: "root".into(),
            mtime_ns: 0,
            size: content.len() as u64,
            hash: *blake3::hash(content).as_bytes(),
            target: None,
        },
        vector: VersionVector([(by.to_string(), 1)].into()),
        forced: false,
    }
}

#[test]
fn a_wrong_key_is_refused_before_any_data_moves() {
    let mut c = Cluster::new(2, "");
    c.start(0);
    let other_key = c.dir.path().join("other.key");
    gluu_fsync::keygen(&other_key).unwrap();
    let key = c.dir.path().join("csync2.key");
    let config = variant(
        &c,
        "wrong-key.cfg",
        &key.display().to_string(),
        &other_key.display().to_string(),
    );
    std::fs::write(c.path(1, "intruder.xml"), b"should not arrive").unwrap();
    let out = sync_with_config(&c, 1, &config);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("authentication failed"), "{text}");
    let line = c.log_line(0, "refused a peer", SOON);
    assert!(
        line.contains("127.0.0.1:") && line.contains("did not prove"),
        "{line}"
    );
    assert!(!c.path(0, "intruder.xml").exists());
}

/// Whether the daemon has answered `conn` (bytes, an end or an error) within `limit`.
fn answered(conn: &mut TcpStream, limit: Duration) -> bool {
    conn.set_read_timeout(Some(limit)).unwrap();
    match conn.read(&mut [0u8; 64]) {
        // Some bytes (a TLS alert) or the end: either way, an answer.
        Ok(_bytes_or_end) => true,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn connections_over_max_connections_wait_in_the_listen_queue() {
    let mut c = Cluster::new(2, "");
    c.start_with(0, &[], &["--max-connections", "1"]);
    let addr = ("127.0.0.1", c.nodes[0].port);
    // Not TLS: a served connection is refused at once.
    let mut junk = TcpStream::connect(addr).unwrap();
    junk.write_all(b"not a TLS ClientHello\r\n").unwrap();
    assert!(answered(&mut junk, SOON), "a free slot serves at once");
    // One silent connection takes the only slot: the next is not even read...
    let silent = TcpStream::connect(addr).unwrap();
    let mut junk = TcpStream::connect(addr).unwrap();
    junk.write_all(b"not a TLS ClientHello\r\n").unwrap();
    assert!(
        !answered(&mut junk, Duration::from_secs(1)),
        "served past --max-connections 1"
    );
    let line = c.log_line(0, "--max-connections", SOON);
    assert!(line.contains("1 peer connections open"), "{line}");
    // ...until the slot is free again.
    drop(silent);
    assert!(answered(&mut junk, SOON), "served once the slot was free");
}

#[test]
fn a_silent_peer_is_dropped_after_the_handshake_timeout() {
    let mut c = Cluster::new(2, "");
    c.start_with(0, &[], &["--handshake-timeout-secs", "1"]);
    let mut silent = TcpStream::connect(("127.0.0.1", c.nodes[0].port)).unwrap();
    let start = Instant::now();
    assert!(answered(&mut silent, SOON), "still open after {SOON:?}");
    let took = start.elapsed();
    // 5 s without the option.
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(4),
        "dropped after {took:?}; --handshake-timeout-secs is 1"
    );
    let line = c.log_line(0, "TLS handshake timed out", SOON);
    assert!(line.contains("127.0.0.1:"), "{line}");
}

/// n2, driven by hand through the library (it holds the key and speaks the protocol): a
/// push to n1 started, n1's first question read.
async fn push_as_n2(c: &Cluster) -> Conn<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let config = Config::load(&c.config).unwrap();
    let node = Node::open(config, "n2", &c.nodes[1].state).unwrap();
    let tree = node.trees[0].clone();
    let peer = tree.peer("n1").unwrap().clone();
    let mut conn = node.connect(&tree, &peer).await.unwrap();
    conn.send(&Msg::Push).await.unwrap();
    let Msg::Ask { .. } = conn.recv().await.unwrap() else {
        panic!("expected an ask");
    };
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stalls_mid_exchange_is_dropped_after_the_io_timeout() {
    let mut c = Cluster::new(2, "");
    c.start_with(0, &[], &["--io-timeout-secs", "1"]);
    // Authenticated, n2 starts a push and then says nothing.
    let mut conn = push_as_n2(&c).await;
    let start = Instant::now();
    let end = conn.recv().await;
    let took = start.elapsed();
    assert!(end.is_err(), "n1 answered a silent peer: {end:?}");
    // 30 s without the option.
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(10),
        "dropped after {took:?}; --io-timeout-secs is 1"
    );
    let line = c.log_line(0, "no answer within 1s", SOON);
    assert!(
        line.contains("exchange failed") && line.contains("node=n2"),
        "{line}"
    );
}

/// Forward TCP between a client and `to`, flipping one bit of the client's stream after the
/// first `after` bytes.
fn tampering_proxy(to: std::net::SocketAddr, after: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((mut client, _)) = listener.accept() else {
            return;
        };
        let mut server = TcpStream::connect(to).unwrap();
        let (mut client_r, mut server_w) =
            (client.try_clone().unwrap(), server.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut seen = 0usize;
            let mut buf = [0u8; 16384];
            while let Ok(n) = client_r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if seen <= after && after < seen + n {
                    buf[after - seen] ^= 0x01;
                }
                seen += n;
                if server_w.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let _ = std::io::copy(&mut server, &mut client);
    });
    port
}

#[test]
fn a_tampered_stream_is_refused_and_nothing_is_written() {
    let mut c = Cluster::new(2, "");
    c.start(0);
    let n1 = format!("127.0.0.1:{}", c.nodes[0].port);
    // Past the TLS handshake (about 2 KB from the client with the hello and finished).
    let proxy = tampering_proxy(n1.parse().unwrap(), 4000);
    let config = variant(&c, "proxied.cfg", &n1, &format!("127.0.0.1:{proxy}"));
    let payload: Vec<u8> = (0..20000u32).map(|i| i as u8).collect();
    std::fs::write(c.path(1, "tampered.bin"), &payload).unwrap();
    let out = sync_with_config(&c, 1, &config);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let line = c.log_line(0, "exchange failed", SOON);
    assert!(line.contains("n2"), "{line}");
    assert!(!c.path(0, "tampered.bin").exists());
    assert!(gluu_testkit::find_content(&c.nodes[0].conf, &payload).is_empty());
}

#[tokio::test]
async fn a_peer_with_the_key_cannot_write_outside_the_group() {
    let mut c = Cluster::new(2, "");
    let outside = c.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, c.path(0, "link")).unwrap();
    c.start(0);
    let mut conn = push_as_n2(&c).await;
    let content = b"owned".to_vec();
    let file = |path: &str| file_version(path, &content, "n2");
    let attempts = [
        "%root%/conf/../escape",
        "/etc/cron.d/owned",
        "%root%/other/x",
        "%root%/conf/.hidden",
        "%root%/conf//double",
        "%root%/conf/link/through-symlink",
    ];
    conn.send(&Msg::Offer {
        id: 1,
        upto: 1,
        versions: attempts.iter().map(|p| file(p)).collect(),
        more: false,
    })
    .await
    .unwrap();
    let Msg::Wants { items } = conn.recv().await.unwrap() else {
        panic!("expected wants");
    };
    // Only the symlinked one looks like a group path; it is refused when written.
    for item in &items {
        assert_eq!(item.path, "%root%/conf/link/through-symlink");
        conn.send(&Msg::FileHead {
            gone: false,
            size: content.len() as u64,
            chunks: None,
        })
        .await
        .unwrap();
        conn.send_data(&content).await.unwrap();
        conn.flush().await.unwrap();
    }
    let Msg::Ack { .. } = conn.recv().await.unwrap() else {
        panic!("expected an ack");
    };
    let _ = conn.send(&Msg::Bye).await;
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "written through the symlink"
    );
    assert!(!std::path::Path::new("/etc/cron.d/owned").exists());
    assert!(!c.nodes[0].conf.parent().unwrap().join("escape").exists());
    assert!(!c.path(0, ".hidden").exists());
    let line = c.log_line(0, "through-symlink", SOON);
    assert!(
        line.contains("refused") && line.contains("symlink"),
        "{line}"
    );
    c.log_line(0, "refused: not a path of this group", SOON);
}

#[test]
fn kill_9_in_the_middle_of_a_100_mb_transfer_never_leaves_a_partial_file() {
    let mut c = Cluster::new(2, "");
    let size = 100 << 20;
    let versions: Vec<Vec<u8>> = (0..3u8)
        .map(|v| {
            (0..size)
                .map(|i| ((i / 4096) as u8).wrapping_add(v.wrapping_mul(31)))
                .collect()
        })
        .collect();
    let hashes: Vec<blake3::Hash> = versions.iter().map(|v| blake3::hash(v)).collect();
    std::fs::write(c.path(0, "big.bin"), &versions[0]).unwrap();
    c.start(0);
    let target = c.path(1, "big.bin");
    let whole = |allowed: &[usize]| {
        // Absent, or exactly one of the allowed versions: never anything else.
        match std::fs::read(&target) {
            Err(_) => assert!(
                allowed.contains(&usize::MAX),
                "{} vanished",
                target.display()
            ),
            Ok(bytes) => {
                let h = blake3::hash(&bytes);
                assert!(
                    allowed.iter().any(|i| *i != usize::MAX && hashes[*i] == h),
                    "{} is partial or corrupt ({} bytes)",
                    target.display(),
                    bytes.len()
                );
            }
        }
    };
    let mut kills = 0;
    for round in 0..3usize {
        if round > 0 {
            // A new version on n1 while n2 is down; n2 holds the previous one, whole.
            std::fs::write(c.path(0, "big.bin"), &versions[round]).unwrap();
        }
        c.start(1);
        // Wait for the temp file that shows the transfer under way, then kill -9.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut caught = false;
        while Instant::now() < deadline {
            if c.receiving(1) {
                caught = true;
                break;
            }
            if std::fs::read(&target).is_ok_and(|b| blake3::hash(&b) == hashes[round]) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        c.kill(1);
        kills += usize::from(caught);
        let allowed: Vec<usize> = if round == 0 {
            vec![usize::MAX, 0]
        } else {
            vec![round - 1, round]
        };
        whole(&allowed);
        // Back up, it finishes: the new version, whole.
        c.start(1);
        c.wait_content(1, "big.bin", &versions[round], Duration::from_secs(60));
        c.stop(1);
        // No temp file was left behind by the killed run (removed at start-up).
        assert!(!c.receiving(1));
    }
    assert!(kills >= 2, "only {kills} of 3 kills landed mid-transfer");
}

#[test]
fn a_file_the_disk_cannot_hold_is_refused_before_any_of_it_moves_and_arrives_once_it_can() {
    let mut c = Cluster::new(2, "");
    let content: Vec<u8> = (0..24u32 << 20).map(|i| (i / 4096) as u8).collect();
    std::fs::write(c.path(0, "big.bin"), &content).unwrap();
    c.start(0);
    c.start_on_tmpfs(1, "16m");
    let line = c.log_line(1, "do not fit", SOON);
    let named = format!(
        "{}: 25165824 bytes do not fit (",
        c.path(1, "big.bin").display()
    );
    assert!(line.contains(&named), "{line}");
    // Nothing of it was written (no temp file), and the exchange is retried, not given up.
    let tree = c.as_seen_by(1, "");
    let names = || -> Vec<String> {
        std::fs::read_dir(&tree)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert!(names().is_empty(), "{:?}", names());
    c.resize(1, "64m");
    let there = c.as_seen_by(1, "big.bin");
    wait_for(SOON * 3, "big.bin once there is room", || {
        (std::fs::read(&there).ok()? == content).then_some(())
    });
    assert_eq!(names(), ["big.bin"]);
}

#[test]
fn a_received_file_whose_index_was_not_stored_is_recorded_at_the_next_start() {
    let c = Cluster::new(2, "");
    let version =
        |name: &str, content: &[u8]| file_version(&format!("%root%/conf/{name}"), content, "n1");
    let open = || Node::open(Config::load(&c.config).unwrap(), "n2", &c.nodes[1].state).unwrap();
    {
        // What a daemon killed between putting files in place and storing its index leaves:
        // a.xml noted and on disk, b.xml noted but never written, a torn last note.
        let node = open();
        let tree = &node.trees[0];
        std::fs::write(c.path(1, "a.xml"), b"from n1").unwrap();
        tree.journal(&version("a.xml", b"from n1")).unwrap();
        tree.journal(&version("b.xml", b"never arrived")).unwrap();
        let journal = tree.state_file.with_extension("journal");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&journal)
            .unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
    }
    let node = open();
    let tree = &node.trees[0];
    let state = tree.state();
    let a = &state.records["%root%/conf/a.xml"];
    assert_eq!(
        a.version.vector,
        VersionVector([("n1".to_string(), 1)].into())
    );
    assert!(a.stat.is_some(), "recorded as it is on disk");
    assert!(!state.records.contains_key("%root%/conf/b.xml"));
    assert!(
        !tree.state_file.with_extension("journal").exists(),
        "dropped once stored"
    );
    drop(state);
    // The start's scan sees nothing changed here: the file is the peer's version, not an edit.
    let changed = tree.scan(None);
    assert!(!changed.iter().any(|p| p.ends_with("a.xml")), "{changed:?}");
    assert_eq!(
        tree.state().records["%root%/conf/a.xml"].version.vector,
        VersionVector([("n1".to_string(), 1)].into())
    );
}
