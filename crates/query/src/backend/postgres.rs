//! The `postgresql` output's table as a backend: the same reads as SQLite's, in PostgreSQL's
//! dialect, on the activity columns the output adds (see `kubetrail_activity::pg`). The
//! connection is the caller's (so TLS and credentials are set up once, where the output's
//! configuration is read); every statement runs under `statement_timeout`.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use super::{Backend, ObjectKey, Row, TimelineSql, WRITE_VERBS, Window};
use crate::QueryError;
use crate::spec::Order;

pub(crate) struct Postgres {
    client: Client,
    table: String,
}

type Param = Box<dyn ToSql + Sync + Send>;

fn err(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> QueryError {
    move |source| QueryError::Postgres { what, source }
}

fn ts(ns: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Conditions with `$n` placeholders and their parameters.
#[derive(Default)]
struct Where {
    conds: Vec<String>,
    params: Vec<Param>,
}

impl Where {
    fn next(&self) -> usize {
        self.params.len() + 1
    }
    /// Adds a condition whose `?`s are numbered in order.
    fn push(&mut self, cond: &str, params: Vec<Param>) {
        let mut n = self.next();
        let mut out = String::with_capacity(cond.len() + 8);
        for ch in cond.chars() {
            if ch == '?' {
                out.push_str(&format!("${n}"));
                n += 1;
            } else {
                out.push(ch);
            }
        }
        self.conds.push(out);
        self.params.extend(params);
    }
    fn window(&mut self, w: Window) {
        if let Some(s) = w.since {
            self.push("time >= ?", vec![Box::new(ts(s))]);
        }
        if let Some(u) = w.until {
            self.push("time < ?", vec![Box::new(ts(u))]);
        }
    }
    fn namespace(&mut self, ns: &Option<Option<String>>) {
        match ns {
            None => {}
            Some(None) => self.push("obj_namespace IS NULL", vec![]),
            Some(Some(n)) => self.push("obj_namespace = ?", vec![Box::new(n.clone())]),
        }
    }
    fn sql(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conds.join(" AND "))
        }
    }
    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

const COLS: &str = "seq, id, time, record::text";

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

fn s(v: &str) -> Param {
    Box::new(v.to_string())
}

impl Postgres {
    /// `table` is the quoted table name (`"public"."kubetrail_records"`).
    pub async fn new(
        client: Client,
        table: String,
        timeout: Duration,
    ) -> Result<Postgres, QueryError> {
        client
            .batch_execute(&format!(
                "SET statement_timeout = {}; SET default_transaction_read_only = on",
                timeout.as_millis().max(1)
            ))
            .await
            .map_err(err("setting the statement timeout"))?;
        Ok(Postgres { client, table })
    }

    async fn rows(&self, sql: &str, w: &Where) -> Result<Vec<Row>, QueryError> {
        let found = self
            .client
            .query(sql, &w.refs())
            .await
            .map_err(|e| timeout_or(e, "reading records"))?;
        found
            .iter()
            .map(|r| {
                let t: Option<OffsetDateTime> = r.try_get(2).map_err(err("reading a row"))?;
                Ok(Row {
                    seq: r.try_get(0).map_err(err("reading a row"))?,
                    id: r.try_get(1).map_err(err("reading a row"))?,
                    time: t.map_or(0, |t| i64::try_from(t.unix_timestamp_nanos()).unwrap_or(0)),
                    record: r.try_get(3).map_err(err("reading a row"))?,
                })
            })
            .collect()
    }

    /// The timeline's conditions for one read, added to `w`; returns them as a WHERE clause.
    fn timeline_where(q: &TimelineSql, max: i64, actor: Actor<'_>, w: &mut Where) -> String {
        let start = w.conds.len();
        w.push("seq <= ?", vec![Box::new(max)]);
        w.window(q.window);
        w.push("(stage IS NULL OR stage <> 'RequestReceived')", vec![]);
        if let Some(ns) = &q.namespace {
            w.push("obj_namespace = ?", vec![s(ns)]);
        }
        match (&q.resource, &q.name) {
            (Some(r), Some(n)) => w.push(
                "((resource = ? AND obj_name = ?) OR (mention_resource = ? AND mention_name = ?))",
                vec![s(r), s(n), s(r), s(n)],
            ),
            (Some(r), None) => w.push("resource = ?", vec![s(r)]),
            _ => {}
        }
        match (actor, &q.user) {
            (Actor::User(u), _) => w.push("username = ?", vec![s(u)]),
            (Actor::Impersonated(u), _) => w.push(
                "impersonated_user = ? AND username IS DISTINCT FROM ?",
                vec![s(u), s(u)],
            ),
            (Actor::Any, Some(u)) => {
                w.push("(username = ? OR impersonated_user = ?)", vec![s(u), s(u)]);
            }
            (Actor::Any, None) => {}
        }
        if let Some(g) = &q.group {
            w.push("user_groups @> ARRAY[?]::text[]", vec![s(g)]);
        }
        if !q.verbs.is_empty() {
            w.push("verb = ANY(?)", vec![Box::new(q.verbs.clone())]);
        }
        if let Some(sub) = &q.subresource {
            w.push("subresource = ?", vec![s(sub)]);
        }
        if !q.reasons.is_empty() {
            w.push("reason = ANY(?)", vec![Box::new(q.reasons.clone())]);
        }
        if let Some(k) = q.kind {
            w.push("kind = ?", vec![s(k)]);
        }
        if q.warnings {
            w.push("event_type = 'Warning'", vec![]);
        }
        if q.failed {
            w.push("response_code >= 400", vec![]);
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
                vec![],
            );
        }
        if let Some(after) = q.after {
            w.push("seq > ?", vec![Box::new(after.0)]);
        } else {
            match (q.order, q.cursor) {
                (Order::Newest, Some(c)) => w.push(
                    "(time, seq) < (?, ?)",
                    vec![Box::new(ts(c.time)), Box::new(c.position)],
                ),
                (Order::Oldest, Some(c)) => w.push(
                    "(time, seq) > (?, ?)",
                    vec![Box::new(ts(c.time)), Box::new(c.position)],
                ),
                (_, None) => {}
            }
        }
        let conds = w.conds.split_off(start);
        format!(" WHERE {}", conds.join(" AND "))
    }

    /// The timeline's SQL: a user's records are two reads, each through its own index
    /// (`user_time`, `imp`) in time order and stopped at the limit, merged (one read of
    /// `username = ? OR impersonated_user = ?` gathers all of them and sorts them).
    fn timeline_sql(&self, q: &TimelineSql, max: i64) -> (String, Where) {
        let mut w = Where::default();
        let limit = q.limit;
        let table = &self.table;
        let order = match (q.after, q.order) {
            (Some(_), _) => "ORDER BY seq ASC",
            (None, Order::Newest) => "ORDER BY time DESC, seq DESC",
            (None, Order::Oldest) => "ORDER BY time ASC, seq ASC",
        };
        let sql = match (&q.user, q.after) {
            (Some(u), None) => {
                let a = Self::timeline_where(q, max, Actor::User(u), &mut w);
                let b = Self::timeline_where(q, max, Actor::Impersonated(u), &mut w);
                format!(
                    "SELECT {COLS} FROM ((SELECT seq, id, time, record FROM {table}{a} {order} LIMIT {limit}) \
                     UNION ALL (SELECT seq, id, time, record FROM {table}{b} {order} LIMIT {limit})) u \
                     {order} LIMIT {limit}"
                )
            }
            _ => {
                let c = Self::timeline_where(q, max, Actor::Any, &mut w);
                format!("SELECT {COLS} FROM {table}{c} {order} LIMIT {limit}")
            }
        };
        (sql, w)
    }

    fn object_sql(&self, key: &ObjectKey, win: Window, limit: usize) -> (String, Where) {
        let mut w = Where::default();
        w.push(
            "((resource = ? AND obj_name = ?) OR (mention_resource = ? AND mention_name = ?))",
            vec![
                s(&key.resource),
                s(&key.name),
                s(&key.resource),
                s(&key.name),
            ],
        );
        w.namespace(&key.namespace);
        w.window(win);
        let sql = format!(
            "SELECT {COLS} FROM {}{} ORDER BY time DESC, seq DESC LIMIT {limit}",
            self.table,
            w.sql()
        );
        (sql, w)
    }

    fn owned_sql(&self, owner: &str, win: Window, limit: usize) -> (String, Where) {
        let mut w = Where::default();
        w.push("owner_uid = ?", vec![s(owner)]);
        w.window(win);
        let sql = format!(
            "SELECT resource, obj_name, obj_namespace, min(time) AS t FROM {}{} \
             GROUP BY resource, obj_name, obj_namespace ORDER BY t LIMIT {limit}",
            self.table,
            w.sql()
        );
        (sql, w)
    }

    fn simple(&self, cond: &str, value: &str, win: Window, limit: usize) -> (String, Where) {
        let mut w = Where::default();
        w.push(cond, vec![s(value)]);
        w.window(win);
        let sql = format!(
            "SELECT {COLS} FROM {}{} ORDER BY time DESC, seq DESC LIMIT {limit}",
            self.table,
            w.sql()
        );
        (sql, w)
    }
}

