//! Observe: the policy's signals from Prometheus. (The service itself is read through
//! `crate::swarm`.)

pub mod history;
pub mod prometheus;
pub mod trial;
