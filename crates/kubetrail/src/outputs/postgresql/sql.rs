//! The SQL the output runs: the table with its indexes, and the one-statement batch insert
//! (`unnest` of one array per column, so the statement is prepared once whatever the batch
//! size, and sent with twelve parameters instead of twelve per row).

use kubetrail_state::QueueItem;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;

use super::config::TableName;
use super::row::Row;

/// Creates the table and its indexes if missing.
pub fn create_table(t: &TableName) -> String {
    let table = t.sql();
    // Index names derive from the table's; cut so that the longest suffix stays within
    // PostgreSQL's 63-byte identifiers (a silently truncated name could collide).
    let base: String = t.name.chars().take(40).collect();
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {table} (\
         id text PRIMARY KEY, time timestamptz, kind text, namespace text, object_kind text, \
         object_name text, username text, verb text, reason text, source text, tag text, \
         record jsonb NOT NULL);\n"
    );
    for (suffix, cols) in [
        ("time", "time"),
        ("kind_time", "kind, time"),
        ("namespace", "namespace"),
        ("object", "object_kind, object_name"),
        ("username", "username"),
        ("verb", "verb"),
        ("reason", "reason"),
    ] {
        sql.push_str(&format!(
            "CREATE INDEX IF NOT EXISTS \"{base}_{suffix}_idx\" ON {table} ({cols});\n"
        ));
    }
    sql
}

/// The batch insert: parameters are one array per column, in table order.
pub fn insert(t: &TableName) -> String {
    format!(
        "INSERT INTO {} (id, time, kind, namespace, object_kind, object_name, username, verb, reason, source, tag, record) \
         SELECT r.id, r.time, r.kind, r.namespace, r.object_kind, r.object_name, r.username, r.verb, r.reason, \
         r.source, r.tag, r.record::jsonb \
         FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
         $8::text[], $9::text[], $10::text[], $11::text[], $12::text[]) \
         AS r(id, time, kind, namespace, object_kind, object_name, username, verb, reason, source, tag, record) \
         ON CONFLICT (id) DO NOTHING",
        t.sql()
    )
}

/// A batch as one array per column.
#[derive(Default)]
pub struct Columns {
    id: Vec<String>,
    time: Vec<Option<OffsetDateTime>>,
    kind: Vec<Option<String>>,
    namespace: Vec<Option<String>>,
    object_kind: Vec<Option<String>>,
    object_name: Vec<Option<String>>,
    username: Vec<Option<String>>,
    verb: Vec<Option<String>>,
    reason: Vec<Option<String>>,
    source: Vec<Option<String>>,
    tag: Vec<Option<String>>,
    record: Vec<String>,
}

impl Columns {
    pub fn from_batch(batch: &[QueueItem]) -> Columns {
        let mut c = Columns::default();
        for item in batch {
            let r = Row::from_record(&item.id, &item.data);
            c.id.push(r.id);
            c.time.push(r.time);
            c.kind.push(r.kind);
            c.namespace.push(r.namespace);
            c.object_kind.push(r.object_kind);
            c.object_name.push(r.object_name);
            c.username.push(r.username);
            c.verb.push(r.verb);
            c.reason.push(r.reason);
            c.source.push(r.source);
            c.tag.push(r.tag);
            c.record.push(r.record);
        }
        c
    }

    /// The statement's parameters, in `insert`'s order.
    pub fn params(&self) -> [&(dyn ToSql + Sync); 12] {
        [
            &self.id,
            &self.time,
            &self.kind,
            &self.namespace,
            &self.object_kind,
            &self.object_name,
            &self.username,
            &self.verb,
            &self.reason,
            &self.source,
            &self.tag,
            &self.record,
        ]
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_quote_the_table_and_name_every_column() {
        let t = TableName::parse("audit.kubetrail_records").unwrap();
        let ddl = create_table(&t);
        assert!(ddl.starts_with(
            "CREATE TABLE IF NOT EXISTS \"audit\".\"kubetrail_records\" (id text PRIMARY KEY"
        ));
        assert_eq!(ddl.matches("CREATE INDEX IF NOT EXISTS").count(), 7);
        assert!(ddl.contains("\"kubetrail_records_object_idx\" ON \"audit\".\"kubetrail_records\" (object_kind, object_name)"));
        let ins = insert(&t);
        assert!(ins.contains("ON CONFLICT (id) DO NOTHING"));
        assert_eq!(ins.matches("::text[]").count(), 11);
        let long = TableName::parse(&"t".repeat(63)).unwrap();
        for line in create_table(&long).lines().skip(1) {
            let name = line.split('"').nth(1).unwrap();
            assert!(name.len() <= 63, "{name}");
        }
    }

    #[test]
    fn columns_follow_the_batch() {
        let batch: Vec<QueueItem> = (0..3)
            .map(|i| QueueItem {
                seq: i,
                id: format!("id-{i}"),
                data: format!(
                    r#"{{"id":"id-{i}","kind":"k8s_event","source":"s","tag":"t","reason":"r{i}"}}"#
                )
                .into_bytes()
                .into(),
            })
            .collect();
        let c = Columns::from_batch(&batch);
        assert_eq!(c.len(), 3);
        assert_eq!(c.id, vec!["id-0", "id-1", "id-2"]);
        assert_eq!(c.reason[2].as_deref(), Some("r2"));
        assert_eq!(c.params().len(), 12);
    }
}
