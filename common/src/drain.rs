//! The end of a graceful stop, the same in every daemon: no new connections are tracked,
//! open ones get `grace` to finish, then `hard_stop` cuts what is left.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Waits for `conns` up to `grace` (`setting` names the option that sets it, for the log),
/// then cancels `hard_stop` and waits for the rest to close.
pub async fn wait(
    conns: &TaskTracker,
    hard_stop: &CancellationToken,
    grace: Duration,
    setting: &str,
) {
    conns.close();
    if !conns.is_empty() {
        tracing::info!(
            "draining {} open connections (up to {grace:?}, {setting})",
            conns.len()
        );
    }
    if tokio::time::timeout(grace, conns.wait()).await.is_err() {
        tracing::warn!(
            "{} connections still open after {grace:?} ({setting}): closing them",
            conns.len()
        );
        hard_stop.cancel();
        conns.wait().await;
    }
    tracing::info!("stopped");
}
