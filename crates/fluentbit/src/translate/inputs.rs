//! Fluent Bit inputs → kubetrail inputs: `kubernetes_events` (the same), `tail` of the audit
//! log → `audit_file`, `http` → `audit_webhook`.

use kubetrail_core::config::Value;

use super::catalog;
use super::{Component, Ctx, Opened, Props, Who, common_option, open, pass_through};
use crate::diag::{List, Severity};
use crate::document::{Property, Section};

/// Input options Fluent Bit has for every input, with no effect in kubetrail.
fn input_common_no_effect(ctx: &mut Ctx, who: &Who, p: &Property) -> bool {
    let why = match p.lower_key().as_str() {
        "mem_buf_limit" => {
            "kubetrail's memory is bounded by batch sizes; a full output queue \
             (storage.total_limit_size) pauses the input"
        }
        "storage.type" => "every record is on disk (the output queues) before it is acknowledged",
        "storage.pause_on_chunks_overlimit" => {
            "a full output queue (storage.total_limit_size) pauses the input"
        }
        "routable" => "every input is routed by its tag",
        _ => return false,
    };
    ctx.warn_at(who, p, format!("no effect: {why}"));
    true
}

/// Translates one input section; `None` when it cannot become a kubetrail input (the reason
/// is in the diagnostics).
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
    } = open(ctx, s, List::Inputs, fb_index, index)?;
    let mut c = match name.as_str() {
        "kubernetes_events" => kubernetes_events(ctx, &who, s, &mut props),
        "tail" => tail(ctx, &who, s, &mut props)?,
        "http" => http(ctx, &who, s, &mut props)?,
        other => {
            if let Some(message) = catalog::unsupported_input(other) {
                ctx.error_at(&who, &name_prop, message);
                return None;
            }
            Component::new(List::Inputs, other, other, s)
        }
    };
    for p in props.all("tag") {
        if !c.has("tag") {
            c.set("tag", p.value.clone(), p);
        }
    }
    for p in props.rest() {
        if !common_option(ctx, &who, &mut c, p) && !input_common_no_effect(ctx, &who, p) {
            pass_through(&mut c, vec![p]);
        }
    }
    Some(c)
}

/// `db`: kubetrail's checkpoints live in its one state database; the file's directory may
/// become the state directory.
fn state_database(ctx: &mut Ctx, who: &Who, props: &mut Props, what: &str) {
    for p in props.all("db") {
        ctx.note_at(
            who,
            p,
            "db",
            format!(
                "{what} are kept in kubetrail's state database (kubetrail.db in service.data_dir), \
                 committed with the records themselves; this file is not used"
            ),
        );
        if ctx.data_dir.is_none() {
            let raw = p.scalar().unwrap_or("");
            if let Some((dir, _)) = raw.rsplit_once('/') {
                let dir = if dir.is_empty() { "/" } else { dir };
                ctx.data_dir = Some((
                    dir.to_string(),
                    p.clone(),
                    format!("{}'s {} file", who.label, p.key),
                ));
            }
        }
    }
    for p in props.all("db.sync") {
        ctx.db_sync.push((p.clone(), who.clone()));
    }
}

