//! An etcd-like multi-version store for events: one global revision counter, per-key version
//! chains (for LIST snapshot reads at an older revision), a change log (for WATCH replay),
//! compaction (after which older revisions answer 410), TTL expiry, and a small cache of
//! materialized list snapshots so paging through 100k events stays O(page).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::model::{EventObj, NewEvent, Str};

/// What a change did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One entry of the change log. `obj.rv` equals the change's revision (for deletions too).
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub kind: ChangeKind,
    pub obj: Arc<EventObj>,
}

impl Change {
    pub fn rv(&self) -> u64 {
        self.obj.rv
    }
}

/// Why a read at a revision failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReadError {
    /// The revision was compacted away.
    #[error("revision {asked} is older than the compacted revision {compacted}")]
    Compacted { asked: u64, compacted: u64 },
    /// The revision has not happened yet.
    #[error("revision {asked} is newer than the current revision {current}")]
    Future { asked: u64, current: u64 },
}

/// The objects of one key prefix at one revision, ordered by key.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub rv: u64,
    pub prefix: String,
    pub items: Vec<Arc<EventObj>>,
}

impl Snapshot {
    /// Index of the first item whose key is `>= start_key`.
    pub fn position(&self, start_key: &str) -> usize {
        self.items.partition_point(|o| &*o.body.key < start_key)
    }
}

#[derive(Debug, Clone)]
struct Version {
    rv: u64,
    /// `None`: a deletion (tombstone).
    obj: Option<Arc<EventObj>>,
}

struct State {
    rv: u64,
    /// Revisions below this are gone (0: nothing compacted yet).
    compacted: u64,
    keys: BTreeMap<Str, Vec<Version>>,
    log: VecDeque<Change>,
    live: usize,
    /// (deadline, revision that set it, key); stale entries are skipped when popped.
    expiry: BinaryHeap<Reverse<(Instant, u64, Str)>>,
    snapshots: VecDeque<Arc<Snapshot>>,
}

/// The store. All methods are synchronous and short; watchers wait on [`Store::subscribe`].
pub(crate) struct Store {
    state: Mutex<State>,
    notify: watch::Sender<u64>,
    history_limit: usize,
    ttl: Option<Duration>,
}

const SNAPSHOT_CACHE: usize = 8;
/// The first revision handed out (a fresh etcd is at revision 1).
const FIRST_RV: u64 = 1;

