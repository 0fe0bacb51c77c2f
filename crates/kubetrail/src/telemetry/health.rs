//! Readiness: every source says whether it is connected and when it last made progress; a
//! source that has made no progress for longer than its own stall limit is not ready, nor is
//! an output whose queue is at its size limit, nor an agent whose state directory is full. A
//! component standing by for leader election is healthy without being connected; its role is
//! shown beside the answer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Gauge;

/// One component's readiness, updated by the component.
#[derive(Debug)]
pub struct Readiness {
    name: String,
    ready: AtomicBool,
    /// Standing by (another replica leads): not checked.
    standby: AtomicBool,
    /// Milliseconds since `Health::start` at the last progress.
    progress_ms: AtomicI64,
    stall_after: Duration,
    start: Instant,
}

impl Readiness {
    /// Connected (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Something moved: a page, a frame, a successful (re)connection, a request served.
    pub fn progress(&self) {
        let ms = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.progress_ms.store(ms, Ordering::Relaxed);
    }

    /// Standing by for leader election (or leading again): a standby replica's Events watch is
    /// left to the leader, so it is healthy without a connection.
    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::Relaxed);
    }

    fn problem(&self, now: Instant) -> Option<String> {
        if self.standby.load(Ordering::Relaxed) {
            return None;
        }
        if !self.ready.load(Ordering::Relaxed) {
            return Some(format!("{}: not connected", self.name));
        }
        let since = now.duration_since(self.start).as_millis() as i64
            - self.progress_ms.load(Ordering::Relaxed);
        let since = Duration::from_millis(since.max(0) as u64);
        (since > self.stall_after)
            .then(|| format!("{}: no progress for {}s", self.name, since.as_secs()))
    }
}

struct QueueLimit {
    name: String,
    bytes: Gauge,
    limit: u64,
}

/// The registry `/readyz` reads.
pub struct Health {
    start: Instant,
    components: Mutex<Vec<Arc<Readiness>>>,
    queues: Mutex<Vec<QueueLimit>>,
    roles: Mutex<BTreeMap<String, String>>,
    /// State directories whose file system is full (set by the journal).
    disks: Mutex<Vec<(String, Arc<AtomicBool>)>>,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health {
            start: Instant::now(),
            components: Mutex::new(Vec::new()),
            queues: Mutex::new(Vec::new()),
            roles: Mutex::new(BTreeMap::new()),
            disks: Mutex::new(Vec::new()),
        })
    }

    /// Registers a component that must be connected and progressing within `stall_after`.
    pub fn register(&self, name: &str, stall_after: Duration) -> Arc<Readiness> {
        let r = Arc::new(Readiness {
            name: name.to_string(),
            ready: AtomicBool::new(false),
            standby: AtomicBool::new(false),
            progress_ms: AtomicI64::new(0),
            stall_after,
            start: self.start,
        });
        self.components
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(r.clone());
        r
    }

    /// Registers an output queue: not ready while its bytes reach the limit.
    pub fn register_queue(&self, name: &str, bytes: Gauge, limit: u64) {
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(QueueLimit {
                name: name.to_string(),
                bytes,
                limit,
            });
    }

    /// Registers the state directory `dir`: not ready while the returned flag is set (its file
    /// system is full and new records are refused).
    pub fn disk_full(&self, dir: &std::path::Path) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.disks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((dir.display().to_string(), flag.clone()));
        flag
    }

    /// Sets the role a component shows in `/readyz` (`leader`, `standby (leader: …)`).
    pub fn set_role(&self, component: &str, role: impl Into<String>) {
        self.roles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(component.to_string(), role.into());
    }

    /// `component: role` lines, by component.
    pub fn roles(&self) -> Vec<String> {
        self.roles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(c, r)| format!("{c}: {r}"))
            .collect()
    }

    /// The reasons the agent is not ready; empty when it is.
    pub fn problems(&self) -> Vec<String> {
        let now = Instant::now();
        let mut out: Vec<String> = self
            .components
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|c| c.problem(now))
            .collect();
        for q in self.queues.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if u64::try_from(q.bytes.get()).unwrap_or(0) >= q.limit {
                out.push(format!("{}: queue full ({} bytes)", q.name, q.bytes.get()));
            }
        }
        for (dir, full) in self.disks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if full.load(Ordering::Relaxed) {
                out.push(format!(
                    "state directory {dir}: file system full; new records are refused until deliveries free space"
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_until_connected_and_stalls_fail() {
        let h = Health::new();
        let r = h.register("kubernetes_events.0", Duration::from_millis(50));
        assert_eq!(h.problems(), vec!["kubernetes_events.0: not connected"]);
        r.set_ready(true);
        r.progress();
        assert!(h.problems().is_empty());
        std::thread::sleep(Duration::from_millis(120));
        assert!(
            h.problems()[0].contains("no progress"),
            "{:?}",
            h.problems()
        );
        r.progress();
        assert!(h.problems().is_empty());
        let g = Gauge::default();
        h.register_queue("file.0", g.clone(), 100);
        g.set(100);
        assert_eq!(h.problems(), vec!["file.0: queue full (100 bytes)"]);
        g.set(0);
        let full = h.disk_full(std::path::Path::new("/var/lib/kubetrail"));
        assert!(h.problems().is_empty());
        full.store(true, Ordering::Relaxed);
        assert_eq!(
            h.problems(),
            vec![
                "state directory /var/lib/kubetrail: file system full; new records are refused until deliveries free space"
            ]
        );
    }

    #[test]
    fn a_standby_is_ready_and_shows_its_role() {
        let h = Health::new();
        let r = h.register("kubernetes_events.0/events-v1/*", Duration::from_millis(50));
        r.set_standby(true);
        assert!(h.problems().is_empty());
        h.set_role(
            "kubernetes_events.0",
            "standby (leader: kubetrail-events-1_5f3a9c)",
        );
        assert_eq!(
            h.roles(),
            vec!["kubernetes_events.0: standby (leader: kubetrail-events-1_5f3a9c)"]
        );
        r.set_standby(false);
        assert_eq!(
            h.problems(),
            vec!["kubernetes_events.0/events-v1/*: not connected"]
        );
    }
}
