//! The reconcile loop of `andon run`: observe → decide → act → record, once per tick.
//!
//! The step is [`crate::reconcile`]'s, the same one `andon simulate` runs; this is only the
//! I/O around it. Per service:
//! - skip it (and say why in /status) unless it exists and carries `andon.enable=true`;
//! - step: the reconciler restores its state from the `andon.state` label on first sight,
//!   decides, and plans the spec changes;
//! - write the plan in one optimistic update and report back whether it went through;
//! - post the admission limit to every running task (level-triggered).

use crate::act;
use crate::act::admission::AdmissionClient;
use crate::core::Observations;
use crate::observe::history::{HistoryClock, SignalHistory};
use crate::observe::prometheus::PromSource;
use crate::policy::{Policy, ServiceSpec};
use crate::reconcile::{Reconciler, Restored, ServiceView};
use crate::record::server::{now_ms, Shared};
use crate::record::status::{self, DecisionStatus, ServiceStatus};
use crate::swarm::{NodeInfo, ServiceInfo, Swarm, SwarmError, TaskInfo};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

pub struct Options {
    pub dry_run: bool,
}

pub struct Controller {
    pub policy: Policy,
    prom: PromSource,
    swarm: Swarm,
    admission: AdmissionClient,
    /// HAProxy in front of the services, when andon drives one.
    edge: Option<crate::act::haproxy::Edge>,
    opts: Options,
    runtime: HashMap<String, Reconciler>,
    /// When each service's history (for the seasonal forecast) is due.
    history: HistoryClock,
    /// History is read off the tick (a week of range queries may take seconds), with its
    /// own, longer timeout; results come back through this channel.
    history_prom: PromSource,
    history_tx: mpsc::UnboundedSender<(String, Vec<SignalHistory>)>,
    history_rx: mpsc::UnboundedReceiver<(String, Vec<SignalHistory>)>,
    /// Which nodes served at the last tick, and when one last stopped serving.
    nodes: crate::swarm::NodeWatch,
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
        let history_prom = prom.clone();
        let (history_tx, history_rx) = mpsc::unbounded_channel();
        Controller {
            history_prom,
            history_tx,
            history_rx,
            policy,
            prom,
            swarm,
            admission,
            edge: None,
            opts,
            runtime: HashMap::new(),
            history: HistoryClock::default(),
            nodes: Default::default(),
            shared,
        }
    }

    /// Drives this HAProxy's servers and limits every tick.
    pub fn with_edge(mut self, edge: Option<crate::act::haproxy::Edge>) -> Self {
        self.edge = edge;
        self
    }

    /// Reads history with this source instead of the tick's (a longer timeout).
    pub fn with_history_source(mut self, prom: PromSource) -> Self {
        self.history_prom = prom;
        self
    }

    /// Hands the history read since the last tick to each service's reconciler.
    fn take_history(&mut self) {
        while let Ok((name, history)) = self.history_rx.try_recv() {
            let all_ok = history.iter().all(|(_, h)| h.is_ok());
            self.history.read(&name, now_ms(), all_ok);
            let rt = self.runtime.entry(name.clone()).or_default();
            for (kind, h) in &history {
                match h {
                    Ok(points) => {
                        tracing::info!(service = %name, signal = %kind, points = points.len(), "read history for the seasonal forecast")
                    }
                    Err(e) => {
                        tracing::warn!(service = %name, signal = %kind, error = %e, "no history for the seasonal forecast")
                    }
                }
                let h = h.as_ref().map(|v| v.as_slice()).map_err(|e| e.clone());
                rt.set_history(&self.policy, *kind, h);
            }
        }
    }

    /// One reconcile tick over every service of the policy.
    pub async fn tick(&mut self) {
        let started = Instant::now();
        self.take_history();
        let names: Vec<String> = self
            .policy
            .services
            .iter()
            .map(|s| s.name.clone())
            .collect();
        // Reads go out together: Prometheus, the nodes, and every service with its tasks.
        let spread = async {
            match &self.policy.spread {
                Some(q) => self.prom.spread(q, &names).await,
                None => HashMap::new(),
            }
        };
        let (observations, spread, nodes, mut reads) = tokio::join!(
            self.prom.observe(&self.policy, &names),
            spread,
            self.swarm.nodes(),
            read_services(&self.swarm, &names),
        );
        if observations.values().any(|o| o.source_error.is_some()) {
            self.shared.metrics.source_error("prometheus");
        }
        let nodes = nodes.unwrap_or_else(|e| {
            self.shared.metrics.source_error("docker");
            tracing::warn!(error = %e, "cannot list the nodes: every node is taken to serve");
            HashMap::new()
        });
        let node_lost_ms = self.nodes.see(&nodes, now_ms());
        let mut statuses = Vec::with_capacity(names.len());
        let mut shedding = HashMap::new();
        for svc in self.policy.services.clone() {
            let obs = observations.get(&svc.name).cloned().unwrap_or_default();
            let read = reads
                .remove(&svc.name)
                .unwrap_or(Err(SwarmError::NotFound(svc.name.clone())));
            let load = spread.get(&svc.name);
            let (status, shed) = self
                .reconcile(&svc, &obs, read, (&nodes, node_lost_ms, load))
                .await;
            statuses.push(status);
            if let Some(shed) = shed {
                shedding.insert(svc.name.clone(), shed);
            }
        }
        let nodes = crate::swarm::addresses(&nodes);
        // The edge first: HAProxy's servers and limits, level-triggered; after a
        // scale-down it takes the stopping tasks out, and that cannot wait behind the
        // replicas' admission endpoints. A dry run leaves it.
        let edge = match &self.edge {
            Some(e) if !self.opts.dry_run => Some(e.apply(&shedding, &nodes).await),
            _ => None,
        };
        // The admission limits, to every running task of every service at once (port 0:
        // the replicas have no admission endpoint, e.g. a real erlmcp behind the edge).
        if self.admission.port != 0 {
            let failed = self.admission.apply_all(shedding.values(), &nodes).await;
            for _ in 0..failed {
                self.shared.metrics.actuator_error("admission");
            }
        }
        if let Some(e) = edge.as_ref().and_then(|e| e.error.as_ref()) {
            tracing::warn!(error = %e, "edge: HAProxy not in step");
            self.shared.metrics.actuator_error("haproxy");
        }
        let m = &self.shared.metrics;
        m.reconcile_seconds.observe(started.elapsed().as_secs_f64());
        m.ticks.inc();
        if let Ok(mut st) = self.shared.status.write() {
            st.services = statuses;
            st.edge = edge;
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
        (nodes, node_lost_ms, load): (&HashMap<String, NodeInfo>, Option<u64>, Option<&TaskLoad>),
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
        // Only tasks running on nodes that serve are capacity, and only they get traffic.
        let (serving, mut placement, mut per_node) =
            crate::swarm::placement(&tasks, nodes, (now_ms(), self.policy.placement_grace_ms()));
        if let Some(load) = load {
            crate::swarm::add_load(&mut per_node, &tasks, load);
        }
        let mut tasks = serving;
        placement.node_lost_ms = node_lost_ms;
        let ready = tasks.len() as u32;
        status.ready = Some(ready);
        status.placement = placement;
        status.nodes = per_node;

        let now = now_ms();
        let view = ServiceView {
            replicas: info.replicas,
            running: ready,
            placement,
            update: info.update,
            update_started_ms: info.update_started_ms,
            labels: info.labels.clone(),
        };
        let apply = !self.opts.dry_run;
        let wants_history = self
            .policy
            .behavior
            .predict
            .as_ref()
            .is_some_and(|p| p.seasonal.is_some());
        if wants_history && self.history.due(&svc.name, now) {
            // Not due again while this read is out; its result sets the next time.
            self.history.read(&svc.name, now, false);
            let (prom, policy, name, tx) = (
                self.history_prom.clone(),
                self.policy.clone(),
                svc.name.clone(),
                self.history_tx.clone(),
            );
            tokio::spawn(async move {
                let history = prom.history(&policy, &name, now).await;
                let _ = tx.send((name, history));
            });
        }
        let rt = self.runtime.entry(svc.name.clone()).or_default();
        let plan = rt.step(&self.policy, svc, obs, &view, now, apply);
        match &plan.restored {
            Some(Restored::Label) => {
                tracing::info!(service = %svc.name, "restored the core's state from label {}", act::STATE_LABEL)
            }
            Some(Restored::Unreadable(e)) => {
                tracing::warn!(service = %svc.name, error = %e, "label {} does not parse; starting afresh, scale-down window seeded", act::STATE_LABEL)
            }
            Some(Restored::Seeded) | None => {}
        }
        let d = &plan.decision;
        if plan.changed {
            tracing::info!(
                service = %svc.name, tier = %d.tier, from = info.replicas, to = d.desired,
                shed_admit = ?d.shed_admit, stopped = d.stopped, dry_run = self.opts.dry_run,
                "{}", d.summary()
            );
        } else {
            tracing::debug!(service = %svc.name, tier = %d.tier, replicas = d.desired, "{}", d.summary());
        }

        if apply {
            let ok = match act::write(&self.swarm, info.clone(), &plan.write).await {
                Ok(_) => true,
                Err(e) => {
                    self.shared.metrics.actuator_error("scale");
                    tracing::warn!(service = %svc.name, error = %e, "could not write the service");
                    status.last_error = Some(e.to_string());
                    false
                }
            };
            rt.committed(ok);
            // Only an edge or admission endpoints read the tasks after this.
            let consumers = self.edge.is_some() || self.admission.port != 0;
            if ok && consumers && plan.decision.desired < info.replicas {
                tasks = self
                    .still_running(&svc.name, plan.decision.desired, tasks)
                    .await;
            }
        }
        let d = plan.decision;
        let changed = plan.changed;

        self.shared
            .metrics
            .record(&svc.name, &d, info.replicas, ready);
        self.shared.metrics.placement(&svc.name, placement);
        status.tier = d.tier;
        status.stopped = d.stopped;
        status.desired = Some(d.desired);
        status.shed_admit = d.shed_admit;
        status.signals = status::signals(obs, &d, now);
        status.targets = obs.targets;
        status.forecasts = d.forecasts.clone();
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
        let shed = apply.then_some((tasks, plan.admission));
        (status, shed)
    }

    /// After a scale-down, the tasks Swarm keeps: the edge and the admission limits go to
    /// these this tick, not to the ones being stopped. Read at the tick's start, a stopping
    /// task stayed an HAProxy server for up to a tick after its container had gone, and
    /// HAProxy's retries on it outlasted the clients: a calm drill through HAProxy timed
    /// out 10 requests per scale-down step. Best effort: Swarm signals a task about when
    /// it marks it, so a few requests may still reach it (HAProxy then redispatches,
    /// manifests/haproxy.cfg); with several services scaling down in one tick, their
    /// listings are waited for one after another. Tasks are only ever dropped here: an
    /// unreadable listing keeps this tick's.
    async fn still_running(
        &self,
        service: &str,
        replicas: u32,
        tasks: Vec<TaskInfo>,
    ) -> Vec<TaskInfo> {
        let wait = std::time::Duration::from_secs(1);
        match self
            .swarm
            .tasks_after_scale_down(service, replicas, wait)
            .await
        {
            Ok(now) => tasks
                .into_iter()
                .filter(|t| now.iter().any(|n| n.id == t.id))
                .collect(),
            Err(e) => {
                self.shared.metrics.source_error("docker");
                tracing::warn!(service, error = %e, "cannot list the tasks after a scale-down; the edge follows the tick's listing");
                tasks
            }
        }
    }
}

/// The policy's `spread.query` per task id.
type TaskLoad = HashMap<String, f64>;

/// One service as read this tick: its spec, and its tasks when it is opted in.
type Read = Result<(ServiceInfo, Option<Vec<TaskInfo>>), SwarmError>;

/// A service's tasks and the admission limit they should hold.
pub type Shed = (Vec<TaskInfo>, crate::act::admission::Admission);

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
