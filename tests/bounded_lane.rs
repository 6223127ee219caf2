//! The bounded load lane (`--http-connections N`) reads HTTP/1.1 answers itself
//! (src/drill/http_lane.rs): driven against raw fakes that answer the load the ways real
//! servers and proxies do (chunked, close-delimited, `Connection: close`, idle keep-alive
//! connections closed by the server) and the ways hostile ones do (a body too large, a
//! body that never ends), every answer is read whole, nothing is counted twice, and no
//! answer grows the drill's memory or hangs it.

#[path = "common/drill.rs"]
#[allow(dead_code)]
mod common;
#[path = "common/request.rs"]
#[allow(dead_code)]
mod request;

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the fake does after writing a load answer.
#[derive(Clone, Copy)]
enum After {
    KeepOpen,
    /// Closes the connection (the answer said so, or its body ends with the close).
    Close,
    /// Closes the connection this long after the answer, as an idle timeout does.
    CloseIdle(Duration),
    /// Writes nothing more and keeps the connection open.
    Stall,
}

const RESULT: &str = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;

/// Serves sessions as MCP does, and answers the n-th load request (over all connections)
/// with `answer(n)`: raw bytes and what to do after. Returns the address and the number of
/// TCP connections accepted.
fn raw_server(
    answer: impl Fn(u64) -> (Vec<u8>, After) + Send + Sync + 'static,
) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let answer = Arc::new(answer);
    let (count, accepted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let acc = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            acc.fetch_add(1, Ordering::SeqCst);
            let (answer, count) = (answer.clone(), count.clone());
            std::thread::spawn(move || serve_connection(stream, &*answer, &count));
        }
    });
    (addr, accepted)
}

fn serve_connection(
    stream: TcpStream,
    answer: &dyn Fn(u64) -> (Vec<u8>, After),
    count: &AtomicU64,
) {
    let mut r = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream;
    while let Some(request::Req { method, body, .. }) = request::read_request(&mut r) {
        let (bytes, after) = if method == "DELETE" || !body.contains("\"id\"") {
            (plain("202 Accepted", ""), After::KeepOpen)
        } else if body.contains("\"initialize\"") {
            (
                format!(
                    "HTTP/1.1 200 OK\r\nmcp-session-id: s1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
                    RESULT.len(),
                    RESULT.replace("\"id\":1", "\"id\":0")
                )
                .into_bytes(),
                After::KeepOpen,
            )
        } else {
            answer(count.fetch_add(1, Ordering::SeqCst))
        };
        if w.write_all(&bytes).is_err() {
            return;
        }
        match after {
            After::KeepOpen => {}
            After::Close => return,
            After::CloseIdle(d) => {
                std::thread::sleep(d);
                return;
            }
            After::Stall => {
                std::thread::sleep(Duration::from_secs(30));
                return;
            }
        }
    }
}

/// An answer with a length.
fn plain(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// 2 sessions × 10/s for 2 s on the bounded lane: 40 requests.
const SCENARIO: &str = "name: lane\nreplicas: 1\nclient_timeout: 1s\nphases:\n  - {name: load, duration: 2s, connections: 2, rate: {per_connection: 10}}\n";

fn drill_bounded(addr: &str, connections: &str) -> serde_json::Value {
    let (_, json) = common::drill_with(
        &format!("http://{addr}"),
        SCENARIO,
        &["--http-connections", connections],
    );
    json
}

fn errors(json: &serde_json::Value, class: &str) -> u64 {
    json["counts"]["errors"][class].as_u64().unwrap_or(0)
}

/// Chunked (the body split over chunks, a trailer after the last), close-delimited
/// (no length: the body ends with the connection) and `Connection: close` answers, in
/// turn, each an answer the drill reads whole.
#[test]
fn chunked_close_delimited_and_closing_answers_are_read_whole() {
    let (addr, accepted) = raw_server(|n| {
        let (head, tail) = RESULT.split_at(10);
        match n % 3 {
            0 => (
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{head}\r\n{:X};ext=1\r\n{tail}\r\n0\r\nx-trailer: 1\r\n\r\n",
                    head.len(),
                    tail.len()
                )
                .into_bytes(),
                After::KeepOpen,
            ),
            1 => (
                format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{RESULT}")
                    .into_bytes(),
                After::Close,
            ),
            _ => (
                format!(
                    "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{RESULT}",
                    RESULT.len()
                )
                .into_bytes(),
                After::Close,
            ),
        }
    });
    let json = drill_bounded(&addr, "2");
    let ok = json["counts"]["ok"].as_u64().unwrap_or(0);
    assert!(ok >= 35, "{ok} answered of about 40: {json}");
    assert_eq!(json["counts"]["errors"], serde_json::json!({}), "{json}");
    // Two of every three load answers close their connection: the lane opened new ones.
    assert!(accepted.load(Ordering::SeqCst) > 10, "{json}");
}

