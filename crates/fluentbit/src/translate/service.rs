//! `[SERVICE]` / `service:` → kubetrail's `service` section.

use kubetrail_core::config::Value;

use super::{Component, Ctx, Props, Who, label};
use crate::diag::{List, Severity};
use crate::document::{Property, Section, SectionKind};

/// Service options with no effect in kubetrail, and why.
const NO_EFFECT: &[(&str, &str)] = &[
    (
        "flush",
        "kubetrail delivers each batch as soon as it is durable (outputs' batch.records and \
         batch.bytes bound a delivery)",
    ),
    (
        "health_check",
        "kubetrail's /healthz and /readyz always answer",
    ),
    (
        "hc_errors_count",
        "kubetrail's /readyz reports each input and queue",
    ),
    (
        "hc_retry_failure_count",
        "kubetrail's /readyz reports each input and queue",
    ),
    (
        "hc_period",
        "kubetrail's /readyz reports each input and queue",
    ),
    (
        "parsers_file",
        "parsers are not read: kubetrail's audit_file reads each line as JSON (tail's Parser \
         must be json)",
    ),
    ("plugins_file", "kubetrail loads no external plugins"),
    (
        "storage.checksum",
        "kubetrail's queue is in its state directory",
    ),
    (
        "storage.max_chunks_up",
        "kubetrail's queues are bounded by storage.total_limit_size",
    ),
    (
        "storage.backlog.mem_limit",
        "kubetrail reads its queues in bounded batches",
    ),
    (
        "storage.backlog.flush_on_shutdown",
        "queued records stay for the next start",
    ),
    (
        "storage.metrics",
        "queue sizes are in /metrics (kubetrail_queue_records, _bytes)",
    ),
    (
        "storage.delete_irrecoverable_chunks",
        "kubetrail's queue is in its state directory",
    ),
    ("storage.inherit", "every kubetrail input is durable"),
    (
        "storage.type",
        "every record is on disk before it is acknowledged",
    ),
    ("coro_stack_size", "kubetrail has no coroutines"),
    (
        "scheduler.cap",
        "retries back off with jitter up to each output's retry_max_backoff",
    ),
    (
        "scheduler.base",
        "retries back off from each output's retry_base_backoff",
    ),
    ("dns.mode", "kubetrail uses the system resolver"),
    ("dns.resolver", "kubetrail uses the system resolver"),
    ("dns.prefer_ipv4", "kubetrail uses the system resolver"),
    (
        "hot_reload",
        "restart kubetrail to change its configuration",
    ),
    (
        "hot_reload.ensure_thread_safety",
        "restart kubetrail to change its configuration",
    ),
    ("json.convert_nan_to_null", "records are JSON as received"),
    ("enable_chunk_trace", "no chunk tracing in kubetrail"),
    ("http_proxy", "not used"),
    ("no_proxy", "not used"),
    ("streams_file", ""),
];

/// Translates the service section (after the pipeline, which may have given `db.sync` and a
/// state directory).
pub(crate) fn translate(ctx: &mut Ctx) -> Component {
    let placeholder = Section {
        kind: SectionKind::Service,
        header: match ctx.doc.format {
            crate::document::Format::Classic => "SERVICE".into(),
            crate::document::Format::Yaml => "service".into(),
        },
        file: std::sync::Arc::from(ctx.doc.path.as_path()),
        line: 0,
        properties: Vec::new(),
    };
    let section = ctx.doc.service.clone().unwrap_or(placeholder);
    let who = Who {
        label: label(ctx.doc, &section, None, 0),
        anchor: Some((List::Service, 0)),
    };
    let mut c = Component::new(List::Service, "", "", &section);
    let mut props = Props::new(&section);

    http_server(ctx, &who, &mut c, &mut props);

    if let Some(p) = ctx.last(&who, &props.all("log_level")) {
        match ctx.expand(&who, p).map(|v| v.trim().to_ascii_lowercase()) {
            Some(v) if v == "warning" => c.set("log_level", Value::Scalar(Some("warn".into())), p),
            Some(_) => c.set("log_level", p.value.clone(), p),
            None => {}
        }
    }
    if let Some(p) = ctx.last(&who, &props.all("grace")) {
        c.set("grace", p.value.clone(), p);
    }
    if let Some(p) = ctx.last(&who, &props.all("daemon"))
        && ctx.boolean(&who, p) == Some(true)
    {
        ctx.error_at(
            &who,
            p,
            "kubetrail runs in the foreground: start it from your service manager",
        );
    }
    if let Some(p) = ctx.last(&who, &props.all("log_file")) {
        ctx.error_at(
            &who,
            p,
            "kubetrail logs to stderr (log_format: text or json): redirect it, or let the \
             container runtime keep it",
        );
    }
    for p in props.all("streams_file") {
        ctx.error_at(
            &who,
            p,
            "kubetrail has no stream processor: use grep, modify and redact filters",
        );
    }
    if let Some(p) = ctx.last(&who, &props.all("storage.path")) {
        c.set("data_dir", p.value.clone(), p);
        ctx.note_at(
            &who,
            p,
            "data_dir",
            "kubetrail keeps its state database (kubetrail.db: checkpoints, dedup keys) and \
             every output's queue in this directory",
        );
    }
    if let Some(p) = ctx.last(&who, &props.all("storage.sync")) {
        let v = ctx.expand(&who, p).unwrap_or_default();
        if !v.trim().eq_ignore_ascii_case("full") {
            ctx.warn_at(
                &who,
                p,
                "kubetrail fsyncs every commit (db.sync: full) unless db.sync says normal; \
                 storage.sync is not read",
            );
        }
    }
    for (key, why) in NO_EFFECT {
        for p in props.all(key) {
            if !why.is_empty() {
                ctx.warn_at(&who, p, format!("no effect: {why}"));
            }
        }
    }
    let rest = props.rest();
    super::pass_through(&mut c, rest);

    state_directory(ctx, &who, &section, &mut c);
    db_sync(ctx, &who, &mut c);
    c
}

