//! A SQLite store kept in several files (see `kubetrail_activity::shards`): every read runs
//! on each file and the answers are merged in the order one file would have given them.
//!
//! Positions are the store's across its files, so `(time, seq)` orders records from all of
//! them. A timeline read first asks each file how far it has committed (`through`) and reads
//! up to the smallest of those: a record there is committed in every file that could hold
//! one before it, so a live reader following from that position misses nothing, and a page
//! never shows a record a following read would show again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;

use super::sqlite::Sqlite;
use super::{Backend, ObjectKey, Row, TimelineSql, Window};
use crate::QueryError;
use crate::spec::Order;

/// Opens the store named by `path` (its first file): one file as it is, several through
/// [`Shards`].
pub(crate) fn open(path: &Path, timeout: Duration) -> Result<Arc<dyn Backend>, QueryError> {
    // Opened (and, if written by an earlier version, upgraded) first: its table `shard`
    // names the other files.
    let first = Sqlite::open(path, timeout)?;
    let files = kubetrail_activity::shard_files(path)?;
    if files.len() <= 1 {
        return Ok(Arc::new(first));
    }
    // The readers' page cache (8 MiB a connection) shared between the files, as the
    // writer's is: a store in more files costs no more memory to read.
    let kib = (kubetrail_activity::schema::READER_CACHE_KIB / files.len() as u32).max(1024);
    let mut shards = vec![first.with_cache_kib(kib)?];
    for f in &files[1..] {
        shards.push(Sqlite::open(f, timeout)?.with_cache_kib(kib)?);
    }
    Ok(Arc::new(Shards { shards }))
}

/// A store in several files.
pub(crate) struct Shards {
    shards: Vec<Sqlite>,
}

/// The newest first (`time`, then `seq`, descending), as one file's reads answer.
fn newest_first(a: &Row, b: &Row) -> std::cmp::Ordering {
    (b.time, b.seq).cmp(&(a.time, a.seq))
}

/// Every file's answer merged in `cmp`'s order, at most `limit`.
fn merged(
    parts: Vec<Vec<Row>>,
    cmp: fn(&Row, &Row) -> std::cmp::Ordering,
    limit: usize,
) -> Vec<Row> {
    let mut all: Vec<Row> = parts.into_iter().flatten().collect();
    all.sort_by(cmp);
    all.truncate(limit);
    all
}

#[async_trait::async_trait]
impl Backend for Shards {
    async fn timeline(&self, q: &TimelineSql) -> Result<(Vec<Row>, i64), QueryError> {
        let through = try_join_all(self.shards.iter().map(Sqlite::newest))
            .await?
            .into_iter()
            .min()
            .unwrap_or(0);
        let upto = q.upto.map_or(through, |u| u.min(through));
        let mut each = q.clone();
        each.upto = Some(upto);
        let parts = try_join_all(self.shards.iter().map(|s| s.timeline(&each))).await?;
        let rows: Vec<Vec<Row>> = parts.into_iter().map(|(rows, _)| rows).collect();
        let cmp: fn(&Row, &Row) -> std::cmp::Ordering = match (q.after, q.order) {
            (Some(_), _) => |a, b| a.seq.cmp(&b.seq),
            (None, Order::Newest) => newest_first,
            (None, Order::Oldest) => |a, b| (a.time, a.seq).cmp(&(b.time, b.seq)),
        };
        Ok((merged(rows, cmp, q.limit as usize), upto))
    }

    async fn object_rows(
        &self,
        key: &ObjectKey,
        w: Window,
        limit: usize,
    ) -> Result<Vec<Row>, QueryError> {
        let parts = try_join_all(self.shards.iter().map(|s| s.object_rows(key, w, limit))).await?;
        Ok(merged(parts, newest_first, limit))
    }

    async fn uid_rows(&self, uid: &str, w: Window, limit: usize) -> Result<Vec<Row>, QueryError> {
        let parts = try_join_all(self.shards.iter().map(|s| s.uid_rows(uid, w, limit))).await?;
        Ok(merged(parts, newest_first, limit))
    }

