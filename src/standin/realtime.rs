//! The replica model of `crate::model::replica`, enforced in real time: each request is
//! admitted or shed, then delayed by a latency drawn from the model at the replica's
//! current load, and sometimes failed as the model's error rate says.
//!
//! Load is measured, not configured: an exponentially weighted rate (τ = 1 s) for the
//! replica and for each session. The replica's capacity is small and configurable, so a
//! replica saturates on a 2-core machine the way an erlmcp replica does on its 2 CPUs.

use crate::act::admission::Admission;
use crate::model::ReplicaParams;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const TAU_S: f64 = 1.0;

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admit {
    /// Refuse at once with 503: over the admission limit.
    Shed,
    /// Serve after `delay`; `fail` answers 500 instead (an internal error).
    Serve { delay: Duration, fail: bool },
}

#[derive(Debug, Clone)]
struct Rate {
    value: f64,
    last: Instant,
}

impl Rate {
    fn new(now: Instant) -> Rate {
        Rate {
            value: 0.0,
            last: now,
        }
    }
    /// Counts one event at `now`; returns the rate in events/s.
    fn tick(&mut self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.value = self.value * (-dt / TAU_S).exp() + 1.0 / TAU_S;
        self.last = now;
        self.value
    }
    fn peek(&self, now: Instant) -> f64 {
        self.value * (-now.saturating_duration_since(self.last).as_secs_f64() / TAU_S).exp()
    }
}

#[derive(Debug, Clone)]
struct Session {
    rate: Rate,
    mailbox_s: f64,
    tokens: f64,
}

#[derive(Debug)]
struct Inner {
    last: Instant,
    rate: Rate,
    backlog_s: f64,
    tokens: f64,
    admit: Admission,
    sessions: HashMap<String, Session>,
    rng: u64,
}

pub struct RealTime {
    pub params: ReplicaParams,
    /// No model delay at all (for measuring the load generator).
    pub zero: bool,
    inner: Mutex<Inner>,
}

impl RealTime {
    pub fn new(params: ReplicaParams, zero: bool) -> RealTime {
        let now = Instant::now();
        RealTime {
            params,
            zero,
            inner: Mutex::new(Inner {
                last: now,
                rate: Rate::new(now),
                backlog_s: 0.0,
                tokens: 0.0,
                admit: Admission::ALL,
                sessions: HashMap::new(),
                rng: 0x57A4_D1E5,
            }),
        }
    }

    pub fn set_admit(&self, admit: Admission) {
        if let Ok(mut i) = self.inner.lock() {
            i.admit = admit;
        }
    }

    pub fn forget_session(&self, id: &str) {
        if let Ok(mut i) = self.inner.lock() {
            i.sessions.remove(id);
        }
    }

    /// Decides a request of `session` arriving now.
    pub fn request(&self, session: Option<&str>) -> Admit {
        self.request_at(session, Instant::now())
    }

