//! Shedding as a closed loop on latency. A tier that sheds starts at its `admit` (a
//! fraction of the policy's per-replica throughput capacity), then each new p95 reading
//! moves the limit toward the tier's latency goal, in the manner of Netflix's gradient
//! concurrency limit and Envoy's adaptive concurrency filter:
//!
//! - above 90% of the goal, the limit shrinks by √(0.9 × goal / p95) (at most halved per
//!   reading): the goal is a ceiling, so the loop aims below it;
//! - below 70% of the goal, and not rising, it grows by (0.9 × goal / p95)^¼ (at most
//!   +50%), at most once per half window: what more admitted load does to latency takes
//!   that long to show (a mailbox fills over a minute);
//! - in between it holds: a dead band, so the loop settles instead of hunting.
//!
//! The limit binds only where a replica is offered more than it. It grows to at most
//! three times the demand per ready replica (connections stay where they landed, so some
//! replicas carry more than the average) and no further, so that it can bite again soon.
//! At that cap with latency calm, nothing is shed at all: the limit would only trim the
//! hottest replicas, and sheds count as errors in the shipped error signal, so shedding
//! that outlives the need would hold its own tier up.
//!
//! When the tier that shed goes, the limit is not dropped at once: the load that made
//! the tier shed is usually still there, and handing all of it back at once brings the
//! tier straight back (a real bombing through HAProxy oscillated so: 10% admitted, then
//! all, p95 2.9 s, then shedding again). The limit is given back gradually instead: it
//! only grows, once per half window as above, by at least the smallest step
//! (`RELEASE_STEP`) and by more where latency is calm, and holds while latency rises; at
//! three times the demand per replica shedding ends. The release ends in a bounded time;
//! if the overload is back, the tier comes back, and the loop resumes from where the
//! release had got to rather than from the tier's start.
//!
//! The roots damp the steps. The p95 reading is a quantile over the query's rate
//! window (1 m shipped): latency that fell shows only once the window has passed. So the
//! limit shrinks again only once the window has passed since its last change (`settle`):
//! cutting on readings that still hold the time before the cut would cut to the floor.
//! The limit is against the policy's capacity, never the replica's physical one: the
//! policy is all the controller knows.

use super::observation::Reading;
use super::reason::Reason;
use super::state::ShedLoop;
use crate::policy::SignalKind;

/// The lowest limit: 5% of the policy's capacity keeps a trickle flowing, so that the
/// latency of what is admitted can still be measured.
pub const MIN_ADMIT: f64 = 0.05;

/// The highest limit, a fraction of capacity: without a throughput signal to bound it
/// by the demand, the loop stops growing here.
pub const MAX_ADMIT: f64 = 100.0;

/// How far above the demand per ready replica the limit may grow.
const HOT: f64 = 3.0;

/// The smallest growth per half window while releasing: from the floor (5%) to three
/// times a demand of one replica's capacity in at most 20 steps.
const RELEASE_STEP: f64 = 1.25;

/// The dead band, as shares of the goal: hold while p95 is within it.
const BAND: f64 = 0.7;
const AIM: f64 = 0.9;

/// What the loop is given each tick.
pub struct Input<'a> {
    /// The tier action's starting fraction; `None` when the tier does not shed.
    pub start: Option<f64>,
    /// The p95 the loop steers below (seconds); `None`: a static limit at `start`.
    pub goal_s: Option<f64>,
    /// The latency signal's raw reading, with its time (a new reading is used once).
    pub p95: Option<&'a Reading>,
    /// Demand per ready replica over the policy's per-replica capacity.
    pub load: Option<f64>,
    pub now_ms: u64,
    /// How long the p95 reading takes to forget the past: its query's rate window.
    pub settle_ms: u64,
}

