//! Predictive Heijunka against a real Prometheus: a week of history backfilled with
//! promtool, a daily peak in it, and `andon run --dry-run` asking for the peak's replicas
//! before the peak's time comes today.

use super::*;

const DAY_S: i64 = 86_400;

/// Seven days of a gauge at `night` with a one-hour `peak` starting at `peak_at` (epoch
/// seconds, today) on each earlier day, one sample a minute, in OpenMetrics.
fn week_of_peaks(service: &str, peak_at: i64, night: f64, peak: f64) -> String {
    let mut s = String::from("# TYPE andontest_signal gauge\n");
    // From 7 days before to 2 hours ago: the head block (the live scrapes) stays clear.
    let (start, end) = (peak_at - 7 * DAY_S - 3600, peak_at - 2 * 3600);
    let mut t = start - start % 60;
    while t <= end {
        let into_day = (t - peak_at).rem_euclid(DAY_S);
        let v = if into_day < 3600 { peak } else { night };
        s += &format!("andontest_signal{{service=\"{service}\",signal=\"rps\"}} {v} {t}\n");
        t += 60;
    }
    s + "# EOF\n"
}

#[test]
#[ignore = "needs the local Swarm and Prometheus: scripts/test.sh runs it"]
fn a_recorded_daily_peak_is_pre_scaled_before_it_starts() {
    let name = "andon-it-predict";
    let dir = tmpdir("predict");
    let sig = Signals::start();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Every day of the last week, the load rose from 150 to 900 msg/s at this time of
    // day, four minutes from now. Today it is still 150.
    let peak_at = now + 240;
    let history = week_of_peaks(name, peak_at, 150.0, 900.0);
    let prom = Prom::start_with_history("predict", sig.addr, Some(&history));
    let svc = Service::create(name, 2, true);
    sig.set(name, "p95", 0.05);
    sig.set(name, "rps", 150.0);
    prom.wait_value(name, "rps", 150.0);
    // Capacity 100 msg/s per replica: the night needs 2, the peak 9. A 10 s horizon and a
    // 5 m lead: the peak is inside the seasonal forecast's reach from the first tick.
    let predict = "  predict:\n    horizon: 10s\n    trend: off\n    seasonal: {period: 1d, history: 7d, step: 1m, lead: 5m}\n";
    let behavior = FAST_BEHAVIOR.replace("behavior:\n", &format!("behavior:\n{predict}"));
    let policy = write_policy(&dir, &policy(&[(name, 2, 12)], &behavior));
    let ctl = Controller::start(&policy, &prom.url(), &["--dry-run"], dir.join("andon.log"));
    let st = wait_for(
        Duration::from_secs(30),
        "the dry run to ask for the peak's replicas",
        || {
            let st = ctl.service_status(name);
            (st["desired"] == 9).then_some(st)
        },
    );
    let decided_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        decided_at < peak_at,
        "asked for the peak's replicas {} s before it, not after",
        peak_at - decided_at
    );
    let reasons = st["last_decision"]["reasons"].to_string();
    assert!(reasons.contains("\"forecast\""), "{reasons}");
    assert!(reasons.contains("forecast (seasonal)"), "{reasons}");
    let f = &st["forecasts"][0];
    assert_eq!(f["signal"], "throughput", "{st:#}");
    assert!(
        (f["seasonal"].as_f64().unwrap() - 900.0).abs() < 1.0,
        "the peak as recorded: {f:#}"
    );
    assert!(
        f["seasonal_error"].as_f64().unwrap() < 0.01,
        "the same peak every day backtests clean: {f:#}"
    );
    // The reading itself asks for 2: without the forecast, nothing would move.
    assert_eq!(st["signals"][1]["value"], 150.0, "{st:#}");
    let (_, metrics) = http_get(&ctl.listen, "/metrics").unwrap();
    assert!(
        metrics.contains(&format!(
            "andon_forecast{{service=\"{name}\",signal=\"throughput\",forecaster=\"seasonal\"}} 900"
        )),
        "{metrics}"
    );
    assert!(ctl
        .logs()
        .contains("read history for the seasonal forecast"));
    // A dry run: nothing written.
    assert_eq!(svc.replicas(), 2);
}

#[test]
#[ignore = "needs the local Swarm and Prometheus: scripts/test.sh runs it"]
fn without_history_the_seasonal_forecast_is_off_and_says_why() {
    let name = "andon-it-nohistory";
    let dir = tmpdir("nohistory");
    let sig = Signals::start();
    let prom = Prom::start("nohistory", sig.addr);
    let svc = Service::create(name, 2, true);
    sig.set(name, "p95", 0.05);
    sig.set(name, "rps", 150.0);
    prom.wait_value(name, "rps", 150.0);
    let behavior = FAST_BEHAVIOR.replace(
        "behavior:\n",
        "behavior:\n  predict: {horizon: 10s, seasonal: {step: 1m}}\n",
    );
    let policy = write_policy(&dir, &policy(&[(name, 2, 12)], &behavior));
    let ctl = Controller::start(&policy, &prom.url(), &["--dry-run"], dir.join("andon.log"));
    let st = wait_for(Duration::from_secs(20), "a forecast outlook", || {
        let st = ctl.service_status(name);
        st["forecasts"][0]["notes"].is_array().then_some(st)
    });
    let notes = st["forecasts"][0]["notes"].to_string();
    // A minute of data: the range query answers nothing or too little, either said.
    assert!(
        notes.contains("seasonal: off:") && notes.contains("history"),
        "{notes}"
    );
    assert_eq!(st["desired"], 2, "the reactive path decides: {st:#}");
    drop(svc);
}
