//! Faults at their scenario times: kill or pause tasks' containers, stop Prometheus (or
//! make it unreachable), SIGKILL the controller and let Swarm restart it, drain a node.

use super::FaultEvent;
use crate::scenario::{Fault, FaultKind};
use crate::swarm::Swarm;
use bollard::models::NodeSpecAvailabilityEnum as Availability;
use bollard::query_parameters::KillContainerOptions;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub struct Context {
    pub swarm: Option<Swarm>,
    pub service: Option<String>,
    pub controller_service: Option<String>,
    pub prometheus_pidfile: Option<String>,
    pub pending: Pending,
}

/// What an injected fault leaves to give back: a node's availability as it was, paused
/// containers, a stopped Prometheus.
#[derive(Debug, Clone)]
pub enum Undo {
    Availability {
        node: String,
        previous: Availability,
    },
    Unpause(Vec<String>),
    ResumePrometheus(String),
}

/// The undos not yet done. Each is done at its fault's end, or, when the drill ends
/// first (a `for` past its end) or is interrupted, by [`undo_all`]: a drill never
/// leaves a node drained, tasks paused or Prometheus stopped behind it.
#[derive(Debug, Clone, Default)]
pub struct Pending(Rc<RefCell<BTreeMap<u32, Undo>>>);

impl Pending {
    fn add(&self, undo: Undo) -> u32 {
        let mut m = self.0.borrow_mut();
        let key = m.keys().next_back().map_or(0, |k| k + 1);
        m.insert(key, undo);
        key
    }

    /// Does undo `key` after `after`, unless [`undo_all`] did it first.
    fn schedule(&self, key: u32, after: Duration, swarm: Option<Swarm>) {
        let pending = self.clone();
        tokio::task::spawn_local(async move {
            tokio::time::sleep(after).await;
            let undo = pending.0.borrow_mut().remove(&key);
            if let Some(u) = undo {
                u.apply(swarm.as_ref()).await;
            }
        });
    }
}

/// Does every pending undo now. Returns what it did, for the log and the user.
pub async fn undo_all(pending: &Pending, swarm: Option<&Swarm>) -> Vec<String> {
    let all = std::mem::take(&mut *pending.0.borrow_mut());
    let mut done = Vec::new();
    for (_, u) in all {
        done.push(u.apply(swarm).await);
    }
    done
}

impl Undo {
    /// Gives back what the fault took, retrying a failed node update (another writer
    /// bumped its version, or the managers are electing a leader). Returns what it did.
    async fn apply(&self, swarm: Option<&Swarm>) -> String {
        match self {
            Undo::Availability { node, previous } => {
                let Some(sw) = swarm else {
                    return format!("node {node}: no Docker connection to give it back");
                };
                let mut last = String::new();
                for attempt in 0..5u32 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                    }
                    match set_availability(sw, node, *previous).await {
                        Ok(_) => return format!("node {node} back to {previous}"),
                        Err(e) => last = e,
                    }
                }
                tracing::error!(%node, error = %last, "could not give the node its availability back: docker node update --availability {previous} {node}");
                format!("node {node} NOT given back ({last})")
            }
            Undo::Unpause(ids) => {
                let Some(sw) = swarm else {
                    return "no Docker connection to unpause".into();
                };
                for id in ids {
                    let _ = sw.docker.unpause_container(id).await;
                }
                format!("unpaused {}", ids.len())
            }
            Undo::ResumePrometheus(pf) => {
                resume_prometheus(pf);
                "Prometheus resumed".into()
            }
        }
    }
}

pub async fn run(
    ctx: Context,
    faults: Vec<Fault>,
    start: Instant,
    log: Rc<RefCell<Vec<FaultEvent>>>,
) {
    for f in faults {
        let at = tokio::time::Instant::from_std(start + f.at);
        tokio::time::sleep_until(at).await;
        let (injected, detail) = inject(&ctx, &f.kind).await;
        if injected {
            tracing::info!(fault = %f.describe(), %detail, "fault injected");
        } else {
            tracing::warn!(fault = %f.describe(), %detail, "fault NOT injected");
        }
        log.borrow_mut().push(FaultEvent {
            t_s: start.elapsed().as_secs_f64(),
            fault: f.describe(),
            injected,
            detail,
        });
    }
}

