//! The records an answer rests on, gathered object by object. The cause rules run over what
//! is loaded and say what else they need (an owner, a node, an owner's other children); the
//! story's driver fetches that and runs them again, until nothing new is needed. The rules
//! themselves never touch a database, so they are tested on records made up in memory.
//!
//! A related object's records are read only around the change they explain: the window
//! from [`BEFORE`] before it to [`AROUND`] after it, newest first, at most
//! [`RELATED_LIMIT`] records (a busy node's status is patched every few seconds: its whole
//! history is tens of thousands of records, and what it did after the change explains
//! nothing). An object read for several changes holds the records of all their windows; the
//! state before each window's first record is unknown (see [`History::build_from`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use kubetrail_activity::kinds;

use crate::backend::ObjectKey;
use crate::history::History;

/// How far before a change a related object's records are read (ns): a day.
pub(crate) const BEFORE: i64 = 24 * 3600 * 1_000_000_000;
/// How far after a change a related object's records are read (ns): the same change seen
/// by an Event (whole seconds) or reported a moment later.
pub(crate) const AROUND: i64 = 5_000_000_000;
/// Records read per related object and window at most (the newest are kept).
pub(crate) const RELATED_LIMIT: usize = 200;

/// Records loaded for a time range `[since, until)` (ns; `None`: open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub since: Option<i64>,
    pub until: Option<i64>,
}

impl Span {
    fn covers(&self, from: i64, to: i64) -> bool {
        self.since.is_none_or(|s| s <= from) && self.until.is_none_or(|u| u >= to)
    }
}

/// Something the rules need that is not loaded yet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Need {
    /// An object's records (all of them, up to the window's end).
    Object(ObjectKey),
    /// An object's records in `[from, to)` (ns).
    Around { key: ObjectKey, from: i64, to: i64 },
    /// The objects an owner (by uid) made.
    Owned(String),
    /// The object with this uid.
    Uid(String),
}

impl PartialOrd for ObjectKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ObjectKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.resource, &self.namespace, &self.name).cmp(&(
            &other.resource,
            &other.namespace,
            &other.name,
        ))
    }
}

/// What is loaded.
#[derive(Default)]
pub(crate) struct Evidence {
    pub histories: BTreeMap<ObjectKey, History>,
    /// Owner uid → the objects whose records name it as their owner.
    pub owned: BTreeMap<String, Vec<ObjectKey>>,
    /// Uid → the object that has it (`None`: no record has it).
    pub uids: BTreeMap<String, Option<ObjectKey>>,
    /// What was read of each history (none: a history given whole).
    pub loaded: BTreeMap<ObjectKey, Vec<Span>>,
    /// The windows already read (a window cut by the limit covers less than was asked).
    pub asked: BTreeSet<(ObjectKey, i64, i64)>,
    needs: RefCell<BTreeSet<Need>>,
}

impl Evidence {
    /// An object's whole history, or a note that it is needed.
    pub fn history(&self, key: &ObjectKey) -> Option<&History> {
        // Read whole once (what a read cut by its limit left out stays out).
        let h = self.histories.get(key).filter(|_| {
            !self.loaded.contains_key(key)
                || self.asked.contains(&(key.clone(), i64::MIN, i64::MAX))
        });
        if h.is_none() {
            self.needs.borrow_mut().insert(Need::Object(key.clone()));
        }
        h
    }

    /// An object's history with its records of `[from, to)` (ns) loaded, or a note that
    /// they are needed.
    pub fn history_in(&self, key: &ObjectKey, from: i64, to: i64) -> Option<&History> {
        let h = self.histories.get(key).filter(|_| {
            self.loaded.get(key).is_none_or(|spans| {
                spans.iter().any(|s| s.covers(from, to))
                    || self.asked.contains(&(key.clone(), from, to))
            })
        });
        if h.is_none() {
            self.needs.borrow_mut().insert(Need::Around {
                key: key.clone(),
                from,
                to,
            });
        }
        h
    }

    /// An object's history around a change at `t` (ns): from [`BEFORE`] before it to
    /// [`AROUND`] after it.
    pub fn history_near(&self, key: &ObjectKey, t: i64) -> Option<&History> {
        self.history_in(key, t.saturating_sub(BEFORE), t.saturating_add(AROUND))
    }

    /// Adds records read for `span` to an object's history (building it again).
    pub fn add(&mut self, key: &ObjectKey, span: Span, recs: Vec<crate::rec::Rec>) {
        let mut all = self
            .histories
            .remove(key)
            .map(|h| h.recs)
            .unwrap_or_default();
        all.extend(recs);
        let spans = self.loaded.entry(key.clone()).or_default();
        spans.push(span);
        spans.sort_by_key(|s| s.since.unwrap_or(i64::MIN));
        // Overlapping or adjoining spans become one.
        let mut merged: Vec<Span> = Vec::new();
        for s in spans.drain(..) {
            match merged.last_mut() {
                Some(m) if m.until.is_none_or(|u| s.since.is_none_or(|f| f <= u)) => {
                    m.until = match (m.until, s.until) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    };
                }
                _ => merged.push(s),
            }
        }
        let starts: Vec<i64> = merged.iter().filter_map(|s| s.since).collect();
        *spans = merged;
        self.histories
            .insert(key.clone(), History::build_from(key.clone(), all, &starts));
    }

    /// What an owner made, or a note that it is needed.
    pub fn children(&self, owner_uid: &str) -> Option<&[ObjectKey]> {
        let c = self.owned.get(owner_uid).map(Vec::as_slice);
        if c.is_none() {
            self.needs
                .borrow_mut()
                .insert(Need::Owned(owner_uid.to_string()));
        }
        c
    }

    /// The object with a uid (`Some(None)`: known to be absent) with its records around `t`
    /// (ns), or a note that it is needed.
    pub fn by_uid_near(&self, uid: &str, t: i64) -> Option<Option<&History>> {
        match self.uids.get(uid) {
            None => {
                self.needs.borrow_mut().insert(Need::Uid(uid.to_string()));
                None
            }
            Some(None) => Some(None),
            Some(Some(k)) => self.history_near(k, t).map(Some),
        }
    }

    /// The needs noted since the last call.
    pub fn take_needs(&self) -> Vec<Need> {
        std::mem::take(&mut *self.needs.borrow_mut())
            .into_iter()
            .collect()
    }
}

/// The key of an owner named by an owner reference, seen from an object in `namespace`.
pub(crate) fn owner_key(
    owner: &kubetrail_activity::Owner,
    child_namespace: &Option<Option<String>>,
) -> ObjectKey {
    let resource = kinds::resource_of_kind(&owner.group, &owner.kind);
    let namespaced = kinds::by_kind(&owner.group, &owner.kind).is_none_or(|k| k.namespaced);
    ObjectKey {
        resource,
        name: owner.name.clone(),
        namespace: Some(if namespaced {
            child_namespace.clone().flatten()
        } else {
            None
        }),
    }
}

/// The key of a node.
pub(crate) fn node_key(name: &str) -> ObjectKey {
    ObjectKey {
        resource: "nodes".into(),
        name: name.to_string(),
        namespace: Some(None),
    }
}
