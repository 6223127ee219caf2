//! Units of signals and the written forms of quantities (`150ms`, `300MB`, `0.5%`).

use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Ratio,
    Percent,
    Seconds,
    Milliseconds,
    Bytes,
    Count,
    PerSecond,
}

impl Unit {
    pub const NAMES: &'static str =
        "ratio, percent, seconds, milliseconds, bytes, count, per_second";

    pub fn from_name(s: &str) -> Option<Unit> {
        Some(match s {
            "ratio" => Unit::Ratio,
            "percent" => Unit::Percent,
            "seconds" => Unit::Seconds,
            "milliseconds" => Unit::Milliseconds,
            "bytes" => Unit::Bytes,
            "count" => Unit::Count,
            "per_second" => Unit::PerSecond,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Unit::Ratio => "ratio",
            Unit::Percent => "percent",
            Unit::Seconds => "seconds",
            Unit::Milliseconds => "milliseconds",
            Unit::Bytes => "bytes",
            Unit::Count => "count",
            Unit::PerSecond => "per_second",
        }
    }

    /// The canonical unit this one converts to, and the factor to multiply by.
    pub fn canonical(self) -> (Unit, f64) {
        match self {
            Unit::Percent => (Unit::Ratio, 0.01),
            Unit::Milliseconds => (Unit::Seconds, 0.001),
            u => (u, 1.0),
        }
    }

    /// Formats a value given in this (canonical) unit for people.
    pub fn format(self, v: f64) -> String {
        match self {
            Unit::Ratio | Unit::Percent => format!("{}%", trim(format!("{:.3}", v * 100.0))),
            Unit::Seconds | Unit::Milliseconds => format!("{:.0}ms", v * 1000.0),
            Unit::Bytes => format!("{}MB", trim(format!("{:.2}", v / 1e6))),
            Unit::Count => format!("{v:.0}"),
            Unit::PerSecond => format!("{v:.0}/s"),
        }
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A written value that does not parse: what was written, and what is allowed. Validation
/// places it at the field's position.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

impl From<InvalidValue> for String {
    fn from(e: InvalidValue) -> String {
        e.0
    }
}

/// Parses a written quantity in the given canonical unit. Numbers are taken as they are;
/// strings may carry a suffix that fits the unit. The error says what is allowed.
pub fn parse_in(unit: Unit, text: &str) -> Result<f64, InvalidValue> {
    let t = text.trim();
    let bad = |allowed: &str| {
        InvalidValue(format!(
            "`{t}` is not a valid {}; allowed: {allowed}",
            unit.name()
        ))
    };
    match unit {
        Unit::Seconds | Unit::Milliseconds => parse_duration(t)
            .map(|d| d.as_secs_f64())
            .map_err(|_| bad("a number of seconds or a duration such as 150ms, 2s")),
        Unit::Ratio | Unit::Percent => match t.strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<f64>()
                .map(|v| v / 100.0)
                .map_err(|_| bad("a fraction such as 0.005 or a percentage such as 0.5%")),
            None => t
                .parse::<f64>()
                .map_err(|_| bad("a fraction such as 0.005 or a percentage such as 0.5%")),
        },
        Unit::Bytes => {
            parse_bytes(t).ok_or_else(|| bad("bytes, or a size such as 300MB, 512MiB, 1.5GB, 1TB"))
        }
        Unit::Count | Unit::PerSecond => t.parse::<f64>().map_err(|_| bad("a number")),
    }
}

/// Sizes: plain bytes, decimal (kB, MB, GB) or binary (KiB, MiB, GiB) suffixes.
pub fn parse_bytes(t: &str) -> Option<f64> {
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix.trim() {
        "" | "B" => 1.0,
        "kB" | "KB" | "k" | "K" => 1e3,
        "MB" | "M" => 1e6,
        "GB" | "G" => 1e9,
        "TB" | "T" => 1e12,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(n * mult)
}

/// The longest duration andon accepts anywhere: a year. Longer ones are surely typos,
/// and every window stays far from overflowing millisecond arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// A humantime duration (`30s`, `5m`, `150ms`) or a plain number of seconds.
pub fn parse_duration(t: &str) -> Result<Duration, InvalidValue> {
    let t = t.trim();
    let bad = |m: String| InvalidValue(m);
    let d = if let Ok(secs) = t.parse::<f64>() {
        if secs < 0.0 {
            return Err(bad(format!(
                "`{t}` is not a duration: it is negative; allowed: 0 to 366d"
            )));
        }
        Duration::try_from_secs_f64(secs)
            .map_err(|_| bad(format!("`{t}` is not a duration; allowed: 0 to 366d")))?
    } else {
        humantime::parse_duration(t).map_err(|e| {
            bad(format!(
                "`{t}` is not a duration ({e}); allowed: a number and a unit, e.g. 30s, 5m, 150ms"
            ))
        })?
    };
    if d > MAX_DURATION {
        return Err(bad(format!("`{t}` is too long; allowed: at most 366d")));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_in_their_units() {
        assert_eq!(parse_in(Unit::Seconds, "150ms").unwrap(), 0.15);
        assert_eq!(parse_in(Unit::Seconds, "2").unwrap(), 2.0);
        assert_eq!(parse_in(Unit::Ratio, "0.5%").unwrap(), 0.005);
        assert_eq!(parse_in(Unit::Bytes, "300MB").unwrap(), 300e6);
        assert_eq!(parse_in(Unit::Bytes, "1MiB").unwrap(), 1048576.0);
        assert!(parse_in(Unit::Bytes, "300 parsecs").is_err());
        assert!(parse_in(Unit::Seconds, "soon")
            .unwrap_err()
            .0
            .contains("150ms"));
        assert!(parse_duration("-3").is_err());
        assert!(parse_duration("1e30").is_err(), "no panic on huge numbers");
        assert!(parse_duration("NaN").is_err());
        assert!(parse_duration("400d").unwrap_err().0.contains("366d"));
    }
}
