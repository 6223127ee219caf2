//! Simulator speed, the figures in the README. Run: `cargo bench --bench speed`.
//!
//! 1. The three seed scenarios at 1 s ticks, controlled: total wall time, median of 21.
//! 2. 1,000 services × 24 h at 1 s ticks (benches/diurnal-24h.yaml), spread over the
//!    machine's cores with plain threads (the simulator is pure: no runtime needed).
//!
//! ANDON_BENCH_SERVICES overrides the 1,000.

use andon::policy;
use andon::scenario;
use andon::simulate::{self, Options};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let p = policy::load("policies/erlmcp-tps.yaml").expect("policy");
    let svc = &p.services[0];
    let seeds: Vec<_> = [
        "chaos/baseline.yaml",
        "chaos/connection-flood.yaml",
        "chaos/message-bombing.yaml",
    ]
    .iter()
    .map(|f| scenario::load(f).expect("scenario"))
    .collect();

    let mut totals = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        for sc in &seeds {
            let r = simulate::run(sc, &p, svc, Options::default());
            std::hint::black_box(&r);
        }
        totals.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let ticks: f64 = seeds.iter().map(|s| s.duration().as_secs_f64()).sum();
    println!(
        "seed scenarios (3, {ticks:.0} ticks of 1 s, timeline recorded): median {:.1} ms, min {:.1} ms over 21 runs",
        median(totals.clone()),
        totals.iter().cloned().fold(f64::INFINITY, f64::min)
    );

    let day = scenario::load("benches/diurnal-24h.yaml").expect("diurnal scenario");
    let services: usize = std::env::var("ANDON_BENCH_SERVICES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let opts = Options {
        record: false,
        ..Options::default()
    };
    let t = Instant::now();
    let scale_actions: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (day, p) = (&day, &p);
                s.spawn(move || {
                    (i..services)
                        .step_by(threads)
                        .map(|_| {
                            simulate::run(day, p, &p.services[0], opts)
                                .summary
                                .scale_actions as u64
                        })
                        .sum::<u64>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("worker")).sum()
    });
    let secs = t.elapsed().as_secs_f64();
    let service_ticks = services as f64 * day.duration().as_secs_f64();
    println!(
        "{services} services × 24 h at 1 s ticks ({threads} threads): {secs:.1} s, {:.0} ns per service-tick, {scale_actions} scale actions",
        secs * 1e9 / service_ticks
    );
}
