//! systemd readiness (`Type=notify`): READY once listening, RELOADING around a reload,
//! STOPPING when draining, WATCHDOG while the runtime runs. Without `NOTIFY_SOCKET` (not under systemd) these do nothing.

use std::sync::Once;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}

/// READY=1 with a status line. The first call also starts feeding systemd's watchdog when
/// the unit sets `WatchdogSec=` (so it must run inside the daemon's tokio runtime).
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
    static WATCHDOG: Once = Once::new();
    WATCHDOG.call_once(watchdog);
}

/// WATCHDOG=1 every half of `WatchdogSec=`, from a task on the daemon's runtime: if the
/// runtime stops making progress (every worker stuck), the pings stop and systemd restarts
/// the service. `WATCHDOG_PID` keeps children (gluu-fsync's actions) from feeding it.
fn watchdog() {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    tracing::info!("feeding the systemd watchdog every {:?}", period / 2);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period / 2);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
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
