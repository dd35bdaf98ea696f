//! Network plumbing shared by the HTTP surfaces: Go's HTTP behaviour that
//! etcd's clients see (`gohttp`).

pub mod gohttp;
