//! Why the core decided what it did, modelled on HPA's conditions (AbleToScale,
//! ScalingActive, ScalingLimited): which signal, which threshold, which window.

use crate::policy::{SignalKind, Tier};
use serde::Serialize;
use std::fmt;

mod text;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "code")]
pub enum Reason {
    /// A tier's entry condition has held long enough.
    TierEntered {
        tier: Tier,
        signal: SignalKind,
        value: f64,
        threshold: f64,
        for_s: f64,
    },
    /// A signal is above a tier's threshold, but not yet for long enough.
    TierPending {
        tier: Tier,
        signal: SignalKind,
        value: f64,
        threshold: f64,
        held_s: f64,
        for_s: f64,
    },
    /// The tier is held: some signal is still above its exit level, or the cool-down runs.
    TierHeld {
        tier: Tier,
        cause: HoldCause,
    },
    /// The tier was left after every signal stayed below its exit level for the cool-down.
    TierLeft {
        tier: Tier,
        cooldown_s: f64,
    },
    /// Target tracking on a demand signal.
    Capacity {
        signal: SignalKind,
        demand: f64,
        per_replica: f64,
        target: f64,
        replicas: u32,
    },
    /// Demand is within the tolerance band of the current replicas.
    WithinTolerance {
        signal: SignalKind,
        ratio: f64,
        tolerance: f64,
    },
    /// A stabilisation window held the recommendation back.
    Stabilized {
        direction: Dir,
        window_s: f64,
        recommended: u32,
        stabilized: u32,
    },
    /// A step limit capped the change.
    StepLimited {
        direction: Dir,
        wanted: u32,
        limit: u32,
        period_s: f64,
    },
    /// The tier's floor raised the replicas.
    TierFloor {
        tier: Tier,
        floor: u32,
    },
    /// Panic mode: demand far above the ready capacity; jump at once, no scale-down.
    Panic {
        ratio: f64,
        threshold: f64,
        replicas: u32,
        /// What put this tick's demand above the reading's, when something did: the fast
        /// signal (`behavior.panic.fast`) or a forecaster ("sessions").
        #[serde(skip_serializing_if = "Option::is_none")]
        driven_by: Option<&'static str>,
    },
    /// The shedding loop moved the admitted fraction toward the latency goal.
    ShedAdjusted {
        from: f64,
        to: f64,
        p95_s: f64,
        goal_s: f64,
    },
    /// The tier that shed has gone: the limit is given back gradually, never cut;
    /// `to: None` once it reached three times the demand and nothing is shed.
    ShedReleasing {
        from: f64,
        to: Option<f64>,
        p95_s: f64,
    },
    /// Panic is over only after the stable window passes without a panic reading.
    PanicHold {
        remaining_s: f64,
    },
    /// Min/max bounds applied.
    Bounded {
        wanted: u32,
        bound: u32,
    },
    /// The policy's session cap is not enforced: the service runs all the replicas it may
    /// have (`Some`), so no client at the door would find room by waiting; or there is no
    /// good sessions reading (`None`) to size it by.
    SessionCapLifted {
        cap: u32,
        replicas: Option<u32>,
    },
    /// The session cap is posted while replicas start, or raised to the demand's share
    /// of the replicas that will run (of those running, once the others have been
    /// starting for longer than the cap waits: `waited_out`).
    SessionCapHeld {
        cap: u32,
        policy_cap: u32,
        sessions: f64,
        ready: u32,
        coming: u32,
        waited_out: bool,
    },
    /// Jidoka: a reading is missing, stale, NaN/Inf or errored; it may not scale down.
    BadData {
        signal: SignalKind,
        quality: &'static str,
    },
    /// Jidoka: scale-down blocked (or all change, with on_bad_data: freeze) by bad data.
    HeldForBadData {
        wanted: u32,
    },
    /// Jidoka: the line is stopped after consecutive source failures.
    Stopped {
        failures: u32,
        error: String,
    },
    /// The data came back; control resumes.
    Resumed {
        after_failures: u32,
    },
    /// The flap guard held a change of direction.
    FlapGuard {
        reversals: u32,
        window_s: f64,
    },
    /// A rolling update is in progress: replicas held (a floor and panic still pass).
    RollingUpdate,
    /// A rolling update that is paused or has run past `behavior.update_hold`: it does
    /// not hold scaling.
    UpdateNotProgressing {
        phase: &'static str,
    },
    /// Jidoka: fewer scrape targets report than tasks run; the sums cover part of the
    /// service, so it may not scale down.
    PartialTargets {
        reporting: u32,
        running: u32,
    },
    /// Tasks found no node ("no suitable node"): no scale-up past what is asked already.
    Unplaceable {
        pending: u32,
        fits: u32,
        wanted: u32,
    },
    /// The policy's replicas per node, times the serving nodes, bound a scale-up.
    NodesHold {
        wanted: u32,
        bound: u32,
        nodes: u32,
    },
    /// Demand needs more replicas than the nodes hold: the tier is at least red.
    CannotPlace {
        ratio: f64,
        fits: u32,
        tier: Tier,
    },
    /// Tasks are meant to run but do not yet (starting, or on a node that is down or
    /// draining): no scale-down until Swarm has placed them.
    TasksMoving {
        tasks: u32,
        wanted: u32,
    },
    /// A node stopped serving lately: its tasks' counters vanished from the sums, so no
    /// scale-down until the signals' window has forgotten them.
    NodeLost {
        ago_s: f64,
        grace_s: f64,
        wanted: u32,
    },
    /// No state was remembered: the scale-down window starts full of the current replicas
    /// (HPA's first recommendation), so a cold start never scales down at once.
    WindowSeeded {
        replicas: u32,
    },
    /// A forecast asked for more replicas than the reading did, and decided.
    Forecast {
        signal: SignalKind,
        forecaster: &'static str,
        value: f64,
        horizon_s: f64,
        replicas: u32,
    },
    /// A forecaster is not trusted this tick (Jidoka for forecasts).
    ForecastIgnored {
        signal: SignalKind,
        forecaster: &'static str,
        why: String,
    },
    /// The sessions forecaster's share per session, measured once the connections held,
    /// is below the one its forecasts used: what they asked for is withdrawn from the
    /// scale-down window.
    ForecastRefuted {
        signal: SignalKind,
        used: f64,
        measured: f64,
    },
    /// A reading fell to zero from a level: the trend starts over.
    ForecastReset {
        signal: SignalKind,
        from: f64,
        to: f64,
    },
    /// The result of this tick.
    Scale {
        from: u32,
        to: u32,
    },
    Hold {
        replicas: u32,
    },
}

