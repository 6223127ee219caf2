//! HPA-style target tracking: `ceil(demand × (1 + headroom) / (capacity × target))` per
//! demand signal, with a tolerance band around the current replicas, and the maximum over
//! the signals. The arithmetic lives here, apart from the loop, as in HPA's
//! replica_calculator.go.

use super::observation::Quality;
use super::reason::Reason;
use super::tier::Qualities;
use crate::policy::Capacity;
use serde::{Deserialize, Serialize};

/// What target tracking recommends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recommendation {
    /// Max over the demand signals that have good data; `None` when none has.
    pub replicas: Option<u32>,
    /// Some demand signal had bad data: its vote is unknown, so scale-down is unsafe.
    pub demand_unknown: bool,
}

pub fn recommend(
    cap: &Capacity,
    q: &Qualities,
    current: u32,
    headroom: f64,
    reasons: &mut Vec<Reason>,
) -> Recommendation {
    let mut best: Option<u32> = None;
    let mut unknown = false;
    for &(signal, per_replica) in &cap.per_replica {
        let Some(Quality::Good { value: demand }) = q[signal.index()] else {
            unknown = true;
            continue;
        };
        let demand = demand.max(0.0) * (1.0 + headroom);
        let per = per_replica * cap.target_utilization;
        let ratio = if current == 0 {
            f64::INFINITY
        } else {
            demand / (current as f64 * per)
        };
        let replicas = if current > 0 && (ratio - 1.0).abs() <= cap.tolerance {
            reasons.push(Reason::WithinTolerance {
                signal,
                ratio,
                tolerance: cap.tolerance,
            });
            current
        } else {
            let r = (demand / per).ceil();
            let r = if r >= u32::MAX as f64 {
                u32::MAX
            } else {
                r as u32
            };
            reasons.push(Reason::Capacity {
                signal,
                demand,
                per_replica,
                target: cap.target_utilization,
                replicas: r,
            });
            r
        };
        best = Some(best.map_or(replicas, |b| b.max(replicas)));
    }
    Recommendation {
        replicas: best,
        demand_unknown: unknown,
    }
}

/// The largest load ratio reported (demand with no ready replica).
pub const MAX_LOAD_RATIO: f64 = 1000.0;

/// Demand over the capacity of `ready` replicas at target, max over the good signals.
/// Panic mode compares this with its threshold.
pub fn load_ratio(cap: &Capacity, q: &Qualities, ready: u32) -> Option<f64> {
    cap.per_replica
        .iter()
        .filter_map(|&(signal, per_replica)| {
            let demand = q[signal.index()]?.value()?;
            let capacity = ready as f64 * per_replica * cap.target_utilization;
            // No ready capacity with demand waiting is as bad as it gets; keep it finite so
            // that the state (which keeps panic samples) still serialises.
            Some(if capacity > 0.0 {
                (demand / capacity).min(MAX_LOAD_RATIO)
            } else if demand > 0.0 {
                MAX_LOAD_RATIO
            } else {
                0.0
            })
        })
        .reduce(f64::max)
}

/// Where the service stands, for the session cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Room {
    /// The most replicas the service can run now: `max_replicas`, or fewer where its
    /// nodes hold fewer (the policy's replicas per node, or tasks that found no node).
    pub ceiling: u32,
    pub desired: u32,
    pub ready: u32,
    /// The connections signal's good reading: the sessions that want a replica (with a
    /// cap, the policy counts those at the door too).
    pub sessions: Option<f64>,
}

/// Since when the session cap has waited for starting replicas, and for how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapWait {
    pub since_ms: u64,
    pub coming: u32,
}

/// How long the session cap waits for replicas that are starting, from the last time
/// more were asked for. Swarm starts a task here in about 5 s, and readiness adds a few
/// more (10 s in all, `behavior.predict`'s default `ready_after`; the wait is fixed and
/// does not follow that setting); a task not ready in three times that is failing (a
/// crash loop, a health check, an image that does not pull), and a cap that waited for
/// it would refuse the clients the running replicas have room for until it starts,
/// perhaps never.
pub const CAP_WAIT_MS: u64 = 30_000;

