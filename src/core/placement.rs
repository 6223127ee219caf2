//! What the cluster can hold. HPA leaves this to the scheduler and the cluster
//! autoscaler; on Swarm there is no cluster autoscaler, so the controller itself must
//! see that a replica it asked for found no node, and must not mistake a task on a dead
//! or drained node for capacity.
//!
//! - **Unplaceable tasks** (pending, "no suitable node": no node has the CPU or memory
//!   they reserve, or none meets their constraints) are not capacity. While there are
//!   any, the replicas are not raised: the cluster holds `current - unplaceable`, and
//!   the pending tasks are Swarm's own queue, placed the moment capacity returns (a node
//!   joins, another service shrinks). Asking for more would only lengthen that queue.
//!   Scaling down is not held: it removes pending tasks first.
//! - **Demand past what fits** raises the tier to at least red: shown in `/status` and
//!   the metrics (not in the generated alerts, which read the signals), so an operator
//!   adds a node. It does not take red's action: red's floor cannot be placed, and
//!   red's shedding starts at a fraction of the policy's capacity, which is
//!   conservative (a target utilisation below 1): on the
//!   modelled cluster it shed 16% of a drained peak whose latency was fine, and those
//!   sheds, counted as errors, lifted the tier to emergency (chaos/node-drain-at-peak).
//!   Latency is what shedding answers, and the latency tiers still do. The tier's own
//!   state machine does not see this raise: when the tasks are placed it is gone.
//! - **Moving tasks** (meant to run but not running yet: starting, or on a node that is
//!   down or draining) are not ready capacity (the shell does not count them), and while
//!   there are any, no scale-down: Swarm has yet to place them, and their metrics are
//!   not in the sums (Jidoka: a partial view is bad data for a scale-down).
//! - **A lost node.** When a node stops serving, Swarm re-places its tasks at once (or
//!   leaves them pending when nothing fits), but their counters vanished from the sums,
//!   and a rate reads low until its window has forgotten them. So for the signals'
//!   window (plus a quarter, for the scrape) after a node is lost, no scale-down.

use super::capacity;
use super::reason::Reason;
use crate::policy::{Policy, Tier};
use serde::{Deserialize, Serialize};

/// The service's tasks as Swarm placed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Placement {
    /// Tasks pending with "no suitable node".
    #[serde(default)]
    pub unplaceable: u32,
    /// Tasks meant to run that do not yet: starting, or on a node that is down or
    /// draining.
    #[serde(default)]
    pub moving: u32,
    /// When a node last stopped serving (down, or drained), as the shell saw it.
    #[serde(default)]
    pub node_lost_ms: Option<u64>,
    /// Nodes that take new tasks (ready, neither drained nor paused); `None` when not
    /// known.
    #[serde(default)]
    pub serving_nodes: Option<u32>,
}

impl Placement {
    /// The replicas the nodes hold, when some of the current ones found no node.
    pub fn fits(self, current: u32) -> Option<u32> {
        (self.unplaceable > 0).then(|| current.saturating_sub(self.unplaceable))
    }

    /// The policy's bound: `per_node` replicas to each serving node.
    pub fn node_bound(self, per_node: Option<u32>) -> Option<u32> {
        per_node
            .zip(self.serving_nodes)
            .map(|(p, n)| p.saturating_mul(n))
    }
}

/// The tier, raised to red when demand needs more replicas than the nodes hold (tasks
/// pending for want of a node, or the policy's replicas per node). The decision acts
/// as the signals' tier (no floor, no shedding of its own). `raised` remembers the
/// raise from one decision to the next: it is entered past the tolerance band and
/// left only once demand fits at target (ratio ≤ 1), so a demand hovering at the line
/// does not flip the shown tier, and the `andon.tier` label, tick by tick.
pub fn tier_floor(
    policy: &Policy,
    q: &super::tier::Qualities,
    (placement, node_bound): (Placement, Option<u32>),
    (current, tier): (u32, Tier),
    raised: &mut bool,
    reasons: &mut Vec<Reason>,
) -> Tier {
    // The bound counts the nodes that take new tasks; tasks already running past it (on
    // a paused node, or packed by Swarm after a loss) are capacity all the same.
    let node_bound = node_bound.map(|b| b.max(current));
    let fits = match (placement.fits(current), node_bound) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let Some((fits, ratio)) =
        fits.and_then(|f| capacity::load_ratio(&policy.capacity, q, f).map(|r| (f, r)))
    else {
        *raised = false;
        return tier;
    };
    // Past the tolerance band: the same test that would ask for another replica.
    let line = if *raised {
        1.0
    } else {
        1.0 + policy.capacity.tolerance
    };
    *raised = ratio > line;
    if !*raised || tier >= Tier::Red {
        return tier;
    }
    reasons.push(Reason::CannotPlace {
        ratio,
        fits,
        tier: Tier::Red,
    });
    Tier::Red
}

