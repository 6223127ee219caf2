//! The nodes under a service's tasks: which tasks are capacity (they run on a node that
//! serves), which are on their way or find no node, where the load sits (per-node rows
//! for `/status`), and when a node was last lost.

use super::TaskInfo;
use crate::core::placement::Placement;
use std::collections::HashMap;

/// A node as andon needs it: where its host-mode ports are, and whether its tasks are
/// capacity (a node that is down or drained is not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub name: String,
    pub address: String,
    /// Swarm's node state is not `down`. `unknown` (every node, for a moment, after the
    /// manager leader changes) and `disconnected` leave the node's tasks where they are,
    /// so they still serve; only `down` makes Swarm re-place them.
    pub ready: bool,
    /// Availability `drain`: Swarm moves its tasks away. (`pause` only stops new
    /// placements; its running tasks still serve.)
    pub draining: bool,
    /// Availability `pause`: its tasks serve, but Swarm places no new one there.
    pub paused: bool,
}

impl NodeInfo {
    /// Whether its running tasks count as capacity.
    pub fn serves(&self) -> bool {
        self.ready && !self.draining
    }

    /// Whether a new task can land on it (for `max_replicas_per_node`).
    pub fn takes_tasks(&self) -> bool {
        self.serves() && !self.paused
    }
}

/// A service's tasks per node, for `/status`: where the load sits.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeTasks {
    pub id: String,
    /// The node's `andon.node` label, or its hostname; its id when Swarm no longer
    /// lists it.
    pub node: String,
    /// `ready`, `down`, `drain`, `gone` (no longer a node of the swarm), or `unknown`
    /// (the node list could not be read).
    pub state: String,
    /// Tasks of the service meant to run there, and how many run.
    pub tasks: u32,
    pub running: u32,
    /// The policy's `spread.query` summed over its tasks there: where the load sits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<f64>,
}

/// What a service's tasks are worth: the ones that run on a node that serves, and the
/// placement the core needs (tasks with no node, tasks on their way). With no node list
/// (the read failed), every node is taken to serve. A task that has been on its way
/// (starting, assigned) for longer than `max_moving_ms` is not counted as moving: one
/// that never starts (a failing healthcheck, a hung pull) must not hold scale-down for
/// good.
pub fn placement(
    tasks: &[TaskInfo],
    nodes: &HashMap<String, NodeInfo>,
    (now_ms, max_moving_ms): (u64, u64),
) -> (Vec<TaskInfo>, Placement, Vec<NodeTasks>) {
    let mut p = Placement::default();
    let mut serving = Vec::new();
    let mut per_node: Vec<NodeTasks> = Vec::new();
    let recent = |t: &TaskInfo| {
        t.since_ms
            .is_none_or(|s| now_ms.saturating_sub(s) <= max_moving_ms)
    };
    for t in tasks {
        if t.unplaceable {
            p.unplaceable += 1;
            continue;
        }
        // Not assigned yet (pending, allocating): Swarm is still placing it.
        let Some(node_id) = &t.node_id else {
            p.moving += recent(t) as u32;
            continue;
        };
        let node = nodes.get(node_id);
        let serves = nodes.is_empty() || node.is_some_and(NodeInfo::serves);
        if serves && t.running {
            serving.push(t.clone());
        } else if !serves || recent(t) {
            p.moving += 1;
        }
        let name = node.map_or_else(|| node_id.clone(), |n| n.name.clone());
        let state = match node {
            Some(n) if !n.ready => "down",
            Some(n) if n.draining => "drain",
            Some(_) => "ready",
            None if nodes.is_empty() => "unknown",
            None => "gone",
        };
        let i = match per_node.iter().position(|n| n.id == *node_id) {
            Some(i) => i,
            None => {
                per_node.push(NodeTasks {
                    id: node_id.clone(),
                    node: name,
                    state: state.into(),
                    tasks: 0,
                    running: 0,
                    load: None,
                });
                per_node.len() - 1
            }
        };
        per_node[i].tasks += 1;
        per_node[i].running += t.running as u32;
    }
    per_node.sort_by(|a, b| (&a.node, &a.id).cmp(&(&b.node, &b.id)));
    p.serving_nodes =
        (!nodes.is_empty()).then(|| nodes.values().filter(|n| n.takes_tasks()).count() as u32);
    (serving, p, per_node)
}