fn timeout_or(e: tokio_postgres::Error, what: &'static str) -> QueryError {
    // 57014: query_canceled (statement_timeout).
    if e.code().is_some_and(|c| c.code() == "57014") {
        return QueryError::Postgres {
            what: "the query ran past statement_timeout",
            source: e,
        };
    }
    QueryError::Postgres { what, source: e }
}

#[async_trait::async_trait]
impl Backend for Postgres {
    async fn timeline(&self, q: &TimelineSql) -> Result<(Vec<Row>, i64), QueryError> {
        // The newest position first, and the page at or below it: a reader following
        // `after` from it misses nothing this page could have shown.
        let max: i64 = self
            .client
            .query_one(
                &format!("SELECT coalesce(max(seq), 0) FROM {}", self.table),
                &[],
            )
            .await
            .map_err(|e| timeout_or(e, "reading the newest position"))?
            .get(0);
        let (sql, w) = self.timeline_sql(q, max);
        Ok((self.rows(&sql, &w).await?, max))
    }

    async fn object_rows(
        &self,
        key: &ObjectKey,
        w: Window,
        limit: usize,
    ) -> Result<Vec<Row>, QueryError> {
        let (sql, wh) = self.object_sql(key, w, limit);
        self.rows(&sql, &wh).await
    }

