//! What people and machines read: the terminal timeline, the JSON result, the report
//! directory with its SVG chart, and one-line policy summaries.

mod svg;

use crate::policy::{Floor, Policy, Tier};
use crate::scenario::Scenario;
use crate::simulate::SimResult;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use svg::chart;

/// Colour only on a terminal, and never with NO_COLOR set.
pub fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn tier_cell(t: Tier, color: bool) -> String {
    let name = format!("{:<9}", t.name());
    if !color {
        return name;
    }
    let code = match t {
        Tier::Green => "32",
        Tier::Yellow => "33",
        Tier::Red => "31",
        Tier::Emergency => "1;37;41",
    };
    format!("\x1b[{code}m{name}\x1b[0m")
}

/// One line per valid policy for `andon check`.
pub fn policy_summary(p: &Policy) -> String {
    let services: Vec<String> = p
        .services
        .iter()
        .map(|s| format!("{} [{}..{}]", s.name, s.min_replicas, s.max_replicas))
        .collect();
    let floors: Vec<String> = p
        .tiers
        .iter()
        .map(|t| {
            let f = match t.action.floor {
                Floor::None => "-".to_string(),
                Floor::Factor(x) => format!("{x}x"),
                Floor::Replicas(n) => n.to_string(),
                Floor::Max => "max".into(),
            };
            format!("{}:{}s/floor {}", t.tier, t.for_.as_secs(), f)
        })
        .collect();
    let predict = match &p.behavior.predict {
        None => "off".to_string(),
        Some(pr) => {
            let on: Vec<&str> = [
                pr.trend.map(|_| "trend"),
                pr.seasonal.map(|_| "seasonal"),
                pr.sessions.then_some("sessions"),
            ]
            .into_iter()
            .flatten()
            .collect();
            on.join("+")
        }
    };
    format!(
        "{}: ok: {} service(s) {}; {} signals; tiers {}; panic {}; predict {predict}",
        p.source,
        p.services.len(),
        services.join(", "),
        p.signals.len(),
        floors.join(", "),
        if p.behavior.panic.is_some() {
            "on"
        } else {
            "off"
        }
    )
}

/// The policy's run and a baseline's, side by side: what each cost and how the service
/// really fared (true tier by the policy's thresholds).
pub fn compare(
    a: &crate::simulate::Summary,
    b: &crate::simulate::Summary,
    ours: &str,
    name: &str,
) -> String {
    let rows: [(&str, f64, f64, &str); 10] = [
        (
            "replica-seconds",
            a.replica_seconds,
            b.replica_seconds,
            "{:.0}",
        ),
        (
            "seconds yellow or worse",
            a.seconds_yellow_or_worse,
            b.seconds_yellow_or_worse,
            "",
        ),
        (
            "seconds red or worse",
            a.seconds_red_or_worse,
            b.seconds_red_or_worse,
            "",
        ),
        ("peak p95 (ms)", a.peak_p95_ms, b.peak_p95_ms, ""),
        (
            "max replicas",
            a.max_replicas as f64,
            b.max_replicas as f64,
            "",
        ),
        (
            "scale updates",
            a.scale_actions as f64,
            b.scale_actions as f64,
            "",
        ),
        (
            "all service updates",
            a.updates as f64,
            b.updates as f64,
            "",
        ),
        (
            "direction changes",
            a.direction_changes as f64,
            b.direction_changes as f64,
            "",
        ),
        (
            "shed fraction (%)",
            a.shed_fraction * 100.0,
            b.shed_fraction * 100.0,
            "",
        ),
        (
            "timeout rate (%)",
            a.timeout_rate * 100.0,
            b.timeout_rate * 100.0,
            "",
        ),
    ];
    let mut out = format!("\n{:<26} {:>12} {:>12}\n", "side by side", ours, name);
    for (label, x, y, _) in rows {
        let fmt = |v: f64| {
            if v.fract() == 0.0 || v.abs() >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        };
        let _ = writeln!(out, "{label:<26} {:>12} {:>12}", fmt(x), fmt(y));
    }
    out
}

