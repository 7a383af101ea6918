//! nginx's choice of upstream server, reproduced: smooth weighted round robin
//! (`ngx_http_upstream_round_robin.c`), `ip_hash` (`ngx_http_upstream_ip_hash_module.c`),
//! `hash $remote_addr consistent` (`ngx_http_upstream_hash_module.c`'s ring), `least_conn`
//! (`ngx_http_upstream_least_conn_module.c`), passive failure accounting (`max_fails`,
//! `fail_timeout`) and `max_conns`. The same client, server list
//! and failure history give the same server nginx would pick, so a balancer swap does not
//! move anyone's /identity session.
//!
//! Pure state, no I/O: callers pass `now` and tell [`Peers::failed`]/[`Peers::succeeded`].
//! A peer's connection count ([`Peer::conns`]) is the one number shared with the
//! requests: they hold it up while they use the peer.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One `server` line of an upstream and its live state.
#[derive(Clone, Debug)]
pub struct Peer {
    pub weight: u32,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub down: bool,
    /// `max_conns=N`: not chosen while N requests use it (0: no limit).
    pub max_conns: usize,
    /// Taken out by active health checks until they pass again.
    pub unhealthy: bool,
    /// Requests using the peer now (nginx's `conns`, shared by every worker as with
    /// nginx's `zone`): counted up by whoever chose the peer, down when it is done.
    conns: Arc<AtomicUsize>,
    current_weight: i64,
    effective_weight: i64,
    fails: u32,
    /// When the peer was last chosen as a probe, or failed (nginx's `checked`).
    checked: Option<Instant>,
    /// When it last failed (nginx's `accessed`).
    accessed: Option<Instant>,
}

impl Peer {
    /// nginx's defaults: `weight=1 max_fails=1 fail_timeout=10s`.
    pub fn new(weight: u32, max_fails: u32, fail_timeout: Duration) -> Peer {
        Peer {
            weight,
            max_fails,
            fail_timeout,
            down: false,
            max_conns: 0,
            unhealthy: false,
            conns: Arc::default(),
            current_weight: 0,
            effective_weight: i64::from(weight),
            fails: 0,
            checked: None,
            accessed: None,
        }
    }

    pub fn fails(&self) -> u32 {
        self.fails
    }

    /// The count of requests using the peer, to hold up while one does.
    pub fn conns(&self) -> &Arc<AtomicUsize> {
        &self.conns
    }

    fn conns_now(&self) -> usize {
        self.conns.load(Ordering::Relaxed)
    }

    /// At its `max_conns`.
    fn full(&self) -> bool {
        self.max_conns > 0 && self.conns_now() >= self.max_conns
    }

    /// Skipped because of recent failures (`max_fails` within `fail_timeout`).
    fn failing(&self, now: Instant) -> bool {
        self.max_fails > 0
            && self.fails >= self.max_fails
            && self
                .checked
                .is_some_and(|c| now.saturating_duration_since(c) <= self.fail_timeout)
    }

    /// Can be chosen: not down, not failing, not at its `max_conns`.
    fn usable(&self, now: Instant) -> bool {
        !self.down && !self.unhealthy && !self.failing(now) && !self.full()
    }

    /// One word for the status page.
    pub fn state(&self, now: Instant) -> &'static str {
        if self.down {
            "down"
        } else if self.unhealthy {
            "unhealthy"
        } else if self.failing(now) {
            "failing"
        } else if self.full() {
            "full"
        } else {
            "up"
        }
    }

    /// A peer whose failure window has passed is chosen as a probe: remember when.
    fn chosen(&mut self, now: Instant) {
        if self
            .checked
            .is_none_or(|c| now.saturating_duration_since(c) > self.fail_timeout)
        {
            self.checked = Some(now);
        }
    }
}

/// Which peers this request has tried (nginx's `tried` bitmap): each at most once.
#[derive(Clone, Debug, Default)]
pub struct Tried(Vec<bool>);

impl Tried {
    fn has(&self, i: usize) -> bool {
        self.0.get(i).copied().unwrap_or(false)
    }

    fn mark(&mut self, i: usize) {
        if self.0.len() <= i {
            self.0.resize(i + 1, false);
        }
        self.0[i] = true;
    }
}

