//! The reconcile loop of `andon run`: observe → decide → act → record, once per tick.
//!
//! The decision is the pure core's; this is the thin shell around it. Per service:
//! - skip it (and say why in /status) unless it exists and carries `andon.enable=true`;
//! - on first sight, restore the core's state from the service's `andon.state` label, so a
//!   restarted controller carries on where the last one stopped;
//! - decide; then write replicas, shedding labels and state in one optimistic update;
//!   if that fails, forget the decision's effect on the state (the step did not happen);
//! - post the admission limit to every running task (level-triggered).

use crate::act::admission::AdmissionClient;
use crate::act::{self, Desired, SHED_LABEL, STATE_LABEL, TIER_LABEL};
use crate::core::{self, CoreState, Decision, Observations, Replicas};
use crate::observe::prometheus::PromSource;
use crate::policy::{Policy, ServiceSpec};
use crate::record::server::{now_ms, Shared};
use crate::record::status::{self, DecisionStatus, ServiceStatus};
use crate::swarm::{ServiceInfo, Swarm, SwarmError, TaskInfo};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Write the state label at least this often while it changes, even with nothing else to
/// write; changes that matter on restart (a scale, a tier, a window's edge) go at once.
pub const STATE_REFRESH: Duration = Duration::from_secs(30);

pub struct Options {
    pub dry_run: bool,
}

/// What the loop keeps per service between ticks.
#[derive(Default)]
struct Runtime {
    state: CoreState,
    /// Restored from the label (or found none) already.
    loaded: bool,
    /// The state as last written, and when.
    written: Option<(CoreState, u64)>,
    last: Option<Decision>,
}

pub struct Controller {
    pub policy: Policy,
    prom: PromSource,
    swarm: Swarm,
    admission: AdmissionClient,
    opts: Options,
    runtime: HashMap<String, Runtime>,
    pub shared: Arc<Shared>,
}

impl Controller {
    pub fn new(
        policy: Policy,
        prom: PromSource,
        swarm: Swarm,
        admission: AdmissionClient,
        opts: Options,
        shared: Arc<Shared>,
    ) -> Self {
        Controller {
            policy,
            prom,
            swarm,
            admission,
            opts,
            runtime: HashMap::new(),
            shared,
        }
    }

    /// One reconcile tick over every service of the policy.
    pub async fn tick(&mut self) {
        let started = Instant::now();
        let names: Vec<String> = self
            .policy
            .services
            .iter()
            .map(|s| s.name.clone())
            .collect();
        // Reads go out together: Prometheus, the nodes, and every service with its tasks.
        let (observations, nodes, mut reads) = tokio::join!(
            self.prom.observe(&self.policy, &names),
            self.swarm.node_addresses(),
            read_services(&self.swarm, &names),
        );
        if observations.values().any(|o| o.source_error.is_some()) {
            self.shared.metrics.source_error("prometheus");
        }
        let nodes = nodes.unwrap_or_default();
        let mut statuses = Vec::with_capacity(names.len());
        let mut shedding = Vec::new();
        for svc in self.policy.services.clone() {
            let obs = observations.get(&svc.name).cloned().unwrap_or_default();
            let read = reads
                .remove(&svc.name)
                .unwrap_or(Err(SwarmError::NotFound(svc.name.clone())));
            let (status, shed) = self.reconcile(&svc, &obs, read).await;
            statuses.push(status);
            shedding.extend(shed);
        }
        // The admission limits, to every running task of every service at once.
        let failed = self.admission.apply_all(&shedding, &nodes).await;
        for _ in 0..failed {
            self.shared.metrics.actuator_error("admission");
        }
        let m = &self.shared.metrics;
        m.reconcile_seconds.observe(started.elapsed().as_secs_f64());
        m.ticks.inc();
        if let Ok(mut st) = self.shared.status.write() {
            st.services = statuses;
            st.last_tick_ms = Some(now_ms());
            st.ticks += 1;
        }
    }

