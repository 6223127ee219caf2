//! The controller's own /metrics, in Prometheus text format (prometheus-client).

use crate::core::Decision;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub service: String,
    /// scale_up, scale_down or hold.
    pub action: String,
    /// The reason code that shaped the outcome most (see `Reason::code`).
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// prometheus or docker.
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActuatorLabel {
    /// scale, labels, admission or state.
    pub actuator: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForecastLabels {
    pub service: String,
    pub signal: String,
    /// trend, seasonal or sessions.
    pub forecaster: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    pub registry: Registry,
    pub tier: Family<ServiceLabel, Gauge>,
    pub desired: Family<ServiceLabel, Gauge>,
    pub current: Family<ServiceLabel, Gauge>,
    pub ready: Family<ServiceLabel, Gauge>,
    pub unplaceable: Family<ServiceLabel, Gauge>,
    pub moving: Family<ServiceLabel, Gauge>,
    pub shed_admit: Family<ServiceLabel, FloatGauge>,
    pub shedding: Family<ServiceLabel, Gauge>,
    pub stopped: Family<ServiceLabel, Gauge>,
    pub decisions: Family<DecisionLabels, Counter>,
    pub reconcile_seconds: Histogram,
    pub source_errors: Family<SourceLabel, Counter>,
    pub actuator_errors: Family<ActuatorLabel, Counter>,
    pub ticks: Counter,
    pub forecast: Family<ForecastLabels, FloatGauge>,
    pub forecast_horizon: Family<ForecastLabels, FloatGauge>,
    pub forecast_error: Family<ForecastLabels, FloatGauge>,
    pub forecast_overshoot: Family<ForecastLabels, FloatGauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("andon");
        let m = Metrics {
            tier: Family::default(),
            desired: Family::default(),
            current: Family::default(),
            ready: Family::default(),
            unplaceable: Family::default(),
            moving: Family::default(),
            shed_admit: Family::default(),
            shedding: Family::default(),
            stopped: Family::default(),
            decisions: Family::default(),
            reconcile_seconds: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            source_errors: Family::default(),
            actuator_errors: Family::default(),
            ticks: Counter::default(),
            forecast: Family::default(),
            forecast_horizon: Family::default(),
            forecast_error: Family::default(),
            forecast_overshoot: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "tier",
            "Andon tier per service: 0 green, 1 yellow, 2 red, 3 emergency",
            m.tier.clone(),
        );
        registry.register(
            "replicas_desired",
            "Replicas the core decided",
            m.desired.clone(),
        );
        registry.register(
            "replicas_current",
            "Replicas in the service spec",
            m.current.clone(),
        );
        registry.register(
            "replicas_ready",
            "Tasks running on nodes that serve (ready, not draining)",
            m.ready.clone(),
        );
        registry.register(
            "tasks_unplaceable",
            "Tasks Swarm found no node for (no suitable node: resources or constraints)",
            m.unplaceable.clone(),
        );
        registry.register(
            "tasks_moving",
            "Tasks meant to run that do not yet: starting, or on a node down or draining",
            m.moving.clone(),
        );
        registry.register(
            "shed_admit_ratio",
            "Shedding: fraction of capacity admitted (1 when not shedding)",
            m.shed_admit.clone(),
        );
        registry.register(
            "shedding",
            "1 while the service is shedding load",
            m.shedding.clone(),
        );
        registry.register(
            "stopped",
            "1 while Jidoka has stopped the line for the service",
            m.stopped.clone(),
        );
        registry.register(
            "decisions",
            "Decisions by action and deciding reason",
            m.decisions.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile tick",
            m.reconcile_seconds.clone(),
        );
        registry.register(
            "source_errors",
            "Failed reads by source",
            m.source_errors.clone(),
        );
        registry.register(
            "actuator_errors",
            "Failed writes by actuator",
            m.actuator_errors.clone(),
        );
        registry.register("ticks", "Reconcile ticks", m.ticks.clone());
        registry.register(
            "forecast",
            "Demand forecast at its horizon, per signal and forecaster (behavior.predict), in the signal's canonical unit",
            m.forecast.clone(),
        );
        registry.register(
            "forecast_horizon_seconds",
            "How far ahead the forecast looks",
            m.forecast_horizon.clone(),
        );
        registry.register(
            "forecast_error_ratio",
            "The forecaster's recent absolute error over demand (WAPE; the seasonal one's backtest until forecasts are scored)",
            m.forecast_error.clone(),
        );
        registry.register(
            "forecast_overshoot_ratio",
            "How far its recent forecasts ran above what happened, over demand: above max_error, it is ignored",
            m.forecast_overshoot.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Records one service's decision.
    pub fn record(&self, service: &str, d: &Decision, current: u32, ready: u32) {
        let l = ServiceLabel {
            service: service.to_string(),
        };
        self.tier.get_or_create(&l).set(d.tier.level() as i64);
        self.desired.get_or_create(&l).set(d.desired as i64);
        self.current.get_or_create(&l).set(current as i64);
        self.ready.get_or_create(&l).set(ready as i64);
        self.shed_admit
            .get_or_create(&l)
            .set(d.shed_admit.unwrap_or(1.0));
        self.shedding
            .get_or_create(&l)
            .set(d.shed_admit.is_some() as i64);
        self.stopped.get_or_create(&l).set(d.stopped as i64);
        let action = if d.desired > current {
            "scale_up"
        } else if d.desired < current {
            "scale_down"
        } else {
            "hold"
        };
        for o in &d.forecasts {
            let label = |forecaster: &str| ForecastLabels {
                service: service.to_string(),
                signal: o.signal.name().to_string(),
                forecaster: forecaster.to_string(),
            };
            for crate::core::predict::Said {
                forecaster: name,
                value,
                error,
                overshoot,
                horizon_s: horizon,
            } in o.said()
            {
                let l = label(name);
                // A forecaster with nothing to say drops its series, as an absent alert.
                match value {
                    Some(v) => {
                        self.forecast.get_or_create(&l).set(v);
                        self.forecast_horizon.get_or_create(&l).set(horizon);
                    }
                    None => {
                        self.forecast.remove(&l);
                        self.forecast_horizon.remove(&l);
                    }
                }
                match error {
                    Some(e) => {
                        self.forecast_error.get_or_create(&l).set(e);
                    }
                    None => {
                        self.forecast_error.remove(&l);
                    }
                }
                match overshoot {
                    Some(e) => {
                        self.forecast_overshoot.get_or_create(&l).set(e);
                    }
                    None => {
                        self.forecast_overshoot.remove(&l);
                    }
                }
            }
        }
        self.decisions
            .get_or_create(&DecisionLabels {
                service: service.to_string(),
                action: action.into(),
                reason: deciding_reason(d).into(),
            })
            .inc();
    }

    pub fn placement(&self, service: &str, p: crate::core::placement::Placement) {
        let l = ServiceLabel {
            service: service.to_string(),
        };
        self.unplaceable.get_or_create(&l).set(p.unplaceable as i64);
        self.moving.get_or_create(&l).set(p.moving as i64);
    }

    pub fn source_error(&self, source: &str) {
        self.source_errors
            .get_or_create(&SourceLabel {
                source: source.into(),
            })
            .inc();
    }

    pub fn actuator_error(&self, actuator: &str) {
        self.actuator_errors
            .get_or_create(&ActuatorLabel {
                actuator: actuator.into(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut s = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

/// The reason that shaped the outcome most: the last constraint applied before the
/// outcome (the core appends reasons in the order of its rules).
pub fn deciding_reason(d: &Decision) -> &'static str {
    use crate::core::Reason::*;
    d.reasons
        .iter()
        .rev()
        .find(|r| {
            matches!(
                r,
                Stopped { .. }
                    | RollingUpdate
                    | Bounded { .. }
                    | FlapGuard { .. }
                    | Panic { .. }
                    | PanicHold { .. }
                    | TierFloor { .. }
                    | StepLimited { .. }
                    | HeldForBadData { .. }
                    | Stabilized { .. }
                    | Forecast { .. }
                    | Capacity { .. }
                    | WithinTolerance { .. }
            )
        })
        .map_or("none", |r| r.code())
}
