//! The modelled Swarm service around the modelled cluster: its spec labels (so the core's
//! state survives a modelled controller restart exactly as it does on a real Swarm),
//! rolling updates (progressing or paused), writes that fail, and, with `nodes:` in the
//! scenario, the nodes that hold its tasks (how many fit, a node down or drained).

use super::Cluster;
use crate::core::placement::Placement;
use crate::reconcile::{Desired, ServiceView, UpdateState};

/// How long the managers take to mark a dead node down and re-place its tasks: measured
/// 14.3 s on the local three-node swarm (tests/nodes, README "Many nodes"); Swarm's
/// dispatcher heartbeat is 5 s, and a node is declared down after missing several.
pub const NODE_DOWN_NOTICE_S: f64 = 15.0;

/// The modelled nodes. Swarm spreads a service's tasks evenly, so a node holds its share.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelNodes {
    /// Per node: serving, or out (down or drained) until this time (ms).
    out_until_ms: Vec<Option<u64>>,
    /// Tasks of the service one node holds (its CPU or memory over the reservation);
    /// `None`: as many as asked.
    per_node: Option<u32>,
    /// When a node last stopped serving, as the managers see it.
    lost_ms: Option<u64>,
    /// Nodes dead but not yet noticed by the managers.
    unnoticed: Vec<Unnoticed>,
}

/// A dead node the managers have not yet marked down: until `notice_ms` Swarm lists it
/// ready and its dead tasks as running, though they serve nothing and Prometheus fails
/// to scrape them (the controller sees a partial view, not a lost node). Measured on the
/// local three-node swarm: its tasks left andon's view 13.2–15.3 s after the cut.
/// Not modelled: tasks Swarm places on it meanwhile (they would hang until the notice);
/// the model lets them start.
#[derive(Debug, Clone, PartialEq)]
struct Unnoticed {
    index: usize,
    notice_ms: u64,
    until_ms: u64,
}

impl ModelNodes {
    pub fn new(count: u32, per_node: Option<u32>) -> Self {
        ModelNodes {
            out_until_ms: vec![None; count.max(1) as usize],
            per_node,
            lost_ms: None,
            unnoticed: Vec::new(),
        }
    }

    /// Dead nodes back before the managers noticed were never down: their tasks are on
    /// their way (restarted by their daemon). Those the managers notice by `now_ms` go
    /// out from their notice, and their tasks are re-placed.
    fn notice(&mut self, cluster: &mut Cluster, now_ms: u64) {
        let mut keep = Vec::new();
        for u in std::mem::take(&mut self.unnoticed) {
            if u.until_ms <= now_ms.min(u.notice_ms) {
                cluster.noticed(u.index, false);
            } else if u.notice_ms <= now_ms {
                cluster.noticed(u.index, false);
                if let Some(slot) = self.out_until_ms.get_mut(u.index) {
                    *slot = Some(u.until_ms.max(slot.unwrap_or(0)));
                }
                self.lost_ms = self.lost_ms.max(Some(u.notice_ms));
            } else {
                keep.push(u);
            }
        }
        self.unnoticed = keep;
    }

    fn serving(&self) -> u32 {
        self.out_until_ms.iter().filter(|o| o.is_none()).count() as u32
    }

    /// The tasks the serving nodes hold.
    fn capacity(&self) -> Option<u32> {
        self.per_node.map(|m| m.saturating_mul(self.serving()))
    }
}

#[derive(Debug, Clone, Default)]
pub struct ModelSwarm {
    view: ServiceView,
    /// Replicas in the spec; the cluster runs as many as the nodes hold.
    spec: Option<u32>,
    nodes: Option<ModelNodes>,
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

    /// A service on these nodes (`nodes:` in the scenario).
    pub fn with_nodes(mut self, nodes: Option<ModelNodes>) -> Self {
        self.nodes = nodes;
        self
    }

