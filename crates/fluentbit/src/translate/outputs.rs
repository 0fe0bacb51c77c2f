//! Fluent Bit outputs → kubetrail outputs: `stdout`, `file`, `http`, `es` (and `opensearch`)
//! → `elasticsearch`, `loki`, `opentelemetry`, `pgsql` → `postgresql`, `nats`. Option names
//! mostly stay (kubetrail took Fluent Bit's); values and defaults that differ are translated,
//! and Fluent Bit's defaults that matter downstream (the index, the Loki job label, the
//! database) are kept.

use kubetrail_core::config::Value;

use super::catalog;
use super::{Component, Ctx, Opened, Props, Who, common_option, open, pass_through, values};
use crate::diag::{List, Severity};
use crate::document::{Property, Section};

pub(crate) fn translate(
    ctx: &mut Ctx,
    s: &Section,
    fb_index: usize,
    index: usize,
) -> Option<Component> {
    let Opened {
        who,
        mut props,
        name,
        name_prop,
    } = open(ctx, s, List::Outputs, fb_index, index)?;
    let (kt_name, ok) = match name.as_str() {
        "stdout" => ("stdout", true),
        "file" => ("file", true),
        "http" => ("http", true),
        "es" | "opensearch" | "elasticsearch" => ("elasticsearch", true),
        "loki" => ("loki", true),
        "opentelemetry" => ("opentelemetry", true),
        "pgsql" | "postgresql" => ("postgresql", true),
        "nats" => ("nats", true),
        other => {
            if let Some(message) = catalog::unsupported_output(other) {
                ctx.error_at(&who, &name_prop, message);
                return None;
            }
            (other, false)
        }
    };
    let mut c = Component::new(List::Outputs, &name, kt_name, s);
    if !ok {
        pass_through(&mut c, props.rest());
        return Some(c);
    }
    let mut fine = true;
    match kt_name {
        "stdout" => stdout(ctx, &who, &mut c, &mut props),
        "file" => fine &= file(ctx, &who, s, &mut c, &mut props),
        "http" => fine &= http(ctx, &who, &mut c, &mut props),
        "elasticsearch" => fine &= elasticsearch(ctx, &who, s, &name, &mut c, &mut props),
        "loki" => fine &= loki(ctx, &who, s, &mut c, &mut props),
        "opentelemetry" => fine &= opentelemetry(ctx, &who, &mut props),
        "postgresql" => fine &= postgresql(ctx, &who, s, &mut c, &mut props),
        "nats" => nats(ctx, &who, s, &mut c),
        _ => {}
    }
    fine &= delivery(ctx, &who, s, &mut c, &mut props);
    for p in props.rest() {
        if !common_option(ctx, &who, &mut c, p) {
            pass_through(&mut c, vec![p]);
        }
    }
    fine.then_some(c)
}

/// Options every output has: retries, the queue's size, TLS.
fn delivery(ctx: &mut Ctx, who: &Who, s: &Section, c: &mut Component, props: &mut Props) -> bool {
    let mut ok = true;
    match ctx.last(who, &props.all("retry_limit")) {
        Some(p) => c.set("retry_limit", p.value.clone(), p),
        None => ctx.note_added(
            who,
            s,
            "retry_limit",
            "Fluent Bit retries a failed batch once by default and then drops it; kubetrail \
             retries without limit (with backoff) unless retry_limit is set, and a batch past \
             the limit goes to the dead-letter file, not away",
        ),
    }
    if let Some(p) = ctx.last(who, &props.all("storage.total_limit_size")) {
        c.set("storage.total_limit_size", p.value.clone(), p);
    }
    for key in ["tls.min_version", "tls.max_version", "tls.ciphers"] {
        for p in props.all(key) {
            ctx.warn_at(
                who,
                p,
                "no effect: kubetrail speaks TLS 1.2 and 1.3 with rustls' safe cipher suites",
            );
        }
    }
    for p in props.all("tls.key_passwd") {
        ctx.error_at(who, p, "not supported: use an unencrypted key file");
        ok = false;
    }
    for key in [
        "tls",
        "tls.verify",
        "tls.debug",
        "tls.vhost",
        "tls.ca_file",
        "tls.ca_path",
        "tls.crt_file",
        "tls.key_file",
    ] {
        if let Some(p) = ctx.last(who, &props.all(key)) {
            c.set(key, p.value.clone(), p);
        }
    }
    ok
}

