//! History for the seasonal forecast: each demand signal's own query, as a range query
//! over `behavior.predict.seasonal.history` at its `step`. Read at start and then now and
//! then (see [`HistoryClock`]); a failure leaves the seasonal forecast off with the reason,
//! and the reactive path and the trend go on as before.

use super::prometheus::{describe, PromSource};
use crate::policy::{Policy, SignalKind};
use prometheus_http_query::response::Data;

/// One demand signal's history (ms since the epoch, value in the canonical unit), or why
/// there is none.
pub type SignalHistory = (SignalKind, Result<Vec<(i64, f64)>, String>);

/// A history read may take this long (it runs beside the ticks, not in them).
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Read history again this often after a success: a day's profile moves slowly.
pub const REFRESH_MS: u64 = 3_600_000;
/// ... and this soon after a failure.
pub const RETRY_MS: u64 = 300_000;

/// When each service's history is due.
#[derive(Debug, Default, Clone)]
pub struct HistoryClock {
    due_ms: std::collections::HashMap<String, u64>,
}

impl HistoryClock {
    pub fn due(&self, service: &str, now_ms: u64) -> bool {
        self.due_ms.get(service).is_none_or(|d| now_ms >= *d)
    }

    /// After a read: the next one in an hour when every signal came back, else sooner.
    pub fn read(&mut self, service: &str, now_ms: u64, all_ok: bool) {
        let wait = if all_ok { REFRESH_MS } else { RETRY_MS };
        self.due_ms.insert(service.to_string(), now_ms + wait);
    }
}

impl PromSource {
    /// Each demand signal's history for one service, ending at `now_ms`.
    pub async fn history(&self, policy: &Policy, service: &str, now_ms: u64) -> Vec<SignalHistory> {
        let Some(params) = policy.behavior.predict.as_ref().and_then(|p| p.seasonal) else {
            return Vec::new();
        };
        let end = (now_ms / 1000) as i64;
        let start = end - params.history.as_secs() as i64;
        let step = params.step.as_secs_f64().max(1.0);
        let mut out = Vec::new();
        for (kind, _) in &policy.capacity.per_replica {
            let Some(signal) = policy.signal(*kind) else {
                continue;
            };
            let q = signal.query_for(service);
            let factor = signal.unit.canonical().1;
            let res = self.client.query_range(&q, start, end, step).get().await;
            let series = match res {
                Err(e) => Err(format!("history query failed: {}", describe(&e))),
                Ok(r) => match r.data() {
                    Data::Matrix(m) if m.is_empty() => {
                        Err("history query returned no series".to_string())
                    }
                    Data::Matrix(m) => combine(m, signal.combine, factor),
                    _ => Err("history query did not return a range vector".to_string()),
                },
            };
            out.push((*kind, series));
        }
        out
    }
}

/// One series as it is; several summed by the signal's `combine`, or refused.
fn combine(
    m: &[prometheus_http_query::response::RangeVector],
    how: Option<crate::policy::Combine>,
    factor: f64,
) -> Result<Vec<(i64, f64)>, String> {
    let points = |rv: &prometheus_http_query::response::RangeVector| -> Vec<(i64, f64)> {
        rv.samples()
            .iter()
            .map(|s| ((s.timestamp() * 1000.0) as i64, s.value() * factor))
            .collect()
    };
    match (m, how) {
        ([one], _) => Ok(points(one)),
        (_, Some(c)) => {
            let mut by_time: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
            for rv in m {
                for (t, v) in points(rv) {
                    by_time.entry(t).or_default().push(v);
                }
            }
            Ok(by_time.into_iter().map(|(t, v)| (t, c.apply(&v))).collect())
        }
        (_, None) => Err(format!(
            "history has {} series for the service; allowed: one, or the signal's `combine`",
            m.len()
        )),
    }
}
