//! Each Fluent Bit plugin kubetrail has, with the options its users write, translated and
//! built into a pipeline: the kubetrail settings it becomes, the diagnostics it gets, and the
//! proof that kubetrail's components accept every translated option (the plan builds).

use std::collections::BTreeMap;
use std::path::Path;

use kubetrail::topology::Plan;
use kubetrail_core::config::Value;
use kubetrail_fluentbit::{
    Component, Dialect, LoadError, Memory, Migration, Severity, detect, load_with, migration,
};

fn translate(files: &Memory, path: &str) -> Migration {
    migration(files, Path::new(path), &BTreeMap::new())
        .expect("readable")
        .1
}

fn settings(c: &Component) -> Vec<(String, String)> {
    c.settings
        .iter()
        .map(|s| {
            let v = match &s.value {
                Value::Scalar(v) => v.clone().unwrap_or_default(),
                Value::List(items) => format!("[{}]", items.join(" | ")),
                Value::Map(_) => "{map}".into(),
            };
            (s.key.to_ascii_lowercase(), v)
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Messages of one severity, as `line: key: message` (key `-` for none).
fn messages(m: &Migration, severity: Severity) -> Vec<String> {
    m.diagnostics
        .iter()
        .filter(|d| d.severity == severity)
        .map(|d| {
            format!(
                "{}: {}: {}",
                d.line.unwrap_or(0),
                d.key.as_deref().unwrap_or("-"),
                d.message
            )
        })
        .collect()
}

/// The plan built from the translated configuration (the components read every option).
fn plan(files: &Memory, path: &str) -> Plan {
    let loaded =
        load_with(files, Path::new(path), &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
    Plan::from_config(loaded.config).unwrap_or_else(|e| panic!("{e}"))
}

const AUDIT_TAIL: &str = "\
@SET data_path=/var/fluent-bit/data
[SERVICE]
    Flush         5
    Log_Level     warning
    HTTP_Server   On
    HTTP_Listen   127.0.0.1
    HTTP_Port     2021
    Grace         10

[INPUT]
    Name              tail
    Tag               audit.kubernetes.*
    Path              /var/log/apiserver/*.log
    Exclude_Path      *.gz
    Parser            json
    DB                ${data_path}/audit_kubernetes.db
    DB.Sync           full
    Read_from_Head    On
    Buffer_Max_Size   1MB
    Skip_Long_Lines   On
    Refresh_Interval  10
    Rotate_Wait       5
    Mem_Buf_Limit     10MB

[FILTER]
    Name    modify
    Match   audit.*
    Add     cluster prod-eu

[FILTER]
    Name    grep
    Match   audit.*
    Exclude $user['username'] ^system:
    Regex   cluster prod

[OUTPUT]
    Name               es
    Match              audit.*
    Host               es.example
    Port               9200
    HTTP_User          kubetrail
    HTTP_Passwd        ${ES_PASSWORD}
    Logstash_Format    On
    Logstash_Prefix    audit
    Suppress_Type_Name On
    Retry_Limit        False
    tls                On
    tls.verify         Off
";

#[test]
fn tail_of_the_audit_log_becomes_audit_file() {
    let files = Memory::default().with("/etc/fb/fluent-bit.conf", AUDIT_TAIL);
    let m = translate(&files, "/etc/fb/fluent-bit.conf");
    assert!(!m.has_errors(), "{:?}", messages(&m, Severity::Error));
    assert_eq!(m.inputs.len(), 1);
    assert_eq!(m.inputs[0].name, "audit_file");
    assert_eq!(
        settings(&m.inputs[0]),
        pairs(&[
            ("path", "/var/log/apiserver/*.log"),
            ("tag", "audit.kubernetes.var.log.apiserver"),
            ("exclude_path", "*.gz"),
            ("read_from_head", "On"),
            ("buffer_max_size", "1MB"),
            ("refresh_interval", "10"),
            ("rotate_wait", "5"),
        ])
    );
    assert_eq!(
        settings(&m.service),
        pairs(&[
            ("http_listen", "127.0.0.1:2021"),
            ("log_level", "warn"),
            ("grace", "10"),
            ("data_dir", "${data_path}"),
            ("db.sync", "full"),
        ])
    );
    assert_eq!(
        messages(&m, Severity::Warning),
        vec![
            "23: Mem_Buf_Limit: no effect: kubetrail's memory is bounded by batch sizes; a full \
             output queue (storage.total_limit_size) pauses the input",
            "3: Flush: no effect: kubetrail delivers each batch as soon as it is durable \
             (outputs' batch.records and batch.bytes bound a delivery)",
        ]
    );
    // The grep key the modify filter writes is read as the record's field; the other one
    // inside the original audit event.
    assert_eq!(
        settings(&m.filters[1]),
        pairs(&[
            ("regex", "cluster =~ prod"),
            ("exclude", "object.user.username =~ ^system:"),
            ("match", "audit.*"),
        ])
    );
    assert_eq!(
        settings(&m.outputs[0]),
        pairs(&[
            ("retry_limit", "False"),
            ("tls", "On"),
            ("tls.verify", "Off"),
            ("match", "audit.*"),
            ("host", "es.example"),
            ("port", "9200"),
            ("http_user", "kubetrail"),
            ("http_passwd", "${ES_PASSWORD}"),
            ("logstash_format", "On"),
            ("logstash_prefix", "audit"),
            ("suppress_type_name", "On"),
        ])
    );
    assert_eq!(m.outputs[0].name, "elasticsearch");
    // The variables the file defines stay variables in the kubetrail configuration.
    assert_eq!(m.env[0].name, "data_path");
    // kubetrail's components take every translated option. (ES_PASSWORD must be set.)
    let mut vars = BTreeMap::new();
    vars.insert("ES_PASSWORD".to_string(), "secret".to_string());
    let loaded = load_with(&files, Path::new("/etc/fb/fluent-bit.conf"), &vars).unwrap();
    let plan = Plan::from_config(loaded.config).unwrap();
    let d = plan.describe();
    assert!(d.contains("data_dir: /var/fluent-bit/data\n"), "{d}");
    assert!(d.contains("http_listen: 127.0.0.1:2021\n"), "{d}");
    assert!(
        d.contains("audit_file.0 (audit_file) tag=audit.kubernetes.var.log.apiserver"),
        "{d}"
    );
    assert!(
        d.contains("elasticsearch.0 (elasticsearch) match='audit.*'"),
        "{d}"
    );
}

#[test]
fn an_unset_variable_in_a_value_passed_on_is_kubetraits_error_with_the_line() {
    let files = Memory::default().with("/etc/fb/fluent-bit.conf", AUDIT_TAIL);
    let loaded = load_with(
        &files,
        Path::new("/etc/fb/fluent-bit.conf"),
        &BTreeMap::new(),
    )
    .unwrap();
    let e = Plan::from_config(loaded.config).err().unwrap().to_string();
    assert_eq!(
        e,
        "/etc/fb/fluent-bit.conf:42: outputs[0] (es, read as elasticsearch): key 'http_passwd': \
         environment variable 'ES_PASSWORD' is not set"
    );
}

const WEBHOOK: &str = "\
[INPUT]
    Name          http
    Tag           k8s.audit
    Listen        0.0.0.0
    Port          9443
    tls           on
    tls.crt_file  /etc/tls/tls.crt
    tls.key_file  /etc/tls/tls.key
    tls.ca_file   /etc/tls/client-ca.crt
    tls.verify    on
    Buffer_Max_Size 8M
    Path          /audit
    Successful_Response_Code 200

[OUTPUT]
    Name   loki
    Match  k8s.*
    Host   loki.example
    Labels job=fluentbit, $objectRef['namespace']
    Label_Keys $verb
    Remove_Keys stage

[OUTPUT]
    Name    opentelemetry
    Match   *
    Host    otel.example
    Port    4318
    Logs_uri /v1/logs
    Header  X-Tenant a

[OUTPUT]
    Name      pgsql
    Match     *
    Host      pg.example
    User      kubetrail
    Password  secret
    Table     audit_records

[OUTPUT]
    Name   nats
    Match  *
    Host   nats.example
    Port   4222

[OUTPUT]
    Name    http
    Match   *
    Host    collector.example
    Port    8080
    Uri     /ingest
    Format  json_lines
    Header  X-Key-A Value_A
    Header  X-Key-B Value_B

[OUTPUT]
    Name   file
    Match  *
    Path   /var/log/kubetrail
    File   audit.jsonl
    Format plain

[OUTPUT]
    Name   stdout
    Match  *
    Format json
";

#[test]
fn http_becomes_the_audit_webhook_and_every_output_builds() {
    let files = Memory::default().with("/etc/fb/webhook.conf", WEBHOOK);
    let m = translate(&files, "/etc/fb/webhook.conf");
    assert!(!m.has_errors(), "{:?}", messages(&m, Severity::Error));
    assert_eq!(m.inputs[0].name, "audit_webhook");
    assert_eq!(
        settings(&m.inputs[0]),
        pairs(&[
            ("listen", "0.0.0.0:9443"),
            ("tls.crt_file", "/etc/tls/tls.crt"),
            ("tls.key_file", "/etc/tls/tls.key"),
            ("tls.client_ca_file", "/etc/tls/client-ca.crt"),
            ("max_body_size", "8M"),
            ("tag", "k8s.audit"),
            ("path", "/audit"),
        ])
    );
    let names: Vec<&str> = m.outputs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "loki",
            "opentelemetry",
            "postgresql",
            "nats",
            "http",
            "file",
            "stdout"
        ]
    );
    let loki = settings(&m.outputs[0]);
    assert!(
        loki.contains(&("labels".into(), "job=fluentbit".into())),
        "{loki:?}"
    );
    assert!(
        loki.contains(&(
            "label_keys".into(),
            "objectRef_namespace=$object['objectRef']['namespace'], verb=$object['verb']".into()
        )),
        "{loki:?}"
    );
    assert!(
        loki.contains(&("remove_keys".into(), "object.stage".into())),
        "{loki:?}"
    );
    let pg = settings(&m.outputs[2]);
    assert!(
        pg.contains(&("database".into(), "fluentbit".into())),
        "{pg:?}"
    );
    let nats = settings(&m.outputs[3]);
    assert!(nats.contains(&("stream".into(), String::new())), "{nats:?}");
    assert!(
        nats.contains(&("subject".into(), "{tag}".into())),
        "{nats:?}"
    );
    let http = settings(&m.outputs[4]);
    assert!(
        http.contains(&(
            "header".into(),
            "[X-Key-A Value_A | X-Key-B Value_B]".into()
        )),
        "{http:?}"
    );
    assert!(settings(&m.outputs[5]).contains(&("format".into(), "json_lines".into())));
    assert_eq!(
        messages(&m, Severity::Warning),
        vec![
            "10: tls.verify: no effect: client certificates are verified when \
             tls.client_ca_file (Fluent Bit's tls.ca_file) is set",
            "13: Successful_Response_Code: no effect: kubetrail answers 200 once every record \
             is durable (and 503 when it cannot be)",
            "37: Table: kubetrail's table has its own columns (id, time, kind, namespace, ..., \
             record jsonb) and is created if missing; a table Fluent Bit made (tag, time, data) \
             cannot take them: give a new name",
        ]
    );
    let d = plan(&files, "/etc/fb/webhook.conf").describe();
    for c in [
        "audit_webhook.0 (audit_webhook) tag=k8s.audit",
        "loki.0 (loki)",
        "opentelemetry.0 (opentelemetry)",
        "postgresql.0 (postgresql)",
        "nats.0 (nats)",
        "http.0 (http)",
        "file.0 (file)",
        "stdout.0 (stdout)",
    ] {
        assert!(d.contains(c), "{c}: {d}");
    }
}

#[test]
fn an_unauthenticated_http_input_is_refused_unless_written_out() {
    let text = "[INPUT]\n    Name http\n    Port 9880\n[OUTPUT]\n    Name stdout\n    Match *\n";
    let files = Memory::default().with("/c/a.conf", text);
    let e = load_with(&files, Path::new("/c/a.conf"), &BTreeMap::new()).unwrap_err();
    let LoadError::FluentBit(all) = e else {
        panic!()
    };
    assert_eq!(all[0].line, Some(1));
    assert!(
        all[0]
            .message
            .starts_with("Fluent Bit's http input lets anyone post records")
    );
    // kubetrail's own option, written in the Fluent Bit file, is taken.
    let text = "[INPUT]\n    Name http\n    Port 9880\n    auth none\n[OUTPUT]\n    Name stdout\n    Match *\n";
    let files = Memory::default().with("/c/a.conf", text);
    let d = plan(&files, "/c/a.conf").describe();
    assert!(d.contains("audit_webhook.0"), "{d}");
}

#[test]
fn unsupported_plugins_and_options_name_the_line_and_what_to_use() {
    let text = "\
[INPUT]
    Name kubernetes_events
    Kube_Request_Limit 0
    storage.type filesystem
[FILTER]
    Name lua
    Match *
[FILTER]
    Name modify
    Match *
    Condition Key_Exists a
    Set a b
[OUTPUT]
    Name kafka
    Match *
[OUTPUT]
    Name es
    Match *
    Write_Operation upsert
    Cloud_ID x
";
    let files = Memory::default().with("/c/a.conf", text);
    let m = translate(&files, "/c/a.conf");
    assert_eq!(
        messages(&m, Severity::Error),
        vec![
            "6: Name: Fluent Bit's 'lua' filter is not supported: use grep, modify or redact",
            "11: Condition: kubetrail's modify has no conditions: its rules apply to every \
             record the filter matches (route by tag, or drop records first with grep)",
            "14: Name: Fluent Bit's 'kafka' output is not supported: use nats (JetStream) or \
             http (kubetrail's outputs are stdout, file, http, es (elasticsearch), loki, \
             opentelemetry, pgsql (postgresql), nats)",
            "20: Cloud_ID: not supported: give host and port",
            "19: Write_Operation: kubetrail writes with create actions and _id = the record id, \
             so that a retried batch never duplicates: index/update/upsert are not supported",
        ]
    );
    assert_eq!(
        messages(&m, Severity::Warning),
        vec![
            "4: storage.type: no effect: every record is on disk (the output queues) before it \
             is acknowledged"
        ]
    );
    assert!(
        messages(&m, Severity::Note).contains(
            &"3: Kube_Request_Limit: Fluent Bit lists without paging at 0; kubetrail always \
              pages (0 means its default page size, 500)"
                .to_string()
        )
    );
}

#[test]
fn a_single_valued_option_given_twice_takes_the_last_with_a_warning() {
    let text = "[INPUT]\n    Name kubernetes_events\n    Kube_Namespace a\n    Kube_Namespace b\n[OUTPUT]\n    Name stdout\n    Match *\n";
    let files = Memory::default().with("/c/a.conf", text);
    let m = translate(&files, "/c/a.conf");
    assert!(settings(&m.inputs[0]).contains(&("kube_namespace".into(), "b".into())));
    assert_eq!(
        messages(&m, Severity::Warning),
        vec![
            "4: Kube_Namespace: is given 2 times (first at line 3): the last value is used, as in Fluent Bit"
        ]
    );
}

#[test]
fn yaml_format_with_includes_env_lists_and_camel_case_keys() {
    let files = Memory::default()
        .with(
            "/etc/fb/fluent-bit.yaml",
            "env:\n  - name: NS\n    value: shop\nincludes:\n  - conf.d/pipeline.yaml\nservice:\n  flush: 1\n  logLevel: debug\n",
        )
        .with(
            // Includes resolve from the including file's directory.
            "/etc/fb/conf.d/pipeline.yaml",
            "includes: [outputs.yaml]\npipeline:\n  inputs:\n    - name: kubernetes_events\n      kubeNamespace: ${NS}\n      tag: k8s.events\n  filters:\n    - name: record_modifier\n      match: '*'\n      record:\n        - cluster prod\n        - team sre\n      remove_key: reporting_instance\n    - name: grep\n      match: '*'\n      regex:\n        - cluster prod\n        - $involvedObject['kind'] ^Pod$\n",
        )
        .with(
            "/etc/fb/conf.d/outputs.yaml",
            "pipeline:\n  outputs:\n    - name: stdout\n      match: '*'\n      format: json_lines\n",
        );
    assert_eq!(
        detect(
            Path::new("/etc/fb/fluent-bit.yaml"),
            "service:\n  flush: 1\n"
        ),
        Dialect::FluentBitYaml
    );
    let m = translate(&files, "/etc/fb/fluent-bit.yaml");
    assert!(!m.has_errors(), "{:?}", messages(&m, Severity::Error));
    assert_eq!(m.env[0].name, "NS");
    assert!(settings(&m.inputs[0]).contains(&("kube_namespace".into(), "${NS}".into())));
    assert_eq!(m.filters[0].name, "modify");
    assert!(settings(&m.filters[0]).contains(&("set".into(), "[cluster prod | team sre]".into())));
    assert!(settings(&m.filters[0]).contains(&("remove".into(), "reporting_instance".into())));
    assert!(
        settings(&m.filters[1]).contains(&(
            "regex".into(),
            "[cluster =~ prod | object.involvedObject.kind =~ ^Pod$]".into()
        )),
        "{:?}",
        settings(&m.filters[1])
    );
    assert_eq!(
        m.outputs[0].file.as_ref(),
        Path::new("/etc/fb/conf.d/outputs.yaml")
    );
    let d = plan(&files, "/etc/fb/fluent-bit.yaml").describe();
    assert!(d.contains("log_level: debug"), "{d}");
    assert!(d.contains("modify.0 (modify)"), "{d}");
}

#[test]
fn kubetrail_yaml_is_read_as_kubetrails() {
    for text in [
        "service:\n  data_dir: /x\npipeline:\n  inputs:\n    - name: kubernetes_events\n",
        "env:\n  A: b\npipeline:\n  outputs:\n    - name: loki\n      label_keys: kind\n",
    ] {
        assert_eq!(
            detect(Path::new("k.yaml"), text),
            Dialect::Kubetrail,
            "{text}"
        );
    }
    for (name, text) in [
        ("f.yaml", "pipeline:\n  inputs:\n    - name: tail\n"),
        ("f.yaml", "pipeline:\n  outputs:\n    - name: es\n"),
        ("f.yaml", "env:\n  - name: a\n    value: b\n"),
        ("f.yml", "includes: [a.yaml]\n"),
        ("f.conf", "service:\n  data_dir: /x\n"),
        ("fluent-bit", "# comment\n[INPUT]\n  Name tail\n"),
    ] {
        assert_ne!(detect(Path::new(name), text), Dialect::Kubetrail, "{text}");
    }
}

#[test]
fn a_variable_read_from_a_file_is_used_but_never_printed() {
    let files = Memory::default()
        .with(
            "/etc/fb/fluent-bit.yaml",
            "env:\n  - name: PG_PASSWORD\n    uri: file:///run/secrets/pg\npipeline:\n  inputs:\n    - name: kubernetes_events\n  outputs:\n    - name: pgsql\n      match: '*'\n      password: ${PG_PASSWORD}\n",
        )
        .with("/run/secrets/pg", "s3cr3t-value\n");
    let m = translate(&files, "/etc/fb/fluent-bit.yaml");
    assert!(!m.has_errors(), "{:?}", messages(&m, Severity::Error));
    let yaml = m.to_yaml();
    assert!(!yaml.contains("s3cr3t"), "{yaml}");
    assert!(
        yaml.contains(
            "# PG_PASSWORD: Fluent Bit reads it from file:///run/secrets/pg; it is not written"
        ),
        "{yaml}"
    );
    assert!(!format!("{m:?}").contains("s3cr3t"));
    // `run` uses it.
    let loaded = load_with(
        &files,
        Path::new("/etc/fb/fluent-bit.yaml"),
        &BTreeMap::new(),
    )
    .unwrap();
    let mut config = loaded.config;
    assert_eq!(
        config.outputs[0].get_str("password").unwrap().as_deref(),
        Some("s3cr3t-value")
    );
}