    /// Decides and writes one service. Returns its status, and the admission limit to send
    /// to its tasks (none in a dry run, or when the service is not ours).
    async fn reconcile(
        &mut self,
        svc: &ServiceSpec,
        obs: &Observations,
        read: Read,
    ) -> (ServiceStatus, Option<Shed>) {
        let mut status = ServiceStatus::new(&svc.name);
        let (info, tasks) = match read {
            Ok(r) => r,
            Err(SwarmError::NotFound(_)) => {
                status.note = Some("service not found in the swarm".into());
                return (status, None);
            }
            Err(e) => {
                self.shared.metrics.source_error("docker");
                tracing::warn!(service = %svc.name, error = %e, "cannot read the service");
                status.note = Some(format!("cannot read the service: {e}"));
                return (status, None);
            }
        };
        status.version = Some(info.version);
        status.replicas = Some(info.replicas);
        let Some(tasks) = tasks else {
            status.note = Some(format!(
                "not opted in: label {}=true is missing; andon does not touch it",
                crate::swarm::OPT_IN_LABEL
            ));
            return (status, None);
        };
        status.opted_in = true;
        let ready = tasks.iter().filter(|t| t.running).count() as u32;
        status.ready = Some(ready);

        let rt = self.runtime.entry(svc.name.clone()).or_default();
        if !rt.loaded {
            rt.loaded = true;
            if let Some(json) = info.labels.get(STATE_LABEL) {
                match serde_json::from_str::<CoreState>(json) {
                    Ok(s) => {
                        tracing::info!(service = %svc.name, "restored the core's state from label {STATE_LABEL}");
                        rt.written = Some((s.clone(), now_ms()));
                        rt.state = s;
                    }
                    Err(e) => {
                        tracing::warn!(service = %svc.name, error = %e, "label {STATE_LABEL} does not parse; starting afresh")
                    }
                }
            }
        }

        let now = now_ms();
        let replicas = Replicas {
            current: info.replicas,
            ready,
            updating: info.updating,
        };
        let before = rt.state.clone();
        let d = core::decide_in_place(&self.policy, svc, obs, replicas, &mut rt.state, now);
        let changed = d.desired != info.replicas
            || rt.last.as_ref().is_none_or(|l| {
                l.tier != d.tier || l.stopped != d.stopped || l.shed_admit != d.shed_admit
            });
        if changed {
            tracing::info!(
                service = %svc.name, tier = %d.tier, from = info.replicas, to = d.desired,
                shed_admit = ?d.shed_admit, stopped = d.stopped, dry_run = self.opts.dry_run,
                "{}", d.summary()
            );
        } else {
            tracing::debug!(service = %svc.name, tier = %d.tier, replicas = d.desired, "{}", d.summary());
        }

        if !self.opts.dry_run {
            let state_due = match &rt.written {
                None => true,
                Some((w, at)) => {
                    *w != rt.state
                        && (restart_relevant(&self.policy, w, &rt.state)
                            || now.saturating_sub(*at) >= STATE_REFRESH.as_millis() as u64)
                }
            };
            let mut desired = Desired {
                replicas: (d.desired != info.replicas).then_some(d.desired),
                labels: shed_labels(&self.policy, svc, &d, info.replicas),
            };
            desired
                .labels
                .insert(TIER_LABEL.into(), Some(d.tier.name().into()));
            let state_json = serde_json::to_string(&rt.state).unwrap_or_default();
            if state_due || !desired.satisfied_by(&info) {
                desired.labels.insert(STATE_LABEL.into(), Some(state_json));
            }
            match act::write(&self.swarm, info.clone(), &desired).await {
                Ok(w) => {
                    if !w.noop && desired.labels.contains_key(STATE_LABEL) {
                        rt.written = Some((rt.state.clone(), now));
                    }
                }
                Err(e) => {
                    // The step did not happen: the core must not believe it did.
                    rt.state = before;
                    self.shared.metrics.actuator_error("scale");
                    tracing::warn!(service = %svc.name, error = %e, "could not write the service");
                    status.last_error = Some(e.to_string());
                }
            }
        }

        self.shared
            .metrics
            .record(&svc.name, &d, info.replicas, ready);
        status.tier = d.tier;
        status.stopped = d.stopped;
        status.desired = Some(d.desired);
        status.shed_admit = d.shed_admit;
        status.signals = status::signals(obs, &d, now);
        let ds = DecisionStatus::new(&d, info.replicas, now);
        let previous_change = self.shared.status.read().ok().and_then(|s| {
            s.services
                .iter()
                .find(|x| x.service == svc.name)
                .and_then(|x| x.last_change.clone())
        });
        status.last_change = if changed {
            Some(ds.clone())
        } else {
            previous_change
        };
        status.last_decision = Some(ds);
        let rt = self.runtime.entry(svc.name.clone()).or_default();
        let shed = (!self.opts.dry_run).then_some((tasks, d.shed_admit));
        rt.last = Some(d);
        (status, shed)
    }
}