    /// Node `index` (0-based) stops serving until `until_ms`: drained (Swarm moves its
    /// tasks at once) or down (its tasks die now; the managers notice after
    /// [`NODE_DOWN_NOTICE_S`], and only then is the node down and its tasks re-placed).
    /// Its share of the tasks dies; their clients reconnect to the others.
    pub fn node_out(
        &mut self,
        cluster: &mut Cluster,
        index: usize,
        (now_ms, until_ms): (u64, u64),
        down: bool,
    ) {
        self.advance(cluster, now_ms);
        let Some(nodes) = self.nodes.as_mut() else {
            return;
        };
        let serving = nodes.serving();
        let unnoticed = nodes.unnoticed.iter().position(|u| u.index == index);
        let Some(slot) = nodes.out_until_ms.get_mut(index) else {
            return;
        };
        // Its share of the tasks, rounded to the nearest.
        let share = (cluster.replicas() * 2 + serving.max(1)) / (2 * serving.max(1));
        match (down, unnoticed, slot.is_some()) {
            // Down again before the managers noticed: still dead, for longer.
            (true, Some(u), _) => {
                let u = &mut nodes.unnoticed[u];
                u.until_ms = u.until_ms.max(until_ms);
                return;
            }
            (true, None, false) if serving > 0 => {
                let notice_s = NODE_DOWN_NOTICE_S;
                cluster.kill_on_dead_node(share, index, notice_s);
                nodes.unnoticed.push(Unnoticed {
                    index,
                    notice_ms: now_ms + (notice_s * 1000.0) as u64,
                    until_ms,
                });
                return;
            }
            // A drain of a dead node the managers have not noticed: they move its tasks
            // at once.
            (false, Some(u), _) => {
                nodes.unnoticed.remove(u);
                cluster.noticed(index, true);
            }
            (false, None, false) if serving > 0 => cluster.kill(share, 0.0),
            // Already out (drained, or down and noticed): out for longer.
            _ => {}
        }
        *slot = Some(until_ms.max(slot.unwrap_or(0)));
        nodes.lost_ms = nodes.lost_ms.max(Some(now_ms));
        self.place(cluster);
    }

    /// Time passes for the nodes: the managers notice dead nodes, nodes come back, and
    /// the cluster runs what they hold. Every model tick, so that a notice is not dated
    /// by when a controller happens to read.
    pub fn advance(&mut self, cluster: &mut Cluster, now_ms: u64) {
        if let Some(nodes) = self.nodes.as_mut() {
            nodes.notice(cluster, now_ms);
            for o in &mut nodes.out_until_ms {
                if o.is_some_and(|until| until <= now_ms) {
                    *o = None;
                }
            }
        }
        self.place(cluster);
    }

    /// The cluster runs what the spec asks, up to what the serving nodes hold.
    fn place(&mut self, cluster: &mut Cluster) {
        let spec = *self.spec.get_or_insert(cluster.replicas());
        let fits = self
            .nodes
            .as_ref()
            .and_then(ModelNodes::capacity)
            .map_or(spec, |c| spec.min(c));
        if cluster.replicas() != fits {
            cluster.scale(fits);
        }
    }

