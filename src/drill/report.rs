//! The drill's outputs: live progress (indicatif, on a terminal only), the terminal
//! summary, and the report directory (report.json, histograms.hlog, index.html with SVG
//! charts).

use super::mcp::ErrorClass;
use super::stats::{of_class, Second};
use super::DrillResult;
use crate::policy::Tier;
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(enabled: bool, total: Duration) -> Progress {
        if !enabled {
            return Progress { bar: None };
        }
        let bar = ProgressBar::new(total.as_secs().max(1));
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:24}] {pos}/{len}s {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress { bar: Some(bar) }
    }

    pub fn second(&self, s: &Second) {
        if let Some(b) = &self.bar {
            b.set_position(s.t_s as u64 + 1);
            b.set_message(format!(
                "{} | offered {:.0}/s achieved {:.0}/s | p95 {} | errors {:.2}% shed {:.1}% | replicas {} | tier {}",
                s.phase,
                s.offered_rps,
                s.achieved_rps,
                s.p95_ms.map_or("-".into(), |v| format!("{v:.0} ms")),
                s.error_rate * 100.0,
                s.shed_rate * 100.0,
                s.replicas.map_or("-".into(), |r| format!("{r}/{}", s.ready.unwrap_or(0))),
                s.tier.map_or("-", Tier::name)
            ));
        }
    }

    /// A warning that must be seen: above the bar on a terminal, on stderr otherwise.
    pub fn warn(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

pub fn terminal(r: &DrillResult) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "andon drill: {} against {} over {} (speed ×{})",
        r.scenario, r.target, r.transport, r.speed
    );
    let _ = writeln!(
        o,
        "{:<12} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8}",
        "phase", "offered/s", "achvd/s", "p50", "p95", "p99", "p99.9", "max", "errors", "shed"
    );
    for p in &r.phases {
        let answered = p.counts.answered().max(1) as f64;
        let _ = writeln!(
            o,
            "{:<12} {:>9.0} {:>9.0} {:>6.1}ms {:>6.1}ms {:>6.1}ms {:>6.1}ms {:>7.1}ms {:>7.2}% {:>7.2}%",
            p.name,
            p.offered_rps,
            p.achieved_rps,
            p.latency.p50_ms,
            p.latency.p95_ms,
            p.latency.p99_ms,
            p.latency.p999_ms,
            p.latency.max_ms,
            p.counts.error_total(false) as f64 / answered * 100.0,
            p.counts.errors.get(&super::mcp::ErrorClass::Shed).copied().unwrap_or(0) as f64 / answered * 100.0
        );
    }
    let errs: Vec<String> = r
        .counts
        .errors
        .iter()
        .map(|(c, n)| format!("{} {n}", c.name()))
        .collect();
    let _ = writeln!(
        o,
        "requests: {} scheduled, {} ok; errors: {}",
        r.counts.scheduled,
        r.counts.ok,
        if errs.is_empty() {
            "none".into()
        } else {
            errs.join(", ")
        }
    );
    let closed: Vec<String> = r
        .closed_by_server
        .iter()
        .map(|(code, n)| format!("{code} ×{n}"))
        .collect();
    let _ = writeln!(
        o,
        "sessions: {} opened, {} failed to open{}; max replicas {}; max tier {}",
        r.sessions_opened,
        r.session_open_failures,
        if closed.is_empty() {
            String::new()
        } else {
            format!(", closed by the server: {}", closed.join(", "))
        },
        r.max_replicas.map_or("-".into(), |v| v.to_string()),
        r.max_tier.map_or("-", Tier::name)
    );
    if r.generator_behind_s > 0 {
        let _ = writeln!(
            o,
            "WARNING: the generator fell behind its schedule in {} second(s) (late, or not sent at --max-in-flight: {} requests, class `generator`)",
            r.generator_behind_s,
            of_class(&r.counts.errors, ErrorClass::Generator)
        );
    }
    for f in &r.faults {
        let _ = writeln!(
            o,
            "fault at {:.1}s: {} — {}{}",
            f.t_s,
            f.fault,
            if f.injected { "" } else { "NOT INJECTED: " },
            f.detail
        );
    }
    for e in r.before.iter().chain(r.expectations.iter()) {
        let _ = writeln!(
            o,
            "  {} {}: {}",
            if e.held { "held    " } else { "DEVIATED" },
            e.text,
            e.observed
        );
    }
    let _ = writeln!(
        o,
        "verdict: {}",
        if r.verdict == crate::scenario::Verdict::Pass {
            "pass"
        } else {
            "deviated"
        }
    );
    o
}

/// Writes report.json, histograms.hlog and index.html into `dir`.
pub fn write_dir(r: &DrillResult, dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(r).map_err(std::io::Error::other)?,
    )?;
    let mut hlog = Vec::new();
    {
        let mut ser = hdrhistogram::serialization::V2DeflateSerializer::new();
        let mut w = hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "andon drill {} against {}: latency in µs per phase and method",
                r.scenario, r.target
            ))
            .with_start_time(std::time::SystemTime::now())
            .begin_log_with(&mut hlog, &mut ser)?;
        let mut start = 0.0;
        for p in &r.phases {
            for (name, h) in r
                .histograms
                .iter()
                .filter(|(n, _)| n == &p.name || n.starts_with(&format!("{}/", p.name)))
            {
                let tag = name.replace([' ', ','], "_");
                let _ = w.write_histogram(
                    h,
                    Duration::from_secs_f64(start),
                    Duration::from_secs_f64(p.duration_s),
                    hdrhistogram::serialization::interval_log::Tag::new(&tag),
                );
            }
            start += p.duration_s;
        }
    }
    std::fs::write(dir.join("histograms.hlog"), hlog)?;
    let path = dir.join("index.html");
    std::fs::write(&path, html(r))?;
    Ok(path)
}

