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
andon simulate chaos/baseline.yaml --report reports/baseline\n\n\
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
    },
    /// Validate policy files: one summary line per valid file, file:line:col errors otherwise
    #[command(
        after_help = "Examples:\n  andon check policies/erlmcp-tps.yaml\n  andon check policies/*.yaml\n\n\
Exit codes: 0 all valid, 2 some file is invalid."
    )]
    Check {
        #[arg(required = true)]
        policies: Vec<PathBuf>,
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
DOCKER_HOST=unix:///tmp/andon-env/docker.sock andon run --policy P --log-format json\n\n\
Only services named in the policy AND labelled andon.enable=true are touched.\n\
See /status for what andon saw and why it acted, /metrics for Prometheus.\n\
The Docker endpoint comes from DOCKER_HOST (default the local socket); RUST_LOG filters logs.")]
    Run {
        #[arg(long, short)]
        policy: PathBuf,
        /// Prometheus base URL (plain http)
        #[arg(long, default_value = "http://127.0.0.1:9090")]
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
        /// Container port of the replicas' admission endpoint (POST /admin/admission)
        #[arg(long, default_value_t = 8080)]
        admission_port: u16,
        /// The services were deployed as this stack: `erlmcp` in the policy is STACK_erlmcp
        #[arg(long, value_name = "STACK")]
        stack: Option<String>,
    },
    /// Stand in for an erlmcp replica: erlmcp's metrics, /healthz, the admission endpoint
    #[command(
        name = "stand-in",
        after_help = "Example:\n  andon stand-in --listen 0.0.0.0:8080"
    )]
    StandIn {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
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

/// Failures that end the command: usage/config (exit 2).
struct Fail(String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(Fail(msg)) => {
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
        } => Ok(andon::run::run(andon::run::RunArgs {
            stack,
            policy: policy.to_string_lossy().into_owned(),
            prometheus,
            prometheus_timeout,
            bearer_token_file: prometheus_bearer_token_file
                .map(|p| p.to_string_lossy().into_owned()),
            basic_auth_file: prometheus_basic_auth_file.map(|p| p.to_string_lossy().into_owned()),
            interval,
            dry_run,
            listen,
            json_logs: matches!(log_format, LogFormat::Json),
            admission_port,
        })),
        Command::StandIn { listen } => Ok(andon::standin::serve(listen)),
        Command::Probe { url } => Ok(andon::run::probe(&url)),
        Command::Check { policies } => {
            let mut ok = true;
            for p in &policies {
                match policy::load(&p.to_string_lossy()) {
                    Ok(pol) => println!("{}", report::policy_summary(&pol)),
                    Err(e) => {
                        ok = false;
                        eprintln!("{e}");
                    }
                }
            }
            Ok(if ok { 0 } else { 2 })
        }
        Command::Rules { policy } => {
            let pol = load_policy(&policy)?;
            print!("{}", policy::rules::render(&pol));
            Ok(0)
        }
        Command::Calibrate { policy, json } => {
            let pol = load_policy(&policy)?;
            let points = andon::calibrate::run(&pol).map_err(Fail)?;
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
        } => {
            let pol = load_policy(&policy)?;
            let sc = scenario::load(&scenario.to_string_lossy())?;
            let svc = match &service {
                Some(name) => pol.service(name).ok_or_else(|| {
                    let names: Vec<&str> = pol.services.iter().map(|s| s.name.as_str()).collect();
                    Fail(format!(
                        "{}: no service `{name}` in the policy; allowed: {}",
                        pol.source,
                        names.join(", ")
                    ))
                })?,
                None => &pol.services[0],
            };
            if tick > interval {
                return Err(Fail(format!(
                    "--tick {} is longer than --interval {}; allowed: tick ≤ interval",
                    humantime::format_duration(tick),
                    humantime::format_duration(interval)
                )));
            }
            let opts = Options {
                controlled: !no_control,
                tick,
                interval,
                ..Options::default()
            };
            let result = simulate::run(&sc, &pol, svc, opts);
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
            Ok(result.verdict.exit_code() as u8)
        }
    }
}
