//! Faults at their scenario times: kill or pause tasks' containers, stop Prometheus (or
//! make it unreachable), SIGKILL the controller and let Swarm restart it, drain a node.

use super::undo::{Pending, Undo};
use super::FaultEvent;
use crate::scenario::{Fault, FaultKind};
use crate::swarm::Swarm;
use bollard::models::{Node, NodeSpecAvailabilityEnum as Availability};
use bollard::query_parameters::KillContainerOptions;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

pub struct Context {
    pub swarm: Option<Swarm>,
    pub service: Option<String>,
    pub controller_service: Option<String>,
    pub prometheus_pidfile: Option<String>,
    pub pending: Pending,
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
        if ctx.pending.closed() {
            return;
        }
        ctx.pending.injecting(true);
        let (injected, detail) = inject(&ctx, &f.kind).await;
        ctx.pending.injecting(false);
        let closed = ctx.pending.closed();
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
        // The drill is ending: no sleep until the next fault.
        if closed {
            return;
        }
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

/// The one node named by its `andon.node` label, its hostname or its id.
async fn find_node(swarm: &Swarm, name: &str) -> Result<Option<Node>, String> {
    use bollard::query_parameters::ListNodesOptions;
    let nodes = swarm
        .docker
        .list_nodes(None::<ListNodesOptions>)
        .await
        .map_err(|e| format!("list nodes: {e}"))?;
    let named = |n: &&Node| {
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
    match matching.as_slice() {
        [] => Ok(None),
        [node] => Ok(Some((*node).clone())),
        _ => Err(format!(
            "node `{name}`: {} nodes match (by the andon.node label, hostname or id); allowed: exactly one",
            matching.len()
        )),
    }
}

fn availability(node: &Node) -> Availability {
    node.spec
        .as_ref()
        .and_then(|s| s.availability)
        .unwrap_or(Availability::ACTIVE)
}

async fn update_availability(swarm: &Swarm, node: &Node, to: Availability) -> Result<(), String> {
    use bollard::query_parameters::UpdateNodeOptions;
    let id = node.id.clone().unwrap_or_default();
    let mut spec = node.spec.clone().unwrap_or_default();
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
        .map_err(|e| format!("update node {id}: {e}"))
}

/// Gives node `id` its availability back, if it is still drained: a node removed
/// meanwhile has nothing to give back, and one an operator changed during the drill
/// keeps the operator's choice. Returns what it did.
pub(super) async fn give_back(
    swarm: &Swarm,
    id: &str,
    previous: Availability,
) -> Result<String, String> {
    // By id: one inspect, not the node list.
    let node = match swarm.docker.inspect_node(id).await {
        Ok(n) => n,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok("gone from the swarm; nothing to give back".into()),
        Err(e) => return Err(format!("inspect node {id}: {e}")),
    };
    let now = availability(&node);
    if now != Availability::DRAIN {
        return Ok(format!("left {now} (changed during the drill)"));
    }
    update_availability(swarm, &node, previous).await?;
    Ok(format!("back to {previous}"))
}

pub(super) fn signal_pidfile(pidfile: &str, sig: &str) -> crate::Result<()> {
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
            let found = match find_node(sw, node).await {
                Ok(Some(n)) => n,
                Ok(None) => return (false, format!("node `{node}`: no node has that andon.node label, hostname or id")),
                Err(e) => return (false, e),
            };
            let (id, previous) = (found.id.clone().unwrap_or_default(), availability(&found));
            if let Err(e) = update_availability(sw, &found, Availability::DRAIN).await {
                return (false, e);
            }
            let undo = Undo::Availability {
                node: node.clone(),
                id: id.clone(),
                previous,
            };
            let until = tokio::time::Instant::now() + *duration;
            ctx.pending.add(undo, until, Some(sw.clone())).await;
            (
                true,
                format!(
                    "node {node} ({id}) drained for {} (was {previous})",
                    humantime::format_duration(*duration)
                ),
            )
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
                    // What was paused is registered even when a later pause fails; a
                    // container paused by an earlier fault is that fault's to give back.
                    let mut paused = Vec::new();
                    let mut failed = None;
                    for id in &ids {
                        match sw.docker.pause_container(id).await {
                            Ok(()) => paused.push(id.clone()),
                            Err(e) if e.to_string().contains("already paused") => {}
                            Err(e) => {
                                failed = Some(format!("pause {id}: {e}"));
                                break;
                            }
                        }
                    }
                    let n = paused.len();
                    if n > 0 {
                        let until = tokio::time::Instant::now() + *duration;
                        ctx.pending
                            .add(Undo::Unpause(paused), until, Some(sw.clone()))
                            .await;
                    }
                    match failed {
                        Some(e) => (false, format!("{e} (paused {n} before it)")),
                        None => (
                            true,
                            format!("paused {n} for {}", humantime::format_duration(*duration)),
                        ),
                    }
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
            let until = tokio::time::Instant::now() + *d;
            ctx.pending
                .add(Undo::ResumePrometheus(pf.clone()), until, None)
                .await;
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
