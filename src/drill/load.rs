//! The load engine: MCP sessions opened and closed along each phase's connection ramp,
//! and requests sent open-loop at the phase's rate, spread round-robin over the sessions
//! (the schedule that says when is `schedule.rs`, wrk2's). Everything runs on one thread
//! (a current-thread runtime with a LocalSet), so the generator uses at most one core by
//! construction.

use super::http::HttpClient;
use super::http_lane::{Job, LoadLane};
use super::mcp::{self, ErrorClass};
use super::stats::Stats;
use super::stream::{self, StreamConn};
use super::Wire;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// An open session: an HTTP session id, or a connection on a stream wire.
#[derive(Clone)]
enum Handle {
    Http(Rc<str>),
    Stream(Rc<StreamConn>),
}

impl Handle {
    fn is_lost(&self) -> bool {
        matches!(self, Handle::Stream(c) if c.is_lost())
    }
}

#[derive(Clone)]
struct Session {
    /// None while `initialize` is in flight.
    id: Option<Handle>,
    addr: SocketAddr,
    /// Lost (404, refused): to be replaced.
    dead: bool,
    /// Its requests in flight: a closing session is deleted only once they are answered.
    in_flight: Rc<std::cell::Cell<u32>>,
    /// When its handshake succeeded.
    opened_at: Option<Instant>,
    /// Which open this is: the vector shifts as sessions close, so an open that finishes
    /// finds its entry by this, not by position.
    serial: u64,
}

impl Session {
    /// Opened and not lost: it can carry requests.
    fn live(&self) -> bool {
        self.id.as_ref().is_some_and(|h| !h.is_lost()) && !self.dead
    }
}

/// Where sessions go: fixed, or kept up to date by discovery (swarm:SERVICE).
pub type Endpoints = Rc<RefCell<Vec<SocketAddr>>>;

pub struct Engine {
    pub client: HttpClient,
    /// The load's own HTTP connections (at most `--http-connections` per endpoint).
    load: LoadLane,
    pub wire: Wire,
    pub endpoints: Endpoints,
    pub stats: Rc<RefCell<Stats>>,
    sessions: Rc<RefCell<Vec<Session>>>,
    opening: Rc<RefCell<u32>>,
    in_flight: Rc<RefCell<u32>>,
    pub max_in_flight: u32,
    pub timeout: Duration,
    rr_endpoint: usize,
    rr_session: usize,
    /// The last session open's serial.
    serial: u64,
    /// The sessions the phase asks for now (the schedule's, whatever is open).
    target: u32,
    request_id: u64,
    rng: u64,
    /// Sessions opened, failed to open, and replaced after loss.
    pub opened: Rc<RefCell<u64>>,
    pub open_failures: Rc<RefCell<u64>>,
    /// After a failed open, no new opens until then: an overloaded server must not be
    /// stormed with handshakes.
    retry_after: Rc<RefCell<Option<Instant>>>,
    /// Session closes still out: the drill waits for them (and for handshakes still out,
    /// which close what they open) before it exits, or the server keeps the sessions (and
    /// a stand-in's session cap fills across drills).
    pub closing: Rc<std::cell::Cell<u32>>,
}

/// Session handshakes in flight at most.
const MAX_OPENING: u32 = 32;
/// Pause after a failed handshake before opening more.
const OPEN_BACKOFF: Duration = Duration::from_secs(1);

impl Engine {
    pub fn new(
        wire: Wire,
        endpoints: Endpoints,
        stats: Rc<RefCell<Stats>>,
        timeout: Duration,
        max_in_flight: u32,
        http_connections: Option<u32>,
    ) -> Engine {
        Engine {
            client: HttpClient::new(),
            // Unbounded, a connection per request in flight, which the bound on requests
            // in flight bounds.
            load: LoadLane::new(http_connections.unwrap_or(max_in_flight)),
            wire,
            endpoints,
            stats,
            sessions: Rc::default(),
            opening: Rc::default(),
            in_flight: Rc::default(),
            max_in_flight,
            timeout,
            rr_endpoint: 0,
            rr_session: 0,
            serial: 0,
            target: 0,
            request_id: 1,
            rng: 0x00A1_D0C5,
            opened: Rc::default(),
            open_failures: Rc::default(),
            retry_after: Rc::default(),
            closing: Rc::default(),
        }
    }

    /// Session handshakes and closes still out.
    pub fn session_work(&self) -> u32 {
        self.closing.get() + *self.opening.borrow()
    }

    /// Live sessions (opened and not lost).
    pub fn sessions(&self) -> u32 {
        self.sessions.borrow().iter().filter(|s| s.live()).count() as u32
    }