/// Fluent Bit's `format` of stdout and file: kubetrail writes JSON lines.
fn json_lines_format(
    ctx: &mut Ctx,
    who: &Who,
    c: &mut Component,
    p: &Property,
    what: &str,
) -> bool {
    let Some(v) = ctx.expand(who, p) else {
        return false;
    };
    match v.trim().to_ascii_lowercase().as_str() {
        "json_lines" | "plain" => {
            c.set("format", Value::Scalar(Some("json_lines".into())), p);
            true
        }
        "json" | "json_stream" | "msgpack" | "out_file" => {
            c.set("format", Value::Scalar(Some("json_lines".into())), p);
            ctx.note_at(
                who,
                p,
                "format",
                format!("kubetrail {what} one JSON record per line (json_lines), or pretty"),
            );
            true
        }
        other => {
            ctx.error_at(
                who,
                p,
                format!("format '{other}': kubetrail {what} JSON (json_lines or pretty)"),
            );
            false
        }
    }
}

fn stdout(ctx: &mut Ctx, who: &Who, c: &mut Component, props: &mut Props) {
    match ctx.last(who, &props.all("format")) {
        Some(p) => {
            json_lines_format(ctx, who, c, p, "prints");
        }
        None => {
            c.add("format", "json_lines");
            let (file, line) = (c.file.clone(), c.line);
            ctx.push(
                Severity::Note,
                who,
                &file,
                line,
                Some(("format", Some("format"))),
                "Fluent Bit prints `[0] tag: [time, {record}]` by default; kubetrail prints one \
                 JSON record per line"
                    .into(),
            );
        }
    }
    for key in ["json_date_key", "json_date_format"] {
        for p in props.all(key) {
            ctx.warn_at(
                who,
                p,
                "no effect: every record carries its `time` (RFC 3339)",
            );
        }
    }
}

fn file(ctx: &mut Ctx, who: &Who, s: &Section, c: &mut Component, props: &mut Props) -> bool {
    let mut ok = true;
    let path = ctx.last(who, &props.all("path"));
    let name = ctx.last(who, &props.all("file"));
    match (path, name) {
        (Some(p), name) => {
            c.set("path", p.value.clone(), p);
            if let Some(n) = name {
                c.set("file", n.value.clone(), n);
            }
        }
        (None, Some(n)) => {
            // Fluent Bit writes `file` as it is (a path) when there is no `path`.
            if let Some(v) = ctx.expand(who, n) {
                let v = v.trim().to_string();
                let (dir, base) = match v.rsplit_once('/') {
                    Some(("", b)) => ("/".to_string(), b.to_string()),
                    Some((d, b)) => (d.to_string(), b.to_string()),
                    None => (".".to_string(), v.clone()),
                };
                c.set("path", Value::Scalar(Some(dir)), n);
                c.set("file", Value::Scalar(Some(base)), n);
                ctx.note_at(
                    who,
                    n,
                    "path",
                    "kubetrail's file output takes a directory (path) and a file name (file)",
                );
            } else {
                ok = false;
            }
        }
        (None, None) => {
            c.add("path", ".");
            ctx.note_added(
                who,
                s,
                "path",
                "Fluent Bit writes into the working directory when there is no path",
            );
        }
    }
    if name.is_none() {
        ctx.note_added(
            who,
            s,
            "file",
            "Fluent Bit names the file after each record's tag; kubetrail writes one file \
             (kubetrail.jsonl), rotated by max_size",
        );
    }
    match ctx.last(who, &props.all("format")) {
        Some(p) => ok &= json_lines_format(ctx, who, c, p, "writes"),
        None => {
            let (file, line) = (c.file.clone(), c.line);
            ctx.push(
                Severity::Note,
                who,
                &file,
                line,
                Some(("format", Some("format"))),
                "Fluent Bit writes `tag: [time, {record}]` lines by default; kubetrail writes \
                 one JSON record per line"
                    .into(),
            );
        }
    }
    if let Some(p) = ctx.last(who, &props.all("mkdir")) {
        c.set("mkdir", p.value.clone(), p);
    }
    for key in [
        "delimiter",
        "label_delimiter",
        "template",
        "csv_column_names",
    ] {
        for p in props.all(key) {
            ctx.warn_at(who, p, "no effect: kubetrail writes JSON lines");
        }
    }
    ctx.section(
        Severity::Note,
        who,
        s,
        "each record is written exactly once: the file is cut back to its last acknowledged \
         length at start, and fsynced after every batch (fsync: off to skip that)",
    );
    ok
}