impl Store {
    pub fn new(history_limit: usize, ttl: Option<Duration>) -> Store {
        let (notify, _) = watch::channel(FIRST_RV);
        Store {
            state: Mutex::new(State {
                rv: FIRST_RV,
                compacted: 0,
                keys: BTreeMap::new(),
                log: VecDeque::new(),
                live: 0,
                expiry: BinaryHeap::new(),
                snapshots: VecDeque::new(),
            }),
            notify,
            history_limit: history_limit.max(16),
            ttl,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every mutation is completed
        // before anything can panic), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Receives the current revision after every write (and on compaction).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    #[cfg(test)]
    pub fn compacted_rv(&self) -> u64 {
        self.lock().compacted
    }

    pub fn live_count(&self) -> usize {
        self.lock().live
    }

    /// The latest version of a key, if it exists.
    pub fn get(&self, key: &str) -> Option<Arc<EventObj>> {
        let st = self.lock();
        st.keys
            .get(key)
            .and_then(|v| v.last())
            .and_then(|v| v.obj.clone())
    }

    fn publish(&self, rv: u64) {
        self.notify.send_replace(rv);
    }

    /// Takes the next revision for a write to another resource (etcd revisions are global).
    pub fn bump_revision(&self) -> u64 {
        let mut st = self.lock();
        st.rv += 1;
        st.rv
    }

    /// Stores a new event; `None` if the key already exists.
    pub fn create(&self, new: NewEvent) -> Option<Arc<EventObj>> {
        self.create_at_least(new, 0)
    }

    /// Like [`Store::create`], but the revision jumps to `min_rv` if that is newer (as if
    /// other resources had been written in between; etcd revisions are global).
    pub fn create_at_least(&self, new: NewEvent, min_rv: u64) -> Option<Arc<EventObj>> {
        let obj = {
            let mut st = self.lock();
            let key = new.body.key.clone();
            if st.is_live(&key) {
                return None;
            }
            st.rv = st.rv.max(min_rv.saturating_sub(1));
            let obj = st.insert(new, self.ttl);
            self.maybe_auto_compact(&mut st);
            obj
        };
        self.publish(obj.rv);
        Some(obj)
    }

    /// Stores many new events in one critical section (existing keys are skipped).
    pub fn create_many(&self, items: Vec<NewEvent>) -> usize {
        let (n, rv) = {
            let mut st = self.lock();
            let mut n = 0;
            for new in items {
                if st.is_live(&new.body.key) {
                    continue;
                }
                st.insert(new, self.ttl);
                n += 1;
                self.maybe_auto_compact(&mut st);
            }
            (n, st.rv)
        };
        self.publish(rv);
        n
    }

    /// Writes a new version of an existing event computed from the current one.
    pub fn update(
        &self,
        key: &str,
        f: impl FnOnce(&EventObj) -> EventObj,
    ) -> Option<Arc<EventObj>> {
        let obj = {
            let mut st = self.lock();
            let cur = st.keys.get(key)?.last()?.obj.clone()?;
            st.rv += 1;
            let rv = st.rv;
            let mut next = f(&cur);
            next.rv = rv;
            let next = Arc::new(next);
            let key_str = cur.body.key.clone();
            st.push_version(&key_str, rv, Some(next.clone()));
            st.log.push_back(Change {
                kind: ChangeKind::Modified,
                obj: next.clone(),
            });
            if let Some(deadline) = self.ttl.and_then(|t| Instant::now().checked_add(t)) {
                st.expiry.push(Reverse((deadline, rv, key_str)));
            }
            self.maybe_auto_compact(&mut st);
            next
        };
        self.publish(obj.rv);
        Some(obj)
    }

    /// Replaces an existing event with a new version given whole (a recorded MODIFIED), at a
    /// revision no older than `min_rv`; `None` if it does not exist.
    pub fn replace_at_least(&self, new: NewEvent, min_rv: u64) -> Option<Arc<EventObj>> {
        let obj = {
            let mut st = self.lock();
            let key = new.body.key.clone();
            if !st.is_live(&key) {
                return None;
            }
            st.rv = st.rv.max(min_rv.saturating_sub(1)) + 1;
            let rv = st.rv;
            let next = Arc::new(new.at(rv));
            st.push_version(&key, rv, Some(next.clone()));
            st.log.push_back(Change {
                kind: ChangeKind::Modified,
                obj: next.clone(),
            });
            if let Some(deadline) = self.ttl.and_then(|t| Instant::now().checked_add(t)) {
                st.expiry.push(Reverse((deadline, rv, key)));
            }
            self.maybe_auto_compact(&mut st);
            next
        };
        self.publish(obj.rv);
        Some(obj)
    }

    /// Deletes an event; returns the deleted object stamped with the deletion revision.
    pub fn delete(&self, key: &str) -> Option<Arc<EventObj>> {
        let obj = {
            let mut st = self.lock();
            let obj = st.remove(key)?;
            self.maybe_auto_compact(&mut st);
            obj
        };
        self.publish(obj.rv);
        Some(obj)
    }

    /// `etcdctl compact <current revision>`.
    pub fn compact_current(&self) {
        let rv = {
            let mut st = self.lock();
            let at = st.rv;
            st.compact(at);
            st.rv
        };
        // Watchers re-check their position against the new compacted revision.
        self.publish(rv);
    }

    fn maybe_auto_compact(&self, st: &mut State) {
        if st.log.len() > self.history_limit {
            let keep = (self.history_limit * 3 / 4).max(1);
            let idx = st.log.len() - keep;
            let at = st.log[idx].rv();
            tracing::debug!(at, kept = keep, "history limit reached, compacting");
            st.compact(at);
        }
    }

    /// Up to `max` changes with revision > `after`, oldest first.
    pub fn changes_after(&self, after: u64, max: usize) -> Result<Vec<Change>, ReadError> {
        let st = self.lock();
        // etcd refuses a watch whose start revision (after+1) is below the compacted one.
        if st.compacted > 0 && after.saturating_add(1) < st.compacted {
            return Err(ReadError::Compacted {
                asked: after,
                compacted: st.compacted,
            });
        }
        let start = st.log.partition_point(|c| c.rv() <= after);
        Ok(st.log.range(start..).take(max).cloned().collect())
    }

    /// The objects under `prefix` at revision `at` (`None`: the current revision).
    pub fn snapshot(&self, prefix: &str, at: Option<u64>) -> Result<Arc<Snapshot>, ReadError> {
        let mut st = self.lock();
        let rv = at.unwrap_or(st.rv);
        if rv > st.rv {
            return Err(ReadError::Future {
                asked: rv,
                current: st.rv,
            });
        }
        if rv < st.compacted {
            return Err(ReadError::Compacted {
                asked: rv,
                compacted: st.compacted,
            });
        }
        if let Some(s) = st
            .snapshots
            .iter()
            .find(|s| s.rv == rv && s.prefix == prefix)
        {
            return Ok(s.clone());
        }
        let current = rv == st.rv;
        let items: Vec<Arc<EventObj>> = st
            .keys
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(_, versions)| {
                if current {
                    versions.last().and_then(|v| v.obj.clone())
                } else {
                    let i = versions.partition_point(|v| v.rv <= rv);
                    if i == 0 {
                        None
                    } else {
                        versions[i - 1].obj.clone()
                    }
                }
            })
            .collect();
        let snap = Arc::new(Snapshot {
            rv,
            prefix: prefix.to_string(),
            items,
        });
        if st.snapshots.len() >= SNAPSHOT_CACHE {
            st.snapshots.pop_front();
        }
        st.snapshots.push_back(snap.clone());
        Ok(snap)
    }

    /// Deletes every event whose TTL ran out by `now`; returns how many.
    pub fn expire_due(&self, now: Instant) -> usize {
        let (n, rv) = {
            let mut st = self.lock();
            let mut n = 0;
            while let Some(Reverse((deadline, _, _))) = st.expiry.peek() {
                if *deadline > now {
                    break;
                }
                let Some(Reverse((_, set_by, key))) = st.expiry.pop() else {
                    break;
                };
                let current = st.keys.get(&key).and_then(|v| v.last()).map(|v| v.rv);
                let live = st.is_live(&key);
                if live && current == Some(set_by) && st.remove(&key).is_some() {
                    n += 1;
                }
            }
            (n, st.rv)
        };
        if n > 0 {
            self.publish(rv);
        }
        n
    }

    /// When the next TTL may run out.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.lock().expiry.peek().map(|Reverse((d, _, _))| *d)
    }
}