/// Caps a scale-up while tasks cannot be placed or at the policy's replicas per node,
/// and holds a scale-down while tasks move or for `grace_ms` after a node was lost.
/// Returns the replicas to ask for. A node bound below the current replicas (a node
/// lost) does not scale down: Swarm keeps those tasks pending until a node returns.
pub fn limit(
    (placement, node_bound): (Placement, Option<u32>),
    current: u32,
    desired: u32,
    (now_ms, grace_ms): (u64, u64),
    reasons: &mut Vec<Reason>,
) -> u32 {
    if let Some(bound) = node_bound.filter(|b| desired > current && desired > *b) {
        let to = bound.max(current);
        reasons.push(Reason::NodesHold {
            wanted: desired,
            bound,
            nodes: placement.serving_nodes.unwrap_or(0),
        });
        return limit((placement, None), current, to, (now_ms, grace_ms), reasons);
    }
    if desired > current && placement.unplaceable > 0 {
        reasons.push(Reason::Unplaceable {
            pending: placement.unplaceable,
            fits: current.saturating_sub(placement.unplaceable),
            wanted: desired,
        });
        return current;
    }
    if desired >= current {
        return desired;
    }
    if placement.moving > 0 {
        reasons.push(Reason::TasksMoving {
            tasks: placement.moving,
            wanted: desired,
        });
        return current;
    }
    let since_lost = placement.node_lost_ms.map(|at| now_ms.saturating_sub(at));
    if let Some(ago) = since_lost.filter(|ago| *ago < grace_ms) {
        reasons.push(Reason::NodeLost {
            ago_s: ago as f64 / 1000.0,
            grace_s: grace_ms as f64 / 1000.0,
            wanted: desired,
        });
        return current;
    }
    desired
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_only_when_something_is_pending() {
        let p = Placement::default();
        assert_eq!(p.fits(8), None);
        let p = Placement {
            unplaceable: 2,
            ..Default::default()
        };
        assert_eq!(p.fits(8), Some(6));
        assert_eq!(p.fits(1), Some(0));
    }

    #[test]
    fn unplaceable_caps_a_scale_up_but_not_a_scale_down() {
        let p = Placement {
            unplaceable: 2,
            ..Default::default()
        };
        let mut r = Vec::new();
        assert_eq!(limit((p, None), 8, 12, NOW, &mut r), 8);
        assert!(matches!(
            r[0],
            Reason::Unplaceable {
                pending: 2,
                fits: 6,
                wanted: 12
            }
        ));
        assert_eq!(limit((p, None), 8, 5, NOW, &mut Vec::new()), 5);
        assert_eq!(
            limit((Placement::default(), None), 8, 12, NOW, &mut Vec::new()),
            12
        );
    }

    const NOW: (u64, u64) = (100_000, 75_000);

    #[test]
    fn moving_tasks_hold_a_scale_down_but_not_a_scale_up() {
        let p = Placement {
            moving: 3,
            ..Default::default()
        };
        let mut r = Vec::new();
        assert_eq!(limit((p, None), 6, 4, NOW, &mut r), 6);
        assert!(matches!(
            r[0],
            Reason::TasksMoving {
                tasks: 3,
                wanted: 4
            }
        ));
        assert_eq!(limit((p, None), 6, 9, NOW, &mut Vec::new()), 9);
    }

    #[test]
    fn a_lost_node_holds_a_scale_down_for_the_grace_only() {
        let lost = |ago: u64| Placement {
            node_lost_ms: Some(NOW.0 - ago),
            ..Default::default()
        };
        let mut r = Vec::new();
        assert_eq!(limit((lost(10_000), None), 6, 4, NOW, &mut r), 6);
        assert!(matches!(r[0], Reason::NodeLost { wanted: 4, .. }), "{r:?}");
        assert_eq!(limit((lost(80_000), None), 6, 4, NOW, &mut Vec::new()), 4);
        assert_eq!(limit((lost(10_000), None), 6, 9, NOW, &mut Vec::new()), 9);
    }

    /// Three replicas to a node on two serving nodes: a scale-up stops at 6, a scale-up
    /// from past it (a node lost) is no scale-down, and unknown nodes bound nothing.
    #[test]
    fn replicas_per_node_bound_a_scale_up_only() {
        let p = Placement {
            serving_nodes: Some(2),
            ..Default::default()
        };
        let bound = p.node_bound(Some(3));
        assert_eq!(bound, Some(6));
        let mut r = Vec::new();
        assert_eq!(limit((p, bound), 4, 9, NOW, &mut r), 6);
        assert!(
            matches!(
                r[0],
                Reason::NodesHold {
                    wanted: 9,
                    bound: 6,
                    nodes: 2
                }
            ),
            "{r:?}"
        );
        assert_eq!(limit((p, bound), 8, 9, NOW, &mut Vec::new()), 8);
        assert_eq!(limit((p, bound), 8, 5, NOW, &mut Vec::new()), 5);
        assert_eq!(limit((p, bound), 4, 6, NOW, &mut Vec::new()), 6);
        assert_eq!(Placement::default().node_bound(Some(3)), None);
        assert_eq!(p.node_bound(None), None);
    }
}