/// Options of Fluent Bit's HTTP-based outputs that kubetrail does not have.
fn http_unsupported(ctx: &mut Ctx, who: &Who, props: &mut Props) -> bool {
    let mut ok = true;
    for p in props.all("proxy") {
        ctx.error_at(
            who,
            p,
            "not supported: kubetrail connects to the server directly",
        );
        ok = false;
    }
    for p in props.rest() {
        let k = p.lower_key();
        if k.starts_with("aws_") || k.starts_with("oauth2.") {
            ctx.error_at(
                who,
                p,
                "not supported: authenticate with http_user/http_passwd, bearer_token(_file) or \
                 a client certificate",
            );
            ok = false;
        } else {
            props.unread(p);
        }
    }
    for key in ["log_response_payload", "trace_output", "trace_error"] {
        for p in props.all(key) {
            ctx.warn_at(
                who,
                p,
                "no effect: refused requests are logged, and their records go to the dead-letter \
                 file",
            );
        }
    }
    ok
}

fn http(ctx: &mut Ctx, who: &Who, c: &mut Component, props: &mut Props) -> bool {
    let mut ok = http_unsupported(ctx, who, props);
    match ctx.last(who, &props.all("format")) {
        Some(p) => match ctx.expand(who, p).map(|v| v.trim().to_ascii_lowercase()) {
            Some(v) if v == "json" || v == "json_lines" => {
                c.set("format", Value::Scalar(Some(v)), p)
            }
            Some(v) if v == "json_stream" => {
                c.set("format", Value::Scalar(Some("json_lines".into())), p);
                ctx.note_at(
                    who,
                    p,
                    "format",
                    "sent as JSON lines (application/x-ndjson)",
                );
            }
            Some(v) => {
                ctx.error_at(
                    who,
                    p,
                    format!(
                        "format '{v}': kubetrail sends JSON (json: one array, json_lines: one \
                         record per line); make sure the receiver takes it"
                    ),
                );
                ok = false;
            }
            None => ok = false,
        },
        None => {
            let (file, line) = (c.file.clone(), c.line);
            ctx.push(
                Severity::Error,
                who,
                &file,
                line,
                None,
                "Fluent Bit's http output sends msgpack by default; kubetrail sends JSON: set \
                 Format json or json_lines (and make sure the receiver takes it)"
                    .into(),
            );
            ok = false;
        }
    }
    for key in ["json_date_key", "json_date_format"] {
        for p in props.all(key) {
            ctx.warn_at(
                who,
                p,
                "no effect: every record carries its `time` (RFC 3339)",
            );
        }
    }
    for key in ["headers_key", "body_key"] {
        for p in props.all(key) {
            ctx.error_at(who, p, "not supported: the body is the records");
            ok = false;
        }
    }
    for p in props.rest() {
        if p.lower_key().starts_with("gelf_") {
            ctx.error_at(who, p, "not supported: kubetrail sends JSON, not GELF");
            ok = false;
        } else {
            props.unread(p);
        }
    }
    for p in props.all("allow_duplicated_headers") {
        ctx.warn_at(who, p, "no effect: each header is sent as written");
    }
    let headers = props.all("header");
    if let Some(first) = headers.first().copied() {
        let hs = values(&headers);
        let value = if hs.len() == 1 {
            Value::Scalar(Some(hs[0].clone()))
        } else {
            Value::List(hs)
        };
        c.set("header", value, first);
    }
    ctx.section(
        Severity::Note,
        who,
        props.section,
        "at least once: every record carries its stable id for the receiver to deduplicate",
    );
    ok
}

