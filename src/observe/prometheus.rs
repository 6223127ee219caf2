//! Reading the policy's signals from Prometheus: one instant query per signal per tick,
//! for all services at once where the query allows it (`service="$service"` becomes
//! `service=~"a|b"`, grouped by the `service` label), one per service otherwise.
//!
//! Every reading is classified for the core: a value (converted to the signal's canonical
//! unit), missing (no series for the service: never read as 0), several series where one
//! is expected (bad data, unless the signal says how to `combine` them), or an error. When
//! Prometheus cannot be reached at all, the whole tick fails and Jidoka counts it.
//!
//! An instant query's samples carry the *evaluation* time, not the time of the data, so a
//! Prometheus whose scrapes stopped still answers "fresh" values. With `jidoka.targets`
//! the source also asks `timestamp(T) and T == 1` (T = the targets query): one series per
//! target that is up, valued at its last scrape. Per service it counts the targets scraped
//! within `stale_after` (compared with the running tasks by the core), and dates every
//! reading no later than its newest target's scrape, so `stale_after` means what it says.

use crate::core::{Observations, Reading};
use crate::policy::{Policy, Signal, SERVICE_PLACEHOLDER};
use prometheus_http_query::response::Data;
use prometheus_http_query::{Client, Error as PromError};
use std::collections::HashMap;
use std::time::Duration;
use tokio::task::JoinSet;

/// How to authenticate to Prometheus.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Bearer(String),
    Basic {
        user: String,
        password: String,
    },
}

impl Auth {
    /// Reads a bearer token file (the whole file, trimmed) or a basic-auth file
    /// (`user:password`). The error names the file and what it should hold.
    pub fn from_files(bearer: Option<&str>, basic: Option<&str>) -> crate::Result<Auth> {
        use crate::Error::Config;
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .map_err(|e| Config(format!("{p}: {e}")))
        };
        match (bearer, basic) {
            (Some(_), Some(_)) => Err(Config(
                "give one of --prometheus-bearer-token-file and --prometheus-basic-auth-file"
                    .into(),
            )),
            (Some(p), None) => {
                let t = read(p)?;
                if t.is_empty() {
                    return Err(Config(format!("{p}: the token file is empty")));
                }
                Ok(Auth::Bearer(t))
            }
            (None, Some(p)) => {
                let t = read(p)?;
                match t.split_once(':') {
                    Some((u, pw)) if !u.is_empty() => Ok(Auth::Basic {
                        user: u.to_string(),
                        password: pw.to_string(),
                    }),
                    _ => Err(Config(format!("{p}: expected `user:password`"))),
                }
            }
            (None, None) => Ok(Auth::None),
        }
    }
}

#[derive(Clone)]
pub struct PromSource {
    pub(super) client: Client,
    url: String,
}

/// The result of one signal's query: per service, or an error for all.
type SignalResult = (usize, SignalRead);

/// One signal's readings per service, or why the query failed.
type SignalRead = Result<HashMap<String, Reading>, QueryFailed>;

/// A query that failed: the words for the reading, and whether Prometheus could not be
/// reached at all (as opposed to answering with an error).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
struct QueryFailed {
    message: String,
    unreachable: bool,
}

impl From<PromError> for QueryFailed {
    fn from(e: PromError) -> Self {
        QueryFailed {
            message: describe(&e),
            unreachable: is_unreachable(&e),
        }
    }
}

