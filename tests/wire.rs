//! erlmcp's own wires (issue 9, §1): the stand-in serves MCP over WebSocket at /mcp/ws
//! and over line-delimited TCP, with erlmcp's framing, and the drill speaks both.
//! - Clients andon did not write (Python's `websockets` and `socket`) complete the MCP
//!   handshake and calls, and meet erlmcp's framing and close codes (tests/wire/clients.py).
//! - The drill over ws and tcp counts sheds as sheds, a session cap's refusals as closes by
//!   the server (with their code), and a malformed message as `frame`.

#[path = "common/drill.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct StandIn {
    child: Child,
    http: String,
    tcp: String,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start() -> StandIn {
    start_with(&[])
}

fn start_with(extra: &[&str]) -> StandIn {
    let (http, tcp) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_andon"))
        .args(["stand-in", "--listen", &http, "--tcp-listen", &tcp])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("andon stand-in starts");
    let s = StandIn { child, http, tcp };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&s.tcp).is_err()
        || std::net::TcpStream::connect(&s.http).is_err()
    {
        assert!(Instant::now() < deadline, "stand-in did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

/// POST /admin/admission with `body`.
fn admission(addr: &str, body: &str) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /admin/admission HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut status = String::new();
    BufReader::new(s).read_line(&mut status).unwrap();
    assert!(status.contains(" 204 "), "{status}");
}

#[test]
fn clients_andon_did_not_write_speak_mcp_on_both_wires() {
    let py = Command::new("python3")
        .args(["-c", "import websockets"])
        .output();
    assert!(
        py.is_ok_and(|o| o.status.success()),
        "needs python3 with `websockets` (scripts/test.sh installs it: python3 -m pip install websockets)"
    );
    clients(&start(), &[]);
}

/// Runs tests/wire/clients.py against the stand-in; it must pass every check.
fn clients(s: &StandIn, extra: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/wire/clients.py");
    let out = Command::new("python3")
        .args([script, &s.http, &s.tcp])
        .args(extra)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("{stdout}{stderr}");
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("all checks passed"));
}

/// What erlmcp bounds and a hostile client tries: silence (closed after the idle
/// timeout: WebSocket 1000, TCP EOF), a message left unfinished (1002, erlmcp's fragment
/// timeout), a batch and a second request under an id in flight (each a -32600, the
/// connection stays), and an id past 64 bits (echoed as sent). Before: a batch closed the
/// connection with 1002, and silence held a session forever.
#[test]
fn a_stream_wire_bounds_silence_and_answers_batches_and_duplicate_ids() {
    clients(&start_with(&["--idle-timeout", "2s"]), &["hostile"]);
}

const SCENARIO: &str = "name: tiny\nreplicas: 1\nclient_timeout: 2s\nphases:\n  - {name: load, duration: 4s, connections: 4, rate: {per_connection: 20}, mix: {tools/call: 0.5, ping: 0.5}}\nexpect:\n  - error_rate_below: 1%\n";

fn drill(target: &str) -> (i32, serde_json::Value) {
    common::drill(target, SCENARIO)
}

fn count(v: &serde_json::Value, class: &str) -> u64 {
    v["counts"]["errors"][class].as_u64().unwrap_or(0)
}

#[test]
fn the_drill_passes_over_websocket_and_tcp() {
    let s = start();
    for target in [
        format!("ws://{}/mcp/ws", s.http),
        format!("tcp://{}", s.tcp),
    ] {
        let (code, v) = drill(&target);
        assert_eq!(v["verdict"], "pass", "{target}: {v}");
        assert_eq!(code, 0);
        assert!(v["counts"]["ok"].as_u64().unwrap() > 200, "{target}: {v}");
        assert_eq!(v["sessions_opened"], 4, "{target}: {v}");
        assert_eq!(
            v["closed_by_server"],
            serde_json::json!({}),
            "{target}: {v}"
        );
    }
}