fn elasticsearch(
    ctx: &mut Ctx,
    who: &Who,
    s: &Section,
    name: &str,
    c: &mut Component,
    props: &mut Props,
) -> bool {
    let mut ok = http_unsupported(ctx, who, props);
    if name == "opensearch" {
        ctx.section(
            Severity::Note,
            who,
            s,
            "read as kubetrail's elasticsearch output, which speaks OpenSearch's bulk API too",
        );
    }
    let logstash = s.last("logstash_format").is_some();
    if s.last("index").is_none() && !logstash {
        c.add("index", "fluent-bit");
        ctx.note_added(
            who,
            s,
            "index",
            "Fluent Bit's default index; kubetrail's own default is kubetrail-%Y.%m.%d, dated \
             by each record's time",
        );
    }
    if s.last("type").is_none() {
        ctx.note_added(
            who,
            s,
            "suppress_type_name",
            "kubetrail sends no _type (suppress_type_name on, as Elasticsearch 8 and OpenSearch \
             2 need); Fluent Bit sends _type _doc unless Suppress_Type_Name is on",
        );
    }
    if let Some(p) = ctx.last(who, &props.all("http_api_key")) {
        let key = p.scalar().unwrap_or("").trim().to_string();
        c.set(
            "header",
            Value::Scalar(Some(format!("Authorization ApiKey {key}"))),
            p,
        );
    }
    for (key, why) in [
        (
            "generate_id",
            "documents' _id is always the record id (create actions: a retried batch never duplicates)",
        ),
        ("include_tag_key", "every record carries its tag"),
        ("tag_key", "every record carries its tag as `tag`"),
        (
            "time_key_format",
            "time_key is written in RFC 3339 with nanoseconds",
        ),
        (
            "time_key_nanos",
            "time_key is written in RFC 3339 with nanoseconds",
        ),
        ("buffer_size", "answers are read up to a bounded size"),
        (
            "current_time_index",
            "indices are dated by each record's own time",
        ),
    ] {
        for p in props.all(key) {
            ctx.warn_at(who, p, format!("no effect: {why}"));
        }
    }
    for (key, why) in [
        ("id_key", "documents' _id is the record id"),
        (
            "logstash_prefix_key",
            "the index prefix is fixed (logstash_prefix)",
        ),
        ("cloud_id", "give host and port"),
        ("cloud_auth", "give http_user and http_passwd"),
        ("upstream", "give host and port"),
    ] {
        for p in props.all(key) {
            ctx.error_at(who, p, format!("not supported: {why}"));
            ok = false;
        }
    }
    for p in props.all("write_operation") {
        let v = ctx.expand(who, p).unwrap_or_default();
        if !v.trim().eq_ignore_ascii_case("create") {
            ctx.error_at(
                who,
                p,
                "kubetrail writes with create actions and _id = the record id, so that a retried \
                 batch never duplicates: index/update/upsert are not supported",
            );
            ok = false;
        }
    }
    ctx.section(
        Severity::Note,
        who,
        s,
        "exactly once: each document's _id is the record id, written with create (409 counts as \
         delivered)",
    );
    ok
}

