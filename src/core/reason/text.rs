//! The words of each reason: what `/status`, the logs and `simulate`'s timeline show
//! (the JSON carries the fields and the code beside them).

use super::Reason;
use std::fmt;

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The sessions forecaster's demand is already connected (a trend at a
            // `horizon: 0s` is not, so the forecaster decides the words, not the horizon).
            Reason::Forecast {
                signal,
                forecaster: "sessions",
                value,
                replicas,
                ..
            } => write!(
                f,
                "forecast (sessions): {signal} {} already connected, not yet in the reading → {replicas} replicas",
                signal.format(*value)
            ),
            Reason::Forecast {
                signal,
                forecaster,
                value,
                horizon_s,
                replicas,
            } => write!(
                f,
                "forecast ({forecaster}): {signal} {} in {horizon_s:.0}s → {replicas} replicas",
                signal.format(*value)
            ),
            Reason::ForecastIgnored {
                signal,
                forecaster,
                why,
            } => write!(f, "forecast ({forecaster}) of {signal} ignored: {why}"),
            Reason::ForecastRefuted {
                signal,
                used,
                measured,
            } => write!(
                f,
                "forecast (sessions) of {signal} refuted: the connections send {} each, \
                 not the {} its forecasts took; what they asked for since this controller started \
                 leaves the scale-down window",
                signal.format(*measured),
                signal.format(*used)
            ),
            Reason::ForecastReset { signal, from, to } => write!(
                f,
                "forecast of {signal} restarts: the reading fell from {} to {}",
                signal.format(*from),
                signal.format(*to)
            ),
            Reason::TierEntered {
                tier,
                signal,
                value,
                threshold,
                for_s,
            } => write!(
                f,
                "{tier}: {signal} {} > {} for {for_s:.0}s",
                signal.format(*value),
                signal.format(*threshold)
            ),
            Reason::TierPending {
                tier,
                signal,
                value,
                threshold,
                held_s,
                for_s,
            } => write!(
                f,
                "{tier} pending: {signal} {} > {} for {held_s:.0}s of {for_s:.0}s",
                signal.format(*value),
                signal.format(*threshold)
            ),
            Reason::TierHeld { tier, cause } => write!(f, "{tier} held: {cause}"),
            Reason::TierLeft { tier, cooldown_s } => {
                write!(
                    f,
                    "left {tier}: every signal below its exit level for {cooldown_s:.0}s"
                )
            }
            Reason::Capacity {
                signal,
                demand,
                per_replica,
                target,
                replicas,
            } => write!(
                f,
                "{signal} {} / ({} per replica × {target}) → {replicas} replicas",
                signal.format(*demand),
                signal.format(*per_replica)
            ),
            Reason::WithinTolerance {
                signal,
                ratio,
                tolerance,
            } => write!(
                f,
                "{signal} at {:.0}% of target, within ±{:.0}%: no change",
                ratio * 100.0,
                tolerance * 100.0
            ),
            Reason::Stabilized {
                direction,
                window_s,
                recommended,
                stabilized,
            } => write!(
                f,
                "{direction} window {window_s:.0}s holds {stabilized} (recommended {recommended})"
            ),
            Reason::StepLimited {
                direction,
                wanted,
                limit,
                period_s,
            } => {
                write!(
                    f,
                    "{direction} step limit: {wanted} capped to {limit} per {period_s:.0}s"
                )
            }
            Reason::TierFloor { tier, floor } => {
                write!(f, "{tier} floor: at least {floor} replicas")
            }
            Reason::Panic {
                ratio,
                threshold,
                replicas,
                driven_by,
            } => {
                write!(
                    f,
                    "panic: demand at {:.0}% of ready capacity (≥ {:.0}%",
                    ratio * 100.0,
                    threshold * 100.0
                )?;
                if let Some(d) = driven_by {
                    write!(f, "; this tick's from the {d}")?;
                }
                write!(f, ") → {replicas} at once")
            }
            Reason::ShedAdjusted {
                from,
                to,
                p95_s,
                goal_s,
            } => write!(
                f,
                "shedding: p95 {:.0}ms against a goal of {:.0}ms: admit {from:.2} → {to:.2} of capacity",
                p95_s * 1000.0,
                goal_s * 1000.0
            ),
            Reason::ShedReleasing { from, to, p95_s } => {
                write!(
                    f,
                    "shedding released gradually (the tier no longer sheds): p95 {:.0}ms: admit {from:.2} → ",
                    p95_s * 1000.0
                )?;
                match to {
                    Some(to) => write!(f, "{to:.2} of capacity"),
                    None => write!(f, "all (three times the demand per replica)"),
                }
            }
            Reason::PanicHold { remaining_s } => {
                write!(f, "panic mode: no scale-down for another {remaining_s:.0}s")
            }
            Reason::Bounded { wanted, bound } => write!(f, "bounded: {wanted} → {bound}"),
            Reason::SessionCapLifted {
                cap,
                replicas: Some(n),
            } => write!(
                f,
                "session cap of {cap} lifted: the service runs all the replicas it can have ({n})"
            ),
            Reason::SessionCapLifted { cap, replicas: None } => write!(
                f,
                "session cap of {cap} lifted: no good sessions reading to size it by"
            ),
            Reason::SessionCapHeld {
                cap,
                policy_cap,
                sessions,
                ready,
                coming,
                waited_out,
            } => {
                let over = if *waited_out { (*ready).max(1) } else { *coming };
                if cap > policy_cap {
                    write!(
                        f,
                        "session cap {policy_cap} raised to {cap}: {sessions:.0} sessions over {over} replicas"
                    )?;
                } else {
                    write!(f, "session cap {cap}")?;
                }
                let sep = if cap > policy_cap { "; " } else { ": " };
                if *waited_out {
                    write!(f, "{sep}{} of {coming} replicas not ready after {}s", coming - ready, crate::core::capacity::CAP_WAIT_MS / 1000)?;
                } else if ready < coming {
                    write!(f, "{sep}{ready} of {coming} replicas running")?;
                }
                Ok(())
            }
            Reason::BadData { signal, quality } => write!(f, "jidoka: {signal} is {quality}"),
            Reason::HeldForBadData { wanted } => {
                write!(f, "jidoka: bad data, not scaling down to {wanted}")
            }
            Reason::Stopped { failures, error } => write!(
                f,
                "jidoka: line stopped after {failures} failed reads ({error}); holding replicas"
            ),
            Reason::Resumed { after_failures } => {
                write!(
                    f,
                    "jidoka: data is good again after {after_failures} failed reads; resuming"
                )
            }
            Reason::FlapGuard {
                reversals,
                window_s,
            } => write!(
                f,
                "flap guard: {reversals} direction changes in {window_s:.0}s already; holding"
            ),
            Reason::RollingUpdate => write!(
                f,
                "rolling update in progress: holding replicas (floors and panic still apply)"
            ),
            Reason::UpdateNotProgressing { phase } => {
                write!(f, "rolling update {phase}: it does not hold scaling")
            }
            Reason::PartialTargets { reporting, running } => write!(
                f,
                "jidoka: {reporting} of {running} running tasks report metrics; not scaling down on a partial view"
            ),
            Reason::WindowSeeded { replicas } => write!(
                f,
                "no remembered state: the scale-down window starts at the current {replicas} replicas"
            ),
            Reason::NodesHold {
                wanted,
                bound,
                nodes,
            } => write!(
                f,
                "{nodes} serving nodes hold {bound} (max_replicas_per_node); not asking for {wanted}"
            ),
            Reason::Unplaceable {
                pending,
                fits,
                wanted,
            } => write!(
                f,
                "{pending} tasks cannot be placed (no suitable node): the nodes hold {fits}; not asking for {wanted}"
            ),
            Reason::CannotPlace { ratio, fits, tier } => write!(
                f,
                "demand is {:.0}% of what the {fits} replicas the nodes hold can serve: at least {tier}",
                ratio * 100.0
            ),
            Reason::TasksMoving { tasks, wanted } => write!(
                f,
                "{tasks} tasks are starting or on nodes that are down or draining: not scaling down to {wanted} until they run"
            ),
            Reason::NodeLost {
                ago_s,
                grace_s,
                wanted,
            } => write!(
                f,
                "a node stopped serving {ago_s:.0}s ago: its tasks' metrics left the sums, so not scaling down to {wanted} for {grace_s:.0}s"
            ),
            Reason::Scale { from, to } => write!(f, "scale {from} → {to}"),
            Reason::Hold { replicas } => write!(f, "hold at {replicas}"),
        }
    }
}
