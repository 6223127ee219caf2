//! andon: a reconciling autoscaler for erlmcp on Docker Swarm, with a simulator.
//!
//! Data flows policy → decide (pure core) → act; the simulator runs the same core against
//! a modelled cluster on virtual time.

pub mod act;
pub mod baseline;
pub mod calibrate;
pub mod control;
pub mod core;
pub mod drill;
pub mod error;
pub mod model;
pub mod observe;
pub mod policy;
pub mod reconcile;
pub mod record;
pub mod report;
pub mod run;
pub mod scenario;
pub mod simulate;
pub mod standin;
pub mod swarm;

pub use error::{Error, Result};
