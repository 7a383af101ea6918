//! What `--version` prints in every binary: the version, then where the binary came from.

/// `0.1.0 (commit 1a2b3c4d5e6f 2026-11-24, x86_64-unknown-linux-gnu, rustc 1.91.0)`; debug
/// builds say `debug build` in place of the commit.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("GLUU_BUILD"), ")");