/// A server that closes idle keep-alive connections (an idle timeout shorter than the
/// gap between requests): the lane sees the close before it sends and opens a new
/// connection; no request is lost to it.
#[test]
fn idle_connections_the_server_closed_cost_no_request() {
    let (addr, accepted) = raw_server(|_| {
        (
            plain("200 OK", RESULT),
            After::CloseIdle(Duration::from_millis(20)),
        )
    });
    // One connection, 20/s: 50 ms between requests, the server closes after 20.
    let json = drill_bounded(&addr, "1");
    let ok = json["counts"]["ok"].as_u64().unwrap_or(0);
    assert!(ok >= 35, "{ok} answered of about 40: {json}");
    assert_eq!(json["counts"]["errors"], serde_json::json!({}), "{json}");
    assert!(
        accepted.load(Ordering::SeqCst) > 20,
        "a connection per request: {json}"
    );
}

/// A length past the lane's limit (4 MiB) is refused without reading or allocating it,
/// and a chunked body that goes on past it is cut there: both count as resets, not as
/// timeouts after the drill had read (or tried to) gigabytes.
#[test]
fn answers_past_the_size_limit_are_resets_not_memory() {
    let (addr, _) = raw_server(|n| {
        if n % 2 == 0 {
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 107374182400\r\n\r\n{".to_vec(),
                After::Stall,
            )
        } else {
            // 8 MiB in chunks of 64 KiB, and no last chunk.
            let mut b = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..128 {
                b.extend_from_slice(b"10000\r\n");
                b.extend(std::iter::repeat_n(b' ', 1 << 16));
                b.extend_from_slice(b"\r\n");
            }
            (b, After::Stall)
        }
    });
    let json = drill_bounded(&addr, "4");
    assert_eq!(json["counts"]["ok"].as_u64().unwrap_or(0), 0, "{json}");
    assert!(errors(&json, "reset") >= 10, "{json}");
    assert_eq!(errors(&json, "timeout"), 0, "{json}");
}

