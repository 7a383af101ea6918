//! Logging setup shared by the daemons: human-readable lines to stderr (the journal under
//! systemd) or appended to a file (stunnel's `output`), at the configured level, which
//! `RUST_LOG` overrides for debugging one module.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. A second call (tests run many daemons in one process)
/// keeps the first and succeeds.
pub fn init(level: tracing::Level, output: Option<&Path>) -> std::io::Result<()> {
    // rustls logs some peer quirks at warn for every connection (stunnel sends an IP address
    // as SNI); the daemons report handshake failures themselves, with the peer's address.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{},rustls=error",
            level.as_str().to_ascii_lowercase()
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match output {
        Some(path) => {
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            builder
                .with_ansi(false)
                .with_writer(Mutex::new(file))
                .try_init()
        }
        None => builder.with_writer(std::io::stderr).try_init(),
    };
    Ok(())
}
