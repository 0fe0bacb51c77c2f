//! The SQLite activity database as a backend. Reads run on blocking threads, each on a
//! read-only connection from a small pool (WAL: they never block the `store` output writing,
//! nor wait for it). Every statement is stopped at the time limit (a progress handler).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params_from_iter};

use super::{Backend, ObjectKey, Row, TimelineSql, WRITE_VERBS, Window};
use crate::QueryError;
use crate::spec::Order;

/// The connections kept for reuse.
const POOL: usize = 4;

pub(crate) struct Sqlite {
    path: PathBuf,
    pool: Arc<Mutex<Vec<Connection>>>,
    timeout: Duration,
}

fn err(what: &'static str) -> impl FnOnce(rusqlite::Error) -> QueryError {
    move |source| QueryError::Sqlite { what, source }
}

impl Sqlite {
    pub fn open(path: &Path, timeout: Duration) -> Result<Sqlite, QueryError> {
        let conn = kubetrail_activity::open_reader(path)?;
        Ok(Sqlite {
            path: path.to_path_buf(),
            pool: Arc::new(Mutex::new(vec![conn])),
            timeout,
        })
    }

    /// Runs `f` on a pooled connection on a blocking thread, within the time limit.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, QueryError> + Send + 'static,
    ) -> Result<T, QueryError> {
        let pool = self.pool.clone();
        let path = self.path.clone();
        let timeout = self.timeout;
        tokio::task::spawn_blocking(move || {
            let conn = pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match conn {
                Some(c) => c,
                None => kubetrail_activity::open_reader(&path)?,
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

/// The timeline's SQL and parameters.
fn timeline_sql(q: &TimelineSql) -> (String, Vec<SqlValue>) {
    let mut w = Where::default();
    w.window(q.window);
    w.push("(stage IS NULL OR stage <> 'RequestReceived')", []);
    if let Some(ns) = &q.namespace {
        w.push("namespace = ?", [text(ns)]);
    }
    match (&q.resource, &q.name) {
        (Some(r), Some(n)) => w.push(
            "((resource = ? AND name = ?) OR (mention_resource = ? AND mention_name = ?))",
            [text(r), text(n), text(r), text(n)],
        ),
        (Some(r), None) => w.push("resource = ?", [text(r)]),
        _ => {}
    }
    if let Some(u) = &q.user {
        w.push("(username = ? OR impersonated = ?)", [text(u), text(u)]);
    }
    if let Some(g) = &q.group {
        w.push(
            "seq IN (SELECT seq FROM record_groups WHERE grp = ?)",
            [text(g)],
        );
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
    let order = if let Some(after) = q.after {
        w.push("seq > ?", [SqlValue::Integer(after.0)]);
        "ORDER BY seq ASC"
    } else {
        match (q.order, q.cursor) {
            (Order::Newest, Some(c)) => {
                w.push(
                    "(time, seq) < (?, ?)",
                    [SqlValue::Integer(c.time), SqlValue::Integer(c.position)],
                );
                "ORDER BY time DESC, seq DESC"
            }
            (Order::Newest, None) => "ORDER BY time DESC, seq DESC",
            (Order::Oldest, Some(c)) => {
                w.push(
                    "(time, seq) > (?, ?)",
                    [SqlValue::Integer(c.time), SqlValue::Integer(c.position)],
                );
                "ORDER BY time ASC, seq ASC"
            }
            (Order::Oldest, None) => "ORDER BY time ASC, seq ASC",
        }
    };
    let sql = format!(
        "SELECT {COLS} FROM records{} {order} LIMIT {}",
        w.sql(),
        q.limit
    );
    (sql, w.params)
}

fn object_sql(key: &ObjectKey, win: Window, limit: usize) -> (String, Vec<SqlValue>) {
    let mut a = Where::default();
    a.push("resource = ?", [text(&key.resource)]);
    a.push("name = ?", [text(&key.name)]);
    a.namespace(&key.namespace);
    a.window(win);
    let mut b = Where::default();
    b.push("mention_resource = ?", [text(&key.resource)]);
    b.push("mention_name = ?", [text(&key.name)]);
    b.namespace(&key.namespace);
    b.window(win);
    let sql = format!(
        "SELECT {COLS} FROM (SELECT seq, id, time, record FROM records{} \
         UNION SELECT seq, id, time, record FROM records{}) ORDER BY time DESC, seq DESC LIMIT {limit}",
        a.sql(),
        b.sql()
    );
    let mut params = a.params;
    params.extend(b.params);
    (sql, params)
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
                let max: i64 = c
                    .query_row("SELECT coalesce(max(seq), 0) FROM records", [], |r| {
                        r.get(0)
                    })
                    .map_err(err("reading the newest position"))?;
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
        let mut wh = Where::default();
        wh.push("uid = ?", [text(uid)]);
        wh.window(w);
        let sql = format!(
            "SELECT {COLS} FROM records{} ORDER BY time DESC, seq DESC LIMIT {limit}",
            wh.sql()
        );
        self.run(move |c| rows(c, &sql, wh.params)).await
    }

    async fn owned_keys(
        &self,
        owner: &str,
        w: Window,
        limit: usize,
    ) -> Result<Vec<ObjectKey>, QueryError> {
        let mut wh = Where::default();
        wh.push("owner_uid = ?", [text(owner)]);
        wh.window(w);
        let sql = format!(
            "SELECT resource, name, namespace, min(time) AS t FROM records{} \
             GROUP BY resource, name, namespace ORDER BY t LIMIT {limit}",
            wh.sql()
        );
        self.run(move |c| {
            let mut stmt = c.prepare_cached(&sql).map_err(err("preparing a query"))?;
            let it = stmt
                .query_map(params_from_iter(wh.params), |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                })
                .map_err(err("reading owned objects"))?;
            let mut out = Vec::new();
            for row in it {
                if let (Some(resource), Some(name), ns) =
                    row.map_err(err("reading owned objects"))?
                {
                    out.push(ObjectKey {
                        resource,
                        name,
                        namespace: Some(ns),
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn namespaces(
        &self,
        resource: &str,
        name: &str,
        w: Window,
    ) -> Result<Vec<Option<String>>, QueryError> {
        let mut wh = Where::default();
        wh.push("resource = ?", [text(resource)]);
        wh.push("name = ?", [text(name)]);
        wh.window(w);
        let sql = format!(
            "SELECT DISTINCT namespace FROM records{} LIMIT 50",
            wh.sql()
        );
        self.run(move |c| {
            let mut stmt = c.prepare_cached(&sql).map_err(err("preparing a query"))?;
            let it = stmt
                .query_map(params_from_iter(wh.params), |r| {
                    r.get::<_, Option<String>>(0)
                })
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
            Ok(rows(
                c,
                &format!("SELECT {COLS} FROM records WHERE id = ?"),
                vec![SqlValue::Text(id)],
            )?
            .into_iter()
            .next())
        })
        .await
    }

    async fn explain(&self, key: &ObjectKey) -> Result<Vec<String>, QueryError> {
        let w = Window::default();
        let queries = vec![
            ("object", object_sql(key, w, 5000)),
            (
                "uid",
                (format!("SELECT {COLS} FROM records WHERE uid = ? ORDER BY time DESC, seq DESC LIMIT 5000"), vec![text("x")]),
            ),
            (
                "owned",
                (
                    "SELECT resource, name, namespace, min(time) AS t FROM records WHERE owner_uid = ? \
                     GROUP BY resource, name, namespace ORDER BY t LIMIT 2000"
                        .to_string(),
                    vec![text("x")],
                ),
            ),
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
