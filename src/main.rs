//! The `andon` command line: parse arguments, call into the library, map outcomes to exit
//! codes (0 pass, 1 deviated, 2 usage or config error).

use andon::policy::{self, Policy};
use andon::report;
use andon::scenario;
use andon::simulate::{self, Options};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

// mimalloc: measured beside glibc's malloc on the drill's HTTP generator (10,000 requests/s),
// 1.16x the requests per CPU-second on 32 connections, 1.27x unbounded (README, "Generator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "andon",
    version,
    about = "A reconciling autoscaler for erlmcp on Docker Swarm, with a simulator",
    long_about = "andon watches an erlmcp service's signals, raises Andon tiers \
(green, yellow, red, emergency), sets Swarm replicas and sheds load, and explains why.\n\n\
Validate a policy offline in a second with `andon simulate`, before it touches a cluster.",
    after_help = "Examples:\n  \
andon simulate chaos/connection-flood.yaml\n  \
andon simulate chaos/message-bombing.yaml --no-control --json\n  \
andon check policies/*.yaml\n  \
andon rules policies/erlmcp-tps.yaml > manifests/alerts.yml\n\n\
Exit codes: 0 pass, 1 deviated, 2 usage or config error (e.g. an invalid policy)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a scenario against a modelled erlmcp cluster, with the policy in control
    #[command(after_help = "Examples:\n  \
andon simulate chaos/connection-flood.yaml\n  \
andon simulate chaos/connection-flood.yaml --no-control\n  \
andon simulate chaos/message-bombing.yaml --json | jq .summary\n  \
andon simulate chaos/baseline.yaml --report reports/baseline\n  \
andon simulate chaos/daily-peak.yaml --no-predict --baseline hpa\n\n\
Exit codes: 0 every expectation held, 1 some deviated, 2 bad file or arguments.")]
    Simulate {
        /// Scenario file (phases, faults, expectations), e.g. chaos/connection-flood.yaml
        scenario: PathBuf,
        /// Policy file
        #[arg(long, short, default_value = "policies/erlmcp-tps.yaml")]
        policy: PathBuf,
        /// Which service of the policy to model (default: the first)
        #[arg(long)]
        service: Option<String>,
        /// Run the core but do not act: what the cluster does on its own
        #[arg(long)]
        no_control: bool,
        /// Print one JSON object instead of the timeline
        #[arg(long)]
        json: bool,
        /// Write report.json and chart.svg into this directory
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// Controller reconcile interval
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        interval: Duration,
        /// Model time step
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        tick: Duration,
        /// Timeline rows on the terminal: one every this long (events always show)
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        every: Duration,
        /// Also run the scenario under a baseline controller and compare: hpa (Kubernetes'
        /// HPA with its defaults, on the policy's demand signals and capacity)
        #[arg(long, value_name = "NAME", value_parser = ["hpa"])]
        baseline: Option<String>,
        /// Turn the policy's demand forecasts off (behavior.predict): the reactive path
        /// alone, for comparison
        #[arg(long)]
        no_predict: bool,
    },
    /// Validate policy files: one summary line per valid file, file:line:col errors otherwise;
    /// with --prometheus, also try every query against a live Prometheus
    #[command(
        after_help = "Examples:\n  andon check policies/erlmcp-tps.yaml\n  andon check policies/*.yaml\n  \
andon check policies/erlmcp-tps.yaml --prometheus http://127.0.0.1:9090\n  \
andon check policies/erlmcp-tps.yaml --prometheus http://127.0.0.1:9090 --service staging_erlmcp\n\n\
With --prometheus, per service and signal: a value (and whether it is plausible for the unit),\n\
no series (fine only when the service is idle), several series, or an error.\n\n\
Exit codes: 0 all valid (and every query answered well), 1 a query warning, 2 some file is\n\
invalid or a query failed."
    )]
    Check {
        #[arg(required = true)]
        policies: Vec<PathBuf>,
        /// Also run each query against this Prometheus (plain http)
        #[arg(long, value_name = "URL", value_parser = prometheus_url)]
        prometheus: Option<String>,
        /// Check the queries for this Swarm service instead of the policy's services
        #[arg(long, value_name = "NAME", requires = "prometheus")]
        service: Option<String>,
        /// Timeout of each query
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        prometheus_timeout: Duration,
    },
    /// Print Prometheus alerting rules generated from a policy (one alert per service and tier)
    #[command(
        after_help = "Examples:\n  andon rules policies/erlmcp-tps.yaml > manifests/alerts.yml\n  \
andon rules policies/erlmcp-tps.yaml | promtool check rules /dev/stdin"
    )]
    Rules { policy: PathBuf },
    /// Run the controller: read Prometheus, decide, set Swarm replicas and shed load
    #[command(after_help = "Examples:\n  \
