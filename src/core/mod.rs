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
mod decide;
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

pub use decide::{decide, decide_in_place};
pub use observation::{Observations, Quality, Reading, Replicas, UpdatePhase};
pub use reason::Reason;
pub use state::CoreState;

use crate::policy::{Policy, SignalKind, Tier};
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

#[cfg(test)]
mod tests;
