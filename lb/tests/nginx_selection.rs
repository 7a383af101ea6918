//! gluu-lb's server choice against the real Debian nginx: for the same three upstream
//! servers, clients from 60 different source addresses (all in 127.0.0.0/8) must land on
//! the same server through nginx's `ip_hash` and `hash $remote_addr consistent` as
//! [`gluu_lb::balance`] picks for them. This is what keeps /identity sessions in place when
//! the balancer is swapped.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use gluu_lb::balance::{IpHash, Peer, Peers, Ring, Tried};
use gluu_testkit::{free_port, get_from, nginx, readable_by_nginx};

#[test]
fn same_choice_as_nginx_for_ip_hash_and_consistent_hash() {
    let dir = tempfile::tempdir().expect("tempdir");
    readable_by_nginx(dir.path(), None);
    let nodes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let front = free_port();
    let servers: Vec<String> = nodes.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let upstream = |method: &str| {
        let lines: String = servers.iter().map(|s| format!("server {s}; ")).collect();
        format!("{method} {lines}")
    };
    let node_blocks: String = nodes
        .iter()
        .enumerate()
        .map(|(i, p)| format!("server {{ listen 127.0.0.1:{p}; return 200 \"{i}\"; }}\n"))
        .collect();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "{prelude}http {{\n access_log off;\n\
             upstream iph {{ {iph} }}\n upstream ch {{ {ch} }}\n{node_blocks}\
             server {{ listen 127.0.0.1:{front}; location /iph {{ proxy_pass http://iph; }} location /ch {{ proxy_pass http://ch; }} }}\n}}\n",
            prelude = gluu_testkit::nginx_prelude(dir.path()),
            iph = upstream("ip_hash;"),
            ch = upstream("hash $remote_addr consistent;"),
        ),
    )
    .expect("write nginx.conf");
    let front_addr: SocketAddr = ([127, 0, 0, 1], front).into();
    let _nginx = nginx(dir.path(), &conf, front_addr);

    let now = Instant::now();
    let ring = Ring::new(servers.iter().map(|s| (s.as_str(), 1)));
    let mut peers = Peers::new(
        (0..3)
            .map(|_| Peer::new(1, 1, Duration::from_secs(10)))
            .collect(),
    );
    let mut seen = [[0usize; 3]; 2];
    // 60 sources spread over 127.0.0.0/8 (a small LCG keeps them deterministic).
    let mut x: u32 = 12345;
    for _ in 0..60 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let [_, a, b, c] = x.to_be_bytes();
        let source = Ipv4Addr::new(127, a, b, c.max(2));
        let ours_ip = peers
            .ip_hash(&mut IpHash::new(source.into()), &mut Tried::default(), now)
            .expect("a peer");
        let ours_ch = peers
            .consistent(&ring, &source.to_string(), &mut Tried::default(), now)
            .expect("a peer");
        let theirs_ip = get_from(source, front_addr, "/iph");
        let theirs_ch = get_from(source, front_addr, "/ch");
        assert_eq!(theirs_ip, ours_ip.to_string(), "ip_hash for {source}");
        assert_eq!(
            theirs_ch,
            ours_ch.to_string(),
            "consistent hash for {source}"
        );
        seen[0][ours_ip] += 1;
        seen[1][ours_ch] += 1;
    }
    // The comparison means something only if the clients spread over the servers.
    for counts in seen {
        assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
    }
}