    async fn owned_keys(
        &self,
        owner_uid: &str,
        w: Window,
        limit: usize,
    ) -> Result<Vec<ObjectKey>, QueryError> {
        let parts = try_join_all(
            self.shards
                .iter()
                .map(|s| s.owned_keys_timed(owner_uid, w, limit)),
        )
        .await?;
        // An object's records may be in several files: its first record's time is the
        // earliest of theirs.
        let mut first: HashMap<ObjectKey, i64> = HashMap::new();
        for (key, t) in parts.into_iter().flatten() {
            first
                .entry(key)
                .and_modify(|e| *e = (*e).min(t))
                .or_insert(t);
        }
        let mut keys: Vec<(ObjectKey, i64)> = first.into_iter().collect();
        keys.sort_by(|(ka, ta), (kb, tb)| {
            (ta, &ka.resource, &ka.name, &ka.namespace).cmp(&(
                tb,
                &kb.resource,
                &kb.name,
                &kb.namespace,
            ))
        });
        keys.truncate(limit);
        Ok(keys.into_iter().map(|(k, _)| k).collect())
    }

    async fn namespaces(
        &self,
        resource: &str,
        name: &str,
        w: Window,
    ) -> Result<Vec<Option<String>>, QueryError> {
        let parts =
            try_join_all(self.shards.iter().map(|s| s.namespaces(resource, name, w))).await?;
        let mut out: Vec<Option<String>> = Vec::new();
        for ns in parts.into_iter().flatten() {
            if !out.contains(&ns) {
                out.push(ns);
            }
        }
        out.truncate(50);
        Ok(out)
    }

