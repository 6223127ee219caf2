//! `andon run` against a real dockerd in Swarm mode and a real Prometheus.
//!
//! Needs the project's local environment: `scripts/test.sh` brings it up (dockerd on its
//! own socket, `swarm init`, the scratch image andon:dev) and runs these with
//! `--ignored`. By hand: `scripts/env.sh up && source /tmp/andon-env/env &&
//! cargo test --test live -- --ignored --test-threads=1`.
//!
//! Each test serves its own signal gauges, runs its own Prometheus (1 s scrapes) and its
//! own stand-in services, so what the controller sees is what the test set.

#[path = "../common/drill.rs"]
mod drill;
mod edge;
mod predict;
mod support;

use std::time::{Duration, Instant};
use support::*;

const NEEDS_ENV: &str = "needs the local Swarm and Prometheus: scripts/test.sh runs it";

fn write_policy(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("policy.yaml");
    std::fs::write(&p, text).unwrap();
    let out = std::process::Command::new(andon_bin())
        .args(["check", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "test policy invalid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    p
}

/// A stand-in task's admission limit, read from its own endpoint.
fn admission_of(svc: &Service) -> Vec<serde_json::Value> {
    let (_, out) = docker(&[
        "service",
        "ps",
        &svc.name,
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Ports}}",
    ]);
    out.lines()
        .filter_map(|l| {
            // "*:30001->8080/tcp,*:30001->8080/tcp"
            let port = l.split("->").next()?.rsplit(':').next()?.to_string();
            let (_, body) = http_get(&format!("127.0.0.1:{port}"), "/admin/admission")?;
            serde_json::from_str(&body).ok()
        })
        .collect()
}

