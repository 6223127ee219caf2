//! The edge actuator: HAProxy in front of a service, driven over its runtime API (a unix
//! socket, `stats socket … level admin`), with no reload. erlmcp has no admission API;
//! HAProxy is where shedding and the connection cap happen for a real erlmcp.
//!
//! Each tick, level-triggered (a restarted HAProxy is re-synced at the next):
//! - **servers**: the backend's `server-template` slots hold the service's running tasks
//!   (node address, published port): a slot whose task is gone is disabled, a new task
//!   fills a free slot (`set server … addr … port …`, `enable server`);
//! - **admission** (HTTP): the frontend limits each session's admitted requests per second
//!   (a stick table keyed by `Mcp-Session-Id`, the limit read from a map's `default` key).
//!   andon sets it to the policy's admitted rate per replica × replicas ÷ live sessions;
//!   no shedding sets it to 1,000,000 (no limit);
//! - **connection cap**: each server's `maxconn` is the cap (0: none). Past it HAProxy
//!   queues for `timeout queue`, then answers 503: short in manifests/haproxy.cfg.
//!
//! Failures are reported (`/status` edge, `andon_actuator_errors_total{actuator="haproxy"}`)
//! and never touch scaling.

use super::admission::Admission;
use crate::swarm::TaskInfo;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The per-session limit that means "no limit" (the map's value when nothing is shed).
pub const NO_LIMIT: u64 = 1_000_000;

/// One HAProxy backend that follows one service's tasks on one container port.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeBackend {
    pub backend: String,
    pub service: String,
    pub port: u16,
}

impl EdgeBackend {
    /// `BACKEND=SERVICE:PORT`, e.g. `erlmcp=erlmcp:8080`.
    pub fn parse(s: &str) -> Result<EdgeBackend, String> {
        let err = || {
            format!("--haproxy-backend {s}: allowed: BACKEND=SERVICE:PORT, e.g. erlmcp=erlmcp:8080")
        };
        let (backend, rest) = s.split_once('=').ok_or_else(err)?;
        let (service, port) = rest.rsplit_once(':').ok_or_else(err)?;
        let port: u16 = port.parse().map_err(|_| err())?;
        if backend.is_empty() || service.is_empty() || port == 0 {
            return Err(err());
        }
        Ok(EdgeBackend {
            backend: backend.into(),
            service: service.into(),
            port,
        })
    }
}

/// What the edge looked like after the last tick, for /status.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct EdgeStatus {
    pub socket: String,
    /// The last tick's failure, if any.
    pub error: Option<String>,
    pub backends: Vec<BackendStatus>,
}

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct BackendStatus {
    pub backend: String,
    pub service: String,
    /// Servers in service, as ADDR:PORT.
    pub servers: Vec<String>,
    pub slots: usize,
    /// Runtime commands sent this tick (0: already in step).
    pub changes: usize,
    /// The admitted requests per second per session (None: no limit).
    pub session_limit: Option<u64>,
    pub maxconn: u32,
}

/// A server slot as `show servers state` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub name: String,
    pub addr: String,
    pub port: u16,
    pub in_service: bool,
}

/// Parses `show servers state BACKEND` (format 1), by its header's column names.
pub fn parse_servers(text: &str) -> Result<Vec<Slot>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines
        .by_ref()
        .find(|l| l.starts_with('#'))
        .ok_or_else(|| format!("no header in `show servers state`: {}", first_line(text)))?;
    let cols: Vec<&str> = header.trim_start_matches('#').split_whitespace().collect();
    let at = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(n), Some(a), Some(s), Some(p)) = (
        at("srv_name"),
        at("srv_addr"),
        at("srv_admin_state"),
        at("srv_port"),
    ) else {
        return Err(format!("unexpected `show servers state` columns: {header}"));
    };
    lines
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let get = |i: usize| f.get(i).copied().ok_or_else(|| format!("short line: {l}"));
            let admin: u32 = get(s)?
                .parse()
                .map_err(|_| format!("bad admin state: {l}"))?;
            Ok(Slot {
                name: get(n)?.into(),
                addr: get(a)?.into(),
                port: get(p)?.parse().unwrap_or(0),
                // HAProxy's SRV_ADMF_MAINT: forced (0x01), inherited (0x02) or resolution
                // (0x20) maintenance. A `disabled` slot enabled at runtime keeps its config
                // bit 0x04; 0x40 only says the FQDN came from the socket.
                in_service: admin & 0x23 == 0,
            })
        })
        .collect()
}

