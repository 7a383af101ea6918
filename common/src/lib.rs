//! What gluu-ha's daemons share: `--version` text ([`build`]), man pages ([`man`]), PEM/TLS loading and peer pinning ([`tls`], [`verify`]),
//! OpenSSL's cipher settings for rustls' suites ([`ciphers`]),
//! signals and graceful shutdown ([`signal`]), systemd readiness ([`notify`]) and its file
//! descriptor store ([`fdstore`]: listening sockets kept across a restart), logging
//! ([`logging`]), the Prometheus listener ([`metrics`]), configuration places for error
//! messages ([`place`]), and the small Unix chores every daemon does the same way
//! ([`process`]: pid files, dropping privileges; [`accept`]: accepting with backoff;
//! [`relay`]: copying a tunneled connection both ways under idle and close timeouts;
//! [`tap`]: a stream with a slot or a counter attached; [`validity`]: warnings and a metric
//! before a served certificate ends).

pub mod accept;
pub mod build;
pub mod ciphers;
pub mod drain;
pub mod fdstore;
pub mod logging;
pub mod man;
pub mod metrics;
pub mod notify;
pub mod place;
pub mod process;
pub mod relay;
pub mod signal;
pub mod tap;
pub mod tls;
pub mod validity;
pub mod verify;
