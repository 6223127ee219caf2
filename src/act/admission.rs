//! The HTTP shedding actuator: POST the admission limit to every running task's admin
//! endpoint (`andon stand-in` implements it). Level-triggered: sent every tick, so a
//! replica that restarted, or missed one, converges at the next.

use crate::swarm::TaskInfo;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;
use tokio::task::JoinSet;

/// Where a replica serves its admission endpoint.
pub const ADMISSION_PATH: &str = "/admin/admission";

/// The body. `max_rps`: admit at most this many requests per second at the replica,
/// shared fairly among its sessions (andon sends it: its fraction of the policy's
/// per-replica throughput capacity). Without it, `admit` is a fraction of the replica's
/// own capacity (a policy with no throughput capacity). `admit: null` admits all.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Admission {
    pub admit: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rps: Option<f64>,
    /// At most this many sessions at the replica: a new one past it is refused at once
    /// (503 with Retry-After), whatever the shedding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u32>,
}

impl Admission {
    pub const ALL: Admission = Admission {
        admit: None,
        max_rps: None,
        max_sessions: None,
    };
}

#[derive(Clone)]
pub struct AdmissionClient {
    http: reqwest::Client,
    /// The container port the admin endpoint listens on.
    pub port: u16,
}

impl AdmissionClient {
    pub fn new(port: u16, timeout: Duration) -> crate::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .map_err(|e| crate::Error::Environment(format!("cannot build the HTTP client: {e}")))?;
        Ok(AdmissionClient { http, port })
    }

    /// Posts each service's limit to its running tasks, all at once; returns the failures.
    pub async fn apply_all<'a>(
        &self,
        work: impl IntoIterator<Item = &'a (Vec<TaskInfo>, Admission)>,
        nodes: &HashMap<String, String>,
    ) -> usize {
        let mut set = JoinSet::new();
        for (tasks, admit) in work {
            let (me, tasks, nodes, admit) = (self.clone(), tasks.clone(), nodes.clone(), *admit);
            set.spawn(async move { me.apply(&tasks, &nodes, admit).await.1 });
        }
        let mut failed = 0;
        while let Some(r) = set.join_next().await {
            failed += r.unwrap_or(1);
        }
        failed
    }

    /// Posts to every running task; returns (sent, failed) counts. `nodes` maps node ids
    /// to addresses; a task on an unknown node is tried on 127.0.0.1.
    pub async fn apply(
        &self,
        tasks: &[TaskInfo],
        nodes: &HashMap<String, String>,
        admission: Admission,
    ) -> (usize, usize) {
        let body = match serde_json::to_string(&admission) {
            Ok(b) => b,
            Err(_) => return (0, tasks.len()),
        };
        let mut set = JoinSet::new();
        for t in tasks.iter().filter(|t| t.running) {
            let Some(addr) = t.address(self.port, nodes) else {
                continue;
            };
            let url = format!("http://{addr}{ADMISSION_PATH}");
            let (http, body, task) = (self.http.clone(), body.clone(), t.id.clone());
            set.spawn(async move {
                let r = http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().is_success() => true,
                    Ok(resp) => {
                        tracing::warn!(%task, %url, status = %resp.status(), "admission endpoint refused the limit");
                        false
                    }
                    Err(e) => {
                        tracing::warn!(%task, %url, error = %e, "admission endpoint unreachable");
                        false
                    }
                }
            });
        }
        let (mut sent, mut failed) = (0, 0);
        while let Some(r) = set.join_next().await {
            match r {
                Ok(true) => sent += 1,
                _ => failed += 1,
            }
        }
        (sent, failed)
    }
}