/// The runtime commands that put exactly `wanted` (ADDR:PORT) in service on `slots`.
/// `Err` when there are more tasks than slots (the others stay out, and it says so).
pub fn plan_servers(
    backend: &str,
    slots: &[Slot],
    wanted: &[String],
) -> (Vec<String>, Option<String>) {
    let key = |s: &Slot| format!("{}:{}", s.addr, s.port);
    let mut cmds = Vec::new();
    let mut free: Vec<&Slot> = Vec::new();
    let mut placed: Vec<String> = Vec::new();
    for s in slots {
        let k = key(s);
        if wanted.contains(&k) && !placed.contains(&k) {
            if !s.in_service {
                cmds.push(format!("enable server {backend}/{}", s.name));
            }
            placed.push(k);
        } else {
            if s.in_service {
                cmds.push(format!("disable server {backend}/{}", s.name));
            }
            free.push(s);
        }
    }
    let mut missing = 0;
    for w in wanted.iter().filter(|w| !placed.contains(w)) {
        let Some(slot) = free.pop() else {
            missing += 1;
            continue;
        };
        let Some((addr, port)) = w.rsplit_once(':') else {
            continue;
        };
        cmds.push(format!(
            "set server {backend}/{} addr {addr} port {port}",
            slot.name
        ));
        cmds.push(format!("enable server {backend}/{}", slot.name));
    }
    let error = (missing > 0).then(|| {
        format!(
            "backend {backend} has {} slots for {} tasks: {missing} left out (add slots to its server-template)",
            slots.len(),
            wanted.len()
        )
    });
    (cmds, error)
}

