//! Unix signals, mapped the same way in every daemon: SIGHUP asks for a reload, SIGTERM and
//! SIGINT ask for a graceful stop (stop accepting, drain, exit), SIGUSR1 reopens the log file
//! (after logrotate), as stunnel and nginx do. SIGUSR1's default action would kill us.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Installs the handlers. Cancels `shutdown` on SIGTERM/SIGINT; each SIGHUP sends one `()` on
/// the returned channel (several SIGHUPs while a reload runs collapse into one more reload);
/// SIGUSR1 reopens `log`, if there is one.
pub fn install(
    shutdown: CancellationToken,
    log: Option<crate::logging::LogFile>,
) -> std::io::Result<mpsc::Receiver<()>> {
    let mut usr1 = signal(SignalKind::user_defined1())?;
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
                _ = usr1.recv() => match &log {
                    Some(log) => match log.reopen() {
                        Ok(()) => tracing::info!("SIGUSR1: log file reopened"),
                        Err(e) => tracing::error!("SIGUSR1: cannot reopen the log file: {e}"),
                    },
                    None => tracing::info!("SIGUSR1: logging to stderr, nothing to reopen"),
                },
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