/// Adds each task's load (by task id) to its node's row. A node whose tasks have no
/// reading shows none, not zero.
pub fn add_load(per_node: &mut [NodeTasks], tasks: &[TaskInfo], load: &HashMap<String, f64>) {
    for t in tasks {
        let (Some(node), Some(v)) = (&t.node_id, load.get(&t.id)) else {
            continue;
        };
        if let Some(row) = per_node.iter_mut().find(|n| n.id == *node) {
            *row.load.get_or_insert(0.0) += v;
        }
    }
}

/// Remembers which nodes served, to date the last loss of one (down, or drained). A node
/// first seen not serving counts as lost then: after a restart, andon cannot know when.
#[derive(Debug, Default)]
pub struct NodeWatch {
    serving: HashMap<String, bool>,
    lost_ms: Option<u64>,
}

impl NodeWatch {
    /// Takes this tick's nodes (none: the list failed, nothing is known); returns when a
    /// node last stopped serving.
    pub fn see(&mut self, nodes: &HashMap<String, NodeInfo>, now_ms: u64) -> Option<u64> {
        for (id, n) in nodes {
            let was = self.serving.insert(id.clone(), n.serves());
            if !n.serves() && was != Some(false) {
                self.lost_ms = Some(now_ms);
            }
        }
        if !nodes.is_empty() {
            // A serving node removed from the swarm (`node rm --force`) is lost too.
            let mut removed_serving = false;
            self.serving.retain(|id, serving| {
                let listed = nodes.contains_key(id);
                removed_serving |= !listed && *serving;
                listed
            });
            if removed_serving {
                self.lost_ms = Some(now_ms);
            }
        }
        self.lost_ms
    }
}

