//! nginx's `limit_req` and `limit_conn` at request time.
//!
//! `limit_req` (`ngx_http_limit_req_module`): a leaky bucket per
//! client address and zone. Each client's state is its "excess", in thousandths of a
//! request, which drains at the zone's rate and grows by one per request; a request that
//! finds more than `burst` is refused (503 unless `limit_req_status`), one that finds more
//! than `delay` waits until the excess above `delay` has drained, the rest go at once.
//! Several `limit_req` lines all apply: a refusal by any refuses, the longest delay
//! delays. A zone remembers at most its size's worth of clients, forgetting the least
//! recently seen first, as nginx does when its shared memory is full; a zone keeps its
//! states across reloads while its name and size stay.
//!
//! `limit_conn` (`ngx_http_limit_conn_module`): how many requests of one client are being
//! served at once (each HTTP/2 stream counts), held from the moment the request passes
//! until its response has been sent; past the line's number a request is refused. A full
//! zone refuses a new client, as nginx's does.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::config::limit::{LimitConn, LimitReq, ZoneDef};
use crate::upstream::lock;

/// nginx forgets a client's state once it has drained and is this old (`expire`).
const FORGET_AFTER_MS: u64 = 60_000;

/// One `limit_req_zone`'s or `limit_conn_zone`'s memory of clients.
#[derive(Debug)]
pub struct Zone {
    pub name: String,
    capacity: NonZeroUsize,
    memory: Memory,
    /// Times are milliseconds since this.
    epoch: Instant,
}

#[derive(Debug)]
enum Memory {
    /// `limit_req_zone`: each client's excess.
    Req(Mutex<LruCache<IpAddr, State>>),
    /// `limit_conn_zone`: each client's requests being served.
    Conn(Mutex<HashMap<IpAddr, u32>>),
}

/// A `limit_req_zone`'s clients, locked.
type States<'a> = MutexGuard<'a, LruCache<IpAddr, State>>;

#[derive(Clone, Copy, Debug)]
struct State {
    /// Requests beyond the rate, in thousandths.
    excess: u64,
    /// When `excess` was last set, in ms since the zone's epoch.
    last: u64,
}

impl Zone {
    pub fn new(def: &ZoneDef) -> Arc<Zone> {
        Arc::new(Zone {
            name: def.name.clone(),
            capacity: NonZeroUsize::new(def.states).unwrap_or(NonZeroUsize::MIN),
            memory: match def.rate {
                Some(_) => Memory::Req(Mutex::new(LruCache::unbounded())),
                None => Memory::Conn(Mutex::default()),
            },
            epoch: Instant::now(),
        })
    }

    /// Whether this zone can serve for `def` after a reload (same name, size and kind).
    pub fn fits(&self, def: &ZoneDef) -> bool {
        let same_kind = matches!(
            (&self.memory, def.rate),
            (Memory::Req(_), Some(_)) | (Memory::Conn(_), None)
        );
        self.name == def.name && self.capacity.get() == def.states && same_kind
    }

