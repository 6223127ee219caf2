//! The sans-IO reconcile step, one per service, shared by `andon run` (controller/) and
//! `andon simulate` (simulate.rs). Pure and synchronous: no network, no clock, no tokio.
//!
//! ```text
//! readings + service view + now ──► step() ──► Plan { decision, spec changes, admission, changed }
//!                                     │               │
//!                                     │    the shell writes the spec changes (or not)
//!                                     ▼               ▼
//!                            remembered state ◄── committed(ok)
//! ```
//!
//! What it owns, so that `run` and `simulate` cannot drift apart:
//! - first sight: the core's state restored from the `andon.state` label, or, with none,
//!   the windows seeded with the current replicas (HPA's first recommendation);
//! - whether a rolling update holds scaling (progressing and younger than
//!   `behavior.update_hold`; a paused one never does);
//! - the spec changes: replicas, the shedding labels, `andon.tier`, and the state label
//!   when it is due (a change a restart must not miss, or every [`STATE_REFRESH`]);
//! - the admission to post (level-triggered, posted even when the spec write fails);
//! - one definition of "this decision changed something", for logs and events;
//! - the rollback of a step that was not applied: a failed write, a dry run, or
//!   `--no-control` forget the scale event and its direction, and nothing else.

use crate::act::admission::Admission;
use crate::core::placement::Placement;
use crate::core::predict::SeasonalReading;
use crate::core::seasonal::Profile;
use crate::core::{
    self, CoreState, Decision, Observations, Reason, Replicas, StepUndo, UpdatePhase,
};
use crate::policy::Tier;
use crate::policy::{Policy, ServiceSpec, SignalKind};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Labels andon owns on a service.
pub const STATE_LABEL: &str = "andon.state";
pub const TIER_LABEL: &str = "andon.tier";
pub const SHED_LABEL: &str = "andon.shed.admit";

/// Write the state label at least this often while it changes, even with nothing else to
/// write; changes that matter on restart (a scale, a tier, a window's edge) go at once.
pub const STATE_REFRESH: Duration = Duration::from_secs(30);

/// Traefik's inFlightReq middleware, named for the service. A label change does not
/// restart tasks; an edge Traefik reading Swarm labels applies it.
pub fn traefik_inflight_label(service: &str) -> String {
    format!("traefik.http.middlewares.andon-shed-{service}.inflightreq.amount")
}

/// Swarm's `UpdateStatus.State`, as far as scaling cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpdateState {
    #[default]
    None,
    /// `updating` or `rollback_started`.
    Progressing,
    /// `paused` or `rollback_paused`.
    Paused,
    /// `completed` or `rollback_completed`.
    Completed,
}

/// The service as the shell read it this tick (Docker API, or the modelled Swarm).
#[derive(Debug, Clone, Default)]
pub struct ServiceView {
    /// Replicas in the spec.
    pub replicas: u32,
    /// Tasks running on nodes that serve (ready, not draining).
    pub running: u32,
    /// Tasks that found no node, or sit on a node that is down or draining.
    pub placement: Placement,
    pub update: UpdateState,
    /// When the update started, if Swarm says (ms, same clock as `now`).
    pub update_started_ms: Option<u64>,
    pub labels: HashMap<String, String>,
}

/// Spec changes: `None` leaves a field as it is; a label mapped to `None` is removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub replicas: Option<u32>,
    pub labels: BTreeMap<String, Option<String>>,
}

impl Desired {
    /// Whether a service with these replicas and labels already matches.
    pub fn satisfied_by(&self, replicas: u32, labels: &HashMap<String, String>) -> bool {
        self.replicas.is_none_or(|r| r == replicas) && labels_hold(&self.labels, labels)
    }

    /// Applies the label changes to a label map.
    pub fn apply_labels(&self, labels: &mut HashMap<String, String>) {
        for (k, v) in &self.labels {
            match v {
                Some(v) => {
                    labels.insert(k.clone(), v.clone());
                }
                None => {
                    labels.remove(k);
                }
            }
        }
    }
}

/// Label changes: a label mapped to `None` is removed.
type Labels = BTreeMap<String, Option<String>>;

/// What the labels depend on: tier, shedding, replicas.
type LabelKey = (Tier, Option<f64>, u32);

/// Whether `labels` already hold every wanted label (and lack every one to remove).
fn labels_hold(
    wanted: &BTreeMap<String, Option<String>>,
    labels: &HashMap<String, String>,
) -> bool {
    wanted
        .iter()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_deref())
}

