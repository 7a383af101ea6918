//! The configuration: nginx's grammar ([`grammar`]) read into a directive tree, and the
//! typed blocks read from it so far ([`upstream`], [`location`]).

pub mod grammar;
pub mod location;
pub mod upstream;