impl PromSource {
    /// A client with a request timeout and plain http (no TLS, so no CA files needed).
    pub fn new(url: &str, timeout: Duration, auth: &Auth) -> crate::Result<PromSource> {
        use crate::Error::{Config, Environment};
        let mut headers = reqwest::header::HeaderMap::new();
        let value = match auth {
            Auth::None => None,
            Auth::Bearer(t) => Some(format!("Bearer {t}")),
            Auth::Basic { user, password } => {
                use base64::Engine as _;
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                Some(format!("Basic {token}"))
            }
        };
        if let Some(v) = value {
            let mut hv = reqwest::header::HeaderValue::from_str(&v)
                .map_err(|e| Config(format!("bad credentials: {e}")))?;
            hv.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, hv);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .default_headers(headers)
            .no_proxy()
            .build()
            .map_err(|e| Environment(format!("cannot build the HTTP client: {e}")))?;
        let client =
            Client::from(http, url).map_err(|e| Config(format!("--prometheus {url}: {e}")))?;
        Ok(PromSource {
            client,
            url: url.to_string(),
        })
    }

    /// Reads every signal for every service; returns observations per service.
    pub async fn observe(
        &self,
        policy: &Policy,
        services: &[String],
    ) -> HashMap<String, Observations> {
        // The signals and the targets go out together: the targets add no round trip.
        let targets = async {
            match &policy.targets {
                Some(q) => Some(query_targets(&self.client, q, services).await),
                None => None,
            }
        };
        let ((per_signal, unreachable, last_error), targets) =
            tokio::join!(self.read_signals(policy, services), targets);
        let source_error = (unreachable == per_signal.len() && unreachable > 0)
            .then(|| format!("Prometheus at {}: {last_error}", self.url));
        let targets = targets.filter(|_| source_error.is_none());
        let now = crate::record::server::now_ms();
        let stale_ms = policy.jidoka.stale_after.as_millis() as u64;
        services
            .iter()
            .map(|name| {
                let reading = |r: &Option<SignalRead>| match r {
                    Some(Ok(m)) => match m.get(name).cloned() {
                        // Dated no later than the newest scrape of its targets.
                        Some(Reading::Value { value, at_ms }) => Reading::Value {
                            value,
                            at_ms: match targets.as_ref().map(|t| t.get(name)) {
                                Some(Some(t)) => at_ms.min(t.newest_ms),
                                _ => at_ms,
                            },
                        },
                        Some(other) => other,
                        None => Reading::Missing,
                    },
                    Some(Err(e)) => Reading::Error {
                        message: e.message.clone(),
                    },
                    None => Reading::Error {
                        message: "query task failed".into(),
                    },
                };
                let readings = policy
                    .signals
                    .iter()
                    .zip(per_signal.iter())
                    .map(|(s, r)| (s.kind, reading(r)))
                    .collect();
                let fast = policy
                    .panic_fast
                    .as_ref()
                    .and(per_signal.get(policy.signals.len()))
                    .map(reading);
                (
                    name.clone(),
                    Observations {
                        fast,
                        seasonal: Vec::new(),
                        readings,
                        source_error: source_error.clone(),
                        targets: targets
                            .as_ref()
                            .map(|t| t.get(name).map_or(0, |t| t.fresh_within(now, stale_ms))),
                    },
                )
            })
            .collect()
    }

    /// Every signal's query at once: per signal its readings or its failure, how many
    /// failed because Prometheus could not be reached, and the last failure's words.
    async fn read_signals(
        &self,
        policy: &Policy,
        services: &[String],
    ) -> (Vec<Option<SignalRead>>, usize, String) {
        let mut set: JoinSet<SignalResult> = JoinSet::new();
        // The fast panic signal, if any, goes out with the others, last.
        let all: Vec<&Signal> = policy.signals.iter().chain(&policy.panic_fast).collect();
        for (i, signal) in all.iter().enumerate() {
            let (client, signal, services) =
                (self.client.clone(), (*signal).clone(), services.to_vec());
            set.spawn(async move { (i, query_signal(&client, &signal, &services).await) });
        }
        let mut per_signal: Vec<Option<SignalRead>> = vec![None; all.len()];
        let mut unreachable = 0usize;
        let mut last_error = String::new();
        while let Some(joined) = set.join_next().await {
            let Ok((i, r)) = joined else {
                continue;
            };
            if let Err(e) = &r {
                last_error = e.message.clone();
                if e.unreachable {
                    unreachable += 1;
                }
            }
            per_signal[i] = Some(r);
        }
        (per_signal, unreachable, last_error)
    }

