//! The erlmcp replica model: how one replica's latency, errors, CPU and memory respond to
//! load. Pure functions of the load, shared by the simulator and (enforced in real time)
//! by the stand-in server.
//!
//! Shape, after the seed benchmark (../shared/seed-figures.md):
//! - Latency per request is log-normal with σ = 1.05: the seed's own p50/p95/p99 at 25
//!   connections (15.2/85.1/180.4 ms) give σ = 1.047 from both p95/p50 and p99/p50.
//! - The median grows with replica utilisation ρ = admitted msg/s / capacity as
//!   `m0 / (1 - ρ)^n`: flat while ρ is small, steep as ρ nears 1. Past ρ = 1 a backlog
//!   builds and its wait adds to every request.
//! - Each connection is one Erlang process handling its messages one after another, so a
//!   connection has its own limit (`conn_capacity_rps`). Its mailbox wait is flat below a
//!   knee and grows quadratically past it. This is why 10,000 msg/s from 20 connections
//!   (message bombing) hurts far more than 25,000 msg/s from 500 (the flood), and why
//!   more replicas cannot relieve a bomb: only shedding can.
//! - The mailbox wait follows its steady state with a lag (fills in ~60 s, drains in
//!   ~25 s): the seed's errors "rising from 2.8% to 12.2%" during bombing and its
//!   recovery in 45-95 s.
//! - Errors: internal errors grow with ρ past 0.1; timeouts are the share of the
//!   log-normal beyond the client's timeout.
//!
//! The fit, `andon calibrate` prints it (8 replicas, no control): every p95 within ±15%
//! of the seed's, the bombing's error rate at -19%. The seed figures are unvalidated and partly
//! inconsistent, so the fit leans to the convex side of the band (p95 a little low at
//! 200-350 connections, a little high at 500).

use serde::Serialize;

/// The parameters of one replica. Defaults are the calibrated erlmcp figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReplicaParams {
    /// Messages per second one replica serves at ρ = 1 (2 CPUs in the seed).
    pub capacity_rps: f64,
    /// Messages per second one connection's process serves.
    pub conn_capacity_rps: f64,
    /// Median latency of an idle replica, seconds.
    pub base_median_s: f64,
    /// Steepness of `m0 / (1 - ρ)^n`.
    pub knee_exponent: f64,
    /// Log-normal shape of the latency distribution.
    pub sigma: f64,
    /// Per-connection utilisation below which the mailbox adds no wait.
    pub conn_knee: f64,
    /// Mailbox wait at a connection utilisation of 1, seconds.
    pub conn_wait_at_limit_s: f64,
    /// Time constants of the mailbox wait: filling and draining, seconds.
    pub queue_fill_s: f64,
    pub queue_drain_s: f64,
    /// Internal errors: `max × ((ρ - onset) / (1 - onset))²`.
    pub error_onset: f64,
    pub error_max: f64,
    /// CPU share at rate r: `1 - exp(-r / cpu_scale_rps)`, plus mailbox spinning.
    pub cpu_scale_rps: f64,
    pub cpu_mailbox: f64,
    /// Memory: base + per connection + per queued message, bytes.
    pub mem_base_bytes: f64,
    pub mem_per_conn_bytes: f64,
    pub mem_per_queued_bytes: f64,
    /// A new task is ready this long after Swarm starts it, seconds.
    pub start_delay_s: f64,
    /// A backlog longer than this (seconds of work) is dropped: errors.
    pub max_backlog_s: f64,
}

impl Default for ReplicaParams {
    fn default() -> Self {
        ReplicaParams {
            // Fit: p95 = 64 ms / (1 - r/6900)^2.7 against the flood points (see module doc).
            capacity_rps: 6900.0,
            base_median_s: 0.064 / P95_FACTOR_DEFAULT,
            knee_exponent: 2.7,
            sigma: 1.05,
            // ~2 ms per message in one process; bombing offers 500 msg/s per connection.
            conn_capacity_rps: 500.0,
            conn_knee: 0.8,
            // Bombing: p95 2.8 s = median 0.5 s × 5.62, nearly all of it mailbox wait.
            conn_wait_at_limit_s: 0.5,
            queue_fill_s: 60.0,
            queue_drain_s: 25.0,
            // 0.3% errors at 350 connections (ρ = 0.32), 0.8% at 500 (ρ = 0.45).
            error_onset: 0.102,
            error_max: 0.0524,
            // CPU 17% at 25 connections, 42% at 200, 69% at 500 (seed).
            cpu_scale_rps: 2314.0,
            cpu_mailbox: 0.35,
            // 185 MB over 8 replicas at 25 connections, 381 MB at 500, 412 MB bombing.
            mem_base_bytes: 21.8e6,
            mem_per_conn_bytes: 0.41e6,
            mem_per_queued_bytes: 46e3,
            start_delay_s: 5.0,
            max_backlog_s: 30.0,
        }
    }
}

/// p95 / median of a log-normal with σ = 1.05.
const P95_FACTOR_DEFAULT: f64 = 5.627;
const Z95: f64 = 1.644_853_6;
const Z99: f64 = 2.326_347_9;

impl ReplicaParams {
    /// Median latency from CPU load alone at utilisation `rho` (< 1).
    pub fn cpu_median_s(&self, rho: f64) -> f64 {
        let r = rho.clamp(0.0, 0.98);
        self.base_median_s / (1.0 - r).powf(self.knee_exponent)
    }

