//! andon: a reconciling autoscaler for erlmcp on Docker Swarm, with a simulator.
//!
//! Data flows policy → decide (pure core) → act; the simulator runs the same core against
//! a modelled cluster on virtual time.

pub mod core;
pub mod policy;