/// An answer that stops halfway (its head, part of its body, then nothing) times out at
/// the client timeout, and the connection it held is not used again: the requests after
/// it are answered.
#[test]
fn an_answer_that_stops_halfway_times_out_and_its_connection_is_dropped() {
    let (addr, accepted) = raw_server(|n| {
        if n == 3 {
            (
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{{\"json",
                    RESULT.len()
                )
                .into_bytes(),
                After::Stall,
            )
        } else {
            (plain("200 OK", RESULT), After::KeepOpen)
        }
    });
    let json = drill_bounded(&addr, "1");
    assert!((1..=3).contains(&errors(&json, "timeout")), "{json}");
    assert_eq!(errors(&json, "reset"), 0, "{json}");
    let ok = json["counts"]["ok"].as_u64().unwrap_or(0);
    // The timeout held the one connection for 1 s: the requests queued behind it still
    // go out after it, late, on a new connection.
    assert!(ok >= 30, "{ok} answered: {json}");
    assert!(accepted.load(Ordering::SeqCst) >= 2, "{json}");
}

/// A chunk size of 2^64 - 1 after some body (httparse takes 16 hex digits): a reset, and
/// the connection's loop goes on with the next requests. Adding it to the body's length
/// overflowed, and the loop's task died with the request it held: with one connection
/// no request after it was ever answered (the review's reproduction).
#[test]
fn a_chunk_size_of_two_to_the_64_is_a_reset_and_the_loop_goes_on() {
    let (addr, _) = raw_server(|n| {
        if n == 0 {
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\nffffffffffffffff\r\nyyyy"
                    .to_vec(),
                After::Close,
            )
        } else {
            (plain("200 OK", RESULT), After::KeepOpen)
        }
    });
    let json = drill_bounded(&addr, "1");
    assert_eq!(errors(&json, "reset"), 1, "{json}");
    let ok = json["counts"]["ok"].as_u64().unwrap_or(0);
    assert!(ok >= 35, "{ok} answered of about 40: {json}");
}

/// A connection the server closes while it is idle is closed by the drill then, not when
/// the drill next sends on it (never, for a loop at the bottom of the idle list, or one
/// for a replica that is gone): the server half-closes after each answer and sees the
/// drill's close before the drill's end deletes its sessions. Before, every such socket
/// sat half-closed (CLOSE_WAIT) until the drill exited.
#[test]
fn connections_the_server_closes_while_idle_are_closed_at_once() {
    use std::sync::atomic::AtomicBool;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let deleting = Arc::new(AtomicBool::new(false));
    let (closed_before, closed_after) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (d, before, after) = (
        deleting.clone(),
        closed_before.clone(),
        closed_after.clone(),
    );
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (d, before, after) = (d.clone(), before.clone(), after.clone());
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut w = stream;
                while let Some(request::Req { method, body, .. }) = request::read_request(&mut r) {
                    // The drill's end, not the probe's DELETE before the load.
                    if method == "DELETE"
                        && before.load(Ordering::SeqCst) + after.load(Ordering::SeqCst) > 0
                    {
                        d.store(true, Ordering::SeqCst);
                    }
                    let load = body.contains("\"id\"") && !body.contains("\"initialize\"");
                    let answer = if body.contains("\"initialize\"") {
                        format!(
                            "HTTP/1.1 200 OK\r\nmcp-session-id: s1\r\ncontent-length: {}\r\n\r\n{}",
                            RESULT.len(),
                            RESULT
                        )
                        .into_bytes()
                    } else if load {
                        plain("200 OK", RESULT)
                    } else {
                        plain("202 Accepted", "")
                    };
                    if w.write_all(&answer).is_err() {
                        return;
                    }
                    if load {
                        // Half-closed: the drill's close shows as the end of what it sends.
                        let _ = w.shutdown(std::net::Shutdown::Write);
                        let mut rest = Vec::new();
                        let _ = r.read_to_end(&mut rest);
                        let closed = if d.load(Ordering::SeqCst) {
                            &after
                        } else {
                            &before
                        };
                        closed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            });
        }
    });
    let scenario = "name: idle-close\nreplicas: 1\nclient_timeout: 1s\nphases:\n  - {name: load, duration: 1s, connections: 2, rate: {per_connection: 4}}\n  - {name: quiet, duration: 2s, connections: 2, rate: {total: 0}}\n";
    let (_, json) = common::drill_with(&format!("http://{addr}"), scenario, &[]);
    assert_eq!(json["counts"]["errors"], serde_json::json!({}), "{json}");
    let (before, after) = (
        closed_before.load(Ordering::SeqCst),
        closed_after.load(Ordering::SeqCst),
    );
    // 8 requests, each on a connection the server closes after it.
    assert!(
        before >= 4,
        "{before} load connections closed during the drill ({after} after): {json}"
    );
    assert_eq!(after, 0, "{after} still open at the drill's end: {json}");
}
