//! Unix signals, mapped the same way in every daemon: SIGHUP asks for a reload, SIGTERM and
//! SIGINT ask for a graceful stop (stop accepting, drain, exit), SIGUSR1 reopens the log file
//! (after logrotate), as stunnel and nginx do. SIGUSR1's default action would kill us.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::logging::LogFile;

/// How the outside world steers a running daemon (the signals below, or a test).
#[derive(Debug)]
pub struct Control {
    /// Cancel to stop: accepting ends at once, open connections get the daemon's grace
    /// period (`TIMEOUTdrain`, `worker_shutdown_timeout`).
    pub shutdown: CancellationToken,
    /// Each message re-reads the configuration file (SIGHUP).
    pub reload: mpsc::Receiver<()>,
}

/// Installs the handlers. Cancels `shutdown` on SIGTERM/SIGINT (and SIGQUIT, nginx's
/// graceful stop); each SIGHUP sends one `()` on the returned channel (several SIGHUPs while
/// a reload runs collapse into one more reload); SIGUSR1 reopens every log file `logs`
/// returns at that moment (the files can change with a reload).
pub fn install(
    shutdown: CancellationToken,
    logs: impl Fn() -> Vec<LogFile> + Send + 'static,
) -> std::io::Result<mpsc::Receiver<()>> {
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading configuration");
                    let _ = tx.try_send(());
                }
                _ = usr1.recv() => {
                    let files = logs();
                    if files.is_empty() {
                        tracing::info!("SIGUSR1: logging to stderr, nothing to reopen");
                    }
                    for log in files {
                        match log.reopen() {
                            Ok(()) => tracing::info!("SIGUSR1: reopened {}", log.path().display()),
                            Err(e) => tracing::error!(
                                "SIGUSR1: cannot reopen {}: {e}",
                                log.path().display()
                            ),
                        }
                    }
                }
                _ = term.recv() => {
                    tracing::info!("SIGTERM: stopping gracefully");
                    shutdown.cancel();
                }
                _ = quit.recv() => {
                    tracing::info!("SIGQUIT: stopping gracefully");
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
