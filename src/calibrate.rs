//! The simulator's calibration against the seed benchmark's five points: replay the seed
//! scenarios with no control on 8 replicas and read the model where the seed measured.

use crate::policy::Policy;
use crate::scenario;
use crate::simulate::{self, Options, SimResult};
use serde::Serialize;

/// The seed allows the model this far from each figure.
pub const TOLERANCE: f64 = 0.25;

#[derive(Debug, Clone, Serialize)]
pub struct CalPoint {
    pub name: String,
    pub seed: f64,
    pub model: f64,
    pub unit: &'static str,
    pub deviation: f64,
    pub within: bool,
}

fn point(name: &str, seed: f64, model: f64, unit: &'static str) -> CalPoint {
    let deviation = model / seed - 1.0;
    CalPoint {
        name: name.into(),
        seed,
        model,
        unit,
        deviation,
        within: deviation.abs() <= TOLERANCE,
    }
}

/// The seed scenarios, built in: calibration must not depend on the working directory.
const SEED: [(&str, &str); 3] = [
    (
        "chaos/baseline.yaml",
        include_str!("../chaos/baseline.yaml"),
    ),
    (
        "chaos/connection-flood.yaml",
        include_str!("../chaos/connection-flood.yaml"),
    ),
    (
        "chaos/message-bombing.yaml",
        include_str!("../chaos/message-bombing.yaml"),
    ),
];

fn replay(path: &str, policy: &Policy) -> crate::Result<SimResult> {
    let text = SEED.iter().find(|(p, _)| *p == path).map_or("", |(_, t)| t);
    let sc = scenario::from_str(path, text)?;
    if sc.replicas != 8 {
        return Err(crate::Error::Config(format!(
            "{path}: the seed ran 8 replicas, the scenario starts {}",
            sc.replicas
        )));
    }
    let opts = Options {
        controlled: false,
        ..Options::default()
    };
    Ok(simulate::run(&sc, policy, &policy.services[0], opts))
}

/// p95 (ms) at the first tick with `conns` connections, from an uncontrolled timeline.
fn p95_at_connections(r: &SimResult, conns: u32) -> f64 {
    r.timeline
        .iter()
        .find(|p| p.connections >= conns)
        .map_or(f64::NAN, |p| p.p95_ms)
}

/// Replays the seed scenarios (as built in from `chaos/`) and compares.
pub fn run(policy: &Policy) -> crate::Result<Vec<CalPoint>> {
    let base = replay("chaos/baseline.yaml", policy)?;
    let flood = replay("chaos/connection-flood.yaml", policy)?;
    let bomb = replay("chaos/message-bombing.yaml", policy)?;
    let base_p95 = base
        .timeline
        .iter()
        .rfind(|p| p.phase == "run")
        .map_or(f64::NAN, |p| p.p95_ms);
    // Bombing: the seed's figures are its worst, at the end of the bombing phase.
    let end = bomb.timeline.iter().rfind(|p| p.phase == "bombing");
    // The seed's bombing p95 (2,800 ms) is above its own 2 s client timeout, so it can only
    // be what the server measured; a client sees at most its timeout. Compare with the
    // model's server-side p95.
    let bomb_p95 = end.map_or(f64::NAN, |p| p.server_p95_ms);
    let bomb_err = end.map_or(f64::NAN, |p| p.error_rate * 100.0);
    Ok(vec![
        point("baseline, 25 connections: p95", 85.1, base_p95, "ms"),
        point(
            "flood, 200 connections: p95",
            125.6,
            p95_at_connections(&flood, 200),
            "ms",
        ),
        point(
            "flood, 350 connections: p95",
            210.8,
            p95_at_connections(&flood, 350),
            "ms",
        ),
        point(
            "flood, 500 connections: p95",
            285.3,
            p95_at_connections(&flood, 500),
            "ms",
        ),
        point("bombing, end: p95 (server side)", 2800.0, bomb_p95, "ms"),
        point("bombing, end: errors", 12.2, bomb_err, "%"),
    ])
}

pub fn table(points: &[CalPoint]) -> String {
    let mut s = format!(
        "{:<34} {:>9} {:>9} {:>10}\n",
        "calibration point", "seed", "model", "deviation"
    );
    for p in points {
        s += &format!(
            "{:<34} {:>7.1}{:<2} {:>7.1}{:<2} {:>+9.1}% {}\n",
            p.name,
            p.seed,
            p.unit,
            p.model,
            p.unit,
            p.deviation * 100.0,
            if p.within { "ok" } else { "OUT OF ±25%" }
        );
    }
    s
}