/// The admitted requests per second per session: the policy's admitted rate per replica
/// (`max_rps`) times the replicas, shared among the sessions the frontend tracks.
pub fn session_limit(admission: &Admission, replicas: usize, sessions: usize) -> Option<u64> {
    admission.admit?;
    let per_replica = admission.max_rps?;
    let total = per_replica * replicas.max(1) as f64;
    Some(((total / sessions.max(1) as f64).ceil() as u64).clamp(1, NO_LIMIT))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

#[derive(Debug, Clone)]
pub struct Edge {
    pub socket: PathBuf,
    pub backends: Vec<EdgeBackend>,
    /// The map file whose `default` key is the per-session limit (HTTP admission).
    pub admit_map: Option<String>,
    /// The frontend's stick table of sessions (its name), to count live sessions.
    pub sessions_table: String,
    pub timeout: Duration,
}

impl Edge {
    /// One runtime API command; its answer.
    async fn command(&self, cmd: &str) -> Result<String, String> {
        let io = async {
            let mut s = tokio::net::UnixStream::connect(&self.socket).await?;
            s.write_all(cmd.as_bytes()).await?;
            s.write_all(b"\n").await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        match tokio::time::timeout(self.timeout, io).await {
            Err(_) => Err(format!(
                "{}: no answer within {:?}",
                self.socket.display(),
                self.timeout
            )),
            Ok(Err(e)) => Err(format!("{}: {e}", self.socket.display())),
            Ok(Ok(out)) => Ok(out),
        }
    }

    /// Commands whose answers must not be errors (a successful change answers nothing, or
    /// says what it changed).
    async fn change(&self, cmds: &str) -> Result<(), String> {
        let out = self.command(cmds).await?;
        let bad = out.lines().find(|l| {
            let low = l.to_ascii_lowercase();
            [
                "unknown",
                "no such",
                "require",
                "invalid",
                "not found",
                "error",
                "denied",
            ]
            .iter()
            .any(|w| low.contains(w))
        });
        match bad {
            Some(l) => Err(format!("HAProxy refused a change: {}", l.trim())),
            None => Ok(()),
        }
    }

    /// Live sessions in the frontend's table (`used:N` in its header).
    async fn sessions(&self) -> Result<usize, String> {
        let out = self
            .command(&format!("show table {}", self.sessions_table))
            .await?;
        first_line(&out)
            .split(|c: char| c == ',' || c.is_whitespace())
            .find_map(|w| w.strip_prefix("used:"))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("show table {}: {}", self.sessions_table, first_line(&out)))
    }

    /// Brings every backend in step with its service's running tasks and limits.
    /// `work`: per service, its tasks and the admission they should hold.
    pub async fn apply(
        &self,
        work: &HashMap<String, (Vec<TaskInfo>, Admission)>,
        nodes: &HashMap<String, String>,
    ) -> EdgeStatus {
        let mut status = EdgeStatus {
            socket: self.socket.display().to_string(),
            ..EdgeStatus::default()
        };
        let mut errors = Vec::new();
        for b in &self.backends {
            match self.apply_backend(b, work.get(&b.service), nodes).await {
                Ok((bs, err)) => {
                    errors.extend(err);
                    status.backends.push(bs);
                }
                Err(e) => errors.push(e),
            }
        }
        // The per-session limit, once per tick, after the servers (a failing table read
        // must not hold the servers back). One map, so one service: run.rs checks that.
        if let (Some(map), Some(first)) = (&self.admit_map, self.backends.first()) {
            match self.set_limit(map, work.get(&first.service)).await {
                Ok(limit) => {
                    for b in &mut status.backends {
                        b.session_limit = limit;
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        // An unreachable socket fails every backend the same way: say it once.
        errors.dedup();
        status.error = (!errors.is_empty()).then(|| errors.join("; "));
        status
    }

    /// Sets the map's per-session limit from the service's admission; the limit set.
    async fn set_limit(
        &self,
        map: &str,
        work: Option<&(Vec<TaskInfo>, Admission)>,
    ) -> Result<Option<u64>, String> {
        let Some((tasks, admission)) = work else {
            return Ok(None);
        };
        if admission.admit.is_some() && admission.max_rps.is_none() {
            // Nothing to share out: the policy gives no throughput capacity per replica.
            self.change(&format!("set map {map} default {NO_LIMIT}"))
                .await?;
            return Err("the tier sheds, but the policy has no capacity.per_replica.throughput: the edge cannot compute a per-session rate".into());
        }
        let sessions = self.sessions().await?;
        let running = tasks.iter().filter(|t| t.running).count();
        let limit = session_limit(admission, running, sessions);
        self.change(&format!(
            "set map {map} default {}",
            limit.unwrap_or(NO_LIMIT)
        ))
        .await?;
        Ok(limit)
    }

    async fn apply_backend(
        &self,
        b: &EdgeBackend,
        work: Option<&(Vec<TaskInfo>, Admission)>,
        nodes: &HashMap<String, String>,
    ) -> Result<(BackendStatus, Option<String>), String> {
        // A service andon did not read this tick (absent, not opted in) keeps its servers.
        let Some((tasks, admission)) = work else {
            return Err(format!(
                "backend {}: service {} not read this tick; servers left as they are",
                b.backend, b.service
            ));
        };
        let wanted: Vec<String> = tasks
            .iter()
            .filter(|t| t.running)
            .filter_map(|t| t.address(b.port, nodes))
            .collect();
        let slots = parse_servers(
            &self
                .command(&format!("show servers state {}", b.backend))
                .await?,
        )
        .map_err(|e| format!("backend {}: {e}", b.backend))?;
        let (mut cmds, short) = plan_servers(&b.backend, &slots, &wanted);
        let maxconn = admission.max_sessions.unwrap_or(0);
        for s in &slots {
            cmds.push(format!(
                "set maxconn server {}/{} {maxconn}",
                b.backend, s.name
            ));
        }
        // maxconn is sent every tick (level-triggered); count real changes.
        let changes = cmds
            .iter()
            .filter(|c| !c.starts_with("set maxconn"))
            .count();
        // One line, one connection: the runtime API runs `;`-separated commands in order.
        if !cmds.is_empty() {
            self.change(&cmds.join("; ")).await?;
        }
        if changes > 0 {
            tracing::info!(backend = %b.backend, service = %b.service, servers = ?wanted, changes, "edge: HAProxy servers set to the running tasks");
        }
        Ok((
            BackendStatus {
                backend: b.backend.clone(),
                service: b.service.clone(),
                servers: wanted,
                slots: slots.len(),
                changes,
                session_limit: None,
                maxconn,
            },
            short,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 erlmcp 1 task1 127.0.0.1 2 4 1 1 0 1 0 0 8 0 0 0 - 18181 - 0 0 - - 0\n3 erlmcp 2 task2 127.0.0.1 0 5 1 1 0 1 0 0 8 0 0 0 - 1 - 0 0 - - 0\n3 erlmcp 3 task3 127.0.0.1 0 5 1 1 0 1 0 0 8 0 0 0 - 1 - 0 0 - - 0\n";

    #[test]
    fn the_server_state_is_read_by_its_columns() {
        let s = parse_servers(STATE).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0],
            Slot {
                name: "task1".into(),
                addr: "127.0.0.1".into(),
                port: 18181,
                in_service: true
            }
        );
        assert!(!s[1].in_service);
        assert!(parse_servers("Can't find backend.\n").is_err());
    }

    #[test]
    fn servers_follow_the_tasks_with_the_fewest_commands() {
        let s = parse_servers(STATE).unwrap();
        // In step: nothing to do.
        let (c, e) = plan_servers("erlmcp", &s, &["127.0.0.1:18181".into()]);
        assert!(c.is_empty() && e.is_none(), "{c:?}");
        // A new task fills a free slot; the gone one is disabled.
        let (c, _) = plan_servers("erlmcp", &s, &["127.0.0.1:18182".into()]);
        assert_eq!(
            c,
            [
                "disable server erlmcp/task1",
                "set server erlmcp/task3 addr 127.0.0.1 port 18182",
                "enable server erlmcp/task3"
            ]
        );
        // More tasks than slots: the rest are left out, and it says so.
        let many: Vec<String> = (0..5).map(|i| format!("10.0.0.1:{}", 30000 + i)).collect();
        let (c, e) = plan_servers("erlmcp", &s, &many);
        assert_eq!(c.iter().filter(|c| c.starts_with("enable")).count(), 3);
        assert!(e.unwrap().contains("3 slots for 5 tasks"));
    }

    #[test]
    fn the_session_limit_shares_the_admitted_rate() {
        let shed = Admission {
            admit: Some(0.5),
            max_rps: Some(300.0),
            max_sessions: None,
        };
        assert_eq!(session_limit(&shed, 4, 40), Some(30));
        assert_eq!(session_limit(&shed, 4, 0), Some(1200));
        assert_eq!(session_limit(&Admission::ALL, 4, 40), None);
    }

    #[test]
    fn backends_are_parsed_with_clear_errors() {
        assert_eq!(
            EdgeBackend::parse("erlmcp=erlmcp:8080").unwrap(),
            EdgeBackend {
                backend: "erlmcp".into(),
                service: "erlmcp".into(),
                port: 8080
            }
        );
        for bad in ["erlmcp", "erlmcp=erlmcp", "=x:1", "b=s:0", "b=s:http"] {
            assert!(EdgeBackend::parse(bad).is_err(), "{bad}");
        }
    }
}
