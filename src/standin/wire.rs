//! erlmcp's framing on its two stream transports, around a `stream::Session`:
//! - WebSocket at `/mcp/ws` (erlmcp_transport_ws): a text frame carries `\n`-terminated
//!   messages; a last piece without its `\n` waits for the next frame; a binary frame
//!   closes with 1003, unparsable JSON with 1002, a message past the size limit with 1009;
//!   the server pings every 30 s. Past the session cap: close 1013 ("try again later").
//! - TCP (erlmcp_transport_tcp, ranch `{packet, line}`): a message per line. Unparsable
//!   JSON gets JSON-RPC's -32700 and the connection stays; past the session cap, one
//!   refusal line, then the connection is closed.

use super::stream::{self, Broken, Outbound, Session, Wire, MAX_MESSAGE, PARSE_ERROR};
use super::StandIn;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};

/// erlmcp's PING_INTERVAL.
const PING_EVERY: Duration = Duration::from_secs(30);

/// erlmcp's FRAGMENT_TIMEOUT (WebSocket): a message begun and left without its `\n` this
/// long closes the connection with 1002 (or the idle timeout, if that is shorter).
const FRAGMENT_TIMEOUT: Duration = Duration::from_secs(30);

const FRAGMENT_EXPIRED: Broken = Broken {
    code: 1002,
    reason: "Fragment reassembly timeout",
};

const IDLE: Broken = Broken {
    code: 1000,
    reason: "idle timeout",
};

const TOO_BIG: Broken = Broken {
    code: 1009,
    reason: "Message exceeds maximum size",
};

pub async fn ws_upgrade(State(s): State<Arc<StandIn>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| ws_session(s, socket))
}

async fn ws_session(s: Arc<StandIn>, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let Some((mut session, mut out)) = Session::open(&s, Wire::Ws).await else {
        let _ = tx
            .send(Message::Close(Some(CloseFrame {
                code: 1013,
                reason: "session cap reached: try again later".into(),
            })))
            .await;
        return;
    };
    let mut pending = String::new();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    // Silence and unfinished messages are bounded in time, as erlmcp bounds them
    // (cowboy's idle_timeout counts any frame received; pongs to our pings included).
    let idle = s.idle_timeout;
    let mut heard = tokio::time::Instant::now();
    let mut fragment_since: Option<tokio::time::Instant> = None;
    let broken = loop {
        let fragment_deadline = fragment_since.map(|t| t + FRAGMENT_TIMEOUT.min(idle));
        let deadline = fragment_deadline.map_or(heard + idle, |f| f.min(heard + idle));
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                let now = tokio::time::Instant::now();
                if fragment_deadline.is_some_and(|f| now >= f) {
                    break Some(FRAGMENT_EXPIRED);
                }
                if now >= heard + idle {
                    break Some(IDLE);
                }
            }
            o = out.recv() => {
                let Some(Outbound::Message(m)) = o else { break None };
                // Everything ready goes out in one flush.
                let mut batch = vec![m];
                while let Ok(Outbound::Message(m)) = out.try_recv() {
                    batch.push(m);
                }
                let mut failed = false;
                for mut m in batch {
                    m.push('\n');
                    failed |= tx.feed(Message::Text(m.into())).await.is_err();
                }
                if failed || tx.flush().await.is_err() {
                    break None;
                }
            }
            m = rx.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    heard = tokio::time::Instant::now();
                    // Only the new text can hold a `\n`: 1-byte frames cost no rescans.
                    let fresh = pending.len();
                    pending.push_str(t.as_str());
                    let ended_one = pending[fresh..].contains('\n');
                    if ended_one {
                        if let Err(b) = handle_lines(&mut pending, &mut session) {
                            break Some(b);
                        }
                    }
                    if pending.len() > MAX_MESSAGE {
                        break Some(TOO_BIG);
                    }
                    // The clock of an unfinished message starts with its first piece:
                    // what is left after a `\n` began in this frame.
                    fragment_since = if pending.is_empty() {
                        None
                    } else if ended_one || fragment_since.is_none() {
                        Some(heard)
                    } else {
                        fragment_since
                    };
                }
                Some(Ok(Message::Binary(_))) => break Some(Broken {
                    code: 1003,
                    reason: "Binary frames not supported",
                }),
                // Pings are answered by the WebSocket layer; pongs need nothing.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => heard = tokio::time::Instant::now(),
                Some(Err(e)) => break close_for(e),
                // The layer below queued the echo of the client's close: send it.
                // The layer below answers the client's close itself; it is sent while the
                // stream is read to its end.
                Some(Ok(Message::Close(_))) => {
                    let _ = tx.flush().await;
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while rx.next().await.is_some() {}
                    })
                    .await;
                    break None;
                }
                None => break None,
            },
            _ = session.ended() => break Some(Broken {
                code: 1002,
                reason: "the MCP session ended (was the first message initialize?)",
            }),
            _ = ping.tick() => {
                if tx.send(Message::Ping(Default::default())).await.is_err() {
                    break None;
                }
            }
        }
    };
    if let Some(b) = broken {
        let _ = tx
            .send(Message::Close(Some(CloseFrame {
                code: b.code,
                reason: b.reason.into(),
            })))
            .await;
    }
}

