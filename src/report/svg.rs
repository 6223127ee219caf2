//! The simulation chart: tier band, replicas, p95 and offered load over time, with faults
//! marked. SVG only (plotters' SVG backend), so it opens in any browser.

use crate::policy::Tier;
use crate::scenario::Scenario;
use crate::simulate::SimResult;
use plotters::prelude::*;

/// The baseline controller's lines.
const BASELINE: RGBColor = RGBColor(230, 120, 0);

fn tier_color(t: Tier) -> RGBColor {
    match t {
        Tier::Green => RGBColor(76, 175, 80),
        Tier::Yellow => RGBColor(255, 193, 7),
        Tier::Red => RGBColor(229, 57, 53),
        Tier::Emergency => RGBColor(123, 31, 162),
    }
}

/// Renders the chart as an SVG document.
pub fn chart(r: &SimResult, sc: &Scenario) -> String {
    let mut svg = String::new();
    if let Err(e) = draw(r, sc, &mut svg) {
        // A chart that cannot be drawn must not cost the run its report: say why instead.
        return format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"40\"><text x=\"10\" y=\"25\">chart not drawn: {}</text></svg>",
            e.to_string().replace('<', "&lt;")
        );
    }
    svg
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(r: &SimResult, sc: &Scenario, svg: &mut String) -> DrawResult {
    let tl = &r.timeline;
    let t_end = tl.last().map_or(1.0, |p| p.t_s + 1.0);
    let root = SVGBackend::with_string(svg, (1100, 980)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "{} — {} ({})",
        r.scenario,
        r.policy,
        if r.controlled {
            "controlled"
        } else {
            "no control"
        }
    );
    let root = root.titled(&title, ("sans-serif", 22))?;
    let (band, rest) = root.split_vertically(90);
    let panels = rest.split_evenly((3, 1));

    // Tier band with phase boundaries and faults.
    let mut c = ChartBuilder::on(&band)
        .margin(8)
        .x_label_area_size(0)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_end, 0.0..1.0)?;
    c.configure_mesh()
        .disable_mesh()
        .y_labels(0)
        .x_labels(0)
        .draw()?;
    c.draw_series(tl.iter().map(|p| {
        Rectangle::new(
            [(p.t_s, 0.35), (p.t_s + 1.0, 1.0)],
            tier_color(p.tier).filled(),
        )
    }))?;
    let mut start = 0.0;
    for ph in &sc.phases {
        c.draw_series(std::iter::once(Text::new(
            ph.name.clone(),
            (start + 2.0, 0.05),
            ("sans-serif", 14),
        )))?;
        start += ph.duration.as_secs_f64();
    }
    for f in sc.faults.iter() {
        let x = f.at.as_secs_f64();
        c.draw_series(std::iter::once(PathElement::new(
            vec![(x, 0.0), (x, 1.0)],
            BLACK.stroke_width(2),
        )))?;
    }
    for (i, t) in Tier::ALL.iter().enumerate() {
        let x0 = t_end * (0.6 + 0.1 * i as f64);
        c.draw_series(std::iter::once(Rectangle::new(
            [(x0, 0.08), (x0 + t_end * 0.02, 0.28)],
            tier_color(*t).filled(),
        )))?;
        c.draw_series(std::iter::once(Text::new(
            t.name(),
            (x0 + t_end * 0.025, 0.08),
            ("sans-serif", 13),
        )))?;
    }

    // Replicas and ready tasks.
    let base = r.baseline.as_ref().filter(|b| !b.timeline.is_empty());
    let base_tl = base.map_or(&[][..], |b| &b.timeline[..]);
    let max_rep = tl
        .iter()
        .chain(base_tl)
        .map(|p| p.replicas.max(p.ready))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        + 1.0;
    let mut c = ChartBuilder::on(&panels[0])
        .margin(8)
        .x_label_area_size(25)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_end, 0.0..max_rep)?;
    c.configure_mesh().y_desc("replicas").x_desc("").draw()?;
    c.draw_series(LineSeries::new(
        tl.iter().map(|p| (p.t_s, p.replicas as f64)),
        BLUE.stroke_width(2),
    ))?
    .label("replicas")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    c.draw_series(LineSeries::new(
        tl.iter().map(|p| (p.t_s, p.ready as f64)),
        CYAN,
    ))?
    .label("ready")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], CYAN));
    // The baseline (`--baseline hpa`) on the same axes, in orange.
    if let Some(b) = base {
        c.draw_series(LineSeries::new(
            b.timeline.iter().map(|p| (p.t_s, p.replicas as f64)),
            BASELINE.stroke_width(2),
        ))?
        .label(format!("replicas ({})", b.name))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BASELINE));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    // p95 (admitted requests), with the tier thresholds of latency if the policy has them.
    let max_p95 = tl
        .iter()
        .chain(base_tl)
        .map(|p| p.p95_ms)
        .fold(0.0, f64::max)
        .max(200.0)
        * 1.1;
    let mut c = ChartBuilder::on(&panels[1])
        .margin(8)
        .x_label_area_size(25)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_end, 0.0..max_p95)?;
    c.configure_mesh().y_desc("p95 ms").draw()?;
    c.draw_series(LineSeries::new(
        tl.iter().map(|p| (p.t_s, p.p95_ms)),
        BLACK.stroke_width(2),
    ))?
    .label("p95 (admitted)")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    if let Some(b) = base {
        c.draw_series(LineSeries::new(
            b.timeline.iter().map(|p| (p.t_s, p.p95_ms.min(max_p95))),
            BASELINE.stroke_width(2),
        ))?
        .label(format!("p95 ({})", b.name))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BASELINE));
    }
    c.draw_series(LineSeries::new(
        tl.iter().map(|p| (p.t_s, p.p99_ms.min(max_p95))),
        RGBColor(150, 150, 150),
    ))?
    .label("p99")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(150, 150, 150)));
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    // Offered load and shed.
    let max_rps = tl
        .iter()
        .map(|p| p.offered_rps.max(p.forecast_rps.unwrap_or(0.0)))
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let mut c = ChartBuilder::on(&panels[2])
        .margin(8)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_end, 0.0..max_rps)?;
    c.configure_mesh()
        .y_desc("msg/s")
        .x_desc("time (s)")
        .draw()?;
    c.draw_series(LineSeries::new(
        tl.iter().map(|p| (p.t_s, p.offered_rps)),
        BLUE.stroke_width(2),
    ))?
    .label("offered")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    c.draw_series(LineSeries::new(
        tl.iter().map(|p| (p.t_s, p.offered_rps * p.shed_rate)),
        RED.stroke_width(2),
    ))?
    .label("refused fast (503, or at the session cap)")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    c.draw_series(LineSeries::new(
        tl.iter().map(|p| (p.t_s, p.offered_rps * p.error_rate)),
        MAGENTA,
    ))?
    .label("errors")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA));
    // The forecast, drawn at the time it is for: where it runs ahead of "offered", the
    // replicas were asked for before the load came.
    if tl.iter().any(|p| p.forecast_rps.is_some()) {
        let green = RGBColor(0, 140, 60);
        c.draw_series(LineSeries::new(
            tl.iter().filter_map(|p| {
                let f = p.forecast_rps?;
                let at = p.t_s + p.forecast_horizon_s.unwrap_or(0.0);
                (at <= t_end).then_some((at, f.min(max_rps)))
            }),
            green.stroke_width(1),
        ))?
        .label("forecast (at its time)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], green));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