    /// Decides a request of `session` arriving at `now`.
    fn request_at(&self, session: Option<&str>, now: Instant) -> Admit {
        let p = &self.params;
        let Ok(mut i) = self.inner.lock() else {
            return Admit::Serve {
                delay: Duration::ZERO,
                fail: false,
            };
        };
        let dt = now.saturating_duration_since(i.last).as_secs_f64();
        i.last = now;
        // Admission first: token buckets for the replica (max_rps, or admit × its own
        // capacity) and for each session (a fair share, or admit × a process's capacity).
        let sessions = i.sessions.len().max(1) as f64;
        let limits = i.admit.admit.map(|a| match i.admit.max_rps {
            Some(r) => (r, r / sessions),
            None => (a * p.capacity_rps, a * p.conn_capacity_rps),
        });
        if let Some((cap, _)) = limits {
            i.tokens = (i.tokens + dt * cap).min(cap * 0.1 + 1.0);
        }
        let admit = limits;
        let sess = session.map(|id| {
            let s = i.sessions.entry(id.to_string()).or_insert_with(|| Session {
                rate: Rate::new(now),
                mailbox_s: 0.0,
                tokens: 1.0,
            });
            let sdt = now.saturating_duration_since(s.rate.last).as_secs_f64();
            if let Some((_, cap)) = admit {
                s.tokens = (s.tokens + sdt * cap).min(cap * 0.1 + 1.0);
            }
            s.clone()
        });
        if admit.is_some() && (i.tokens < 1.0 || sess.as_ref().is_some_and(|s| s.tokens < 1.0)) {
            return Admit::Shed;
        }
        if admit.is_some() {
            i.tokens -= 1.0;
        }
        let rate = i.rate.tick(now);
        let rho = rate / p.capacity_rps;
        i.backlog_s = (i.backlog_s + (rho - 1.0) * dt).clamp(0.0, p.max_backlog_s);
        let mut mailbox = 0.0;
        if let Some(id) = session {
            if let Some(s) = i.sessions.get_mut(id) {
                if admit.is_some() {
                    s.tokens -= 1.0;
                }
                // The session's mailbox moves over the time since *its* last request:
                // the replica's (shorter, with other sessions busy) would drain it slowly.
                let sdt = now.saturating_duration_since(s.rate.last).as_secs_f64();
                let srate = s.rate.tick(now);
                let target = p.conn_wait_ss(srate);
                s.mailbox_s = p.lag_wait(s.mailbox_s, target, sdt.max(1e-3));
                mailbox = s.mailbox_s;
            }
        }
        if self.zero {
            return Admit::Serve {
                delay: Duration::ZERO,
                fail: false,
            };
        }
        let median = p.cpu_median_s(rho) + mailbox + i.backlog_s;
        let (u1, u2, u3) = (next(&mut i.rng), next(&mut i.rng), next(&mut i.rng));
        // Box-Muller: a standard normal, then the log-normal around the median.
        let z = (-2.0 * u1.max(1e-12).ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        let delay = (median * (p.sigma * z).exp()).min(60.0);
        Admit::Serve {
            delay: Duration::from_secs_f64(delay),
            fail: u3 < p.error_share(rho.min(1.0)),
        }
    }

    /// CPU share and queued requests for /metrics, from the current load.
    pub fn gauges(&self) -> (f64, f64) {
        let now = Instant::now();
        let Ok(i) = self.inner.lock() else {
            return (0.0, 0.0);
        };
        let rate = i.rate.peek(now);
        let mailbox = i.sessions.values().map(|s| s.mailbox_s).fold(0.0, f64::max);
        let queued = i
            .sessions
            .values()
            .map(|s| s.rate.peek(now) * s.mailbox_s)
            .sum::<f64>()
            + i.backlog_s * self.params.capacity_rps;
        (
            self.params.cpu(rate.min(self.params.capacity_rps), mailbox),
            queued,
        )
    }
}

#[cfg(test)]
impl RealTime {
    fn mailbox(&self, session: &str) -> f64 {
        self.inner
            .lock()
            .map(|i| i.sessions.get(session).map_or(0.0, |s| s.mailbox_s))
            .unwrap_or(0.0)
    }
}

fn next(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(capacity: f64) -> ReplicaParams {
        ReplicaParams {
            capacity_rps: capacity,
            cpu_scale_rps: capacity / 3.0,
            ..ReplicaParams::default()
        }
    }

    #[test]
    fn admission_sheds_past_the_limit() {
        let rt = RealTime::new(params(100.0), false);
        rt.set_admit(Admission {
            admit: Some(0.5),
            max_rps: None,
            max_sessions: None,
        });
        // 200 requests at once: the bucket holds ~6 (0.1 s of 50/s, plus one).
        let shed = (0..200).filter(|_| rt.request(None) == Admit::Shed).count();
        assert!(shed > 180, "{shed}");
        rt.set_admit(Admission::ALL);
        assert!(matches!(rt.request(None), Admit::Serve { .. }));
    }

    /// A session's mailbox drains over its own time: a quiet session next to a busy one
    /// recovers as it would alone (with the replica's time between requests, it did not).
    #[test]
    fn a_quiet_session_drains_beside_a_busy_one() {
        let p = ReplicaParams {
            capacity_rps: 10_000.0,
            conn_capacity_rps: 50.0,
            cpu_scale_rps: 3_000.0,
            ..ReplicaParams::default()
        };
        let rt = RealTime::new(p, false);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // 60 s of both sessions at 80 msg/s (above the 50 one session is served).
        for k in 0..4_800u64 {
            rt.request_at(Some("quiet"), at(k * 12 + 1));
            rt.request_at(Some("busy"), at(k * 12 + 7));
        }
        let before = rt.mailbox("quiet");
        assert!(before > 0.5, "the bombing filled the mailbox: {before}");
        // 30 s more: "busy" keeps bombing, "quiet" sends once a second.
        for k in 0..2_500u64 {
            let ms = 57_600 + k * 12;
            rt.request_at(Some("busy"), at(ms));
            if k % 83 == 0 {
                rt.request_at(Some("quiet"), at(ms + 3));
            }
        }
        let after = rt.mailbox("quiet");
        // Alone it would be at e^(-30/25) ≈ 0.3 of where it was.
        assert!(after < before * 0.45, "{before} → {after}");
    }

    #[test]
    fn latency_grows_with_load() {
        let rt = RealTime::new(params(100.0), false);
        let light = match rt.request(None) {
            Admit::Serve { delay, .. } => delay,
            Admit::Shed => unreachable!(),
        };
        let mut heavy = Duration::ZERO;
        for _ in 0..2000 {
            if let Admit::Serve { delay, .. } = rt.request(None) {
                heavy = heavy.max(delay);
            }
        }
        assert!(heavy > light * 5, "{light:?} {heavy:?}");
    }
}
