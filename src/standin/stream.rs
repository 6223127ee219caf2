//! MCP over erlmcp's stream transports: one connection is one session, and each JSON-RPC
//! message is one `\n`-terminated line (WebSocket: in a text frame; TCP: on the socket).
//! The framing lives in `wire.rs`; this is the session: it counts, sheds, delays and fails
//! requests as the replica model says (as the HTTP middleware does), and hands the rest to
//! the same rmcp server the HTTP endpoint runs, through rmcp's sink/stream transport.

use super::{ErrorLabel, MethodLabel, StandIn, TransportLabel};
use crate::standin::mcp::StandInMcp;
use crate::standin::realtime::Admit;
use futures::channel::mpsc as fmpsc;
use futures::StreamExt;
use rmcp::model::{ClientNotification, JsonRpcMessage};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::RoleServer;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

/// The JSON-RPC error code of a request refused at once (over the admission limit, the
/// queue full, or a new session past the cap). JSON-RPC leaves -32000..-32099 to servers;
/// erlmcp has no such code. The drill counts it as `shed`, as it counts a 503 over HTTP.
pub const REFUSED_CODE: i64 = -32029;

/// The JSON-RPC error code of a request past the replica's queue limit: a failure (the
/// drill counts it as `jsonrpc`), unlike a shed.
pub const OVERLOAD_CODE: i64 = -32000;

/// A line (message) longer than this closes the connection (WebSocket 1009), as erlmcp's
/// `max_message_size` does; the stand-in's is smaller than erlmcp's 16 MiB default.
pub const MAX_MESSAGE: usize = 1 << 20;

/// Requests one session may have unanswered; past it, refused as overload (a session
/// whose answers go nowhere must not grow without bound).
pub const MAX_UNANSWERED: usize = 10_000;

/// erlmcp's stream transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Ws,
    Tcp,
}

impl Wire {
    pub fn label(self) -> &'static str {
        match self {
            Wire::Ws => "ws",
            Wire::Tcp => "tcp",
        }
    }
}

/// What the session hands the connection's writer.
#[derive(Debug)]
pub enum Outbound {
    /// One JSON-RPC message, without its `\n`.
    Message(String),
}

/// Why a connection must be closed, as erlmcp closes a WebSocket: the code and reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Broken {
    pub code: u16,
    pub reason: &'static str,
}

pub const PARSE_ERROR: Broken = Broken {
    code: 1002,
    reason: "JSON-RPC parse error",
};

#[derive(serde::Deserialize)]
struct Peek {
    /// As sent: an id past 64 bits would come back from a `Value` as a float.
    #[serde(default)]
    id: Option<Box<serde_json::value::RawValue>>,
    /// Any JSON: a method that is not a string is an invalid request, not unparsable.
    #[serde(default)]
    method: Option<serde_json::Value>,
}

/// One open session. Dropping it ends the rmcp service and gives the session back.
pub struct Session {
    s: Arc<StandIn>,
    wire: Wire,
    /// The replica model's key for this session's rate and mailbox.
    key: String,
    to_rmcp: fmpsc::UnboundedSender<RxJsonRpcMessage<RoleServer>>,
    out: mpsc::UnboundedSender<Outbound>,
    /// Arrival times of requests rmcp is answering, by their id as JSON.
    started: Arc<Mutex<HashMap<String, Instant>>>,
    /// Cancelled when the connection goes: its requests still waiting out their modelled
    /// delay stop holding the replica's queue.
    gone: tokio_util::sync::CancellationToken,
    /// Cancelled when the MCP service behind the session has ended.
    ended: tokio_util::sync::CancellationToken,
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

impl Session {
    /// Opens a session on a new connection, or `None` when the session cap is reached
    /// (the connection is then refused at once; the caller says so on its wire).
    pub async fn open(
        s: &Arc<StandIn>,
        wire: Wire,
    ) -> Option<(Session, mpsc::UnboundedReceiver<Outbound>)> {
        // Counted first, checked after: connections opening at once cannot all slip in.
        s.stream_connections(wire).fetch_add(1, Ordering::Relaxed);
        if s.sessions_open().await > s.session_cap() {
            s.stream_connections(wire).fetch_sub(1, Ordering::Relaxed);
            s.metrics.sessions_refused.inc();
            return None;
        }
        // Unbounded: what waits in it is bounded by the queue limit (requests past it are
        // refused before they get here).
        let (to_rmcp, from_session) = fmpsc::unbounded::<RxJsonRpcMessage<RoleServer>>();
        let (to_pump, mut from_rmcp) = fmpsc::channel::<TxJsonRpcMessage<RoleServer>>(64);
        let (out, out_rx) = mpsc::unbounded_channel();
        let started: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        // When the MCP service ends (a first message that is not `initialize`, for one),
        // the connection is closed: a session nobody serves must not hold its slot.
        let ended = tokio_util::sync::CancellationToken::new();
        let on_end = ended.clone();
        tokio::spawn(async move {
            if let Ok(running) =
                rmcp::serve_server(StandInMcp::new(), (to_pump, from_session)).await
            {
                let _ = running.waiting().await;
            }
            on_end.cancel();
        });
        // rmcp's answers: timed (from the request's arrival, as over HTTP) and written.
        let (pump_out, pump_started, pump_s) = (out.clone(), started.clone(), s.clone());
        tokio::spawn(async move {
            while let Some(msg) = from_rmcp.next().await {
                let id = match &msg {
                    JsonRpcMessage::Response(r) => Some(&r.id),
                    JsonRpcMessage::Error(e) => e.id.as_ref(),
                    _ => None,
                };
                let key = id.and_then(key_of);
                let since = key
                    .as_ref()
                    .and_then(|k| pump_started.lock().ok()?.get(k).copied());
                if let Some(t) = since {
                    pump_s.metrics.duration.observe(t.elapsed().as_secs_f64());
                }
                let Ok(text) = serde_json::to_string(&msg) else {
                    continue;
                };
                let sent = pump_out.send(Outbound::Message(text)).is_ok();
                // Unanswered until queued for writing: a half-closed connection waits
                // for both (wire.rs).
                if let (Some(k), Ok(mut m)) = (key, pump_started.lock()) {
                    m.remove(&k);
                }
                if !sent {
                    break;
                }
            }
        });
        let key = format!(
            "{}-{}",
            wire.label(),
            NEXT_SESSION.fetch_add(1, Ordering::Relaxed)
        );
        Some((
            Session {
                s: s.clone(),
                wire,
                key,
                to_rmcp,
                out,
                started,
                gone: tokio_util::sync::CancellationToken::new(),
                ended,
            },
            out_rx,
        ))
    }

