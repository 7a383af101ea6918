//! Unix signals, mapped the same way in every daemon: SIGHUP asks for a reload, SIGTERM and
//! SIGINT ask for a graceful stop (stop accepting, drain, exit), as stunnel and nginx do.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Installs the handlers. Cancels `shutdown` on SIGTERM/SIGINT; each SIGHUP sends one `()` on
/// the returned channel (several SIGHUPs while a reload runs collapse into one more reload).
pub fn install(shutdown: CancellationToken) -> std::io::Result<mpsc::Receiver<()>> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading configuration");
                    let _ = tx.try_send(());
                }
                _ = term.recv() => {
                    tracing::info!("SIGTERM: stopping gracefully");
                    shutdown.cancel();
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: stopping gracefully");
                    shutdown.cancel();
                }
            }
        }
    });
    Ok(rx)
}