async fn containers(swarm: &Swarm, service: &str, n: u32) -> crate::Result<Vec<String>> {
    let tasks = swarm
        .tasks(service)
        .await
        .map_err(|e| crate::Error::Runtime(e.to_string()))?;
    Ok(tasks
        .into_iter()
        .filter(|t| t.running)
        .filter_map(|t| t.container_id)
        .take(n as usize)
        .collect())
}

/// Sets a node's availability; the node is named by its `andon.node` label, its hostname
/// or its id. Returns its id and the availability it had.
async fn set_availability(
    swarm: &Swarm,
    name: &str,
    to: Availability,
) -> Result<(String, Availability), String> {
    use bollard::query_parameters::{ListNodesOptions, UpdateNodeOptions};
    let nodes = swarm
        .docker
        .list_nodes(None::<ListNodesOptions>)
        .await
        .map_err(|e| format!("list nodes: {e}"))?;
    let named = |n: &&bollard::models::Node| {
        let label = n
            .spec
            .as_ref()
            .and_then(|s| s.labels.as_ref())
            .and_then(|l| l.get("andon.node"));
        let host = n.description.as_ref().and_then(|d| d.hostname.as_ref());
        label.is_some_and(|l| l == name)
            || n.id.as_deref() == Some(name)
            || host.is_some_and(|h| h == name)
    };
    let matching: Vec<_> = nodes.iter().filter(named).collect();
    let [node] = matching.as_slice() else {
        return Err(format!(
            "node `{name}`: {} nodes match (by the andon.node label, hostname or id); allowed: exactly one",
            matching.len()
        ));
    };
    let id = node.id.clone().unwrap_or_default();
    let mut spec = node.spec.clone().unwrap_or_default();
    let previous = spec.availability.unwrap_or(Availability::ACTIVE);
    spec.availability = Some(to);
    let version = node.version.as_ref().and_then(|v| v.index).unwrap_or(0);
    swarm
        .docker
        .update_node(
            &id,
            spec,
            UpdateNodeOptions {
                version: version as i64,
            },
        )
        .await
        .map_err(|e| format!("update node {id}: {e}"))?;
    Ok((id, previous))
}

fn signal_pidfile(pidfile: &str, sig: &str) -> crate::Result<()> {
    use crate::Error::Runtime;
    let pid = std::fs::read_to_string(pidfile).map_err(|e| Runtime(format!("{pidfile}: {e}")))?;
    let pid = pid.trim();
    let ok = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .map_err(|e| Runtime(e.to_string()))?
        .success();
    if ok {
        Ok(())
    } else {
        Err(Runtime(format!("kill {sig} {pid} failed")))
    }
}

