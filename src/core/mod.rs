//! The decision core: `(policy, observations, replicas, state, now) -> (decision, state)`.
//!
//! Pure: no I/O, no clock, no async. The live controller and the simulator call the same
//! function, with a real or a virtual `now`. The order of the rules, each in its module:
//!
//! 1. Jidoka classifies readings; after N failed reads in a row the line stops and holds.
//! 2. Tiers (tier.rs) move like Prometheus alerts, with hysteresis and cool-down.
//! 3. Target tracking (capacity.rs) recommends replicas, with the tier's headroom.
//! 4. Stabilisation windows, bad-data hold, step limits (smoothing.rs, jidoka.rs).
//! 5. The tier's floor, panic mode, the flap guard, and the min/max bounds, last.

pub mod capacity;
mod forecaster;
pub mod jidoka;
pub mod observation;
pub mod placement;
pub mod predict;
pub mod reason;
pub mod seasonal;
pub mod shedding;
pub mod smoothing;
pub mod state;
pub mod tier;

pub use observation::{Observations, Quality, Reading, Replicas, UpdatePhase};
pub use reason::Reason;
pub use state::CoreState;

use crate::policy::{Floor, OnBadData, Policy, ServiceSpec, SignalKind, StoppedShed, Tier};
use serde::Serialize;
use state::ScaleEvent;

/// What the core decided for one service in one tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub tier: Tier,
    /// Replicas to run; always within [min, max].
    pub desired: u32,
    /// Shedding: admit at most this fraction of each replica's capacity; `None` = all.
    pub shed_admit: Option<f64>,
    /// New sessions each replica accepts at most (`None`: no cap); see
    /// `capacity::session_cap`.
    pub session_cap: Option<u32>,
    /// Jidoka stopped the line: replicas held until the data is good again.
    pub stopped: bool,
    pub panic: bool,
    /// Each signal's reading quality, as the core saw it.
    pub signals: Vec<(SignalKind, Quality)>,
    pub reasons: Vec<Reason>,
    /// What each demand signal's forecasters said (empty without `behavior.predict`).
    pub forecasts: Vec<predict::Outlook>,
}

impl Decision {
    /// One line for logs and timelines: the outcome first, then what shaped it. Of the
    /// target-tracking votes only the deciding one (the largest) is named.
    pub fn summary(&self) -> String {
        let deciding = self
            .reasons
            .iter()
            .filter_map(|r| match r {
                Reason::Capacity { replicas, .. } => Some(*replicas),
                _ => None,
            })
            .max();
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .rev()
            .filter(|r| match r {
                Reason::Capacity { replicas, .. } => Some(*replicas) == deciding,
                Reason::WithinTolerance { .. } => deciding.is_none(),
                _ => true,
            })
            .map(|r| r.to_string())
            .collect();
        parts.dedup();
        parts.join("; ")
    }
}

/// Decides one tick, returning the decision and the new state.
pub fn decide(
    policy: &Policy,
    service: &ServiceSpec,
    obs: &Observations,
    replicas: Replicas,
    state: &CoreState,
    now_ms: u64,
) -> (Decision, CoreState) {
    let mut next = state.clone();
    let d = decide_in_place(policy, service, obs, replicas, &mut next, now_ms);
    (d, next)
}

