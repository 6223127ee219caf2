//! Checking an expectation against the points of a run.

use super::expect::{Expectation, Metric, Outcome, Point};
use crate::policy::Tier;
use std::time::Duration;

impl Expectation {
    /// Checks the expectation against the run's points. `phase_bounds` gives a phase's
    /// start and end. A window with no observation deviates: what was not seen did not hold.
    pub fn check(
        &self,
        points: &[Point],
        phase_bounds: impl Fn(usize) -> (Duration, Duration),
    ) -> Outcome {
        let outcome = |held: bool, observed: String| Outcome {
            text: self.text.clone(),
            held,
            observed,
        };
        if let Metric::ReplicasBackTo {
            replicas,
            after,
            within,
        } = self.metric
        {
            let end = phase_bounds(after).1;
            let back = points
                .iter()
                .filter(|p| p.t >= end)
                .find(|p| p.replicas.is_some_and(|r| r <= replicas));
            return match back {
                Some(p) if p.t - end <= within => outcome(
                    true,
                    format!("back after {:.0} s", (p.t - end).as_secs_f64()),
                ),
                Some(p) => outcome(
                    false,
                    format!("back only after {:.0} s", (p.t - end).as_secs_f64()),
                ),
                None => {
                    let last = points.iter().filter_map(|p| p.replicas).next_back();
                    outcome(
                        false,
                        format!(
                            "not back by the end (last {})",
                            last.map_or("unknown".into(), |r| r.to_string())
                        ),
                    )
                }
            };
        }
        let (start, end) = match self.window.during {
            Some(i) => phase_bounds(i),
            None => (Duration::ZERO, Duration::MAX),
        };
        let from = start + self.window.skip;
        if self.metric == Metric::NoScaleDown {
            let reps: Vec<(Duration, u32)> = points
                .iter()
                .filter(|p| p.t >= from && p.t < end)
                .filter_map(|p| p.replicas.map(|r| (p.t, r)))
                .collect();
            let Some(&(_, first)) = reps.first() else {
                return outcome(false, "no observation in the window".into());
            };
            let drop = reps.windows(2).find(|w| w[1].1 < w[0].1);
            return match drop {
                None => outcome(
                    true,
                    format!("held at ≥ {first} for {} samples", reps.len()),
                ),
                Some(w) => outcome(
                    false,
                    format!("{} → {} at {:.0} s", w[0].1, w[1].1, w[1].0.as_secs_f64()),
                ),
            };
        }
        let in_window = || points.iter().filter(|p| p.t >= from && p.t < end);
        match &self.metric {
            Metric::MaxDirectionChanges(n) => {
                // Directions come from the whole run, so that a turn at a phase's edge (up
                // before it, down in it) counts in the window where it happens.
                let seen = in_window().filter(|p| p.replicas.is_some()).count();
                if seen == 0 {
                    return outcome(false, "no observation in the window".into());
                }
                let changes = turns(points)
                    .into_iter()
                    .filter(|t| *t >= from && *t < end)
                    .count() as u32;
                return outcome(changes <= *n, format!("{changes} direction changes"));
            }
            Metric::ReactionWithin(d) => {
                // The reaction may come after the phase has ended: look to the run's end.
                let mut last: Option<u32> = None;
                for p in points.iter().filter(|p| p.t >= from) {
                    let Some(r) = p.replicas else { continue };
                    if last.is_some_and(|l| r > l) {
                        let after = p.t.saturating_sub(start);
                        return outcome(
                            after <= *d,
                            format!("first scale-up after {:.0} s", after.as_secs_f64()),
                        );
                    }
                    last = Some(r);
                }
                return outcome(false, "no scale-up in the window".into());
            }
            Metric::ReadyAtStart(fraction) => {
                let first = in_window().find_map(|p| p.ready.map(|r| (p.t, r)));
                let most = in_window().filter_map(|p| p.needed).max();
                let (Some((at, first)), Some(most)) = (first, most) else {
                    return outcome(false, "no observation in the window".into());
                };
                let share = if most == 0 {
                    1.0
                } else {
                    first as f64 / most as f64
                };
                return outcome(
                    share >= *fraction - 1e-9,
                    format!(
                        "{first} ready of the {most} the load needs, at {:.0} s ({:.0}%)",
                        at.as_secs_f64(),
                        share * 100.0
                    ),
                );
            }
            Metric::ShedFractionBelow(b) => {
                let (mut offered, mut shed) = (0.0, 0.0);
                for p in in_window() {
                    if let (Some(o), Some(s)) = (p.offered_rps, p.shed_rate) {
                        offered += o;
                        shed += o * s;
                    }
                }
                if offered <= 0.0 {
                    // Nothing offered, nothing shed: as the error rate of an idle window.
                    return outcome(true, "nothing offered: 0% shed".into());
                }
                let f = shed / offered;
                return outcome(*b > f, format!("{:.2}% shed", f * 100.0));
            }
            Metric::LineStopped(want) => {
                let mut seen = 0usize;
                let first = in_window()
                    .filter_map(|p| p.stopped.map(|s| (p.t, s)))
                    .inspect(|_| seen += 1)
                    .find(|(_, s)| *s);
                if seen == 0 && first.is_none() {
                    return outcome(false, "no observation in the window".into());
                }
                return match first {
                    Some((t, _)) => outcome(*want, format!("stopped at {:.0} s", t.as_secs_f64())),
                    None => outcome(!*want, format!("never stopped ({seen} samples)")),
                };
            }
            Metric::BetterThan { baseline, .. } => {
                return outcome(
                    false,
                    format!("not checked: needs a {baseline} run (simulate --baseline)"),
                );
            }
            _ => {}
        }
        let window = in_window();
        // Worst observation in the window, and when.
        let mut worst: Option<(f64, Duration)> = None;
        let mut seen = 0usize;
        for p in window {
            let v = match self.metric {
                Metric::TierAtMost(_) => p.tier.map(|t| t.level() as f64),
                Metric::P95Below(_) => p.p95_s,
                Metric::ErrorRateBelow(_) => p.error_rate,
                Metric::TimeoutRateBelow(_) => p.timeout_rate,
                Metric::ReplicasAtMost(_) => p.replicas.map(f64::from),
                Metric::ReplicasAtLeast(_) => p.replicas.map(|r| -(r as f64)),
                // Worst is the lowest tier: negate.
                Metric::TierAtLeast(_) => p.tier.map(|t| -(t.level() as f64)),
                _ => None,
            };
            let Some(v) = v else { continue };
            seen += 1;
            if worst.is_none_or(|(w, _)| v > w) {
                worst = Some((v, p.t));
            }
        }
        let Some((w, at)) = worst else {
            return outcome(false, "no observation in the window".into());
        };
        let at = at.as_secs_f64();
        match self.metric {
            Metric::TierAtMost(t) => {
                let seen_tier = Tier::ALL[w as usize];
                outcome(seen_tier <= t, format!("max {seen_tier} (at {at:.0} s)"))
            }
            Metric::P95Below(b) => outcome(
                w < b,
                format!("max p95 {:.0} ms (at {at:.0} s)", w * 1000.0),
            ),
            Metric::ErrorRateBelow(b) => {
                outcome(w < b, format!("max {:.2}% (at {at:.0} s)", w * 100.0))
            }
            Metric::TimeoutRateBelow(b) => {
                outcome(w < b, format!("max {:.2}% (at {at:.0} s)", w * 100.0))
            }
            Metric::ReplicasAtMost(n) => {
                outcome(w <= n as f64, format!("max {w:.0} (at {at:.0} s)"))
            }
            Metric::ReplicasAtLeast(n) => outcome(
                -w >= n as f64,
                format!("min {:.0} (at {at:.0} s); {seen} samples", -w),
            ),
            Metric::TierAtLeast(t) => {
                let seen_tier = Tier::ALL[(-w) as usize];
                outcome(seen_tier >= t, format!("min {seen_tier} (at {at:.0} s)"))
            }
            _ => outcome(false, "not a window metric".into()),
        }
    }
}