/// Advances the loop one tick; returns the fraction to admit (`None`: admit all).
pub fn step(state: &mut Option<ShedLoop>, input: Input, reasons: &mut Vec<Reason>) -> Option<f64> {
    let Some(start) = input.start else {
        return release(state, &input, reasons);
    };
    // Entering shedding, or a tier that sheds harder than the current limit: start there.
    // The reading in hand was taken before shedding began: the loop waits for a new one.
    let (at, last) = match input.p95 {
        Some(&Reading::Value { at_ms, value }) if value.is_finite() => (at_ms, value.max(0.0)),
        _ => (0, 0.0),
    };
    let s = state.get_or_insert(ShedLoop {
        admit: start,
        start,
        reading_at_ms: at,
        changed_at_ms: input.now_ms,
        last_p95: last,
        released: false,
        goal_s: input.goal_s,
    });
    if start < s.start {
        // A tier that sheds harder sheds, even where the loop was released at its cap.
        s.released = false;
        if s.admit > start {
            s.admit = start;
            s.changed_at_ms = input.now_ms;
        }
    }
    s.start = start;
    s.goal_s = input.goal_s;
    let Some(goal) = input.goal_s else {
        s.admit = start;
        return Some(start);
    };
    if let Some((p95, at_ms)) = new_reading(s, input.p95) {
        s.reading_at_ms = at_ms;
        let g = (AIM * goal / p95).sqrt();
        let before = s.admit;
        // Latency on its way up (a mailbox filling) is no time to admit more.
        let rising = rising(s, p95);
        // Nor is latency on its way down (a queue draining) a reason to admit less.
        let falling = s.last_p95 > 0.0 && p95 < s.last_p95 / 1.1;
        if p95 > AIM * goal && settled(s, at_ms, input.settle_ms) && !falling {
            s.admit *= g.max(0.5);
        } else if p95 < BAND * goal && !rising && settled(s, at_ms, input.settle_ms / 2) {
            s.admit *= g.sqrt().min(1.5);
        }
        s.last_p95 = p95;
        let cap = cap(&input);
        if let Some(cap) = cap {
            s.admit = s.admit.min(cap);
        }
        let calm = p95 < BAND * goal;
        // Released, it stays so while latency is calm: a p95 that ticks up 10% far
        // under the goal, or demand that lifts the cap past the limit, is no reason to
        // shed again. Without this a CI drill flapped between shedding and not, and
        // since its sheds counted as errors they held its tier up for the whole run.
        // The limit follows the cap meanwhile, so shedding resumes from there.
        let was_released = s.released;
        s.released = calm && (s.released || (!rising && cap.is_some_and(|c| s.admit >= c)));
        if was_released && s.released {
            s.admit = cap.unwrap_or(s.admit);
        }
        s.admit = s.admit.clamp(MIN_ADMIT, MAX_ADMIT);
        if s.admit != before && !(was_released && s.released) {
            s.changed_at_ms = input.now_ms;
            reasons.push(Reason::ShedAdjusted {
                from: before,
                to: s.admit,
                p95_s: p95,
                goal_s: goal,
            });
        }
    }
    if s.released {
        return None;
    }
    Some(s.admit)
}

/// A p95 reading the loop has not used yet, as (seconds, taken at): each moves it once.
fn new_reading(s: &ShedLoop, p95: Option<&Reading>) -> Option<(f64, u64)> {
    match p95 {
        Some(&Reading::Value { value, at_ms })
            if at_ms != s.reading_at_ms && value.is_finite() && value > 0.0 =>
        {
            Some((value, at_ms))
        }
        _ => None,
    }
}

/// Latency up by more than 10% since the last reading used.
fn rising(s: &ShedLoop, p95: f64) -> bool {
    s.last_p95 > 0.0 && p95 > s.last_p95 * 1.1
}

/// At the reading's time, `span_ms` has passed since the limit last changed.
fn settled(s: &ShedLoop, at_ms: u64, span_ms: u64) -> bool {
    at_ms >= s.changed_at_ms.saturating_add(span_ms)
}

/// The highest limit that can still bite: three times the demand per ready replica.
fn cap(input: &Input) -> Option<f64> {
    input
        .load
        .filter(|l| l.is_finite())
        .map(|l| (l * HOT).max(MIN_ADMIT))
}