impl State {
    fn is_live(&self, key: &str) -> bool {
        self.keys
            .get(key)
            .and_then(|v| v.last())
            .is_some_and(|v| v.obj.is_some())
    }

    fn push_version(&mut self, key: &Str, rv: u64, obj: Option<Arc<EventObj>>) {
        self.keys
            .entry(key.clone())
            .or_default()
            .push(Version { rv, obj });
    }

    fn insert(&mut self, new: NewEvent, ttl: Option<Duration>) -> Arc<EventObj> {
        self.rv += 1;
        let rv = self.rv;
        let obj = Arc::new(new.at(rv));
        let key = obj.body.key.clone();
        self.push_version(&key, rv, Some(obj.clone()));
        self.log.push_back(Change {
            kind: ChangeKind::Added,
            obj: obj.clone(),
        });
        self.live += 1;
        // A TTL too large to represent never expires.
        if let Some(deadline) = ttl.and_then(|t| Instant::now().checked_add(t)) {
            self.expiry.push(Reverse((deadline, rv, key)));
        }
        obj
    }

    fn remove(&mut self, key: &str) -> Option<Arc<EventObj>> {
        let cur = self.keys.get(key)?.last()?.obj.clone()?;
        self.rv += 1;
        let rv = self.rv;
        let gone = Arc::new(cur.with_rv(rv));
        let key = cur.body.key.clone();
        self.push_version(&key, rv, None);
        self.log.push_back(Change {
            kind: ChangeKind::Deleted,
            obj: gone.clone(),
        });
        self.live = self.live.saturating_sub(1);
        Some(gone)
    }