fn kubernetes_events(ctx: &mut Ctx, who: &Who, s: &Section, props: &mut Props) -> Component {
    let mut c = Component::new(List::Inputs, "kubernetes_events", "kubernetes_events", s);
    let had_db = s.last("db").is_some();
    state_database(
        ctx,
        who,
        props,
        "the Events' resourceVersions and dedup keys",
    );
    for p in props.all("tls") {
        ctx.warn_at(
            who,
            p,
            "no effect: TLS follows kube_url (https:// or http://)",
        );
    }
    for key in [
        "kube_url",
        "kube_ca_file",
        "kube_ca_path",
        "kube_token_file",
        "kube_token_ttl",
        "kube_retention_time",
        "kube_namespace",
        "kube_watch_timeout",
        "interval_sec",
        "interval_nsec",
        "tls.debug",
        "tls.verify",
        "tls.vhost",
    ] {
        if let Some(p) = ctx.last(who, &props.all(key)) {
            c.set(key, p.value.clone(), p);
        }
    }
    if let Some(p) = ctx.last(who, &props.all("kube_request_limit")) {
        c.set("kube_request_limit", p.value.clone(), p);
        if p.scalar().map(str::trim) == Some("0") {
            ctx.note_at(
                who,
                p,
                "kube_request_limit",
                "Fluent Bit lists without paging at 0; kubetrail always pages (0 means its \
                 default page size, 500)",
            );
        }
    }
    if c.has("interval_sec") || c.has("interval_nsec") {
        let p = s
            .last("interval_sec")
            .or(s.last("interval_nsec"))
            .expect("has");
        ctx.note_at(
            who,
            p,
            "interval_sec",
            "in kubetrail this is the first retry delay (retries back off up to 30 s); the watch \
             itself streams without polling",
        );
    }
    if s.last("api").is_none() {
        c.add("api", "core/v1");
        ctx.note_added(
            who,
            s,
            "api",
            "Fluent Bit reads core/v1 Events; so does this input (kubetrail's own default is \
             events.k8s.io/v1)",
        );
    }
    let updates = if had_db {
        "Fluent Bit with db keeps only the first sighting of each Event (a repeat that bumps \
         count is dropped, fluent/fluent-bit#8678); kubetrail records every occurrence (each \
         new resourceVersion) unless `updates: first`"
    } else {
        "kubetrail records every occurrence of an Event (each new resourceVersion), as Fluent \
         Bit does without db, and resumes after a restart where it stopped instead of sending \
         the last hour again (`updates: first` keeps only the first sighting)"
    };
    ctx.note_added(who, s, "updates", updates);
    ctx.section(
        Severity::Note,
        who,
        s,
        "records are kubetrail's JSON (id, time, kind, namespace, reason, ...) with the Event \
         under `object`; `format: raw` makes the record the Event alone, as Fluent Bit emits it. \
         Each is delivered exactly once across restarts",
    );
    c
}

/// `Tag` with `*`: Fluent Bit puts each file's path there (`/` as `.`); kubetrail's audit_file
/// has one tag: the glob's directory in its place, so the outputs' `Match` still takes it.
fn tail_tag(ctx: &mut Ctx, who: &Who, c: &mut Component, props: &mut Props) {
    let Some(p) = ctx.last(who, &props.all("tag")) else {
        return;
    };
    let Some(tag) = p.scalar() else {
        return;
    };
    if !tag.contains('*') {
        c.set("tag", p.value.clone(), p);
        return;
    }
    let path = c.get("path").unwrap_or("");
    let dir: String = path
        .split('/')
        .take_while(|seg| !seg.contains(['*', '?', '[']))
        .filter(|seg| !seg.is_empty())
        .collect::<Vec<_>>()
        .join(".");
    let filled = tag.replacen('*', &dir, 1).replace('*', "");
    let filled = filled.trim_end_matches('.').to_string();
    c.set("tag", Value::Scalar(Some(filled.clone())), p);
    ctx.note_at(
        who,
        p,
        "tag",
        format!(
            "Fluent Bit puts each file's path in place of '*'; kubetrail's audit_file has one tag \
             for all its files: '{filled}'"
        ),
    );
}

