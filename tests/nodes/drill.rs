//! `andon drill` on the three-node Swarm: a `node_drain` fault drains a real node and
//! gives it back, at its end, at the drill's end, or when the drill is interrupted.

use super::*;

/// A drill child stopped on drop if a test fails while it runs: SIGINT (it gives back
/// what its faults took), then SIGKILL after 40 s. A finished child is left alone.
struct DrillChild(u32);

impl Drop for DrillChild {
    fn drop(&mut self) {
        let pid = self.0.to_string();
        let alive = || {
            Command::new("kill")
                .args(["-0", &pid])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !alive() {
            return;
        }
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let start = Instant::now();
        while alive() && start.elapsed() < Duration::from_secs(40) {
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    }
}

/// `andon drill SCENARIO --target swarm:SERVICE [EXTRA]`, output piped, stopped on drop.
fn spawn_drill(
    scenario: &std::path::Path,
    service: &str,
    extra: &[&str],
) -> (std::process::Child, DrillChild) {
    let child = Command::new(andon_bin())
        .args(["drill", scenario.to_str().unwrap(), "--target"])
        .arg(format!("swarm:{service}"))
        .args(extra)
        .env("DOCKER_HOST", docker_host())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stop = DrillChild(child.id());
    (child, stop)
}

#[test]
#[ignore = "needs the multi-node Swarm: scripts/nodes.sh up (scripts/test.sh runs it)"]
fn a_drill_drains_a_real_node_and_gives_it_back() {
    let name = "andon-it-drill-drain";
    let dir = tmpdir("drill-drain");
    let _svc = Service::create_placed(name, 3, &[], &["andon.enable=true"], &[]);
    let scenario = dir.join("drain.yaml");
    std::fs::write(
        &scenario,
        "name: drill-drain\nreplicas: 3\nnodes: {count: 3}\nphases:\n  - {name: load, duration: 30s, connections: 30, rate: {per_connection: 10}}\nfaults:\n  - at: 5s\n    node_drain: {node: n2, for: 10s}\nexpect:\n  - p95_below: 250ms\n    during: load\n",
    )
    .unwrap();
    let (child, _stop) = spawn_drill(&scenario, name, &["--json"]);
    // The node goes to drain while the drill runs, and back to active before it ends.
    wait_for(
        Duration::from_secs(20),
        "node 2 drained by the drill",
        || node_state("n2").ends_with("Drain").then_some(()),
    );
    wait_for(Duration::from_secs(30), "node 2 active again", || {
        node_state("n2").ends_with("Active").then_some(())
    });
    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let faults = v["faults"].as_array().cloned().unwrap_or_default();
    assert_eq!(faults.len(), 1, "{v:#}");
    assert_eq!(faults[0]["injected"], true, "{faults:?}");
    assert!(
        faults[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("drained")),
        "{faults:?}"
    );
    // Real MCP traffic (300 msg/s over 30 sessions) while Swarm moves node 2's tasks.
    // Its p95 is reported, not asserted (a latency bound is a timed assertion). Two runs
    // here gave the same worst second, 299 ms: the drained task's sessions reopen on the
    // other two and never rebalance, the stand-in's model at that load gives a p95 near
    // 220 ms and 0.5% HTTP 500s, and its seeded generator makes the worst second
    // repeat (README, "Many nodes").
    let p95 = &v["expectations"][0];
    eprintln!(
        "drill drain: {}; ok {}, errors {}",
        p95["observed"], v["counts"]["ok"], v["counts"]["errors"]
    );
    assert!(v["counts"]["ok"].as_u64().unwrap_or(0) > 0, "{v:#}");
}

/// A drill interrupted while its drain lasts (and a drain meant to outlast the drill)
/// gives the node back as it was: here `pause`, set by an operator before the drill.
#[test]
#[ignore = "needs the multi-node Swarm: scripts/nodes.sh up (scripts/test.sh runs it)"]
fn an_interrupted_drill_gives_the_node_back_as_it_was() {
    let name = "andon-it-drill-int";
    let dir = tmpdir("drill-int");
    let _svc = Service::create_placed(name, 3, &[], &["andon.enable=true"], &[]);
    let id = node_id("n3");
    struct Active(String);
    impl Drop for Active {
        fn drop(&mut self) {
            let _ = docker(&["node", "update", "--availability", "active", &self.0]);
        }
    }
    let _active = Active(id.clone());
    let (ok, out) = docker(&["node", "update", "--availability", "pause", &id]);
    assert!(ok, "{out}");
    let scenario = dir.join("drain.yaml");
    std::fs::write(
        &scenario,
        "name: drill-int\nreplicas: 3\nnodes: {count: 3}\nphases:\n  - {name: load, duration: 60s, connections: 3, rate: {per_connection: 2}, mix: {ping: 1}}\nfaults:\n  - at: 2s\n    node_drain: {node: n3, for: 10m}\n",
    )
    .unwrap();
    let (child, _stop) = spawn_drill(&scenario, name, &[]);
    wait_for(
        Duration::from_secs(20),
        "node 3 drained by the drill",
        || node_state("n3").ends_with("Drain").then_some(()),
    );
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("back to pause"), "{stderr}");
    assert!(node_state("n3").ends_with("Pause"), "{}", node_state("n3"));
}