/// ip_hash's per-request state: the key bytes and the running hash, so a retry rehashes
/// from where the last choice left off, as nginx does.
#[derive(Clone, Debug)]
pub struct IpHash {
    addr: Vec<u8>,
    hash: u32,
    tries: u32,
}

/// nginx gives up rehashing after this many tries and falls back to round robin.
const IP_HASH_TRIES: u32 = 20;

impl IpHash {
    /// The key nginx hashes: the first three bytes of an IPv4 address (its /24), all 16 of
    /// an IPv6 one.
    pub fn new(client: IpAddr) -> IpHash {
        let addr = match client {
            IpAddr::V4(v4) => v4.octets()[..3].to_vec(),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.octets()[..3].to_vec(),
                None => v6.octets().to_vec(),
            },
        };
        IpHash {
            addr,
            hash: 89,
            tries: 0,
        }
    }
}

/// One step of nginx's ip_hash: fold the key into the running hash.
pub fn ip_hash_step(hash: u32, addr: &[u8]) -> u32 {
    addr.iter()
        .fold(hash, |h, &b| (h * 113 + u32::from(b)) % 6271)
}

/// nginx's consistent-hash ring: 160 points per unit of weight for each server, point `j`
/// being `crc32(HOST \0 PORT, previous point as 4 little-endian bytes)` (compatible with
/// Cache::Memcached::Fast, as nginx says), sorted. A server joining or leaving moves only
/// the keys between its points and their predecessors: about 1/N of the clients.
#[derive(Clone, Debug)]
pub struct Ring {
    /// (hash, peer index), sorted by hash, equal hashes kept once.
    points: Vec<(u32, usize)>,
}

/// Points per unit of weight, as in nginx.
const POINTS_PER_WEIGHT: u32 = 160;

impl Ring {
    /// `servers`: each peer's `host:port` as written, and its weight, in peer order.
    pub fn new<'a>(servers: impl IntoIterator<Item = (&'a str, u32)>) -> Ring {
        let mut points = Vec::new();
        for (i, (address, weight)) in servers.into_iter().enumerate() {
            let (host, port) = address.rsplit_once(':').unwrap_or((address, ""));
            let mut base = crc32fast::Hasher::new();
            base.update(host.as_bytes());
            base.update(&[0]);
            base.update(port.as_bytes());
            let mut prev = 0u32;
            for _ in 0..weight * POINTS_PER_WEIGHT {
                let mut h = base.clone();
                h.update(&prev.to_le_bytes());
                prev = h.finalize();
                points.push((prev, i));
            }
        }
        points.sort_unstable();
        points.dedup_by_key(|p| p.0);
        Ring { points }
    }

    /// Index of the first point at or after `hash` (may be `len`, which wraps to 0).
    fn start(&self, hash: u32) -> usize {
        self.points.partition_point(|p| p.0 < hash)
    }
}

/// nginx gives up walking the ring after this many points and falls back to round robin.
const RING_TRIES: usize = 20;

/// The servers of one upstream, in configuration order.
#[derive(Clone, Debug)]
pub struct Peers {
    peers: Vec<Peer>,
    /// One primary server (nginx's `peers->single`): it is never taken out for failures,
    /// `max_fails` and `fail_timeout` are ignored, as nginx documents.
    single: bool,
}

impl Peers {
    /// An upstream's primary servers.
    pub fn new(peers: Vec<Peer>) -> Peers {
        let single = peers.len() == 1;
        Peers { peers, single }
    }

    /// An upstream's `backup` servers: failures count even for one.
    pub fn backup(peers: Vec<Peer>) -> Peers {
        Peers {
            peers,
            single: false,
        }
    }

    pub fn get(&self, i: usize) -> &Peer {
        &self.peers[i]
    }

