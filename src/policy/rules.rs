//! Prometheus alerting rules from the policy, so that alerts and scaling never disagree.
//!
//! One alert per service and tier. Each mirrors the core's tier tracking (tier.rs):
//! - `expr` is true while some signal is above its entry threshold (`count(q > t)` per
//!   signal, joined with `or`; `count` drops labels, so the joined series keeps one
//!   identity and its pending time carries over from one signal to the next, as the
//!   core's does), or while the alert is firing and some signal is above its exit level
//!   (hysteresis, by reading the alert's own `ALERTS` series);
//! - `for` is the tier's `for`; `keep_firing_for` is its cool-down.
//!
//! The one deliberate difference: the core holds a tier when a reading is missing (bad
//! data never relaxes a tier); an alert whose query returns nothing resolves.

use super::{Policy, ServiceSpec, SignalKind, TierSpec};
use std::fmt::Write as _;

/// The alert's name for a tier: AndonYellow, AndonRed, AndonEmergency.
pub fn alert_name(tier: super::Tier) -> String {
    let n = tier.name();
    format!("Andon{}{}", n[..1].to_uppercase(), &n[1..])
}

/// A threshold in the unit the signal's query returns.
fn in_query_unit(p: &Policy, kind: SignalKind, canonical: f64) -> f64 {
    let factor = p.signal(kind).map_or(1.0, |s| s.unit.canonical().1);
    canonical / factor
}

fn any_above(p: &Policy, svc: &ServiceSpec, levels: &[(SignalKind, f64)]) -> String {
    levels
        .iter()
        .filter_map(|(kind, v)| {
            let signal = p.signal(*kind)?;
            let q = one_line(&signal.query_for(&svc.name));
            // Where the core combines several series into one value, so does the alert.
            let q = match signal.combine {
                Some(c) => format!("{} by (service) ({q})", c.name()),
                None => q,
            };
            Some(format!(
                "count(({q}) > {})",
                fmt_num(in_query_unit(p, *kind, *v))
            ))
        })
        .collect::<Vec<_>>()
        .join("\n  or ")
}

/// The query on one line, PromQL `#` comments (outside strings) dropped: joined onto one
/// line, a comment would swallow the rest of the expression.
fn one_line(q: &str) -> String {
    q.lines()
        .map(strip_comment)
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ")
}

fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
            None if c == '#' => return &line[..i],
            None => {}
        }
    }
    line
}

/// `v` to 15 significant digits (PromQL reads both forms), so that an alert fires where
/// the core's tier does: nine decimals made 1.23456789e-9 `0.000000001` and 1e-12 `0`.
/// Fifteen, not all seventeen: an exit level of 0.7 × 80 is 56 to a reader, not
/// 55.99999999999999.
fn fmt_num(v: f64) -> String {
    let v: f64 = format!("{v:.14e}").parse().unwrap_or(v);
    let plain = format!("{v}");
    if plain.len() <= 20 {
        plain
    } else {
        format!("{v:e}")
    }
}

/// YAML double-quoted string.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn rule(out: &mut String, p: &Policy, svc: &ServiceSpec, spec: &TierSpec) {
    let name = alert_name(spec.tier);
    let enter = any_above(p, svc, &spec.enter);
    let exit = any_above(p, svc, &spec.exit);
    let firing = format!(
        "count(ALERTS{{alertname=\"{name}\", service={}, alertstate=\"firing\"}})",
        quote(&svc.name)
    );
    let expr = format!("(\n  {enter}\n)\nor\n(\n  {firing}\n  and\n  (\n  {exit}\n  )\n)");
    let thresholds: Vec<String> = spec
        .enter
        .iter()
        .map(|(k, v)| format!("{k} > {}", k.format(*v)))
        .collect();
    let _ = writeln!(out, "      - alert: {name}");
    let _ = writeln!(out, "        expr: |");
    for line in expr.lines() {
        let _ = writeln!(out, "          {line}");
    }
    let _ = writeln!(out, "        for: {}", prom_duration(spec.for_));
    if !spec.cooldown.is_zero() {
        let _ = writeln!(
            out,
            "        keep_firing_for: {}",
            prom_duration(spec.cooldown)
        );
    }
    let _ = writeln!(out, "        labels:");
    let _ = writeln!(out, "          severity: {}", spec.tier);
    let _ = writeln!(out, "          tier: {}", spec.tier);
    let _ = writeln!(out, "          service: {}", quote(&svc.name));
    let _ = writeln!(out, "        annotations:");
    let _ = writeln!(
        out,
        "          summary: {}",
        quote(&format!(
            "{}: Andon {} ({})",
            svc.name,
            spec.tier,
            thresholds.join(" or ")
        ))
    );
    let _ = writeln!(
        out,
        "          description: {}",
        quote(&format!(
            "Some signal of {} has been above the {} threshold for {}. andon acts on the same thresholds; `curl andon:9464/status` says what it did and why. Policy: {}",
            svc.name,
            spec.tier,
            prom_duration(spec.for_),
            p.source
        ))
    );
}

/// Prometheus durations: whole units like 30s, 2m, 1h (fractions as ms).
fn prom_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".into()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The rules file for the whole policy: one group per service.
pub fn render(p: &Policy) -> String {
    let mut out = format!(
        "# Generated by `andon rules {}`. Do not edit: change the policy and generate again.\ngroups:\n",
        p.source
    );
    for svc in &p.services {
        let _ = writeln!(out, "  - name: {}", quote(&format!("andon-{}", svc.name)));
        let _ = writeln!(out, "    rules:");
        for spec in &p.tiers {
            rule(&mut out, p, svc, spec);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_print_as_prometheus_reads_them() {
        assert_eq!(fmt_num(0.0005), "0.0005");
        assert_eq!(fmt_num(50.0), "50");
        for v in [
            1.23456789e-9,
            1e-12,
            1e-300,
            0.15,
            37.5e6,
            45_875_200.0,
            1e300,
        ] {
            assert_eq!(fmt_num(v).parse::<f64>(), Ok(v), "{v}: {}", fmt_num(v));
        }
        assert_eq!(fmt_num(1e-300), "1e-300");
        assert_eq!(fmt_num(0.7 * 80.0), "56");
        assert_eq!(fmt_num(0.25), "0.25");
        assert_eq!(prom_duration(std::time::Duration::from_secs(120)), "2m");
        assert_eq!(prom_duration(std::time::Duration::from_secs(90)), "90s");
        assert_eq!(alert_name(super::super::Tier::Emergency), "AndonEmergency");
    }
}