#[test]
#[ignore = "needs the local Swarm and Prometheus: scripts/test.sh runs it"]
fn thresholds_move_real_replicas_and_they_come_back_after_the_window() {
    let _ = NEEDS_ENV;
    let name = "andon-it-scale";
    let dir = tmpdir("scale");
    let sig = Signals::start();
    let prom = Prom::start("scale", sig.addr);
    let svc = Service::create(name, 2, true);
    sig.set(name, "p95", 0.05);
    sig.set(name, "rps", 150.0);
    prom.wait_value(name, "rps", 150.0);
    let policy = write_policy(&dir, &(policy(&[(name, 2, 6)], FAST_BEHAVIOR)));
    let mut ctl = Controller::start(&policy, &prom.url(), &[], dir.join("andon.log"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(svc.replicas(), 2, "steady at what capacity asks");

    // p95 300 ms: yellow and red after `for` (2 s); red's floor is 1.5 × 2 = 3.
    let t0 = Instant::now();
    sig.set(name, "p95", 0.3);
    wait_for(Duration::from_secs(20), "replicas 2 → 3", || {
        (svc.replicas() == 3).then_some(())
    });
    let reacted = t0.elapsed();
    // interval (1 s) + for (2 s) + one tick (1 s), plus the 1 s scrape of the test's Prometheus.
    eprintln!(
        "reaction: {:.1} s from the signal to the replicas",
        reacted.as_secs_f64()
    );
    assert!(reacted <= Duration::from_secs(7), "too slow: {reacted:?}");
    wait_for(Duration::from_secs(15), "the new task to run", || {
        (svc.running() == 3).then_some(())
    });

    let st = ctl.service_status(name);
    assert_eq!(st["tier"], "red", "{st:#}");
    let codes: Vec<&str> = st["last_change"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["code"].as_str())
        .collect();
    assert!(
        codes.contains(&"tier_entered") || codes.contains(&"tier_floor"),
        "{codes:?}"
    );
    let labels = svc.labels();
    assert_eq!(labels["andon.tier"], "red");
    assert_eq!(labels["andon.shed.admit"], "0.9");
    assert!(
        labels[format!("traefik.http.middlewares.andon-shed-{name}.inflightreq.amount")]
            .is_string(),
        "{labels}"
    );
    assert!(
        labels["andon.state"]
            .as_str()
            .is_some_and(|s| s.contains("events")),
        "state persisted: {labels}"
    );
    // The HTTP actuator told every running replica.
    wait_for(
        Duration::from_secs(10),
        "admission 0.9 on every task",
        || {
            let a = admission_of(&svc);
            (a.len() == 3 && a.iter().all(|x| x["admit"] == 0.9)).then_some(())
        },
    );
    let metrics = http_get(&ctl.listen, "/metrics").unwrap().1;
    assert!(
        metrics.contains(&format!("andon_tier{{service=\"{name}\"}} 2")),
        "{metrics}"
    );
    assert!(metrics.contains("andon_reconcile_duration_seconds_bucket"));

    // Calm: red cools down (3 s) inside the scale-down window (8 s), which holds the
    // floor's 3 from the last tick before the calm (a tick, 1 s, may come just before).
    let t1 = Instant::now();
    sig.set(name, "p95", 0.05);
    wait_for(Duration::from_secs(40), "replicas back to 2", || {
        (svc.replicas() == 2).then_some(())
    });
    let back = t1.elapsed();
    eprintln!("back to 2 after {:.1} s", back.as_secs_f64());
    assert!(
        back >= Duration::from_secs(7),
        "the scale-down window must hold: {back:?}"
    );
    // The tier has gone, and shedding is handed back in steps, once per half window (no
    // range in this p95 query: 60 s assumed, so 37.5 s), from red's 0.9 up to three times
    // the demand per replica (150/s over 3, then 2, replicas of 100/s: 1.5, then 2.25),
    // where it ends; with p95 at a third of the goal, ×1.28 a step. Before (issue 8),
    // all at once: no step in between was ever posted.
    let mut seen: Vec<f64> = Vec::new();
    wait_for(
        Duration::from_secs(240),
        "shedding lifted on every task",
        || {
            let a = admission_of(&svc);
            if let Some(x) = a.first().and_then(|x| x["admit"].as_f64()) {
                if seen.last() != Some(&x) {
                    seen.push(x);
                }
            }
            (a.len() == 2 && a.iter().all(|x| x["admit"].is_null())).then_some(())
        },
    );
    eprintln!("shedding handed back through {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[1] > w[0]) && seen.iter().any(|x| *x > 0.9 && *x < 2.25),
        "handed back in growing steps: {seen:?}"
    );
    assert_eq!(svc.labels()["andon.shed.admit"], "none");
    assert_eq!(ctl.terminate(), Some(0), "SIGTERM: finish the tick, exit 0");
}

#[test]
#[ignore = "needs the local Swarm and Prometheus: scripts/test.sh runs it"]
fn dry_run_decides_but_changes_nothing() {
    let name = "andon-it-dry";
    let dir = tmpdir("dry");
    let sig = Signals::start();
    let prom = Prom::start("dry", sig.addr);
    let svc = Service::create(name, 2, true);
    sig.set(name, "p95", 0.3);
    sig.set(name, "rps", 450.0);
    prom.wait_value(name, "rps", 450.0);
    let version = svc.version();
    let policy = write_policy(&dir, &policy(&[(name, 2, 6)], FAST_BEHAVIOR));
    let ctl = Controller::start(&policy, &prom.url(), &["--dry-run"], dir.join("andon.log"));
    let st = wait_for(
        Duration::from_secs(20),
        "the dry run to decide red and 5",
        || {
            let st = ctl.service_status(name);
            (st["tier"] == "red" && st["desired"] == 5).then_some(st)
        },
    );
    assert_eq!(ctl.status()["dry_run"], true);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(svc.replicas(), 2, "{st:#}");
    assert_eq!(svc.version(), version, "no write at all");
    assert!(svc.labels().get("andon.state").is_none());
    assert!(
        admission_of(&svc).iter().all(|a| a["admit"].is_null()),
        "no shedding sent"
    );
    assert!(
        ctl.logs().contains("dry_run=true"),
        "the decision is logged as a dry run"
    );
}

#[test]
#[ignore = "needs the local Swarm and Prometheus: scripts/test.sh runs it"]
fn prometheus_outage_stops_the_line_and_never_scales_down() {
    let name = "andon-it-outage";
    let dir = tmpdir("outage");
    let sig = Signals::start();
    let mut prom = Prom::start("outage", sig.addr);
    let svc = Service::create(name, 2, true);
    sig.set(name, "p95", 0.05);
    sig.set(name, "rps", 450.0);
    prom.wait_value(name, "rps", 450.0);
    let policy = write_policy(&dir, &policy(&[(name, 2, 6)], FAST_BEHAVIOR));
    let ctl = Controller::start(&policy, &prom.url(), &[], dir.join("andon.log"));
    wait_for(Duration::from_secs(20), "replicas 5", || {
        (svc.replicas() == 5).then_some(())
    });

    prom.stop();
    sig.set(name, "rps", 50.0); // would mean 2 replicas, were it seen
    let st = wait_for(Duration::from_secs(15), "the line to stop", || {
        let st = ctl.service_status(name);
        (st["stopped"] == true).then_some(st)
    });
    assert!(
        st["last_change"]["summary"]
            .as_str()
            .unwrap_or("")
            .contains("line stopped"),
        "{st:#}"
    );
    // Longer than the scale-down window (8 s): still no scale-down.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(svc.replicas(), 5, "blind: no scale-down");
    assert_eq!(ctl.service_status(name)["stopped"], true);
    let metrics = http_get(&ctl.listen, "/metrics").unwrap().1;
    assert!(
        metrics.contains(&format!("andon_stopped{{service=\"{name}\"}} 1")),
        "{metrics}"
    );
    assert!(metrics.contains("andon_source_errors_total{source=\"prometheus\"}"));

    prom.restart();
    wait_for(Duration::from_secs(30), "control to resume", || {
        (ctl.service_status(name)["stopped"] == false).then_some(())
    });
    wait_for(
        Duration::from_secs(40),
        "the scale-down it held back",
        || (svc.replicas() == 2).then_some(()),
    );
    assert!(ctl.logs().contains("resuming"));
}

#[test]
#[ignore = "needs the local Swarm and Prometheus: scripts/test.sh runs it"]
fn a_concurrent_writer_causes_no_lost_update() {
    let name = "andon-it-writer";
    let dir = tmpdir("writer");
    let sig = Signals::start();
    let prom = Prom::start("writer", sig.addr);
    let svc = Service::create(name, 2, true);
    sig.set(name, "p95", 0.05);
    sig.set(name, "rps", 150.0);
    prom.wait_value(name, "rps", 150.0);
    let policy = write_policy(&dir, &policy(&[(name, 2, 8)], FAST_BEHAVIOR));
    let ctl = Controller::start(&policy, &prom.url(), &[], dir.join("andon.log"));

    // Another writer adds labels as fast as it can while andon scales up step by step.
    const N: usize = 25;
    let writer = {
        let name = name.to_string();
        std::thread::spawn(move || {
            for i in 0..N {
                let label = format!("writer-{i}=x");
                // The CLI has its own optimistic concurrency: on a conflict, try again.
                let ok = (0..10).any(|_| {
                    docker(&[
                        "service",
                        "update",
                        "--detach",
                        "--label-add",
                        &label,
                        &name,
                    ])
                    .0
                });
                assert!(ok, "the writer could not add {label}");
            }
        })
    };
    for rps in [250.0, 350.0, 450.0, 550.0, 650.0, 750.0] {
        sig.set(name, "rps", rps);
        std::thread::sleep(Duration::from_millis(1500));
    }
    writer.join().unwrap();
    wait_for(Duration::from_secs(20), "replicas 8", || {
        (svc.replicas() == 8).then_some(())
    });
    let labels = svc.labels();
    for i in 0..N {
        assert!(
            labels.get(format!("writer-{i}")).is_some(),
            "the writer's label writer-{i} was lost: {labels}"
        );
    }
    assert!(
        labels.get("andon.state").is_some(),
        "andon's state was lost"
    );
    assert_eq!(ctl.service_status(name)["desired"], 8);
    let conflicts = ctl.logs().matches("update out of sequence").count();
    eprintln!("conflicts met and retried by andon: {conflicts}");
}

#[test]
#[ignore = "needs the local Swarm and Prometheus: scripts/test.sh runs it"]
fn a_controller_killed_mid_scale_takes_no_duplicate_step_and_keeps_its_window() {
    let name = "andon-it-kill";
    let dir = tmpdir("kill");
    let sig = Signals::start();
    let prom = Prom::start("kill", sig.addr);
    let svc = Service::create(name, 2, true);
    sig.set(name, "p95", 0.05);
    sig.set(name, "rps", 150.0);
    prom.wait_value(name, "rps", 150.0);
    // One replica per 20 s up; a 15 s scale-down window.
    let behavior = "behavior:\n  scale_up: {stabilization: 0s, max_step: {replicas: 1, period: 20s}}\n  scale_down: {stabilization: 15s, max_step: {replicas: 10, period: 1s}}\n";
    let policy = write_policy(&dir, &policy(&[(name, 2, 6)], behavior));
    let mut ctl = Controller::start(&policy, &prom.url(), &[], dir.join("andon.log"));

    sig.set(name, "rps", 550.0); // wants 6, one step per 20 s
    wait_for(Duration::from_secs(15), "the first step 2 → 3", || {
        (svc.replicas() == 3).then_some(())
    });
    let stepped = Instant::now();
    ctl.kill(); // SIGKILL right after the step
    ctl.restart();
    // Within the 20 s period the restarted controller must not step again.
    svc.holds(
        3,
        stepped,
        Duration::from_secs(17),
        "duplicate step after the restart; time since the first step",
    );
    wait_for(
        Duration::from_secs(15),
        "the next step 3 → 4 after the period",
        || (svc.replicas() == 4).then_some(()),
    );

    // Demand drops; 5 s into the 15 s window the controller dies and comes back.
    let low = Instant::now();
    sig.set(name, "rps", 150.0);
    std::thread::sleep(Duration::from_secs(5));
    ctl.kill();
    ctl.restart();
    svc.holds(
        4,
        low,
        Duration::from_secs(13),
        "scaled down inside the window after a restart",
    );
    wait_for(
        Duration::from_secs(25),
        "the scale-down after the window",
        || (svc.replicas() == 2).then_some(()),
    );
    assert!(
        ctl.logs().contains("restored the core's state"),
        "{}",
        ctl.logs()
    );
}

#[test]
#[ignore = "needs the local Swarm and Prometheus: scripts/test.sh runs it"]
fn a_service_without_the_opt_in_label_is_never_touched() {
    let (on, off) = ("andon-it-optin", "andon-it-optout");
    let dir = tmpdir("optin");
    let sig = Signals::start();
    let prom = Prom::start("optin", sig.addr);
    let svc_on = Service::create(on, 2, true);
    let svc_off = Service::create(off, 2, false);
    for n in [on, off] {
        sig.set(n, "p95", 0.3);
        sig.set(n, "rps", 450.0);
    }
    prom.wait_value(off, "rps", 450.0);
    let (version, labels) = (svc_off.version(), svc_off.labels());
    let policy = write_policy(&dir, &policy(&[(on, 2, 6), (off, 2, 6)], FAST_BEHAVIOR));
    let ctl = Controller::start(&policy, &prom.url(), &[], dir.join("andon.log"));
    wait_for(
        Duration::from_secs(20),
        "the opted-in service to scale",
        || (svc_on.replicas() == 5).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(svc_off.replicas(), 2);
    assert_eq!(svc_off.version(), version, "not a single write");
    assert_eq!(svc_off.labels(), labels);
    assert!(
        admission_of(&svc_off).iter().all(|a| a["admit"].is_null()),
        "no shedding sent to it"
    );
    let st = ctl.service_status(off);
    assert!(
        st["note"].as_str().unwrap_or("").contains("not opted in"),
        "{st:#}"
    );
}

#[test]
#[ignore = "needs the local Swarm and Prometheus: scripts/test.sh runs it"]
fn a_stale_version_is_re_inspected_and_retried_keeping_both_writes() {
    // The deterministic half of the concurrent-writer story: andon holds a spec inspected
    // at version v; another writer updates the service first; andon's update at v is
    // refused ("update out of sequence", a 500), so it re-inspects and re-applies its
    // change to the fresh spec. Both changes survive.
    let name = "andon-it-stale";
    let svc = Service::create(name, 2, true);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let swarm = andon::swarm::Swarm::connect().await.expect("docker");
        let stale = swarm.inspect(name).await.unwrap();
        let (ok, out) = docker(&[
            "service",
            "update",
            "--detach",
            "--label-add",
            "other-writer=1",
            name,
        ]);
        assert!(ok, "{out}");
        let mut desired = andon::act::Desired {
            replicas: Some(3),
            ..Default::default()
        };
        desired
            .labels
            .insert("andon.tier".into(), Some("yellow".into()));
        let w = andon::act::write(&swarm, stale, &desired)
            .await
            .expect("write succeeds after a retry");
        assert_eq!(w.conflicts, 1, "exactly one conflict met and retried");
    });
    let labels = svc.labels();
    assert_eq!(
        labels["other-writer"], "1",
        "the other writer's change survived: {labels}"
    );
    assert_eq!(labels["andon.tier"], "yellow", "and andon's: {labels}");
    assert_eq!(svc.replicas(), 3);
}

#[test]
#[ignore = "needs the local Swarm and Prometheus: scripts/test.sh runs it"]
fn a_controller_with_no_state_label_waits_out_the_scale_down_window() {
    // A service at 5 replicas with load for 2, and no `andon.state` label: a new install,
    // or a label lost. Before the window was seeded with the current replicas (HPA's
    // first recommendation), andon scaled 5 → 2 on its first tick. Then the same for a
    // restart after the label was removed by hand.
    let name = "andon-it-cold";
    let dir = tmpdir("cold");
    let sig = Signals::start();
    let prom = Prom::start("cold", sig.addr);
    let svc = Service::create(name, 5, true);
    sig.set(name, "p95", 0.05);
    sig.set(name, "rps", 150.0);
    prom.wait_value(name, "rps", 150.0);
    let behavior = "behavior:\n  scale_up: {stabilization: 0s, max_step: {replicas: 10, period: 1s}}\n  scale_down: {stabilization: 15s, max_step: {replicas: 10, period: 1s}}\n";
    let policy = write_policy(&dir, &policy(&[(name, 1, 6)], behavior));
    let started = Instant::now();
    let mut ctl = Controller::start(&policy, &prom.url(), &[], dir.join("andon.log"));
    svc.holds(
        5,
        started,
        Duration::from_secs(12),
        "scaled down inside the seeded window; time since the start",
    );
    wait_for(
        Duration::from_secs(20),
        "the scale-down after the window",
        || (svc.replicas() == 2).then_some(()),
    );
    assert!(ctl.logs().contains("no remembered state"), "{}", ctl.logs());

    // Back to 5 by hand, the label removed, the controller restarted: seeded again.
    ctl.kill();
    let (ok, out) = docker(&[
        "service",
        "update",
        "--detach",
        "--replicas",
        "5",
        "--label-rm",
        "andon.state",
        name,
    ]);
    assert!(ok, "docker service update: {out}");
    let restarted = Instant::now();
    ctl.restart();
    svc.holds(
        5,
        restarted,
        Duration::from_secs(12),
        "scaled down inside the seeded window after a restart",
    );
    wait_for(
        Duration::from_secs(20),
        "the scale-down after the window",
        || (svc.replicas() == 2).then_some(()),
    );
}

#[test]
#[ignore = "needs the local Swarm and Prometheus: scripts/test.sh runs it"]
fn check_tries_the_shipped_queries_against_the_real_prometheus() {
    // The environment's Prometheus discovers tasks through Swarm (manifests/prometheus.yml).
    // With stand-ins running, the shipped policies' queries all answer; a policy naming a
    // metric nobody exports is a warning (exit 1), an unreachable Prometheus an error (2).
    let url = std::env::var("ANDON_PROMETHEUS_URL").expect("ANDON_PROMETHEUS_URL (scripts/env.sh)");
    let name = "andon-it-check";
    let _svc = Service::create_with(
        name,
        2,
        &["andon.enable=true", "prometheus.io/scrape=true"],
        &[],
    );
    let check = |policy: &str, prometheus: &str| -> (i32, String) {
        let out = std::process::Command::new(andon_bin())
            .args([
                "check",
                policy,
                "--prometheus",
                prometheus,
                "--service",
                name,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    };
    // Every running task is a target; Swarm may list a task's host port twice (IPv4 and
    // IPv6), so Prometheus may count more targets than tasks, never fewer.
    let targets_in = |out: &str| -> Option<u32> {
        out.split(" target(s) up")
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
    };
    // Discovery and the first scrapes take a few seconds, the second task's a few more.
    let out = wait_for(
        Duration::from_secs(40),
        "every query to answer, on both tasks",
        || {
            let (code, out) = check("policies/erlmcp-tps.yaml", &url);
            (code == 0 && targets_in(&out).is_some_and(|n| n >= 2)).then_some(out)
        },
    );
    let targets = targets_in(&out).unwrap_or_else(|| panic!("no target count in:\n{out}"));
    assert!(targets >= 2, "{out}");
    // The fast panic signal is tried against real Prometheus too.
    assert!(out.contains("panic.fast (throughput)"), "{out}");
    let (code, out) = check("policies/drill-fast.yaml", &url);
    assert_eq!(code, 0, "{out}");

    let dir = tmpdir("check");
    let text = std::fs::read_to_string("policies/erlmcp-tps.yaml")
        .unwrap()
        .replace("erlmcp_cpu_usage_percent", "erlmcp_cpu_nobody_exports");
    let bad = write_policy(&dir, &text);
    let (code, out) = check(&bad.display().to_string(), &url);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no target exports erlmcp_cpu_nobody_exports"),
        "{out}"
    );

    let (code, out) = check("policies/erlmcp-tps.yaml", "http://127.0.0.1:1");
    assert_eq!(code, 2, "{out}");
}
