//! The drill's HTTP/1.1 client for everything but the load: session opens and closes,
//! and the steady-state probe. Keep-alive connections per endpoint on hyper's connection
//! API, at most 64 per endpoint (a list of idle connections and a semaphore), so that the
//! drill's end, closing 10,000 sessions, is not 10,000 connections.
//!
//! The load has its own lane (`http_lane`): its own connections, so a backed-up load
//! cannot time out a handshake (a refusal the server never made) or a DELETE (a session
//! left open on it), and its own client, cheaper per request than this one.
//!
//! Why not hyper-util's pooled client: it has no bound on connections per host, and at
//! 10,000 requests/s against one stand-in it opened about 2,000 connections for 20
//! sessions (README, "Generator").

use super::mcp::ErrorClass;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Session opens and closes per endpoint at once: the drill's end closes every session,
/// and 10,000 DELETEs must not be 10,000 connections (Docker's userland proxy dies past a
/// few thousand). Opens are 32 at a time already (the engine's MAX_OPENING).
const SESSION_CONNECTIONS: usize = 64;

/// A TCP connect that takes longer than this is refused.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What an HTTP request got back.
pub struct Reply {
    pub status: u16,
    /// The session id the server gave (`Mcp-Session-Id`).
    pub session: Option<String>,
    /// A `Retry-After` header: a 503 with it is a refusal, not a failure.
    pub retry_after: bool,
    pub body: Bytes,
}

/// Connections to each endpoint; cheap to clone (one pool, shared).
#[derive(Clone, Default)]
pub struct HttpClient {
    endpoints: Rc<RefCell<HashMap<SocketAddr, Rc<Pool>>>>,
}

struct Pool {
    idle: RefCell<Vec<SendRequest<Full<Bytes>>>>,
    /// One permit per connection in use; waiters are served in order.
    permits: Semaphore,
}

impl HttpClient {
    pub fn new() -> HttpClient {
        HttpClient::default()
    }

    fn pool(&self, addr: SocketAddr) -> Rc<Pool> {
        self.endpoints
            .borrow_mut()
            .entry(addr)
            .or_insert_with(|| {
                Rc::new(Pool {
                    idle: RefCell::default(),
                    permits: Semaphore::new(SESSION_CONNECTIONS),
                })
            })
            .clone()
    }

    /// POST `body` to /mcp at `addr`, with the session's id when it has one; the reply, or
    /// the error class of a failure below HTTP (with the status, when it came first). Time
    /// spent waiting for a free connection counts against `deadline`.
    pub async fn post(
        &self,
        addr: SocketAddr,
        session: Option<&str>,
        body: String,
        deadline: Instant,
    ) -> Result<Reply, (ErrorClass, u16)> {
        // Origin-form ("/mcp" and a Host header): hyper's connection API writes the URI as
        // given, and an absolute URI is a 404 to some servers (the Python SDK's).
        let mut b = Request::post("/mcp")
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(s) = session {
            b = b.header("mcp-session-id", s);
        }
        let Ok(req) = b.body(Full::new(Bytes::from(body))) else {
            return Err((ErrorClass::Reset, 0));
        };
        self.send(addr, req, deadline).await
    }

    /// DELETEs a session (best effort: a server that forgot it already is fine).
    pub async fn delete_session(&self, addr: SocketAddr, id: &str) {
        let req = Request::delete("/mcp")
            .header("host", addr.to_string())
            .header("mcp-session-id", id)
            .body(Full::new(Bytes::new()));
        if let Ok(req) = req {
            let _ = self
                .send(addr, req, Instant::now() + Duration::from_secs(2))
                .await;
        }
    }

    async fn send(
        &self,
        addr: SocketAddr,
        req: Request<Full<Bytes>>,
        deadline: Instant,
    ) -> Result<Reply, (ErrorClass, u16)> {
        let pool = &*self.pool(addr);
        let deadline = tokio::time::Instant::from_std(deadline);
        // The status, once the headers are in: a timeout while reading the body keeps it.
        let status_seen = Cell::new(0u16);
        let exchange = async {
            // Held until the answer is read and its connection back in the idle list, so
            // connections in use never pass the bound.
            let _permit = pool
                .permits
                .acquire()
                .await
                .map_err(|_| (ErrorClass::Reset, 0))?;
            let (mut conn, reused) = checkout(pool, addr).await?;
            let resp = match conn.try_send_request(req).await {
                Ok(r) => r,
                Err(mut e) => match e.take_message() {
                    // A kept-alive connection the server closed before the request went
                    // out: nothing was sent, so once more on a new connection.
                    Some(req) if reused => {
                        conn = connect(addr).await?;
                        conn.send_request(req)
                            .await
                            .map_err(|_| (ErrorClass::Reset, 0))?
                    }
                    _ => return Err((ErrorClass::Reset, 0)),
                },
            };
            let status = resp.status().as_u16();
            status_seen.set(status);
            let session = resp
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let retry_after = resp.headers().contains_key("retry-after");
            let body = match resp.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return Err((ErrorClass::Reset, status)),
            };
            if !conn.is_closed() {
                pool.idle.borrow_mut().push(conn);
            }
            Ok(Reply {
                status,
                session,
                retry_after,
                body,
            })
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            // Dropped mid-exchange, its connection closes with it: an HTTP/1.1 connection
            // with an answer still owed cannot carry another request.
            Err(_) => Err((ErrorClass::Timeout, status_seen.get())),
            Ok(r) => r,
        }
    }
}

/// An idle connection that is still open, or a new one; and whether it was reused.
async fn checkout(
    pool: &Pool,
    addr: SocketAddr,
) -> Result<(SendRequest<Full<Bytes>>, bool), (ErrorClass, u16)> {
    loop {
        let next = pool.idle.borrow_mut().pop();
        match next {
            // Ready once its connection has finished the last exchange; an error means
            // the server closed it.
            Some(mut c) => {
                if c.ready().await.is_ok() {
                    return Ok((c, true));
                }
            }
            None => return Ok((connect(addr).await?, false)),
        }
    }
}

/// A TCP connection to `addr` for HTTP, as both clients open them (this one and the load
/// lane's): refused when it cannot be made within `CONNECT_TIMEOUT`.
pub(super) async fn connect_tcp(addr: SocketAddr) -> Result<tokio::net::TcpStream, ErrorClass> {
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        _ => Err(ErrorClass::Refused),
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, (ErrorClass, u16)> {
    let tcp = connect_tcp(addr).await.map_err(|c| (c, 0))?;
    let (sender, conn) = http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|_| (ErrorClass::Reset, 0))?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
