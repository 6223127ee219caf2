//! The stand-in's admission, on a real `andon stand-in` process over real HTTP: the
//! session cap refuses a new session at once with 503, Retry-After and a JSON-RPC error,
//! counts it in erlmcp_sessions_refused_total, and lets a session in again once one has
//! gone.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct StandIn {
    child: Child,
    addr: String,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> StandIn {
    start_with(&[])
}

fn start_with(extra: &[&str]) -> StandIn {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_andon"))
        .args(["stand-in", "--listen", &addr])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("andon stand-in starts");
    let s = StandIn { child, addr };
    let deadline = Instant::now() + Duration::from_secs(20);
    while request(&s.addr, "GET", "/healthz", &[], "").0 != 200 {
        assert!(Instant::now() < deadline, "stand-in did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

/// One HTTP/1.1 request: (status, headers lower-cased, body).
fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new(), String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    // A reset while the stand-in starts (its port is bound before it serves) is no
    // answer, as a refused connection is: the start loop asks again.
    if write!(s, "{head}\r\n{body}").is_err() {
        return (0, String::new(), String::new());
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    let (h, b) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = h
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, h.to_ascii_lowercase(), b.to_string())
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":7,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#;
const MCP: [(&str, &str); 2] = [
    ("Content-Type", "application/json"),
    ("Accept", "application/json, text/event-stream"),
];

fn session_id(headers: &str) -> Option<String> {
    headers
        .lines()
        .find_map(|l| l.strip_prefix("mcp-session-id:"))
        .map(|v| v.trim().to_string())
}

#[test]
fn the_session_cap_refuses_new_sessions_fast_and_lets_them_in_when_room_returns() {
    let s = start();
    let post = |body: &str| {
        request(
            &s.addr,
            "POST",
            "/admin/admission",
            &[("Content-Type", "application/json")],
            body,
        )
        .0
    };
    assert_eq!(
        post(r#"{"admit": null, "max_sessions": 0}"#),
        400,
        "a cap of 0 is refused"
    );
    assert_eq!(post(r#"{"admit": null, "max_sessions": 2}"#), 204);

    let mut ids = Vec::new();
    for _ in 0..2 {
        let (code, headers, _) = request(&s.addr, "POST", "/mcp", &MCP, INIT);
        assert_eq!(code, 200, "{headers}");
        ids.push(session_id(&headers).expect("a session id"));
    }
    let started = Instant::now();
    let (code, headers, body) = request(&s.addr, "POST", "/mcp", &MCP, INIT);
    assert_eq!(code, 503, "the third session is past the cap: {headers}");
    assert!(headers.contains("retry-after: 1"), "{headers}");
    assert!(session_id(&headers).is_none());
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_default();
    assert_eq!(v["id"], 7, "a JSON-RPC error for the request: {body}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("session cap of 2")),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once, not queued"
    );

    let metrics = request(&s.addr, "GET", "/metrics", &[], "").2;
    assert!(
        metrics.contains("erlmcp_sessions_refused_total 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("erlmcp_requests_total{method=\"initialize\"} 3"),
        "a refusal is not a request"
    );

    // One session goes: a new one gets in.
    let mut del: Vec<(&str, &str)> = MCP.to_vec();
    del.push(("Mcp-Session-Id", &ids[0]));
    request(&s.addr, "DELETE", "/mcp", &del, "");
    let (code, headers, _) = request(&s.addr, "POST", "/mcp", &MCP, INIT);
    assert_eq!(code, 200, "room again after a DELETE: {headers}");

    // Without a cap, sessions are not limited.
    assert_eq!(post(r#"{"admit": null}"#), 204);
    let (code, _, _) = request(&s.addr, "POST", "/mcp", &MCP, INIT);
    assert_eq!(code, 200);
}

/// Issue 9, §3: answers as the spec and the reference servers give them, and a bound on
/// the sessions one stand-in holds.
#[test]
fn garbage_unknown_sessions_and_abandoned_handshakes_get_proper_answers() {
    let s = start_with(&["--max-sessions", "3"]);
    // Not JSON: 400 with JSON-RPC's parse error (rmcp answered 415 in plain text).
    let (code, _, body) = request(&s.addr, "POST", "/mcp", &MCP, "this is not json");
    assert_eq!(code, 400, "{body}");
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_default();
    assert_eq!(v["error"]["code"], -32700, "{body}");
    // DELETE of a session nobody opened: 404 (rmcp answered 202).
    let mut del: Vec<(&str, &str)> = MCP.to_vec();
    del.push(("Mcp-Session-Id", "no-such-session"));
    assert_eq!(request(&s.addr, "DELETE", "/mcp", &del, "").0, 404);
    // Initializes nobody follows up: at most --max-sessions are held, the rest refused.
    let answers: Vec<(u16, String, String)> = (0..5)
        .map(|_| request(&s.addr, "POST", "/mcp", &MCP, INIT))
        .collect();
    let codes: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(codes, [200, 200, 200, 503, 503]);
    // A known session's DELETE ends it and makes room.
    let id = session_id(&answers[0].1).expect("a session id");
    let mut del: Vec<(&str, &str)> = MCP.to_vec();
    del.push(("Mcp-Session-Id", &id));
    let code = request(&s.addr, "DELETE", "/mcp", &del, "").0;
    assert!((200..300).contains(&code), "{code}");
    assert_eq!(request(&s.addr, "POST", "/mcp", &MCP, INIT).0, 200);
}
