//! The SQL the output runs: the table with its indexes (and the activity columns and
//! indexes `kubetrail who` reads, added to a table made before them), the one-statement
//! batch insert (`unnest` of one array per column, so the statement is prepared once whatever
//! the batch size, and sent with one parameter per column instead of one per value), and the
//! backfill of the activity columns of rows stored before they existed.

use kubetrail_state::QueueItem;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;

use super::config::TableName;
use super::row::{ActivityCols, Row};

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
    for stmt in kubetrail_activity::pg::migration(&table, &base) {
        sql.push_str(&stmt);
        sql.push_str(";\n");
    }
    sql
}

/// The activity columns, as `unnest` parameters: `(column, array type, select expression)`.
const ACTIVITY: &[(&str, &str, &str)] = &[
    ("api_group", "text[]", "r.api_group"),
    ("resource", "text[]", "r.resource"),
    ("subresource", "text[]", "r.subresource"),
    ("obj_namespace", "text[]", "r.obj_namespace"),
    ("obj_name", "text[]", "r.obj_name"),
    ("obj_uid", "text[]", "r.obj_uid"),
    ("owner_uid", "text[]", "r.owner_uid"),
    ("mention_resource", "text[]", "r.mention_resource"),
    ("mention_name", "text[]", "r.mention_name"),
    ("impersonated_user", "text[]", "r.impersonated_user"),
    (
        "user_groups",
        "text[]",
        "CASE WHEN r.user_groups IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text(r.user_groups::jsonb)) END",
    ),
    ("response_code", "int[]", "r.response_code"),
    ("event_type", "text[]", "r.event_type"),
    ("stage", "text[]", "r.stage"),
];

/// The activity columns' names, for an insert's column list.
fn activity_names() -> String {
    ACTIVITY.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")
}

/// The batch insert: parameters are one array per column, in table order, then the
/// activity columns'.
pub fn insert(t: &TableName) -> String {
    let base = 12;
    let params: String = ACTIVITY
        .iter()
        .enumerate()
        .map(|(i, (_, ty, _))| format!(", ${}::{ty}", base + 1 + i))
        .collect();
    let selects: String = ACTIVITY.iter().map(|(_, _, e)| format!(", {e}")).collect();
    format!(
        "INSERT INTO {} (id, time, kind, namespace, object_kind, object_name, username, verb, reason, source, tag, record, {}, activity_version) \
         SELECT r.id, r.time, r.kind, r.namespace, r.object_kind, r.object_name, r.username, r.verb, r.reason, \
         r.source, r.tag, r.record::jsonb{selects}, {version} \
         FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
         $8::text[], $9::text[], $10::text[], $11::text[], $12::text[]{params}) \
         AS r(id, time, kind, namespace, object_kind, object_name, username, verb, reason, source, tag, record, {}) \
         ON CONFLICT (id) DO NOTHING",
        t.sql(),
        activity_names(),
        activity_names(),
        version = kubetrail_activity::pg::ACTIVITY_VERSION,
    )
}

/// The rows whose activity columns are not filled yet (stored before the columns existed),
/// a page at a time: `$1` the page size.
pub fn unfilled(t: &TableName) -> String {
    format!(
        "SELECT id, record::text FROM {} WHERE activity_version IS NULL LIMIT $1",
        t.sql()
    )
}

/// Fills the activity columns of the rows named by `$1` (ids), the columns' arrays after.
pub fn backfill(t: &TableName) -> String {
    let sets: String = ACTIVITY
        .iter()
        .map(|(c, _, e)| format!("{c} = {e}, "))
        .collect();
    let params: String = ACTIVITY
        .iter()
        .enumerate()
        .map(|(i, (_, ty, _))| format!(", ${}::{ty}", 2 + i))
        .collect();
    format!(
        "UPDATE {table} AS t SET {sets}activity_version = {version} \
         FROM unnest($1::text[]{params}) AS r(id, {names}) WHERE t.id = r.id",
        table = t.sql(),
        version = kubetrail_activity::pg::ACTIVITY_VERSION,
        names = activity_names(),
    )
}

/// The activity columns of some rows, as one array per column.
#[derive(Default)]
pub struct ActivityColumns {
    api_group: Vec<Option<String>>,
    resource: Vec<Option<String>>,
    subresource: Vec<Option<String>>,
    obj_namespace: Vec<Option<String>>,
    obj_name: Vec<Option<String>>,
    obj_uid: Vec<Option<String>>,
    owner_uid: Vec<Option<String>>,
    mention_resource: Vec<Option<String>>,
    mention_name: Vec<Option<String>>,
    impersonated_user: Vec<Option<String>>,
    user_groups: Vec<Option<String>>,
    response_code: Vec<Option<i32>>,
    event_type: Vec<Option<String>>,
    stage: Vec<Option<String>>,
}

impl ActivityColumns {
    pub fn push(&mut self, a: ActivityCols) {
        self.api_group.push(a.api_group);
        self.resource.push(a.resource);
        self.subresource.push(a.subresource);
        self.obj_namespace.push(a.obj_namespace);
        self.obj_name.push(a.obj_name);
        self.obj_uid.push(a.obj_uid);
        self.owner_uid.push(a.owner_uid);
        self.mention_resource.push(a.mention_resource);
        self.mention_name.push(a.mention_name);
        self.impersonated_user.push(a.impersonated_user);
        self.user_groups.push(a.user_groups);
        self.response_code.push(a.response_code);
        self.event_type.push(a.event_type);
        self.stage.push(a.stage);
    }

    /// The parameters, in `ACTIVITY`'s order.
    pub fn params(&self) -> [&(dyn ToSql + Sync); 14] {
        [
            &self.api_group,
            &self.resource,
            &self.subresource,
            &self.obj_namespace,
            &self.obj_name,
            &self.obj_uid,
            &self.owner_uid,
            &self.mention_resource,
            &self.mention_name,
            &self.impersonated_user,
            &self.user_groups,
            &self.response_code,
            &self.event_type,
            &self.stage,
        ]
    }
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
    activity: ActivityColumns,
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
            c.activity.push(r.activity);
        }
        c
    }

    /// The statement's parameters, in `insert`'s order.
    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut p: Vec<&(dyn ToSql + Sync)> = vec![
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
        ];
        p.extend(self.activity.params());
        p
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
        assert_eq!(
            ddl.matches("CREATE INDEX IF NOT EXISTS").count(),
            7 + kubetrail_activity::pg::INDEXES.len()
        );
        assert!(
            ddl.contains("ADD COLUMN IF NOT EXISTS seq bigint GENERATED BY DEFAULT AS IDENTITY")
        );
        assert!(ddl.contains("\"kubetrail_records_object_idx\" ON \"audit\".\"kubetrail_records\" (object_kind, object_name)"));
        let ins = insert(&t);
        assert!(ins.contains("ON CONFLICT (id) DO NOTHING"));
        assert_eq!(ins.matches("::text[]").count(), 11 + 13);
        assert!(ins.contains("activity_version) SELECT"));
        let bf = backfill(&t);
        assert!(bf.starts_with(
            "UPDATE \"audit\".\"kubetrail_records\" AS t SET api_group = r.api_group"
        ));
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
        assert_eq!(c.params().len(), 26);
    }
}