    fn states(&self) -> Option<&Mutex<LruCache<IpAddr, State>>> {
        match &self.memory {
            Memory::Req(states) => Some(states),
            Memory::Conn(_) => None,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// One `limit_req` line with its zone, made ready.
#[derive(Debug)]
pub struct Limit {
    pub zone: Arc<Zone>,
    /// The zone's rate, in thousandths of a request per second.
    rate: u64,
    /// In thousandths.
    burst: u64,
    /// In thousandths; `u64::MAX` for `nodelay`.
    delay: u64,
}

impl Limit {
    /// `rate`: the zone's, in thousandths of a request per second.
    pub fn new(line: &LimitReq, rate: u64, zone: Arc<Zone>) -> Limit {
        Limit {
            zone,
            rate,
            burst: line.burst.saturating_mul(1000),
            delay: line.delay.map_or(u64::MAX, |d| d.saturating_mul(1000)),
        }
    }

    /// The zone's states, locked; the time; and the excess a request from `client` now
    /// would leave. `None` for a zone of the other kind (`Config` rules it out).
    fn look(&self, client: &IpAddr) -> Option<(States<'_>, u64, u64)> {
        let now = self.zone.now();
        // Seen: the least recently seen go first when the zone is full (a refused client
        // too, as nginx bumps a node at lookup).
        let mut states = lock(self.zone.states()?);
        let excess = states.get(client).map_or(0, |s| {
            let drained = self.rate.saturating_mul(now.saturating_sub(s.last)) / 1000;
            (s.excess + 1000).saturating_sub(drained)
        });
        Some((states, now, excess))
    }
}

/// What the limits say of one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    Pass,
    /// Wait this long first; `excess` (thousandths) in `zone` said so.
    Delay {
        wait: Duration,
        excess: u64,
        zone: &'a str,
    },
    /// Refused: `excess` (thousandths) in `zone` is beyond its burst.
    Reject {
        excess: u64,
        zone: &'a str,
    },
}

/// Applies `limits` to a request from `client`, counting it in every zone unless refused.
pub fn check(limits: &[Limit], client: IpAddr) -> Verdict<'_> {
    let client = client.to_canonical();
    for l in limits {
        let Some((_states, _, excess)) = l.look(&client) else {
            continue;
        };
        if excess > l.burst {
            return Verdict::Reject {
                excess,
                zone: &l.zone.name,
            };
        }
    }
    let mut verdict = Verdict::Pass;
    let mut longest = Duration::ZERO;
    for l in limits {
        let Some((mut states, now, excess)) = l.look(&client) else {
            continue;
        };
        match states.get_mut(&client) {
            Some(s) => *s = State { excess, last: now },
            None => {
                forget_old(&mut states, l, now);
                states.push(client, State { excess, last: now });
            }
        }
        drop(states);
        if excess > l.delay {
            let wait = Duration::from_millis((excess - l.delay).saturating_mul(1000) / l.rate);
            if wait > longest {
                longest = wait;
                verdict = Verdict::Delay {
                    wait,
                    excess,
                    zone: &l.zone.name,
                };
            }
        }
    }
    verdict
}

/// A block's `limit_req` and `limit_conn` lines, made ready.
#[derive(Debug, Default)]
pub struct Applied {
    pub req: Vec<Limit>,
    pub conn: Vec<ConnLimit>,
}

/// One `limit_conn` line with its zone, made ready.
#[derive(Debug)]
pub struct ConnLimit {
    pub zone: Arc<Zone>,
    max: u32,
}

impl ConnLimit {
    pub fn new(line: &LimitConn, zone: Arc<Zone>) -> ConnLimit {
        ConnLimit {
            zone,
            max: line.max,
        }
    }
}

/// A request counted in a `limit_conn` zone until this is dropped.
#[derive(Debug)]
pub struct Held {
    zone: Arc<Zone>,
    client: IpAddr,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Memory::Conn(counts) = &self.zone.memory {
            let mut counts = lock(counts);
            if let Some(n) = counts.get_mut(&self.client) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&self.client);
                }
            }
        }
    }
}

/// Counts a request from `client` in every zone of `limits`: what it holds, and the zone
/// it is one too many for (or that has no room for another client), if any. Counted
/// anyway (nginx's `limit_conn_dry_run` accounts as usual); a caller that refuses the
/// request drops what it holds.
pub fn hold(limits: &[ConnLimit], client: IpAddr) -> (Vec<Held>, Option<&str>) {
    let client = client.to_canonical();
    let mut held = Vec::with_capacity(limits.len());
    let mut over = None;
    for l in limits {
        let Memory::Conn(counts) = &l.zone.memory else {
            continue;
        };
        let mut counts = lock(counts);
        if counts.len() >= l.zone.capacity.get() && !counts.contains_key(&client) {
            over = over.or(Some(l.zone.name.as_str()));
            continue;
        }
        let n = counts.entry(client).or_insert(0);
        if *n >= l.max {
            over = over.or(Some(l.zone.name.as_str()));
        }
        *n += 1;
        held.push(Held {
            zone: l.zone.clone(),
            client,
        });
    }
    (held, over)
}