/// What one step wants done.
#[derive(Debug, Clone)]
pub struct Plan {
    pub decision: Decision,
    /// Replicas in the spec when the step ran.
    pub current: u32,
    /// The spec changes; empty when the service already matches. The shell writes them
    /// unless it only observes (`--dry-run`, `--no-control`), then calls `committed`.
    pub write: Desired,
    /// The admission limit every task should hold: the decision's fraction, and the
    /// requests per second per replica it means against the policy's throughput
    /// capacity. Posted each tick, whether or not the spec write succeeds.
    pub admission: Admission,
    /// The decision asks for something the previous one did not (replicas, tier, shedding,
    /// the stop), or it is the first: worth a log line and an event.
    pub changed: bool,
    /// Set on first sight: where the state came from.
    pub restored: Option<Restored>,
}

/// Where the core's state came from on first sight.
#[derive(Debug, Clone, PartialEq)]
pub enum Restored {
    /// The `andon.state` label.
    Label,
    /// No label: windows seeded with the current replicas.
    Seeded,
    /// The label did not parse; seeded as if there were none.
    Unreadable(String),
}

/// What a decision asks of the service: replicas, tier, shedding, the stop.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Wish {
    desired: u32,
    tier: Tier,
    stopped: bool,
    /// Whether it sheds: the loop's every adjustment is not news (its reason says it).
    shedding: bool,
    /// Whether a session cap is posted: lifted or posted again is news (a raised cap
    /// follows the sessions reading, tick by tick, and is not).
    session_capped: bool,
}

impl Wish {
    fn of(d: &Decision) -> Wish {
        Wish {
            desired: d.desired,
            tier: d.tier,
            stopped: d.stopped,
            shedding: d.shed_admit.is_some(),
            session_capped: d.session_cap.is_some(),
        }
    }
}

/// What the shell keeps per service between ticks.
#[derive(Debug, Clone, Default)]
pub struct Reconciler {
    state: CoreState,
    loaded: bool,
    /// The state as last written, and when.
    written: Option<(CoreState, u64)>,
    /// What the last decision asked for, and whether the service matched it then.
    last: Option<(Wish, bool)>,
    /// The labels for the last (tier, shedding, replicas): most ticks ask for the same.
    labels: Option<(LabelKey, Labels)>,
    /// Since when a progressing update has been seen (when Swarm does not say).
    update_seen_ms: Option<u64>,
    /// The undo of the step in flight, and whether its write carries the state label.
    in_flight: Option<(StepUndo, bool, u64)>,
    /// Seasonal profiles per demand signal, or why there is none (`set_history`).
    profiles: Vec<(SignalKind, Result<Profile, String>)>,
    /// The last seasonal forecasts and when they were made: a profile moves by its step,
    /// so they are made again every fifth of a step (at most every minute), not each tick.
    seasonal_cache: Option<(u64, Vec<(SignalKind, SeasonalReading)>)>,
}

