//! MCP sessions on erlmcp's stream wires: WebSocket (a message per text frame, each ending
//! in `\n`) and TCP (a message per line). A session is a connection; requests are matched
//! to answers by their JSON-RPC id, so many are in flight on one connection at once, as
//! erlmcp's own clients send them.
//!
//! Everything runs on the drill's one thread (a LocalSet): a reader and a writer task per
//! connection, sharing the pending requests through an `Rc`.

use super::mcp::{self, ErrorClass};
use super::stats::Stats;
use super::Wire;
use futures::{SinkExt, StreamExt};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::codec::{FramedRead, LinesCodec};

/// An answer longer than this is a broken frame (the stand-in's limit is 1 MiB as well).
const MAX_MESSAGE: usize = 1 << 20;

enum Reply {
    Answer(String),
    Lost(ErrorClass),
}

/// One open connection, with its session.
pub struct StreamConn {
    out: RefCell<Option<mpsc::UnboundedSender<String>>>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Reply>>>,
    /// Set when the connection is gone: how its requests end.
    lost: Cell<Option<ErrorClass>>,
    /// We closed it: the server's answering close (or end) is not its doing.
    closing: Cell<bool>,
}

#[derive(serde::Deserialize)]
struct Id {
    id: Option<serde_json::Value>,
    error: Option<serde::de::IgnoredAny>,
    method: Option<serde::de::IgnoredAny>,
}

impl StreamConn {
    pub fn is_lost(&self) -> bool {
        self.lost.get().is_some()
    }

    /// Sends `body` (a request with `id`) and waits for its answer until `deadline`.
    pub async fn request(&self, id: u64, body: String, deadline: Instant) -> Option<ErrorClass> {
        if let Some(c) = self.lost.get() {
            return Some(c);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        if !self.write(body) {
            self.pending.borrow_mut().remove(&id);
            return Some(self.lost.get().unwrap_or(ErrorClass::Reset));
        }
        match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), rx).await {
            Err(_) => {
                self.pending.borrow_mut().remove(&id);
                Some(ErrorClass::Timeout)
            }
            Ok(Err(_)) => Some(self.lost.get().unwrap_or(ErrorClass::Reset)),
            Ok(Ok(Reply::Lost(c))) => Some(c),
            Ok(Ok(Reply::Answer(a))) => mcp::classify_message(a.as_bytes()),
        }
    }

    /// Sends a notification: no answer is awaited.
    fn notify(&self, body: &str) -> bool {
        self.write(body.to_string())
    }

    /// Hands a message to the writer; false once the connection is closed or gone.
    fn write(&self, body: String) -> bool {
        self.out
            .borrow()
            .as_ref()
            .is_some_and(|o| o.send(body).is_ok())
    }

    /// Closes the connection: the writer says goodbye (WebSocket close 1000, TCP FIN).
    pub fn close(&self) {
        self.closing.set(true);
        self.out.borrow_mut().take();
    }

    /// Counts a close by the server, unless it answers ours.
    fn closed_by_server(&self, stats: &RefCell<Stats>, code: &str) {
        // Not ours to close, and not already lost another way (a refusal line before the
        // end is the refusal; the end that follows is not a second event).
        if !self.closing.get() && self.lost.get().is_none() {
            stats.borrow_mut().closed_by_server(code);
        }
    }

    /// The connection is gone: every request waiting on it ends as `class`.
    fn lose(&self, class: ErrorClass) {
        if self.lost.get().is_none() {
            self.lost.set(Some(class));
        }
        self.out.borrow_mut().take();
        for (_, tx) in self.pending.borrow_mut().drain() {
            let _ = tx.send(Reply::Lost(class));
        }
    }

    /// One message read: the answer to a pending request, or else dropped (a server's
    /// notification or ping). `false`: not a JSON-RPC message at all.
    fn deliver(&self, line: &str) -> bool {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            return true;
        }
        let Ok(m) = serde_json::from_str::<Id>(line) else {
            return false;
        };
        // A message with a method is the server's own request or notification, never an
        // answer, whatever its id.
        if m.method.is_some() {
            return true;
        }
        match m.id.as_ref().and_then(serde_json::Value::as_u64) {
            Some(id) => {
                if let Some(tx) = self.pending.borrow_mut().remove(&id) {
                    let _ = tx.send(Reply::Answer(line.to_string()));
                }
            }
            // An error the server could not tie to a request (a refusal at the door, or
            // it could not read ours): the connection is no use.
            None if m.error.is_some() => {
                self.lose(mcp::classify_message(line.as_bytes()).unwrap_or(ErrorClass::JsonRpc));
            }
            None => {}
        }
        true
    }
}