    /// Active health checks' verdict on peer `i`.
    pub fn set_unhealthy(&mut self, i: usize, unhealthy: bool) {
        self.peers[i].unhealthy = unhealthy;
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    fn total_weight(&self) -> u32 {
        self.peers.iter().map(|p| p.weight).sum()
    }

    /// Smooth weighted round robin over the untried, usable peers; `None` when every peer
    /// is down, failing or tried ("no live upstreams").
    pub fn round_robin(&mut self, tried: &mut Tried, now: Instant) -> Option<usize> {
        if self.single {
            let p = &self.peers[0];
            if tried.has(0) || p.down || p.unhealthy || p.full() {
                return None;
            }
            tried.mark(0);
            return Some(0);
        }
        let mut best: Option<(usize, i64)> = None;
        let mut total = 0i64;
        for (i, p) in self.peers.iter_mut().enumerate() {
            if tried.has(i) || !p.usable(now) {
                continue;
            }
            p.current_weight += p.effective_weight;
            total += p.effective_weight;
            if p.effective_weight < i64::from(p.weight) {
                p.effective_weight += 1;
            }
            if best.is_none_or(|(_, w)| p.current_weight > w) {
                best = Some((i, p.current_weight));
            }
        }
        let (best, _) = best?;
        let p = &mut self.peers[best];
        p.current_weight -= total;
        p.chosen(now);
        tried.mark(best);
        Some(best)
    }

    /// nginx's `least_conn`: the usable, untried peer with the fewest requests for its
    /// weight (`conns / weight`, compared as `a.conns * b.weight < b.conns * a.weight`);
    /// among several equal, smooth weighted round robin over just those, from the first.
    /// The round-robin weights of the others are left as they are, as nginx leaves them.
    pub fn least_conn(&mut self, tried: &mut Tried, now: Instant) -> Option<usize> {
        if self.single {
            return self.round_robin(tried, now);
        }
        let load = |p: &Peer| (p.conns_now(), u64::from(p.weight));
        // `a` carries fewer requests per unit of weight than `b`, or as many.
        let fewer = |a: (usize, u64), b: (usize, u64)| (a.0 as u64 * b.1).cmp(&(b.0 as u64 * a.1));
        let mut best: Option<(usize, (usize, u64))> = None;
        let mut many = false;
        for (i, p) in self.peers.iter().enumerate() {
            if tried.has(i) || !p.usable(now) {
                continue;
            }
            let l = load(p);
            match best.map(|(_, b)| fewer(l, b)) {
                None | Some(std::cmp::Ordering::Less) => {
                    best = Some((i, l));
                    many = false;
                }
                Some(std::cmp::Ordering::Equal) => many = true,
                Some(std::cmp::Ordering::Greater) => {}
            }
        }
        let (mut chosen, least) = best?;
        let mut total = 0i64;
        if many {
            // The chosen peer's current weight, as it changes on the way.
            let mut chosen_weight = self.peers[chosen].current_weight;
            for (i, p) in self.peers.iter_mut().enumerate().skip(chosen) {
                if tried.has(i) || !p.usable(now) || fewer(load(p), least).is_ne() {
                    continue;
                }
                p.current_weight += p.effective_weight;
                total += p.effective_weight;
                if p.effective_weight < i64::from(p.weight) {
                    p.effective_weight += 1;
                }
                if i == chosen || p.current_weight > chosen_weight {
                    chosen = i;
                    chosen_weight = p.current_weight;
                }
            }
        }
        let p = &mut self.peers[chosen];
        p.current_weight -= total;
        p.chosen(now);
        tried.mark(chosen);
        Some(chosen)
    }

    /// nginx's ip_hash: the same /24 (or IPv6 address) gets the same peer while it is
    /// usable; otherwise rehash from the current value, and after 20 tries round robin.
    pub fn ip_hash(
        &mut self,
        state: &mut IpHash,
        tried: &mut Tried,
        now: Instant,
    ) -> Option<usize> {
        let total = self.total_weight();
        if state.tries > IP_HASH_TRIES || self.peers.len() < 2 || total == 0 {
            return self.round_robin(tried, now);
        }
        let mut hash = state.hash;
        loop {
            hash = ip_hash_step(hash, &state.addr);
            let mut w = hash % total;
            let mut i = 0;
            while w >= self.peers[i].weight {
                w -= self.peers[i].weight;
                i += 1;
            }
            if !tried.has(i) && self.peers[i].usable(now) {
                state.hash = hash;
                self.peers[i].chosen(now);
                tried.mark(i);
                return Some(i);
            }
            state.tries += 1;
            if state.tries > IP_HASH_TRIES {
                return self.round_robin(tried, now);
            }
        }
    }

    /// `hash $remote_addr consistent`: the first usable, untried server on the ring at or
    /// after crc32 of the client address; after 20 points, round robin.
    pub fn consistent(
        &mut self,
        ring: &Ring,
        key: &str,
        tried: &mut Tried,
        now: Instant,
    ) -> Option<usize> {
        let n = ring.points.len();
        if n == 0 || self.peers.len() < 2 {
            return self.round_robin(tried, now);
        }
        let start = ring.start(crc32fast::hash(key.as_bytes()));
        for step in 0..=RING_TRIES {
            let (_, i) = ring.points[(start + step) % n];
            if !tried.has(i) && self.peers[i].usable(now) {
                self.peers[i].chosen(now);
                tried.mark(i);
                return Some(i);
            }
        }
        self.round_robin(tried, now)
    }

    /// A request to peer `i` failed (error, timeout, invalid header, or a listed status).
    pub fn failed(&mut self, i: usize, now: Instant) {
        if self.single {
            return;
        }
        let p = &mut self.peers[i];
        p.fails += 1;
        p.accessed = Some(now);
        p.checked = Some(now);
        // max_fails=0 means "never count failures": nothing to take off.
        if let Some(step) = p.weight.checked_div(p.max_fails) {
            p.effective_weight -= i64::from(step);
        }
        p.effective_weight = p.effective_weight.max(0);
    }

    /// A request to peer `i` succeeded: a success after a probe clears its failures.
    pub fn succeeded(&mut self, i: usize) {
        let p = &mut self.peers[i];
        if p.accessed < p.checked {
            p.fails = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(weights: &[u32]) -> Peers {
        Peers::new(
            weights
                .iter()
                .map(|&w| Peer::new(w, 2, Duration::from_secs(10)))
                .collect(),
        )
    }

    fn rr_sequence(p: &mut Peers, n: usize, now: Instant) -> Vec<usize> {
        (0..n)
            .map(|_| p.round_robin(&mut Tried::default(), now).expect("a peer"))
            .collect()
    }

    #[test]
    fn smooth_weighted_round_robin_matches_nginx() {
        // nginx's documented sequence for weights 5, 1, 1: a a b a c a a.
        let mut p = peers(&[5, 1, 1]);
        assert_eq!(
            rr_sequence(&mut p, 7, Instant::now()),
            [0, 0, 1, 0, 2, 0, 0]
        );
        let mut even = peers(&[1, 1]);
        assert_eq!(rr_sequence(&mut even, 4, Instant::now()), [0, 1, 0, 1]);
    }

    #[test]
    fn ip_hash_steps_match_hand_computed_nginx_values() {
        // 192.168.1.x: key 192.168.1; from 89: 3978, 4441, 154 -> 154 after one step.
        let key = [192, 168, 1];
        assert_eq!(ip_hash_step(89, &key), 154);
        assert_eq!(ip_hash_step(154, &key), 5654);
        assert_eq!(ip_hash_step(5654, &key), 1196);
    }

    #[test]
    fn ip_hash_sticks_per_slash_24_and_rehashes_around_a_down_peer() {
        let now = Instant::now();
        let mut p = peers(&[1, 1]);
        let pick = |p: &mut Peers, ip: &str| {
            p.ip_hash(
                &mut IpHash::new(ip.parse().expect("ip")),
                &mut Tried::default(),
                now,
            )
        };
        // 154 % 2 = 0: the whole 192.168.1.0/24 goes to the first server.
        for last in [1, 7, 200, 254] {
            assert_eq!(pick(&mut p, &format!("192.168.1.{last}")), Some(0));
        }
        let a = pick(&mut p, "10.1.2.3");
        assert_eq!(pick(&mut p, "10.1.2.99"), a);
        // First server failing (max_fails=2): the same clients move, consistently.
        p.failed(0, now);
        p.failed(0, now);
        assert_eq!(pick(&mut p, "192.168.1.1"), Some(1));
        assert_eq!(pick(&mut p, "192.168.1.77"), Some(1));
        // IPv6: the whole address is the key.
        let v6 = pick(&mut p, "2001:db8::1");
        assert!(v6.is_some());
    }

    #[test]
    fn failures_disable_for_fail_timeout_then_one_probe() {
        let t0 = Instant::now();
        let mut p = peers(&[1, 1]);
        p.failed(0, t0);
        // One failure of max_fails=2: still eligible.
        assert!(p.get(0).usable(t0));
        p.failed(0, t0);
        assert!(!p.get(0).usable(t0 + Duration::from_secs(5)));
        let during: Vec<_> = rr_sequence(&mut p, 4, t0 + Duration::from_secs(5));
        assert_eq!(during, [1, 1, 1, 1]);
        // After fail_timeout the peer is probed by a real request; success clears it.
        let later = t0 + Duration::from_secs(11);
        assert!(p.get(0).usable(later));
        let mut tried = Tried::default();
        let mut seen = Vec::new();
        while let Some(i) = p.round_robin(&mut tried, later) {
            seen.push(i);
        }
        assert!(seen.contains(&0), "probe chosen: {seen:?}");
        p.succeeded(0);
        assert_eq!(p.get(0).fails(), 0);
    }

    #[test]
    fn every_peer_tried_at_most_once_then_none() {
        let now = Instant::now();
        let mut p = peers(&[3, 1, 2]);
        let mut tried = Tried::default();
        let mut got: Vec<_> = std::iter::from_fn(|| p.round_robin(&mut tried, now)).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2]);
        let mut state = IpHash::new("10.0.0.1".parse().expect("ip"));
        let mut tried = Tried::default();
        let mut got: Vec<_> =
            std::iter::from_fn(|| p.ip_hash(&mut state, &mut tried, now)).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2]);
    }

    #[test]
    fn consistent_hash_remaps_about_one_in_n_when_a_server_joins() {
        let now = Instant::now();
        let three = ["10.0.0.1:443", "10.0.0.2:443", "10.0.0.3:443"];
        let four = [
            "10.0.0.1:443",
            "10.0.0.2:443",
            "10.0.0.3:443",
            "10.0.0.4:443",
        ];
        let ring3 = Ring::new(three.iter().map(|a| (*a, 1)));
        let ring4 = Ring::new(four.iter().map(|a| (*a, 1)));
        assert_eq!(ring3.points.len(), 480);
        let (mut p3, mut p4) = (peers(&[1, 1, 1]), peers(&[1, 1, 1, 1]));
        let clients: Vec<String> = (0..4000u32)
            .map(|i| format!("172.{}.{}.{}", i % 7, i / 256 % 256, i % 256))
            .collect();
        let mut moved = 0;
        for c in &clients {
            let a = p3
                .consistent(&ring3, c, &mut Tried::default(), now)
                .expect("peer");
            let b = p4
                .consistent(&ring4, c, &mut Tried::default(), now)
                .expect("peer");
            if a != b {
                moved += 1;
                assert_eq!(b, 3, "a client that moves, moves to the new server");
            }
        }
        let share = f64::from(moved) / clients.len() as f64;
        assert!(
            (0.15..0.35).contains(&share),
            "{share} of clients moved, expected about 1/4"
        );
        // Stable for a given client, and it avoids a down server.
        let c = "192.0.2.10";
        let first = p3
            .consistent(&ring3, c, &mut Tried::default(), now)
            .expect("peer");
        assert_eq!(
            p3.consistent(&ring3, c, &mut Tried::default(), now),
            Some(first)
        );
        p3.failed(first, now);
        p3.failed(first, now);
        let other = p3
            .consistent(&ring3, c, &mut Tried::default(), now)
            .expect("peer");
        assert_ne!(other, first);
    }

    #[test]
    fn a_single_server_is_never_taken_out_for_failures() {
        let now = Instant::now();
        let mut one = peers(&[1]);
        for _ in 0..5 {
            let i = one
                .round_robin(&mut Tried::default(), now)
                .expect("the one server");
            one.failed(i, now);
        }
        assert_eq!(one.get(0).state(now), "up");
        let mut tried = Tried::default();
        assert_eq!(one.round_robin(&mut tried, now), Some(0));
        assert_eq!(one.round_robin(&mut tried, now), None, "once per request");
        // `down` and active checks still take it out; a backup list counts failures.
        one.set_unhealthy(0, true);
        assert_eq!(one.round_robin(&mut Tried::default(), now), None);
        let mut backup = Peers::backup(vec![Peer::new(1, 1, Duration::from_secs(10))]);
        let i = backup
            .round_robin(&mut Tried::default(), now)
            .expect("a peer");
        backup.failed(i, now);
        assert_eq!(backup.round_robin(&mut Tried::default(), now), None);
    }

    #[test]
    fn all_down_is_none() {
        let now = Instant::now();
        let mut p = peers(&[1, 1]);
        for i in 0..2 {
            p.failed(i, now);
            p.failed(i, now);
        }
        assert_eq!(p.round_robin(&mut Tried::default(), now), None);
        let mut state = IpHash::new("10.0.0.1".parse().expect("ip"));
        assert_eq!(p.ip_hash(&mut state, &mut Tried::default(), now), None);
        assert_eq!(p.least_conn(&mut Tried::default(), now), None);
    }

    /// Each choice holds its peer (a request still in flight), as a slow node would.
    fn least_conn_holding(p: &mut Peers, n: usize, now: Instant) -> Vec<usize> {
        (0..n)
            .map(|_| {
                let i = p.least_conn(&mut Tried::default(), now).expect("a peer");
                p.get(i).conns().fetch_add(1, Ordering::Relaxed);
                i
            })
            .collect()
    }

    #[test]
    fn least_conn_counts_requests_per_weight_and_breaks_ties_round_robin() {
        let now = Instant::now();
        // Weights 2, 1, 1, every choice kept. By hand, nginx's code: all idle, a tie of
        // three (current weights 2, 1, 1: the first); then 1/2, 0, 0: a tie of the last two
        // (the second); then only the third has none; then the first, 1/2 against 1 and 1;
        // then 2/2, 1, 1: a tie of three again, and the current weights 0, 1, 3 pick the
        // third.
        let mut p = peers(&[2, 1, 1]);
        assert_eq!(least_conn_holding(&mut p, 5, now), [0, 1, 2, 0, 2]);
        // With nothing held it is round robin.
        let mut idle = peers(&[5, 1, 1]);
        let picks: Vec<usize> = (0..7)
            .map(|_| idle.least_conn(&mut Tried::default(), now).expect("a peer"))
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
        // A finished request gives its peer back: the one now idle is chosen.
        let mut p = peers(&[1, 1]);
        assert_eq!(least_conn_holding(&mut p, 2, now), [0, 1]);
        p.get(1).conns().fetch_sub(1, Ordering::Relaxed);
        assert_eq!(least_conn_holding(&mut p, 1, now), [1]);
        // Tried and failing peers are passed over even when they carry the least.
        let mut tried = Tried::default();
        tried.mark(0);
        let mut p = peers(&[1, 1, 1]);
        p.get(2).conns().fetch_add(5, Ordering::Relaxed);
        assert_eq!(p.least_conn(&mut tried, now), Some(1));
        assert_eq!(p.least_conn(&mut tried, now), Some(2));
        assert_eq!(p.least_conn(&mut tried, now), None);
        let mut p = peers(&[1, 1]);
        p.failed(0, now);
        p.failed(0, now);
        assert_eq!(least_conn_holding(&mut p, 3, now), [1, 1, 1]);
    }

    #[test]
    fn max_conns_passes_over_a_full_peer_for_every_method() {
        let now = Instant::now();
        let mut p = peers(&[1, 1]);
        p.peers[0].max_conns = 1;
        p.get(0).conns().fetch_add(1, Ordering::Relaxed);
        assert_eq!(p.get(0).state(now), "full");
        assert_eq!(rr_sequence(&mut p, 3, now), [1, 1, 1]);
        assert_eq!(least_conn_holding(&mut p, 2, now), [1, 1]);
        for ip in ["10.0.0.1", "10.0.1.1", "10.0.2.1", "10.0.3.1"] {
            let mut state = IpHash::new(ip.parse().expect("ip"));
            assert_eq!(p.ip_hash(&mut state, &mut Tried::default(), now), Some(1));
        }
        let ring = Ring::new([("a:1", 1), ("b:1", 1)]);
        for key in ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"] {
            assert_eq!(
                p.consistent(&ring, key, &mut Tried::default(), now),
                Some(1)
            );
        }
        // Below the limit again: chosen again.
        p.get(0).conns().fetch_sub(1, Ordering::Relaxed);
        assert_eq!(p.get(0).state(now), "up");
        assert_eq!(rr_sequence(&mut p, 2, now), [0, 1]);
        // A single server at its limit: nothing to choose (nginx's "no live upstreams").
        let mut single = Peers::new(vec![Peer::new(1, 1, Duration::from_secs(10))]);
        single.peers[0].max_conns = 2;
        single.get(0).conns().fetch_add(2, Ordering::Relaxed);
        assert_eq!(single.round_robin(&mut Tried::default(), now), None);
        assert_eq!(single.least_conn(&mut Tried::default(), now), None);
    }
}
