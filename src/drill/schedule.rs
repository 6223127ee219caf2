//! The open-loop schedule: as in wrk2, each request has an intended send time on a fixed
//! schedule, and its latency is measured from that time, not from when it actually went
//! out: a server stall then shows in the latency of every request that should have been
//! sent during it (coordinated omission corrected). The sessions and sends themselves are
//! the [`Engine`]'s.

use super::load::Engine;
use crate::scenario::Scenario;
use std::time::{Duration, Instant};

/// Runs the schedule of `scenario` until it ends. `tick` is called about every 10 ms with
/// the phase, for housekeeping (sessions, seconds).
pub async fn run_schedule(
    engine: &mut Engine,
    scenario: &Scenario,
    start: Instant,
    mut on_second: impl FnMut(&mut Engine, usize, u64),
) {
    let total = scenario.duration();
    let mixes: Vec<Vec<(&'static str, f64)>> = scenario
        .phases
        .iter()
        .map(|p| {
            p.mix
                .iter()
                .map(|(m, w)| {
                    (
                        crate::scenario::METHODS
                            .iter()
                            .find(|x| **x == m)
                            .copied()
                            .unwrap_or("ping"),
                        *w,
                    )
                })
                .collect()
        })
        .collect();
    // The next intended send time, as an offset from start.
    let mut next_due = Duration::ZERO;
    let mut last_second = 0u64;
    let mut last_phase = None;
    loop {
        let now = start.elapsed();
        if now >= total {
            break;
        }
        let Some((pi, into)) = scenario.phase_at(now) else {
            break;
        };
        let phase = &scenario.phases[pi];
        let second = now.as_secs();
        if second != last_second {
            // The callback closes second - 1: name the phase that second was in.
            on_second(engine, closing_phase(scenario, second, pi), second);
            last_second = second;
        }
        let target = phase.connections_at(into);
        engine.follow_sessions(target);
        // The schedule is the phase's: sessions the server did not let open count their
        // share as refused (Engine::send), they are not left out of the offered load.
        let rate = phase.rate_per_connection(target) * target as f64;
        if rate <= 0.0 {
            next_due = now;
        } else {
            let gap = Duration::from_secs_f64(1.0 / rate);
            // A slower phase before (0.5/s is a send due 2 s on) must not hold back this
            // one: its schedule starts at its own start (sends due since then go out now,
            // late, and count as lag); within a phase, never more than one gap ahead.
            if last_phase != Some(pi) {
                next_due = next_due.min(now.saturating_sub(into));
            }
            next_due = next_due.min(now + gap);
            // Due sends, each at its intended time; a lag means the generator fell behind.
            let lag = now.saturating_sub(next_due).as_secs_f64() * 1000.0;
            {
                let mut st = engine.stats.borrow_mut();
                st.window_lag_ms = st.window_lag_ms.max(lag);
            }
            let mut sent = 0;
            while next_due <= now && sent < 100_000 {
                let method = engine.pick_method(&mixes[pi]);
                engine.send(pi, method, start + next_due);
                next_due += gap;
                sent += 1;
            }
        }
        last_phase = Some(pi);
        let wake = (start + next_due).min(Instant::now() + Duration::from_millis(10));
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            wake.max(Instant::now() + Duration::from_micros(200)),
        ))
        .await;
    }
    // The schedule's last second, closed too: its sends (and the ones not sent) count.
    let end = total.as_secs_f64().ceil() as u64;
    if end > last_second {
        let pi = closing_phase(scenario, end, scenario.phases.len().saturating_sub(1));
        on_second(engine, pi, end);
    }
}

/// The phase of the second that ends at `second` (that is, second - 1), or `fallback`.
fn closing_phase(scenario: &Scenario, second: u64, fallback: usize) -> usize {
    scenario
        .phase_at(Duration::from_secs(second.saturating_sub(1)))
        .map_or(fallback, |(pi, _)| pi)
}
