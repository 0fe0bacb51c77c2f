//! The stores the answers read: the SQLite activity database and the `postgresql` output's
//! table. Each backend runs the same few reads; everything else (decoding, stories, causes)
//! is built above them from the records' own text, so both answer alike.

#[cfg(test)]
pub(crate) mod memory;
pub(crate) mod postgres;
pub(crate) mod shards;
pub(crate) mod sqlite;

use crate::QueryError;
use crate::spec::{Cursor, Order, Position};

/// One stored record.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub seq: i64,
    pub id: String,
    /// The stored time, nanoseconds since the Unix epoch (0 when the store has none).
    pub time: i64,
    pub record: String,
}

/// A time window in nanoseconds since the Unix epoch (`until` excluded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Window {
    pub since: Option<i64>,
    pub until: Option<i64>,
}

/// An object as the store keys it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ObjectKey {
    pub resource: String,
    pub name: String,
    /// `None`: any namespace; `Some(None)`: cluster-scoped; `Some(Some(ns))`: in `ns`.
    pub namespace: Option<Option<String>>,
}

/// A timeline query with its times resolved.
#[derive(Debug, Clone, Default)]
pub(crate) struct TimelineSql {
    pub window: Window,
    pub namespace: Option<String>,
    pub resource: Option<String>,
    pub name: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub verbs: Vec<String>,
    pub subresource: Option<String>,
    pub reasons: Vec<String>,
    pub kind: Option<&'static str>,
    pub warnings: bool,
    pub failed: bool,
    pub writes: bool,
    pub order: Order,
    pub cursor: Option<Cursor>,
    pub after: Option<Position>,
    /// Records at or before this position only (a store in several files: how far every
    /// file has committed; see `shards.rs`).
    pub upto: Option<i64>,
    pub limit: u32,
}

/// The verbs that change something.
pub(crate) const WRITE_VERBS: &[&str] =
    &["create", "update", "patch", "delete", "deletecollection"];

/// What a backend reads.
#[async_trait::async_trait]
pub(crate) trait Backend: Send + Sync {
    /// A timeline page, and the store's newest position when it was read.
    async fn timeline(&self, q: &TimelineSql) -> Result<(Vec<Row>, i64), QueryError>;
    /// The records about an object (its subresources included) or naming it in their
    /// message, newest first, at most `limit`.
    async fn object_rows(
        &self,
        key: &ObjectKey,
        w: Window,
        limit: usize,
    ) -> Result<Vec<Row>, QueryError>;
    /// The records whose object has this uid, newest first.
    async fn uid_rows(&self, uid: &str, w: Window, limit: usize) -> Result<Vec<Row>, QueryError>;
    /// The objects whose records name this uid as their owner.
    async fn owned_keys(
        &self,
        owner_uid: &str,
        w: Window,
        limit: usize,
    ) -> Result<Vec<ObjectKey>, QueryError>;
    /// The namespaces (none: cluster-scoped) holding an object of this resource and name.
    async fn namespaces(
        &self,
        resource: &str,
        name: &str,
        w: Window,
    ) -> Result<Vec<Option<String>>, QueryError>;
    /// Whether any record of this kind lies in the window.
    async fn any_of_kind(&self, kind: &str, w: Window) -> Result<bool, QueryError>;
    /// The gap records of the window (at most `limit`).
    async fn gaps(&self, w: Window, limit: usize) -> Result<Vec<Row>, QueryError>;
    /// One record by id.
    async fn record(&self, id: &str) -> Result<Option<Row>, QueryError>;
    /// The plans of the queries a story runs (EXPLAIN QUERY PLAN / EXPLAIN).
    async fn explain(&self, key: &ObjectKey) -> Result<Vec<String>, QueryError>;
}