    /// Which of these metric names have any series at all in Prometheus.
    pub async fn existing_metrics(&self, names: &[String]) -> crate::Result<Vec<String>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let alternatives: Vec<String> = names.iter().map(|n| regex_escape(n)).collect();
        let q = format!(
            "group by (__name__) ({{__name__=~\"{}\"}})",
            alternatives.join("|")
        );
        let samples = run(&self.client, &q)
            .await
            .map_err(|e| crate::Error::Runtime(describe(&e)))?;
        Ok(samples
            .into_iter()
            .filter_map(|(labels, _, _)| labels.get("__name__").cloned())
            .collect())
    }
}

/// Runs one signal's query (grouped when possible). The flag says Prometheus could not
/// be reached (as opposed to answering with an error).
async fn query_signal(client: &Client, signal: &Signal, services: &[String]) -> SignalRead {
    let factor = signal.unit.canonical().1;
    if let Some(q) = grouped(&signal.query, services).filter(|_| services.len() > 1) {
        match run(client, &q).await {
            Ok(samples) if samples.is_empty() => return Ok(HashMap::new()),
            Ok(samples) => {
                let mut per: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
                for (labels, value, ts) in samples {
                    if let Some(svc) = labels.get("service") {
                        per.entry(svc.clone()).or_default().push((value, ts));
                    }
                }
                let out: HashMap<String, Reading> = per
                    .into_iter()
                    .map(|(svc, series)| (svc, reading(signal, factor, &series)))
                    .collect();
                // A grouped query that drops the service label cannot be split: ask per service.
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut out = HashMap::new();
    for svc in services {
        match run(client, &signal.query_for(svc)).await {
            Ok(samples) if samples.is_empty() => {}
            Ok(samples) => {
                let series: Vec<(f64, f64)> = samples.iter().map(|(_, v, ts)| (*v, *ts)).collect();
                out.insert(svc.clone(), reading(signal, factor, &series));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// One service's series of one signal as a reading: one series is its value; several are
/// combined as the signal says, or are bad data.
fn reading(signal: &Signal, factor: f64, series: &[(f64, f64)]) -> Reading {
    let at_ms = series
        .iter()
        .map(|(_, ts)| (ts * 1000.0) as u64)
        .min()
        .unwrap_or(0);
    match (series, signal.combine) {
        ([(v, _)], _) => Reading::Value {
            value: v * factor,
            at_ms,
        },
        (_, Some(c)) => {
            let values: Vec<f64> = series.iter().map(|(v, _)| *v).collect();
            Reading::Value {
                value: c.apply(&values) * factor,
                at_ms,
            }
        }
        (_, None) => Reading::Ambiguous {
            series: series.len().min(u32::MAX as usize) as u32,
        },
    }
}

/// One service's scrape targets that are up, by their last scrape time.
#[derive(Debug, Clone, Default)]
struct Targets {
    scraped_ms: Vec<u64>,
    newest_ms: u64,
}

impl Targets {
    fn fresh_within(&self, now: u64, stale_ms: u64) -> u32 {
        self.scraped_ms
            .iter()
            .filter(|t| now.saturating_sub(**t) <= stale_ms)
            .count() as u32
    }
}

/// Runs the targets query, grouped like the signals: per service, the last scrape time of
/// each target that is up. An error leaves every service with no targets counted, which
/// the core reads as a partial view (no scale-down), never as good data.
async fn query_targets(
    client: &Client,
    query: &str,
    services: &[String],
) -> HashMap<String, Targets> {
    let mut out: HashMap<String, Targets> = HashMap::new();
    let queries: Vec<(Option<&String>, String)> = match grouped(query, services) {
        Some(q) => vec![(None, q)],
        None => services
            .iter()
            .map(|s| (Some(s), query.replace(SERVICE_PLACEHOLDER, s)))
            .collect(),
    };
    for (svc, q) in queries {
        let q = format!("timestamp({q}) and ({q}) == 1");
        let Ok(samples) = run(client, &q).await else {
            continue;
        };
        for (labels, value, _) in samples {
            let Some(name) = svc.or_else(|| labels.get("service")) else {
                continue;
            };
            let t = out.entry(name.clone()).or_default();
            let ms = (value * 1000.0) as u64;
            t.scraped_ms.push(ms);
            t.newest_ms = t.newest_ms.max(ms);
        }
    }
    out
}

impl PromSource {
    /// Load per task, per service: the policy's `spread.query` (one series per task, by
    /// its `task` label). Series without a `task` label are left out; a failed query gives
    /// nothing (the per-node view then shows no load, and no decision reads it).
    pub async fn spread(
        &self,
        query: &str,
        services: &[String],
    ) -> HashMap<String, HashMap<String, f64>> {
        // One query per service, never grouped: `sum by (task)` drops the `service`
        // label that would split a grouped answer (the live test caught it). All at once:
        // with Prometheus down, a tick waits one timeout, not one per service.
        let answers = futures::future::join_all(services.iter().map(|svc| async move {
            let q = query.replace(SERVICE_PLACEHOLDER, svc);
            (svc, run(&self.client, &q).await)
        }))
        .await;
        let mut out: HashMap<String, HashMap<String, f64>> = HashMap::new();
        for (svc, answer) in answers {
            let samples = match answer {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %describe(&e), "spread query failed");
                    continue;
                }
            };
            let per_task = out.entry(svc.clone()).or_default();
            for (labels, value, _) in samples {
                if let (Some(task), true) = (labels.get("task"), value.is_finite()) {
                    *per_task.entry(task.clone()).or_default() += value;
                }
            }
        }
        out
    }
}

/// The query for all services at once, where it selects the service as
/// `service="$service"`: that becomes `service=~"a|b"`, and the `service` label splits the
/// answer. `None` when the query cannot be grouped.
fn grouped(query: &str, services: &[String]) -> Option<String> {
    let form = format!("=\"{SERVICE_PLACEHOLDER}\"");
    query.contains(&form).then(|| {
        let alternatives: Vec<String> = services.iter().map(|s| regex_escape(s)).collect();
        query.replace(&form, &format!("=~\"{}\"", alternatives.join("|")))
    })
}

type Sample = (HashMap<String, String>, f64, f64);

async fn run(client: &Client, q: &str) -> Result<Vec<Sample>, PromError> {
    let res = client.query(q).get().await?;
    Ok(match res.data() {
        Data::Vector(v) => v
            .iter()
            .map(|iv| {
                (
                    iv.metric().clone(),
                    iv.sample().value(),
                    iv.sample().timestamp(),
                )
            })
            .collect(),
        Data::Scalar(s) => vec![(HashMap::new(), s.value(), s.timestamp())],
        Data::Matrix(_) => Vec::new(),
    })
}

fn is_unreachable(e: &PromError) -> bool {
    matches!(e, PromError::Client(_))
}

pub(super) fn describe(e: &PromError) -> String {
    match e {
        PromError::Prometheus(p) => format!(
            "Prometheus rejected the query ({}): {}",
            p.error_type(),
            p.message()
        ),
        PromError::Client(c) => match c.inner() {
            Some(r) if r.is_timeout() => "timed out".to_string(),
            Some(r) if r.is_connect() => "connection refused".to_string(),
            _ => c.to_string(),
        },
        other => other.to_string(),
    }
}

/// Escapes a service name for a PromQL regex (names may hold '.').
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_escaped_for_regex() {
        assert_eq!(regex_escape("erlmcp.v2"), "erlmcp\\\\.v2");
    }
}