/// Fluent Bit's `$a['b']` record accessor as a kubetrail label: `a_b=object.a.b`.
fn accessor_label(item: &str) -> Option<String> {
    let item = item.trim();
    let (name, accessor) = match item.split_once('=') {
        Some((n, a)) if a.trim().starts_with('$') => (Some(n.trim().to_string()), a.trim()),
        _ if item.starts_with('$') => (None, item),
        _ => return None,
    };
    let head_end = accessor.find('[').unwrap_or(accessor.len());
    let mut segs = vec![accessor[1..head_end].to_string()];
    let mut rest = &accessor[head_end..];
    while let Some(r) = rest.strip_prefix('[') {
        let end = r.find(']')?;
        segs.push(r[..end].trim_matches(|c| c == '\'' || c == '"').to_string());
        rest = &r[end + 1..];
    }
    if segs.iter().any(String::is_empty) {
        return None;
    }
    let name = name.unwrap_or_else(|| segs.join("_"));
    let path = format!(
        "$object{}",
        segs.iter().map(|s| format!("['{s}']")).collect::<String>()
    );
    Some(format!("{name}={path}"))
}

fn loki(ctx: &mut Ctx, who: &Who, s: &Section, c: &mut Component, props: &mut Props) -> bool {
    let mut ok = http_unsupported(ctx, who, props);
    let mut dynamic = Vec::new();
    match ctx.last(who, &props.all("labels")) {
        Some(p) => {
            let text = p.scalar().unwrap_or("");
            let mut fixed = Vec::new();
            for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                match accessor_label(item) {
                    Some(l) => dynamic.push(l),
                    None => fixed.push(item.to_string()),
                }
            }
            c.set("labels", Value::Scalar(Some(fixed.join(", "))), p);
        }
        None => {
            c.add("labels", "job=fluent-bit");
            ctx.note_added(
                who,
                s,
                "labels",
                "Fluent Bit's default label, so that queries on {job=\"fluent-bit\"} still find \
                 the records (kubetrail's own default is job=kubetrail)",
            );
        }
    }
    if let Some(p) = ctx.last(who, &props.all("label_keys")) {
        for item in values(&[p]).iter().flat_map(|v| v.split(',')) {
            match accessor_label(item) {
                Some(l) => dynamic.push(l),
                None if item.trim().is_empty() => {}
                None => {
                    ctx.error_at(
                        who,
                        p,
                        format!("'{}' is not a record accessor ($key['sub'])", item.trim()),
                    );
                    ok = false;
                }
            }
        }
        c.set("label_keys", Value::Scalar(Some(dynamic.join(", "))), p);
        ctx.note_at(
            who,
            p,
            "label_keys",
            "Fluent Bit's keys are read inside the original object (object...); kubetrail's own \
             default label_keys (cluster, kind, namespace, source) are replaced",
        );
    } else if !dynamic.is_empty() {
        let p = s.last("labels").expect("dynamic labels come from labels");
        c.set("label_keys", Value::Scalar(Some(dynamic.join(", "))), p);
    } else {
        ctx.note_added(
            who,
            s,
            "label_keys",
            "kubetrail adds the labels cluster, kind, namespace and source (low cardinality): \
             queries on Fluent Bit's labels still match",
        );
    }
    if let Some(p) = ctx.last(who, &props.all("remove_keys")) {
        let mut keys = Vec::new();
        for item in values(&[p]).iter().flat_map(|v| v.split(',')) {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            match accessor_label(item) {
                Some(l) => keys.push(l.split_once('=').map(|x| x.1.to_string()).unwrap_or(l)),
                None => keys.push(format!("object.{item}")),
            }
        }
        c.set("remove_keys", Value::Scalar(Some(keys.join(", "))), p);
    }
    for (key, why) in [
        (
            "auto_kubernetes_labels",
            "records carry no pod metadata (kubernetes filter): use label_keys",
        ),
        ("label_map_path", "use label_keys"),
        ("tenant_id_key", "the tenant is fixed (tenant_id)"),
        ("structured_metadata_map_keys", "use structured_metadata"),
    ] {
        for p in props.all(key) {
            if key == "auto_kubernetes_labels" && ctx.boolean(who, p) == Some(false) {
                continue;
            }
            ctx.error_at(who, p, format!("not supported: {why}"));
            ok = false;
        }
    }
    for p in props.all("drop_single_key") {
        ctx.warn_at(
            who,
            p,
            "no effect: the line is the record (line_format json or key_value)",
        );
    }
    ok
}

