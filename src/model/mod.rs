//! The modelled world `andon simulate` runs in: the erlmcp replica model (replica.rs), the
//! cluster of replicas (cluster.rs), the Swarm service around it (swarm.rs), and what
//! Prometheus makes of it all (prometheus.rs).

pub mod cluster;
pub mod prometheus;
pub mod replica;
pub mod swarm;

pub use cluster::{Cluster, Load, TickMetrics};
pub use prometheus::ModelPrometheus;
pub use replica::ReplicaParams;
pub use swarm::{ModelNodes, ModelSwarm};
