//! The edge (issue 9, §2): `andon run --haproxy-socket` keeps a real HAProxy 2.6's
//! backends on the service's running tasks through the runtime API, with no reload, sets
//! the per-session admitted rate when a tier sheds, and rides out HAProxy going away.

use super::support::*;
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

/// The backend's servers in service, as ADDR:PORT.
fn in_service(backend: &str) -> Option<Vec<String>> {
    let out = haproxy(&format!("show servers state {backend}"))?;
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| !l.starts_with('#') && l.split_whitespace().count() > 18)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let admin: u32 = f[6].parse().ok()?;
            (admin & 0x23 == 0).then(|| format!("{}:{}", f[4], f[18]))
        })
        .collect();
    v.sort();
    Some(v)
}

/// The tasks' published ports for a container port, as 127.0.0.1:PORT (one node).
fn task_ports(svc: &Service, target: u16) -> Vec<String> {
    let (_, out) = docker(&[
        "service",
        "ps",
        &svc.name,
        "--filter",
        "desired-state=running",
        "-q",
    ]);
    let mut v: Vec<String> = out
        .split_whitespace()
        .filter_map(|id| {
            // TARGET:PUBLISHED pairs (Go templates cannot compare a uint32 with a literal).
            let (_, p) = docker(&[
                "inspect",
                id,
                "--format",
                "{{range .Status.PortStatus.Ports}}{{.TargetPort}}:{{.PublishedPort}} {{end}}",
            ]);
            p.split_whitespace()
                .find_map(|pair| pair.strip_prefix(&format!("{target}:")).map(str::to_string))
                .map(|port| format!("127.0.0.1:{port}"))
        })
        .collect();
    v.sort();
    v
}