/// What keeps an active tier from cooling down.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum HoldCause {
    AboveEntry {
        signal: SignalKind,
        value: f64,
        threshold: f64,
    },
    AboveExit {
        signal: SignalKind,
        value: f64,
        level: f64,
    },
    BadData {
        signal: SignalKind,
        quality: &'static str,
    },
    Cooldown {
        calm_s: f64,
        cooldown_s: f64,
    },
}

impl fmt::Display for HoldCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HoldCause::AboveEntry {
                signal,
                value,
                threshold,
            } => {
                write!(
                    f,
                    "{signal} {} > entry {}",
                    signal.format(*value),
                    signal.format(*threshold)
                )
            }
            HoldCause::AboveExit {
                signal,
                value,
                level,
            } => {
                write!(
                    f,
                    "{signal} {} > exit level {}",
                    signal.format(*value),
                    signal.format(*level)
                )
            }
            HoldCause::BadData { signal, quality } => {
                write!(f, "{signal} is {quality} (bad data never relaxes a tier)")
            }
            HoldCause::Cooldown { calm_s, cooldown_s } => {
                write!(f, "cool-down {calm_s:.0}s of {cooldown_s:.0}s")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    Up,
    Down,
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dir::Up => "scale-up",
            Dir::Down => "scale-down",
        })
    }
}

impl Reason {
    /// The stable machine name, as in the JSON `code` field.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::TierEntered { .. } => "tier_entered",
            Reason::TierPending { .. } => "tier_pending",
            Reason::TierHeld { .. } => "tier_held",
            Reason::TierLeft { .. } => "tier_left",
            Reason::Capacity { .. } => "capacity",
            Reason::Forecast { .. } => "forecast",
            Reason::ForecastIgnored { .. } => "forecast_ignored",
            Reason::ForecastRefuted { .. } => "forecast_refuted",
            Reason::ForecastReset { .. } => "forecast_reset",
            Reason::WithinTolerance { .. } => "within_tolerance",
            Reason::Stabilized { .. } => "stabilized",
            Reason::StepLimited { .. } => "step_limited",
            Reason::TierFloor { .. } => "tier_floor",
            Reason::Panic { .. } => "panic",
            Reason::PanicHold { .. } => "panic_hold",
            Reason::ShedAdjusted { .. } => "shed_adjusted",
            Reason::ShedReleasing { .. } => "shed_releasing",
            Reason::Bounded { .. } => "bounded",
            Reason::SessionCapLifted { .. } => "session_cap_lifted",
            Reason::SessionCapHeld { .. } => "session_cap",
            Reason::BadData { .. } => "bad_data",
            Reason::HeldForBadData { .. } => "held_for_bad_data",
            Reason::Stopped { .. } => "stopped",
            Reason::Resumed { .. } => "resumed",
            Reason::FlapGuard { .. } => "flap_guard",
            Reason::RollingUpdate => "rolling_update",
            Reason::UpdateNotProgressing { .. } => "update_not_progressing",
            Reason::PartialTargets { .. } => "partial_targets",
            Reason::WindowSeeded { .. } => "window_seeded",
            Reason::Unplaceable { .. } => "unplaceable",
            Reason::NodesHold { .. } => "nodes_hold",
            Reason::CannotPlace { .. } => "cannot_place",
            Reason::TasksMoving { .. } => "tasks_moving",
            Reason::NodeLost { .. } => "node_lost",
            Reason::Scale { .. } => "scale",
            Reason::Hold { .. } => "hold",
        }
    }
}
