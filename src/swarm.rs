//! The Swarm service as andon reads and writes it, over the Docker Engine API (bollard).
//!
//! Writes follow optimistic concurrency: the caller edits the spec it inspected and sends
//! it back with that version. A stale version is answered with a 500 "update out of
//! sequence" (not a 409); `update` maps it to [`SwarmError::OutOfSequence`].

use crate::core::placement::Placement;
use crate::reconcile::UpdateState;
use bollard::errors::Error as DockerError;
use bollard::models::{ServiceSpec, ServiceUpdateStatusStateEnum, TaskState};
use bollard::query_parameters::{
    InspectServiceOptions, ListNodesOptions, ListTasksOptions, UpdateServiceOptions,
};
use bollard::Docker;
use std::collections::HashMap;

/// The label that opts a service in: andon never touches a service without it.
pub const OPT_IN_LABEL: &str = "andon.enable";

#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("service `{0}` not found")]
    NotFound(String),
    #[error("update out of sequence (another writer changed the service)")]
    OutOfSequence,
    #[error("docker: {0}")]
    Docker(#[from] DockerError),
}

/// A service as inspected.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    pub id: String,
    pub name: String,
    pub version: u64,
    pub replicas: u32,
    pub labels: HashMap<String, String>,
    /// Swarm's update status: progressing, paused, or none.
    pub update: UpdateState,
    /// When the update started (ms since the epoch), if Swarm says.
    pub update_started_ms: Option<u64>,
    pub spec: ServiceSpec,
}

impl ServiceInfo {
    pub fn opted_in(&self) -> bool {
        self.labels.get(OPT_IN_LABEL).is_some_and(|v| v == "true")
    }
}

/// A task that should be running.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    pub id: String,
    pub slot: Option<i64>,
    pub running: bool,
    /// Swarm could not place it: pending with "no suitable node" (not enough CPU or
    /// memory on any node, or no node meets its constraints). Not capacity.
    pub unplaceable: bool,
    /// When its state last changed (ms since the epoch), if Swarm says.
    pub since_ms: Option<u64>,
    pub container_id: Option<String>,
    pub node_id: Option<String>,
    /// Host-mode published ports as (target, published).
    pub ports: Vec<(u16, u16)>,
}

impl TaskInfo {
    /// The published port of the given target port.
    pub fn host_port(&self, target: u16) -> Option<u16> {
        self.ports
            .iter()
            .find(|(t, _)| *t == target)
            .map(|(_, p)| *p)
    }

    /// Where the target port is reached: its node's address (`nodes`: node id → address;
    /// an unknown node is 127.0.0.1) and its published port, as HOST:PORT.
    pub fn address(&self, target: u16, nodes: &HashMap<String, String>) -> Option<String> {
        let port = self.host_port(target)?;
        let host = self
            .node_id
            .as_ref()
            .and_then(|n| nodes.get(n))
            .map_or("127.0.0.1", String::as_str);
        Some(format!("{host}:{port}"))
    }
}

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

#[derive(Clone)]
pub struct Swarm {
    pub docker: Docker,
}

impl Swarm {
    /// Connects as `DOCKER_HOST` says (default the local socket) and negotiates the API
    /// version: bollard speaks a newer API than Docker 20.10's 1.41.
    pub async fn connect() -> Result<Swarm, DockerError> {
        let docker = Docker::connect_with_defaults()?.negotiate_version().await?;
        Ok(Swarm { docker })
    }

    pub async fn inspect(&self, name: &str) -> Result<ServiceInfo, SwarmError> {
        let svc = match self
            .docker
            .inspect_service(name, None::<InspectServiceOptions>)
            .await
        {
            Ok(s) => s,
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Err(SwarmError::NotFound(name.to_string())),
            Err(e) => return Err(e.into()),
        };
        let spec = svc.spec.clone().unwrap_or_default();
        let replicas = spec
            .mode
            .as_ref()
            .and_then(|m| m.replicated.as_ref())
            .and_then(|r| r.replicas)
            .unwrap_or(0)
            .clamp(0, u32::MAX as i64) as u32;
        use ServiceUpdateStatusStateEnum as S;
        let update = match svc.update_status.as_ref().and_then(|u| u.state) {
            Some(S::UPDATING | S::ROLLBACK_STARTED) => UpdateState::Progressing,
            Some(S::PAUSED | S::ROLLBACK_PAUSED) => UpdateState::Paused,
            Some(S::COMPLETED | S::ROLLBACK_COMPLETED) => UpdateState::Completed,
            _ => UpdateState::None,
        };
        let update_started_ms = svc
            .update_status
            .as_ref()
            .and_then(|u| u.started_at.as_deref())
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
        Ok(ServiceInfo {
            id: svc.id.unwrap_or_default(),
            name: name.to_string(),
            version: svc.version.and_then(|v| v.index).unwrap_or(0),
            replicas,
            labels: spec.labels.clone().unwrap_or_default(),
            update,
            update_started_ms,
            spec,
        })
    }

