//! `andon run` on a three-node Swarm (issue 12): replicas that find no node, and a node
//! lost or drained at peak.
//!
//! Needs `scripts/nodes.sh up` (three dockerds, each in its own network namespace, one
//! swarm; `scripts/test.sh` brings it up after the one-node tests). By hand:
//! `scripts/nodes.sh up && source /tmp/andon-nodes/env &&
//! cargo test --test nodes -- --ignored --test-threads=1`.
//!
//! What fits is set with `--replicas-max-per-node` and a placement constraint on a node
//! label, not with CPU reservations: nodes report the machine's CPUs, which differ from
//! one machine to the next.

#[allow(dead_code)]
#[path = "../live/support.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

fn nodes_sh(args: &[&str]) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{root}/scripts/nodes.sh"))
        .args(args)
        .output()
        .expect("scripts/nodes.sh");
    assert!(
        out.status.success(),
        "nodes.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A node cut off the network for the guard's life: back on drop (failures included,
/// without a second panic), and ready again before the next test.
struct Cut(&'static str);

impl Cut {
    fn node(i: &'static str) -> Cut {
        nodes_sh(&["cut-node", i]);
        Cut(i)
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        let root = env!("CARGO_MANIFEST_DIR");
        let _ = Command::new(format!("{root}/scripts/nodes.sh"))
            .args(["mend-node", self.0])
            .output();
        let name = format!("n{}", self.0);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(90) && !node_state(&name).starts_with("Ready") {
            std::thread::sleep(Duration::from_millis(500));
        }
        settled_leader();
    }
}

/// Waits (up to 90 s, without panicking) until the swarm has had a leader and every
/// manager reachable for 5 s. A manager cut off campaigns for leadership with a higher
/// raft term; when it returns, the leader steps down and the swarm has no leader for a
/// few seconds ("node lost leader status"), so the next test's `service create` fails.
/// Measured here: that is what failed the multi-node tests on three managers.
fn settled_leader() -> bool {
    let start = Instant::now();
    let mut since: Option<Instant> = None;
    while start.elapsed() < Duration::from_secs(90) {
        let (ok, out) = docker(&["node", "ls", "--format", "{{.ManagerStatus}}"]);
        let settled = ok && out.contains("Leader") && !out.contains("Unreachable");
        match (settled, since) {
            (false, _) => since = None,
            (true, None) => since = Some(Instant::now()),
            (true, Some(t)) if t.elapsed() >= Duration::from_secs(5) => return true,
            (true, Some(_)) => {}
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

/// Node labels set for the guard's life.
struct NodeLabel(Vec<(String, String)>);

impl NodeLabel {
    fn add(nodes: &[&str], label: &str) -> NodeLabel {
        let mut set = Vec::new();
        for n in nodes {
            let id = node_id(n);
            let (ok, out) = docker(&["node", "update", "--label-add", label, &id]);
            assert!(ok, "{out}");
            set.push((id, label.split('=').next().unwrap_or(label).to_string()));
        }
        NodeLabel(set)
    }
}

impl Drop for NodeLabel {
    fn drop(&mut self) {
        for (id, key) in &self.0 {
            let _ = docker(&["node", "update", "--label-rm", key, id]);
        }
    }
}

fn node_id(name: &str) -> String {
    let (_, id) = docker(&[
        "node",
        "ls",
        "-q",
        "--filter",
        &format!("node.label=andon.node={name}"),
    ]);
    id.trim().to_string()
}

/// The state of the node labelled `andon.node=NAME`, as the manager sees it.
fn node_state(name: &str) -> String {
    let (_, out) = docker(&[
        "node",
        "ls",
        "--filter",
        &format!("node.label=andon.node={name}"),
        "--format",
        "{{.Status}} {{.Availability}}",
    ]);
    out.trim().to_string()
}

/// The cluster's own Prometheus (scripts/nodes.sh), which scrapes the tasks of services
/// labelled `prometheus.io.scrape=true` on every node.
fn cluster_prometheus() -> String {
    std::env::var("ANDON_PROMETHEUS_URL").expect("ANDON_PROMETHEUS_URL (scripts/nodes.sh env)")
}

/// Stand-ins opted in to andon and scraped by the cluster's Prometheus.
fn scraped_service(name: &str, replicas: u32, standin_args: &[&str]) -> Service {
    Service::create_placed(
        name,
        replicas,
        &[],
        &["andon.enable=true", "prometheus.io.scrape=true"],
        standin_args,
    )
}

fn write_policy(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("policy.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn codes(st: &serde_json::Value) -> Vec<String> {
    st["last_decision"]["reasons"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["code"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// No scale-down window: only the placement rules stand between a low reading and a
/// scale-down.
const NO_WINDOW: &str = r#"behavior:
  scale_up: {stabilization: 0s, max_step: {replicas: 10, period: 1s}}
  scale_down: {stabilization: 0s, max_step: {replicas: 10, period: 1s}}
jidoka:
  stale_after: 10s
  stop_after_failures: 2
"#;

/// Four tasks to a node, on the nodes labelled `andon.pool=on` only.
const POOL_OF_FOUR: &[&str] = &[
    "--replicas-max-per-node",
    "4",
    "--constraint",
    "node.labels.andon.pool==on",
];

#[test]
#[ignore = "needs the multi-node Swarm: scripts/nodes.sh up (scripts/test.sh runs it)"]
fn a_scale_up_past_what_the_nodes_hold_stops_at_what_fits_and_resumes() {
    let name = "andon-it-fits";
    let dir = tmpdir("fits");
    let sig = Signals::start();
    let prom = Prom::start("fits", sig.addr);
    // Nodes 1 and 2 take the service, four tasks each: 8 fit.
    let pool = NodeLabel::add(&["n1", "n2"], "andon.pool=on");
    let svc = Service::create_placed(name, 2, POOL_OF_FOUR, &["andon.enable=true"], &[]);
    sig.set(name, "p95", 0.05);
    sig.set(name, "rps", 200.0);
    prom.wait_value(name, "rps", 200.0);
    let policy = write_policy(&dir, &policy(&[(name, 2, 12)], NO_WINDOW));
    let ctl = Controller::start(&policy, &prom.url(), &[], dir.join("andon.log"));

    // Demand for 10: asked at once, 8 fit, 2 wait for a node.
    sig.set(name, "rps", 1000.0);
    wait_for(Duration::from_secs(20), "replicas 2 → 10", || {
        (svc.replicas() == 10).then_some(())
    });
    wait_for(Duration::from_secs(30), "8 running, 2 unplaceable", || {
        let st = ctl.service_status(name);
        (st["placement"]["unplaceable"] == 2 && st["ready"] == 8).then_some(st)
    });
    assert_eq!(svc.running(), 8);
    // Demand for 11: not asked while 2 wait; the tier is red, not for latency (p95 is
    // 50 ms) but because the nodes cannot hold what demand needs.
    sig.set(name, "rps", 1100.0);
    prom.wait_value(name, "rps", 1100.0);
    svc.holds(
        10,
        Instant::now(),
        Duration::from_secs(5),
        "no more than 10 while 2 wait",
    );
    let st = ctl.service_status(name);
    assert_eq!(st["tier"], "red", "{st:#}");
    let c = codes(&st);
    assert!(
        c.iter().any(|c| c == "unplaceable") && c.iter().any(|c| c == "cannot_place"),
        "{c:?}"
    );
    let metrics = http_get(&ctl.listen, "/metrics").unwrap().1;
    assert!(
        metrics.contains(&format!("andon_tasks_unplaceable{{service=\"{name}\"}} 2")),
        "{metrics}"
    );
    let per_node = st["nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(per_node.len(), 2, "spread over n1 and n2: {st:#}");

    // Node 3 joins the pool: the two are placed, and andon asks for the eleventh.
    let freed = Instant::now();
    let more = NodeLabel::add(&["n3"], "andon.pool=on");
    wait_for(Duration::from_secs(60), "11 replicas running", || {
        (svc.replicas() == 11 && svc.running() == 11).then_some(())
    });
    eprintln!(
        "capacity back: 11 running {:.1} s after node 3 joined the pool",
        freed.elapsed().as_secs_f64()
    );
    let st = wait_for(Duration::from_secs(20), "the tier to leave red", || {
        let st = ctl.service_status(name);
        (st["tier"] != "red").then_some(st)
    });
    assert_eq!(st["placement"]["unplaceable"], 0, "{st:#}");
    // The service goes before the labels its tasks are placed by.
    drop(ctl);
    drop(svc);
    drop((more, pool));
}

#[test]
#[ignore = "needs the multi-node Swarm: scripts/nodes.sh up (scripts/test.sh runs it)"]
fn draining_a_node_at_peak_moves_its_tasks_with_no_scale_down() {
    let name = "andon-it-drain";
    let dir = tmpdir("drain");
    let sig = Signals::start();
    let prom = Prom::start("drain", sig.addr);
    let svc = Service::create_placed(name, 6, &[], &["andon.enable=true"], &[]);
    sig.set(name, "p95", 0.05);
    sig.set(name, "rps", 600.0);
    prom.wait_value(name, "rps", 600.0);
    let policy = write_policy(&dir, &policy(&[(name, 2, 12)], NO_WINDOW));
    let ctl = Controller::start(&policy, &prom.url(), &[], dir.join("andon.log"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(svc.replicas(), 6);

    let (_, id) = docker(&["node", "ls", "-q", "--filter", "node.label=andon.node=n2"]);
    let id = id.trim().to_string();
    let drained = Instant::now();
    let (ok, out) = docker(&["node", "update", "--availability", "drain", &id]);
    assert!(ok, "{out}");
    sig.set(name, "rps", 400.0);
    let mut seen = Vec::new();
    wait_for(Duration::from_secs(60), "6 running off node 2", || {
        assert_eq!(svc.replicas(), 6, "no scale-down while tasks move");
        let st = ctl.service_status(name);
        seen.extend(codes(&st));
        let on_n2 = st["nodes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n["node"] == "n2"));
        (st["ready"] == 6 && !on_n2).then_some(())
    });
    eprintln!(
        "drain: 6 running elsewhere after {:.1} s",
        drained.elapsed().as_secs_f64()
    );
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        assert_eq!(svc.replicas(), 6, "no scale-down after the drain");
        seen.extend(codes(&ctl.service_status(name)));
        std::thread::sleep(Duration::from_millis(500));
    }
    let (ok, out) = docker(&["node", "update", "--availability", "active", &id]);
    assert!(ok, "{out}");
    assert!(seen.iter().any(|c| c == "node_lost"), "{seen:?}");
}

/// The spread: the per-node rows of `/status` carry the policy's `spread.query` summed
/// over each node's tasks. Here the query is `up` per task, scraped by the cluster's own
/// Prometheus (discovering the tasks through Swarm): each node's load is the number of
/// its tasks scraped, which must equal its running tasks.
#[test]
#[ignore = "needs the multi-node Swarm: scripts/nodes.sh up (scripts/test.sh runs it)"]
fn the_status_shows_where_the_load_sits() {
    let name = "andon-it-spread";
    let dir = tmpdir("spread");
    let prom = cluster_prometheus();
    let svc = scraped_service(name, 6, &[]);
    let text = policy(&[(name, 6, 6)], NO_WINDOW)
        + "spread:\n  query: sum by (task) (up{service=\"$service\"})\n";
    let policy = write_policy(&dir, &text);
    let ctl = Controller::start(&policy, &prom, &[], dir.join("andon.log"));
    let rows = wait_for(
        Duration::from_secs(60),
        "a load on every node's row",
        || {
            let st = ctl.service_status(name);
            let rows = st["nodes"].as_array().cloned().unwrap_or_default();
            let loaded: f64 = rows.iter().filter_map(|r| r["load"].as_f64()).sum();
            (rows.len() == 3 && loaded == 6.0).then_some(rows)
        },
    );
    for r in &rows {
        assert_eq!(r["load"].as_f64(), r["running"].as_f64(), "{rows:#?}");
    }
    eprintln!("spread: {}", serde_json::to_string(&rows).unwrap());
    drop(svc);
}

mod drill;
mod failover;
mod lost;
