//! Act: change the Swarm service, and shed load.
//!
//! Every write is one `update` of the *inspected* spec with its version (optimistic
//! concurrency): replicas, the shedding labels and the core's remembered state travel
//! together, so a controller killed at any point leaves either all of them or none.
//! "update out of sequence" means another writer got in first: re-inspect, re-apply our
//! changes to the fresh spec, retry, a bounded number of times.

pub mod admission;

use crate::swarm::{set_replicas, ServiceInfo, Swarm, SwarmError};
use std::collections::BTreeMap;

/// Labels andon owns on a service.
pub const STATE_LABEL: &str = "andon.state";
pub const TIER_LABEL: &str = "andon.tier";
pub const SHED_LABEL: &str = "andon.shed.admit";

/// Traefik's inFlightReq middleware, named for the service. A label change does not
/// restart tasks; an edge Traefik reading Swarm labels applies it.
pub fn traefik_inflight_label(service: &str) -> String {
    format!("traefik.http.middlewares.andon-shed-{service}.inflightreq.amount")
}

/// What one tick wants the service to look like. `None` leaves a field as it is; a label
/// mapped to `None` is removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub replicas: Option<u32>,
    pub labels: BTreeMap<String, Option<String>>,
}

impl Desired {
    /// Whether the inspected service already matches.
    pub fn satisfied_by(&self, info: &ServiceInfo) -> bool {
        self.replicas.is_none_or(|r| r == info.replicas)
            && self
                .labels
                .iter()
                .all(|(k, v)| info.labels.get(k).map(String::as_str) == v.as_deref())
    }

    fn apply_to(&self, info: &mut ServiceInfo) {
        if let Some(r) = self.replicas {
            set_replicas(&mut info.spec, r);
        }
        let labels = info.spec.labels.get_or_insert_with(Default::default);
        for (k, v) in &self.labels {
            match v {
                Some(v) => {
                    labels.insert(k.clone(), v.clone());
                }
                None => {
                    labels.remove(k);
                }
            }
        }
    }
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
        if desired.satisfied_by(&info) {
            return Ok(Written {
                conflicts,
                noop: conflicts == 0,
            });
        }
        let version = info.version;
        desired.apply_to(&mut info);
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