fn haproxy_pid() -> String {
    let cfg = env("ANDON_HAPROXY_CFG");
    let dir = std::path::Path::new(&cfg).parent().unwrap().to_path_buf();
    std::fs::read_to_string(dir.join("haproxy.pid"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// An MCP initialize request, as the edge tests send it on either wire.
const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

/// MCP initialize through HAProxy's HTTP frontend: the status line.
fn initialize_through_the_edge() -> String {
    let addr = env("ANDON_HAPROXY_HTTP");
    let body = INITIALIZE;
    let Ok(mut s) = std::net::TcpStream::connect(&addr) else {
        return "no connection".into();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    line.trim().to_string()
}

/// An MCP session over HAProxy's TCP frontend (a message per line): the connection and
/// the initialize answer's line, `<closed>` if the connection was closed unanswered.
fn tcp_initialize() -> (std::net::TcpStream, String) {
    let s = std::net::TcpStream::connect(env("ANDON_HAPROXY_TCP")).expect("HAProxy's TCP frontend");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = writeln!(&s, "{INITIALIZE}");
    let mut answer = String::new();
    let answer = match BufReader::new(&s).read_line(&mut answer) {
        Ok(0) => "<closed>".to_string(),
        Ok(_) => answer.trim().to_string(),
        Err(e) => format!("<no answer: {e}>"),
    };
    (s, answer)
}

#[test]
#[ignore = "needs the local Swarm, Prometheus and HAProxy: scripts/test.sh runs it"]
fn haproxy_follows_the_tasks_sheds_and_is_resynced_after_a_restart() {
    let name = "andon-it-edge";
    let dir = tmpdir("edge");
    let sig = Signals::start();
    let prom = Prom::start("edge", sig.addr);
    // As a real erlmcp: no admission endpoint; MCP on 8080 (HTTP, WebSocket) and 9000 (TCP).
    let svc = Service::create_with(
        name,
        2,
        &["andon.enable=true"],
        &["--no-admission", "--tcp-listen", "0.0.0.0:9000"],
    );
    sig.set(name, "p95", 0.05);
    sig.set(name, "rps", 150.0);
    // The sessions the cap is shared over (a cap needs the reading): none yet, so the
    // policy's 2 holds.
    sig.set(name, "conns", 0.0);
    prom.wait_value(name, "rps", 150.0);
    // A session cap of 2 per replica: HAProxy's maxconn on every server.
    let text = policy(&[(name, 2, 8)], FAST_BEHAVIOR);
    let util = "  target_utilization: 1.0\n";
    assert!(
        text.contains(util),
        "the test policy changed: mend this test"
    );
    let text = text
        .replace(util, &format!("  session_cap: 2\n{util}"))
        .replace(
            "signals:\n",
            "signals:\n  connections:\n    query: max by (service) (andontest_signal{service=\"$service\", signal=\"conns\"})\n    unit: count\n",
        );
    std::fs::write(dir.join("policy.yaml"), text).unwrap();
    let http_backend = format!("erlmcp={name}:8080");
    let tcp_backend = format!("erlmcp_tcp={name}:9000");
    let socket = env("ANDON_HAPROXY_SOCKET");
    let map = env("ANDON_HAPROXY_MAP");
    let ctl = Controller::start(
        &dir.join("policy.yaml"),
        &prom.url(),
        &[
            "--haproxy-socket",
            &socket,
            "--haproxy-admit-map",
            &map,
            "--haproxy-backend",
            &http_backend,
            "--haproxy-backend",
            &tcp_backend,
            "--admission-port",
            "0",
            // A tick as the e2e drills run (production's is longer): a stopping task left
            // on the edge until the next tick is then seen (below).
            "--interval",
            "2s",
        ],
        dir.join("andon.log"),
    );
    let pid = haproxy_pid();

    // The backends hold exactly the running tasks, on each wire's port.
    let follows = |n: usize| {
        wait_for(
            Duration::from_secs(40),
            &format!("HAProxy's backends on {n} tasks"),
            || {
                let (h, t) = (task_ports(&svc, 8080), task_ports(&svc, 9000));
                (h.len() == n && in_service("erlmcp")? == h && in_service("erlmcp_tcp")? == t)
                    .then_some(())
            },
        )
    };
    follows(2);
    assert!(
        initialize_through_the_edge().contains(" 200 "),
        "MCP through HAProxy: {}",
        initialize_through_the_edge()
    );
    let st = ctl.status();
    assert!(st["edge"]["error"].is_null(), "{:#}", st["edge"]);
    assert_eq!(
        st["edge"]["backends"][0]["session_limit"],
        serde_json::Value::Null
    );

    // The cap at the edge, on erlmcp's TCP wire: 2 replicas × 2 sessions are served; a
    // fifth connection waits `timeout queue` (200 ms) for room and is closed unanswered,
    // so its client retries elsewhere; once a session ends, a new one gets in.
    for b in 0..2 {
        assert_eq!(st["edge"]["backends"][b]["maxconn"], 2, "{:#}", st["edge"]);
    }
    let mut held: Vec<std::net::TcpStream> = (0..4)
        .map(|i| {
            let (s, answer) = tcp_initialize();
            assert!(answer.contains("\"result\""), "session {i}: {answer:?}");
            s
        })
        .collect();
    let asked = std::time::Instant::now();
    let (_, fifth) = tcp_initialize();
    eprintln!("past the cap: {fifth} after {:?}", asked.elapsed());
    assert_eq!(fifth, "<closed>", "past the cap: closed unanswered");
    // At once: after `timeout queue` (200 ms), not after the client's 5 s read timeout.
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    drop(held.pop());
    wait_for(Duration::from_secs(10), "room for a new session", || {
        let (s, answer) = tcp_initialize();
        answer.contains("\"result\"").then_some(s)
    });
    drop(held);

    // Demand for 8: the service scales, and the servers follow.
    sig.set(name, "rps", 800.0);
    follows(8);
    // MCP traffic through the edge while it sheds and while 6 of the 8 go: a request
    // may be shed (503) or lose its session with its replica (404, a new session), but
    // none may wait on a stopped replica. Before andon dropped the stopping tasks from
    // the edge in the tick that scaled down, and HAProxy redispatched a refused
    // connection (manifests/haproxy.cfg), each step timed out that replica's requests
    // (here: 10 timeouts, 10 resets). Either mend alone passes this test.
    let edge_http = format!("http://{}", env("ANDON_HAPROXY_HTTP"));
    let drill_started = std::time::Instant::now();
    let traffic = std::thread::spawn(move || {
        super::drill::drill(
            &edge_http,
            "name: through-the-edge\nreplicas: 8\nclient_timeout: 2s\nphases:\n  - name: calm\n    duration: 30s\n    connections: 10\n    rate: {per_connection: 5}\n    mix: {ping: 1}\n",
        )
    });
    // Red sheds 10%: the per-session admitted rate is set at the edge.
    sig.set(name, "p95", 0.3);
    wait_for(
        Duration::from_secs(20),
        "a per-session limit in the map",
        || {
            let m = haproxy(&format!("show map {map}"))?;
            let v: u64 = m.split_whitespace().last()?.parse().ok()?;
            (v < 1_000_000).then_some(())
        },
    );
    let limit = ctl.status()["edge"]["backends"][0]["session_limit"].clone();
    assert!(limit.as_u64().is_some_and(|v| v >= 1), "{limit}");
    sig.set(name, "p95", 0.05);
    sig.set(name, "rps", 150.0);
    follows(2);
    eprintln!(
        "scaled 8 -> 2 {:.0} s into the drill",
        drill_started.elapsed().as_secs_f64()
    );
    assert!(
        !traffic.is_finished(),
        "the scale-down came after the drill: make the drill longer"
    );
    let (_, v) = traffic.join().unwrap();
    let errors = &v["counts"]["errors"];
    eprintln!("through the edge while it scaled 8 -> 2: {}", v["counts"]);
    for class in ["timeout", "reset", "refused"] {
        assert!(errors[class].is_null(), "{class}: {}", v["counts"]);
    }
    assert!(
        v["counts"]["ok"].as_u64().unwrap_or(0) > 1000,
        "{}",
        v["counts"]
    );
    wait_for(Duration::from_secs(20), "no limit once calm", || {
        let m = haproxy(&format!("show map {map}"))?;
        m.contains("1000000").then_some(())
    });
    assert_eq!(
        haproxy_pid(),
        pid,
        "no reload, no restart: the same HAProxy"
    );

    // HAProxy goes away: an actuator error, no crash, no scaling because of it.
    let replicas = svc.replicas();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status();
    let _ = std::fs::remove_file(&socket);
    wait_for(Duration::from_secs(15), "the edge error in /status", || {
        let e = ctl.status()["edge"]["error"].as_str()?.to_string();
        e.contains(&socket).then_some(e)
    });
    let metrics = http_get(&ctl.listen, "/metrics").unwrap().1;
    assert!(
        metrics.contains("andon_actuator_errors_total{actuator=\"haproxy\"}"),
        "{metrics}"
    );
    assert_eq!(
        svc.replicas(),
        replicas,
        "HAProxy down is no reason to scale"
    );
    // Back, fresh from its configuration (every slot empty): re-synced within ticks.
    let ok = std::process::Command::new("haproxy")
        .args(["-D", "-f", &env("ANDON_HAPROXY_CFG")])
        .status()
        .unwrap();
    assert!(ok.success());
    follows(replicas as usize);
    wait_for(Duration::from_secs(10), "the edge error cleared", || {
        ctl.status()["edge"]["error"].is_null().then_some(())
    });
    assert!(initialize_through_the_edge().contains(" 200 "));
}
