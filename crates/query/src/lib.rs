//! kubetrail's answers, read from the records themselves: who did what to an object and
//! why (`kubetrail who`), what an actor did (`kubetrail activity`), and the cluster's
//! timeline (the activity page). One API over two stores: the `store` output's SQLite
//! database and the `postgresql` output's table.
//!
//! # The API
//!
//! Open a [`Store`] ([`Store::sqlite`] or [`Store::postgres`]), then ask:
//!
//! | call | input | answer |
//! |---|---|---|
//! | [`Store::timeline`] | [`TimelineQuery`]: filters (window, namespace, object, user, group, verb, subresource, reason, kind, Warning-only, failed-only, writes-only), order, keyset `cursor`, `limit` | [`TimelinePage`]: [`Entry`] rows, `next` cursor, the store's `position` |
//! | [`Store::timeline`] with `after` | the same filters and a [`Position`] | the records stored after it, oldest first (live updates: pass the page's `position` back) |
//! | [`Store::who`] | [`WhoQuery`]: object (`pod/web-0`), namespace, window | [`Story`]: steps, changes with their chains of [`Cause`]s, end state, children, missing evidence (`kubetrail who -o json` prints it) |
//! | [`Store::record`] | a record id (every [`Entry`], [`Change`] and [`Cause`] names its records) | the [`RawRecord`] as stored |
//! | [`Store::explain`] | a [`WhoQuery`] | the query plans a story's reads use |
//!
//! Every input serializes (`TimelineQuery::to_query_string`, `from_query_string`: a URL's
//! query string, one flat key per input; times are RFC 3339 or a duration before now such
//! as `2h`), and every answer serializes to JSON (serde). [`render`] writes answers as text.
//!
//! # How the answers are built
//!
//! A backend reads rows (the record text and its position); everything else is computed
//! here from the records' own content, identically for both stores: the story's steps, the
//! changes each record shows (`history`), and their causes (`causes`), following ownership
//! and controllers — each step names the record ids it rests on, and where the records do not
//! hold the evidence the answer says what is missing instead of guessing.
//!
//! Reads never block the writer: SQLite in WAL mode (readers see the last commit), PostgreSQL
//! by its MVCC. Every read runs under a time limit ([`Store::with_timeout`], default 10 s).
//!
//! For PostgreSQL, live updates follow the identity column `seq`; with several kubetrail
//! replicas writing into one table at once, a row committed out of `seq` order after a page
//! was read is not reported as an update (it shows on the next full read).

mod backend;
mod body;
mod causes;
#[cfg(test)]
mod causes_props;
mod error;
mod evidence;
mod history;
pub mod model;
mod rec;
pub mod render;
pub mod spec;
mod story;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kubetrail_core::Timestamp;

pub use error::QueryError;
pub use model::*;
pub use spec::{Cursor, List, ObjectSpec, Order, Position, RecordClass, TimeSpec};

use backend::{Backend, TimelineSql, Window};
use rec::Rec;

