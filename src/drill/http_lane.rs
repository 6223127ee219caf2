//! The drill's HTTP load lane, wrk's model: per endpoint, keep-alive connections each run
//! by a loop on its own task that takes the next request from the endpoint's queue,
//! writes it, and reads its answer.
//!
//! - Bounded (`--http-connections N`), it is wrk2's generator: at most N connections per
//!   endpoint, and a request with none free waits in the queue, its latency still counted
//!   from its intended send time (the engine's), so a slow server shows as latency, not as
//!   a flood of new connections.
//! - Unbounded (the default), a request with no idle connection gets a new one: a
//!   connection per request in flight, which the engine's `--max-in-flight` bounds.
//!
//! Why not hyper, as for session opens and closes (`http`): per request, hyper's
//! connection API costs a task for the request, a switch to the connection's own task and
//! back over a channel, a header map each way and a timer. Against a zero-latency
//! stand-in its requests per CPU-second were 0.66-0.76x wrk's, and a profile found that
//! cost spread thin over those pieces, the system calls being already one write and one
//! read per request. A loop that owns its connection needs none of it: the request is
//! formatted into a reused buffer, the answer parsed in place with `httparse` (hyper's
//! own parser), and one timer per connection is reset per request. Side by side in
//! `benches/generator.sh` (README, "Generator").

use super::mcp::{self, ErrorClass};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// A TCP connect that takes longer than this is refused (as in `http`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An answer's head and body at most: past it the connection is dropped and the request
/// counts as reset, so a hostile server cannot grow the drill's memory without bound.
const MAX_ANSWER: usize = 4 << 20;

/// What a request's outcome is handed to: the engine's bookkeeping (None: success).
pub type Done = Box<dyn FnOnce(Option<ErrorClass>)>;

/// One load request: its session, body and deadline, and what to call when it is over.
pub struct Job {
    pub session: Rc<str>,
    pub body: String,
    pub deadline: Instant,
    pub done: Done,
}

/// The lane's queues and connection loops, per endpoint; cheap to clone.
#[derive(Clone)]
pub struct LoadLane {
    per_endpoint: usize,
    endpoints: Rc<RefCell<HashMap<SocketAddr, Rc<Queue>>>>,
}

struct Queue {
    addr: SocketAddr,
    jobs: RefCell<VecDeque<Job>>,
    loops: Cell<usize>,
    /// The idle loops, the last to go idle on top: it takes the next request, so that
    /// connections in use stay in use and the rest idle out. Woken in the order they went
    /// idle (a Notify's), the longest idle took it, and a server's keep-alive timeout
    /// (HAProxy's, 100 ms here) closed it just as a request went out: a reset.
    idle: RefCell<Vec<Rc<Notify>>>,
}

impl LoadLane {
    pub fn new(per_endpoint: u32) -> LoadLane {
        LoadLane {
            per_endpoint: per_endpoint.max(1) as usize,
            endpoints: Rc::default(),
        }
    }

    /// Queues a request for `addr`; a connection loop takes it, a new one while fewer than
    /// the bound run and none is idle.
    pub fn submit(&self, addr: SocketAddr, job: Job) {
        let q = self
            .endpoints
            .borrow_mut()
            .entry(addr)
            .or_insert_with(|| {
                Rc::new(Queue {
                    addr,
                    jobs: RefCell::default(),
                    loops: Cell::new(0),
                    idle: RefCell::default(),
                })
            })
            .clone();
        expire(&q);
        q.jobs.borrow_mut().push_back(job);
        // An idle loop takes it (out of the idle list at once, so a burst in one go, as
        // the schedule sends when it is behind, wakes one loop per request), else a new
        // loop while fewer than the bound run; else it waits for a loop to come free.
        let idle = q.idle.borrow_mut().pop();
        match idle {
            Some(wake) => wake.notify_one(),
            None if q.loops.get() < self.per_endpoint => {
                q.loops.set(q.loops.get() + 1);
                tokio::task::spawn_local(connection_loop(q.clone()));
            }
            None => {}
        }
    }
}

/// Fails the queued requests whose deadline has passed, as a timeout, now rather than
/// when a connection comes free: with every connection held by a slow answer, they would
/// otherwise count in a later second and hold the bound on requests in flight. The queue
/// is in deadline order (one timeout, sends in schedule order).
fn expire(q: &Queue) {
    let now = Instant::now();
    loop {
        let job = {
            let mut jobs = q.jobs.borrow_mut();
            match jobs.front() {
                Some(j) if j.deadline <= now => jobs.pop_front(),
                _ => None,
            }
        };
        match job {
            Some(j) => (j.done)(Some(ErrorClass::Timeout)),
            None => return,
        }
    }
}

