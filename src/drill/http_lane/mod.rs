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

mod answer;

use super::mcp::{self, ErrorClass};
use answer::read_answer;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

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
            if !idle(&q, &wake, &mut conn).await {
                return;
            }
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

/// How long a loop left with no connection waits idle before it ends.
const IDLE_END: Duration = Duration::from_secs(10);

/// Waits, idle in the list, to be woken (true). Meanwhile a connection the server closes
/// is closed here too, not left half-closed until the loop's next request, which for a
/// loop at the bottom of the list, or one for a replica that is gone, never comes. A loop
/// left with no connection for `IDLE_END` takes itself off the list and ends (false), so
/// loops do not stay at a past peak of requests in flight.
async fn idle(q: &Queue, wake: &Rc<Notify>, conn: &mut Option<Conn>) -> bool {
    loop {
        match conn {
            Some(c) => tokio::select! {
                biased;
                _ = wake.notified() => return true,
                _ = c.tcp.readable() => {
                    if closed_while_idle(&c.tcp) {
                        *conn = None;
                    }
                }
            },
            None => tokio::select! {
                biased;
                _ = wake.notified() => return true,
                _ = tokio::time::sleep(IDLE_END) => {
                    let listed = q.idle.borrow().iter().position(|n| Rc::ptr_eq(n, wake));
                    if let Some(i) = listed {
                        q.idle.borrow_mut().remove(i);
                        return false;
                    }
                    // Taken off the list by a request: its wake-up is stored for us.
                    wake.notified().await;
                    return true;
                }
            },
        }
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
    Ok(Conn {
        tcp: super::http::connect_tcp(addr).await?,
        out: Vec::with_capacity(512),
        buf: Vec::with_capacity(4096),
        body: Vec::new(),
    })
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