/// `http_server` + `http_listen` + `http_port` → `http_listen: address:port`.
fn http_server(ctx: &mut Ctx, who: &Who, c: &mut Component, props: &mut Props) {
    let server = props.all("http_server");
    let listen = props.all("http_listen");
    let port = props.all("http_port");
    let server = ctx.last(who, &server);
    let listen = ctx.last(who, &listen);
    let port = ctx.last(who, &port);
    let on = match server {
        Some(p) => ctx.boolean(who, p),
        None => Some(false),
    };
    match on {
        Some(true) => {}
        Some(false) => {
            for p in listen.iter().chain(port.iter()) {
                ctx.warn_at(who, p, "no effect: http_server is off");
            }
            return;
        }
        None => return,
    }
    let server = server.expect("on implies given");
    let address = match listen {
        Some(p) => match ctx.expand(who, p) {
            Some(a) => a.trim().to_string(),
            None => return,
        },
        None => "0.0.0.0".to_string(),
    };
    let number = match port {
        Some(p) => match ctx.expand(who, p) {
            Some(n) => match n.trim().parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => {
                    ctx.error_at(who, p, format!("'{}' is not a TCP port", n.trim()));
                    return;
                }
            },
            None => return,
        },
        None => 2020,
    };
    let address = if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]")
    } else {
        address
    };
    let from = listen.or(port).unwrap_or(server);
    c.set(
        "http_listen",
        Value::Scalar(Some(format!("{address}:{number}"))),
        from,
    );
    ctx.note_at(
        who,
        from,
        "http_listen",
        "kubetrail serves /metrics (Prometheus), /healthz and /readyz here, not Fluent Bit's \
         /api/v1/... paths",
    );
}

/// The state directory: `storage.path` if given, else the directory of the first input's
/// `db` file (a directory the Fluent Bit deployment already keeps).
fn state_directory(ctx: &mut Ctx, who: &Who, section: &Section, c: &mut Component) {
    if c.has("data_dir") {
        return;
    }
    match ctx.data_dir.clone() {
        Some((dir, p, what)) => {
            c.set("data_dir", Value::Scalar(Some(dir)), &p);
            ctx.note_at(
                who,
                &p,
                "data_dir",
                format!(
                    "the directory of {what}: kubetrail keeps its one state database \
                     (kubetrail.db) and every output's queue here"
                ),
            );
        }
        None => ctx.note_added(
            who,
            section,
            "data_dir",
            "kubetrail keeps its state database and queues in data_dir (default \
             /var/lib/kubetrail): put it on a volume that outlives the process",
        ),
    }
}

/// Inputs' `db.sync` → the service's `db.sync` (one state database for all).
fn db_sync(ctx: &mut Ctx, who: &Who, c: &mut Component) {
    if c.has("db.sync") {
        return;
    }
    let values: Vec<(Property, Who)> = ctx.db_sync.clone();
    let mut strongest: Option<(&str, &Property)> = None;
    for (p, input) in &values {
        let Some(v) = ctx.expand(input, p) else {
            continue;
        };
        let v = v.trim().to_ascii_lowercase();
        let mapped = match v.as_str() {
            "full" | "extra" => "full",
            "normal" => "normal",
            "off" => {
                ctx.warn_at(
                    input,
                    p,
                    "kubetrail does not run without syncing: 'off' is read as 'normal' (survives \
                     a crash of kubetrail, not a power loss)",
                );
                "normal"
            }
            other => {
                ctx.error_at(
                    input,
                    p,
                    format!("'{other}' is not one of: extra, full, normal, off"),
                );
                continue;
            }
        };
        if strongest.is_none() || (mapped == "full" && strongest.is_some_and(|(m, _)| m != "full"))
        {
            strongest = Some((mapped, p));
        }
    }
    if let Some((mapped, p)) = strongest {
        let p = p.clone();
        c.set("db.sync", Value::Scalar(Some(mapped.to_string())), &p);
        ctx.push(
            Severity::Note,
            who,
            &p.file,
            p.line,
            Some((&p.key, Some("db.sync"))),
            "kubetrail has one state database for all inputs: its db.sync is the strongest \
             the inputs ask for"
                .to_string(),
        );
    }
}
