//! The modelled Swarm service around the modelled cluster: its spec labels (so the core's
//! state survives a modelled controller restart exactly as it does on a real Swarm),
//! rolling updates (progressing or paused), and writes that fail.

use super::Cluster;
use crate::reconcile::{Desired, ServiceView, UpdateState};

#[derive(Debug, Clone, Default)]
pub struct ModelSwarm {
    view: ServiceView,
    write_fail_until_ms: u64,
    update_until_ms: u64,
    update_paused: bool,
    /// Spec writes that went through, and those that failed.
    pub writes: u32,
    pub failed_writes: u32,
}

impl ModelSwarm {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every write fails until `until_ms` ("update out of sequence" forever, or the Docker
    /// API down).
    pub fn fail_writes(&mut self, until_ms: u64) {
        self.write_fail_until_ms = until_ms;
    }

    /// A rolling update starts now and lasts until `until_ms`; a paused one sits paused
    /// that long (until an operator resumes it).
    pub fn start_update(&mut self, now_ms: u64, until_ms: u64, paused: bool) {
        self.update_until_ms = until_ms;
        self.update_paused = paused;
        self.view.update_started_ms = Some(now_ms);
    }

    /// The service as the Docker API would show it now.
    pub fn read(&mut self, cluster: &Cluster, now_ms: u64) -> &ServiceView {
        self.view.replicas = cluster.replicas();
        self.view.running = cluster.ready();
        self.view.update = if now_ms < self.update_until_ms {
            if self.update_paused {
                UpdateState::Paused
            } else {
                UpdateState::Progressing
            }
        } else if self.view.update_started_ms.is_some() {
            UpdateState::Completed
        } else {
            UpdateState::None
        };
        &self.view
    }

    /// One service update. Returns whether it went through.
    pub fn write(&mut self, desired: &Desired, cluster: &mut Cluster, now_ms: u64) -> bool {
        if *desired == Desired::default() {
            return true;
        }
        if now_ms < self.write_fail_until_ms {
            self.failed_writes += 1;
            return false;
        }
        self.writes += 1;
        if let Some(r) = desired.replicas {
            cluster.scale(r);
        }
        desired.apply_labels(&mut self.view.labels);
        true
    }
}
