//! gluu-tunnel: stunnel's job for the Redis leg of a Gluu cluster.
pub mod config;