/// The tier no longer sheds: grows the limit toward the cap, never cuts, and ends the
/// loop there. A static limit (no goal), a loop already calm at its cap, or no demand
/// signal to bound the cap by, end at once.
fn release(state: &mut Option<ShedLoop>, input: &Input, reasons: &mut Vec<Reason>) -> Option<f64> {
    let s = state.as_mut()?;
    let cap = cap(input).map(|c| c.min(MAX_ADMIT));
    let (Some(goal), Some(cap), false) = (s.goal_s, cap, s.released) else {
        *state = None;
        return None;
    };
    let before = s.admit;
    let mut p95_s = s.last_p95;
    if let Some((p95, at_ms)) = new_reading(s, input.p95) {
        s.reading_at_ms = at_ms;
        p95_s = p95;
        if !rising(s, p95) && settled(s, at_ms, input.settle_ms / 2) {
            let calm = (AIM * goal / p95).sqrt().sqrt();
            s.admit *= calm.clamp(RELEASE_STEP, 1.5);
        }
        s.last_p95 = p95;
    }
    if s.admit >= cap {
        reasons.push(Reason::ShedReleasing {
            from: before,
            to: None,
            p95_s,
        });
        *state = None;
        return None;
    }
    if s.admit != before {
        s.changed_at_ms = input.now_ms;
        reasons.push(Reason::ShedReleasing {
            from: before,
            to: Some(s.admit),
            p95_s,
        });
    }
    Some(s.admit)
}

/// The signal the loop reads.
pub const LATENCY: SignalKind = SignalKind::P95Latency;

#[cfg(test)]
mod tests {
    use super::*;

    /// A loop fed readings taken at the time they are fed, toward a 250 ms goal.
    struct Feed {
        state: Option<ShedLoop>,
        start: Option<f64>,
        load: Option<f64>,
        settle_ms: u64,
    }

    impl Feed {
        fn new(start: f64, load: f64, settle_ms: u64) -> Feed {
            Feed {
                state: None,
                start: Some(start),
                load: Some(load),
                settle_ms,
            }
        }

        fn go(&mut self, p95: f64, t: u64) -> Option<f64> {
            let reading = Reading::Value {
                value: p95,
                at_ms: t,
            };
            let input = Input {
                start: self.start,
                goal_s: Some(0.25),
                p95: Some(&reading),
                load: self.load,
                now_ms: t,
                settle_ms: self.settle_ms,
            };
            step(&mut self.state, input, &mut Vec::new())
        }

        fn admit(&self) -> Option<f64> {
            self.state.map(|s| s.admit)
        }
    }

    /// A toy service: p95 = 50 ms / (1 - admitted / 4)^2 in units of the policy's
    /// capacity (so 2.4 × capacity gives 312 ms), offered 10 × capacity.
    fn p95_of(admit: f64) -> f64 {
        0.05 / (1.0 - (admit / 4.0).min(0.97)).powi(2)
    }

    #[test]
    fn converges_below_the_goal_and_gives_back_when_it_recovers() {
        let mut f = Feed::new(0.8, 10.0, 0);
        let mut admit = 0.0;
        for k in 0..40 {
            let p = p95_of(if k == 0 { 0.8 } else { admit });
            admit = f.go(p, k * 15_000 + 1).unwrap();
        }
        let p = p95_of(admit);
        assert!(
            p < 0.225 && p > 0.25 * 0.7 * 0.8,
            "settled at {admit}: p95 {p}"
        );
        // The smallest shed that holds 250 ms admits 2.21; the loop is within 15%.
        assert!(admit > 1.9 && admit < 2.21, "{admit}");
    }

    #[test]
    fn shrinks_when_over_the_goal_at_most_by_half_and_once_per_reading() {
        let mut f = Feed::new(1.0, 10.0, 0);
        assert_eq!(
            f.go(10.0, 1),
            Some(1.0),
            "starts at admit: that reading predates shedding"
        );
        assert_eq!(f.go(10.0, 2), Some(0.5), "40× over: halved, no more");
        assert_eq!(
            f.go(10.0, 2),
            Some(0.5),
            "the same reading again: no change"
        );
        assert_eq!(
            f.go(9.5, 3),
            Some(0.25),
            "still far over: halved again, no more"
        );
    }

