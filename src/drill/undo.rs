//! What a drill's faults take, and giving it back: a node's availability as it was,
//! paused containers, a stopped Prometheus. Each undo is done at its fault's end; when
//! the drill ends first (a `for` past its end) or is stopped (SIGINT, SIGTERM),
//! [`Pending::undo_all`] does what is left, so a drill never leaves a node drained, tasks
//! paused or Prometheus stopped behind it.
//!
//! The registry outlives the drill's future (`drill::run` owns it), and it knows the
//! faults task: an injection in flight when the drill stops is let finish, and its undo,
//! registered after the close, is done at once rather than lost with the runtime.

use crate::swarm::Swarm;
use bollard::models::NodeSpecAvailabilityEnum as Availability;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;
use tokio::time::Instant;

/// One thing to give back.
#[derive(Debug, Clone)]
pub enum Undo {
    /// The node (by id) goes back to `previous`, if it is still drained.
    Availability {
        node: String,
        id: String,
        previous: Availability,
    },
    Unpause(Vec<String>),
    ResumePrometheus(String),
}

/// How long one undo may take, retries included: an unreachable Docker must not hang
/// the end of a drill (bollard's own timeout is two minutes).
const UNDO_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Inner {
    next: u32,
    /// Each undo, its time, and its timer (aborted when a later drain takes it over).
    entries: BTreeMap<u32, (Undo, Instant, Option<tokio::task::AbortHandle>)>,
    closed: bool,
    /// What undos registered after the close did, for `undo_all` to report.
    late: Vec<String>,
    /// The faults task, and whether it is injecting right now.
    task: Option<tokio::task::JoinHandle<()>>,
    injecting: bool,
}

/// The undos not yet done.
#[derive(Debug, Clone, Default)]
pub struct Pending(Rc<RefCell<Inner>>);

impl Pending {
    /// Registers `undo`, due at `until`, and schedules it. A second drain of a node
    /// already drained by this drill takes over the first's undo: the node goes back to
    /// what it was before the first, when the later of the two ends. Once the drill is
    /// ending, the undo is done at once.
    pub async fn add(&self, undo: Undo, until: Instant, swarm: Option<Swarm>) {
        if self.0.borrow().closed {
            let done = tokio::time::timeout(UNDO_TIMEOUT, undo.apply(swarm.as_ref()))
                .await
                .unwrap_or_else(|_| format!("NOT given back in time: {}", undo.by_hand()));
            self.0.borrow_mut().late.push(done);
            return;
        }
        let (key, until) = {
            let mut inner = self.0.borrow_mut();
            let (mut undo, mut until) = (undo, until);
            if let Undo::Availability { id, .. } = &undo {
                let earlier = inner.entries.iter().find_map(|(k, (u, _, _))| match u {
                    Undo::Availability { id: other, .. } if other == id => Some(*k),
                    _ => None,
                });
                if let Some((u, t, timer)) = earlier.and_then(|k| inner.entries.remove(&k)) {
                    // Its timer must not give the node back in the middle of this drain.
                    if let Some(timer) = timer {
                        timer.abort();
                    }
                    undo = u;
                    until = until.max(t);
                }
            }
            let key = inner.next;
            inner.next += 1;
            inner.entries.insert(key, (undo, until, None));
            (key, until)
        };
        let pending = self.clone();
        let timer = tokio::task::spawn_local(async move {
            tokio::time::sleep_until(until).await;
            // Looked up at its time: a later drain of the same node took it over, or
            // undo_all did it already.
            let Some(undo) = pending.get(key) else {
                return;
            };
            // Done first, forgotten after: should the drill end meanwhile, undo_all still
            // finds it (giving back twice is harmless).
            let _ = tokio::time::timeout(UNDO_TIMEOUT, undo.apply(swarm.as_ref())).await;
            pending.0.borrow_mut().entries.remove(&key);
        });
        if let Some(entry) = self.0.borrow_mut().entries.get_mut(&key) {
            entry.2 = Some(timer.abort_handle());
        }
    }

    fn get(&self, key: u32) -> Option<Undo> {
        self.0.borrow().entries.get(&key).map(|(u, _, _)| u.clone())
    }

    /// The faults task, so that stopping the drill can let an injection finish.
    pub fn watch_task(&self, task: tokio::task::JoinHandle<()>) {
        self.0.borrow_mut().task = Some(task);
    }

    /// Marks an injection in flight (true) or done (false).
    pub fn injecting(&self, on: bool) {
        self.0.borrow_mut().injecting = on;
    }

    /// Whether the drill is ending: no more faults are injected.
    pub fn closed(&self) -> bool {
        self.0.borrow().closed
    }

