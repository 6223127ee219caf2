//! `andon check` and `andon rules` as a user runs them: exit codes, messages with
//! file:line:col, and rules that promtool accepts.

use std::process::Command;

fn andon(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_andon"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("andon runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_file(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("andon-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

const SHIPPED: &str = include_str!("../policies/erlmcp-tps.yaml");

/// The shipped policy with one edit.
fn edited(from: &str, to: &str) -> String {
    assert!(SHIPPED.contains(from), "the shipped policy has `{from}`");
    SHIPPED.replacen(from, to, 1)
}

#[test]
fn shipped_policy_is_valid_with_one_summary_line() {
    let (code, out, err) = andon(&["check", "policies/erlmcp-tps.yaml"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("erlmcp [8..20]"), "{out}");
}

/// Each bad edit must give exit 2 and a message naming file:line:col, the field, and
/// words from what is allowed.
#[test]
fn invalid_policies_are_reported_with_position_field_and_allowed_values() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (from, to, field, words in the message)
        (
            "    max_replicas: 20",
            "    max_replicas: 20\n    colour: blue",
            "",
            "unknown field `colour`",
        ),
        (
            "    min_replicas: 8",
            "    min_replicas: eight",
            "services[0].min_replicas",
            "whole number",
        ),
        (
            "    min_replicas: 8",
            "    min_replicas: -1",
            "services[0].min_replicas",
            "from 0 to 10000",
        ),
        (
            "    min_replicas: 8",
            "    min_replicas: 30",
            "services[0].min_replicas",
            "min_replicas ≤ max_replicas",
        ),
        (
            "      p95_latency: 250ms",
            "      p95_latency: 100ms",
            "tiers.red.enter.p95_latency",
            "yellow < red < emergency",
        ),
        (
            "    connections: 40",
            "    connections: 0",
            "capacity.per_replica.connections",
            "out of range; allowed: a number > 0",
        ),
        (
            "    for: 30s",
            "    for: thirty seconds",
            "tiers.yellow.for",
            "30s",
        ),
        (
            "    query: sum by (service) (erlmcp_connections_total{service=\"$service\"})",
            "    query: \"\"",
            "signals.connections.query",
            "empty",
        ),
        (
            "      cpu: 0.8\n",
            "      cpu: -0.8\n",
            "tiers.emergency.enter.cpu",
            "≥ 0",
        ),
        (
            "    unit: seconds",
            "    unit: furlongs",
            "signals.p95_latency.unit",
            "allowed: seconds, milliseconds",
        ),
        (
            "  target_utilization: 0.8",
            "  target_utilization: 0",
            "capacity.target_utilization",
            "greater than 0",
        ),
        (
            "      floor: max",
            "      floor: lots",
            "tiers.emergency.action.floor",
            "1.5x",
        ),
    ];
    for (i, (from, to, field, words)) in cases.iter().enumerate() {
        let path = temp_file(&format!("bad{i}.yaml"), &edited(from, to));
        let (code, out, err) = andon(&["check", &path]);
        assert_eq!(code, 2, "case {i} ({to}) must fail: {out}{err}");
        let line = err
            .lines()
            .find(|l| l.contains(words))
            .unwrap_or_else(|| panic!("case {i}: no `{words}` in:\n{err}"));
        let prefix = format!("{path}:");
        assert!(
            line.starts_with(&prefix),
            "case {i}: no file:line:col in `{line}`"
        );
        let pos: Vec<&str> = line[prefix.len()..].splitn(3, ':').collect();
        assert!(
            pos[0].parse::<usize>().is_ok() && pos[1].parse::<usize>().is_ok(),
            "case {i}: `{line}`"
        );
        assert!(
            line.contains(field),
            "case {i}: field `{field}` not in `{line}`"
        );
    }
}

#[test]
fn the_error_points_at_the_right_line() {
    let text = edited("      p95_latency: 500ms", "      p95_latency: 200ms");
    let expected_line = text
        .lines()
        .position(|l| l == "      p95_latency: 200ms")
        .unwrap()
        + 1;
    let path = temp_file("line.yaml", &text);
    let (code, _, err) = andon(&["check", &path]);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!(
            "{path}:{expected_line}:7: tiers.emergency.enter.p95_latency"
        )),
        "{err}"
    );
}

