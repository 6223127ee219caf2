//! One tick's decision, stage by stage in the order of the module's rules (core/mod.rs):
//! Jidoka's classification and the stopped line; the tier and its floor; target tracking
//! with the forecasts; windows, the bad-data hold and step limits; the floor; panic; the
//! flap guard; placement and bounds; shedding and the session cap; the record.

use super::observation::{Observations, Quality, Replicas, UpdatePhase};
use super::reason::Reason;
use super::state::{CoreState, ScaleEvent};
use super::{
    capacity, current_tier, jidoka, placement, predict, shedding, smoothing, tier, Decision,
};
use crate::policy::{
    Floor, OnBadData, Policy, ServiceSpec, SignalKind, StoppedShed, Tier, TierAction,
};

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
        return stopped(
            policy, service, &q, replicas, state, now_ms, signals, reasons,
        );
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

    let floor = floor_of(&action, tier, state, current, max);
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
    let forecasts = forecast(
        policy,
        (obs, &q),
        replicas,
        (tier, action.headroom, window_floor, min, max),
        &mut rec,
        state,
        now_ms,
        &mut reasons,
    );
    // What the signals and forecasts ask for, before windows and step limits: panic's jump.
    let needed = rec.replicas.map(|r| r.max(window_floor).clamp(min, max));
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
        let demand = panic_demand(policy, obs, &q, &forecasts, replicas.ready, needed, now_ms);
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

/// The line is stopped: hold everything as it is. The tier is not re-evaluated on no
/// data, and its timers restart: neither `for` nor a cool-down may count time not
/// observed.
#[allow(clippy::too_many_arguments)]
fn stopped(
    policy: &Policy,
    service: &ServiceSpec,
    q: &tier::Qualities,
    replicas: Replicas,
    state: &mut CoreState,
    now_ms: u64,
    signals: Vec<(SignalKind, Quality)>,
    mut reasons: Vec<Reason>,
) -> Decision {
    let current = replicas.current;
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
    let desired = current.clamp(service.min_replicas, service.max_replicas);
    let session_cap = capacity::session_cap(
        &policy.capacity,
        room(q, replicas, service, desired),
        (now_ms, &mut state.cap_wait),
        &mut reasons,
    );
    finish(state, policy, current, desired, now_ms, &mut reasons);
    Decision {
        tier,
        desired,
        shed_admit,
        session_cap,
        stopped: true,
        panic: false,
        signals,
        reasons,
        forecasts: Vec::new(),
    }
}

/// The tier's floor of replicas, at most `max`: a factor applies to the replicas the tier
/// was entered with.
fn floor_of(action: &TierAction, tier: Tier, state: &CoreState, current: u32, max: u32) -> u32 {
    match action.floor {
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
    .min(max)
}

/// Heijunka's prediction: a forecast may raise the recommendation `rec`, never lower it.
/// Returns what each demand signal's forecasters said. With `sessions: on`, it also keeps
/// the scale-down window that the sessions forecaster's vote never entered, and falls back
/// to it when the vote's premise is refuted.
#[allow(clippy::too_many_arguments)]
fn forecast(
    policy: &Policy,
    (obs, q): (&Observations, &tier::Qualities),
    replicas: Replicas,
    (tier, headroom, window_floor, min, max): (Tier, f64, u32, u32, u32),
    rec: &mut capacity::Recommendation,
    state: &mut CoreState,
    now_ms: u64,
    reasons: &mut Vec<Reason>,
) -> Vec<predict::Outlook> {
    let Some(p) = &policy.behavior.predict else {
        return Vec::new();
    };
    let (vote, outlooks) = predict::recommend(
        policy,
        p,
        &mut state.predict,
        (q, &obs.readings),
        &obs.seasonal,
        (replicas.current, replicas.ready, tier == Tier::Green),
        headroom,
        now_ms,
        reasons,
    );
    // The recommendation without the sessions forecaster's vote.
    let mut without_sessions = None;
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
    if let Some(r) = without_sessions {
        smoothing::push_window(
            &mut state.down_window_without_sessions,
            now_ms,
            r.max(window_floor).clamp(min, max) as f64,
            policy.behavior.scale_down.stabilization,
            false,
        );
    }
    outlooks
}

/// Panic's demand: the load ratio over the ready replicas, with the fast signal (when the
/// policy has one and it reads well) standing beside its slow self, and the sessions
/// forecast's demand already connected that the throughput's rate has not counted yet
/// (when trusted); each only ever more than the reading.
fn panic_demand(
    policy: &Policy,
    obs: &Observations,
    q: &tier::Qualities,
    forecasts: &[predict::Outlook],
    ready: u32,
    needed: Option<u32>,
    now_ms: u64,
) -> smoothing::PanicDemand {
    let mut fast_q = *q;
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
    let ratio_of = |qs: &tier::Qualities| capacity::load_ratio(&policy.capacity, qs, ready);
    let with_fast = ratio_of(&fast_q);
    let max_error = policy
        .behavior
        .predict
        .as_ref()
        .map_or(0.0, |p| p.max_error);
    for o in forecasts {
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
    } else if with_fast > ratio_of(q) {
        Some("fast signal")
    } else {
        None
    };
    smoothing::PanicDemand {
        ratio,
        driven_by,
        needed,
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
