//! The erlmcp replica model (replica.rs) and a modelled Swarm service (cluster.rs).

pub mod cluster;
pub mod replica;

pub use cluster::{Cluster, Load, TickMetrics};
pub use replica::ReplicaParams;