fn tail(ctx: &mut Ctx, who: &Who, s: &Section, props: &mut Props) -> Option<Component> {
    let mut c = Component::new(List::Inputs, "tail", "audit_file", s);
    let mut ok = true;
    // The parser decides whether this tail reads an audit log.
    let parsers = props.all("parser");
    match ctx.last(who, &parsers) {
        Some(p) => {
            if let Some(v) = ctx.expand(who, p) {
                if v.trim().eq_ignore_ascii_case("json") {
                    ctx.note_at(
                        who,
                        p,
                        "path",
                        "each line is read as one audit event (JSON); a line that is not one \
                         becomes an error record",
                    );
                } else {
                    ctx.error_at(
                        who,
                        p,
                        format!(
                            "parser '{}': kubetrail's tail reads the apiserver's audit log, one \
                             JSON object per line (Parser json)",
                            v.trim()
                        ),
                    );
                    ok = false;
                }
            }
        }
        None => {
            let multiline = s.last("multiline.parser").is_some() || s.last("multiline").is_some();
            if !multiline {
                ctx.section(
                    Severity::Error,
                    who,
                    s,
                    "this tail has no Parser: kubetrail's tail (audit_file) reads the apiserver's \
                     audit log, one JSON object per line; add `Parser json` if this file is one \
                     (without a parser Fluent Bit keeps each line as a string under 'log')",
                );
                ok = false;
            }
        }
    }
    for key in [
        "multiline",
        "multiline.parser",
        "multiline_flush",
        "parser_firstline",
        "docker_mode",
        "docker_mode_flush",
        "docker_mode_parser",
    ] {
        for p in props.all(key) {
            ctx.error_at(
                who,
                p,
                "multiline and container-log parsing are not supported: kubetrail's tail reads \
                 the apiserver's audit log, one JSON object per line",
            );
            ok = false;
        }
    }
    if let Some(p) = ctx.last(who, &props.all("path")) {
        if p.scalar().is_some_and(|v| v.contains(',')) {
            ctx.error_at(
                who,
                p,
                "several patterns: kubetrail's audit_file takes one glob; write one tail per \
                 pattern",
            );
            ok = false;
        }
        c.set("path", p.value.clone(), p);
    }
    tail_tag(ctx, who, &mut c, props);
    if let Some(p) = ctx.last(who, &props.all("exclude_path")) {
        c.set("exclude_path", p.value.clone(), p);
    }
    state_database(ctx, who, props, "file offsets");
    for key in ["db.locking", "db.journal_mode"] {
        for p in props.all(key) {
            ctx.warn_at(
                who,
                p,
                "no effect: kubetrail's state database is SQLite in WAL mode, locked by the one \
                 process that owns it",
            );
        }
    }
    match ctx.last(who, &props.all("read_from_head")) {
        Some(p) => c.set("read_from_head", p.value.clone(), p),
        None => {
            c.add("read_from_head", "off");
            ctx.note_added(
                who,
                s,
                "read_from_head",
                "Fluent Bit's default: a file already there at the first start is read from its \
                 end (kubetrail's own default is on: read the existing log whole)",
            );
        }
    }
    match ctx.last(who, &props.all("buffer_max_size")) {
        Some(p) => c.set("buffer_max_size", p.value.clone(), p),
        None => ctx.note_added(
            who,
            s,
            "buffer_max_size",
            "Fluent Bit's default is 32k; kubetrail reads lines up to 16M (audit lines are often \
             longer than 32k)",
        ),
    }
    for p in props.all("skip_long_lines") {
        ctx.note_at(
            who,
            p,
            "buffer_max_size",
            "kubetrail always goes on after a line longer than buffer_max_size, and records it \
             as an error record with the file and offset (Fluent Bit without Skip_Long_Lines \
             stops reading the file)",
        );
    }
    for p in props.all("truncate_long_lines") {
        ctx.warn_at(
            who,
            p,
            "no effect: a line longer than buffer_max_size becomes an error record (with the \
             file and offset) instead of being truncated",
        );
    }
    for key in ["refresh_interval", "rotate_wait"] {
        if let Some(p) = ctx.last(who, &props.all(key)) {
            c.set(key, p.value.clone(), p);
        }
    }
    for p in props.all("read_newly_discovered_files_from_head") {
        if ctx.boolean(who, p) == Some(false) {
            ctx.error_at(
                who,
                p,
                "kubetrail always reads a file that appears while it runs from its start (a \
                 rotated audit log must not lose its first lines)",
            );
            ok = false;
        }
    }
    for key in [
        "buffer_chunk_size",
        "key",
        "watcher_interval",
        "progress_check_interval",
        "inotify_watcher",
        "static_batch_size",
        "event_batch_size",
        "file_cache_advise",
        "skip_empty_lines",
    ] {
        for p in props.all(key) {
            ctx.warn_at(who, p, "no effect in kubetrail's audit_file");
        }
    }
    for (key, why) in [
        (
            "path_key",
            "records do not carry the file name (error records do, with the offset)",
        ),
        (
            "offset_key",
            "records do not carry the offset (error records do, with the file name)",
        ),
        ("tag_regex", "audit_file has one tag"),
        ("ignore_older", "audit_file reads every line"),
        ("exit_on_eof", "kubetrail runs until it is stopped"),
        ("unicode.encoding", "audit logs are UTF-8"),
        ("generic.encoding", "audit logs are UTF-8"),
    ] {
        for p in props.all(key) {
            ctx.error_at(who, p, format!("not supported: {why}"));
            ok = false;
        }
    }
    for p in props.rest() {
        if p.lower_key().starts_with("parser_") {
            ctx.error_at(
                who,
                p,
                "multiline parsers are not supported: kubetrail's tail reads one JSON object \
                 per line",
            );
            ok = false;
        } else {
            // Left for the common options.
            props.unread(p);
        }
    }
    ctx.section(
        Severity::Note,
        who,
        s,
        "read as kubetrail's audit_file: each audit event is a record kept once per (auditID, \
         stage), with the line under `object`; rotation (renames, copytruncate, gzip) neither \
         loses nor repeats lines",
    );
    ok.then_some(c)
}

