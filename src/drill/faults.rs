//! Faults at their scenario times: kill or pause tasks' containers, stop Prometheus (or
//! make it unreachable), SIGKILL the controller and let Swarm restart it, drain a node.

use super::FaultEvent;
use crate::scenario::{Fault, FaultKind};
use crate::swarm::Swarm;
use bollard::query_parameters::KillContainerOptions;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

pub struct Context {
    pub swarm: Option<Swarm>,
    pub service: Option<String>,
    pub controller_service: Option<String>,
    pub prometheus_pidfile: Option<String>,
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

/// Sets a node's availability to drain (or back to active); the node is named by its
/// `andon.node` label, its hostname or its id. Returns its id.
async fn drain(swarm: &Swarm, name: &str, on: bool) -> Result<String, String> {
    use bollard::models::NodeSpecAvailabilityEnum as A;
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
    spec.availability = Some(if on { A::DRAIN } else { A::ACTIVE });
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
    Ok(id)
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
            match drain(sw, node, true).await {
                Ok(id) => {
                    let (sw, node2, d) = (sw.clone(), node.clone(), *duration);
                    tokio::task::spawn_local(async move {
                        tokio::time::sleep(d).await;
                        if let Err(e) = drain(&sw, &node2, false).await {
                            tracing::warn!(node = %node2, error = %e, "could not make the node active again");
                        }
                    });
                    (
                        true,
                        format!(
                            "node {node} ({id}) drained for {}",
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
                    let (sw, ids2, d) = (sw.clone(), ids.clone(), *duration);
                    tokio::task::spawn_local(async move {
                        tokio::time::sleep(d).await;
                        for id in &ids2 {
                            let _ = sw.docker.unpause_container(id).await;
                        }
                    });
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
            let (pf2, d2) = (pf.clone(), *d);
            tokio::task::spawn_local(async move {
                tokio::time::sleep(d2).await;
                if let Err(e) = signal_pidfile(&pf2, "-CONT") {
                    tracing::error!(error = %e, "could not resume Prometheus: resume it by hand (kill -CONT)");
                }
            });
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
pub fn resume_prometheus(pidfile: &str) {
    if let Err(e) = signal_pidfile(pidfile, "-CONT") {
        tracing::warn!(error = %e, "could not resume Prometheus");
    }
}