    fn next_random(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Opens or closes sessions toward `target` (lost ones are dropped and replaced).
    pub fn follow_sessions(&mut self, target: u32) {
        self.target = target;
        {
            let mut s = self.sessions.borrow_mut();
            // A connection the server closed soon after it opened is a failed open, not a
            // session to replace at once: no reconnect storm against a server that hangs up.
            let quick_loss = s.iter().any(|x| {
                x.id.as_ref().is_some_and(Handle::is_lost)
                    && x.opened_at.is_some_and(|t| t.elapsed() < OPEN_BACKOFF)
            });
            if quick_loss {
                *self.retry_after.borrow_mut() = Some(Instant::now() + OPEN_BACKOFF);
            }
            // Gone: failed to open, or opened and lost since (still opening stays).
            s.retain(|x| !x.dead && !x.id.as_ref().is_some_and(Handle::is_lost));
        }
        let have = self.sessions.borrow().len() as u32;
        if have > target {
            let closing: Vec<Session> = {
                let mut s = self.sessions.borrow_mut();
                let n = s.len() - target as usize;
                s.drain(..n).collect()
            };
            let timeout = self.timeout;
            for sess in closing {
                if let Some(id) = sess.id {
                    let client = self.client.clone();
                    let closing = self.closing.clone();
                    closing.set(closing.get() + 1);
                    tokio::task::spawn_local(async move {
                        // No new request goes to it (it left the list); the ones in flight
                        // finish first, or a DELETE would turn them into lost sessions.
                        let since = Instant::now();
                        while sess.in_flight.get() > 0 && since.elapsed() < timeout {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        match id {
                            Handle::Http(id) => client.delete_session(sess.addr, &id).await,
                            Handle::Stream(conn) => conn.close(),
                        }
                        closing.set(closing.get().saturating_sub(1));
                    });
                }
            }
            return;
        }
        let eps = self.endpoints.borrow().clone();
        if eps.is_empty()
            || self
                .retry_after
                .borrow()
                .is_some_and(|t| Instant::now() < t)
        {
            return;
        }
        let room = MAX_OPENING.saturating_sub(*self.opening.borrow());
        for _ in have..target.min(have + room) {
            let addr = eps[self.rr_endpoint % eps.len()];
            self.rr_endpoint = self.rr_endpoint.wrapping_add(1);
            self.serial += 1;
            let serial = self.serial;
            let idx = {
                let mut s = self.sessions.borrow_mut();
                s.push(Session {
                    id: None,
                    addr,
                    dead: false,
                    in_flight: Rc::default(),
                    opened_at: None,
                    serial,
                });
                s.len() - 1
            };
            *self.opening.borrow_mut() += 1;
            let (wire, stats) = (self.wire.clone(), self.stats.clone());
            let closing = self.closing.clone();
            let (client, sessions, opening, opened, failures, retry_after) = (
                self.client.clone(),
                self.sessions.clone(),
                self.opening.clone(),
                self.opened.clone(),
                self.open_failures.clone(),
                self.retry_after.clone(),
            );
            let timeout = self.timeout;
            tokio::task::spawn_local(async move {
                let id = match &wire {
                    Wire::Http => open_session(&client, addr, timeout)
                        .await
                        .map(|id| Handle::Http(id.into())),
                    w => stream::open(w, addr, timeout, &stats)
                        .await
                        .ok()
                        .map(Handle::Stream),
                };
                *opening.borrow_mut() -= 1;
                let mut s = sessions.borrow_mut();
                // The vector may have shifted (closes drain from the front): the entry is
                // this open's, at `idx` if it is still there.
                let mine = |x: &Session| x.serial == serial && x.id.is_none() && !x.dead;
                let at = if s.get(idx).is_some_and(mine) {
                    Some(idx)
                } else {
                    s.iter().position(mine)
                };
                let target = at.and_then(|i| s.get_mut(i));
                if target.is_none() {
                    // Its entry went with a ramp down while the handshake was out: close
                    // what opened, or it would live on, unused, holding a server's slot.
                    match id {
                        Some(Handle::Stream(conn)) => conn.close(),
                        Some(Handle::Http(id)) => {
                            closing.set(closing.get() + 1);
                            tokio::task::spawn_local(async move {
                                client.delete_session(addr, &id).await;
                                closing.set(closing.get().saturating_sub(1));
                            });
                        }
                        None => {}
                    }
                    return;
                }
                if let Some(sess) = target {
                    match id {
                        Some(id) => {
                            sess.id = Some(id);
                            sess.opened_at = Some(Instant::now());
                            *opened.borrow_mut() += 1;
                        }
                        None => {
                            sess.dead = true;
                            *failures.borrow_mut() += 1;
                            *retry_after.borrow_mut() = Some(Instant::now() + OPEN_BACKOFF);
                        }
                    }
                }
            });
        }
    }

    /// Sends one request now, intended at `intended`, on the next session in turn.
    pub fn send(&mut self, phase: usize, method: &'static str, intended: Instant) {
        // Requests go round the phase's sessions, open or not (the schedule is the
        // target's, not what the server let open). A session's turn goes to the next live
        // one while its handshake is out; a session that failed to open, or was lost and
        // not yet replaced, is a refused request: a server that refuses sessions must not
        // pass a drill by being offered less.
        let pick = {
            let s = self.sessions.borrow();
            let slots = (self.target as usize).max(s.len()).max(1);
            let slot = self.rr_session % slots;
            self.rr_session = (slot + 1) % slots;
            // Still to be opened (the engine opens 32 at a time) counts as opening; only
            // while it backs off from a failed open is a missing session a refusal.
            let backing_off = self
                .retry_after
                .borrow()
                .is_some_and(|t| Instant::now() < t);
            let opening = match s.get(slot) {
                Some(x) => x.id.is_none() && !x.dead,
                None => !backing_off,
            };
            let at = match s.get(slot) {
                Some(x) if x.live() => Some(slot),
                _ if opening => (1..s.len())
                    .map(|k| (slot + k) % s.len())
                    .find(|&i| s[i].live()),
                _ => None,
            };
            // Every handshake still out (a drill's first milliseconds): nothing can carry
            // it yet, and nothing has failed; it is not sent, and not counted.
            if at.is_none() && opening {
                return;
            }
            at.map(|i| (i, s[i].addr, s[i].id.clone(), s[i].in_flight.clone()))
        };
        self.stats.borrow_mut().scheduled(phase);
        let Some((idx, addr, Some(id), session_in_flight)) = pick else {
            self.stats
                .borrow_mut()
                .record(phase, method, 0, Some(ErrorClass::Refused));
            return;
        };
        if *self.in_flight.borrow() >= self.max_in_flight {
            self.stats
                .borrow_mut()
                .record(phase, method, 0, Some(ErrorClass::Generator));
            return;
        }
        *self.in_flight.borrow_mut() += 1;
        session_in_flight.set(session_in_flight.get() + 1);
        let request_id = self.request_id;
        let body = mcp::request_body(method, request_id);
        self.request_id += 1;
        let (stats, in_flight, sessions) = (
            self.stats.clone(),
            self.in_flight.clone(),
            self.sessions.clone(),
        );
        let deadline = intended + self.timeout;
        let handle = id.clone();
        let done = move |class: Option<ErrorClass>| {
            let micros = intended.elapsed().as_micros().min(u64::MAX as u128) as u64;
            *in_flight.borrow_mut() -= 1;
            session_in_flight.set(session_in_flight.get().saturating_sub(1));
            if matches!(class, Some(ErrorClass::SessionLost | ErrorClass::Refused)) {
                if let Some(s) = sessions.borrow_mut().get_mut(idx) {
                    let same = match (&s.id, &id) {
                        (Some(Handle::Http(a)), Handle::Http(b)) => a == b,
                        (Some(Handle::Stream(a)), Handle::Stream(b)) => Rc::ptr_eq(a, b),
                        _ => false,
                    };
                    if same {
                        s.dead = true;
                    }
                }
            }
            stats.borrow_mut().record(phase, method, micros, class);
        };
        match handle {
            Handle::Http(session) => self.load.submit(
                addr,
                Job {
                    session,
                    body,
                    deadline,
                    done: Box::new(done),
                },
            ),
            Handle::Stream(conn) => {
                tokio::task::spawn_local(async move {
                    done(conn.request(request_id, body, deadline).await);
                });
            }
        }
    }

    /// Picks a method by the phase's mix.
    pub fn pick_method(&mut self, mix: &[(&'static str, f64)]) -> &'static str {
        let r = self.next_random();
        let mut acc = 0.0;
        for (m, w) in mix {
            acc += w;
            if r < acc {
                return m;
            }
        }
        mix.last().map_or("ping", |(m, _)| m)
    }
}

/// POST initialize and notifications/initialized; the session id, or None.
async fn open_session(client: &HttpClient, addr: SocketAddr, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let reply = client
        .post(addr, None, mcp::initialize_body(), deadline)
        .await
        .ok()?;
    let id = reply
        .session
        .filter(|_| (200..300).contains(&reply.status))?;
    let (class, _) = request(
        client,
        addr,
        Some(&id),
        mcp::INITIALIZED_BODY.to_string(),
        Instant::now() + timeout,
        false,
    )
    .await;
    class.is_none().then_some(id)
}

/// One POST to /mcp. Returns the error class (None = success) and the HTTP status.
pub async fn request(
    client: &HttpClient,
    addr: SocketAddr,
    session: Option<&str>,
    body: String,
    deadline: Instant,
    expects_answer: bool,
) -> (Option<ErrorClass>, u16) {
    match client.post(addr, session, body, deadline).await {
        Err((class, status)) => (Some(class), status),
        Ok(r) => (
            mcp::classify(r.status, r.retry_after, &r.body, expects_answer),
            r.status,
        ),
    }
}