andon run --policy policies/erlmcp-tps.yaml --prometheus http://127.0.0.1:9090\n  \
andon run --policy policies/erlmcp-tps.yaml --dry-run --interval 1s\n  \
andon run --policy P --haproxy-socket /run/haproxy/admin.sock --haproxy-admit-map /etc/haproxy/admit.map \\\n      --admission-port 0     # a real erlmcp: shed and cap at HAProxy (manifests/haproxy.cfg)\n  \
DOCKER_HOST=unix:///tmp/andon-env/docker.sock andon run --policy P --log-format json\n\n\
Only services named in the policy AND labelled andon.enable=true are touched.\n\
See /status for what andon saw and why it acted, /metrics for Prometheus.\n\
The Docker endpoint comes from DOCKER_HOST (default the local socket); RUST_LOG filters logs.")]
    Run {
        #[arg(long, short)]
        policy: PathBuf,
        /// Prometheus base URL (plain http)
        #[arg(long, default_value = "http://127.0.0.1:9090", value_parser = prometheus_url)]
        prometheus: String,
        /// Reconcile interval
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        interval: Duration,
        /// Decide and report, write nothing to Docker or the replicas
        #[arg(long)]
        dry_run: bool,
        /// Address for /metrics, /status and /healthz
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: std::net::SocketAddr,
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Timeout of one Prometheus query
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        prometheus_timeout: Duration,
        /// File with a bearer token for Prometheus
        #[arg(long, value_name = "FILE")]
        prometheus_bearer_token_file: Option<PathBuf>,
        /// File with `user:password` for Prometheus basic auth
        #[arg(long, value_name = "FILE")]
        prometheus_basic_auth_file: Option<PathBuf>,
        /// Container port of the replicas' admission endpoint (POST /admin/admission); 0:
        /// the replicas have none (a real erlmcp), shed at the edge instead
        #[arg(long, default_value_t = 8080)]
        admission_port: u16,
        /// The services were deployed as this stack: `erlmcp` in the policy is STACK_erlmcp
        #[arg(long, value_name = "STACK")]
        stack: Option<String>,
        /// HAProxy's runtime API socket (`stats socket PATH level admin`): andon keeps its
        /// backend's servers on the service's running tasks, and sheds and caps there
        #[arg(long, value_name = "PATH")]
        haproxy_socket: Option<PathBuf>,
        /// BACKEND=SERVICE:PORT, the backend that follows SERVICE's tasks on container PORT
        /// (repeatable; default for a one-service policy: erlmcp=SERVICE:ADMISSION_PORT)
        #[arg(long, value_name = "BACKEND=SERVICE:PORT", requires = "haproxy_socket")]
        haproxy_backend: Vec<String>,
        /// HAProxy's map file whose `default` key is the admitted requests per second per
        /// session (HTTP shedding at the edge; see manifests/haproxy.cfg)
        #[arg(long, value_name = "FILE", requires = "haproxy_socket")]
        haproxy_admit_map: Option<String>,
        /// The frontend stick table that tracks sessions (to share the admitted rate)
        #[arg(long, default_value = "mcp", requires = "haproxy_socket")]
        haproxy_sessions_table: String,
    },
    /// Replay a scenario as real MCP traffic against a live target and verify the controller
    #[command(after_help = "Examples:\n  \