/// As [`decide`], updating `state` in place (the simulator's hot path).
pub fn decide_in_place(
    policy: &Policy,
    service: &ServiceSpec,
    obs: &Observations,
    replicas: Replicas,
    state: &mut CoreState,
    now_ms: u64,
) -> Decision {
    let mut reasons = Vec::new();
    let current = replicas.current;
    let (min, max) = (service.min_replicas, service.max_replicas);
    let q = jidoka::classify(policy, obs, now_ms);
    let signals: Vec<(SignalKind, Quality)> = policy
        .signals
        .iter()
        .filter_map(|s| q[s.kind.index()].map(|x| (s.kind, x)))
        .collect();
    let mut any_bad = false;
    for (kind, quality) in &signals {
        if !matches!(quality, Quality::Good { .. }) {
            any_bad = true;
            reasons.push(Reason::BadData {
                signal: *kind,
                quality: quality.label(),
            });
        }
    }

    if jidoka::track_failures(&policy.jidoka, state, obs, &q, &mut reasons) {
        // Stopped: hold everything as it is. The tier is not re-evaluated on no data, and
        // its timers restart: neither `for` nor a cool-down may count time not observed.
        let tier = current_tier(policy, state);
        for t in &mut state.tiers {
            t.pending_since_ms = None;
            t.calm_since_ms = None;
        }
        let shed_admit = match policy.jidoka.when_stopped {
            // The loop holds its limit: there is no reading to move it by.
            StoppedShed::Keep => policy
                .action(tier)
                .shed_admit
                .map(|a| state.shed.map_or(a, |s| s.admit)),
            StoppedShed::None => None,
            StoppedShed::Admit(a) => Some(a),
        };
        let desired = current.clamp(min, max);
        let session_cap = capacity::session_cap(
            &policy.capacity,
            room(&q, replicas, service, desired),
            (now_ms, &mut state.cap_wait),
            &mut reasons,
        );
        finish(state, policy, current, desired, now_ms, &mut reasons);
        return Decision {
            tier,
            desired,
            shed_admit,
            session_cap,
            stopped: true,
            panic: false,
            signals,
            reasons,
            forecasts: Vec::new(),
        };
    }

    let tier = tier::evaluate(policy, &q, &mut state.tiers, current, now_ms, &mut reasons);
    // A tier raised for want of nodes is shown (and alerts), but the decision acts as
    // the signals' tier: its floor cannot be placed, and its shedding was meant for
    // latency, which the shedding loop still answers (see placement).
    let node_bound = replicas.placement.node_bound(service.max_replicas_per_node);
    let shown = placement::tier_floor(
        policy,
        &q,
        (replicas.placement, node_bound),
        (current, tier),
        &mut state.cannot_place,
        &mut reasons,
    );
    let action = policy.action(tier);

    match replicas.update {
        UpdatePhase::None => {}
        UpdatePhase::Progressing => reasons.push(Reason::RollingUpdate),
        UpdatePhase::Paused => reasons.push(Reason::UpdateNotProgressing { phase: "paused" }),
        UpdatePhase::Overdue => reasons.push(Reason::UpdateNotProgressing {
            phase: "past behavior.update_hold",
        }),
    }
    let holding_for_update = replicas.update == UpdatePhase::Progressing;

    let floor = match action.floor {
        Floor::None => 0,
        Floor::Replicas(n) => n,
        Floor::Max => max,
        Floor::Factor(f) => {
            let entry = (tier.level() as usize)
                .checked_sub(1)
                .and_then(|i| state.tiers.get(i))
                .map_or(current, |t| t.entry_replicas);
            (entry as f64 * f).ceil().min(u32::MAX as f64) as u32
        }
    }
    .min(max);

    // The tier's floor is part of the recommendation while the tier's condition holds, so
    // it enters the windows and the scale-down window levels the way back down. Once the
    // tier is cooling down its floor still applies (below), but no longer enters the
    // window: the window's wait and the cool-down run together, not one after the other.
    let cooling = (tier.level() as usize)
        .checked_sub(1)
        .and_then(|i| state.tiers.get(i))
        .is_some_and(|t| t.calm_since_ms.is_some());
    let window_floor = if cooling { 0 } else { floor };
    let mut rec = capacity::recommend(&policy.capacity, &q, current, action.headroom, &mut reasons);
    // Heijunka's prediction: a forecast may ask for more than the reading, never less.
    let mut forecasts = Vec::new();
    // The recommendation without the sessions forecaster's vote (with `sessions: on`).
    let mut without_sessions = None;
    if let Some(p) = &policy.behavior.predict {
        let (vote, outlooks) = predict::recommend(
            policy,
            p,
            &mut state.predict,
            (&q, &obs.readings),
            &obs.seasonal,
            (current, replicas.ready, tier == Tier::Green),
            action.headroom,
            now_ms,
            &mut reasons,
        );
        forecasts = outlooks;
        if let Some(r) = rec.replicas {
            if p.sessions {
                without_sessions = Some(vote.without_sessions.map_or(r, |v| v.max(r)));
            }
            if let Some((f, reason)) = vote.best.filter(|(f, _)| *f > r) {
                reasons.push(reason);
                rec.replicas = Some(f);
            }
        }
        // A refuted premise is no demand to hold replicas for: the window becomes what it
        // would be had the sessions forecaster never voted (the readings' and the other
        // forecasts' recommendations stay).
        if vote.refuted && !state.down_window_without_sessions.is_empty() {
            state.down_window = state.down_window_without_sessions.clone();
        }
    }
    // What the signals and forecasts ask for, before windows and step limits: panic's jump.
    let needed = rec.replicas.map(|r| r.max(window_floor).clamp(min, max));
    if let Some(r) = without_sessions {
        smoothing::push_window(
            &mut state.down_window_without_sessions,
            now_ms,
            r.max(window_floor).clamp(min, max) as f64,
            policy.behavior.scale_down.stabilization,
            false,
        );
    }
    let mut desired = match rec.replicas {
        // A progressing update holds the replicas; the windows still see the wish.
        Some(r) if holding_for_update => {
            let r = r.max(window_floor).clamp(min, max);
            smoothing::stabilize(state, &policy.behavior, current, r, now_ms, &mut Vec::new());
            current
        }
        Some(r) => {
            let r = r.max(window_floor).clamp(min, max);
            smoothing::stabilize(state, &policy.behavior, current, r, now_ms, &mut reasons)
        }
        None => current,
    };

    // Jidoka: bad data never causes a scale-down; with `freeze` it causes no change at all.
    // Sums over part of the targets read low: a partial view is bad data for a scale-down.
    let partial = obs.targets.filter(|n| *n < replicas.ready);
    if let Some(reporting) = partial {
        reasons.push(Reason::PartialTargets {
            reporting,
            running: replicas.ready,
        });
    }
    let freeze = any_bad && policy.jidoka.on_bad_data == OnBadData::Freeze;
    if (any_bad || partial.is_some() || rec.demand_unknown) && desired < current
        || freeze && desired != current
    {
        reasons.push(Reason::HeldForBadData { wanted: desired });
        desired = current;
    }

    desired = smoothing::limit_step(
        &state.events,
        &policy.behavior,
        current,
        desired,
        now_ms,
        &mut reasons,
    );

    // The floor applies at once, past windows and step limits ("emergency = max").
    if desired < floor && !freeze {
        reasons.push(Reason::TierFloor { tier, floor });
        desired = floor;
    }

    let mut panicking = false;
    if let Some(p) = &policy.behavior.panic {
        // The fast signal, when the policy has one and it reads well, stands beside its
        // slow self: panic weighs whichever says more.
        let mut fast_q = q;
        if let Some(f) = &policy.panic_fast {
            let stale = policy.jidoka.stale_after.as_millis() as u64;
            let fq = jidoka::quality(obs, obs.fast.as_ref(), stale, now_ms);
            if let (Quality::Good { value }, Some(Quality::Good { value: slow })) =
                (fq, q[f.kind.index()])
            {
                fast_q[f.kind.index()] = Some(Quality::Good {
                    value: value.max(slow),
                });
            }
        }
        let ratio_of =
            |qs: &tier::Qualities| capacity::load_ratio(&policy.capacity, qs, replicas.ready);
        let with_fast = ratio_of(&fast_q);
        // So does the sessions forecast: demand already connected that the throughput's
        // rate has not counted yet (when trusted; only ever more than the reading).
        let max_error = policy
            .behavior
            .predict
            .as_ref()
            .map_or(0.0, |p| p.max_error);
        for o in &forecasts {
            if let (Some(s), Some(Quality::Good { value })) =
                (o.connected_demand(max_error), fast_q[o.signal.index()])
            {
                if s > value {
                    fast_q[o.signal.index()] = Some(Quality::Good { value: s });
                }
            }
        }
        let ratio = ratio_of(&fast_q);
        // What raised this tick's ratio above the reading's, for the reason: the ratio is
        // the most loaded signal's, so a lifted signal that stays below another decides
        // nothing and is not named.
        let driven_by = if ratio > with_fast {
            Some("sessions forecast")
        } else if with_fast > ratio_of(&q) {
            Some("fast signal")
        } else {
            None
        };
        let demand = smoothing::PanicDemand {
            ratio,
            driven_by,
            needed,
        };
        if let Some(ps) = smoothing::panic(state, p, demand, replicas.ready, now_ms, &mut reasons) {
            panicking = true;
            if let Some(w) = ps.want.filter(|_| !freeze) {
                desired = desired.max(w);
            }
            desired = desired.max(current);
        }
    }

    // Emergency and panic scale-ups pass the flap guard: being safe beats being smooth.
    let urgent_up = (tier == Tier::Emergency || panicking) && desired > current;
    if !urgent_up {
        if let Some(r) = jidoka::flap_guard_blocks(&policy.jidoka, state, current, desired, now_ms)
        {
            reasons.push(r);
            desired = current;
        }
    }

    // A lost node's counters leave the sums: the demand signals need their window to
    // forget them.
    let grace = policy.placement_grace_ms();
    desired = placement::limit(
        (replicas.placement, node_bound),
        current,
        desired,
        (now_ms, grace),
        &mut reasons,
    );
    let bounded = desired.clamp(min, max);
    if bounded != desired {
        reasons.push(Reason::Bounded {
            wanted: desired,
            bound: bounded,
        });
        desired = bounded;
    }

    let shed_admit = shedding::step(
        &mut state.shed,
        shedding::Input {
            start: action.shed_admit,
            goal_s: action.shed_goal_s,
            p95: obs.get(shedding::LATENCY),
            load: policy.capacity_of(SignalKind::Throughput).and_then(|per| {
                let demand = q[SignalKind::Throughput.index()]?.value()?;
                Some(demand / (per * replicas.ready.max(1) as f64))
            }),
            now_ms,
            // The reading's window, plus a quarter for the scrape that carries it.
            settle_ms: policy.latency_window_ms() * 5 / 4,
        },
        &mut reasons,
    );
    let session_cap = capacity::session_cap(
        &policy.capacity,
        room(&q, replicas, service, desired),
        (now_ms, &mut state.cap_wait),
        &mut reasons,
    );
    finish(state, policy, current, desired, now_ms, &mut reasons);
    Decision {
        tier: shown,
        desired,
        shed_admit,
        session_cap,
        stopped: false,
        panic: panicking,
        signals,
        reasons,
        forecasts,
    }
}