/// Keeps the loop count true when a loop ends (the drill's end drops its task).
struct Running(Rc<Queue>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.loops.set(self.0.loops.get().saturating_sub(1));
    }
}

/// One connection's life: requests one after another, reconnecting when the server closes.
async fn connection_loop(q: Rc<Queue>) {
    let _running = Running(q.clone());
    let mut conn: Option<Conn> = None;
    let wake = Rc::new(Notify::new());
    let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));
    loop {
        let next = q.jobs.borrow_mut().pop_front();
        let Some(job) = next else {
            // Out of the list again by whoever wakes it.
            q.idle.borrow_mut().push(wake.clone());
            wake.notified().await;
            continue;
        };
        let outcome = if Instant::now() >= job.deadline {
            // It waited its whole timeout for a connection: never sent.
            Some(ErrorClass::Timeout)
        } else {
            timer
                .as_mut()
                .reset(tokio::time::Instant::from_std(job.deadline));
            let exchange = exchange(q.addr, &mut conn, &job);
            tokio::select! {
                biased;
                r = exchange => r,
                // Dropped mid-exchange: an HTTP/1.1 connection with an answer still owed
                // cannot carry another request.
                _ = timer.as_mut() => Some(ErrorClass::Timeout),
            }
        };
        (job.done)(outcome);
    }
}

/// A connection and its reused buffers.
struct Conn {
    tcp: TcpStream,
    out: Vec<u8>,
    buf: Vec<u8>,
    body: Vec<u8>,
}

/// One request and its answer; the error class, or None. Takes the connection out of
/// `conn` at once and puts it back only when it can carry another request, so a timeout
/// that drops this future mid-exchange leaves none behind.
async fn exchange(addr: SocketAddr, conn: &mut Option<Conn>, job: &Job) -> Option<ErrorClass> {
    let kept = conn.take().filter(|c| !closed_while_idle(&c.tcp));
    let reused = kept.is_some();
    let mut c = match kept {
        Some(c) => c,
        None => match connect(addr).await {
            Ok(c) => c,
            Err(class) => return Some(class),
        },
    };
    format_request(&mut c.out, addr, &job.session, &job.body);
    if c.tcp.write_all(&c.out).await.is_err() {
        // A kept-alive connection the server closed before the request went out: nothing
        // reached it, so once more on a new connection (as hyper does).
        if !reused {
            return Some(ErrorClass::Reset);
        }
        c = match connect(addr).await {
            Ok(c) => c,
            Err(class) => return Some(class),
        };
        format_request(&mut c.out, addr, &job.session, &job.body);
        if c.tcp.write_all(&c.out).await.is_err() {
            return Some(ErrorClass::Reset);
        }
    }
    match read_answer(&mut c).await {
        Ok(a) => {
            let class = mcp::classify(a.status, a.retry_after, &c.body, true);
            if a.keep_alive {
                // A large answer's buffers are not kept for the connection's life.
                if c.buf.capacity() > 1 << 16 || c.body.capacity() > 1 << 16 {
                    c.buf = Vec::with_capacity(4096);
                    c.body = Vec::new();
                }
                *conn = Some(c);
            }
            class
        }
        Err(class) => Some(class),
    }
}

/// An idle keep-alive connection the server has closed (or sent something unasked on):
/// read-ready with no request out. Readiness is tokio's cached state, so a live idle
/// connection costs no system call.
fn closed_while_idle(tcp: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match tcp.poll_read_ready(&mut cx) {
        Poll::Pending => false,
        Poll::Ready(Err(_)) => true,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            !matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<Conn, ErrorClass> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(Conn {
                tcp,
                out: Vec::with_capacity(512),
                buf: Vec::with_capacity(4096),
                body: Vec::new(),
            })
        }
        _ => Err(ErrorClass::Refused),
    }
}

