//! One tunneled connection, from accept to close.
//!
//! Server mode (TLS in): sniff the first byte, so that plaintext Redis arriving where TLS
//! is expected is reported as what it is (usually a node-side service missing
//! `client = yes`); handshake under `TIMEOUTbusy`; only then connect the target, as stunnel
//! does. Client mode (plaintext in): connect the target first, handshake, and refuse an
//! application that itself starts with a TLS ClientHello. Then relay both directions with
//! per-direction half-close, idle and close timeouts, counting bytes as they pass.

use std::net::SocketAddr;
use std::time::Duration;

use gluu_common::relay::{self, End};
use gluu_common::verify::{describe_failure, failure_reason};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::config::Target;
use crate::service::{Service, Tls};

/// First byte of a TLS record carrying a handshake message (the ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;

/// Sets what both legs of every connection get: no Nagle delay (Redis is request/response
/// with small frames) and TCP keep-alive, so a vanished peer is noticed.
pub fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    let _ = sock.set_tcp_keepalive(&keepalive);
}

/// Serves one accepted connection to its end.
pub async fn handle(svc: &Service, client: TcpStream, peer: SocketAddr, stop: CancellationToken) {
    tune(&client);
    svc.metrics.accepted.inc();
    svc.metrics.active.inc();
    match &svc.tls {
        Tls::Server(acceptor) => server_mode(svc, acceptor, client, peer, stop).await,
        Tls::Client(connector) => client_mode(svc, connector, client, peer, stop).await,
    }
    svc.metrics.active.dec();
}

/// What the first bytes of a non-TLS stream look like, for the log.
fn describe_plaintext(bytes: &[u8]) -> &'static str {
    match bytes.first() {
        Some(b'*' | b'+' | b'-' | b'$' | b':') => "the Redis protocol (RESP)",
        Some(b) if b.is_ascii_alphabetic() => "plaintext commands (Redis inline protocol or HTTP)",
        _ => "bytes that are neither TLS nor text",
    }
}

async fn server_mode(
    svc: &Service,
    acceptor: &tokio_rustls::TlsAcceptor,
    client: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    let name = svc.name();
    let deadline = Instant::now() + svc.config.timeouts.handshake;
    let mut first = [0u8; 8];
    match timeout_at(deadline, client.peek(&mut first)).await {
        Err(_) => {
            svc.metrics.handshake_failed("timeout");
            tracing::info!(
                "no TLS ClientHello from {peer} within {:?}; closed",
                svc.config.timeouts.handshake
            );
            return;
        }
        Ok(Ok(0)) => {
            tracing::debug!("{peer} closed before sending anything");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!("{peer}: {e}");
            return;
        }
        Ok(Ok(n)) if first[0] != TLS_HANDSHAKE => {
            svc.metrics.handshake_failed("plaintext");
            tracing::warn!(
                "[{name}] plaintext arrived from {peer} where TLS was expected ({}): nothing \
                 was forwarded. If {peer} runs stunnel or gluu-tunnel (a node's \
                 redis-client.conf), its service is probably missing `client = yes`; if it is \
                 an application, point it at the node's plaintext tunnel port instead",
                describe_plaintext(&first[..n])
            );
            return;
        }
        Ok(Ok(_)) => {}
    }
    let handshake = acceptor.accept(client);
    let Some(tls) =
        finish_handshake(svc, deadline, handshake, &peer, "closed, nothing forwarded").await
    else {
        return;
    };
    svc.metrics.handshake_done(tls.get_ref().1.handshake_kind());
    let mut tls = tls;
    let Some((upstream, target)) = connect_target(svc).await else {
        tracing::warn!("[{name}] closing {peer}: no target reachable");
        // A clean TLS close (close_notify), so the client sees an orderly end.
        let _ = timeout(svc.config.timeouts.handshake, tls.shutdown()).await;
        return;
    };
    tracing::debug!("[{name}] {peer} -> {target}");
    relay(svc, tls, upstream, stop).await;
}