    /// Readings taken within the rate window of a change still hold the time before it:
    /// the loop does not cut on them (before: 0.8 → 0.05 in four readings of 2 s p95).
    #[test]
    fn cuts_wait_for_the_window_and_growth_for_half_of_it() {
        let mut f = Feed::new(0.8, 10.0, 60_000);
        assert_eq!(f.go(2.0, 0), Some(0.8));
        for t in [15_000, 30_000, 45_000] {
            assert_eq!(
                f.go(2.0, t),
                Some(0.8),
                "within the window of the start: held"
            );
        }
        assert_eq!(f.go(2.0, 60_000), Some(0.4), "a window later: cut");
        assert_eq!(
            f.go(0.1, 75_000),
            Some(0.4),
            "growth waits half a window too"
        );
        let grown = f.go(0.1, 90_000).unwrap();
        assert!(
            (grown - 0.4 * 2.25f64.powf(0.25)).abs() < 1e-9,
            "then grows: {grown}"
        );
    }

    /// A queue draining after shedding began reads above the goal for a while; cutting on
    /// it sheds what no longer needs shedding (before: the bombing went 0.8 → 0.4).
    #[test]
    fn no_cut_while_latency_falls() {
        let mut f = Feed::new(0.8, 10.0, 0);
        f.go(2.0, 1);
        assert_eq!(
            f.go(1.0, 2),
            Some(0.8),
            "halved since the last reading: draining, hold"
        );
        assert!(f.go(1.0, 3).unwrap() < 0.8, "steady above the goal: cut");
    }

    #[test]
    fn never_above_three_times_the_demand_nor_below_the_floor_and_resets_with_the_tier() {
        let mut f = Feed::new(1.0, 0.5, 0);
        for t in 1..40 {
            f.go(0.01, t);
        }
        assert_eq!(f.admit(), Some(1.5), "demand 0.5: at most 3× it");
        for t in 40..80 {
            f.go(100.0, t);
        }
        assert_eq!(f.admit(), Some(MIN_ADMIT));
        f.load = None;
        f.start = None;
        assert_eq!(f.go(0.1, 80), None, "no demand signal: released at once");
        assert!(f.state.is_none());
    }

    /// A mailbox fills for a minute after more is admitted: rising latency under the goal
    /// is no reason to admit still more (before: the bombing swung 0.45 → 0.84 → 0.09).
    #[test]
    fn no_growth_while_latency_rises() {
        let mut f = Feed::new(1.0, 10.0, 0);
        f.go(0.05, 1);
        let a = f.go(0.05, 2).unwrap();
        assert!(a > 1.0);
        assert_eq!(f.go(0.1, 3), Some(a), "p95 doubled: hold");
        assert!(f.go(0.1, 4).unwrap() > a, "steady again: grow");
    }

    /// A loop at admit 1.0 against a load of 1 (cap 3), fed calm readings until it is
    /// released; with the time of the last.
    fn released_at_the_cap() -> (Feed, u64) {
        let mut f = Feed::new(1.0, 1.0, 0);
        let mut t = 1;
        while f.go(0.05, t).is_some() {
            t += 1;
            assert!(t < 50, "never released");
        }
        (f, t)
    }

    /// Calm at the cap, the loop sheds nothing; it stays so through latency that ticks
    /// up far below the goal and demand that lifts the cap, and sheds again, from the
    /// cap, only once latency leaves the calm band (before: either flapped it back on).
    #[test]
    fn released_at_the_cap_stays_released_while_latency_is_calm() {
        let (mut f, t) = released_at_the_cap();
        assert_eq!(f.go(0.06, t + 1), None, "p95 up 20%, far under the goal");
        f.load = Some(2.0);
        assert_eq!(f.go(0.06, t + 2), None, "demand doubled, latency calm");
        assert_eq!(
            f.go(0.2, t + 3),
            Some(6.0),
            "latency past the band: at the cap"
        );
    }