/// The default time limit of one read.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A store to ask. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// The `store` output's SQLite activity database at `path` (read-only), with reads
    /// limited to [`DEFAULT_TIMEOUT`].
    pub fn sqlite(path: impl AsRef<Path>) -> Result<Store, QueryError> {
        Store::sqlite_with_timeout(path, DEFAULT_TIMEOUT)
    }

    /// Like [`Store::sqlite`] with another time limit per read.
    pub fn sqlite_with_timeout(
        path: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<Store, QueryError> {
        Ok(Store {
            backend: backend::shards::open(path.as_ref(), timeout)?,
        })
    }

    /// The `postgresql` output's table (`table` or `schema.table`, as in the output's
    /// `table` option) through a connected client (whose connection task the caller runs).
    /// Reads run under `statement_timeout` = `timeout` in a read-only session.
    pub async fn postgres(
        client: tokio_postgres::Client,
        table: &str,
        timeout: Duration,
    ) -> Result<Store, QueryError> {
        let quoted = quote_table(table)?;
        Ok(Store {
            backend: Arc::new(backend::postgres::Postgres::new(client, quoted, timeout).await?),
        })
    }

    /// A page of the timeline, or (with `after`) the records stored since a position.
    pub async fn timeline(&self, q: &TimelineQuery) -> Result<TimelinePage, QueryError> {
        let now = Timestamp::now();
        let limit = q.page_size();
        let (resource, name) = match &q.object {
            Some(o) => (Some(o.ty.resource.clone()), o.name.clone()),
            None => (None, None),
        };
        let sql = TimelineSql {
            window: Window {
                since: q.since.map(|s| s.resolve(now).unix_nanos()),
                until: q.until.map(|s| s.resolve(now).unix_nanos()),
            },
            namespace: q.namespace.clone(),
            resource,
            name,
            user: q.user.clone(),
            group: q.group.clone(),
            verbs: q.verb.0.clone(),
            subresource: q.subresource.clone(),
            reasons: q.reason.0.clone(),
            kind: q.kind.map(RecordClass::record_kind),
            warnings: q.warnings,
            failed: q.failed,
            writes: q.writes,
            order: q.order,
            cursor: q.cursor,
            after: q.after,
            upto: None,
            limit,
        };
        let (rows, max) = self.backend.timeline(&sql).await?;
        let full = rows.len() >= limit as usize;
        let last = rows.last().map(|r| (r.time, r.seq));
        let mut recs: Vec<Rec> = rows.into_iter().map(Rec::from_row).collect();
        if q.after.is_none() {
            // Within the page, an Event with whole seconds after the requests of its second
            // (see `Rec::late`); the cursor stays the store's last row, so pages still meet.
            rec::place_whole_seconds(&mut recs, q.order);
        }
        // A request's earlier stage beside its later one on the same page says less: left out.
        let entries: Vec<Entry> = rec::collapse_stages(recs.iter().collect())
            .into_iter()
            .map(Rec::entry)
            .collect();
        let (next, position) = if q.after.is_some() {
            // More to come: the reader continues from the last one it got.
            (
                None,
                Position(if full {
                    last.map_or(max, |l| l.1)
                } else {
                    max.max(q.after.map_or(0, |a| a.0))
                }),
            )
        } else {
            (
                full.then(|| last.map(|(time, position)| Cursor { time, position }))
                    .flatten(),
                Position(max),
            )
        };
        Ok(TimelinePage {
            entries,
            next,
            position,
        })
    }

    /// One object's story, its changes and their causes.
    pub async fn who(&self, q: &WhoQuery) -> Result<Story, QueryError> {
        story::who(self.backend.as_ref(), q, Timestamp::now()).await
    }

    /// A record as stored, by its id.
    pub async fn record(&self, id: &str) -> Result<Option<RawRecord>, QueryError> {
        Ok(self.backend.record(id).await?.map(|r| RawRecord {
            id: r.id,
            position: Position(r.seq),
            record: serde_json::from_str(&r.record).unwrap_or(serde_json::Value::String(r.record)),
        }))
    }

    /// The plans of the reads a story of this object runs (SQLite's EXPLAIN QUERY PLAN,
    /// PostgreSQL's EXPLAIN ANALYZE): which indexes answer.
    pub async fn explain(&self, q: &WhoQuery) -> Result<Vec<String>, QueryError> {
        let now = Timestamp::now();
        let key = story::resolve(self.backend.as_ref(), q, story::window(q, now)).await?;
        self.backend.explain(&key).await
    }
}