/// The close a broken frame deserves, as erlmcp (cowboy) sends it: 1009 past the size
/// limit, 1007 for text that is not UTF-8, 1002 for other protocol errors.
fn close_for(e: axum::Error) -> Option<Broken> {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
    let e = e.into_inner();
    match e.downcast_ref::<WsError>()? {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => Some(TOO_BIG),
        WsError::Utf8(_) => Some(Broken {
            code: 1007,
            reason: "Invalid UTF-8 encoding",
        }),
        WsError::Protocol(_) => Some(Broken {
            code: 1002,
            reason: "Protocol error",
        }),
        _ => None,
    }
}

/// Hands every complete line in `pending` to the session and keeps the rest.
fn handle_lines(pending: &mut String, session: &mut Session) -> Result<(), Broken> {
    let mut done = 0;
    while let Some(i) = pending[done..].find('\n') {
        let line = &pending[done..done + i];
        done += i + 1;
        session.handle(line)?;
    }
    pending.drain(..done);
    Ok(())
}

/// Accepts TCP sessions until the task is dropped.
pub async fn serve_tcp(s: Arc<StandIn>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                let _ = sock.set_nodelay(true);
                tokio::spawn(tcp_session(s.clone(), sock));
            }
            Err(e) => {
                // Out of file descriptors, for one: wait rather than spin.
                tracing::warn!(error = %e, "stand-in: TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn tcp_session(s: Arc<StandIn>, sock: TcpStream) {
    let (r, w) = sock.into_split();
    let mut w = BufWriter::new(w);
    let Some((mut session, mut out)) = Session::open(&s, Wire::Tcp).await else {
        let cap = s.admission.lock().ok().and_then(|a| a.max_sessions);
        let mut line = stream::cap_refusal(cap);
        line.push('\n');
        let _ = w.write_all(line.as_bytes()).await;
        let _ = w.shutdown().await;
        return;
    };
    // Bytes, not text: a line that is not UTF-8 is unparsable JSON (-32700), not the end.
    let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), MAX_MESSAGE);
    let mut lines = FramedRead::new(r, codec);
    // The client's end of the stream (a half-close, as `nc -N` does): stop reading, but
    // answer what it asked first.
    let mut reading = true;
    let mut drain_until = None;
    // erlmcp's idle timeout: no line received and no answer sent for this long. Bytes
    // that never make a line (a slow client, or a hostile one) do not count.
    let idle = s.idle_timeout;
    let mut active = tokio::time::Instant::now();
    loop {
        if !reading && session.give_up_stale() == 0 && out.is_empty() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(active + idle), if reading => {
                if session.give_up_stale() == 0 && out.is_empty() {
                    break;
                }
                // Answers still owed: the client is waiting, not idle.
                active = tokio::time::Instant::now();
            }
            o = out.recv() => {
                active = tokio::time::Instant::now();
                let Some(Outbound::Message(m)) = o else { break };
                let mut failed = write_line(&mut w, &m).await;
                while let Ok(Outbound::Message(m)) = out.try_recv() {
                    failed |= write_line(&mut w, &m).await;
                }
                if failed || w.flush().await.is_err() {
                    break;
                }
            }
            l = lines.next(), if reading => match l {
                Some(Ok(line)) => {
                    active = tokio::time::Instant::now();
                    let parsed = std::str::from_utf8(&line).map_err(|_| PARSE_ERROR);
                    if parsed.and_then(|l| session.handle(l)) == Err(PARSE_ERROR) {
                        let e = stream::error_line(&serde_json::Value::Null, -32700, PARSE_ERROR.reason);
                        if write_line(&mut w, &e).await || w.flush().await.is_err() {
                            break;
                        }
                    }
                }
                Some(Err(AnyDelimiterCodecError::MaxChunkLengthExceeded)) => {
                    let e = stream::error_line(&serde_json::Value::Null, -32600, TOO_BIG.reason);
                    let _ = write_line(&mut w, &e).await;
                    let _ = w.flush().await;
                    break;
                }
                Some(Err(AnyDelimiterCodecError::Io(_))) => break,
                None => {
                    reading = false;
                    drain_until = Some(tokio::time::Instant::now() + HALF_CLOSE_DRAIN);
                }
            },
            _ = sleep_until(drain_until) => break,
            _ = session.ended() => break,
        }
    }
    let _ = w.shutdown().await;
}

/// Answers still owed after a client's half-close are written for at most this long.
const HALF_CLOSE_DRAIN: Duration = Duration::from_secs(60);

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Writes one message and its `\n`; true when the connection is gone.
async fn write_line(w: &mut BufWriter<tokio::net::tcp::OwnedWriteHalf>, m: &str) -> bool {
    w.write_all(m.as_bytes()).await.is_err() || w.write_all(b"\n").await.is_err()
}