    /// Steady-state mailbox wait of a connection at `rate` msg/s admitted.
    pub fn conn_wait_ss(&self, rate: f64) -> f64 {
        let u = rate / self.conn_capacity_rps;
        let over = ((u - self.conn_knee) / (1.0 - self.conn_knee)).max(0.0);
        self.conn_wait_at_limit_s * over * over
    }

    /// Moves the mailbox wait `w` toward its steady state over `dt` seconds.
    pub fn lag_wait(&self, w: f64, target: f64, dt: f64) -> f64 {
        let tau = if target > w {
            self.queue_fill_s
        } else {
            self.queue_drain_s
        };
        w + (target - w) * (1.0 - (-dt / tau).exp())
    }

    /// Internal error share at utilisation `rho`.
    pub fn error_share(&self, rho: f64) -> f64 {
        let x = ((rho - self.error_onset) / (1.0 - self.error_onset)).clamp(0.0, 1.0);
        self.error_max * x * x
    }

    pub fn cpu(&self, rate: f64, mailbox_wait_s: f64) -> f64 {
        let busy = 1.0 - (-rate / self.cpu_scale_rps).exp();
        let spin = self.cpu_mailbox * (mailbox_wait_s / self.conn_wait_at_limit_s).min(1.0);
        (busy + spin).min(1.0)
    }

    pub fn memory(&self, conns: f64, queued: f64) -> f64 {
        self.mem_base_bytes + self.mem_per_conn_bytes * conns + self.mem_per_queued_bytes * queued
    }

    pub fn p95_factor(&self) -> f64 {
        (Z95 * self.sigma).exp()
    }

    /// Share of requests with latency above `t` seconds, for a log-normal with `median`.
    pub fn share_above(&self, median: f64, t: f64) -> f64 {
        if median <= 0.0 {
            return 0.0;
        }
        0.5 * erfc((t / median).ln() / (self.sigma * std::f64::consts::SQRT_2))
    }
}

/// One component of a latency mixture: requests per second and their median latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Component {
    pub weight: f64,
    pub median_s: f64,
}

/// The `q` quantile (0.95, 0.99) of a mixture of log-normals sharing `sigma`. Bisection in
/// log space between the components' own quantiles; one component is closed-form.
pub fn mixture_quantile(components: &[Component], sigma: f64, q: f64) -> f64 {
    let z = if q >= 0.99 { Z99 } else { Z95 };
    let live = || {
        components
            .iter()
            .filter(|c| c.weight > 0.0 && c.median_s > 0.0)
    };
    let total: f64 = live().map(|c| c.weight).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let factor = (z * sigma).exp();
    let lo = live().map(|c| c.median_s).fold(f64::INFINITY, f64::min);
    let hi = live().map(|c| c.median_s).fold(0.0, f64::max);
    if hi <= lo * 1.001 {
        return lo * factor;
    }
    let (mut a, mut b) = ((lo * factor).ln(), (hi * factor).ln());
    let target = total * (1.0 - q);
    for _ in 0..40 {
        let mid = 0.5 * (a + b);
        let above: f64 = live()
            .map(|c| {
                c.weight * 0.5 * erfc((mid - c.median_s.ln()) / (sigma * std::f64::consts::SQRT_2))
            })
            .sum();
        if above > target {
            a = mid;
        } else {
            b = mid;
        }
        if b - a < 1e-4 {
            break;
        }
    }
    (0.5 * (a + b)).exp()
}

/// Complementary error function (W. J. Cody's rational Chebyshev fit via Numerical
/// Recipes' erfcc; relative error < 1.2e-7), enough for percentiles.
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        assert!((erfc(0.0) - 1.0).abs() < 1e-7);
        assert!((erfc(1.0) - 0.157_299_207).abs() < 1e-7);
        assert!((erfc(-1.0) - 1.842_700_793).abs() < 1e-7);
    }

    #[test]
    fn mixture_of_one_is_the_lognormal_quantile() {
        let p = ReplicaParams::default();
        let q = mixture_quantile(
            &[Component {
                weight: 1.0,
                median_s: 0.1,
            }],
            p.sigma,
            0.95,
        );
        assert!((q - 0.1 * p.p95_factor()).abs() < 1e-9);
        assert!((P95_FACTOR_DEFAULT - p.p95_factor()).abs() < 0.01);
    }

    #[test]
    fn mixture_quantile_lies_between_its_components() {
        let p = ReplicaParams::default();
        let c = [
            Component {
                weight: 1.0,
                median_s: 0.02,
            },
            Component {
                weight: 1.0,
                median_s: 0.05,
            },
        ];
        let q = mixture_quantile(&c, p.sigma, 0.95);
        assert!(q > 0.02 * p.p95_factor() && q < 0.05 * p.p95_factor());
        // The share above q is 5%.
        let above: f64 = c
            .iter()
            .map(|c| c.weight * p.share_above(c.median_s, q))
            .sum::<f64>()
            / 2.0;
        assert!((above - 0.05).abs() < 1e-3, "{above}");
    }

    #[test]
    fn latency_is_flat_below_the_knee_and_steep_past_it() {
        let p = ReplicaParams::default();
        assert_eq!(p.conn_wait_ss(50.0), 0.0);
        assert!(p.conn_wait_ss(500.0) > 0.4);
        assert!(p.cpu_median_s(0.9) > 10.0 * p.cpu_median_s(0.1));
    }
}
