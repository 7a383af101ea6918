//! Listening sockets that outlive a restart: systemd's file descriptor store.
//!
//! Without it, `systemctl restart` (an upgrade, or `Restart=` after a crash) closes a
//! daemon's listening sockets when the old process stops and opens them when the new one
//! has started: every client that connects in between is refused, and with the old process
//! draining first that can be seconds. So gluu-lb and gluu-tunnel give systemd a copy of
//! each listening socket (`FDSTORE=1`, named after its address; their units set
//! `FileDescriptorStoreMax=`). systemd keeps the copies while the service runs or a restart
//! is queued, and hands them to the next process (`LISTEN_FDS`): the sockets never close,
//! the kernel queues the connections that arrive in between, and the new process accepts
//! them. `systemctl stop` drops the copies; nothing changes outside systemd.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;

use sd_notify::NotifyState;

/// The sockets systemd handed back at start, by the address each listens on.
#[derive(Debug, Default)]
pub struct Inherited(HashMap<SocketAddr, Vec<TcpListener>>);

impl Inherited {
    /// What `LISTEN_FDS` passed (nothing outside systemd). A descriptor that is not a
    /// listening TCP socket is left alone.
    pub fn from_env() -> Inherited {
        let mut fds = listenfd::ListenFd::from_env();
        let mut by_addr: HashMap<SocketAddr, Vec<TcpListener>> = HashMap::new();
        for i in 0..fds.len() {
            match fds.take_tcp_listener(i) {
                Ok(Some(l)) => match l.local_addr() {
                    Ok(addr) => by_addr.entry(addr).or_default().push(l),
                    Err(e) => tracing::warn!("inherited socket {i}: {e}"),
                },
                Ok(None) => {}
                Err(e) => tracing::warn!("inherited descriptor {i} is not used: {e}"),
            }
        }
        Inherited(by_addr)
    }

    /// The inherited sockets listening on `addr` (none for a port 0 address).
    pub fn take(&mut self, addr: SocketAddr) -> Vec<TcpListener> {
        match addr.port() {
            0 => Vec::new(),
            _ => self.0.remove(&addr).unwrap_or_default(),
        }
    }

    /// Closes what the configuration no longer listens on, and takes it out of the store.
    pub fn close_rest(self) {
        for (addr, sockets) in self.0 {
            tracing::info!(
                "closing {} inherited socket(s) on {addr}: no longer configured",
                sockets.len()
            );
            forget(addr);
        }
    }
}

/// The store's name for the sockets of `addr` (systemd refuses `:` in a name).
fn name(addr: SocketAddr) -> String {
    format!("listen_{}", addr.to_string().replace(':', "_"))
}

/// Gives systemd copies of `sockets`, all listening on `addr`, replacing any it held for
/// that address (gluu-lb's group of sockets per address can shrink when `worker_processes`
/// changes). Outside systemd, nothing happens.
pub fn store<S: AsFd>(addr: SocketAddr, sockets: &[S]) {
    forget(addr);
    let name = name(addr);
    let fds: Vec<_> = sockets.iter().map(AsFd::as_fd).collect();
    let states = [NotifyState::FdStore, NotifyState::FdName(&name)];
    if let Err(e) = sd_notify::notify_with_fds(&states, &fds) {
        tracing::debug!("FDSTORE for {addr}: {e}");
    }
}

/// Drops systemd's copies of the sockets of `addr` (a reload stopped listening there).
pub fn forget(addr: SocketAddr) {
    let name = name(addr);
    let states = [NotifyState::FdStoreRemove, NotifyState::FdName(&name)];
    if let Err(e) = sd_notify::notify(&states) {
        tracing::debug!("FDSTOREREMOVE for {addr}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_have_no_colon() {
        assert_eq!(
            name("127.0.0.1:443".parse().expect("v4")),
            "listen_127.0.0.1_443"
        );
        assert_eq!(name("[::1]:443".parse().expect("v6")), "listen_[__1]_443");
    }
}
