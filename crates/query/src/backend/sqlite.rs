//! The SQLite activity database as a backend. Reads run on blocking threads, each on a
//! read-only connection from a small pool (WAL: they never block the `store` output writing,
//! nor wait for it). Every statement is stopped at the time limit (a progress handler).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params_from_iter};

use kubetrail_activity::{BUCKET_SHIFT, BUCKETS_CTE};

use super::{Backend, ObjectKey, Row, TimelineSql, WRITE_VERBS, Window};
use crate::QueryError;
use crate::spec::Order;

/// The connections kept for reuse.
const POOL: usize = 4;

pub(crate) struct Sqlite {
    path: PathBuf,
    pool: Arc<Mutex<Vec<Connection>>>,
    timeout: Duration,
    /// Each connection's page cache, KiB, when not the reader's default (a store's files
    /// share it: see `shards.rs`).
    cache_kib: Option<u32>,
}

fn err(what: &'static str) -> impl FnOnce(rusqlite::Error) -> QueryError {
    move |source| QueryError::Sqlite { what, source }
}

impl Sqlite {
    /// Opens the store; one written by an earlier version is upgraded first (the `store`
    /// output would do it at its next start), which needs write access to it.
    pub fn open(path: &Path, timeout: Duration) -> Result<Sqlite, QueryError> {
        let conn = match kubetrail_activity::open_reader(path) {
            Err(kubetrail_activity::ActivityError::TooOld { found, .. }) => {
                tracing::info!(path = %path.display(), version = found, "upgrading the activity store's schema before reading it");
                kubetrail_activity::upgrade(path)?;
                kubetrail_activity::open_reader(path)?
            }
            r => r?,
        };
        Ok(Sqlite {
            path: path.to_path_buf(),
            pool: Arc::new(Mutex::new(vec![conn])),
            timeout,
            cache_kib: None,
        })
    }