fn html(r: &DrillResult) -> String {
    let mut o = String::new();
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;");
    let _ = write!(
        o,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>andon drill: {}</title><style>body{{font-family:sans-serif;max-width:1150px;margin:1em auto}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}.held{{color:#2e7d32}}.dev{{color:#c62828;font-weight:bold}}</style></head><body>",
        esc(&r.scenario)
    );
    let _ = write!(
        o,
        "<h1>andon drill: {} — <span class=\"{}\">{}</span></h1><p>target {} · speed ×{} · {} requests scheduled, {} ok</p>",
        esc(&r.scenario),
        if r.verdict == crate::scenario::Verdict::Pass { "held" } else { "dev" },
        if r.verdict == crate::scenario::Verdict::Pass { "pass" } else { "deviated" },
        esc(&r.target),
        r.speed,
        r.counts.scheduled,
        r.counts.ok
    );
    o += "<h2>Steady-state hypothesis</h2><ul>";
    for e in r.before.iter().chain(r.expectations.iter()) {
        let _ = write!(
            o,
            "<li class=\"{}\">{} {}: {}</li>",
            if e.held { "held" } else { "dev" },
            if e.held { "held" } else { "DEVIATED" },
            esc(&e.text),
            esc(&e.observed)
        );
    }
    o += "</ul><h2>Latency per phase (ms, from the intended send time)</h2><table><tr><th>phase</th><th>offered/s</th><th>achieved/s</th><th>p50</th><th>p75</th><th>p90</th><th>p95</th><th>p99</th><th>p99.9</th><th>max</th></tr>";
    for p in &r.phases {
        let l = &p.latency;
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            esc(&p.name), p.offered_rps, p.achieved_rps, l.p50_ms, l.p75_ms, l.p90_ms, l.p95_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
    }
    o += "</table>";
    for (title, svg) in charts(r) {
        let _ = write!(o, "<h2>{title}</h2>{svg}");
    }
    if !r.faults.is_empty() {
        o += "<h2>Faults</h2><ul>";
        for f in &r.faults {
            let _ = write!(
                o,
                "<li>{:.1} s: {} — {}</li>",
                f.t_s,
                esc(&f.fault),
                esc(&f.detail)
            );
        }
        o += "</ul>";
    }
    o += "<p>Raw histograms: <code>histograms.hlog</code> (HdrHistogram interval log, V2 deflate, µs). All figures: <code>report.json</code>.</p></body></html>";
    o
}

type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

fn chart(title_y: &str, series: &[Series], faults: &[f64], step: bool) -> String {
    let mut svg = String::new();
    let t_end = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.0))
        .fold(1.0, f64::max)
        + 1.0;
    let y_max = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let r = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(&mut svg, (1100, 300)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut c = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_end, 0.0..y_max)?;
        c.configure_mesh()
            .x_desc("time (s)")
            .y_desc(title_y)
            .draw()?;
        for (name, color, pts) in series {
            let color = *color;
            let pts: Vec<(f64, f64)> = if step {
                pts.windows(2)
                    .flat_map(|w| [w[0], (w[1].0, w[0].1)])
                    .chain(pts.last().copied())
                    .collect()
            } else {
                pts.clone()
            };
            c.draw_series(LineSeries::new(pts, color.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        for x in faults {
            c.draw_series(std::iter::once(PathElement::new(
                vec![(*x, 0.0), (*x, y_max)],
                BLACK.stroke_width(1),
            )))?;
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    })();
    if let Err(e) = r {
        return format!("<p>chart not drawn: {e}</p>");
    }
    svg
}

fn charts(r: &DrillResult) -> Vec<(&'static str, String)> {
    let tl = &r.timeline;
    let faults: Vec<f64> = r.faults.iter().map(|f| f.t_s).collect();
    let pts = |f: &dyn Fn(&Second) -> Option<f64>| -> Vec<(f64, f64)> {
        tl.iter().filter_map(|s| f(s).map(|v| (s.t_s, v))).collect()
    };
    vec![
        (
            "Offered against achieved rate (faults marked)",
            chart(
                "msg/s",
                &[
                    ("offered", BLUE, pts(&|s| Some(s.offered_rps))),
                    ("achieved", GREEN, pts(&|s| Some(s.achieved_rps))),
                    (
                        "shed (503)",
                        RED,
                        pts(&|s| Some(of_class(&s.errors, ErrorClass::Shed) as f64)),
                    ),
                ],
                &faults,
                false,
            ),
        ),
        (
            "Latency percentiles per second (ms)",
            chart(
                "ms",
                &[
                    ("p50", GREEN, pts(&|s| s.p50_ms)),
                    ("p95", BLUE, pts(&|s| s.p95_ms)),
                    ("p99", RED, pts(&|s| s.p99_ms)),
                ],
                &faults,
                false,
            ),
        ),
        (
            "Replicas and tier (0 green … 3 emergency) over time",
            chart(
                "",
                &[
                    ("replicas", BLUE, pts(&|s| s.replicas.map(f64::from))),
                    ("ready", CYAN, pts(&|s| s.ready.map(f64::from))),
                    ("tier", RED, pts(&|s| s.tier.map(|t| t.level() as f64))),
                ],
                &faults,
                true,
            ),
        ),
    ]
}