    /// The replicas in the spec (none before the first read or write).
    pub fn spec(&self) -> Option<u32> {
        self.spec
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
    pub fn read(&mut self, cluster: &mut Cluster, now_ms: u64) -> &ServiceView {
        self.advance(cluster, now_ms);
        let spec = self.spec.unwrap_or(0);
        self.view.replicas = spec;
        // A dead node's tasks, until the managers notice, are listed as running (they
        // are not starting, and they serve nothing).
        let unnoticed = cluster.unnoticed();
        self.view.running = cluster.ready() + unnoticed;
        // As `andon run` reads a real service: tasks no node holds, tasks starting.
        self.view.placement = Placement {
            unplaceable: spec.saturating_sub(cluster.replicas()),
            moving: cluster.starting() - unnoticed,
            node_lost_ms: self.nodes.as_ref().and_then(|n| n.lost_ms),
            serving_nodes: self.nodes.as_ref().map(ModelNodes::serving),
        };
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
            self.spec = Some(r);
            self.place(cluster);
        }
        desired.apply_labels(&mut self.view.labels);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ReplicaParams;

    /// 20 tasks on 3 nodes of 8: one node lost leaves 16 places. Its share (7) dies and
    /// the cluster shrinks to what fits by removing tasks that are not running first, as
    /// Swarm does: 13 survivors stay ready, 3 are re-placed. (The old model removed from
    /// the end of its list, ready survivors included: 9 ready, 7 starting.)
    #[test]
    fn a_lost_node_costs_its_share_and_no_survivor() {
        let mut cluster = Cluster::new(ReplicaParams::default(), 20);
        let mut swarm = ModelSwarm::new().with_nodes(Some(ModelNodes::new(3, Some(8))));
        swarm.read(&mut cluster, 0);
        swarm.node_out(&mut cluster, 0, (1_000, 60_000), false);
        assert_eq!(cluster.replicas(), 16);
        assert_eq!(cluster.ready(), 13);
        assert_eq!(cluster.starting(), 3);
        let view = swarm.read(&mut cluster, 2_000);
        assert_eq!(view.placement.unplaceable, 4);
    }

    /// 9 tasks on 3 nodes with room for all, as the service reads at 0.
    fn nine_on_three() -> (Cluster, ModelSwarm) {
        let mut cluster = Cluster::new(ReplicaParams::default(), 9);
        let mut swarm = ModelSwarm::new().with_nodes(Some(ModelNodes::new(3, None)));
        swarm.read(&mut cluster, 0);
        (cluster, swarm)
    }

    /// A dead node is not a lost node until the managers notice: for 15 s its tasks are
    /// listed as running (they serve nothing; Prometheus scrapes only the ready ones, so
    /// the controller sees a partial view) and the node as serving. Then it is down from
    /// its notice, and its tasks are on their way. (The old model dated the loss at the
    /// fault and showed the tasks moving at once.)
    #[test]
    fn a_dead_node_is_lost_only_when_the_managers_notice() {
        let (mut cluster, mut swarm) = nine_on_three();
        swarm.node_out(&mut cluster, 1, (10_000, 120_000), true);
        let view = swarm.read(&mut cluster, 20_000).clone();
        assert_eq!(cluster.ready(), 6);
        assert_eq!(view.running, 9, "listed as running until noticed");
        assert_eq!(view.placement.moving, 0);
        assert_eq!(view.placement.node_lost_ms, None);
        assert_eq!(view.placement.serving_nodes, Some(3));
        let view = swarm.read(&mut cluster, 26_000).clone();
        assert_eq!(view.running, 6);
        assert_eq!(view.placement.moving, 3);
        assert_eq!(view.placement.node_lost_ms, Some(25_000));
        assert_eq!(view.placement.serving_nodes, Some(2));
    }

    /// Cut again after it came back, before the first notice: the managers notice 15 s
    /// after the second cut. Drained while dead and unnoticed: its tasks are re-placed at
    /// once and no longer listed as running.
    #[test]
    fn a_second_cut_and_a_drain_of_a_dead_node_are_dated_as_swarm_would() {
        let (mut cluster, mut swarm) = nine_on_three();
        swarm.node_out(&mut cluster, 2, (0, 5_000), true);
        swarm.node_out(&mut cluster, 2, (10_000, 60_000), true);
        let view = swarm.read(&mut cluster, 20_000).clone();
        assert_eq!(view.placement.node_lost_ms, None, "noticed 25 s, not 15 s");
        let view = swarm.read(&mut cluster, 25_000).clone();
        assert_eq!(view.placement.node_lost_ms, Some(25_000));

        let (mut cluster, mut swarm) = nine_on_three();
        swarm.node_out(&mut cluster, 0, (0, 60_000), true);
        assert_eq!(swarm.read(&mut cluster, 1_000).running, 9);
        swarm.node_out(&mut cluster, 0, (2_000, 60_000), false);
        let view = swarm.read(&mut cluster, 3_000).clone();
        assert_eq!(view.running, 6);
        assert_eq!(view.placement.moving, 3);
        assert_eq!(view.placement.node_lost_ms, Some(2_000));
        // Re-placed at once: ready after the start delay, not after the notice.
        let start_ms = (ReplicaParams::default().start_delay_s * 1000.0) as u64;
        for _ in 0..=(start_ms / 500 + 2) {
            cluster.step(
                0.5,
                crate::model::Load {
                    connections: 0,
                    rate_per_conn: 0.0,
                    timeout_s: 5.0,
                },
            );
        }
        assert_eq!(cluster.ready(), 9);
    }

    /// A node dead for less than the notice was never marked down.
    #[test]
    fn a_node_back_before_the_notice_was_never_lost() {
        let mut cluster = Cluster::new(ReplicaParams::default(), 9);
        let mut swarm = ModelSwarm::new().with_nodes(Some(ModelNodes::new(3, None)));
        swarm.node_out(&mut cluster, 0, (0, 10_000), true);
        let view = swarm.read(&mut cluster, 30_000);
        assert_eq!(view.placement.node_lost_ms, None);
        assert_eq!(view.placement.serving_nodes, Some(3));
    }
}
