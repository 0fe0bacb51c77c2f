//! Readiness: every source says whether it is connected and when it last made progress; a
//! source that has made no progress for longer than its own stall limit is not ready, nor is
//! an output whose queue is at its size limit.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Gauge;

/// One component's readiness, updated by the component.
#[derive(Debug)]
pub struct Readiness {
    name: String,
    ready: AtomicBool,
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

    fn problem(&self, now: Instant) -> Option<String> {
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
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health {
            start: Instant::now(),
            components: Mutex::new(Vec::new()),
            queues: Mutex::new(Vec::new()),
        })
    }

    /// Registers a component that must be connected and progressing within `stall_after`.
    pub fn register(&self, name: &str, stall_after: Duration) -> Arc<Readiness> {
        let r = Arc::new(Readiness {
            name: name.to_string(),
            ready: AtomicBool::new(false),
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
    }
}