    /// Tasks whose desired state is running (starting ones included; `running` tells).
    pub async fn tasks(&self, name: &str) -> Result<Vec<TaskInfo>, SwarmError> {
        let filters = HashMap::from([
            ("service".to_string(), vec![name.to_string()]),
            ("desired-state".to_string(), vec!["running".to_string()]),
        ]);
        let tasks = self
            .docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters),
            }))
            .await?;
        Ok(tasks
            .into_iter()
            .map(|t| {
                let status = t.status.unwrap_or_default();
                let mut ports: Vec<(u16, u16)> = status
                    .port_status
                    .and_then(|p| p.ports)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| Some((p.target_port? as u16, p.published_port? as u16)))
                    .collect();
                // Host-mode ports are listed once per address family, and on Docker 20.10
                // the two may differ (IPv4 first, then IPv6, as `docker service ps`
                // shows them): keep the first of each pair, in the API's order.
                let mut seen = Vec::new();
                ports.retain(|p| {
                    let first = !seen.contains(&p.0);
                    seen.push(p.0);
                    first
                });
                let unplaceable = status.state == Some(TaskState::PENDING)
                    && status
                        .err
                        .as_deref()
                        .is_some_and(|e| e.starts_with("no suitable node"));
                let since_ms = status
                    .timestamp
                    .as_deref()
                    .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as u64);
                TaskInfo {
                    id: t.id.unwrap_or_default(),
                    slot: t.slot,
                    running: status.state == Some(TaskState::RUNNING),
                    unplaceable,
                    since_ms,
                    container_id: status.container_status.and_then(|c| c.container_id),
                    node_id: t.node_id,
                    ports,
                }
            })
            .collect())
    }

    /// Node id → address, for reaching host-mode ports of tasks on other nodes.
    pub async fn node_addresses(&self) -> Result<HashMap<String, String>, SwarmError> {
        Ok(addresses(&self.nodes().await?))
    }

    /// The swarm's nodes, by id.
    pub async fn nodes(&self) -> Result<HashMap<String, NodeInfo>, SwarmError> {
        use bollard::models::{NodeSpecAvailabilityEnum as A, NodeState as S};
        let nodes = self.docker.list_nodes(None::<ListNodesOptions>).await?;
        Ok(nodes
            .into_iter()
            .filter_map(|n| {
                let status = n.status.unwrap_or_default();
                let spec = n.spec.unwrap_or_default();
                let labels = spec.labels.unwrap_or_default();
                let hostname = n.description.and_then(|d| d.hostname).unwrap_or_default();
                let id = n.id?;
                Some((
                    id.clone(),
                    NodeInfo {
                        // Nodes on one machine share a hostname: a node label, when the
                        // operator set one (`andon.node`), names them apart.
                        name: labels.get("andon.node").cloned().unwrap_or(hostname),
                        id,
                        address: status.addr.unwrap_or_default(),
                        ready: status.state != Some(S::DOWN),
                        draining: spec.availability == Some(A::DRAIN),
                        paused: spec.availability == Some(A::PAUSE),
                    },
                ))
            })
            .collect())
    }

    /// Sends back an edited spec with the version it was inspected at.
    pub async fn update(
        &self,
        name: &str,
        version: u64,
        spec: ServiceSpec,
    ) -> Result<(), SwarmError> {
        let opts = UpdateServiceOptions {
            version: i32::try_from(version).unwrap_or(i32::MAX),
            ..Default::default()
        };
        match self.docker.update_service(name, spec, opts, None).await {
            Ok(_) => Ok(()),
            Err(DockerError::DockerResponseServerError { message, .. })
                if message.contains("update out of sequence") =>
            {
                Err(SwarmError::OutOfSequence)
            }
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Err(SwarmError::NotFound(name.to_string())),
            Err(e) => Err(e.into()),
        }
    }
}

/// Sets replicas on a spec (creating the nested parts if missing).
pub fn set_replicas(spec: &mut ServiceSpec, replicas: u32) {
    spec.mode
        .get_or_insert_with(Default::default)
        .replicated
        .get_or_insert_with(Default::default)
        .replicas = Some(replicas as i64);
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
