//! Test fixtures for the live tests: a metrics endpoint the test controls, a Prometheus of
//! the test's own, Swarm services, and the controller as a process. Everything started
//! here is stopped when its guard drops, failures included.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST").expect("DOCKER_HOST: run through scripts/test.sh, or `source /tmp/andon-env/env` after scripts/env.sh up")
}

pub fn image() -> String {
    std::env::var("ANDON_IMAGE").unwrap_or_else(|_| "andon:dev".into())
}

pub fn andon_bin() -> String {
    env!("CARGO_BIN_EXE_andon").to_string()
}

pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("andon-live-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 200 ms until it returns Some, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A minimal HTTP GET (the tests need no client library).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    // Chunked bodies (axum's JSON): undo the chunking.
    let body = if buf
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    Some((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Gauges the test sets, served as `andontest_signal{service=…, signal=…}` on /metrics.
#[derive(Clone)]
pub struct Signals {
    values: Arc<Mutex<BTreeMap<(String, String), f64>>>,
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Signals {
    pub fn start() -> Signals {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let values: Arc<Mutex<BTreeMap<(String, String), f64>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (v, st) = (values.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let mut r = BufReader::new(s.try_clone().unwrap());
                        let mut line = String::new();
                        while r.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                            line.clear();
                        }
                        let mut body = String::from("# TYPE andontest_signal gauge\n");
                        for ((svc, sig), val) in v.lock().unwrap().iter() {
                            body += &format!(
                                "andontest_signal{{service=\"{svc}\",signal=\"{sig}\"}} {val}\n"
                            );
                        }
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Signals { values, addr, stop }
    }

    pub fn set(&self, service: &str, signal: &str, value: f64) {
        self.values
            .lock()
            .unwrap()
            .insert((service.into(), signal.into()), value);
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        if Arc::strong_count(&self.stop) <= 2 {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// A Prometheus of the test's own, scraping the test's signals every second.
pub struct Prom {
    child: Option<Child>,
    dir: PathBuf,
    pub addr: String,
}

impl Prom {
    pub fn start(name: &str, target: SocketAddr) -> Prom {
        Self::start_with_history(name, target, None)
    }

    /// As `start`, with history backfilled before it starts: `openmetrics` (ending in
    /// `# EOF`) is turned into TSDB blocks by `promtool tsdb create-blocks-from
    /// openmetrics`, written into the data directory Prometheus then opens.
    pub fn start_with_history(name: &str, target: SocketAddr, openmetrics: Option<&str>) -> Prom {
        Self::start_at(name, target, openmetrics, "127.0.0.1")
    }

    /// As `start_with_history`, listening on `host` (an address other network
    /// namespaces reach, for a controller running as a service on a node).
    pub fn start_at(name: &str, target: SocketAddr, openmetrics: Option<&str>, host: &str) -> Prom {
        let dir = tmpdir(&format!("prom-{name}"));
        if let Some(text) = openmetrics {
            let file = dir.join("history.om");
            std::fs::write(&file, text).unwrap();
            let out = Command::new("promtool")
                .args(["tsdb", "create-blocks-from", "openmetrics"])
                .arg(&file)
                .arg(dir.join("data"))
                .output()
                .expect("promtool is installed (scripts/test.sh installs it)");
            assert!(
                out.status.success(),
                "promtool backfill failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: signals\n    honor_labels: true\n    static_configs: [{{targets: ['{target}']}}]\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let mut p = Prom {
            child: None,
            addr: format!("{host}:{}", free_port()),
            dir,
        };
        p.restart();
        p
    }

    /// Starts (again) on the same address and data.
    pub fn restart(&mut self) {
        let log = std::fs::File::create(self.dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={}", self.addr))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus is installed (scripts/env.sh installs it)");
        self.child = Some(child);
        let addr = self.addr.clone();
        wait_for(Duration::from_secs(30), "Prometheus ready", || {
            http_get(&addr, "/-/ready").filter(|(c, _)| *c == 200)
        });
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until a query for the signal returns `value` (the scrape has happened).
    pub fn wait_value(&self, service: &str, signal: &str, value: f64) {
        let q =
            format!("andontest_signal%7Bservice%3D%22{service}%22%2Csignal%3D%22{signal}%22%7D");
        let addr = self.addr.clone();
        wait_for(
            Duration::from_secs(20),
            "Prometheus to scrape the test signal",
            || {
                let (_, body) = http_get(&addr, &format!("/api/v1/query?query={q}"))?;
                body.contains(&format!("\"{value}\"")).then_some(())
            },
        );
    }
}

impl Drop for Prom {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", docker_host())
        .output()
        .expect("docker CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string()
            + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A Swarm service of stand-in replicas, removed on drop.
pub struct Service {
    pub name: String,
}

impl Service {
    pub fn create(name: &str, replicas: u32, opted_in: bool) -> Service {
        let labels: &[&str] = if opted_in {
            &["andon.enable=true"]
        } else {
            &[]
        };
        Service::create_with(name, replicas, labels, &[])
    }

    /// A stand-in service with extra labels and extra `stand-in` arguments.
    pub fn create_with(
        name: &str,
        replicas: u32,
        labels: &[&str],
        standin_args: &[&str],
    ) -> Service {
        Service::create_placed(name, replicas, &[], labels, standin_args)
    }

    /// As `create_with`, with `docker service create` arguments of its own (reservations,
    /// constraints).
    pub fn create_placed(
        name: &str,
        replicas: u32,
        service_args: &[&str],
        labels: &[&str],
        standin_args: &[&str],
    ) -> Service {
        let _ = docker(&["service", "rm", name]);
        let replicas = replicas.to_string();
        let image = image();
        let mut args = vec![
            "service",
            "create",
            "--detach",
            "--name",
            name,
            "--replicas",
            &replicas,
            "--publish",
            "mode=host,target=8080",
            "--label",
            "andon.test=true",
        ];
        for l in labels {
            args.extend(["--label", *l]);
        }
        args.extend(service_args);
        // erlmcp's TCP wire, when asked for, on 9000.
        if standin_args.contains(&"--tcp-listen") {
            args.extend(["--publish", "mode=host,target=9000"]);
        }
        args.extend([image.as_str(), "stand-in", "--listen", "0.0.0.0:8080"]);
        args.extend(standin_args);
        let (ok, out) = docker(&args);
        assert!(ok, "docker service create: {out}");
        let s = Service {
            name: name.to_string(),
        };
        wait_for(Duration::from_secs(30), "tasks running", || {
            (s.running() >= s.replicas()).then_some(())
        });
        s
    }

    fn inspect(&self, format: &str) -> String {
        let (ok, out) = docker(&["service", "inspect", &self.name, "--format", format]);
        assert!(ok, "inspect {}: {out}", self.name);
        out
    }

    /// Asserts that the replicas stay at `n` until `until` after `since`, looking every
    /// half second; `what` says what a change would mean.
    pub fn holds(&self, n: u32, since: Instant, until: Duration, what: &str) {
        while since.elapsed() < until {
            assert_eq!(self.replicas(), n, "{what} ({:?})", since.elapsed());
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub fn replicas(&self) -> u32 {
        self.inspect("{{.Spec.Mode.Replicated.Replicas}}")
            .parse()
            .unwrap_or(0)
    }

    pub fn version(&self) -> u64 {
        self.inspect("{{.Version.Index}}").parse().unwrap_or(0)
    }

    pub fn labels(&self) -> serde_json::Value {
        serde_json::from_str(&self.inspect("{{json .Spec.Labels}}")).unwrap_or_default()
    }

    pub fn running(&self) -> u32 {
        let (_, out) = docker(&[
            "service",
            "ps",
            &self.name,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.CurrentState}}",
        ]);
        out.lines().filter(|l| l.starts_with("Running")).count() as u32
    }
}

impl Drop for Service {
    /// Removes the service and waits (at most a minute) until its containers are gone:
    /// `service rm` returns at once, and the tasks live on for their stop grace period,
    /// still scraped under the service's name, into the next test that uses the name.
    fn drop(&mut self) {
        let _ = docker(&["service", "rm", &self.name]);
        let label = format!("label=com.docker.swarm.service.name={}", self.name);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            match docker(&["ps", "-aq", "--filter", &label]) {
                (true, out) if out.trim().is_empty() => return,
                (true, _) => std::thread::sleep(Duration::from_millis(500)),
                (false, _) => return,
            }
        }
    }
}

/// `andon run` as a process, killed on drop.
pub struct Controller {
    child: Option<Child>,
    pub listen: String,
    pub log: PathBuf,
    args: Vec<String>,
}

impl Controller {
    pub fn start(
        policy: &std::path::Path,
        prometheus: &str,
        extra: &[&str],
        log: PathBuf,
    ) -> Controller {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args: Vec<String> = vec![
            "run".into(),
            "--policy".into(),
            policy.display().to_string(),
            "--prometheus".into(),
            prometheus.into(),
            "--listen".into(),
            listen.clone(),
        ];
        if !extra.contains(&"--interval") {
            args.extend(["--interval".to_string(), "1s".to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut c = Controller {
            child: None,
            listen,
            log,
            args,
        };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(andon_bin())
            .args(&self.args)
            .env("DOCKER_HOST", docker_host())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let listen = self.listen.clone();
        wait_for(
            Duration::from_secs(15),
            "the controller's first tick",
            || {
                let (_, body) = http_get(&listen, "/status")?;
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                (v["ticks"].as_u64()? >= 1).then_some(())
            },
        );
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        c.wait().ok()?.code()
    }

    pub fn status(&self) -> serde_json::Value {
        let (_, body) = http_get(&self.listen, "/status").expect("/status answers");
        serde_json::from_str(&body).expect("/status is JSON")
    }

    pub fn service_status(&self, name: &str) -> serde_json::Value {
        let st = self.status();
        st["services"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["service"] == name).cloned())
            .unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A policy for the tests: signals from the test's gauges, short windows.
pub fn policy(services: &[(&str, u32, u32)], extra: &str) -> String {
    let mut s = String::from("version: 1\nservices:\n");
    for (name, min, max) in services {
        s += &format!("  - {{name: {name}, min_replicas: {min}, max_replicas: {max}}}\n");
    }
    s += r#"signals:
  p95_latency:
    query: max by (service) (andontest_signal{service="$service", signal="p95"})
    unit: seconds
  throughput:
    query: max by (service) (andontest_signal{service="$service", signal="rps"})
    unit: per_second
capacity:
  per_replica: {throughput: 100}
  target_utilization: 1.0
  tolerance: 0.1
tiers:
  yellow: {enter: {p95_latency: 150ms}, for: 2s, cooldown: 3s}
  red: {enter: {p95_latency: 250ms}, for: 2s, cooldown: 3s, action: {floor: 1.5x, shed: {admit: 0.9}}}
  emergency: {enter: {p95_latency: 5s}, for: 2s, cooldown: 3s, action: {floor: max}}
"#;
    s += extra;
    s
}

pub const FAST_BEHAVIOR: &str = r#"behavior:
  scale_up: {stabilization: 0s, max_step: {replicas: 10, period: 1s}}
  scale_down: {stabilization: 8s, max_step: {replicas: 10, period: 1s}}
jidoka:
  stale_after: 10s
  stop_after_failures: 2
"#;

/// A variable scripts/env.sh writes into its env file (HAProxy's socket, ports, files).
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name}: run through scripts/test.sh (scripts/env.sh up starts HAProxy)")
    })
}

/// One command on the environment's HAProxy runtime API; its answer.
pub fn haproxy(cmd: &str) -> Option<String> {
    let mut s = std::os::unix::net::UnixStream::connect(env("ANDON_HAPROXY_SOCKET")).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    writeln!(s, "{cmd}").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}
