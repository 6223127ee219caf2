//! The yardsticks `andon simulate --baseline hpa` measures by: an emulation of Kubernetes'
//! HPA with its documented defaults, and the service's true tier.
//!
//! HPA, as `pkg/controller/podautoscaler` and `pkg/apis/autoscaling/v2/defaults.go` define
//! it: target tracking on the policy's demand signals and capacity (the max over metrics),
//! tolerance 0.1, a 15 s sync period, scale-up with no window and max(+4, +100%) per 15 s,
//! scale-down with a 300 s window and 100% per 15 s, the first sight seeding the window,
//! missing metrics blocking scale-down. No tiers, no shedding, no panic, no flap guard.
//! It runs through the same reconcile step and modelled cluster as andon.

use crate::model::TickMetrics;
use crate::policy::validate::{default_scale_down, default_scale_up, DEFAULT_UPDATE_HOLD};
use crate::policy::{Behavior, FlapGuard, Policy, SignalKind, Tier};
use std::time::Duration;

/// HPA's sync period (`--horizontal-pod-autoscaler-sync-period`).
pub const HPA_SYNC: Duration = Duration::from_secs(15);

/// The policy HPA would run with: its demand signals and capacity, HPA's behaviour.
pub fn hpa_policy(policy: &Policy) -> Policy {
    let mut p = policy.clone();
    p.tiers.clear();
    p.capacity.tolerance = 0.1;
    // HPA admits every session.
    p.capacity.session_cap = None;
    p.behavior = Behavior {
        scale_up: default_scale_up(),
        scale_down: default_scale_down(),
        panic: None,
        update_hold: DEFAULT_UPDATE_HOLD,
        predict: None,
    };
    p.jidoka.flap_guard = FlapGuard {
        max_reversals: 1000,
        window: Duration::from_secs(1),
    };
    p
}

/// The tier the service is really in at one tick, by the policy's entry thresholds on
/// the modelled figures themselves (no `for`, no hysteresis, no scrape): the same
/// yardstick for andon and for HPA, which has no tiers of its own.
pub fn true_tier(policy: &Policy, m: &TickMetrics) -> Tier {
    let value = |k: SignalKind| -> Option<f64> {
        Some(match k {
            // What the policy's error query counts (failures and sheds over requests),
            // and the demand of clients the session cap refuses: refusing them is not
            // serving them, whether or not a signal sees it.
            SignalKind::ErrorRate => m.client_failure_rate(),
            SignalKind::P95Latency => {
                if m.admitted_rps > 0.0 {
                    m.p95_s
                } else {
                    return None;
                }
            }
            SignalKind::Cpu => m.cpu,
            SignalKind::Memory => m.memory_bytes,
            SignalKind::Connections => m.connections as f64,
            SignalKind::Throughput => m.offered_rps,
            SignalKind::QueueDepth => m.queue_depth,
        })
    };
    policy
        .tiers
        .iter()
        .rev()
        .find(|t| {
            t.enter
                .iter()
                .any(|(k, th)| value(*k).is_some_and(|v| v > *th))
        })
        .map_or(Tier::Green, |t| t.tier)
}