    /// Handles one message (a line, without its `\n`). `Err` closes the connection.
    pub fn handle(&mut self, line: &str) -> Result<(), Broken> {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            return Ok(());
        }
        // Valid JSON that is not one message object: a batch (which MCP 2025-06-18
        // dropped and rmcp does not take) or a bare value. An error answers it and the
        // connection stays, as a JSON-RPC server answers an invalid request. (Checked
        // first: serde reads a struct from an array too, by position.)
        if !line.trim_start().starts_with('{') {
            serde_json::from_str::<serde::de::IgnoredAny>(line).map_err(|_| PARSE_ERROR)?;
            self.error("jsonrpc");
            let why = if line.trim_start().starts_with('[') {
                "invalid request: batches are not supported; send one message per line"
            } else {
                "invalid request: not a JSON-RPC message object"
            };
            self.reply_error(&serde_json::Value::Null, -32600, why);
            return Ok(());
        }
        let peek: Peek = serde_json::from_str(line).map_err(|_| PARSE_ERROR)?;
        // As sent, so that every answer carries it back unchanged.
        let id = peek.id.filter(|r| r.get() != "null");
        let method = peek.method.map(|m| match m {
            serde_json::Value::String(m) => m,
            _ => "other".to_string(),
        });
        if let Some(m) = &method {
            self.s
                .metrics
                .requests
                .get_or_create(&MethodLabel::of(m))
                .inc();
        }
        let msg = match serde_json::from_str::<RxJsonRpcMessage<RoleServer>>(line) {
            Ok(msg) => msg,
            Err(e) => {
                // Valid JSON that is not a message rmcp knows (an unknown method, bad
                // params): a request gets its error, anything else is dropped.
                if let Some(id) = id {
                    self.error("jsonrpc");
                    self.reply_error(&id, -32600, &format!("invalid request: {e}"));
                }
                return Ok(());
            }
        };
        // A cancelled request may never be answered (rmcp drops its answer): it is no
        // longer owed.
        if let JsonRpcMessage::Notification(n) = &msg {
            if let ClientNotification::CancelledNotification(c) = &n.notification {
                if let Some(k) = c.params.request_id.as_ref().and_then(key_of) {
                    self.forget(&k);
                }
            }
        }
        let (Some(id), Some(method), JsonRpcMessage::Request(req)) = (id, method, &msg) else {
            // A notification or a client's answer: not work.
            let _ = self.to_rmcp.unbounded_send(msg);
            return Ok(());
        };
        // Keyed by rmcp's reading of the id, as its answer will carry it (rmcp reads 1.0
        // as 1).
        let Some(key) = key_of(&req.id) else {
            return Ok(());
        };
        if self.unanswered() >= MAX_UNANSWERED && self.give_up_stale() >= MAX_UNANSWERED {
            self.error("overload");
            self.reply_error(
                &id,
                OVERLOAD_CODE,
                "overload: too many requests in flight on this session",
            );
            return Ok(());
        }
        // A second request under an id still in flight could not be told from the first
        // by its answer: refused, and the first keeps its id.
        let idle = self.s.idle_timeout;
        let fresh = match self.started.lock() {
            Ok(mut started) if started.get(&key).is_none_or(|t| t.elapsed() >= idle) => {
                started.insert(key.clone(), Instant::now());
                true
            }
            _ => false,
        };
        if !fresh {
            self.error("jsonrpc");
            self.reply_error(&id, -32600, "invalid request: this id is already in flight");
            return Ok(());
        }
        if method == "initialize" {
            let _ = self.to_rmcp.unbounded_send(msg);
            return Ok(());
        }
        match self.s.model.request(Some(&self.key)) {
            Admit::Shed => {
                self.error("shed");
                self.reply_error(&id, REFUSED_CODE, "shed: over the admission limit");
                self.forget(&key);
            }
            Admit::Serve { delay, fail } => {
                let n = self.s.in_flight.fetch_add(1, Ordering::Relaxed);
                let held = Held(self.s.clone());
                if n >= self.s.queue_limit {
                    drop(held);
                    self.error("overload");
                    // Not REFUSED_CODE: an overloaded replica is a failure, not shedding.
                    self.reply_error(&id, OVERLOAD_CODE, "overload: queue full");
                    self.forget(&key);
                    return Ok(());
                }
                let (s, to_rmcp, out, started, gone) = (
                    self.s.clone(),
                    self.to_rmcp.clone(),
                    self.out.clone(),
                    self.started.clone(),
                    self.gone.clone(),
                );
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = gone.cancelled() => return,
                    }
                    drop(held);
                    if fail {
                        s.metrics
                            .errors
                            .get_or_create(&ErrorLabel {
                                error_type: "internal".into(),
                            })
                            .inc();
                        let _ = out.send(Outbound::Message(error_line(
                            &id,
                            -32603,
                            "internal error (modelled)",
                        )));
                        if let Ok(mut m) = started.lock() {
                            m.remove(&key);
                        }
                        return;
                    }
                    let _ = to_rmcp.unbounded_send(msg);
                });
            }
        }
        Ok(())
    }

    /// Resolves when the MCP service behind the session has ended: close the connection.
    pub async fn ended(&self) {
        self.ended.cancelled().await
    }

    /// Requests not answered yet (rmcp's or the model's).
    pub fn unanswered(&self) -> usize {
        self.started.lock().map_or(0, |m| m.len())
    }

    /// Gives up requests owed longer than the idle timeout (whatever dropped their
    /// answers, they must not hold the session open, nor the cap on unanswered requests,
    /// for good) and returns how many are left. A scan of them all, so only where an
    /// owed request would hold something: the idle close, a half-close's drain and that
    /// cap; a reused id looks at its own entry.
    pub fn give_up_stale(&self) -> usize {
        let idle = self.s.idle_timeout;
        self.started.lock().map_or(0, |mut m| {
            m.retain(|_, t| t.elapsed() < idle);
            m.len()
        })
    }

    fn forget(&self, key: &str) {
        if let Ok(mut m) = self.started.lock() {
            m.remove(key);
        }
    }

    fn error(&self, t: &str) {
        self.s
            .metrics
            .errors
            .get_or_create(&ErrorLabel {
                error_type: t.into(),
            })
            .inc();
    }

    fn reply_error(&self, id: &impl serde::Serialize, code: i64, message: &str) {
        let _ = self
            .out
            .send(Outbound::Message(error_line(id, code, message)));
    }
}