    /// Gives each connection a page cache of `kib` KiB.
    pub fn with_cache_kib(mut self, kib: u32) -> Result<Sqlite, QueryError> {
        for c in self.pool.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            kubetrail_activity::schema::set_cache_kib(c, kib)?;
        }
        self.cache_kib = Some(kib);
        Ok(self)
    }

    /// The file's newest position (see [`newest`]).
    pub async fn newest(&self) -> Result<i64, QueryError> {
        self.run(newest).await
    }

    /// The objects an owner's uid made, with the time of each one's first record, that
    /// time first.
    pub async fn owned_keys_timed(
        &self,
        owner: &str,
        w: Window,
        limit: usize,
    ) -> Result<Vec<(ObjectKey, i64)>, QueryError> {
        let (sql, params) = owned_sql(owner, w, limit);
        self.run(move |c| {
            let mut stmt = c.prepare_cached(&sql).map_err(err("preparing a query"))?;
            let it = stmt
                .query_map(params_from_iter(params), |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(err("reading owned objects"))?;
            let mut out = Vec::new();
            for row in it {
                if let (Some(resource), Some(name), ns, t) =
                    row.map_err(err("reading owned objects"))?
                {
                    out.push((
                        ObjectKey {
                            resource,
                            name,
                            namespace: Some(ns),
                        },
                        t,
                    ));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Runs `f` on a pooled connection on a blocking thread, within the time limit.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, QueryError> + Send + 'static,
    ) -> Result<T, QueryError> {
        let pool = self.pool.clone();
        let path = self.path.clone();
        let timeout = self.timeout;
        let cache_kib = self.cache_kib;
        tokio::task::spawn_blocking(move || {
            let conn = pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match conn {
                Some(c) => c,
                None => {
                    let c = kubetrail_activity::open_reader(&path)?;
                    if let Some(kib) = cache_kib {
                        kubetrail_activity::schema::set_cache_kib(&c, kib)?;
                    }
                    c
                }
            };
            let deadline = Instant::now() + timeout;
            conn.progress_handler(10_000, Some(move || Instant::now() > deadline));
            let result = f(&conn);
            conn.progress_handler(10_000, None::<fn() -> bool>);
            let mut p = pool.lock().unwrap_or_else(|p| p.into_inner());
            if p.len() < POOL {
                p.push(conn);
            }
            match result {
                Err(QueryError::Sqlite { source, .. })
                    if source.sqlite_error_code()
                        == Some(rusqlite::ErrorCode::OperationInterrupted) =>
                {
                    Err(QueryError::Timeout(timeout))
                }
                r => r,
            }
        })
        .await
        .map_err(|e| QueryError::Task(e.to_string()))?
    }
}

const COLS: &str = "seq, id, time, record";

/// The newest position of the file: its newest record's, or the last position of the last
/// batch it committed (`through`, see `kubetrail_activity::shards`) if later.
fn newest(c: &Connection) -> Result<i64, QueryError> {
    c.query_row(
        "SELECT max(coalesce((SELECT max(seq) FROM records), 0), \
         coalesce((SELECT through FROM shard), 0))",
        [],
        |r| r.get(0),
    )
    .map_err(err("reading the newest position"))
}

fn rows(conn: &Connection, sql: &str, params: Vec<SqlValue>) -> Result<Vec<Row>, QueryError> {
    let mut stmt = conn.prepare_cached(sql).map_err(err("preparing a query"))?;
    let it = stmt
        .query_map(params_from_iter(params), |r| {
            Ok(Row {
                seq: r.get(0)?,
                id: r.get(1)?,
                time: r.get(2)?,
                record: r.get(3)?,
            })
        })
        .map_err(err("reading records"))?;
    it.collect::<Result<Vec<_>, _>>()
        .map_err(err("reading records"))
}

/// Conditions and their parameters, built together.
#[derive(Default)]
struct Where {
    conds: Vec<String>,
    params: Vec<SqlValue>,
}

impl Where {
    fn push(&mut self, cond: &str, params: impl IntoIterator<Item = SqlValue>) {
        self.conds.push(cond.to_string());
        self.params.extend(params);
    }
    fn window(&mut self, w: Window) {
        if let Some(s) = w.since {
            self.push("time >= ?", [SqlValue::Integer(s)]);
        }
        if let Some(u) = w.until {
            self.push("time < ?", [SqlValue::Integer(u)]);
        }
    }
    fn namespace(&mut self, ns: &Option<Option<String>>) {
        match ns {
            None => {}
            Some(None) => self.push("namespace IS NULL", []),
            Some(Some(n)) => self.push("namespace = ?", [SqlValue::Text(n.clone())]),
        }
    }
    fn sql(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conds.join(" AND "))
        }
    }
}

fn text(s: &str) -> SqlValue {
    SqlValue::Text(s.to_string())
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The buckets' window parameters (`?1`, `?2` of [`BUCKETS_CTE`]): they come first.
fn bucket_params(w: Window) -> Vec<SqlValue> {
    vec![
        SqlValue::Integer(w.since.unwrap_or(i64::MIN)),
        SqlValue::Integer(w.until.unwrap_or(i64::MAX)),
    ]
}

/// `FROM` and the bucket condition of a read through a bucketed index (the records `r`; see
/// `kubetrail_activity::schema`): every bucket of the window probed in turn. The statement
/// starts with [`BUCKETS_CTE`].
fn through(index: &str) -> String {
    format!("b CROSS JOIN records r INDEXED BY {index} WHERE (r.seq >> {BUCKET_SHIFT}) = b.x")
}

/// The `seq` of the records `resource`/`name` names, as the object (`records_object`) or
/// named in an Event's message (`records_mention`); the caller adds the window and limits.
fn object_seqs(
    key_resource: &str,
    key_name: &str,
    ns: &Option<Option<String>>,
    win: Window,
) -> (String, Vec<SqlValue>) {
    let mut a = Where::default();
    a.push("r.resource = ?", [text(key_resource)]);
    a.push("r.name = ?", [text(key_name)]);
    a.namespace(ns);
    a.window(win);
    let mut m = Where::default();
    m.push("r.mention_resource = ?", [text(key_resource)]);
    m.push("r.mention_name = ?", [text(key_name)]);
    m.namespace(ns);
    m.window(win);
    let sql = format!(
        "SELECT r.seq, r.time FROM {} AND {} UNION SELECT r.seq, r.time FROM {} AND {}",
        through("records_object"),
        a.conds.join(" AND "),
        through("records_mention"),
        m.conds.join(" AND "),
    );
    let mut params = a.params;
    params.extend(m.params);
    (sql, params)
}

/// Which records a timeline read takes by their actor.
#[derive(Clone, Copy)]
enum Actor<'a> {
    /// The user asked for, as the user or impersonated (or no user asked for).
    Any,
    /// Records whose user is this one.
    User(&'a str),
    /// Records impersonating this user by another one.
    Impersonated(&'a str),
}

/// The timeline's conditions for one read.
fn timeline_where(q: &TimelineSql, actor: Actor<'_>) -> Where {
    let live = q.after.is_some();
    let mut w = Where::default();
    w.window(q.window);
    w.push("(stage IS NULL OR stage <> 'RequestReceived')", []);
    if let Some(ns) = &q.namespace {
        w.push("namespace = ?", [text(ns)]);
    }
    match (&q.resource, &q.name) {
        (Some(r), Some(n)) => {
            // Through the bucketed indexes (the statement starts with the buckets).
            let (sql, params) = object_seqs(r, n, &None, Window::default());
            w.push(&format!("seq IN (SELECT seq FROM ({sql}))"), params);
        }
        (Some(r), None) => w.push("resource = ?", [text(r)]),
        _ => {}
    }
    match (actor, &q.user) {
        (Actor::User(u), _) => w.push("username = ?", [text(u)]),
        (Actor::Impersonated(u), _) => {
            w.push("impersonated = ? AND username IS NOT ?", [text(u), text(u)])
        }
        (Actor::Any, Some(u)) => {
            w.push("(username = ? OR impersonated = ?)", [text(u), text(u)]);
        }
        (Actor::Any, None) => {}
    }
    if let Some(g) = &q.group {
        if live {
            // One look at each new record's list.
            w.push(
                "EXISTS (SELECT 1 FROM json_each(records.groups) WHERE json_each.value = ?)",
                [text(g)],
            );
        } else {
            // The lists naming the group (a store has few lists), then their records
            // through `records_groups`.
            w.push(
                "groups IN (SELECT groups FROM group_sets WHERE EXISTS \
                 (SELECT 1 FROM json_each(group_sets.groups) WHERE json_each.value = ?))",
                [text(g)],
            );
        }
    }
    if !q.verbs.is_empty() {
        w.push(
            &format!("verb IN ({})", placeholders(q.verbs.len())),
            q.verbs.iter().map(|v| text(v)),
        );
    }
    if let Some(s) = &q.subresource {
        w.push("subresource = ?", [text(s)]);
    }
    if !q.reasons.is_empty() {
        w.push(
            &format!("reason IN ({})", placeholders(q.reasons.len())),
            q.reasons.iter().map(|v| text(v)),
        );
    }
    if let Some(k) = q.kind {
        w.push("kind = ?", [text(k)]);
    }
    if q.warnings {
        w.push("event_type = 'Warning'", []);
    }
    if q.failed {
        w.push("response_code >= 400", []);
    }
    if q.writes {
        w.push(
            &format!(
                "(verb IS NULL OR verb IN ({}))",
                WRITE_VERBS
                    .iter()
                    .map(|v| format!("'{v}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            [],
        );
    }
    if let Some(upto) = q.upto {
        w.push("seq <= ?", [SqlValue::Integer(upto)]);
    }
    if let Some(after) = q.after {
        w.push("seq > ?", [SqlValue::Integer(after.0)]);
    } else {
        match (q.order, q.cursor) {
            (Order::Newest, Some(c)) => w.push(
                "(time, seq) < (?, ?)",
                [SqlValue::Integer(c.time), SqlValue::Integer(c.position)],
            ),
            (Order::Oldest, Some(c)) => w.push(
                "(time, seq) > (?, ?)",
                [SqlValue::Integer(c.time), SqlValue::Integer(c.position)],
            ),
            (_, None) => {}
        }
    }
    w
}

/// The timeline's SQL and parameters.
///
/// - A live read (`after`) walks the primary key from the position on (`NOT INDEXED`: the
///   filters are checked on the few new rows; through a filter's index it would read and
///   sort every matching record each time).
/// - A user's records are two reads, each newest (or oldest) first through its own index
///   (`records_user`, `records_impersonated`) and stopped at the limit, merged: one read of
///   `username = ? OR impersonated = ?` gathers all of the user's records and sorts them.
fn timeline_sql(q: &TimelineSql) -> (String, Vec<SqlValue>) {
    let (sql, params) = timeline_sql_body(q);
    if q.resource.is_some() && q.name.is_some() {
        let mut p = bucket_params(q.window);
        p.extend(params);
        (format!("{BUCKETS_CTE}{sql}"), p)
    } else {
        (sql, params)
    }
}

fn timeline_sql_body(q: &TimelineSql) -> (String, Vec<SqlValue>) {
    let limit = q.limit;
    if q.after.is_some() {
        let w = timeline_where(q, Actor::Any);
        let sql = format!(
            "SELECT {COLS} FROM records NOT INDEXED{} ORDER BY seq ASC LIMIT {limit}",
            w.sql()
        );
        return (sql, w.params);
    }
    let order = match q.order {
        Order::Newest => "ORDER BY time DESC, seq DESC",
        Order::Oldest => "ORDER BY time ASC, seq ASC",
    };
    match &q.user {
        Some(u) => {
            let a = timeline_where(q, Actor::User(u));
            let b = timeline_where(q, Actor::Impersonated(u));
            let sql = format!(
                "SELECT {COLS} FROM (SELECT {COLS} FROM records{} {order} LIMIT {limit}) \
                 UNION ALL SELECT {COLS} FROM (SELECT {COLS} FROM records{} {order} LIMIT {limit}) \
                 {order} LIMIT {limit}",
                a.sql(),
                b.sql()
            );
            let mut params = a.params;
            params.extend(b.params);
            (sql, params)
        }
        None => {
            let w = timeline_where(q, Actor::Any);
            let sql = format!(
                "SELECT {COLS} FROM records{} {order} LIMIT {limit}",
                w.sql()
            );
            (sql, w.params)
        }
    }
}

/// An object's records, newest first: the matching entries (seq, time) of both indexes,
/// sorted and limited, then those rows read.
fn object_sql(key: &ObjectKey, win: Window, limit: usize) -> (String, Vec<SqlValue>) {
    let (seqs, params) = object_seqs(&key.resource, &key.name, &key.namespace, win);
    let sql = format!(
        "{BUCKETS_CTE}SELECT {COLS} FROM records WHERE seq IN (SELECT seq FROM ({seqs}) \
         ORDER BY time DESC, seq DESC LIMIT {limit}) ORDER BY time DESC, seq DESC"
    );
    let mut p = bucket_params(win);
    p.extend(params);
    (sql, p)
}

/// The records of one uid, newest first.
fn uid_sql(uid: &str, win: Window, limit: usize) -> (String, Vec<SqlValue>) {
    let mut wh = Where::default();
    wh.push("r.uid = ?", [text(uid)]);
    wh.window(win);
    let sql = format!(
        "{BUCKETS_CTE}SELECT {COLS} FROM records WHERE seq IN (SELECT r.seq FROM {} AND {} \
         ORDER BY r.time DESC, r.seq DESC LIMIT {limit}) ORDER BY time DESC, seq DESC",
        through("records_uid"),
        wh.conds.join(" AND ")
    );
    let mut p = bucket_params(win);
    p.extend(wh.params);
    (sql, p)
}

/// The objects an owner's uid made (their first record's time first).
fn owned_sql(owner: &str, win: Window, limit: usize) -> (String, Vec<SqlValue>) {
    let mut wh = Where::default();
    wh.push("r.owner_uid = ?", [text(owner)]);
    wh.window(win);
    let sql = format!(
        "{BUCKETS_CTE}SELECT resource, name, namespace, min(time) AS t FROM records \
         WHERE seq IN (SELECT r.seq FROM {} AND {}) \
         GROUP BY resource, name, namespace ORDER BY t LIMIT {limit}",
        through("records_owner"),
        wh.conds.join(" AND ")
    );
    let mut p = bucket_params(win);
    p.extend(wh.params);
    (sql, p)
}

#[async_trait::async_trait]
impl Backend for Sqlite {
    async fn timeline(&self, q: &TimelineSql) -> Result<(Vec<Row>, i64), QueryError> {
        let (sql, params) = timeline_sql(q);
        self.run(move |c| {
            // One read transaction: the page and the newest position come from one snapshot.
            c.execute_batch("BEGIN").map_err(err("starting a read"))?;
            let out = (|| {
                let found = rows(c, &sql, params)?;
                let max = newest(c)?;
                Ok((found, max))
            })();
            let _ = c.execute_batch("COMMIT");
            out
        })
        .await
    }

    async fn object_rows(
        &self,
        key: &ObjectKey,
        w: Window,
        limit: usize,
    ) -> Result<Vec<Row>, QueryError> {
        let (sql, params) = object_sql(key, w, limit);
        self.run(move |c| rows(c, &sql, params)).await
    }

    async fn uid_rows(&self, uid: &str, w: Window, limit: usize) -> Result<Vec<Row>, QueryError> {
        let (sql, params) = uid_sql(uid, w, limit);
        self.run(move |c| rows(c, &sql, params)).await
    }

    async fn owned_keys(
        &self,
        owner: &str,
        w: Window,
        limit: usize,
    ) -> Result<Vec<ObjectKey>, QueryError> {
        Ok(self
            .owned_keys_timed(owner, w, limit)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    async fn namespaces(
        &self,
        resource: &str,
        name: &str,
        w: Window,
    ) -> Result<Vec<Option<String>>, QueryError> {
        let mut wh = Where::default();
        wh.push("r.resource = ?", [text(resource)]);
        wh.push("r.name = ?", [text(name)]);
        wh.window(w);
        let sql = format!(
            "{BUCKETS_CTE}SELECT DISTINCT r.namespace FROM {} AND {} LIMIT 50",
            through("records_object"),
            wh.conds.join(" AND ")
        );
        let mut params = bucket_params(w);
        params.extend(wh.params);
        self.run(move |c| {
            let mut stmt = c.prepare_cached(&sql).map_err(err("preparing a query"))?;
            let it = stmt
                .query_map(params_from_iter(params), |r| r.get::<_, Option<String>>(0))
                .map_err(err("reading namespaces"))?;
            it.collect::<Result<Vec<_>, _>>()
                .map_err(err("reading namespaces"))
        })
        .await
    }

    async fn any_of_kind(&self, kind: &str, w: Window) -> Result<bool, QueryError> {
        // Through the time index: the first record of the window of this kind.
        let mut wh = Where::default();
        wh.window(w);
        wh.push("kind = ?", [text(kind)]);
        let sql = format!("SELECT 1 FROM records{} LIMIT 1", wh.sql());
        self.run(move |c| {
            let mut stmt = c.prepare_cached(&sql).map_err(err("preparing a query"))?;
            let mut r = stmt
                .query(params_from_iter(wh.params))
                .map_err(err("reading"))?;
            Ok(r.next().map_err(err("reading"))?.is_some())
        })
        .await
    }

    async fn gaps(&self, w: Window, limit: usize) -> Result<Vec<Row>, QueryError> {
        let mut wh = Where::default();
        wh.push("kind = 'gap'", []);
        wh.window(w);
        let sql = format!(
            "SELECT {COLS} FROM records{} ORDER BY time DESC LIMIT {limit}",
            wh.sql()
        );
        self.run(move |c| rows(c, &sql, wh.params)).await
    }

    async fn record(&self, id: &str) -> Result<Option<Row>, QueryError> {
        let id = id.to_string();
        self.run(move |c| {
            let mut params = bucket_params(Window::default());
            params.push(SqlValue::Text(id));
            Ok(rows(
                c,
                &format!(
                    "{BUCKETS_CTE}SELECT {COLS} FROM records WHERE seq IN \
                     (SELECT r.seq FROM {} AND r.id = ?)",
                    through("records_id")
                ),
                params,
            )?
            .into_iter()
            .next())
        })
        .await
    }

    async fn explain(&self, key: &ObjectKey) -> Result<Vec<String>, QueryError> {
        let w = Window::default();
        // A related object's records around a change (here: one now).
        let now = kubetrail_core::Timestamp::now().unix_nanos();
        let around = Window {
            since: Some(now - crate::evidence::BEFORE),
            until: Some(now + crate::evidence::AROUND),
        };
        let queries = vec![
            ("object", object_sql(key, w, 5000)),
            (
                "object around a change",
                object_sql(key, around, crate::evidence::RELATED_LIMIT),
            ),
            ("uid", uid_sql("x", w, 5000)),
            ("owned", owned_sql("x", w, 2000)),
        ];
        self.run(move |c| {
            let mut out = Vec::new();
            for (name, (sql, params)) in queries {
                out.push(format!("-- {name}: {sql}"));
                let mut stmt = c
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .map_err(err("explaining"))?;
                let it = stmt
                    .query_map(params_from_iter(params), |r| r.get::<_, String>(3))
                    .map_err(err("explaining"))?;
                for line in it {
                    out.push(format!("   {}", line.map_err(err("explaining"))?));
                }
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use kubetrail_activity::{ActivityWriter, WriterOptions};

    use super::*;
    use crate::spec::Position;

    /// Records by alice, by bob impersonating alice, and by others, one a second.
    fn store(dir: &Path) -> PathBuf {
        let path = dir.join("a.db");
        let mut w = ActivityWriter::open(&path, &WriterOptions::default()).unwrap();
        let recs: Vec<(String, String)> = (0..60)
            .map(|i| {
                let (user, imp) = match i % 4 {
                    0 => ("alice", None),
                    1 => ("bob", Some("alice")),
                    2 => ("carol", None),
                    _ => ("bob", None),
                };
                let imp = imp
                    .map(|u| format!(r#","impersonated_user":{{"username":"{u}"}}"#))
                    .unwrap_or_default();
                let id = format!("a{i}");
                let rec = format!(
                    r#"{{"id":"{id}","time":"2026-12-06T23:{:02}:{:02}Z","kind":"k8s_audit","source":"s","verb":"get","user":{{"username":"{user}","groups":["g"]}}{imp},"object_ref":{{"resource":"{}","namespace":"shop","name":"x{i}"}},"response_code":200}}"#,
                    i / 60,
                    i % 60,
                    if i % 3 == 0 { "pods" } else { "configmaps" }
                );
                (id, rec)
            })
            .collect();
        w.insert(recs.iter().map(|(i, r)| (i.as_str(), r.as_bytes())), 0)
            .unwrap();
        path
    }

    fn ids(rows: &[Row]) -> Vec<String> {
        rows.iter().map(|r| r.id.clone()).collect()
    }

    fn plan(c: &Connection, (sql, params): (String, Vec<SqlValue>)) -> String {
        let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let lines: Vec<String> = stmt
            .query_map(params_from_iter(params), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        lines.join("\n")
    }

    #[tokio::test]
    async fn a_users_timeline_merges_own_and_impersonated_records_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&store(dir.path()), Duration::from_secs(10)).unwrap();
        let mut q = TimelineSql {
            user: Some("alice".into()),
            limit: 5,
            ..TimelineSql::default()
        };
        let (rows, _) = db.timeline(&q).await.unwrap();
        assert_eq!(ids(&rows), ["a57", "a56", "a53", "a52", "a49"]);
        q.order = Order::Oldest;
        let (rows, _) = db.timeline(&q).await.unwrap();
        assert_eq!(ids(&rows), ["a0", "a1", "a4", "a5", "a8"]);
        // A live read: what came after a position, oldest first, with the filters.
        q.after = Some(Position(50));
        let (rows, _) = db.timeline(&q).await.unwrap();
        assert_eq!(ids(&rows), ["a52", "a53", "a56", "a57"]);
        q.user = None;
        q.resource = Some("pods".into());
        let (rows, _) = db.timeline(&q).await.unwrap();
        assert_eq!(ids(&rows), ["a51", "a54", "a57"]);
    }

    /// A store written before schema 2 (version 1's indexes, no `buckets`) is upgraded when a
    /// reader opens it, and answers as one written now.
    #[tokio::test]
    async fn a_version_1_store_is_upgraded_when_opened_for_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = store(dir.path());
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(
                "DROP INDEX records_time_id; DROP INDEX records_id; DROP INDEX records_object;
                 DROP INDEX records_uid; DROP INDEX records_owner; DROP INDEX records_mention;
                 DROP TABLE buckets; DROP TABLE shard; DROP INDEX records_groups;
                 CREATE TABLE record_groups (grp TEXT NOT NULL, seq INTEGER NOT NULL,
                     PRIMARY KEY (grp, seq)) WITHOUT ROWID;
                 INSERT INTO record_groups SELECT j.value, r.seq FROM records r, json_each(r.groups) j;
                 DROP TABLE group_sets;
                 CREATE UNIQUE INDEX records_id ON records (id);
                 CREATE INDEX records_time ON records (time);
                 CREATE INDEX records_object ON records (resource, name, namespace, time);
                 CREATE INDEX records_uid ON records (uid) WHERE uid IS NOT NULL;
                 CREATE INDEX records_owner ON records (owner_uid, time) WHERE owner_uid IS NOT NULL;
                 CREATE INDEX records_mention ON records (mention_resource, mention_name, namespace)
                     WHERE mention_name IS NOT NULL;
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let db = Sqlite::open(&path, Duration::from_secs(10)).unwrap();
        let key = ObjectKey {
            resource: "pods".into(),
            name: "x3".into(),
            namespace: Some(Some("shop".into())),
        };
        assert_eq!(
            ids(&db.object_rows(&key, Window::default(), 10).await.unwrap()),
            ["a3"]
        );
        assert_eq!(db.record("a59").await.unwrap().unwrap().id, "a59");
        let q = TimelineSql {
            user: Some("alice".into()),
            limit: 5,
            ..TimelineSql::default()
        };
        assert_eq!(
            ids(&db.timeline(&q).await.unwrap().0),
            ["a57", "a56", "a53", "a52", "a49"]
        );
        // A group's records, found through the lists of groups the upgrade made.
        let mut q = TimelineSql {
            group: Some("g".into()),
            limit: 3,
            ..TimelineSql::default()
        };
        assert_eq!(
            ids(&db.timeline(&q).await.unwrap().0),
            ["a59", "a58", "a57"]
        );
        q.after = Some(Position(59)); // a{i} is at position i + 1
        assert_eq!(ids(&db.timeline(&q).await.unwrap().0), ["a59"]);
        q.group = Some("h".into());
        assert!(db.timeline(&q).await.unwrap().0.is_empty());
        q.after = None;
        assert!(db.timeline(&q).await.unwrap().0.is_empty());
        let c = kubetrail_activity::open_reader(&path).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, kubetrail_activity::schema::SCHEMA_VERSION);
    }

    /// A raw audit event: the replicaset-controller creates pod `name` (uid `uid`, owned by
    /// the ReplicaSet of uid `owner`) at second `s` after 22:00.
    fn created(id: &str, s: u32, name: &str, uid: &str, owner: &str) -> String {
        let t = format!("2026-12-06T22:{:02}:{:02}.000000Z", s / 60, s % 60);
        format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"{id}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/shop/pods","verb":"create","user":{{"username":"system:serviceaccount:kube-system:replicaset-controller"}},"objectRef":{{"resource":"pods","namespace":"shop","name":"{name}","apiVersion":"v1"}},"responseStatus":{{"code":201}},"responseObject":{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"shop","uid":"{uid}","ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-1","uid":"{owner}","controller":true}}]}}}},"requestReceivedTimestamp":"{t}","stageTimestamp":"{t}"}}"#
        )
    }

    /// Reads through the bucketed indexes find an object's records in every bucket of their
    /// window (and only there), and in buckets `buckets` does not know yet.
    #[tokio::test]
    async fn reads_find_records_in_every_bucket_of_their_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let mut w = ActivityWriter::open(&path, &WriterOptions::default()).unwrap();
        let first = [
            ("e1", created("e1", 0, "web-a", "u-a", "rs-1")),
            ("e2", created("e2", 1, "web-b", "u-b", "rs-1")),
        ];
        w.insert(first.iter().map(|(i, r)| (*i, r.as_bytes())), 0)
            .unwrap();
        // The next records go to bucket 3, after a row at its start.
        let start = 3i64 << BUCKET_SHIFT;
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute(
                "INSERT INTO records (seq, id, time, kind, record) VALUES (?1, 'filler', 0, 'gap', '{}')",
                [start],
            )
            .unwrap();
        let later = [
            ("e3", created("e3", 600, "web-a", "u-a", "rs-1")),
            ("e4", created("e4", 601, "web-c", "u-c", "rs-1")),
        ];
        w.insert_at(
            later
                .iter()
                .zip(start + 1..)
                .map(|((i, r), seq)| (seq, *i, r.as_bytes())),
            start + 2,
            0,
        )
        .unwrap();
        drop(w);
        let db = Sqlite::open(&path, Duration::from_secs(10)).unwrap();
        let pod = |name: &str| ObjectKey {
            resource: "pods".into(),
            name: name.into(),
            namespace: Some(Some("shop".into())),
        };
        let all = Window::default();
        let seqs = |rows: &[Row]| rows.iter().map(|r| r.seq).collect::<Vec<_>>();
        let rows = db.object_rows(&pod("web-a"), all, 100).await.unwrap();
        assert_eq!(ids(&rows), ["e3", "e1"]);
        assert_eq!(seqs(&rows), [start + 1, 1]);
        assert_eq!(
            ids(&db.uid_rows("u-a", all, 100).await.unwrap()),
            ["e3", "e1"]
        );
        assert_eq!(ids(&db.uid_rows("u-a", all, 1).await.unwrap()), ["e3"]);
        let owned = db.owned_keys("rs-1", all, 100).await.unwrap();
        let names: Vec<&str> = owned.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["web-a", "web-b", "web-c"]);
        assert_eq!(
            db.namespaces("pods", "web-c", all).await.unwrap(),
            [Some("shop".to_string())]
        );
        assert_eq!(db.record("e1").await.unwrap().unwrap().seq, 1);
        assert_eq!(db.record("e4").await.unwrap().unwrap().seq, start + 2);
        assert!(db.record("e5").await.unwrap().is_none());
        // A window of the later records only: bucket 0 is not probed, and not found.
        let t = |s: i64| 1_796_594_400_000_000_000i64 + s * 1_000_000_000;
        assert_eq!(
            kubetrail_core::Timestamp::from_unix_nanos(t(0)).to_rfc3339(),
            "2026-12-06T22:00:00Z"
        );
        let late = Window {
            since: Some(t(300)),
            until: None,
        };
        assert_eq!(
            ids(&db.object_rows(&pod("web-a"), late, 100).await.unwrap()),
            ["e3"]
        );
        let early = Window {
            since: None,
            until: Some(t(300)),
        };
        assert_eq!(ids(&db.uid_rows("u-a", early, 100).await.unwrap()), ["e1"]);
        // The page's object filter goes through the same buckets.
        let q = TimelineSql {
            resource: Some("pods".into()),
            name: Some("web-a".into()),
            limit: 10,
            ..TimelineSql::default()
        };
        assert_eq!(ids(&db.timeline(&q).await.unwrap().0), ["e3", "e1"]);
        // A bucket that `buckets` lost (as if a writer had not kept it) is still read, being
        // past the last one it knows.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute("DELETE FROM buckets WHERE bucket = 3", [])
            .unwrap();
        assert_eq!(ids(&db.uid_rows("u-a", late, 100).await.unwrap()), ["e3"]);
        // Every read is a search of its index in each bucket, never a scan of the records.
        let reader = kubetrail_activity::open_reader(&path).unwrap();
        for (name, sql) in [
            ("records_object", object_sql(&pod("web-a"), all, 10)),
            ("records_mention", object_sql(&pod("web-a"), all, 10)),
            ("records_uid", uid_sql("u-a", all, 10)),
            ("records_owner", owned_sql("rs-1", all, 10)),
            ("records_object", timeline_sql(&q)),
        ] {
            let p = plan(&reader, sql);
            assert!(
                p.contains(&format!("SEARCH r USING COVERING INDEX {name} (<expr>=?")),
                "{p}"
            );
            assert!(!p.contains("SCAN records"), "{p}");
            assert!(!p.contains("SCAN r "), "{p}");
        }
    }

    /// Each read is ordered by an index: no sort of everything the filter matches.
    #[test]
    fn timeline_reads_walk_an_index_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let c = kubetrail_activity::open_reader(&store(dir.path())).unwrap();
        let user = TimelineSql {
            user: Some("alice".into()),
            limit: 100,
            ..TimelineSql::default()
        };
        let p = plan(&c, timeline_sql(&user));
        assert!(p.contains("records_user"), "{p}");
        assert!(p.contains("records_impersonated"), "{p}");
        // Only what the two limited reads return is sorted (for their merge), never the
        // records an index search finds.
        let lines: Vec<&str> = p.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.contains("TEMP B-TREE") {
                assert!(i > 0 && lines[i - 1].starts_with("SCAN (subquery"), "{p}");
            }
        }
        let pods = TimelineSql {
            resource: Some("pods".into()),
            limit: 100,
            ..TimelineSql::default()
        };
        let p = plan(&c, timeline_sql(&pods));
        assert!(p.contains("records_resource"), "{p}");
        assert!(!p.contains("TEMP B-TREE"), "{p}");
        let live = TimelineSql {
            user: Some("alice".into()),
            resource: Some("pods".into()),
            group: Some("g".into()),
            after: Some(Position(10)),
            limit: 100,
            ..TimelineSql::default()
        };
        let p = plan(&c, timeline_sql(&live));
        assert!(p.contains("INTEGER PRIMARY KEY (rowid>?)"), "{p}");
        assert!(!p.contains("TEMP B-TREE"), "{p}");
    }
}