/// Before a new client's state goes in: up to two of the least recently seen that have
/// drained and are a minute old are forgotten, and the least recently seen whatever its
/// state when the zone is full (nginx's `expire`).
fn forget_old(states: &mut LruCache<IpAddr, State>, l: &Limit, now: u64) {
    for _ in 0..2 {
        let Some((_, s)) = states.peek_lru() else {
            return;
        };
        let age = now.saturating_sub(s.last);
        if age < FORGET_AFTER_MS || s.excess > l.rate.saturating_mul(age) / 1000 {
            break;
        }
        states.pop_lru();
    }
    while states.len() >= l.zone.capacity.get() {
        states.pop_lru();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::grammar::test_place;

    fn zone(rate: u64, states: usize) -> ZoneDef {
        ZoneDef {
            name: "one".to_owned(),
            key: "$binary_remote_addr".to_owned(),
            states,
            rate: Some(rate),
            place: test_place(1),
        }
    }

    fn limit(def: &ZoneDef, zone: &Arc<Zone>, burst: u64, delay: Option<u64>) -> Limit {
        let line = LimitReq {
            zone: def.name.clone(),
            burst,
            delay,
            place: def.place.clone(),
        };
        Limit::new(&line, def.rate.expect("a limit_req_zone"), zone.clone())
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    /// nginx's arithmetic: at 1 r/s with burst=2 the first request finds no excess, the
    /// next two are let through (delayed by 1 s and 2 s without `nodelay`, at once with
    /// it), the fourth is refused; another client is not affected.
    #[test]
    fn a_burst_is_let_through_delayed_or_not_and_then_refused() {
        let def = zone(1000, 100);
        let z = Zone::new(&def);
        let limits = [limit(&def, &z, 2, Some(0))];
        assert_eq!(check(&limits, A), Verdict::Pass);
        let waits: Vec<_> = (0..2)
            .map(|_| match check(&limits, A) {
                Verdict::Delay { wait, .. } => wait.as_millis() / 100,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(waits, [10, 20], "about 1 s then 2 s");
        assert!(matches!(
            check(&limits, A),
            Verdict::Reject {
                excess: 3000,
                zone: "one"
            }
        ));
        assert_eq!(check(&limits, B), Verdict::Pass);

        let z = Zone::new(&def);
        let nodelay = [limit(&def, &z, 2, None)];
        let got: Vec<_> = (0..4).map(|_| check(&nodelay, A)).collect();
        assert_eq!(&got[..3], [Verdict::Pass, Verdict::Pass, Verdict::Pass]);
        assert!(matches!(got[3], Verdict::Reject { .. }));

        // delay=1: the first excess request goes at once, the second waits.
        let z = Zone::new(&def);
        let two_stage = [limit(&def, &z, 2, Some(1))];
        assert_eq!(check(&two_stage, A), Verdict::Pass);
        assert_eq!(check(&two_stage, A), Verdict::Pass);
        assert!(matches!(check(&two_stage, A), Verdict::Delay { .. }));
    }

    /// The excess drains at the rate: after a refusal, the client gets in again once a
    /// request's worth has drained.
    #[test]
    fn the_excess_drains_at_the_rate() {
        let def = zone(20_000, 100); // 20 r/s: one request drains in 50 ms.
        let z = Zone::new(&def);
        let limits = [limit(&def, &z, 1, None)];
        assert_eq!(check(&limits, A), Verdict::Pass);
        let start = Instant::now();
        assert_eq!(check(&limits, A), Verdict::Pass);
        assert!(matches!(check(&limits, A), Verdict::Reject { .. }));
        while matches!(check(&limits, A), Verdict::Reject { .. }) {
            assert!(start.elapsed() < Duration::from_secs(5), "never drained");
            std::thread::sleep(Duration::from_millis(5));
        }
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(50), "drained in {waited:?}");
    }

    /// A full zone forgets the least recently seen client; several limits all apply.
    #[test]
    fn a_full_zone_forgets_the_oldest_and_every_limit_applies() {
        let def = zone(1000, 2);
        let z = Zone::new(&def);
        let limits = [limit(&def, &z, 1, None)];
        let c = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3));
        for ip in [A, A, B, c] {
            assert_eq!(check(&limits, ip), Verdict::Pass, "{ip}");
        }
        assert_eq!(lock(z.states().expect("a limit_req_zone")).len(), 2);
        // A was forgotten: its excess starts again from nothing.
        assert_eq!(check(&limits, A), Verdict::Pass);
        assert_eq!(check(&limits, A), Verdict::Pass);

        let loose_def = zone(1000, 100);
        let mut tight_def = zone(1000, 100);
        tight_def.name = "tight".to_owned();
        let (loose, tight) = (Zone::new(&loose_def), Zone::new(&tight_def));
        let both = [
            limit(&loose_def, &loose, 5, None),
            limit(&tight_def, &tight, 1, None),
        ];
        assert_eq!(check(&both, B), Verdict::Pass);
        assert_eq!(check(&both, B), Verdict::Pass);
        assert!(matches!(
            check(&both, B),
            Verdict::Reject { zone: "tight", .. }
        ));
    }

    /// `limit_conn`: a client holds at most `max` requests at once; a request that would be
    /// one too many is named (and counted, as nginx's dry run counts it), and dropping what
    /// a request holds makes room; a full zone has no room for a new client.
    #[test]
    fn a_client_holds_at_most_its_number_of_requests() {
        let mut def = zone(1000, 2);
        def.rate = None;
        def.name = "addr".to_owned();
        let z = Zone::new(&def);
        let line = LimitConn {
            zone: "addr".to_owned(),
            max: 2,
            place: def.place.clone(),
        };
        let limits = [ConnLimit::new(&line, z.clone())];
        let (first, over) = hold(&limits, A);
        assert!(over.is_none() && first.len() == 1);
        let (second, over) = hold(&limits, A);
        assert!(over.is_none());
        let (third, over) = hold(&limits, A);
        assert_eq!(over, Some("addr"), "one too many");
        drop(third);
        drop(second);
        let (again, over) = hold(&limits, A);
        assert!(over.is_none(), "room again once one ended");
        let (_b, over) = hold(&limits, B);
        assert!(over.is_none());
        let c = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3));
        let (none, over) = hold(&limits, c);
        assert_eq!(
            (none.len(), over),
            (0, Some("addr")),
            "the zone holds two clients"
        );
        drop((first, again));
        let Memory::Conn(counts) = &z.memory else {
            panic!("a limit_conn_zone");
        };
        assert_eq!(
            lock(counts).get(&A),
            None,
            "a client with nothing held is forgotten"
        );
    }
}
