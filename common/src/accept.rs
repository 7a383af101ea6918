//! The accept step every listener shares: a connection slot first ([`slot`]), so that at
//! the limit new connections wait in the listen queue; then the accept ([`next`]), where
//! out-of-resource errors (EMFILE, ENFILE, ENOBUFS, ENOMEM) back off, 5 ms doubling to 1 s,
//! instead of spinning on the error, and other errors (a client that reset before we
//! accepted) are skipped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

fn resource_exhausted(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
    )
}

/// A slot from `limit` for the next connection, waiting while all are taken (the listen
/// queue holds new connections meanwhile, as nginx's and stunnel's do); `None` once `stop`
/// is cancelled. `at_limit` is whether the limit was last found reached: `report` logs it
/// once each time it is reached.
pub async fn slot(
    limit: &Arc<Semaphore>,
    stop: &CancellationToken,
    at_limit: &mut bool,
    report: impl FnOnce(),
) -> Option<OwnedSemaphorePermit> {
    if let Ok(p) = limit.clone().try_acquire_owned() {
        *at_limit = false;
        return Some(p);
    }
    if !*at_limit {
        report();
        *at_limit = true;
    }
    tokio::select! {
        _ = stop.cancelled() => None,
        p = limit.clone().acquire_owned() => p.ok(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slot_is_reported_once_at_the_limit_and_comes_when_one_is_freed() {
        let limit = Arc::new(Semaphore::new(1));
        let stop = CancellationToken::new();
        let (mut at_limit, mut reports) = (false, 0);
        let first = slot(&limit, &stop, &mut at_limit, || reports += 1).await;
        assert!(first.is_some() && reports == 0 && !at_limit);
        let waiting = tokio::spawn({
            let (limit, stop) = (limit.clone(), stop.clone());
            async move {
                let mut at_limit = false;
                let mut reports = 0;
                let p = slot(&limit, &stop, &mut at_limit, || reports += 1).await;
                (p.is_some(), reports, at_limit)
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no slot while the first is held");
        drop(first);
        assert_eq!(waiting.await.expect("join"), (true, 1, true));
        // All taken again, then a stop: no slot.
        let held = limit.clone().try_acquire_owned().expect("free");
        stop.cancel();
        assert!(
            slot(&limit, &stop, &mut at_limit, || reports += 1)
                .await
                .is_none()
        );
        assert_eq!(reports, 1);
        drop(held);
    }
}