fn http(ctx: &mut Ctx, who: &Who, s: &Section, props: &mut Props) -> Option<Component> {
    let mut c = Component::new(List::Inputs, "http", "audit_webhook", s);
    let mut ok = true;
    let listen = props.all("listen");
    let listen = ctx.last(who, &listen);
    let port = props.all("port");
    let port = ctx.last(who, &port);
    let address = match listen {
        Some(p) => ctx.expand(who, p).map(|a| a.trim().to_string()),
        None => Some("0.0.0.0".to_string()),
    };
    let number = match port {
        Some(p) => ctx.expand(who, p).map(|n| n.trim().to_string()),
        None => Some("9880".to_string()),
    };
    if let (Some(a), Some(n)) = (address, number) {
        let a = if a.contains(':') && !a.starts_with('[') {
            format!("[{a}]")
        } else {
            a
        };
        let value = Value::Scalar(Some(format!("{a}:{n}")));
        match listen.or(port) {
            Some(p) => c.set("listen", value, p),
            None => {
                c.add("listen", &format!("{a}:{n}"));
            }
        }
        if port.is_none() {
            ctx.note_added(
                who,
                s,
                "listen",
                "Fluent Bit's http input listens on port 9880 by default; so does this one \
                 (kubetrail's own default is 9443)",
            );
        }
    } else {
        ok = false;
    }
    // TLS is on unless `tls: off` is written (so only `off` is written out).
    let tls_on = match ctx.last(who, &props.all("tls")) {
        Some(p) => {
            let on = ctx.boolean(who, p).unwrap_or(true);
            if !on {
                c.set("tls", Value::Scalar(Some("off".to_string())), p);
            }
            on
        }
        None => {
            c.add("tls", "off");
            false
        }
    };
    if !tls_on {
        ctx.section(
            Severity::Warning,
            who,
            s,
            "plain HTTP, as Fluent Bit's http input without tls on: the apiserver sends audit \
             events unencrypted; set tls on with tls.crt_file and tls.key_file",
        );
    }
    for key in ["tls.crt_file", "tls.key_file"] {
        if let Some(p) = ctx.last(who, &props.all(key)) {
            c.set(key, p.value.clone(), p);
        }
    }
    if let Some(p) = ctx.last(who, &props.all("tls.ca_file")) {
        c.set("tls.client_ca_file", p.value.clone(), p);
        ctx.note_at(
            who,
            p,
            "tls.client_ca_file",
            "callers must present a client certificate that chains to this CA (the apiserver's \
             webhook kubeconfig gives one)",
        );
    }
    for (key, why) in [
        (
            "tls.verify",
            "client certificates are verified when tls.client_ca_file (Fluent Bit's tls.ca_file) \
             is set",
        ),
        ("tls.vhost", "a server does not send a name"),
        ("tls.debug", "TLS errors are logged"),
        ("tls.min_version", "kubetrail speaks TLS 1.2 and 1.3"),
        ("tls.max_version", "kubetrail speaks TLS 1.2 and 1.3"),
        ("tls.ciphers", "kubetrail uses rustls' safe cipher suites"),
        (
            "buffer_chunk_size",
            "bodies are read whole, up to max_body_size",
        ),
        (
            "successful_response_code",
            "kubetrail answers 200 once every record is durable (and 503 when it cannot be)",
        ),
        (
            "success_header",
            "kubetrail's answers carry no extra headers",
        ),
        (
            "http2",
            "kubetrail's webhook speaks HTTP/1.1, as the apiserver does",
        ),
        (
            "enable_health_endpoint",
            "health is served at service.http_listen (/healthz, /readyz)",
        ),
        (
            "health_endpoint",
            "health is served at service.http_listen (/healthz, /readyz)",
        ),
    ] {
        for p in props.all(key) {
            ctx.warn_at(who, p, format!("no effect: {why}"));
        }
    }
    for (key, why) in [
        (
            "tls.ca_path",
            "give the client CA as one file, tls.client_ca_file",
        ),
        ("tls.key_passwd", "use an unencrypted key file"),
        ("tag_key", "each input has one tag"),
        (
            "add_remote_addr",
            "audit records carry the client's addresses from the audit event (source_ips)",
        ),
        (
            "remote_addr_key",
            "audit records carry the client's addresses from the audit event (source_ips)",
        ),
    ] {
        for p in props.all(key) {
            ctx.error_at(who, p, format!("not supported: {why}"));
            ok = false;
        }
    }
    for p in props.rest() {
        if p.lower_key().starts_with("oauth2.") {
            ctx.error_at(
                who,
                p,
                "not supported: authenticate the apiserver with tls.ca_file (client \
                 certificates) or token_file (bearer tokens)",
            );
            ok = false;
        } else {
            props.unread(p);
        }
    }
    if let Some(p) = ctx.last(who, &props.all("buffer_max_size")) {
        c.set("max_body_size", p.value.clone(), p);
    }
    let authenticated =
        c.has("tls.client_ca_file") || s.last("token_file").is_some() || s.last("auth").is_some();
    if !authenticated {
        ctx.section(
            Severity::Error,
            who,
            s,
            "Fluent Bit's http input lets anyone post records; kubetrail's audit webhook \
             authenticates the apiserver: add tls.ca_file (client certificates, with tls on) or \
             token_file (bearer tokens, one per line), or `auth none` to accept anyone",
        );
        ok = false;
    }
    if s.last("path").is_none() {
        ctx.section(
            Severity::Warning,
            who,
            s,
            "Fluent Bit's http input takes a POST on any path; kubetrail's audit webhook answers \
             only `path` (default /audit): set it to the path in the apiserver's webhook \
             kubeconfig",
        );
    }
    if s.last("tag").is_none() {
        ctx.section(
            Severity::Note,
            who,
            s,
            "without Tag, Fluent Bit tags each record with the request's path; kubetrail tags \
             them with the input's name",
        );
    }
    ctx.section(
        Severity::Note,
        who,
        s,
        "read as kubetrail's audit_webhook: each audit event of a request is its own record \
         (Fluent Bit keeps the whole EventList as one record), kept once per (auditID, stage), \
         and the request is answered only once every record is durable",
    );
    ok.then_some(c)
}