#[test]
fn sheds_on_a_stream_wire_count_as_sheds() {
    let s = start();
    admission(&s.http, r#"{"admit": 0.05}"#);
    for target in [
        format!("ws://{}/mcp/ws", s.http),
        format!("tcp://{}", s.tcp),
    ] {
        let (_, v) = drill(&target);
        assert!(count(&v, "shed") > 100, "{target}: {}", v["counts"]);
        assert_eq!(count(&v, "json_rpc"), 0, "{target}: {}", v["counts"]);
    }
}

#[test]
fn sessions_past_the_cap_are_closed_by_the_server_with_their_code() {
    let s = start();
    admission(&s.http, r#"{"admit": null, "max_sessions": 2}"#);
    let (_, v) = drill(&format!("ws://{}/mcp/ws", s.http));
    assert_eq!(v["sessions_opened"], 2, "{v}");
    assert!(v["session_open_failures"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        v["closed_by_server"]["1013"].as_u64().unwrap_or(0) >= 1,
        "{}",
        v["closed_by_server"]
    );
    let (code, v) = drill(&format!("tcp://{}", s.tcp));
    assert_eq!(v["sessions_opened"], 2, "{v}");
    assert!(v["session_open_failures"].as_u64().unwrap() >= 1, "{v}");
    // The sessions the server would not open are the schedule's too: their requests are
    // refused, not left out (a server refusing half its sessions passed a drill before).
    assert!(count(&v, "refused") > 50, "{}", v["counts"]);
    assert_eq!(code, 1);
}

#[test]
fn a_target_that_dies_mid_drill_deviates() {
    let mut s = start();
    let target = format!("ws://{}/mcp/ws", s.http);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        let _ = s.child.kill();
        let _ = s.child.wait();
    });
    let (code, v) = drill(&target);
    killer.join().unwrap();
    assert_eq!(code, 1, "{}", v["counts"]);
    assert!(count(&v, "refused") > 50, "{}", v["counts"]);
}

#[test]
fn an_overloaded_replica_is_a_failure_not_a_shed() {
    // One request in flight at most: the rest are refused at once as overload.
    let s = start_with(&["--queue-limit", "1"]);
    let (code, v) = drill(&format!("tcp://{}", s.tcp));
    assert_eq!(code, 1);
    assert!(count(&v, "json_rpc") > 10, "{}", v["counts"]);
    assert_eq!(count(&v, "shed"), 0, "{}", v["counts"]);
}

/// A TCP MCP server that answers the handshake, then `then` for each request.
fn fake_tcp(then: fn(u64) -> Option<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = stream.try_clone().unwrap();
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                    let Some(id) = v["id"].as_u64() else { continue };
                    let answer = if v["method"] == "initialize" {
                        Some(format!(
                            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"protocolVersion":"2025-03-26","capabilities":{{}},"serverInfo":{{"name":"fake","version":"1"}}}}}}"#
                        ))
                    } else {
                        then(id)
                    };
                    match answer {
                        Some(a) => {
                            if writeln!(w, "{a}").is_err() {
                                return;
                            }
                        }
                        None => return,
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_malformed_message_is_a_frame_error_and_a_close_is_counted() {
    let garbage = fake_tcp(|_| Some("<html>not json</html>".into()));
    let (code, v) = drill(&format!("tcp://{garbage}"));
    assert_eq!(code, 1);
    assert!(count(&v, "frame") >= 1, "{}", v["counts"]);
    assert_eq!(v["counts"]["ok"], 0, "{}", v["counts"]);

    // A server's own request that reuses one of our ids is not our answer.
    let asks_back = fake_tcp(|id| {
        Some(format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"ping\"}}\n{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{}}}}"
        ))
    });
    let (code, v) = drill(&format!("tcp://{asks_back}"));
    assert_eq!(code, 0, "{}", v["counts"]);
    assert_eq!(count(&v, "no_answer"), 0, "{}", v["counts"]);

    let hangs_up = fake_tcp(|_| None);
    let (code, v) = drill(&format!("tcp://{hangs_up}"));
    assert_eq!(code, 1);
    assert!(count(&v, "closed_by_server") >= 1, "{}", v["counts"]);
    // Hung up on soon after each open: backed off, not a reconnect storm (over 1,000
    // sessions in 4 s before).
    assert!(
        v["sessions_opened"].as_u64().unwrap() < 40,
        "{}",
        v["sessions_opened"]
    );
    assert!(
        v["closed_by_server"]["eof"].as_u64().unwrap_or(0) >= 1,
        "{}",
        v["closed_by_server"]
    );
}
