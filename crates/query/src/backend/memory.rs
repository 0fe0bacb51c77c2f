//! A backend over records held in memory, for tests of what the answers read: it answers
//! the reads the way the stores do (the same keys, windows, order and limits) and keeps the
//! windows of the object reads it was asked for.

use std::sync::Mutex;

use kubetrail_activity::Activity;

use super::{Backend, ObjectKey, Row, TimelineSql, Window};
use crate::QueryError;

pub(crate) struct Memory {
    rows: Vec<(Row, Activity)>,
    /// Every object read: the object and its window.
    pub reads: Mutex<Vec<(ObjectKey, Window)>>,
}

impl Memory {
    /// Records (JSON text), stored in this order, with ids `r0`, `r1`…; their time is the
    /// record's own.
    pub fn new(records: impl IntoIterator<Item = String>) -> Memory {
        let rows = records
            .into_iter()
            .enumerate()
            .map(|(i, record)| {
                let a = Activity::from_record(record.as_bytes());
                let row = Row {
                    seq: i as i64 + 1,
                    id: format!("r{i}"),
                    time: a.time.unwrap_or(0),
                    record,
                };
                (row, a)
            })
            .collect();
        Memory {
            rows,
            reads: Mutex::new(Vec::new()),
        }
    }

    fn newest(&self, w: Window, limit: usize, pred: impl Fn(&Activity) -> bool) -> Vec<Row> {
        let mut out: Vec<&Row> = self
            .rows
            .iter()
            .filter(|(r, a)| {
                w.since.is_none_or(|s| r.time >= s) && w.until.is_none_or(|u| r.time < u) && pred(a)
            })
            .map(|(r, _)| r)
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse((r.time, r.seq)));
        out.into_iter().take(limit).cloned().collect()
    }
}

fn ns_matches(key: &ObjectKey, a: &Activity) -> bool {
    match &key.namespace {
        None => true,
        Some(ns) => *ns == a.namespace,
    }
}

#[async_trait::async_trait]
impl Backend for Memory {
    async fn timeline(&self, _q: &TimelineSql) -> Result<(Vec<Row>, i64), QueryError> {
        Err(QueryError::BadQuery("no timeline in memory".into()))
    }

    async fn object_rows(
        &self,
        key: &ObjectKey,
        w: Window,
        limit: usize,
    ) -> Result<Vec<Row>, QueryError> {
        self.reads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((key.clone(), w));
        Ok(self.newest(w, limit, |a| {
            let own = a.resource.as_deref() == Some(key.resource.as_str())
                && a.name.as_deref() == Some(key.name.as_str());
            let named = a
                .mention
                .as_ref()
                .is_some_and(|(r, n)| *r == key.resource && *n == key.name);
            (own || named) && ns_matches(key, a)
        }))
    }

    async fn uid_rows(&self, uid: &str, w: Window, limit: usize) -> Result<Vec<Row>, QueryError> {
        Ok(self.newest(w, limit, |a| a.uid.as_deref() == Some(uid)))
    }

    async fn owned_keys(
        &self,
        owner_uid: &str,
        w: Window,
        limit: usize,
    ) -> Result<Vec<ObjectKey>, QueryError> {
        let mut out: Vec<ObjectKey> = Vec::new();
        for r in self.newest(w, usize::MAX, |a| {
            a.owner.as_ref().is_some_and(|o| o.uid == owner_uid)
        }) {
            let a = Activity::from_record(r.record.as_bytes());
            if let (Some(resource), Some(name)) = (a.resource, a.name) {
                let k = ObjectKey {
                    resource,
                    name,
                    namespace: Some(a.namespace),
                };
                if !out.contains(&k) {
                    out.push(k);
                }
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn namespaces(
        &self,
        resource: &str,
        name: &str,
        w: Window,
    ) -> Result<Vec<Option<String>>, QueryError> {
        let mut out: Vec<Option<String>> = Vec::new();
        for (r, a) in &self.rows {
            if a.resource.as_deref() == Some(resource)
                && a.name.as_deref() == Some(name)
                && w.since.is_none_or(|s| r.time >= s)
                && w.until.is_none_or(|u| r.time < u)
                && !out.contains(&a.namespace)
            {
                out.push(a.namespace.clone());
            }
        }
        Ok(out)
    }

    async fn any_of_kind(&self, kind: &str, w: Window) -> Result<bool, QueryError> {
        Ok(!self
            .newest(w, 1, |a| a.kind.as_deref() == Some(kind))
            .is_empty())
    }

    async fn gaps(&self, w: Window, limit: usize) -> Result<Vec<Row>, QueryError> {
        Ok(self.newest(w, limit, |a| a.kind.as_deref() == Some("gap")))
    }

    async fn record(&self, id: &str) -> Result<Option<Row>, QueryError> {
        Ok(self
            .rows
            .iter()
            .find(|(r, _)| r.id == id)
            .map(|(r, _)| r.clone()))
    }

    async fn explain(&self, _key: &ObjectKey) -> Result<Vec<String>, QueryError> {
        Ok(Vec::new())
    }
}