#[test]
fn several_files_each_get_their_line() {
    let bad = temp_file("several.yaml", "services: []\n");
    let (code, out, err) = andon(&[
        "check",
        "policies/erlmcp-tps.yaml",
        &bad,
        "policies/erlmcp-tps.yaml",
    ]);
    assert_eq!(code, 2);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(err.contains(&bad), "{err}");
}

#[test]
fn missing_file_and_bad_usage_exit_2() {
    let (code, _, err) = andon(&["check", "/nonexistent/policy.yaml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/policy.yaml:1:1: cannot read"),
        "{err}"
    );
    let (code, _, _) = andon(&["simulate"]);
    assert_eq!(code, 2, "clap usage errors exit 2");
    let (code, _, err) = andon(&["simulate", "chaos/baseline.yaml", "--interval", "0s"]);
    assert_eq!(code, 2, "{err}");
}

/// Simulate's options are checked before the run, not rounded or found wrong after it: an
/// interval that is no whole number of ticks was rounded to one (1.5 s at a 1 s tick
/// decided every 2 s), a 1 ms interval took minutes on a 2-minute scenario, and a
/// `--report` path that cannot take the report failed after the whole run (its timeline
/// printed, its verdict hidden behind exit 2, a partial report left behind).
/// A Prometheus URL this build cannot reach is refused at the start (exit 2, what is
/// allowed): `ftp://x` and `https://…` (no TLS here) were taken, and every query failed in
/// turn, or a `run` went on deciding nothing, tick after tick.
#[test]
fn a_prometheus_url_that_cannot_work_is_refused_at_the_start() {
    for (url, says) in [
        ("ftp://127.0.0.1:9090", "the scheme is `ftp`"),
        ("https://127.0.0.1:9090", "https is not built in"),
        ("127.0.0.1:9090", "no scheme"),
        ("http://", "not a URL"),
        ("http://127.0.0.1:9090/?a=1", "no query or fragment"),
        ("not a url", "no scheme"),
        ("http://user:pw@127.0.0.1:9090", "credentials in the URL"),
    ] {
        let (code, out, err) = andon(&["check", "policies/erlmcp-tps.yaml", "--prometheus", url]);
        assert_eq!(code, 2, "{url}: {err}");
        assert!(err.contains(says), "{url}: {err}");
        assert!(err.contains("allowed: http://HOST"), "{url}: {err}");
        assert!(out.is_empty(), "{url}: queried anyway: {out}");
    }
    // `run` too, before it touches Docker or listens (bounded: the old code ran on).
    let out = Command::new("timeout")
        .args(["20", env!("CARGO_BIN_EXE_andon"), "run", "--dry-run"])
        .args([
            "--policy",
            "policies/erlmcp-tps.yaml",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--prometheus", "https://127.0.0.1:9090"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("andon runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("https is not built in"), "{err}");
}

#[test]
fn simulate_refuses_options_it_cannot_honour_before_the_run() {
    let sim = |extra: &[&str]| {
        let mut args = vec!["simulate", "chaos/baseline.yaml"];
        args.extend_from_slice(extra);
        andon(&args)
    };
    let (code, out, err) = sim(&["--tick", "1s", "--interval", "1500ms"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("not a whole number of --tick 1s; allowed: a multiple of the tick"),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");
    let (code, _, err) = sim(&["--tick", "1ms", "--interval", "1ms"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("allowed: at least 100ms"), "{err}");
    let dir = std::env::temp_dir().join(format!("andon-report-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("chart.svg")).unwrap();
    let (code, out, err) = sim(&["--report", dir.to_str().unwrap()]);
    let written = dir.join("report.json").exists();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("chart.svg is a directory"), "{err}");
    assert!(out.is_empty() && !written, "ran before refusing: {out}");
}

#[test]
fn rules_have_one_alert_per_service_and_tier_with_the_policy_thresholds() {
    let (code, out, err) = andon(&["rules", "policies/erlmcp-tps.yaml"]);
    assert_eq!(code, 0, "{err}");
    for (alert, sev, for_, threshold) in [
        ("AndonYellow", "yellow", "30s", "> 0.15)"),
        ("AndonRed", "red", "15s", "> 0.25)"),
        ("AndonEmergency", "emergency", "10s", "> 0.5)"),
    ] {
        let start = out
            .find(&format!("- alert: {alert}"))
            .unwrap_or_else(|| panic!("{alert} missing"));
        let block = &out[start..];
        let block = &block[..block[1..].find("- alert:").map_or(block.len(), |i| i + 1)];
        assert!(block.contains(&format!("severity: {sev}")), "{block}");
        assert!(block.contains(&format!("for: {for_}")), "{block}");
        assert!(
            block.contains(threshold),
            "{alert} lacks the p95 threshold {threshold}"
        );
        assert!(
            block.contains("service=\"erlmcp\""),
            "the placeholder is filled in"
        );
    }
    assert_eq!(out.matches("- alert:").count(), 3);
}

#[test]
fn promtool_accepts_the_rules() {
    // promtool comes with Debian's `prometheus` package; .ci/run installs it.
    let (code, out, _) = andon(&["rules", "policies/erlmcp-tps.yaml"]);
    assert_eq!(code, 0);
    let path = temp_file("rules.yml", &out);
    let check = Command::new("promtool")
        .args(["check", "rules", &path])
        .output()
        .expect("promtool is installed (apt-get install prometheus)");
    let said = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(
        check.status.success(),
        "promtool rejected the rules:\n{said}"
    );
    assert!(said.contains("SUCCESS: 3 rules found"), "{said}");
}

#[test]
fn promtool_unit_test_fires_with_for_holds_with_hysteresis_and_cools_down() {
    // The generated rule fires after `for` (30 s for yellow) and not before, and stays
    // firing through the hysteresis band: the same timing as the core's tier tracking.
    let (_, rules, _) = andon(&["rules", "policies/erlmcp-tps.yaml"]);
    let rules_path = temp_file("unit-rules.yml", &rules);
    // promtool compares annotations too: take the yellow alert's own.
    let annotation = |key: &str| {
        rules
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(&format!("{key}: "))
                    .map(str::to_string)
            })
            .expect("annotation present")
    };
    let exp = format!(
        "exp_labels: {{severity: yellow, tier: yellow, service: erlmcp}}\n            exp_annotations: {{summary: {}, description: {}}}",
        annotation("summary"),
        annotation("description")
    );
    // 100 req per 10 s, all between 0.1 and 0.2 s for 2 minutes (p95 195 ms, above the
    // 150 ms entry), then between 0.05 and 0.1 s until 300 s (p95 97.5 ms: under the
    // entry, above the 80 ms exit level: hysteresis holds the alert), then under 0.05 s
    // (p95 47.5 ms, calm from ~360 s): the 2-minute cool-down (keep_firing_for) holds it
    // until ~480 s. Rates need two samples, so the condition first holds at 10 s.
    let test = format!(
        r#"rule_files: ["{rules_path}"]
evaluation_interval: 10s
tests:
  - interval: 10s
    input_series:
      - series: 'erlmcp_request_duration_seconds_bucket{{service="erlmcp", le="0.05"}}'
        values: '0x30 0+100x40'
      - series: 'erlmcp_request_duration_seconds_bucket{{service="erlmcp", le="0.1"}}'
        values: '0x12 100+100x58'
      - series: 'erlmcp_request_duration_seconds_bucket{{service="erlmcp", le="0.2"}}'
        values: '0+100x70'
      - series: 'erlmcp_request_duration_seconds_bucket{{service="erlmcp", le="+Inf"}}'
        values: '0+100x70'
    alert_rule_test:
      - eval_time: 30s
        alertname: AndonYellow
        exp_alerts: []
      - eval_time: 40s
        alertname: AndonYellow
        exp_alerts:
          - {exp}
      - eval_time: 300s
        alertname: AndonYellow
        exp_alerts:
          - {exp}
      - eval_time: 450s
        alertname: AndonYellow
        exp_alerts:
          - {exp}
      - eval_time: 520s
        alertname: AndonYellow
        exp_alerts: []
"#
    );
    promtool_test(&temp_file("unit-test.yml", &test));
}

#[test]
fn shipped_alert_rules_are_generated_from_the_shipped_policy() {
    let (code, out, _) = andon(&["rules", "policies/erlmcp-tps.yaml"]);
    assert_eq!(code, 0);
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/alerts.yml"))
            .unwrap();
    assert_eq!(shipped, out, "manifests/alerts.yml is stale: andon rules policies/erlmcp-tps.yaml > manifests/alerts.yml");
}

#[test]
fn grafana_dashboard_queries_parse_and_name_real_metrics() {
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/manifests/grafana-dashboard.json"
        ))
        .unwrap(),
    )
    .expect("the dashboard is JSON");
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(|e| e.replace("$service", ".*")))
        .collect();
    assert!(exprs.len() >= 9);
    // Every metric the dashboard names is one andon or the stand-in exports.
    // Families appear once they have a child: record one decision, one error of each kind.
    let m = andon::record::metrics::Metrics::new();
    let p = andon::policy::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/erlmcp-tps.yaml"
    ))
    .unwrap();
    let mut st = andon::core::CoreState::default();
    let obs =
        andon::core::Observations::values(0, &[(andon::policy::SignalKind::Throughput, 100.0)]);
    let d = andon::core::decide_in_place(
        &p,
        &p.services[0],
        &obs,
        andon::core::Replicas::steady(8),
        &mut st,
        0,
    );
    m.record("erlmcp", &d, 8, 8);
    m.source_error("prometheus");
    m.actuator_error("scale");
    let standin = andon::standin::ErlmcpMetrics::new();
    standin.duration.observe(0.1);
    standin.cpu.set(1.0);
    standin.run_queue.set(1);
    let exported = m.encode() + &standin.encode();
    for e in &exprs {
        for name in e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("andon_") || w.starts_with("erlmcp_"))
        {
            let base = ["_bucket", "_sum", "_count", "_total"]
                .iter()
                .fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
            let typed = |n: &str| exported.contains(&format!("# TYPE {n} "));
            assert!(
                typed(name) || typed(base),
                "the dashboard queries `{name}`, which nothing exports"
            );
        }
    }
    // And every query parses: promtool checks them as recording rules.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        rules += &format!(
            "      - record: dashboard_{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        );
    }
    let path = temp_file("dashboard-rules.yml", &rules);
    let out = Command::new("promtool")
        .args(["check", "rules", &path])
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn shipped_p95_query_reads_0_only_when_idle_and_missing_when_the_histogram_is() {
    // Before: `… or sum(rate(requests)) * 0` answered 0 ms whenever requests flowed and the
    // histogram was missing, a good-looking reading that allowed a scale-down. Now the
    // `or` branch answers only where the request rate is 0. Evaluated by promtool.
    let p = andon::policy::load("policies/erlmcp-tps.yaml").unwrap();
    let q = p
        .signal(andon::policy::SignalKind::P95Latency)
        .unwrap()
        .query_for("erlmcp")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let q_idle = q.replace("erlmcp\"", "idle\"");
    let test = format!(
        r#"rule_files: []
evaluation_interval: 10s
tests:
  - interval: 10s
    input_series:
      # erlmcp: requests flow, no histogram is exported.
      - series: 'erlmcp_requests_total{{service="erlmcp"}}'
        values: '0+100x20'
      # idle: a request counter that does not move.
      - series: 'erlmcp_requests_total{{service="idle"}}'
        values: '5x20'
    promql_expr_test:
      - expr: '{q}'
        eval_time: 120s
        exp_samples: []
      - expr: '{q_idle}'
        eval_time: 120s
        exp_samples:
          - labels: '{{service="idle"}}'
            value: 0
"#
    );
    promtool_test(&temp_file("p95-query-test.yml", &test));
}

/// Runs `promtool test rules` on a test file; its words on failure.
fn promtool_test(path: &str) {
    let run = Command::new("promtool")
        .args(["test", "rules", path])
        .output()
        .expect("promtool");
    let said =
        String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{said}");
}
