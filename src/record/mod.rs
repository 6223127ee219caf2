//! Record: what andon saw, decided and did, for people and Prometheus.

pub mod metrics;
pub mod server;
pub mod status;
