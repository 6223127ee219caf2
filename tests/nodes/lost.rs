//! A node lost at peak, cut off the network or killed: andon counts only the live tasks,
//! does not scale down on the vanished metrics until their window has forgotten them,
//! and the node rejoins when it comes back.

use super::*;

#[test]
#[ignore = "needs the multi-node Swarm: scripts/nodes.sh up (scripts/test.sh runs it)"]
fn a_node_lost_at_peak_counts_only_live_tasks_and_causes_no_scale_down() {
    lost_at_peak(Loss::Cut);
}

/// As above, with node 3's power cut (its daemon, containerd and containers SIGKILLed),
/// then booted again: it rejoins the swarm.
#[test]
#[ignore = "needs the multi-node Swarm: scripts/nodes.sh up (scripts/test.sh runs it)"]
fn a_node_killed_at_peak_counts_only_live_tasks_and_rejoins_when_booted() {
    lost_at_peak(Loss::Kill);
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Loss {
    /// Off the network: a partition, or a dead host as the managers see it.
    Cut,
    /// Every process of the node SIGKILLed; booted again on drop.
    Kill,
}

/// Node 3 killed for the guard's life, booted again on drop (no second panic), ready
/// again before the next test.
struct Killed;

impl Drop for Killed {
    fn drop(&mut self) {
        let root = env!("CARGO_MANIFEST_DIR");
        let _ = Command::new(format!("{root}/scripts/nodes.sh"))
            .args(["start-node", "3"])
            .output();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(90) && !node_state("n3").starts_with("Ready") {
            std::thread::sleep(Duration::from_millis(500));
        }
        settled_leader();
    }
}

fn lost_at_peak(loss: Loss) {
    let name = if loss == Loss::Cut {
        "andon-it-lost"
    } else {
        "andon-it-killed"
    };
    let dir = tmpdir(name);
    let sig = Signals::start();
    let prom = Prom::start("lost", sig.addr);
    let svc = Service::create_placed(name, 6, &[], &["andon.enable=true"], &[]);
    sig.set(name, "p95", 0.05);
    sig.set(name, "rps", 600.0);
    // One scrape target per task, as `up` gives them: the shipped policy's
    // `jidoka.targets`. Until the managers see the node down (seconds), its tasks count
    // as running, and only the targets tell that their metrics are gone.
    for t in 1..=6 {
        sig.set(name, &format!("target{t}"), 1.0);
    }
    prom.wait_value(name, "rps", 600.0);
    let targets =
        "  targets:\n    query: andontest_signal{service=\"$service\", signal=~\"target.*\"}\n";
    // Demand as a 20 s window remembers it (a rate's window): a lost node's counters
    // leave it 20 s later.
    let text = policy(
        &[(name, 2, 12)],
        &NO_WINDOW.replace("jidoka:\n", &format!("jidoka:\n{targets}")),
    )
    .replace(
        r#"max by (service) (andontest_signal{service="$service", signal="rps"})"#,
        r#"max by (service) (max_over_time(andontest_signal{service="$service", signal="rps"}[20s]))"#,
    );
    assert!(text.contains("[20s]"));
    let policy = write_policy(&dir, &text);
    let ctl = Controller::start(&policy, &prom.url(), &[], dir.join("andon.log"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(svc.replicas(), 6, "steady at what demand asks");
    let st = ctl.service_status(name);
    assert_eq!(
        st["nodes"].as_array().map(Vec::len),
        Some(3),
        "spread: {st:#}"
    );

    // Node 3 drops off the network (or dies) with its 2 tasks; their metrics vanish from
    // the sums.
    let cut_at = Instant::now();
    let (cut, killed) = match loss {
        Loss::Cut => (Some(Cut::node("3")), None),
        Loss::Kill => {
            // The guard first: should the kill fail half-way, node 3 is booted again.
            let killed = Killed;
            nodes_sh(&["kill-node", "3"]);
            (None, Some(killed))
        }
    };
    sig.set(name, "rps", 400.0);
    sig.set(name, "target5", 0.0);
    sig.set(name, "target6", 0.0);
    // When andon no longer lists node 3's tasks (the managers marked it down and re-placed
    // them), when 6 run again, when it scales down.
    let (mut seen, mut gone_at, mut replaced_at, mut down_at) = (Vec::new(), None, None, None);
    while cut_at.elapsed() < Duration::from_secs(150) {
        let st = ctl.service_status(name);
        let on_n3 = st["nodes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n["node"] == "n3"));
        if gone_at.is_none() && !on_n3 {
            gone_at = Some(cut_at.elapsed());
        }
        if gone_at.is_some() && replaced_at.is_none() && st["ready"] == 6 {
            // The new tasks report; the rate still reads low (its window remembers).
            replaced_at = Some(cut_at.elapsed());
            sig.set(name, "target5", 1.0);
            sig.set(name, "target6", 1.0);
        }
        seen.extend(codes(&st));
        let r = svc.replicas();
        assert!(r >= 4, "never below what demand asks: {r}");
        if r < 6 {
            down_at = Some(cut_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    eprintln!(
        "node {loss:?}: its tasks gone from andon's view after {:?} s, 6 running again after {:?} s, scaled down after {:?} s",
        secs(gone_at),
        secs(replaced_at),
        secs(down_at)
    );
    seen.dedup();
    // Before the managers notice, only the targets tell; then the lost node holds.
    assert!(seen.iter().any(|c| c == "partial_targets"), "{seen:?}");
    assert!(seen.iter().any(|c| c == "node_lost"), "{seen:?}");
    let (gone, down) = (
        gone_at.expect("node 3 seen lost"),
        down_at.expect("scaled down"),
    );
    assert!(replaced_at.is_some(), "the lost tasks re-placed: {seen:?}");
    // The demand signal's window is 20 s, so the hold is 25 s from the loss; once it has
    // passed, the reading (still 4 replicas' worth) decides: the hold does not last.
    assert!(
        down - gone >= Duration::from_secs(20),
        "held for the grace: lost at {gone:?}, down at {down:?}"
    );
    assert_eq!(svc.replicas(), 4);
    // Back: the node rejoins (mended, or booted).
    let back = Instant::now();
    drop(cut);
    drop(killed);
    assert!(
        node_state("n3").starts_with("Ready"),
        "{}",
        node_state("n3")
    );
    eprintln!(
        "node {loss:?}: ready again {:.1} s after it came back",
        back.elapsed().as_secs_f64()
    );
    let log = ctl.logs();
    assert!(!log.contains("panicked"), "{log}");
}
