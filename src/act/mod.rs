//! Act: change the Swarm service, and shed load.
//!
//! Every write is one `update` of the *inspected* spec with its version (optimistic
//! concurrency): replicas, the shedding labels and the core's remembered state travel
//! together, so a controller killed at any point leaves either all of them or none.
//! "update out of sequence" means another writer got in first: re-inspect, re-apply our
//! changes to the fresh spec, retry, a bounded number of times.

pub mod admission;
pub mod haproxy;

use crate::swarm::{set_replicas, ServiceInfo, Swarm, SwarmError};

pub use crate::reconcile::{traefik_inflight_label, Desired, SHED_LABEL, STATE_LABEL, TIER_LABEL};

/// Applies the spec changes to an inspected service's spec.
fn apply_to(desired: &Desired, info: &mut ServiceInfo) {
    if let Some(r) = desired.replicas {
        set_replicas(&mut info.spec, r);
    }
    let labels = info.spec.labels.get_or_insert_with(Default::default);
    desired.apply_labels(labels);
}

fn satisfied(desired: &Desired, info: &ServiceInfo) -> bool {
    desired.satisfied_by(info.replicas, &info.labels)
}

/// How a write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Times "update out of sequence" was met and retried.
    pub conflicts: u32,
    /// Nothing needed writing.
    pub noop: bool,
}

pub const MAX_ATTEMPTS: u32 = 5;

/// Writes `desired` onto the service, starting from the spec in `info`.
pub async fn write(
    swarm: &Swarm,
    mut info: ServiceInfo,
    desired: &Desired,
) -> Result<Written, SwarmError> {
    let mut conflicts = 0;
    loop {
        if satisfied(desired, &info) {
            return Ok(Written {
                conflicts,
                noop: conflicts == 0,
            });
        }
        let version = info.version;
        apply_to(desired, &mut info);
        match swarm.update(&info.name, version, info.spec.clone()).await {
            Ok(()) => {
                return Ok(Written {
                    conflicts,
                    noop: false,
                })
            }
            Err(SwarmError::OutOfSequence) if conflicts + 1 < MAX_ATTEMPTS => {
                conflicts += 1;
                tracing::info!(service = %info.name, conflicts, "update out of sequence: another writer changed the service; re-inspecting");
                info = swarm.inspect(&info.name).await?;
            }
            Err(e) => return Err(e),
        }
    }
}
