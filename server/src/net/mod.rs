//! Network plumbing shared by the HTTP surfaces: Go's HTTP behaviour that
//! etcd's clients see (`gohttp`).

pub mod gohttp;
pub mod h2_authority;
pub mod http_client;
pub mod listener;
pub mod unix;