async fn inject(ctx: &Context, kind: &FaultKind) -> (bool, String) {
    match kind {
        FaultKind::KillTasks(n) => {
            let (Some(sw), Some(svc)) = (&ctx.swarm, &ctx.service) else {
                return (false, "killing tasks needs --target swarm:SERVICE".into());
            };
            match containers(sw, svc, *n).await {
                Ok(ids) if ids.len() as u32 == *n => {
                    for id in &ids {
                        if let Err(e) = sw
                            .docker
                            .kill_container(id, None::<KillContainerOptions>)
                            .await
                        {
                            return (false, format!("kill {id}: {e}"));
                        }
                    }
                    (
                        true,
                        format!(
                            "killed {}",
                            ids.iter()
                                .map(|i| &i[..12.min(i.len())])
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                }
                Ok(ids) => (false, format!("only {} running task(s) to kill", ids.len())),
                Err(e) => (false, e.to_string()),
            }
        }
        FaultKind::NodeDrain { node, duration } => {
            let Some(sw) = &ctx.swarm else {
                return (false, "draining a node needs --target swarm:SERVICE".into());
            };
            match set_availability(sw, node, Availability::DRAIN).await {
                Ok((id, previous)) => {
                    let undo = Undo::Availability {
                        node: node.clone(),
                        previous,
                    };
                    let key = ctx.pending.add(undo);
                    ctx.pending.schedule(key, *duration, Some(sw.clone()));
                    (
                        true,
                        format!(
                            "node {node} ({id}) drained for {} (was {previous})",
                            humantime::format_duration(*duration)
                        ),
                    )
                }
                Err(e) => (false, e),
            }
        }
        FaultKind::NodeDown { .. } => (
            false,
            "a drill cannot stop a node through the Docker API; on the local cluster, scripts/nodes.sh cut-node takes one off the network (tests/nodes does)".into(),
        ),
        FaultKind::PauseTasks { count, duration } => {
            let (Some(sw), Some(svc)) = (&ctx.swarm, &ctx.service) else {
                return (false, "pausing tasks needs --target swarm:SERVICE".into());
            };
            match containers(sw, svc, *count).await {
                Ok(ids) if !ids.is_empty() => {
                    for id in &ids {
                        if let Err(e) = sw.docker.pause_container(id).await {
                            return (false, format!("pause {id}: {e}"));
                        }
                    }
                    let key = ctx.pending.add(Undo::Unpause(ids.clone()));
                    ctx.pending.schedule(key, *duration, Some(sw.clone()));
                    (
                        true,
                        format!(
                            "paused {} for {}",
                            ids.len(),
                            humantime::format_duration(*duration)
                        ),
                    )
                }
                Ok(_) => (false, "no running task to pause".into()),
                Err(e) => (false, e.to_string()),
            }
        }
        FaultKind::PrometheusDown(d) => {
            let Some(pf) = &ctx.prometheus_pidfile else {
                return (
                    false,
                    "stopping Prometheus needs --prometheus-pidfile".into(),
                );
            };
            // SIGSTOP: Prometheus stops answering (queries time out), then SIGCONT.
            if let Err(e) = signal_pidfile(pf, "-STOP") {
                return (false, e.to_string());
            }
            let key = ctx.pending.add(Undo::ResumePrometheus(pf.clone()));
            ctx.pending.schedule(key, *d, None);
            (
                true,
                format!(
                    "Prometheus stopped (SIGSTOP) for {}",
                    humantime::format_duration(*d)
                ),
            )
        }
        FaultKind::WriteFailures(_)
        | FaultKind::RollingUpdate { .. }
        | FaultKind::ScrapeGap { .. }
        | FaultKind::PrometheusStale(_) => (
            false,
            "this fault is modelled by `andon simulate` only; a drill cannot inject it yet".into(),
        ),
        FaultKind::RestartController { .. } => {
            let (Some(sw), Some(svc)) = (&ctx.swarm, &ctx.controller_service) else {
                return (
                    false,
                    "restarting the controller needs --controller-service NAME".into(),
                );
            };
            match containers(sw, svc, 1).await {
                Ok(ids) if !ids.is_empty() => match sw
                    .docker
                    .kill_container(&ids[0], None::<KillContainerOptions>)
                    .await
                {
                    Ok(()) => (true, "SIGKILLed the controller; Swarm restarts it".into()),
                    Err(e) => (false, e.to_string()),
                },
                Ok(_) => (false, format!("no running task of {svc}")),
                Err(e) => (false, e.to_string()),
            }
        }
    }
}

/// Sends SIGCONT to Prometheus (harmless when it runs).
fn resume_prometheus(pidfile: &str) {
    if let Err(e) = signal_pidfile(pidfile, "-CONT") {
        tracing::error!(error = %e, "could not resume Prometheus: resume it by hand (kill -CONT)");
    }
}
