//! The drill must not count non-answers as answers (issue 9, §3): driven against a fake
//! MCP endpoint that answers every POST with an empty 200 (and a session id), a drill
//! that expects a low error rate deviates, and says why.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;

/// Answers every request on every connection with `status` and `body` (keep-alive, as
/// the drill's client uses), until the process ends.
fn fake_server(status: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut w = stream;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let l = line.to_ascii_lowercase();
                        if let Some(v) = l.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut buf = vec![0; len];
                    if r.read_exact(&mut buf).is_err() {
                        return;
                    }
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nmcp-session-id: fake-session\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if w.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

const SCENARIO: &str = "name: tiny\nreplicas: 1\nphases:\n  - {name: load, duration: 3s, connections: 2, rate: {per_connection: 5}}\nexpect:\n  - error_rate_below: 1%\n";

fn drill(addr: &str) -> (i32, serde_json::Value) {
    let dir = std::env::temp_dir().join(format!("andon-drill-answers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sc = dir.join("tiny.yaml");
    std::fs::write(&sc, SCENARIO).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_andon"))
        .args(["drill", sc.to_str().unwrap(), "--target"])
        .arg(format!("http://{addr}"))
        .arg("--json")
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

#[test]
fn an_empty_200_is_no_answer_and_the_drill_deviates() {
    let addr = fake_server("200 OK", "");
    let (code, json) = drill(&addr);
    let text = json.to_string();
    assert_eq!(code, 1, "deviated: {text}");
    assert!(text.contains("no_answer"), "the class is named: {text}");
}

#[test]
fn a_result_with_is_error_counts_as_a_tool_error() {
    let addr = fake_server(
        "200 OK",
        r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#,
    );
    let (code, json) = drill(&addr);
    let text = json.to_string();
    assert_eq!(code, 1, "deviated: {text}");
    assert!(text.contains("tool_error"), "{text}");
}

#[test]
fn real_results_pass() {
    let addr = fake_server("200 OK", r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
    let (code, json) = drill(&addr);
    assert_eq!(code, 0, "{json}");
}