/// One service as read this tick: its spec, and its tasks when it is opted in.
type Read = Result<(ServiceInfo, Option<Vec<TaskInfo>>), SwarmError>;

/// A service's tasks and the admission limit they should hold.
pub type Shed = (Vec<TaskInfo>, Option<f64>);

/// Inspects every service, and lists the tasks of the opted-in ones, concurrently.
async fn read_services(swarm: &Swarm, names: &[String]) -> HashMap<String, Read> {
    let mut set = tokio::task::JoinSet::new();
    for name in names {
        let (swarm, name) = (swarm.clone(), name.clone());
        set.spawn(async move {
            let read = match swarm.inspect(&name).await {
                Ok(info) if info.opted_in() => match swarm.tasks(&name).await {
                    Ok(tasks) => Ok((info, Some(tasks))),
                    Err(e) => Err(e),
                },
                Ok(info) => Ok((info, None)),
                Err(e) => Err(e),
            };
            (name, read)
        });
    }
    let mut out = HashMap::new();
    while let Some(Ok((name, read))) = set.join_next().await {
        out.insert(name, read);
    }
    out
}

/// Changes to the state that a restarted controller must not miss: a scale event, a
/// tier's timers, Jidoka's stop, the value at a window's edge, or that edge moving later by
/// more than a tenth of its window (so that after a restart a window expires at most 10%
/// early).
fn restart_relevant(policy: &Policy, a: &CoreState, b: &CoreState) -> bool {
    let edge_moved = |x: Option<&crate::core::state::Sample>,
                      y: Option<&crate::core::state::Sample>,
                      window: Duration| match (x, y) {
        (Some(x), Some(y)) => {
            x.value != y.value
                || y.at_ms.saturating_sub(x.at_ms) >= (window.as_millis() as u64 / 10).max(1000)
        }
        (None, None) => false,
        _ => true,
    };
    a.events != b.events
        || a.tiers != b.tiers
        || a.last_panic_ms != b.last_panic_ms
        || a.stopped != b.stopped
        || a.reversals_ms != b.reversals_ms
        || edge_moved(
            a.up_window.first(),
            b.up_window.first(),
            policy.behavior.scale_up.stabilization,
        )
        || edge_moved(
            a.down_window.first(),
            b.down_window.first(),
            policy.behavior.scale_down.stabilization,
        )
}

/// The shedding labels for a decision: andon's own, and Traefik's inFlightReq amount
/// (admit × per-replica connection capacity × replicas; removed when not shedding).
fn shed_labels(
    policy: &Policy,
    svc: &ServiceSpec,
    d: &Decision,
    replicas: u32,
) -> std::collections::BTreeMap<String, Option<String>> {
    let mut labels = std::collections::BTreeMap::new();
    let traefik = act::traefik_inflight_label(&svc.name);
    match d.shed_admit {
        Some(a) => {
            labels.insert(SHED_LABEL.to_string(), Some(format!("{a}")));
            let per_replica = policy
                .capacity_of(crate::policy::SignalKind::Connections)
                .or_else(|| {
                    policy
                        .capacity_of(crate::policy::SignalKind::Throughput)
                        .map(|t| t * 0.1)
                })
                .unwrap_or(100.0);
            let amount = (a * per_replica * replicas.max(1) as f64).ceil().max(1.0);
            labels.insert(traefik, Some(format!("{amount}")));
        }
        None => {
            labels.insert(SHED_LABEL.to_string(), Some("none".into()));
            labels.insert(traefik, None);
        }
    }
    labels
}