    /// Forgets history below `at`: reads at revisions `>= at` keep working.
    fn compact(&mut self, at: u64) {
        if at <= self.compacted {
            return;
        }
        self.compacted = at;
        while self.log.front().is_some_and(|c| c.rv() < at) {
            self.log.pop_front();
        }
        self.keys.retain(|_, versions| {
            let i = versions.partition_point(|v| v.rv <= at);
            if i > 1 {
                versions.drain(..i - 1);
            }
            if versions
                .first()
                .is_some_and(|v| v.obj.is_none() && v.rv <= at)
            {
                versions.remove(0);
            }
            !versions.is_empty()
        });
        self.snapshots.retain(|s| s.rv >= at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::new_uid;

    fn new(ns: &str, name: &str) -> NewEvent {
        NewEvent::from_spec(
            crate::EventSpec::simple(ns, "Pod", name, "Started", "m"),
            name.to_string(),
            new_uid(),
            time::OffsetDateTime::now_utc(),
        )
    }

    fn names(s: &Snapshot) -> Vec<String> {
        s.items.iter().map(|o| o.body.name.to_string()).collect()
    }

    #[test]
    fn snapshot_reads_see_the_past() {
        let st = Store::new(1000, None);
        st.create(new("a", "x")).unwrap();
        let rv1 = st.current_rv();
        st.create(new("a", "y")).unwrap();
        st.delete("a/x").unwrap();
        st.update("a/y", |o| o.bumped(time::OffsetDateTime::now_utc()));
        assert_eq!(names(&st.snapshot("a/", Some(rv1)).unwrap()), ["x"]);
        let now = st.snapshot("a/", None).unwrap();
        assert_eq!(names(&now), ["y"]);
        assert_eq!(now.items[0].count, 2);
        assert_eq!(st.live_count(), 1);
        assert!(st.create(new("a", "y")).is_none(), "duplicate key");
        assert!(
            st.create(new("a", "x")).is_some(),
            "a deleted key can be reused"
        );
    }

    #[test]
    fn prefixes_do_not_leak_into_each_other() {
        let st = Store::new(1000, None);
        st.create(new("a", "1")).unwrap();
        st.create(new("ab", "2")).unwrap();
        assert_eq!(names(&st.snapshot("a/", None).unwrap()), ["1"]);
        assert_eq!(st.snapshot("", None).unwrap().items.len(), 2);
    }

    #[test]
    fn compaction_expires_old_revisions_like_etcd() {
        let st = Store::new(1000, None);
        st.create(new("a", "x")).unwrap();
        let old = st.current_rv();
        st.create(new("a", "y")).unwrap();
        st.delete("a/x").unwrap();
        st.compact_current();
        let c = st.current_rv();
        assert!(matches!(
            st.snapshot("", Some(old)),
            Err(ReadError::Compacted { .. })
        ));
        assert_eq!(names(&st.snapshot("", Some(c)).unwrap()), ["y"]);
        // watch start revision = after+1 must be >= compacted
        assert!(st.changes_after(c - 2, 10).is_err());
        assert!(st.changes_after(c - 1, 10).is_ok());
        assert!(matches!(
            st.snapshot("", Some(c + 1)),
            Err(ReadError::Future { .. })
        ));
    }

    #[test]
    fn changes_after_replays_in_order_with_deletion_revisions() {
        let st = Store::new(1000, None);
        let start = st.current_rv();
        st.create(new("a", "x")).unwrap();
        st.update("a/x", |o| o.bumped(time::OffsetDateTime::now_utc()));
        let del = st.delete("a/x").unwrap();
        let ch = st.changes_after(start, 10).unwrap();
        let kinds: Vec<_> = ch.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [ChangeKind::Added, ChangeKind::Modified, ChangeKind::Deleted]
        );
        assert_eq!(ch[2].rv(), del.rv);
        assert_eq!(del.rv, st.current_rv());
        assert_eq!(st.changes_after(start, 2).unwrap().len(), 2);
        assert!(st.changes_after(st.current_rv(), 10).unwrap().is_empty());
    }

    #[test]
    fn history_limit_compacts_automatically() {
        let st = Store::new(16, None);
        for i in 0..100 {
            st.create(new("a", &format!("e{i:03}"))).unwrap();
        }
        assert!(st.compacted_rv() > 0);
        assert!(st.changes_after(FIRST_RV, 1000).is_err());
        assert_eq!(st.snapshot("", None).unwrap().items.len(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_expiry_deletes_and_updates_refresh_the_ttl() {
        let st = Store::new(1000, Some(Duration::from_secs(60)));
        st.create(new("a", "x")).unwrap();
        st.create(new("a", "y")).unwrap();
        tokio::time::advance(Duration::from_secs(30)).await;
        st.update("a/y", |o| o.bumped(time::OffsetDateTime::now_utc()));
        assert_eq!(st.expire_due(Instant::now()), 0);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(
            st.expire_due(Instant::now()),
            1,
            "x expired, y was refreshed"
        );
        assert_eq!(names(&st.snapshot("", None).unwrap()), ["y"]);
        let last = st.changes_after(FIRST_RV, 100).unwrap();
        assert_eq!(last.last().map(|c| c.kind), Some(ChangeKind::Deleted));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(st.expire_due(Instant::now()), 1);
        assert_eq!(st.live_count(), 0);
        assert!(st.next_expiry().is_none());
    }
}
