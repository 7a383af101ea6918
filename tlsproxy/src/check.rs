//! `gluu-tunnel check`: the guide's "redis-cli -a PASSWORD, PING, you should get a PONG" as
//! one command. It talks Redis (AUTH, PING, with the `redis` crate) through a client-mode
//! service of a running tunnel, and when the tunnel closes on it, it handshakes with the
//! far side itself to tell a refused certificate from a Redis that is down.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::Tunnel;
use crate::config::{Config, Mode};
use crate::service::{Service, Tls};

/// A successful check.
#[derive(Debug)]
pub struct Pong {
    pub service: String,
    pub via: SocketAddr,
    pub round_trip: Duration,
}

/// A failed check: what an admin should read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);

/// Picks the service to check: the named one, or the only (first) client-mode one.
fn pick<'a>(
    config: &'a Config,
    name: Option<&str>,
) -> Result<&'a crate::config::ServiceConfig, CheckFailed> {
    match name {
        Some(n) => config
            .service(n)
            .ok_or_else(|| CheckFailed(format!("no service [{n}] in {}", config.path.display()))),
        None => config
            .services
            .iter()
            .find(|s| s.mode == Mode::Client)
            .ok_or_else(|| {
                CheckFailed(format!(
                    "{} has no client-mode service (`client = yes`): `check` talks to Redis \
                     through a node-side tunnel",
                    config.path.display()
                ))
            }),
    }
}

/// Where to connect to reach a service listening on `accept` (a wildcard means loopback).
fn local_address(accept: SocketAddr) -> SocketAddr {
    let ip = match accept.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, accept.port())
}

fn is_closed(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

/// Runs AUTH (when a password is given) and PING through the service.
pub fn run(
    config: &Config,
    service: Option<&str>,
    password: Option<&str>,
    limit: Duration,
) -> Result<Pong, CheckFailed> {
    let s = pick(config, service)?;
    let via = local_address(s.accept);
    let client = redis::Client::open((via.ip().to_string(), via.port()))
        .map_err(|e| CheckFailed(format!("bad address {via}: {e}")))?;
    // The redis crate sends its first command while connecting, so a tunnel that closes
    // on us already shows here.
    let mut con = client.get_connection_with_timeout(limit).map_err(|e| {
        if e.is_connection_refusal() {
            CheckFailed(format!(
                "refused: nothing listens on {via} ([{}]); is gluu-tunnel running with {}?",
                s.name,
                config.path.display()
            ))
        } else if is_closed(&e) {
            CheckFailed(diagnose_closed(config, &s.name, &e))
        } else {
            CheckFailed(format!("cannot connect to {via} ([{}]): {e}", s.name))
        }
    })?;
    let closed = |e: &redis::RedisError| -> CheckFailed {
        if is_closed(e) {
            CheckFailed(diagnose_closed(config, &s.name, e))
        } else {
            CheckFailed(format!("Redis answered with an error: {e}"))
        }
    };
    let _ = con.set_read_timeout(Some(limit));
    let _ = con.set_write_timeout(Some(limit));
    if let Some(pw) = password {
        let auth: redis::RedisResult<String> = redis::cmd("AUTH").arg(pw).query(&mut con);
        if let Err(e) = auth {
            if is_closed(&e) {
                return Err(closed(&e));
            }
            return Err(CheckFailed(format!(
                "auth failed: Redis refused the password: {e}"
            )));
        }
    }
    let start = Instant::now();
    let pong: redis::RedisResult<String> = redis::cmd("PING").query(&mut con);
    let round_trip = start.elapsed();
    match pong {
        Ok(p) if p == "PONG" => Ok(Pong {
            service: s.name.clone(),
            via,
            round_trip,
        }),
        Ok(other) => Err(CheckFailed(format!("PING answered `{other}`, not PONG"))),
        Err(e) if e.code() == Some("NOAUTH") => Err(CheckFailed(
            "auth failed: Redis requires a password; give --password-file (or set REDISCLI_AUTH)"
                .to_owned(),
        )),
        Err(e) => Err(closed(&e)),
    }
}

/// The tunnel closed on us. Handshake with its targets directly, with the service's own TLS
/// settings, to say whether TLS was rejected or Redis behind the far side is the problem.
fn diagnose_closed(config: &Config, name: &str, err: &redis::RedisError) -> String {
    let head = format!("the tunnel closed the connection ({err})");
    let tunnel = match Tunnel::prepare(config.clone()) {
        Ok(t) => t,
        Err(e) => return format!("{head}; and the configuration does not load: {e}"),
    };
    let Some(svc) = tunnel.services().iter().find(|s| s.name() == name) else {
        return head;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return format!("{head}; cannot start a probe: {e}"),
    };
    runtime.block_on(probe(svc, head))
}

async fn probe(svc: &Service, head: String) -> String {
    let Tls::Client(connector) = &svc.tls else {
        return format!(
            "{head}; [{}] is not a client-mode service: it expects TLS from its clients, \
             not Redis commands (does it lack `client = yes`?)",
            svc.name()
        );
    };
    let mut notes = Vec::new();
    for target in &svc.config.connect {
        let tcp = match tokio::time::timeout(
            svc.config.timeouts.connect,
            TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                notes.push(format!("refused: target {target} cannot be reached: {e}"));
                continue;
            }
            Err(_) => {
                notes.push(format!("target {target} did not answer"));
                continue;
            }
        };
        let name = match svc.server_name(target) {
            Ok(n) => n,
            Err(e) => {
                notes.push(e);
                continue;
            }
        };
        match tokio::time::timeout(svc.config.timeouts.handshake, connector.connect(name, tcp))
            .await
        {
            // TLS 1.3 servers refuse a client certificate after the client's side of the
            // handshake is done: listen briefly for that alert (or for the close that means
            // the far side could not reach Redis).
            Ok(Ok(mut tls)) => {
                let mut byte = [0u8; 1];
                let listen = Duration::from_millis(500);
                notes.push(
                    match tokio::time::timeout(listen, tls.read(&mut byte)).await {
                        Ok(Err(e)) if e.kind() != std::io::ErrorKind::UnexpectedEof => format!(
                            "TLS rejected by {target} ({}): {}",
                            gluu_common::verify::failure_reason(&e),
                            gluu_common::verify::describe_failure(&e)
                        ),
                        Ok(Ok(0) | Err(_)) => format!(
                            "TLS with {target} works, but the far side closed right after: Redis \
                         behind it is probably down or refusing (see the server-side tunnel's log)"
                        ),
                        _ => format!(
                            "TLS with {target} works and the far side kept the connection open; \
                         look at the server-side tunnel's and Redis' logs"
                        ),
                    },
                );
            }
            Ok(Err(e)) => notes.push(format!(
                "TLS rejected by {target} ({}): {}",
                gluu_common::verify::failure_reason(&e),
                gluu_common::verify::describe_failure(&e)
            )),
            Err(_) => notes.push(format!("TLS handshake with {target} timed out")),
        }
    }
    format!("{head}; {}", notes.join("; "))
}