fn opentelemetry(ctx: &mut Ctx, who: &Who, props: &mut Props) -> bool {
    let mut ok = http_unsupported(ctx, who, props);
    for key in ["metrics_uri", "traces_uri"] {
        for p in props.all(key) {
            ctx.warn_at(who, p, "no effect: kubetrail sends logs only (logs_uri)");
        }
    }
    for p in props.all("add_label") {
        ctx.warn_at(
            who,
            p,
            "no effect: Fluent Bit adds these labels to metrics; for logs use resource (a map of \
             resource attributes)",
        );
    }
    for (key, why) in [
        ("batch_size", "records are sent in batches of batch.records"),
        (
            "logs_max_resources",
            "records are grouped by the object they are about",
        ),
        (
            "logs_max_scopes",
            "records are grouped by the object they are about",
        ),
        ("http2", "kubetrail sends OTLP over HTTP/1.1"),
    ] {
        for p in props.all(key) {
            ctx.warn_at(who, p, format!("no effect: {why}"));
        }
    }
    for p in props.all("grpc") {
        if ctx.boolean(who, p) == Some(true) {
            ctx.error_at(
                who,
                p,
                "not supported: kubetrail sends OTLP/HTTP (protobuf)",
            );
            ok = false;
        }
    }
    for p in props.rest() {
        let k = p.lower_key();
        if k.starts_with("logs_") && k != "logs_uri" {
            ctx.error_at(
                who,
                p,
                "not supported: kubetrail maps records to log records itself (body_format: \
                 message or record; severity from the Event type or the audit response code)",
            );
            ok = false;
        } else {
            props.unread(p);
        }
    }
    ok
}

fn postgresql(ctx: &mut Ctx, who: &Who, s: &Section, c: &mut Component, props: &mut Props) -> bool {
    let mut ok = true;
    if s.last("database").is_none() {
        c.add("database", "fluentbit");
        ctx.note_added(
            who,
            s,
            "database",
            "Fluent Bit's default database (kubetrail's own default is kubetrail)",
        );
    }
    match ctx.last(who, &props.all("table")) {
        Some(p) => {
            c.set("table", p.value.clone(), p);
            ctx.warn_at(
                who,
                p,
                "kubetrail's table has its own columns (id, time, kind, namespace, ..., record \
                 jsonb) and is created if missing; a table Fluent Bit made (tag, time, data) \
                 cannot take them: give a new name",
            );
        }
        None => ctx.note_added(
            who,
            s,
            "table",
            "kubetrail writes to its own table, kubetrail_records (id, time, kind, namespace, \
             ..., record jsonb), created if missing; Fluent Bit's is fluentbit (tag, time, data)",
        ),
    }
    for (key, why) in [
        (
            "async",
            "each batch is one statement, acknowledged when committed",
        ),
        ("min_pool_size", "kubetrail keeps one connection per output"),
        ("max_pool_size", "kubetrail keeps one connection per output"),
        ("timestamp_key", "the time column is each record's time"),
    ] {
        for p in props.all(key) {
            ctx.warn_at(who, p, format!("no effect: {why}"));
        }
    }
    for p in props.all("cockroachdb") {
        if ctx.boolean(who, p) == Some(true) {
            ctx.error_at(who, p, "not supported: kubetrail writes to PostgreSQL");
            ok = false;
        }
    }
    ctx.section(
        Severity::Note,
        who,
        s,
        "exactly once: a batch is one INSERT ... ON CONFLICT (id) DO NOTHING",
    );
    ok
}

fn nats(ctx: &mut Ctx, who: &Who, s: &Section, c: &mut Component) {
    if s.last("stream").is_none() {
        c.add("stream", "");
    }
    if s.last("subject").is_none() {
        c.add("subject", "{tag}");
    }
    ctx.note_added(
        who,
        s,
        "stream",
        "Fluent Bit publishes plain NATS messages with the tag as subject; so does this output \
         (dots in the tag become '_'). Without stream and subject, kubetrail publishes to \
         JetStream, each message acknowledged and deduplicated by its record id",
    );
}
