//! The accept step every listener shares: out-of-resource errors (EMFILE, ENFILE, ENOBUFS,
//! ENOMEM) back off, 5 ms doubling to 1 s, instead of spinning on the error; other errors
//! (a client that reset before we accepted) are skipped.

use std::net::SocketAddr;
use std::time::Duration;

use nix::errno::Errno;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

fn resource_exhausted(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
    )
}

/// The next connection on `listener`, or `None` once `stop` is cancelled. `label` names the
/// listener in log lines.
pub async fn next(
    listener: &TcpListener,
    stop: &CancellationToken,
    label: &str,
) -> Option<(TcpStream, SocketAddr)> {
    let mut backoff = MIN_BACKOFF;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            r = listener.accept() => match r {
                Ok(accepted) => return Some(accepted),
                Err(e) if resource_exhausted(&e) => {
                    tracing::warn!("[{label}] accept: {e}; retrying in {backoff:?}");
                    tokio::select! {
                        _ = stop.cancelled() => return None,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => tracing::debug!("[{label}] accept: {e}"),
            },
        }
    }
}
