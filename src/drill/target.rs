//! Where a drill's load goes (`--target`) and over which wire: streamable HTTP, erlmcp's
//! WebSocket (`/mcp/ws`) or its line-delimited TCP.

use crate::scenario::Scenario;
use std::net::SocketAddr;

/// How MCP messages travel.
#[derive(Debug, Clone, PartialEq)]
pub enum Wire {
    /// Streamable HTTP: POST /mcp, sessions by `Mcp-Session-Id`.
    Http,
    /// WebSocket at this path (erlmcp's `/mcp/ws`): a message per text frame, `\n`-ended.
    Ws(String),
    /// TCP: a message per line (erlmcp's ranch `{packet, line}` transport).
    Tcp,
}

/// erlmcp's WebSocket path.
pub const WS_PATH: &str = "/mcp/ws";

impl Wire {
    pub fn of(t: crate::scenario::Transport) -> Wire {
        match t {
            crate::scenario::Transport::Http => Wire::Http,
            crate::scenario::Transport::Ws => Wire::Ws(WS_PATH.into()),
            crate::scenario::Transport::Tcp => Wire::Tcp,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Wire::Http => "http",
            Wire::Ws(_) => "ws",
            Wire::Tcp => "tcp",
        }
    }

    pub fn url(&self, addr: SocketAddr) -> String {
        match self {
            Wire::Http => format!("http://{addr}"),
            Wire::Ws(path) => format!("ws://{addr}{path}"),
            Wire::Tcp => format!("tcp://{addr}"),
        }
    }
}

/// Where the load goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// One MCP endpoint: http://HOST:PORT (the path /mcp is the server's),
    /// ws://HOST:PORT/PATH, or tcp://HOST:PORT.
    Url(SocketAddr, Wire),
    /// The running tasks of a Swarm service, found and followed through the Docker API.
    Swarm(String),
}

impl Target {
    pub fn parse(s: &str) -> crate::Result<Target> {
        use crate::Error::Config;
        if let Some(svc) = s.strip_prefix("swarm:") {
            if svc.is_empty() {
                return Err(Config("--target swarm:SERVICE needs a service name".into()));
            }
            return Ok(Target::Swarm(svc.to_string()));
        }
        let allowed =
            "allowed: http://HOST:PORT, ws://HOST:PORT/mcp/ws, tcp://HOST:PORT or swarm:SERVICE";
        let (wire, rest) = if let Some(r) = s.strip_prefix("http://") {
            let hostport = r.trim_end_matches('/').trim_end_matches("/mcp");
            (Wire::Http, hostport)
        } else if let Some(r) = s.strip_prefix("ws://") {
            match r.find('/') {
                Some(i) => (Wire::Ws(r[i..].to_string()), &r[..i]),
                None => (Wire::Ws(WS_PATH.into()), r),
            }
        } else if let Some(r) = s.strip_prefix("tcp://") {
            (Wire::Tcp, r.trim_end_matches('/'))
        } else {
            return Err(Config(format!("--target {s}: {allowed}")));
        };
        if rest.contains('/') {
            return Err(Config(format!(
                "--target {s}: {} takes no path here; {allowed}",
                wire.name()
            )));
        }
        use std::net::ToSocketAddrs;
        rest.to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .map(|a| Target::Url(a, wire))
            .ok_or_else(|| Config(format!("--target {s}: cannot resolve {rest} as HOST:PORT")))
    }

    pub fn service(&self) -> Option<&str> {
        match self {
            Target::Swarm(s) => Some(s),
            Target::Url(..) => None,
        }
    }

    /// The wire to speak: the URL's, or for a Swarm service the scenario's `transport:`.
    /// A URL and a scenario that disagree are a usage error.
    /// `chosen` (--transport) overrides the scenario's key.
    pub fn wire(
        &self,
        scenario: &Scenario,
        chosen: Option<crate::scenario::Transport>,
    ) -> crate::Result<Wire> {
        match (self, chosen.or(scenario.transport)) {
            (Target::Swarm(_), t) => Ok(Wire::of(t.unwrap_or_default())),
            (Target::Url(_, w), Some(t)) if w.name() != Wire::of(t).name() => {
                Err(crate::Error::Config(format!(
                    "--target speaks {} but the drill is asked for {} (--transport, or the scenario's `transport:`); use a {}:// target",
                    w.name(),
                    Wire::of(t).name(),
                    Wire::of(t).name()
                )))
            }
            (Target::Url(_, w), _) => Ok(w.clone()),
        }
    }
}