/// The key of a request in `started`: rmcp's id as JSON, as its answer carries it.
fn key_of(id: &rmcp::model::RequestId) -> Option<String> {
    serde_json::to_string(id).ok()
}

/// A request counted in the replica's queue until dropped.
struct Held(Arc<StandIn>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.gone.cancel();
        self.s
            .stream_connections(self.wire)
            .fetch_sub(1, Ordering::Relaxed);
        self.s.model.forget_session(&self.key);
        self.s
            .metrics
            .connections
            .get_or_create(&TransportLabel {
                transport: self.wire.label().into(),
            })
            .set(self.s.stream_connections(self.wire).load(Ordering::Relaxed) as i64);
    }
}

/// A JSON-RPC error answer, as one line's text. `id` is a `Value`, or the id's text as
/// sent (a `RawValue`), which is written back unchanged.
pub fn error_line(id: &impl serde::Serialize, code: i64, message: &str) -> String {
    #[derive(serde::Serialize)]
    struct Line<'a, I> {
        jsonrpc: &'static str,
        id: &'a I,
        error: Error<'a>,
    }
    #[derive(serde::Serialize)]
    struct Error<'a> {
        code: i64,
        message: &'a str,
    }
    let line = Line {
        jsonrpc: "2.0",
        id,
        error: Error { code, message },
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// The answer on a connection refused by the session cap (TCP: before closing it).
pub fn cap_refusal(cap: Option<u32>) -> String {
    let cap = cap.map_or(String::new(), |c| format!(" of {c}"));
    error_line(
        &serde_json::Value::Null,
        REFUSED_CODE,
        &format!("session cap{cap} reached: try again later"),
    )
}