/// The POST, head and body, as `http::HttpClient::post` sends it.
fn format_request(out: &mut Vec<u8>, addr: SocketAddr, session: &str, body: &str) {
    use std::io::Write;
    out.clear();
    let _ = write!(
        out,
        "POST /mcp HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\nmcp-session-id: {session}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body.as_bytes());
}

struct Answer {
    status: u16,
    retry_after: bool,
    keep_alive: bool,
}

/// How the body's end is known.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Reads one answer: the head, then the body by its length, its chunks, or the close.
async fn read_answer(c: &mut Conn) -> Result<Answer, ErrorClass> {
    c.buf.clear();
    c.body.clear();
    // The head (a 1xx before the answer is skipped).
    let (status, head_len, framing, retry_after, mut keep_alive) = loop {
        // As many headers as hyper allows.
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&c.buf) {
            Ok(httparse::Status::Complete(n)) => {
                let status = resp.code.unwrap_or(0);
                if (100..200).contains(&status) {
                    c.buf.drain(..n);
                    continue;
                }
                let (mut length, mut chunked, mut encoded) = (None, false, false);
                let (mut retry_after, mut close, mut keep) = (false, false, false);
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        // Digits only, and every copy the same (RFC 9112 6.3), as hyper.
                        let v = h.value.trim_ascii();
                        let len = std::str::from_utf8(v)
                            .ok()
                            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                            .and_then(|v| v.parse::<usize>().ok())
                            .ok_or(ErrorClass::Reset)?;
                        if length.is_some_and(|l| l != len) {
                            return Err(ErrorClass::Reset);
                        }
                        length = Some(len);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        encoded = true;
                        chunked = last_token_is(h.value, "chunked");
                    } else if h.name.eq_ignore_ascii_case("retry-after") {
                        retry_after = true;
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        close |= contains_token(h.value, "close");
                        keep |= contains_token(h.value, "keep-alive");
                    }
                }
                // A transfer coding wins over a length; one that does not end in chunked
                // ends with the connection (RFC 9112 6.3).
                let framing = match (status, encoded, chunked, length) {
                    (204 | 304, ..) => Framing::Length(0),
                    (_, true, true, _) => Framing::Chunked,
                    (_, true, false, _) => Framing::UntilClose,
                    (_, false, _, Some(len)) => Framing::Length(len),
                    _ => Framing::UntilClose,
                };
                let keep_alive = !close && (keep || resp.version == Some(1));
                break (status, n, framing, retry_after, keep_alive);
            }
            Ok(httparse::Status::Partial) => fill(c).await.map_err(|_| ErrorClass::Reset)?,
            Err(_) => return Err(ErrorClass::Reset),
        }
    };
    let mut pos = head_len;
    match framing {
        Framing::Length(len) => {
            if len > MAX_ANSWER {
                return Err(ErrorClass::Reset);
            }
            while c.buf.len() < pos + len {
                fill(c).await.map_err(|_| ErrorClass::Reset)?;
            }
            c.body.extend_from_slice(&c.buf[pos..pos + len]);
            pos += len;
        }
        Framing::Chunked => loop {
            match httparse::parse_chunk_size(&c.buf[pos..]) {
                Ok(httparse::Status::Complete((n, size))) => {
                    // Compared without adding: a size can be up to 2^64 - 1.
                    let size = usize::try_from(size).map_err(|_| ErrorClass::Reset)?;
                    if size > MAX_ANSWER - c.body.len() {
                        return Err(ErrorClass::Reset);
                    }
                    // The chunk, and the CRLF after it (after the last, the trailers' end).
                    let end = pos + n + size;
                    if size == 0 {
                        pos = end;
                        loop {
                            if let Some(i) = find_crlf(&c.buf[pos..]) {
                                let line_empty = i == 0;
                                pos += i + 2;
                                if line_empty {
                                    break;
                                }
                            } else {
                                fill(c).await.map_err(|_| ErrorClass::Reset)?;
                            }
                        }
                        break;
                    }
                    while c.buf.len() < end + 2 {
                        fill(c).await.map_err(|_| ErrorClass::Reset)?;
                    }
                    if &c.buf[end..end + 2] != b"\r\n" {
                        return Err(ErrorClass::Reset);
                    }
                    c.body.extend_from_slice(&c.buf[pos + n..end]);
                    pos = end + 2;
                }
                Ok(httparse::Status::Partial) => fill(c).await.map_err(|_| ErrorClass::Reset)?,
                Err(_) => return Err(ErrorClass::Reset),
            }
        },
        Framing::UntilClose => {
            keep_alive = false;
            loop {
                match fill(c).await {
                    Ok(()) => {}
                    Err(Fill::Closed) => break,
                    Err(_) => return Err(ErrorClass::Reset),
                }
            }
            c.body.extend_from_slice(&c.buf[pos..]);
            pos = c.buf.len();
        }
    }
    // Bytes past the answer were never asked for: the connection is out of step.
    if c.buf.len() > pos {
        keep_alive = false;
    }
    Ok(Answer {
        status,
        retry_after,
        keep_alive,
    })
}

enum Fill {
    Closed,
    Failed,
    TooLarge,
}

/// Reads more of the answer into the buffer.
async fn fill(c: &mut Conn) -> Result<(), Fill> {
    if c.buf.len() >= MAX_ANSWER {
        return Err(Fill::TooLarge);
    }
    c.buf.reserve(4096);
    match c.tcp.read_buf(&mut c.buf).await {
        Ok(0) => Err(Fill::Closed),
        Ok(_) => Ok(()),
        Err(_) => Err(Fill::Failed),
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// The last of a comma-separated list is `token`.
fn last_token_is(value: &[u8], token: &str) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn contains_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}