async fn client_mode(
    svc: &Service,
    connector: &tokio_rustls::TlsConnector,
    mut client: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    let name = svc.name();
    let Some((upstream, target)) = connect_target(svc).await else {
        tracing::warn!("[{name}] closing {peer}: no target reachable");
        return;
    };
    let server_name = match svc.server_name(&target) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("[{name}] cannot use {e} as a TLS server name; set `sni`");
            return;
        }
    };
    let deadline = Instant::now() + svc.config.timeouts.handshake;
    let handshake = connector.connect(server_name, upstream);
    let Some(mut tls) = finish_handshake(
        svc,
        deadline,
        handshake,
        &target,
        &format!("closing {peer}"),
    )
    .await
    else {
        return;
    };
    // Whoever speaks first: if it is the application and it starts a TLS handshake of its
    // own, refuse rather than tunnel TLS inside TLS to a plaintext server. The server has
    // spoken only once application data arrives: a TLS 1.3 server sends its session tickets
    // right after the handshake, and reading the stream consumes them without a byte.
    let mut first = [0u8; 1];
    let mut early = [0u8; 1024];
    let spoke = tokio::select! {
        biased;
        r = client.peek(&mut first) => Spoke::App(r),
        r = tls.read(&mut early) => Spoke::Server(r),
        _ = tokio::time::sleep(svc.config.timeouts.idle) => {
            tracing::info!(
                "[{name}] closing {peer}: neither it nor {target} said anything for {:?} \
                 (TIMEOUTidle)",
                svc.config.timeouts.idle
            );
            return;
        }
        _ = stop.cancelled() => return,
    };
    match spoke {
        Spoke::App(Ok(n)) if n >= 1 && first[0] == TLS_HANDSHAKE => {
            svc.metrics.handshake_failed("tls_on_plaintext_port");
            tracing::warn!(
                "[{name}] a TLS ClientHello arrived from {peer} on plaintext port {} (`client = \
                 yes`): the application already speaks TLS; point it at a TLS port or turn \
                 TLS off in the application. Nothing was forwarded",
                client.local_addr().unwrap_or(svc.config.accept)
            );
            return;
        }
        // Data, an end or an error from the application: the relay deals with all three.
        Spoke::App(_) => {}
        Spoke::Server(Ok(0)) => {
            tracing::debug!("{target} closed before sending anything; closing {peer}");
            return;
        }
        Spoke::Server(Ok(n)) => {
            match timeout(svc.config.timeouts.idle, client.write_all(&early[..n])).await {
                Ok(Ok(())) => svc.metrics.to_client.inc_by(n as u64),
                Ok(Err(e)) => {
                    tracing::debug!("{peer}: {e}");
                    return;
                }
                Err(_) => {
                    tracing::info!(
                        "[{name}] closing {peer}: it read nothing for {:?} (TIMEOUTidle)",
                        svc.config.timeouts.idle
                    );
                    return;
                }
            };
        }
        Spoke::Server(Err(e)) => {
            report_tls_error(svc, &e);
            return;
        }
    }
    let session = tls.get_ref().1;
    svc.metrics.handshake_done(session.handshake_kind());
    tracing::debug!(
        "[{name}] {peer} -> {target} ({:?}, {:?} handshake)",
        session.protocol_version(),
        session.handshake_kind()
    );
    relay(svc, client, tls, stop).await;
}

/// Completes a TLS handshake by `deadline`; a failure is counted by reason and logged with
/// the other end's address and what became of the connection.
async fn finish_handshake<T>(
    svc: &Service,
    deadline: Instant,
    handshake: impl std::future::Future<Output = std::io::Result<T>>,
    with: &(dyn std::fmt::Display + Sync),
    then: &str,
) -> Option<T> {
    let name = svc.name();
    match timeout_at(deadline, handshake).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            let reason = failure_reason(&e);
            svc.metrics.handshake_failed(reason);
            tracing::warn!(
                "[{name}] TLS handshake with {with} failed ({reason}): {}; {then}",
                describe_failure(&e)
            );
            None
        }
        Err(_) => {
            svc.metrics.handshake_failed("timeout");
            tracing::warn!(
                "[{name}] TLS handshake with {with} did not finish within {:?}; {then}",
                svc.config.timeouts.handshake
            );
            None
        }
    }
}

/// Tries the service's targets in failover order, each under `TIMEOUTconnect`.
async fn connect_target(svc: &Service) -> Option<(TcpStream, Target)> {
    for target in svc.targets() {
        let attempt = timeout(
            svc.config.timeouts.connect,
            TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await;
        let why = match attempt {
            Ok(Ok(stream)) => {
                tune(&stream);
                return Some((stream, target.clone()));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", svc.config.timeouts.connect),
        };
        svc.metrics.target_failed(target);
        tracing::warn!("[{}] cannot connect to target {target}: {why}", svc.name());
    }
    None
}

/// Relays both directions (`client` is the accepted side, `target` the connected one) until
/// both have ended, a timeout fires, or `stop` (the end of the shutdown grace period) cuts it.
async fn relay<C, T>(svc: &Service, client: C, target: T, stop: CancellationToken)
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let timeouts = svc.config.timeouts;
    let relayed = relay::relay(
        client,
        target,
        relay::Timeouts {
            idle: timeouts.idle,
            close: timeouts.close,
        },
        stop.cancelled(),
        [Some(&svc.metrics.to_target), Some(&svc.metrics.to_client)],
    )
    .await;
    let (to_target, to_client) = (relayed.from_a, relayed.from_b);
    match relayed.end {
        End::Done => {
            tracing::debug!("closed: {to_target} bytes to target, {to_client} to client")
        }
        End::Failed(e) => report_tls_error(svc, &e),
        End::Idle => tracing::info!(
            "[{}] closing a connection idle for {:?} (TIMEOUTidle)",
            svc.name(),
            timeouts.idle
        ),
        End::CloseTimeout => tracing::debug!(
            "closing: half-closed for {:?} (TIMEOUTclose)",
            timeouts.close
        ),
        End::Stopped => tracing::debug!("closing: shutdown grace period over"),
    }
}

/// Which end of a fresh client-mode connection spoke first.
enum Spoke {
    App(std::io::Result<usize>),
    Server(std::io::Result<usize>),
}

/// Logs an error that ended a connection after its handshake. In TLS 1.3 a server refuses a
/// client certificate after the client has finished its side of the handshake, so that
/// refusal arrives here, as an alert, and is counted with the handshake failures.
fn report_tls_error(svc: &Service, e: &std::io::Error) {
    if failure_reason(e) == "alert_received" {
        svc.metrics.handshake_failed("alert_received");
        tracing::warn!(
            "[{}] the TLS peer ended the connection with {}; if this is the node side, the \
             Redis host probably refused this node's certificate",
            svc.name(),
            describe_failure(e)
        );
    } else {
        tracing::debug!("closed: {e}");
    }
}