andon drill chaos/connection-flood.yaml --target swarm:erlmcp --speed 10 --controller http://127.0.0.1:9464\n  \
andon drill chaos/baseline.yaml --target http://127.0.0.1:8080 --json\n  \
andon drill chaos/baseline.yaml --target ws://127.0.0.1:8080/mcp/ws     # erlmcp's WebSocket wire\n  \
andon drill chaos/baseline.yaml --target tcp://127.0.0.1:9000          # erlmcp's TCP wire, a message per line\n  \
andon drill chaos/ci-faults.yaml --target swarm:erlmcp --controller http://127.0.0.1:9464 \\\n      --prometheus-pidfile /tmp/andon-env/prometheus.pid --report reports/faults\n\n\
The steady state is checked before the load, the scenario's expect: block during and after it.\n\
Exit codes: 0 every expectation held, 1 some deviated, 2 bad file, target or arguments.")]
    Drill {
        /// Scenario file, e.g. chaos/connection-flood.yaml
        scenario: PathBuf,
        /// http://HOST:PORT, ws://HOST:PORT/mcp/ws or tcp://HOST:PORT (one MCP endpoint), or
        /// swarm:SERVICE (its running tasks, followed; the scenario's `transport:` picks the wire)
        #[arg(long)]
        target: String,
        /// The wire for a swarm target, over the scenario's `transport:` (default http)
        #[arg(long, value_enum)]
        transport: Option<TransportArg>,
        /// Compress the phases, faults and expectation windows N times
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// The controller's base URL: tier, shedding and stop flag from its /status
        #[arg(long, value_name = "URL")]
        controller: Option<String>,
        /// The controller's Swarm service (for the restart_controller fault)
        #[arg(long, value_name = "SERVICE")]
        controller_service: Option<String>,
        /// Prometheus' pidfile (for the prometheus_down fault: SIGSTOP, then SIGCONT)
        #[arg(long, value_name = "FILE")]
        prometheus_pidfile: Option<String>,
        /// Container port of the MCP endpoint, for swarm targets (for `transport: tcp`, the
        /// TCP port)
        #[arg(long, default_value_t = 8080)]
        target_port: u16,
        /// Requests in flight at most; past it a send counts as a generator error. Each is a
        /// connection: Docker's userland proxy for published ports dies past a few thousand
        #[arg(long, default_value_t = 4096)]
        max_in_flight: u32,
        /// The load's HTTP/1.1 connections per endpoint at most, as wrk's -c: past it a
        /// request waits for a free one, its latency still counted from its intended send
        /// (wrk2); session opens and closes have their own. Default: a connection per
        /// request in flight
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        http_connections: Option<u32>,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
        /// Write report.json, histograms.hlog and index.html (SVG charts) into DIR
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
    },
    /// Stand in for an erlmcp replica: MCP on /mcp with the replica model, erlmcp's metrics
    #[command(
        name = "stand-in",
        after_help = "Examples:\n  andon stand-in --listen 0.0.0.0:8080\n  \
andon stand-in --capacity 200 --conn-capacity 20     # saturates early, like a busy replica\n  \
andon stand-in --zero-latency                        # no model delay: for load-generator benchmarks\n  \
andon stand-in --tcp-listen 0.0.0.0:9000             # also MCP over TCP, a message per line\n\n\
MCP on POST /mcp (streamable HTTP) and on /mcp/ws (WebSocket, erlmcp's framing: a\n\
message per text frame, each ending in \\n); erlmcp's metrics on /metrics; /healthz;\n\
POST /admin/admission {\"admit\": F|null} sets the shedding limit."
    )]
    StandIn {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Messages per second this replica serves at full utilisation
        #[arg(long, default_value_t = 400.0)]
        capacity: f64,
        /// Messages per second one session (one Erlang process in erlmcp) is served at most
        #[arg(long, default_value_t = 50.0)]
        conn_capacity: f64,
        /// Median latency when idle
        #[arg(long, default_value = "11ms", value_parser = parse_duration)]
        base_latency: Duration,
        /// Requests in flight at most; past it the answer is 503 (overload)
        #[arg(long, default_value_t = 2000)]
        queue_limit: usize,
        /// Serve with no model delay (to measure the load generator)
        #[arg(long)]
        zero_latency: bool,
        /// Also serve MCP over TCP here, as erlmcp's TCP transport (a message per line)
        #[arg(long, value_name = "ADDR")]
        tcp_listen: Option<std::net::SocketAddr>,
        /// No admission endpoint, as a real erlmcp: only a proxy in front can shed
        #[arg(long)]
        no_admission: bool,
        /// Sessions held at most, on every wire; past it a new one is refused at once
        #[arg(long, default_value_t = 10_000)]
        max_sessions: usize,
        /// A WebSocket or TCP connection that sends nothing for this long is closed
        /// (erlmcp's IDLE_TIMEOUT, at most 24h); a WebSocket message left unfinished for
        /// 30 s, or this if shorter, closes the connection with 1002 (its FRAGMENT_TIMEOUT)
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        idle_timeout: Duration,
    },
    /// Exit 0 if URL answers 2xx within 2 s (a healthcheck for images without curl)
    #[command(after_help = "Example:\n  andon probe http://127.0.0.1:9464/healthz")]
    Probe { url: String },
    /// Compare the model with the seed benchmark's five calibration points
    #[command(after_help = "Example:\n  andon calibrate --json")]
    Calibrate {
        #[arg(long, short, default_value = "policies/erlmcp-tps.yaml")]
        policy: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TransportArg {
    Http,
    Ws,
    Tcp,
}

impl From<TransportArg> for andon::scenario::Transport {
    fn from(t: TransportArg) -> Self {
        match t {
            TransportArg::Http => andon::scenario::Transport::Http,
            TransportArg::Ws => andon::scenario::Transport::Ws,
            TransportArg::Tcp => andon::scenario::Transport::Tcp,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = policy::units::parse_duration(s)?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

/// A Prometheus base URL this build can reach: plain http to a host. Checked at the
/// start: `ftp://x` or `https://…` were accepted and then failed every query, a `run`
/// that never decided anything and a `check` that blamed each query in turn.
fn prometheus_url(s: &str) -> Result<String, String> {
    const ALLOWED: &str = "allowed: http://HOST[:PORT][/PATH], e.g. http://127.0.0.1:9090";
    let s = s.trim();
    if !s.contains("://") {
        return Err(format!("no scheme; {ALLOWED}"));
    }
    let url = reqwest::Url::parse(s).map_err(|e| format!("not a URL ({e}); {ALLOWED}"))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(format!(
                "https is not built in (no TLS: the image carries no CA files; put a TLS-terminating proxy in between); {ALLOWED}"
            ))
        }
        other => return Err(format!("the scheme is `{other}`; {ALLOWED}")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("no host; {ALLOWED}"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "credentials in the URL would be shown in messages, logs and /status (give them with --prometheus-basic-auth-file or --prometheus-bearer-token-file); {ALLOWED}"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "a base URL has no query or fragment (andon adds /api/v1/query?…); {ALLOWED}"
        ));
    }
    // The client appends /api/v1/…: a base ending in / asked for /prom//api/v1/query.
    Ok(s.trim_end_matches('/').to_string())
}

/// Failures that end the command. The library's errors know their exit code (2 for what
/// the user must fix, 1 for a failure while running); anything else here is a usage or
/// output problem (2).
enum Fail {
    Andon(andon::Error),
    Usage(String),
}

impl From<andon::Error> for Fail {
    fn from(e: andon::Error) -> Self {
        Fail::Andon(e)
    }
}

impl From<andon::policy::yaml::FileErrors> for Fail {
    fn from(e: andon::policy::yaml::FileErrors) -> Self {
        Fail::Andon(e.into())
    }
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Self {
        Fail::Usage(e.to_string())
    }
}

impl From<serde_json::Error> for Fail {
    fn from(e: serde_json::Error) -> Self {
        Fail::Usage(e.to_string())
    }
}

/// 0 pass, 1 deviated.
fn verdict_code(v: andon::scenario::Verdict) -> u8 {
    match v {
        andon::scenario::Verdict::Pass => 0,
        andon::scenario::Verdict::Deviated => 1,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(Fail::Andon(e)) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code())
        }
        Err(Fail::Usage(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(2)
        }
    }
}

fn load_policy(path: &std::path::Path) -> Result<Policy, Fail> {
    Ok(policy::load(&path.to_string_lossy())?)
}

fn run(cli: Cli) -> Result<u8, Fail> {
    match cli.command {
        Command::Run {
            policy,
            prometheus,
            interval,
            dry_run,
            listen,
            log_format,
            prometheus_timeout,
            prometheus_bearer_token_file,
            prometheus_basic_auth_file,
            admission_port,
            stack,
            haproxy_socket,
            haproxy_backend,
            haproxy_admit_map,
            haproxy_sessions_table,
        } => {
            let edge = match haproxy_socket {
                None => None,
                Some(socket) => Some(andon::act::haproxy::Edge {
                    socket,
                    backends: haproxy_backend
                        .iter()
                        .map(|b| andon::act::haproxy::EdgeBackend::parse(b))
                        .collect::<Result<_, _>>()
                        .map_err(Fail::Usage)?,
                    admit_map: haproxy_admit_map,
                    sessions_table: haproxy_sessions_table,
                    timeout: Duration::from_secs(1),
                }),
            };
            andon::run::run(andon::run::RunArgs {
                edge,
                stack,
                policy: policy.to_string_lossy().into_owned(),
                prometheus,
                prometheus_timeout,
                bearer_token_file: prometheus_bearer_token_file
                    .map(|p| p.to_string_lossy().into_owned()),
                basic_auth_file: prometheus_basic_auth_file
                    .map(|p| p.to_string_lossy().into_owned()),
                interval,
                dry_run,
                listen,
                json_logs: matches!(log_format, LogFormat::Json),
                admission_port,
            })
            .map(|()| 0)
            .map_err(Fail::from)
        }
        Command::StandIn {
            listen,
            capacity,
            conn_capacity,
            base_latency,
            queue_limit,
            zero_latency,
            tcp_listen,
            no_admission,
            max_sessions,
            idle_timeout,
        } => {
            if idle_timeout.is_zero() || idle_timeout > Duration::from_secs(24 * 3600) {
                return Err(Fail::Usage(format!(
                    "--idle-timeout {}: allowed: above zero and at most 24h, e.g. 5m",
                    humantime::format_duration(idle_timeout)
                )));
            }
            for (name, v) in [("--capacity", capacity), ("--conn-capacity", conn_capacity)] {
                if !(v.is_finite() && v > 0.0) {
                    return Err(Fail::Usage(format!(
                        "{name} {v}: allowed: messages per second > 0"
                    )));
                }
            }
            andon::standin::serve(andon::standin::Options {
                listen,
                capacity,
                conn_capacity,
                base_latency,
                queue_limit,
                zero_latency,
                tcp_listen,
                no_admission,
                max_sessions,
                idle_timeout,
            })
            .map(|()| 0)
            .map_err(Fail::from)
        }
        Command::Drill {
            scenario,
            target,
            transport,
            speed,
            controller,
            controller_service,
            prometheus_pidfile,
            target_port,
            max_in_flight,
            http_connections,
            json,
            report: report_dir,
        } => {
            if !(speed.is_finite() && speed > 0.0 && speed <= 1000.0) {
                return Err(Fail::Usage(format!(
                    "--speed {speed}: allowed: a factor above 0, at most 1000"
                )));
            }
            let sc = scenario::load(&scenario.to_string_lossy())?;
            let target = andon::drill::Target::parse(&target)?;
            let transport = transport.map(Into::into);
            let wire = target.wire(&sc, transport)?;
            if http_connections.is_some() && wire != andon::drill::Wire::Http {
                return Err(Fail::Usage(format!(
                    "--http-connections: the drill speaks {} here, where each session is its own connection; allowed with the http wire only",
                    wire.name()
                )));
            }
            // Before the drill, not after minutes of load: a bad --report loses nothing.
            if let Some(dir) = &report_dir {
                report::prepare_dir(dir)?;
            }
            andon::run::init_logging(false);
            let opts = andon::drill::Options {
                target,
                transport,
                target_port,
                speed,
                controller,
                controller_service,
                prometheus_pidfile,
                max_in_flight,
                http_connections,
                progress: !json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            };
            let result = andon::drill::run(&sc, opts)?;
            if json {
                println!("{}", serde_json::to_string(&result)?);
            } else {
                print!("{}", andon::drill::report::terminal(&result));
            }
            if let Some(dir) = report_dir {
                let path = andon::drill::report::write_dir(&result, &dir)?;
                if !json {
                    println!("report: {}", path.display());
                }
            }
            Ok(verdict_code(result.verdict))
        }
        Command::Probe { url } => andon::run::probe(&url).map(|()| 0).map_err(Fail::from),
        Command::Check {
            policies,
            prometheus,
            service,
            prometheus_timeout,
        } => {
            use andon::observe::trial::{self, Level};
            let mut code = 0;
            for p in &policies {
                let pol = match policy::load(&p.to_string_lossy()) {
                    Ok(pol) => pol,
                    Err(e) => {
                        code = 2;
                        eprintln!("{e}");
                        continue;
                    }
                };
                println!("{}", report::policy_summary(&pol));
                let Some(url) = &prometheus else { continue };
                let names: Vec<String> = match &service {
                    Some(s) => vec![s.clone()],
                    None => pol.services.iter().map(|s| s.name.clone()).collect(),
                };
                let findings = trial::run(&pol, url, &names, prometheus_timeout)?;
                print!("{}", trial::render(&findings));
                let worst = findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok);
                code = code.max(match worst {
                    Level::Ok => 0,
                    Level::Warning => 1,
                    Level::Error => 2,
                });
            }
            Ok(code)
        }
        Command::Rules { policy } => {
            let pol = load_policy(&policy)?;
            print!("{}", policy::rules::render(&pol));
            Ok(0)
        }
        Command::Calibrate { policy, json } => {
            let pol = load_policy(&policy)?;
            let points = andon::calibrate::run(&pol)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&points)?);
            } else {
                print!("{}", andon::calibrate::table(&points));
            }
            Ok(if points.iter().all(|p| p.within) {
                0
            } else {
                1
            })
        }
        Command::Simulate {
            scenario,
            policy,
            service,
            no_control,
            json,
            report: report_dir,
            interval,
            tick,
            every,
            baseline,
            no_predict,
        } => {
            let mut pol = load_policy(&policy)?;
            if no_predict {
                pol.behavior.predict = None;
            }
            let sc = scenario::load(&scenario.to_string_lossy())?;
            let svc = match &service {
                Some(name) => pol.service(name).ok_or_else(|| {
                    let names: Vec<&str> = pol.services.iter().map(|s| s.name.as_str()).collect();
                    Fail::Usage(format!(
                        "{}: no service `{name}` in the policy; allowed: {}",
                        pol.source,
                        names.join(", ")
                    ))
                })?,
                None => &pol.services[0],
            };
            let opts = Options {
                controlled: !no_control,
                tick,
                interval,
                ..Options::default()
            };
            simulate::check_options(&sc, &opts)?;
            simulate::check_history(&sc, &pol)?;
            if let Some(dir) = &report_dir {
                report::check_report_dir(dir)?;
            }
            let result = simulate::run_compared(&sc, &pol, svc, opts, baseline.is_some());
            if json {
                println!("{}", serde_json::to_string(&result)?);
            } else {
                print!(
                    "{}",
                    report::terminal(&result, &sc, every, report::use_color())
                );
            }
            if let Some(dir) = report_dir {
                let written = report::write_dir(&result, &sc, &dir)?;
                if !json {
                    println!("report: {}", written.display());
                }
            }
            Ok(verdict_code(result.verdict))
        }
    }
}