/// The readable timeline: a row every `every`, each event as it happens, then the
/// summary and the expectations.
pub fn terminal(r: &SimResult, sc: &Scenario, every: Duration, color: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "andon simulate: {} ({}) with {}, {}",
        r.scenario,
        sc.description,
        r.policy,
        if r.controlled {
            "controlled"
        } else {
            "NO CONTROL (--no-control)"
        }
    );
    let _ = writeln!(
        out,
        "{:>6}  {:<10} {:<9} {:>4} {:>5} {:>6} {:>9} {:>8} {:>7} {:>7}",
        "t", "phase", "tier", "repl", "ready", "conns", "offered", "p95", "errors", "shed"
    );
    let every_s = every.as_secs_f64().max(1e-9);
    let mut next_row = 0.0;
    let mut events = r.events.iter().peekable();
    for p in &r.timeline {
        while let Some(e) = events.next_if(|e| e.t_s <= p.t_s) {
            let mark = if e.kind == "fault" { "⚡" } else { "▶" };
            let _ = writeln!(out, "{:>5.0}s  {mark} {}", e.t_s, e.text);
        }
        if p.t_s + 1e-9 >= next_row {
            next_row += every_s;
            let _ = writeln!(
                out,
                "{:>5.0}s  {:<10} {} {:>4} {:>5} {:>6} {:>7.0}/s {:>6.0}ms {:>6.2}% {:>6.2}%",
                p.t_s,
                truncate(&p.phase, 10),
                tier_cell(p.tier, color),
                p.replicas,
                p.ready,
                p.connections,
                p.offered_rps,
                p.p95_ms,
                p.error_rate * 100.0,
                p.shed_rate * 100.0
            );
        }
    }
    let s = &r.summary;
    let _ = write!(
        out,
        "\nsummary: max tier {}, peak p95 {:.0} ms, peak errors {:.2}%, max replicas {}, {} scale actions, {:.0} requests shed",
        s.max_tier,
        s.peak_p95_ms,
        s.peak_error_rate * 100.0,
        s.max_replicas,
        s.scale_actions,
        s.shed_requests
    );
    if s.failed_writes > 0 {
        let _ = write!(out, ", {} failed service updates", s.failed_writes);
    }
    let _ = writeln!(out);
    if let Some(b) = &r.baseline {
        let ours = if r.controlled { "andon" } else { "no control" };
        let _ = write!(out, "{}", compare(s, &b.summary, ours, b.name));
    }
    for e in &r.expectations {
        let mark = if e.held { "held    " } else { "DEVIATED" };
        let _ = writeln!(out, "  {mark} {}: {}", e.text, e.observed);
    }
    let _ = writeln!(
        out,
        "verdict: {}",
        match r.verdict {
            crate::scenario::Verdict::Pass => "pass",
            crate::scenario::Verdict::Deviated => "deviated",
        }
    );
    out
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Writes report.json and chart.svg into `dir`; returns the chart's path.
/// Makes `--report DIR` ready: a directory, new or existing; errors name it.
pub fn prepare_dir(dir: &Path) -> crate::Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(crate::Error::Config(format!(
            "--report {}: is a file; allowed: a directory, new or existing",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        crate::Error::Environment(format!(
            "--report {}: cannot create the directory: {e}",
            dir.display()
        ))
    })
}

/// What `simulate --report` writes into its directory.
const REPORT_FILES: [&str; 2] = ["report.json", "chart.svg"];

/// Checks (and creates) `simulate --report`'s directory before the run, so a path that
/// cannot take the report fails at once, not after a long run and with nothing half
/// written.
pub fn check_report_dir(dir: &Path) -> crate::Result<()> {
    prepare_dir(dir)?;
    for name in REPORT_FILES {
        let p = dir.join(name);
        if p.is_dir() {
            return Err(crate::Error::Config(format!(
                "--report {}: {} is a directory; allowed: a directory where {} can be written",
                dir.display(),
                p.display(),
                REPORT_FILES.join(" and ")
            )));
        }
    }
    Ok(())
}

pub fn write_dir(r: &SimResult, sc: &Scenario, dir: &Path) -> crate::Result<PathBuf> {
    let fail = |what: &str, p: &Path, e: std::io::Error| {
        crate::Error::Environment(format!(
            "--report {}: cannot {what} {}: {e}",
            dir.display(),
            p.display()
        ))
    };
    check_report_dir(dir)?;
    let json = serde_json::to_string_pretty(r).map_err(|e| crate::Error::Runtime(e.to_string()))?;
    let report = dir.join(REPORT_FILES[0]);
    std::fs::write(&report, json).map_err(|e| fail("write", &report, e))?;
    let path = dir.join(REPORT_FILES[1]);
    std::fs::write(&path, chart(r, sc)).map_err(|e| fail("write", &path, e))?;
    Ok(path)
}
