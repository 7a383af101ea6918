//! The configuration: nginx's grammar ([`grammar`]) read into a directive tree.

pub mod grammar;