/// Node id → address, for reaching host-mode ports.
pub fn addresses(nodes: &HashMap<String, NodeInfo>) -> HashMap<String, String> {
    nodes
        .iter()
        .filter(|(_, n)| !n.address.is_empty())
        .map(|(id, n)| (id.clone(), n.address.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, ready: bool, draining: bool) -> (String, NodeInfo) {
        let n = NodeInfo {
            id: id.into(),
            name: format!("name-{id}"),
            address: format!("10.0.0.{}", id.len()),
            ready,
            draining,
            paused: false,
        };
        (id.into(), n)
    }

    fn task(node: Option<&str>, running: bool, unplaceable: bool) -> TaskInfo {
        TaskInfo {
            id: "t".into(),
            slot: None,
            running,
            unplaceable,
            since_ms: None,
            container_id: None,
            node_id: node.map(String::from),
            ports: Vec::new(),
        }
    }

    #[test]
    fn only_tasks_running_on_serving_nodes_are_capacity() {
        let nodes = HashMap::from([
            node("a", true, false),
            node("b", false, false),
            node("c", true, true),
        ]);
        let tasks = [
            task(Some("a"), true, false),
            task(Some("a"), false, false),   // starting
            task(Some("b"), true, false),    // on a node that is down
            task(Some("c"), true, false),    // on a draining node
            task(Some("gone"), true, false), // on a node no longer listed
            task(None, false, true),         // no suitable node
            task(None, false, false),        // not assigned yet
        ];
        let (serving, p, per_node) = placement(&tasks, &nodes, (0, 1));
        assert_eq!(serving.len(), 1);
        assert_eq!((p.unplaceable, p.moving), (1, 5));
        assert_eq!(p.serving_nodes, Some(1), "a: ready and active");
        let mut paused = nodes.clone();
        paused.get_mut("a").unwrap().paused = true;
        let (still, p, _) = placement(&tasks, &paused, (0, 1));
        assert_eq!(
            (still.len(), p.serving_nodes),
            (1, Some(0)),
            "paused: serves, takes none"
        );
        let (_, unknown, _) = placement(&tasks, &HashMap::new(), (0, 1));
        assert_eq!(unknown.serving_nodes, None, "no node list: unknown");
        let states: Vec<(&str, &str, u32, u32)> = per_node
            .iter()
            .map(|n| (n.node.as_str(), n.state.as_str(), n.tasks, n.running))
            .collect();
        assert_eq!(
            states,
            [
                ("gone", "gone", 1, 1),
                ("name-a", "ready", 2, 1),
                ("name-b", "down", 1, 1),
                ("name-c", "drain", 1, 1)
            ]
        );
        // With no node list (the read failed), every node is taken to serve.
        let (serving, p, _) = placement(&tasks, &HashMap::new(), (0, 1));
        assert_eq!((serving.len(), p.moving), (4, 2));
        // A task starting for longer than the bound no longer holds anything; one on a
        // lost node still does (Swarm moves it away).
        let mut stuck = task(Some("a"), false, false);
        stuck.since_ms = Some(1_000);
        let lost = task(Some("b"), true, false);
        let (_, p, _) = placement(&[stuck.clone(), lost], &nodes, (100_000, 75_000));
        assert_eq!(p.moving, 1);
        let (_, p, _) = placement(&[stuck], &nodes, (50_000, 75_000));
        assert_eq!(p.moving, 1);
    }

    /// The spread: each task's load lands on its node; a node with no reading for its
    /// tasks shows none (not 0), and a reading for a task not listed is left out.
    #[test]
    fn load_sums_per_node_by_task_id() {
        let nodes = HashMap::from([node("a", true, false), node("b", true, false)]);
        let named = |id: &str, n: &str| TaskInfo {
            id: id.into(),
            ..task(Some(n), true, false)
        };
        let tasks = [named("a1", "a"), named("a2", "a"), named("b1", "b")];
        let (_, _, mut rows) = placement(&tasks, &nodes, (0, 1));
        let load = HashMap::from([
            ("a1".to_string(), 2.0),
            ("a2".into(), 3.0),
            ("zz".into(), 9.0),
        ]);
        add_load(&mut rows, &tasks, &load);
        let got: Vec<(&str, Option<f64>)> = rows.iter().map(|r| (r.id.as_str(), r.load)).collect();
        assert_eq!(got, [("a", Some(5.0)), ("b", None)]);
    }

    #[test]
    fn a_node_watch_dates_the_last_loss() {
        let mut w = NodeWatch::default();
        let all = HashMap::from([node("a", true, false), node("b", true, false)]);
        assert_eq!(w.see(&all, 1_000), None);
        let b_down = HashMap::from([node("a", true, false), node("b", false, false)]);
        assert_eq!(w.see(&b_down, 2_000), Some(2_000));
        // Still down: the loss keeps its date.
        assert_eq!(w.see(&b_down, 3_000), Some(2_000));
        assert_eq!(w.see(&all, 4_000), Some(2_000));
        let a_drained = HashMap::from([node("a", true, true), node("b", true, false)]);
        assert_eq!(w.see(&a_drained, 5_000), Some(5_000));
        // A node first seen not serving counts as lost when first seen.
        let mut fresh = NodeWatch::default();
        assert_eq!(fresh.see(&b_down, 9_000), Some(9_000));
        // A failed node list says nothing.
        assert_eq!(fresh.see(&HashMap::new(), 10_000), Some(9_000));
        // A serving node removed from the swarm is lost; a down one removed is not news.
        let mut w = NodeWatch::default();
        w.see(&all, 1_000);
        let only_a = HashMap::from([node("a", true, false)]);
        assert_eq!(w.see(&only_a, 2_000), Some(2_000));
    }
}