impl Reconciler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn state(&self) -> &CoreState {
        &self.state
    }

    /// One step. With `apply` false (dry run, no control) nothing will be written, so the
    /// step's scale event is forgotten at once; `committed` need not be called.
    pub fn step(
        &mut self,
        policy: &Policy,
        svc: &ServiceSpec,
        obs: &Observations,
        view: &ServiceView,
        now_ms: u64,
        apply: bool,
    ) -> Plan {
        let restored = (!self.loaded).then(|| self.load(policy, view, now_ms));
        let replicas = Replicas {
            current: view.replicas,
            ready: view.running,
            update: self.update_phase(policy, view, now_ms),
            placement: view.placement,
        };
        let undo = StepUndo::save(&self.state);
        let seasonal = self.seasonal(policy, now_ms);
        let with_seasonal;
        let obs = if seasonal.is_empty() {
            obs
        } else {
            with_seasonal = Observations {
                seasonal,
                ..obs.clone()
            };
            &with_seasonal
        };
        let mut d = core::decide_in_place(policy, svc, obs, replicas, &mut self.state, now_ms);
        if matches!(restored, Some(Restored::Seeded | Restored::Unreadable(_))) {
            d.reasons.insert(
                0,
                Reason::WindowSeeded {
                    replicas: view.replicas,
                },
            );
        }
        let wish = Wish::of(&d);
        // Worth a line: the first decision, a different wish (replicas, tier, shedding, the
        // session cap, the stop), or the same wish again after the service had matched it (someone else
        // changed the replicas). A wish that keeps failing to apply is not repeated.
        let changed = self
            .last
            .is_none_or(|(l, matched)| l != wish || apply && matched && d.desired != view.replicas);
        // The labels depend on the tier, the shedding and the replicas; computed again only
        // when one of them changes (the simulator's hot path).
        let key = (d.tier, d.shed_admit, view.replicas);
        if self.labels.as_ref().is_none_or(|(k, _)| *k != key) {
            let mut labels = shed_labels(policy, svc, &d, view.replicas);
            labels.insert(TIER_LABEL.into(), Some(d.tier.name().into()));
            self.labels = Some((key, labels));
        }
        let labels = self.labels.as_ref().map(|(_, l)| l);
        let replicas_change = (d.desired != view.replicas).then_some(d.desired);
        let labels_match = labels.is_none_or(|l| labels_hold(l, &view.labels));
        let state_due = match &self.written {
            None => true,
            Some((w, at)) => {
                *w != self.state
                    && (restart_relevant(policy, w, &self.state)
                        || now_ms.saturating_sub(*at) >= STATE_REFRESH.as_millis() as u64)
            }
        };
        let mut write = Desired::default();
        let with_state = state_due || replicas_change.is_some() || !labels_match;
        if with_state {
            write.replicas = replicas_change;
            write.labels = labels.cloned().unwrap_or_default();
            let json = serde_json::to_string(&self.state).unwrap_or_default();
            write.labels.insert(STATE_LABEL.into(), Some(json));
            if write.satisfied_by(view.replicas, &view.labels) {
                write = Desired::default();
            }
        }
        if apply {
            self.in_flight = Some((undo, write != Desired::default(), now_ms));
        } else {
            undo.restore(&mut self.state);
        }
        self.last = Some((wish, d.desired == view.replicas));
        Plan {
            admission: Admission {
                admit: d.shed_admit,
                max_rps: d
                    .shed_admit
                    .zip(policy.capacity_of(SignalKind::Throughput))
                    .map(|(f, per)| f * per),
                max_sessions: d.session_cap,
            },
            decision: d,
            current: view.replicas,
            write,
            changed,
            restored,
        }
    }

    /// The shell's report on the write of the last plan: on failure the step did not
    /// happen, so its scale event and direction are forgotten (tier timers, windows and the
    /// failure counter stay).
    pub fn committed(&mut self, ok: bool) {
        let Some((undo, with_state, at)) = self.in_flight.take() else {
            return;
        };
        if ok {
            if with_state {
                self.written = Some((self.state.clone(), at));
            }
        } else {
            undo.restore(&mut self.state);
        }
    }

    fn load(&mut self, policy: &Policy, view: &ServiceView, now_ms: u64) -> Restored {
        self.loaded = true;
        let restored = match view.labels.get(STATE_LABEL) {
            Some(json) => match serde_json::from_str::<CoreState>(json) {
                Ok(s) => {
                    self.written = Some((s.clone(), now_ms));
                    self.state = s;
                    // Which of the window's recommendations were the sessions forecaster's
                    // is not kept across a restart: a refutation then withdraws nothing.
                    self.state.down_window_without_sessions = self.state.down_window.clone();
                    return Restored::Label;
                }
                Err(e) => Restored::Unreadable(e.to_string()),
            },
            None => Restored::Seeded,
        };
        core::seed_scale_down_window(policy, &mut self.state, view.replicas, now_ms);
        restored
    }

    /// A progressing update holds scaling for at most `behavior.update_hold`, counted from
    /// Swarm's start time or, without one, from when this controller first saw it.
    fn update_phase(&mut self, policy: &Policy, view: &ServiceView, now_ms: u64) -> UpdatePhase {
        match view.update {
            UpdateState::Progressing => {
                let seen = *self.update_seen_ms.get_or_insert(now_ms);
                let since = view.update_started_ms.unwrap_or(seen).min(now_ms);
                if now_ms - since > policy.behavior.update_hold.as_millis() as u64 {
                    UpdatePhase::Overdue
                } else {
                    UpdatePhase::Progressing
                }
            }
            UpdateState::Paused => {
                self.update_seen_ms = None;
                UpdatePhase::Paused
            }
            UpdateState::None | UpdateState::Completed => {
                self.update_seen_ms = None;
                UpdatePhase::None
            }
        }
    }
}

/// Changes to the state that a restarted controller must not miss: a scale event, a
/// tier's timers, Jidoka's stop, the value at a window's edge, or that edge moving later by
/// more than a tenth of its window (so that after a restart a window expires at most 10%
/// early).
fn restart_relevant(policy: &Policy, a: &CoreState, b: &CoreState) -> bool {
    let edge_moved = |x: Option<&core::state::Sample>,
                      y: Option<&core::state::Sample>,
                      window: Duration| match (x, y) {
        // A zero window holds only the present: its edge moves every tick and means nothing.
        _ if window.is_zero() => false,
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
) -> BTreeMap<String, Option<String>> {
    let mut labels = BTreeMap::new();
    let traefik = traefik_inflight_label(&svc.name);
    match d.shed_admit {
        Some(a) => {
            // Two decimals: the loop moves the fraction in small steps, and a label
            // change is a service update.
            let a = (a * 100.0).round() / 100.0;
            labels.insert(SHED_LABEL.to_string(), Some(format!("{a}")));
            let per_replica = policy
                .capacity_of(SignalKind::Connections)
                .or_else(|| policy.capacity_of(SignalKind::Throughput).map(|t| t * 0.1))
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

mod seasonal;

#[cfg(test)]
mod tests;
