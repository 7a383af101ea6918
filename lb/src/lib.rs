//! gluu-lb: the Gluu cluster's TLS load balancer, reading the guide's nginx.conf.
//!
//! In progress (issue 3): this crate so far holds nginx's configuration grammar
//! ([`config::grammar`]) and nginx's server selection ([`balance`]); the typed
//! configuration, the proxy and the binary come next.

pub mod balance;
pub mod config;