/// Where the service stands for the session cap: the most replicas it can run now
/// (`max_replicas`, or fewer where its nodes hold fewer: the policy's replicas per node,
/// or tasks that found no node), and the sessions that want one.
fn room(
    q: &tier::Qualities,
    replicas: Replicas,
    service: &ServiceSpec,
    desired: u32,
) -> capacity::Room {
    let p = replicas.placement;
    let ceiling = [
        Some(service.max_replicas),
        p.node_bound(service.max_replicas_per_node),
        p.fits(replicas.current),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(service.max_replicas);
    capacity::Room {
        ceiling,
        desired,
        ready: replicas.ready,
        sessions: q[SignalKind::Connections.index()].and_then(|x| x.value()),
    }
}

/// First sight of a service with no remembered state: the scale-down window starts with
/// the current replicas, as HPA's `recordInitialRecommendation` does, so a controller that
/// starts (or loses its state) at 20 replicas with load for 10 waits out the window. HPA's
/// seed is older than the scale-up window's cut-off by the time it stabilises, so it
/// holds no scale-up back; neither does this.
pub fn seed_scale_down_window(policy: &Policy, state: &mut CoreState, current: u32, now_ms: u64) {
    let b = &policy.behavior;
    let r = current as f64;
    smoothing::push_window(
        &mut state.down_window,
        now_ms,
        r,
        b.scale_down.stabilization,
        false,
    );
    if b.predict.as_ref().is_some_and(|p| p.sessions) {
        state.down_window_without_sessions = state.down_window.clone();
    }
}

/// What a step's rollback needs: the step history and the flap guard's memory, saved
/// before a decision. Only these are undone when the write of a decision fails (or was
/// never attempted): the change did not happen, so step limits and the flap guard must not
/// count it. Tier timers, windows, panic and the failure counter are kept: a controller
/// whose writes keep failing still escalates.
#[derive(Debug, Clone, Default)]
pub struct StepUndo {
    events: Vec<ScaleEvent>,
    last_direction: i8,
    reversals_ms: Vec<u64>,
}

impl StepUndo {
    pub fn save(state: &CoreState) -> StepUndo {
        StepUndo {
            events: state.events.clone(),
            last_direction: state.last_direction,
            reversals_ms: state.reversals_ms.clone(),
        }
    }

    /// Forgets the step taken since `save`.
    pub fn restore(self, state: &mut CoreState) {
        state.events = self.events;
        state.last_direction = self.last_direction;
        state.reversals_ms = self.reversals_ms;
    }
}

/// The highest active tier in the state.
pub fn current_tier(policy: &Policy, state: &CoreState) -> Tier {
    policy
        .tiers
        .iter()
        .zip(state.tiers.iter())
        .filter(|(_, t)| t.active)
        .map(|(spec, _)| spec.tier)
        .max()
        .unwrap_or(Tier::Green)
}

/// Records the change (for step limits and the flap guard), prunes old history, and
/// states the outcome as the last reason.
fn finish(
    state: &mut CoreState,
    policy: &Policy,
    current: u32,
    desired: u32,
    now_ms: u64,
    reasons: &mut Vec<Reason>,
) {
    if desired != current {
        let dir: i8 = if desired > current { 1 } else { -1 };
        if state.last_direction != 0 && state.last_direction != dir {
            state.reversals_ms.push(now_ms);
        }
        state.last_direction = dir;
        state.events.push(ScaleEvent {
            at_ms: now_ms,
            from: current,
            to: desired,
        });
        // A scale-down has judged the demand before it gone (it passed the scale-down
        // window): panic's window must not hold that demand against fewer replicas (with a
        // window shorter than panic's, it jumped straight back up).
        if desired < current {
            state.panic_samples.retain(|s| s.at_ms >= now_ms);
        }
        reasons.push(Reason::Scale {
            from: current,
            to: desired,
        });
    } else {
        reasons.push(Reason::Hold { replicas: current });
    }
    let b = &policy.behavior;
    let keep = b
        .scale_up
        .longest_period()
        .max(b.scale_down.longest_period())
        .as_millis() as u64;
    state
        .events
        .retain(|e| e.at_ms.saturating_add(keep) > now_ms);
    let flap = policy.jidoka.flap_guard.window.as_millis() as u64;
    state
        .reversals_ms
        .retain(|t| t.saturating_add(flap) > now_ms);
}

#[cfg(test)]
mod tests;
