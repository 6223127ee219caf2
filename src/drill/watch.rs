//! The drill's eyes: the target's tasks (discovery, followed as Swarm scales), the
//! service's replicas from the Docker API, and the controller's tier, shedding and stop
//! flag from its /status; and the steady-state probe, which asks each endpoint for an
//! `initialize`.

use super::http::HttpClient;
use super::load::Endpoints;
use super::mcp::{self, ErrorClass};
use super::stats::Stats;
use super::stream;
use super::{Target, Wire};
use crate::policy::Tier;
use crate::record::status::Status;
use crate::scenario::expect::Outcome;
use crate::swarm::Swarm;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

#[derive(Debug, Clone, Default)]
pub struct Watched {
    pub replicas: Option<u32>,
    pub ready: Option<u32>,
    pub tier: Option<Tier>,
    pub shed_admit: Option<f64>,
    pub stopped: Option<bool>,
}

/// Host-mode endpoints of a service's running tasks.
pub async fn discover(
    swarm: &Swarm,
    service: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, crate::swarm::SwarmError> {
    let tasks = swarm.tasks(service).await?;
    let nodes: HashMap<String, String> = swarm.node_addresses().await.unwrap_or_default();
    let mut out: Vec<SocketAddr> = tasks
        .iter()
        .filter(|t| t.running)
        .filter_map(|t| t.address(port, &nodes)?.parse().ok())
        .collect();
    out.sort();
    Ok(out)
}

/// One look at everything the drill watches.
pub async fn observe(
    watched: &Rc<RefCell<Watched>>,
    swarm: Option<&Swarm>,
    target: &Target,
    port: u16,
    endpoints: &Endpoints,
    http: &reqwest::Client,
    controller: Option<&str>,
) {
    let mut w = watched.borrow().clone();
    if let (Some(sw), Target::Swarm(svc)) = (swarm, target) {
        if let Ok(info) = sw.inspect(svc).await {
            w.replicas = Some(info.replicas);
        }
        if let Ok(eps) = discover(sw, svc, port).await {
            w.ready = Some(eps.len() as u32);
            // New sessions follow scale changes; existing ones stay where they are.
            if !eps.is_empty() {
                *endpoints.borrow_mut() = eps;
            }
        }
    }
    if let Some(url) = controller {
        if let Some(v) = controller_status(http, url).await {
            let svc = target.service();
            let entry = v
                .services
                .into_iter()
                .find(|s| svc.is_none_or(|n| s.service == n));
            if let Some(e) = entry {
                w.tier = Some(e.tier);
                w.shed_admit = e.shed_admit;
                w.stopped = Some(e.stopped);
            }
        } else {
            w.tier = None;
        }
    }
    *watched.borrow_mut() = w;
}

/// The controller's `/status`, read into the structs `andon run` serialises.
async fn controller_status(http: &reqwest::Client, url: &str) -> Option<Status> {
    let r = http
        .get(format!("{}/status", url.trim_end_matches('/')))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    serde_json::from_slice(&r.bytes().await.ok()?).ok()
}

fn name(c: Option<super::mcp::ErrorClass>) -> &'static str {
    c.map_or("ok", super::mcp::ErrorClass::name)
}

/// Before any load: every endpoint opens a session and answers pings, and the controller
/// (when given) answers /status and knows the service.
pub async fn steady_state(
    wire: &super::Wire,
    endpoints: &Endpoints,
    http: &reqwest::Client,
    controller: Option<&str>,
    service: Option<&str>,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    let client = super::http::HttpClient::new();
    let eps = endpoints.borrow().clone();
    let (mut ok, mut total) = (0, 0);
    let mut last_error = String::new();
    for addr in &eps {
        total += 1;
        let deadline = || std::time::Instant::now() + std::time::Duration::from_secs(2);
        let (class, status) = probe(wire, &client, *addr, deadline()).await;
        if class.is_none() {
            ok += 1;
        } else {
            last_error = match status {
                0 => format!("{}: {}", wire.url(*addr), name(class)),
                _ => format!("{}: {} (HTTP {status})", wire.url(*addr), name(class)),
            };
        }
    }
    out.push(Outcome {
        text: "before the load: every target answers MCP initialize".into(),
        held: total > 0 && ok == total,
        observed: if ok == total {
            format!("{ok} of {total} endpoints")
        } else {
            format!("{ok} of {total} endpoints; {last_error}")
        },
    });
    if let Some(url) = controller {
        let v = controller_status(http, url).await;
        let known = v.as_ref().is_some_and(|v| {
            v.services
                .iter()
                .any(|s| service.is_none_or(|n| s.service == n))
        });
        out.push(Outcome {
            text: "before the load: the controller answers /status and watches the service".into(),
            held: known,
            observed: match (&v, known) {
                (None, _) => format!("{url}/status did not answer"),
                (Some(_), false) => "the controller does not list the service".into(),
                (Some(_), true) => "yes".into(),
            },
        });
    }
    out
}

/// The steady-state probe: does the endpoint answer `initialize`? The session it opens
/// is closed again (a probe per endpoint must not leave one behind).
pub async fn probe(
    wire: &Wire,
    client: &HttpClient,
    addr: SocketAddr,
    deadline: Instant,
) -> (Option<ErrorClass>, u16) {
    if *wire != Wire::Http {
        let stats = Rc::new(RefCell::new(Stats::new(&[])));
        let timeout = deadline.saturating_duration_since(Instant::now());
        return match stream::open(wire, addr, timeout, &stats).await {
            Ok(conn) => {
                conn.close();
                (None, 0)
            }
            Err(c) => (Some(c), 0),
        };
    }
    match client
        .post(addr, None, mcp::initialize_body(), deadline)
        .await
    {
        Err((class, status)) => (Some(class), status),
        Ok(r) => {
            if let Some(id) = &r.session {
                client.delete_session(addr, id).await;
            }
            (
                mcp::classify(r.status, r.retry_after, &r.body, true),
                r.status,
            )
        }
    }
}