    async fn any_of_kind(&self, kind: &str, w: Window) -> Result<bool, QueryError> {
        for s in &self.shards {
            if s.any_of_kind(kind, w).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn gaps(&self, w: Window, limit: usize) -> Result<Vec<Row>, QueryError> {
        let parts = try_join_all(self.shards.iter().map(|s| s.gaps(w, limit))).await?;
        Ok(merged(parts, newest_first, limit))
    }

    async fn record(&self, id: &str) -> Result<Option<Row>, QueryError> {
        // The writer put it in one file, by its id; looked for in all, so that the reader
        // does not depend on how.
        let parts = try_join_all(self.shards.iter().map(|s| s.record(id))).await?;
        Ok(parts.into_iter().flatten().next())
    }

    async fn explain(&self, key: &ObjectKey) -> Result<Vec<String>, QueryError> {
        let mut out = vec![format!(
            "(a store in {} files: each read runs on every file, the answers merged; the plans \
             are the first file's, the others' are alike)",
            self.shards.len()
        )];
        if let Some(first) = self.shards.first() {
            out.extend(first.explain(key).await?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Cursor, Position};
    use kubetrail_activity::{ShardedWriter, WriterOptions, shard_path};

    /// Record `i`: an audit event (raw, as the apiserver writes it) creating pod `web-{i%10}`
    /// for ReplicaSet `rs-{i%3}`, or updating it as alice or bob, two records a second; every
    /// 25th a gap record.
    fn record(i: usize) -> (String, String) {
        let id = format!("r{i:04}");
        let s = i / 2;
        let t = format!(
            "2026-12-06T2{}:{:02}:{:02}.000000Z",
            s / 3600,
            (s / 60) % 60,
            s % 60
        );
        if i % 25 == 24 {
            let rec = format!(
                r#"{{"id":"{id}","time":"{t}","kind":"gap","source":"events.0","reason":"expired"}}"#
            );
            return (id, rec);
        }
        let name = format!("web-{}", i % 10);
        let (verb, user, code) = match i % 4 {
            0 => (
                "create",
                "system:serviceaccount:kube-system:replicaset-controller",
                201,
            ),
            1 => ("update", "alice", 200),
            2 => ("delete", "bob", 403),
            _ => ("patch", "bob", 200),
        };
        let rec = format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"{id}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/shop/pods/{name}","verb":"{verb}","user":{{"username":"{user}","groups":["team-{g}","system:authenticated"]}},"objectRef":{{"resource":"pods","namespace":"shop","name":"{name}","apiVersion":"v1"}},"responseStatus":{{"code":{code}}},"responseObject":{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"shop","uid":"u-{name}","ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"rs-{o}","uid":"rs-{o}","controller":true}}]}}}},"requestReceivedTimestamp":"{t}","stageTimestamp":"{t}"}}"#,
            g = i % 2,
            o = i % 3
        );
        (id, rec)
    }

    /// The same records, in the same batches, in a store of one file and in one of three.
    fn stores(dir: &Path, n: usize) -> (Sqlite, Arc<dyn Backend>) {
        let recs: Vec<(String, String)> = (0..n).map(record).collect();
        for (name, count) in [("one.db", 1), ("three.db", 3)] {
            let mut w =
                ShardedWriter::open(&dir.join(name), count, &WriterOptions::default()).unwrap();
            for batch in recs.chunks(37) {
                w.insert(batch.iter().map(|(i, r)| (i.as_str(), r.as_bytes())), 0)
                    .unwrap();
            }
        }
        assert!(shard_path(&dir.join("three.db"), 2).exists());
        let t = Duration::from_secs(10);
        (
            Sqlite::open(&dir.join("one.db"), t).unwrap(),
            open(&dir.join("three.db"), t).unwrap(),
        )
    }

    fn keys(rows: &[Row]) -> Vec<(i64, String, i64)> {
        rows.iter().map(|r| (r.seq, r.id.clone(), r.time)).collect()
    }

    /// Every read answers from three files as from one holding the same records.
    #[tokio::test]
    async fn three_files_answer_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let (one, three) = stores(dir.path(), 500);
        let all = Window::default();
        let some = Window {
            since: Some(1_796_587_200_000_000_000 + 40 * 1_000_000_000),
            until: Some(1_796_587_200_000_000_000 + 150 * 1_000_000_000),
        };
        let mut queries = vec![TimelineSql {
            limit: 10,
            ..TimelineSql::default()
        }];
        let base = queries[0].clone();
        queries.push(TimelineSql {
            order: Order::Oldest,
            ..base.clone()
        });
        queries.push(TimelineSql {
            user: Some("bob".into()),
            failed: true,
            ..base.clone()
        });
        queries.push(TimelineSql {
            group: Some("team-1".into()),
            order: Order::Oldest,
            ..base.clone()
        });
        queries.push(TimelineSql {
            resource: Some("pods".into()),
            name: Some("web-3".into()),
            window: some,
            ..base.clone()
        });
        queries.push(TimelineSql {
            kind: Some("gap"),
            limit: 1000,
            ..base.clone()
        });
        queries.push(TimelineSql {
            after: Some(Position(200)),
            limit: 25,
            ..base.clone()
        });
        for q in &queries {
            let (a, pa) = one.timeline(q).await.unwrap();
            let (b, pb) = three.timeline(q).await.unwrap();
            assert!(!a.is_empty(), "{q:?}");
            assert_eq!(keys(&a), keys(&b), "{q:?}");
            assert_eq!(pa, pb, "{q:?}");
        }
        // Paging through the whole timeline by cursor, both ways.
        for order in [Order::Newest, Order::Oldest] {
            let mut pages: Vec<Vec<Vec<(i64, String, i64)>>> = Vec::new();
            for store in [&one as &dyn Backend, three.as_ref()] {
                let mut q = TimelineSql {
                    order,
                    limit: 33,
                    ..TimelineSql::default()
                };
                let mut got = Vec::new();
                loop {
                    let (rows, _) = store.timeline(&q).await.unwrap();
                    let Some(last) = rows.last() else { break };
                    q.cursor = Some(Cursor {
                        time: last.time,
                        position: last.seq,
                    });
                    got.push(keys(&rows));
                }
                pages.push(got);
            }
            assert_eq!(pages[0], pages[1]);
            assert_eq!(pages[0].iter().map(Vec::len).sum::<usize>(), 500);
        }
        for name in ["web-0", "web-7"] {
            let key = ObjectKey {
                resource: "pods".into(),
                name: name.into(),
                namespace: Some(Some("shop".into())),
            };
            for (w, limit) in [(all, 1000), (all, 7), (some, 1000)] {
                let a = one.object_rows(&key, w, limit).await.unwrap();
                assert!(!a.is_empty());
                assert_eq!(
                    keys(&a),
                    keys(&three.object_rows(&key, w, limit).await.unwrap())
                );
                let uid = format!("u-{name}");
                let a = one.uid_rows(&uid, w, limit).await.unwrap();
                assert_eq!(
                    keys(&a),
                    keys(&three.uid_rows(&uid, w, limit).await.unwrap())
                );
            }
            assert_eq!(
                one.namespaces("pods", name, all).await.unwrap(),
                three.namespaces("pods", name, all).await.unwrap()
            );
        }
        for (owner, limit) in [("rs-1", 100), ("rs-2", 3)] {
            let a = one.owned_keys(owner, all, limit).await.unwrap();
            assert_eq!(a.len(), limit.min(10));
            assert_eq!(a, three.owned_keys(owner, all, limit).await.unwrap());
        }
        for kind in ["gap", "k8s_audit", "k8s_event"] {
            assert_eq!(
                one.any_of_kind(kind, all).await.unwrap(),
                three.any_of_kind(kind, all).await.unwrap(),
                "{kind}"
            );
        }
        assert_eq!(
            keys(&one.gaps(all, 5).await.unwrap()),
            keys(&three.gaps(all, 5).await.unwrap())
        );
        for id in ["r0000", "r0333", "r0499", "none"] {
            let a = one.record(id).await.unwrap().map(|r| (r.seq, r.record));
            assert_eq!(
                a,
                three.record(id).await.unwrap().map(|r| (r.seq, r.record)),
                "{id}"
            );
        }
    }

    /// While one file has not committed its part of a batch, readers stop before the batch:
    /// a live reader gets none of it until every file has it, then all of it.
    #[tokio::test]
    async fn reads_stop_where_every_file_has_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (_, three) = stores(dir.path(), 100);
        let path = dir.path().join("three.db");
        let mut w = ShardedWriter::open(&path, 3, &WriterOptions::default()).unwrap();
        let live = |after: i64| TimelineSql {
            after: Some(Position(after)),
            limit: 1000,
            ..TimelineSql::default()
        };
        let (rows, position) = three.timeline(&live(0)).await.unwrap();
        assert_eq!((rows.len(), position), (100, 100));
        let refuse = rusqlite::Connection::open(shard_path(&path, 2)).unwrap();
        refuse
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON records BEGIN SELECT RAISE(ABORT, 'no'); END",
            )
            .unwrap();
        let recs: Vec<(String, String)> = (100..160).map(record).collect();
        let batch = || recs.iter().map(|(i, r)| (i.as_str(), r.as_bytes()));
        assert!(w.insert(batch(), 0).is_err());
        // Two files hold parts of records 101-160; the third none.
        let (rows, position) = three.timeline(&live(100)).await.unwrap();
        assert_eq!((rows.len(), position), (0, 100));
        let (page, position) = three
            .timeline(&TimelineSql {
                limit: 1000,
                ..TimelineSql::default()
            })
            .await
            .unwrap();
        assert_eq!((page.len(), position), (100, 100));
        refuse.execute_batch("DROP TRIGGER refuse").unwrap();
        w.insert(batch(), 0).unwrap();
        let (rows, position) = three.timeline(&live(100)).await.unwrap();
        assert_eq!(position, 220, "the batch came again with positions 161-220");
        let mut ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        ids.sort();
        assert_eq!(ids, recs.iter().map(|r| r.0.clone()).collect::<Vec<_>>());
    }
}