/// The session cap the tasks enforce this tick: the policy's (`capacity.session_cap`),
/// raised to the demand's share of the replicas that will run, and lifted once no more
/// replicas can come. The cap is for a step: sessions stay on the replica that accepted
/// them, so new sessions that arrive before new replicas are ready wait at the door
/// (and retry) rather than crowd the ready ones for the rest of their lives. A cap below
/// the demand's share would refuse clients with every replica they get running (a hard
/// ceiling: a review's 600 sessions on a cap of 30 left 5% refused at 19 replicas, the
/// tier green). Once the service runs all the replicas it can, a client at the door
/// waits for nothing: the cap is lifted, and overload is shedding's (a fixed cap turned
/// a fifth of 1,000 sessions away for a 10-minute hold on at most 20 × 40; after a
/// node was lost at max, 14% of them until it came back). Replicas still not ready
/// after [`CAP_WAIT_MS`] are not waited for: the share is over those running. Without a
/// good sessions reading the cap cannot be sized, and is lifted (Jidoka: blind data
/// turns no client away, as it scales nothing down). `wait` is the core's memory of
/// when replicas began to be awaited, restarted when more are asked for (a ramp's second
/// step, or a step while a task crash-loops, waits for its own new replicas).
pub fn session_cap(
    cap: &Capacity,
    room: Room,
    (now_ms, wait): (u64, &mut Option<CapWait>),
    reasons: &mut Vec<Reason>,
) -> Option<u32> {
    let Some(policy_cap) = cap.session_cap else {
        *wait = None;
        return None;
    };
    let coming = room.desired.min(room.ceiling).max(1);
    let starting = room.ready < coming;
    // The wait restarts when more replicas are asked for; fewer coming (a scale-down
    // while some start) is the same wait, and a rise from there is a new one.
    *wait = match *wait {
        _ if !starting => None,
        Some(w) if coming <= w.coming => Some(CapWait { coming, ..w }),
        _ => Some(CapWait {
            since_ms: now_ms,
            coming,
        }),
    };
    if !starting && coming >= room.ceiling {
        reasons.push(Reason::SessionCapLifted {
            cap: policy_cap,
            replicas: Some(room.ceiling),
        });
        return None;
    }
    let Some(sessions) = room.sessions.filter(|s| s.is_finite() && *s >= 0.0) else {
        reasons.push(Reason::SessionCapLifted {
            cap: policy_cap,
            replicas: None,
        });
        return None;
    };
    let waited_out = wait.is_some_and(|w| now_ms.saturating_sub(w.since_ms) > CAP_WAIT_MS);
    let over = if waited_out {
        room.ready.max(1)
    } else {
        coming
    };
    let share = (sessions / over as f64).ceil().min(u32::MAX as f64) as u32;
    let effective = policy_cap.max(share);
    if starting || effective > policy_cap {
        reasons.push(Reason::SessionCapHeld {
            cap: effective,
            policy_cap,
            sessions,
            ready: room.ready,
            coming,
            waited_out,
        });
    }
    Some(effective)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SignalKind;

    fn cap() -> Capacity {
        Capacity {
            per_replica: vec![
                (SignalKind::Connections, 40.0),
                (SignalKind::Throughput, 625.0),
            ],
            target_utilization: 0.8,
            tolerance: 0.1,
            session_cap: None,
        }
    }

    fn q(conns: Option<f64>, tput: Option<f64>) -> Qualities {
        let mut q: Qualities = [None; 7];
        q[SignalKind::Connections.index()] =
            Some(conns.map_or(Quality::Missing, |v| Quality::Good { value: v }));
        q[SignalKind::Throughput.index()] =
            Some(tput.map_or(Quality::Missing, |v| Quality::Good { value: v }));
        q
    }

    #[test]
    fn takes_the_max_over_demand_signals() {
        let mut r = vec![];
        // 320 connections / 32 = 10; 2000 msg/s / 500 = 4.
        let rec = recommend(&cap(), &q(Some(320.0), Some(2000.0)), 4, 0.0, &mut r);
        assert_eq!(rec.replicas, Some(10));
        assert!(!rec.demand_unknown);
    }

    #[test]
    fn tolerance_band_keeps_current() {
        let mut r = vec![];
        // 10 replicas × 32 = 320; 340 is 6% above: within 10%.
        let rec = recommend(&cap(), &q(Some(340.0), Some(0.0)), 10, 0.0, &mut r);
        assert_eq!(rec.replicas, Some(10));
        assert!(r
            .iter()
            .any(|x| matches!(x, Reason::WithinTolerance { .. })));
    }

    #[test]
    fn headroom_adds_capacity() {
        let mut r = vec![];
        let rec = recommend(&cap(), &q(Some(320.0), None), 1, 0.5, &mut r);
        assert_eq!(rec.replicas, Some(15));
        assert!(
            rec.demand_unknown,
            "a missing demand signal is unknown, not zero"
        );
    }

    #[test]
    fn missing_demand_is_not_zero() {
        let mut r = vec![];
        let rec = recommend(&cap(), &q(None, None), 10, 0.0, &mut r);
        assert_eq!(rec.replicas, None);
        assert!(rec.demand_unknown);
    }

    #[test]
    fn load_ratio_against_ready_capacity() {
        let ratio = load_ratio(&cap(), &q(Some(640.0), Some(1000.0)), 10).unwrap();
        assert!((ratio - 2.0).abs() < 1e-9);
        assert_eq!(
            load_ratio(&cap(), &q(Some(1.0), None), 0),
            Some(MAX_LOAD_RATIO)
        );
    }

    #[test]
    fn the_session_cap_is_lifted_only_when_no_more_replicas_can_come() {
        let mut c = cap();
        let mut r = vec![];
        let room = |ceiling, desired, ready, sessions| Room {
            ceiling,
            desired,
            ready,
            sessions,
        };
        let mut since = None;
        let mut at =
            |c: &Capacity, x: Room, r: &mut Vec<Reason>| session_cap(c, x, (0, &mut since), r);
        assert_eq!(at(&c, room(20, 20, 8, None), &mut r), None, "no cap set");
        c.session_cap = Some(40);
        // Below the ceiling, steady: the cap waits for a step, silently.
        assert_eq!(at(&c, room(20, 8, 8, Some(100.0)), &mut r), Some(40));
        assert!(r.is_empty());
        // Scaling: it holds new sessions for the new replicas, and says so.
        assert_eq!(at(&c, room(20, 16, 8, Some(480.0)), &mut r), Some(40));
        assert_eq!(
            r.pop().unwrap().to_string(),
            "session cap 40: 8 of 16 replicas running"
        );
        // At the ceiling with replicas still starting: they are worth waiting for.
        assert_eq!(at(&c, room(20, 20, 12, Some(480.0)), &mut r), Some(40));
        r.clear();
        // At the ceiling, all running: nothing is coming.
        assert_eq!(at(&c, room(20, 20, 20, None), &mut r), None);
        assert_eq!(r.pop().unwrap().code(), "session_cap_lifted");
        // A node lost at max: 16 fit, 16 run, 20 still asked for.
        assert_eq!(at(&c, room(16, 20, 16, Some(1300.0)), &mut r), None);
        // Never below the demand's share of the replicas that will run: 600 sessions on
        // 19 replicas need 32 each.
        let mut c30 = c.clone();
        c30.session_cap = Some(30);
        assert_eq!(at(&c30, room(20, 19, 19, Some(600.0)), &mut r), Some(32));
        assert_eq!(
            r.pop().unwrap().to_string(),
            "session cap 30 raised to 32: 600 sessions over 19 replicas"
        );
        // No good sessions reading: a cap it cannot size is not posted (it fell back to
        // the policy's 30, a hard ceiling below the 32 the last reading needed).
        assert_eq!(at(&c30, room(20, 19, 19, None), &mut r), None);
        assert_eq!(
            r.pop().unwrap().to_string(),
            "session cap of 30 lifted: no good sessions reading to size it by"
        );
        assert_eq!(at(&c30, room(20, 19, 19, Some(f64::NAN)), &mut r), None);
    }

    /// A review's case: one task at max never turns ready (a crash loop), so the ceiling
    /// is 20, 19 run, and the cap waited for the 20th for ever: 1,000 sessions over 20
    /// is 50 each, 950 on the 19 running, 5% refused for as long as the task failed.
    #[test]
    fn the_session_cap_waits_for_starting_replicas_only_so_long() {
        let mut c = cap();
        c.session_cap = Some(40);
        let mut since = None;
        let mut r = vec![];
        let stuck = Room {
            ceiling: 20,
            desired: 20,
            ready: 19,
            sessions: Some(1000.0),
        };
        let mut cap_at = |t_ms: u64, room: Room, r: &mut Vec<Reason>| {
            session_cap(&c, room, (t_ms, &mut since), r)
        };
        assert_eq!(cap_at(100_000, stuck, &mut r), Some(50));
        assert_eq!(cap_at(100_000 + CAP_WAIT_MS, stuck, &mut r), Some(50));
        assert_eq!(
            cap_at(100_000 + CAP_WAIT_MS + 5_000, stuck, &mut r),
            Some(53)
        );
        assert_eq!(
            r.pop().unwrap().to_string(),
            "session cap 40 raised to 53: 1000 sessions over 19 replicas; 1 of 20 replicas not ready after 30s"
        );
        // It starts: the cap is lifted, and the wait is forgotten.
        let all = Room { ready: 20, ..stuck };
        assert_eq!(cap_at(200_000, all, &mut r), None);
        // A new step later waits afresh.
        let step = Room {
            desired: 16,
            ready: 8,
            sessions: Some(640.0),
            ..stuck
        };
        assert_eq!(cap_at(900_000, step, &mut r), Some(40));
        assert_eq!(cap_at(900_000 + CAP_WAIT_MS, step, &mut r), Some(40));
        assert_eq!(cap_at(900_000 + CAP_WAIT_MS + 1, step, &mut r), Some(80));
        // A ramp: each step's new replicas get their own 30 s (a second review's case:
        // the first step's timer ended the second's wait after 16 s, cap 50 not 40).
        let ramp = |desired, ready, sessions| Room {
            ceiling: 20,
            desired,
            ready,
            sessions: Some(sessions),
        };
        assert_eq!(cap_at(2_000_000, ramp(12, 12, 480.0), &mut r), Some(40));
        assert_eq!(cap_at(2_005_000, ramp(16, 12, 640.0), &mut r), Some(40));
        assert_eq!(cap_at(2_020_000, ramp(18, 14, 700.0), &mut r), Some(40));
        assert_eq!(cap_at(2_036_000, ramp(18, 14, 700.0), &mut r), Some(40));
        assert_eq!(cap_at(2_051_000, ramp(18, 14, 700.0), &mut r), Some(50));
        // All ready: the wait is over. Then a step while a task crash-loops waits for
        // the step's replicas.
        assert_eq!(cap_at(2_900_000, ramp(12, 12, 480.0), &mut r), Some(40));
        assert_eq!(cap_at(3_000_000, ramp(12, 11, 480.0), &mut r), Some(40));
        assert_eq!(cap_at(9_000_000, ramp(12, 11, 480.0), &mut r), Some(44));
        assert_eq!(cap_at(9_005_000, ramp(16, 11, 600.0), &mut r), Some(40));
    }
}