    /// Released at red's cap, then emergency (admit 0.8) comes on errors with p95 still
    /// calm: it sheds at once (before: nothing, the release held).
    #[test]
    fn a_harder_tier_sheds_even_when_the_loop_was_released() {
        let (mut f, t) = released_at_the_cap();
        f.start = Some(0.8);
        assert_eq!(
            f.go(0.05, t),
            Some(0.8),
            "the same reading: at emergency's start"
        );
        let a = f.go(0.05, t + 1).unwrap();
        assert!(
            a > 0.8 && a < 3.0,
            "and the loop runs again, under its cap: {a}"
        );
    }

    /// Drives the loop down to `admit` 0.1 against a load of 2 (cap 6), 1 s settle.
    fn cut_to_a_tenth() -> Feed {
        let mut f = Feed::new(0.8, 2.0, 1_000);
        f.go(1.0, 0);
        let mut t = 0;
        while f.admit().unwrap() > 0.1 {
            t += 1_000;
            f.go(1.0, t);
        }
        f.state.as_mut().unwrap().admit = 0.1;
        f
    }

    /// The tier that shed has gone, the load that made it has not: the limit is handed
    /// back over several steps, each at least ×1.25 and at most ×1.5, never cut, held
    /// while latency rises, and shedding ends at the cap (before: all at once, and the
    /// bombing through HAProxy came straight back).
    #[test]
    fn when_the_tier_leaves_the_load_is_given_back_gradually() {
        let mut f = cut_to_a_tenth();
        f.start = None;
        let mut t = 100_000;
        let mut last = 0.1;
        let mut steps = 0;
        // p95 well above the goal, steady: still given back (the tier would come back
        // if it mattered), never cut.
        let mut p95 = 0.4;
        while let Some(a) = f.go(p95, t) {
            assert!(a >= last, "never cut while releasing: {last} → {a}");
            if a > last {
                steps += 1;
                let r = a / last;
                assert!((1.25 - 1e-9..=1.5 + 1e-9).contains(&r), "step ×{r}");
            }
            last = a;
            t += 500;
            p95 = if p95 == 0.4 { 0.39 } else { 0.4 };
            assert!(steps < 40, "the release ends");
        }
        assert!(steps >= 3, "gradual: {steps} steps from 0.1 to the cap 6");
        assert!(f.state.is_none(), "at the cap shedding ends");
        assert!(last > 6.0 / 1.5, "ended near the cap: {last}");
    }

    #[test]
    fn a_release_holds_while_latency_rises_and_a_tier_back_resumes_from_it() {
        let mut f = cut_to_a_tenth();
        f.start = None;
        let a = f.go(0.01, 100_000).unwrap();
        assert!((a - 0.15).abs() < 1e-9, "calm: ×1.5, {a}");
        assert_eq!(f.go(0.2, 101_000), Some(a), "p95 twentyfold: hold");
        let a = f.go(0.2, 102_000).unwrap();
        assert!(a > 0.15, "steady again: grows");
        // The overload is back and so is the tier: it carries on from the release, not
        // from its start of 0.8.
        f.start = Some(0.8);
        assert_eq!(f.go(1.0, 102_100), Some(a));
    }

    #[test]
    fn a_harder_tier_starts_from_its_own_admit_and_no_goal_is_static() {
        let mut s = Some(ShedLoop {
            admit: 3.0,
            start: 1.0,
            reading_at_ms: 5,
            changed_at_ms: 5,
            last_p95: 0.0,
            released: false,
            goal_s: None,
        });
        let reading = Reading::Value {
            value: 0.01,
            at_ms: 6,
        };
        let input = Input {
            start: Some(0.8),
            goal_s: None,
            p95: Some(&reading),
            load: Some(10.0),
            now_ms: 6,
            settle_ms: 0,
        };
        assert_eq!(step(&mut s, input, &mut Vec::new()), Some(0.8));
    }
}