/// `schema.table` or `table`, quoted for SQL.
fn quote_table(t: &str) -> Result<String, QueryError> {
    let parts: Vec<&str> = t.split('.').collect();
    if parts.is_empty() || parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(QueryError::BadQuery(format!(
            "'{t}' is not a table name (table or schema.table)"
        )));
    }
    Ok(parts
        .iter()
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timeline page lists a whole-second Event after the requests of its second (oldest
    /// first; before them newest first), as the story does, and an Event with microseconds
    /// keeps its place.
    #[tokio::test]
    async fn a_timeline_page_puts_a_whole_second_event_after_its_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("activity.db");
        let involved =
            r#"{"kind":"Pod","name":"p","namespace":"shop","uid":"uid-p","apiVersion":"v1"}"#;
        let recs = [
            (
                "a1",
                r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a1","stage":"ResponseComplete","verb":"create","user":{"username":"carol"},"objectRef":{"resource":"pods","namespace":"shop","name":"p","subresource":"eviction"},"responseStatus":{"code":201},"requestReceivedTimestamp":"2027-01-15T08:00:02.738Z","stageTimestamp":"2027-01-15T08:00:02.738Z"}"#.to_string(),
            ),
            (
                "e1",
                format!(
                    r#"{{"kind":"Event","apiVersion":"v1","metadata":{{"name":"p.1","namespace":"shop","uid":"e1"}},"involvedObject":{involved},"reason":"Killing","message":"Stopping container app","type":"Normal","source":{{"component":"kubelet"}},"lastTimestamp":"2027-01-15T08:00:02Z","eventTime":null}}"#
                ),
            ),
            (
                "e2",
                format!(
                    r#"{{"kind":"Event","apiVersion":"events.k8s.io/v1","metadata":{{"name":"p.2","namespace":"shop","uid":"e2"}},"regarding":{involved},"reason":"Pulled","note":"image present","type":"Normal","reportingController":"kubelet","eventTime":"2027-01-15T08:00:02.100000Z"}}"#
                ),
            ),
            (
                "a0",
                r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a0","stage":"ResponseComplete","verb":"get","user":{"username":"alice"},"objectRef":{"resource":"pods","namespace":"shop","name":"p"},"responseStatus":{"code":200},"requestReceivedTimestamp":"2027-01-15T08:00:01.5Z","stageTimestamp":"2027-01-15T08:00:01.5Z"}"#.to_string(),
            ),
        ];
        let mut w = kubetrail_activity::ShardedWriter::open(
            &path,
            1,
            &kubetrail_activity::WriterOptions::default(),
        )
        .unwrap();
        w.insert(recs.iter().map(|(i, r)| (*i, r.as_bytes())), 0)
            .unwrap();
        drop(w);
        let store = Store::sqlite(&path).unwrap();
        let ids = |page: TimelinePage| -> Vec<String> {
            page.entries.into_iter().map(|e| e.id).collect()
        };
        let oldest = TimelineQuery {
            order: Order::Oldest,
            ..TimelineQuery::default()
        };
        assert_eq!(
            ids(store.timeline(&oldest).await.unwrap()),
            ["a0", "e2", "a1", "e1"]
        );
        let newest = TimelineQuery::default();
        assert_eq!(newest.order, Order::Newest);
        assert_eq!(
            ids(store.timeline(&newest).await.unwrap()),
            ["e1", "a1", "e2", "a0"]
        );
    }

    #[test]
    fn queries_round_trip_through_a_query_string() {
        let q = TimelineQuery {
            since: Some("2h".parse().unwrap()),
            namespace: Some("shop".into()),
            object: Some("pod/web-0".parse().unwrap()),
            user: Some("system:serviceaccount:kube-system:node-controller".into()),
            verb: "delete,create".parse().unwrap(),
            warnings: true,
            failed: true,
            cursor: Some("1700000000000000000.42".parse().unwrap()),
            limit: Some(50),
            ..TimelineQuery::default()
        };
        let s = q.to_query_string();
        assert!(s.contains("verb=delete%2Ccreate"), "{s}");
        assert_eq!(TimelineQuery::from_query_string(&s).unwrap(), q);
        assert_eq!(
            TimelineQuery::from_query_string("").unwrap(),
            TimelineQuery::default()
        );
        assert!(TimelineQuery::from_query_string("nope=1").is_err());
        assert!(TimelineQuery::from_query_string("since=yesterday").is_err());
        let w = WhoQuery {
            object: Some("deploy/web".parse().unwrap()),
            namespace: Some("shop".into()),
            since: None,
            until: Some("2026-12-06T23:05:00Z".parse().unwrap()),
        };
        assert_eq!(
            WhoQuery::from_query_string(&w.to_query_string()).unwrap(),
            w
        );
        assert_eq!(quote_table("audit.t\"x").unwrap(), "\"audit\".\"t\"\"x\"");
        assert!(quote_table("a.b.c").is_err());
    }
}