    /// Closes the registry (no fault is injected after this), lets an injection in
    /// flight finish (its undo is then done at once), and does every pending undo.
    /// Returns what it did, for the log and the user.
    pub async fn undo_all(&self, swarm: Option<&Swarm>) -> Vec<String> {
        self.0.borrow_mut().closed = true;
        // An injection in flight is let finish (its undo, registered after the close, is
        // done at once); the faults task then stops. Polled, not awaited: the handle stays
        // here, so a second undo_all (a signal during the first) waits the same way.
        let since = Instant::now();
        while self.0.borrow().injecting && since.elapsed() < UNDO_TIMEOUT {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(task) = self.0.borrow().task.as_ref() {
            task.abort();
        }
        // One at a time, each forgotten once done: what is left stays listed for
        // `by_hand` should a second signal cut this short.
        let mut done = std::mem::take(&mut self.0.borrow_mut().late);
        loop {
            let first = self.0.borrow().entries.keys().next().copied();
            let Some(key) = first else {
                done.append(&mut self.0.borrow_mut().late);
                return done;
            };
            if let Some(u) = self.get(key) {
                done.push(
                    tokio::time::timeout(UNDO_TIMEOUT, u.apply(swarm))
                        .await
                        .unwrap_or_else(|_| format!("NOT given back in time: {}", u.by_hand())),
                );
            }
            self.0.borrow_mut().entries.remove(&key);
        }
    }

    /// What is left to give back, as commands for an operator.
    pub fn by_hand(&self) -> Vec<String> {
        self.0
            .borrow()
            .entries
            .values()
            .map(|(u, _, _)| u.by_hand())
            .collect()
    }
}

impl Undo {
    /// The command that gives it back by hand.
    pub fn by_hand(&self) -> String {
        match self {
            Undo::Availability { id, previous, .. } => {
                format!("docker node update --availability {previous} {id}")
            }
            Undo::Unpause(ids) => format!("docker unpause {}", ids.join(" ")),
            Undo::ResumePrometheus(pf) => format!("kill -CONT $(cat {pf})"),
        }
    }

    /// Gives back what the fault took, retrying a failed node update (another writer
    /// bumped its version, or the managers are electing a leader). Returns what it did.
    async fn apply(&self, swarm: Option<&Swarm>) -> String {
        match self {
            Undo::Availability { node, id, previous } => {
                let Some(sw) = swarm else {
                    return format!("node {node}: no Docker connection; {}", self.by_hand());
                };
                let mut last = String::new();
                for attempt in 0..5u32 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                    }
                    match super::faults::give_back(sw, id, *previous).await {
                        Ok(done) => return format!("node {node}: {done}"),
                        Err(e) => last = e,
                    }
                }
                tracing::error!(%node, error = %last, "could not give the node its availability back: {}", self.by_hand());
                format!("node {node} NOT given back ({last}): {}", self.by_hand())
            }
            Undo::Unpause(ids) => {
                let Some(sw) = swarm else {
                    return format!("no Docker connection: {}", self.by_hand());
                };
                let mut failed = Vec::new();
                for id in ids {
                    if let Err(e) = sw.docker.unpause_container(id).await {
                        // A container gone (the task was replaced) has nothing to unpause.
                        if !e.to_string().contains("No such container") {
                            failed.push(format!("{id}: {e}"));
                        }
                    }
                }
                if failed.is_empty() {
                    format!("unpaused {}", ids.len())
                } else {
                    format!("NOT unpaused: {}", failed.join("; "))
                }
            }
            Undo::ResumePrometheus(pf) => match super::faults::signal_pidfile(pf, "-CONT") {
                Ok(()) => "Prometheus resumed".into(),
                Err(e) => format!("Prometheus NOT resumed ({e}): {}", self.by_hand()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state letter of a process (`T`: stopped).
    fn state(pid: u32) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.chars().next().unwrap()
    }

    fn stop(pid: u32) {
        let ok = std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        while state(pid) != 'T' {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A real stopped process stands for Prometheus: an undo due in an hour is done by
    /// `undo_all`; after it, an undo registered late (an injection in flight when the
    /// drill stopped) is done at once.
    #[test]
    fn undo_all_gives_back_what_is_pending_and_a_late_undo_at_once() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id();
        let dir = std::env::temp_dir().join(format!("andon-undo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pf = dir.join("pid");
        std::fs::write(&pf, pid.to_string()).unwrap();
        let pf = pf.to_string_lossy().to_string();
        let rt = crate::run::single_thread_runtime().unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let pending = Pending::default();
            stop(pid);
            let hour = Instant::now() + Duration::from_secs(3600);
            pending
                .add(Undo::ResumePrometheus(pf.clone()), hour, None)
                .await;
            assert_eq!(state(pid), 'T', "not due yet");
            assert_eq!(pending.by_hand().len(), 1);
            let done = pending.undo_all(None).await;
            assert_eq!(done, vec!["Prometheus resumed".to_string()]);
            assert_ne!(state(pid), 'T');
            assert!(pending.by_hand().is_empty());
            stop(pid);
            pending
                .add(Undo::ResumePrometheus(pf.clone()), hour, None)
                .await;
            assert_ne!(state(pid), 'T', "closed: done at once");
        });
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
