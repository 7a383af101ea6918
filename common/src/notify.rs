//! systemd readiness (`Type=notify`): READY once listening, RELOADING around a reload,
//! STOPPING when draining, WATCHDOG while the runtime runs. Without `NOTIFY_SOCKET` (not under systemd) these do nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Once;
use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}

/// READY=1 with a status line. The first call also starts feeding systemd's watchdog when
/// the unit sets `WatchdogSec=` (so it must run inside the daemon's tokio runtime).
pub fn ready(status: &str) {
    ready_checked(status, |_| Box::pin(async { true }));
}

/// A daemon's own liveness test, run before each watchdog ping with the time it may take.
pub type Check = Pin<Box<dyn Future<Output = bool> + Send>>;

/// [`ready`], feeding the watchdog only while `alive` says so within half the period
/// (gluu-lb: while every worker thread runs tasks).
pub fn ready_checked(status: &str, alive: impl Fn(Duration) -> Check + Send + 'static) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
    static WATCHDOG: Once = Once::new();
    WATCHDOG.call_once(|| watchdog(alive));
}

/// WATCHDOG=1 every half of `WatchdogSec=`, from a task on the daemon's runtime: if the
/// runtime stops making progress (every worker stuck), or `alive` fails, the pings stop and
/// systemd restarts the service. `WATCHDOG_PID` keeps children (gluu-fsync's actions) from
/// feeding it.
fn watchdog(alive: impl Fn(Duration) -> Check + Send + 'static) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    tracing::info!("feeding the systemd watchdog every {:?}", period / 2);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period / 2);
        let mut failing = false;
        loop {
            tick.tick().await;
            if alive(period / 4).await {
                send(&[NotifyState::Watchdog]);
                failing = false;
            } else if !failing {
                tracing::error!(
                    "a worker thread is not running tasks: the systemd watchdog is no longer fed"
                );
                failing = true;
            }
        }
    });
}

/// RELOADING must carry MONOTONIC_USEC for `Type=notify-reload` units (systemd >= 253).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}