/// Opens a connection to `addr` on `wire` and initializes its session. Closes by the
/// server (a WebSocket close code, or a TCP end) are counted in `stats`.
pub async fn open(
    wire: &Wire,
    addr: SocketAddr,
    timeout: Duration,
    stats: &Rc<RefCell<Stats>>,
) -> Result<Rc<StreamConn>, ErrorClass> {
    let deadline = Instant::now() + timeout;
    let at = tokio::time::Instant::from_std(deadline);
    let tcp = match tokio::time::timeout_at(at, TcpStream::connect(addr)).await {
        Err(_) => return Err(ErrorClass::Timeout),
        Ok(Err(_)) => return Err(ErrorClass::Refused),
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    let (out, out_rx) = mpsc::unbounded_channel::<String>();
    let conn = Rc::new(StreamConn {
        out: RefCell::new(Some(out)),
        pending: RefCell::default(),
        lost: Cell::new(None),
        closing: Cell::new(false),
    });
    match wire {
        Wire::Ws(path) => {
            let url = format!("ws://{addr}{path}");
            let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
            config.max_message_size = Some(MAX_MESSAGE);
            let ws = tokio::time::timeout_at(
                at,
                tokio_tungstenite::client_async_with_config(url, tcp, Some(config)),
            )
            .await;
            let ws = match ws {
                Err(_) => return Err(ErrorClass::Timeout),
                Ok(Err(_)) => return Err(ErrorClass::Refused),
                Ok(Ok((ws, _))) => ws,
            };
            let (sink, stream) = ws.split();
            tokio::task::spawn_local(ws_writer(sink, out_rx));
            tokio::task::spawn_local(ws_reader(stream, conn.clone(), stats.clone()));
        }
        Wire::Tcp => {
            let (r, w) = tcp.into_split();
            tokio::task::spawn_local(tcp_writer(BufWriter::new(w), out_rx));
            tokio::task::spawn_local(tcp_reader(r, conn.clone(), stats.clone()));
        }
        Wire::Http => return Err(ErrorClass::Refused),
    }
    match conn.request(0, mcp::initialize_body(), deadline).await {
        None if conn.notify(mcp::INITIALIZED_BODY) => Ok(conn),
        None => Err(ErrorClass::Reset),
        Some(c) => {
            conn.close();
            Err(c)
        }
    }
}

async fn ws_writer<S>(mut sink: S, mut rx: mpsc::UnboundedReceiver<String>)
where
    S: futures::Sink<Message> + Unpin,
{
    while let Some(m) = rx.recv().await {
        // Everything queued goes out in one flush.
        let mut failed = sink.feed(Message::text(m + "\n")).await.is_err();
        while let Ok(m) = rx.try_recv() {
            failed |= sink.feed(Message::text(m + "\n")).await.is_err();
        }
        if failed || sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
}

async fn ws_reader<S>(mut stream: S, conn: Rc<StreamConn>, stats: Rc<RefCell<Stats>>)
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    // A message split over frames: the piece after the last `\n` waits for the rest.
    let mut pending = String::new();
    let class = loop {
        match stream.next().await {
            Some(Ok(Message::Text(t))) => {
                pending.push_str(t.as_str());
                let mut done = 0;
                let mut broken = false;
                while let Some(i) = pending[done..].find('\n') {
                    broken |= !conn.deliver(&pending[done..done + i]);
                    done += i + 1;
                }
                pending.drain(..done);
                if broken || pending.len() > MAX_MESSAGE {
                    break ErrorClass::Frame;
                }
            }
            Some(Ok(Message::Binary(_))) => break ErrorClass::Frame,
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                conn.closed_by_server(&stats, &code.to_string());
                break ErrorClass::ClosedByServer;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) => break ErrorClass::Reset,
            None => {
                conn.closed_by_server(&stats, "eof");
                break ErrorClass::ClosedByServer;
            }
        }
    };
    conn.lose(class);
}

async fn tcp_writer(
    mut w: BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    mut rx: mpsc::UnboundedReceiver<String>,
) {
    while let Some(m) = rx.recv().await {
        let mut failed = w.write_all(m.as_bytes()).await.is_err();
        failed |= w.write_all(b"\n").await.is_err();
        while let Ok(m) = rx.try_recv() {
            failed |= w.write_all(m.as_bytes()).await.is_err();
            failed |= w.write_all(b"\n").await.is_err();
        }
        if failed || w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

async fn tcp_reader(
    r: tokio::net::tcp::OwnedReadHalf,
    conn: Rc<StreamConn>,
    stats: Rc<RefCell<Stats>>,
) {
    let mut lines = FramedRead::new(r, LinesCodec::new_with_max_length(MAX_MESSAGE));
    let class = loop {
        match lines.next().await {
            Some(Ok(line)) => {
                if !conn.deliver(&line) {
                    break ErrorClass::Frame;
                }
            }
            Some(Err(tokio_util::codec::LinesCodecError::MaxLineLengthExceeded)) => {
                break ErrorClass::Frame
            }
            Some(Err(_)) => break ErrorClass::Reset,
            None => {
                conn.closed_by_server(&stats, "eof");
                break ErrorClass::ClosedByServer;
            }
        }
    };
    conn.lose(class);
}
