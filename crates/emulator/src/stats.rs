//! Request counters, so tests can assert what a client did (how many lists, watches, retries,
//! which status codes).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Every HTTP request that got an answer.
    pub requests: u64,
    /// LIST requests on events (either API view).
    pub lists: u64,
    /// WATCH requests on events (either API view).
    pub watches: u64,
    /// Single-object GETs.
    pub gets: u64,
    /// Answers by HTTP status code.
    pub by_status: BTreeMap<u16, u64>,
    /// Watch streams open right now.
    pub open_watches: usize,
    /// TCP connections accepted since start.
    pub connections: u64,
    /// Requests rejected with 401.
    pub unauthorized: u64,
}

impl Stats {
    /// How many answers had `code`.
    pub fn status(&self, code: u16) -> u64 {
        self.by_status.get(&code).copied().unwrap_or(0)
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    lists: AtomicU64,
    watches: AtomicU64,
    gets: AtomicU64,
    connections: AtomicU64,
    by_status: Mutex<BTreeMap<u16, u64>>,
}

/// What kind of request was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestKind {
    List,
    Watch,
    Get,
    Other,
}

impl Counters {
    pub fn record(&self, kind: RequestKind, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match kind {
            RequestKind::List => self.lists.fetch_add(1, Ordering::Relaxed),
            RequestKind::Watch => self.watches.fetch_add(1, Ordering::Relaxed),
            RequestKind::Get => self.gets.fetch_add(1, Ordering::Relaxed),
            RequestKind::Other => 0,
        };
        let mut m = self.by_status.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(status).or_default() += 1;
    }

    pub fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self, open_watches: usize) -> Stats {
        let by_status = self
            .by_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            lists: self.lists.load(Ordering::Relaxed),
            watches: self.watches.load(Ordering::Relaxed),
            gets: self.gets.load(Ordering::Relaxed),
            unauthorized: by_status.get(&401).copied().unwrap_or(0),
            by_status,
            open_watches,
            connections: self.connections.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind_and_status() {
        let c = Counters::default();
        c.record(RequestKind::List, 200);
        c.record(RequestKind::Watch, 200);
        c.record(RequestKind::Other, 401);
        let s = c.snapshot(3);
        assert_eq!((s.requests, s.lists, s.watches, s.gets), (3, 1, 1, 0));
        assert_eq!(s.status(200), 2);
        assert_eq!(s.unauthorized, 1);
        assert_eq!(s.open_watches, 3);
    }
}