/// When the replicas changed direction (up then down, or down then up) over the run.
pub fn turns(points: &[Point]) -> Vec<Duration> {
    let (mut last, mut dir, mut at) = (None::<u32>, 0i8, Vec::new());
    for p in points {
        let Some(r) = p.replicas else { continue };
        if let Some(l) = last {
            let d = (r > l) as i8 - (r < l) as i8;
            if d != 0 {
                if dir != 0 && d != dir {
                    at.push(p.t);
                }
                dir = d;
            }
        }
        last = Some(r);
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{from_str, Scenario};

    fn scenario(expect: &str) -> Scenario {
        let text = format!(
            "name: t\nreplicas: 2\nphases:\n  - {{name: a, duration: 10s, connections: 1}}\n  - {{name: b, duration: 10s, connections: 1}}\nexpect:\n{expect}"
        );
        from_str("t.yaml", &text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn points(replicas: &[u32]) -> Vec<Point> {
        replicas
            .iter()
            .enumerate()
            .map(|(i, r)| Point {
                t: Duration::from_secs(i as u64),
                replicas: Some(*r),
                ready: Some(*r),
                needed: Some(*r),
                tier: Some(if i >= 10 { Tier::Red } else { Tier::Green }),
                offered_rps: Some(100.0),
                shed_rate: Some(if i >= 10 { 0.5 } else { 0.0 }),
                stopped: Some(i == 15),
                ..Default::default()
            })
            .collect()
    }

    fn held(expect: &str, replicas: &[u32]) -> (bool, String) {
        let sc = scenario(expect);
        let o = sc.expect[0].check(&points(replicas), |i| sc.phase_bounds(i));
        (o.held, o.observed)
    }

    const SAW: [u32; 20] = [2, 2, 4, 4, 2, 2, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6];

    #[test]
    fn direction_changes_count_turns_not_steps() {
        let turned: Vec<u64> = turns(&points(&SAW)).iter().map(|d| d.as_secs()).collect();
        assert_eq!(turned, vec![4, 6]);
        assert!(held("  - {max_direction_changes: 2}", &SAW).0);
        assert!(!held("  - {max_direction_changes: 1}", &SAW).0);
        assert!(held("  - {max_direction_changes: 0, during: b}", &SAW).0);
        // A turn at a phase's first tick (up in a, down at b's start) counts in b.
        let edge = [2, 2, 2, 2, 2, 2, 2, 2, 3, 4, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3];
        assert!(!held("  - {max_direction_changes: 0, during: b}", &edge).0);
        assert!(held("  - {max_direction_changes: 0, during: a}", &edge).0);
    }

    #[test]
    fn reaction_is_timed_from_the_phase_start() {
        let (ok, seen) = held("  - {reaction_within: 1s, during: b}", &SAW);
        assert!(ok, "{seen}");
        assert_eq!(seen, "first scale-up after 1 s");
        assert!(
            !held("  - {reaction_within: 1s, during: a}", &SAW).0,
            "2 s in a"
        );
        let flat = [3; 20];
        assert_eq!(
            held("  - {reaction_within: 5s, during: b}", &flat),
            (false, "no scale-up in the window".into())
        );
    }

    #[test]
    fn tier_at_least_and_shed_fraction_and_line_stopped() {
        assert!(held("  - {tier_at_least: red, during: b}", &SAW).0);
        assert!(!held("  - {tier_at_least: yellow}", &SAW).0);
        // Half of the second half is shed: 25% overall.
        let (ok, seen) = held("  - {shed_fraction_below: 26%}", &SAW);
        assert!(ok, "{seen}");
        assert!(!held("  - {shed_fraction_below: 24%}", &SAW).0);
        let idle: Vec<Point> = points(&SAW)
            .into_iter()
            .map(|p| Point {
                offered_rps: Some(0.0),
                ..p
            })
            .collect();
        let sc = scenario("  - {shed_fraction_below: 1%}");
        assert!(
            sc.expect[0].check(&idle, |i| sc.phase_bounds(i)).held,
            "idle: 0% shed"
        );
        assert!(held("  - {line_stopped: true, during: b}", &SAW).0);
        assert!(held("  - {line_stopped: false, during: a}", &SAW).0);
        assert!(!held("  - {line_stopped: false}", &SAW).0);
    }

    #[test]
    fn better_than_compares_each_field_with_its_tolerance() {
        let sc = scenario(
            "  - {better_than: hpa, on: [replica_seconds, seconds_red_or_worse], tolerance: 5%}",
        );
        let e = &sc.expect[0];
        let check = |ours: [f64; 2], theirs: [f64; 2]| {
            let f = |name: &str, base: bool| {
                let v = if base { theirs } else { ours };
                Some(if name == "replica_seconds" {
                    v[0]
                } else {
                    v[1]
                })
            };
            e.metric.better_than(&e.text, f).unwrap()
        };
        assert!(check([104.0, 10.0], [100.0, 10.0]).held);
        let o = check([106.0, 10.0], [100.0, 10.0]);
        assert!(!o.held, "{}", o.observed);
        assert!(o.observed.contains("1.06×"), "{}", o.observed);
        assert!(!check([100.0, 1.0], [100.0, 0.0]).held, "0 has no slack");
        // Without a baseline run (a drill, or `simulate::run` alone) it does not hold.
        assert!(!e.check(&points(&SAW), |i| sc.phase_bounds(i)).held);
    }

    #[test]
    fn new_forms_are_checked_when_loaded() {
        for (text, needle) in [
            (
                "  - {better_than: vpa, on: [replica_seconds]}",
                "unknown baseline `vpa`",
            ),
            ("  - {better_than: hpa}", "needs `on:"),
            (
                "  - {better_than: hpa, on: [latency]}",
                "unknown field `latency`",
            ),
            (
                "  - {better_than: hpa, on: [updates], during: a}",
                "compares whole runs",
            ),
            ("  - {reaction_within: 5s}", "needs `during: PHASE`"),
            ("  - {tier_at_least: purple}", "unknown tier"),
            (
                "  - {max_direction_changes: 2, tolerance: 5%}",
                "belong to better_than",
            ),
            ("  - {max_direction_changes: -1}", "-1 is out of range"),
            ("  - {replicas_at_most: -1}", "-1 is out of range"),
            (
                "  - {tier_at_most: red, after: a}",
                "`after` belongs to replicas_back_to",
            ),
            ("  - {shed_fraction_below: 0}", "0 can never hold"),
            ("  - {no_scale_down: false}", "false checks nothing"),
        ] {
            let t = format!(
                "name: t\nreplicas: 2\nphases:\n  - {{name: a, duration: 10s, connections: 1}}\nexpect:\n{text}"
            );
            let e = from_str("t.yaml", &t)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
