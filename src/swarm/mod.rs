//! The Swarm service as andon reads and writes it, over the Docker Engine API (bollard).
//!
//! Writes follow optimistic concurrency: the caller edits the spec it inspected and sends
//! it back with that version. A stale version is answered with a 500 "update out of
//! sequence" (not a 409); `update` maps it to [`SwarmError::OutOfSequence`].

use crate::reconcile::UpdateState;
use bollard::errors::Error as DockerError;
use bollard::models::{ServiceSpec, ServiceUpdateStatusStateEnum, TaskState};
use bollard::query_parameters::{
    InspectServiceOptions, ListNodesOptions, ListTasksOptions, UpdateServiceOptions,
};
use bollard::Docker;
use std::collections::HashMap;

mod nodes;
pub use nodes::{add_load, addresses, placement, NodeInfo, NodeTasks, NodeWatch};

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

    /// The tasks still meant to run after a scale-down to `replicas`: Swarm's orchestrator
    /// takes the ones it stops out of desired state running a moment after the write, and
    /// signals their containers about then. Polls until at most `replicas` are left or
    /// `wait` has passed (an update in progress can keep more listed), and returns the
    /// last listing. In steady state each slot has one task meant to run, so the count
    /// drops only once Swarm has marked the ones it stops.
    pub async fn tasks_after_scale_down(
        &self,
        name: &str,
        replicas: u32,
        wait: std::time::Duration,
    ) -> Result<Vec<TaskInfo>, SwarmError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let tasks = self.tasks(name).await?;
            if tasks.len() <= replicas as usize {
                return Ok(tasks);
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::debug!(
                    service = name,
                    listed = tasks.len(),
                    replicas,
                    "still more tasks than replicas after the scale-down's wait"
                );
                return Ok(tasks);
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
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