    async fn uid_rows(&self, uid: &str, w: Window, limit: usize) -> Result<Vec<Row>, QueryError> {
        let (sql, wh) = self.simple("obj_uid = ?", uid, w, limit);
        self.rows(&sql, &wh).await
    }

    async fn owned_keys(
        &self,
        owner: &str,
        win: Window,
        limit: usize,
    ) -> Result<Vec<ObjectKey>, QueryError> {
        let (sql, w) = self.owned_sql(owner, win, limit);
        let found = self
            .client
            .query(&sql, &w.refs())
            .await
            .map_err(|e| timeout_or(e, "reading owned objects"))?;
        let mut out = Vec::new();
        for r in found {
            let resource: Option<String> = r.try_get(0).map_err(err("reading a row"))?;
            let name: Option<String> = r.try_get(1).map_err(err("reading a row"))?;
            let ns: Option<String> = r.try_get(2).map_err(err("reading a row"))?;
            if let (Some(resource), Some(name)) = (resource, name) {
                out.push(ObjectKey {
                    resource,
                    name,
                    namespace: Some(ns),
                });
            }
        }
        Ok(out)
    }

    async fn namespaces(
        &self,
        resource: &str,
        name: &str,
        win: Window,
    ) -> Result<Vec<Option<String>>, QueryError> {
        let mut w = Where::default();
        w.push("resource = ?", vec![s(resource)]);
        w.push("obj_name = ?", vec![s(name)]);
        w.window(win);
        let sql = format!(
            "SELECT DISTINCT obj_namespace FROM {}{} LIMIT 50",
            self.table,
            w.sql()
        );
        let found = self
            .client
            .query(&sql, &w.refs())
            .await
            .map_err(|e| timeout_or(e, "reading namespaces"))?;
        found
            .iter()
            .map(|r| {
                r.try_get::<_, Option<String>>(0)
                    .map_err(err("reading a row"))
            })
            .collect()
    }

    async fn any_of_kind(&self, kind: &str, win: Window) -> Result<bool, QueryError> {
        let mut w = Where::default();
        w.window(win);
        w.push("kind = ?", vec![s(kind)]);
        let sql = format!("SELECT 1 FROM {}{} LIMIT 1", self.table, w.sql());
        let found = self
            .client
            .query(&sql, &w.refs())
            .await
            .map_err(|e| timeout_or(e, "reading"))?;
        Ok(!found.is_empty())
    }

    async fn gaps(&self, win: Window, limit: usize) -> Result<Vec<Row>, QueryError> {
        let mut w = Where::default();
        w.push("kind = 'gap'", vec![]);
        w.window(win);
        let sql = format!(
            "SELECT {COLS} FROM {}{} ORDER BY time DESC LIMIT {limit}",
            self.table,
            w.sql()
        );
        self.rows(&sql, &w).await
    }

    async fn record(&self, id: &str) -> Result<Option<Row>, QueryError> {
        let mut w = Where::default();
        w.push("id = ?", vec![s(id)]);
        let sql = format!("SELECT {COLS} FROM {}{}", self.table, w.sql());
        Ok(self.rows(&sql, &w).await?.into_iter().next())
    }

    async fn explain(&self, key: &ObjectKey) -> Result<Vec<String>, QueryError> {
        let win = Window::default();
        // A related object's records around a change (here: one now).
        let now = kubetrail_core::Timestamp::now().unix_nanos();
        let around = Window {
            since: Some(now - crate::evidence::BEFORE),
            until: Some(now + crate::evidence::AROUND),
        };
        let mut out = Vec::new();
        let queries = [
            ("object", self.object_sql(key, win, 5000)),
            (
                "object around a change",
                self.object_sql(key, around, crate::evidence::RELATED_LIMIT),
            ),
            ("uid", self.simple("obj_uid = ?", "x", win, 5000)),
            ("owned", self.owned_sql("x", win, 2000)),
        ];
        for (name, (sql, w)) in queries {
            out.push(format!("-- {name}: {sql}"));
            let plan = self
                .client
                .query(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"), &w.refs())
                .await
                .map_err(|e| timeout_or(e, "explaining"))?;
            for r in plan {
                let line: String = r.try_get(0).map_err(err("reading a plan"))?;
                out.push(format!("   {line}"));
            }
        }
        Ok(out)
    }
}
