//! Fluent Bit's plugins kubetrail does not have, and what to use instead. A name in none of
//! these lists is passed on as it is (it may be one of kubetrail's own components).

/// What kubetrail reads, for the messages about inputs it does not have.
const INPUT_ADVICE: &str = "kubetrail reads Kubernetes Events (kubernetes_events) and the audit \
                            log (tail of the apiserver's audit log, or the http input as its \
                            audit webhook)";

/// Fluent Bit inputs kubetrail does not have.
const INPUTS: &[&str] = &[
    "blob",
    "calyptia_fleet",
    "collectd",
    "cpu",
    "disk",
    "docker",
    "docker_events",
    "dummy",
    "dummy_thread",
    "ebpf",
    "elasticsearch",
    "emitter",
    "event_test",
    "event_type",
    "exec",
    "exec_wasi",
    "fluentbit_metrics",
    "forward",
    "gpu_metrics",
    "head",
    "health",
    "kafka",
    "kmsg",
    "lib",
    "mem",
    "mqtt",
    "netif",
    "nginx_exporter_metrics",
    "node_exporter_metrics",
    "opentelemetry",
    "podman_metrics",
    "proc",
    "process_exporter_metrics",
    "prometheus_remote_write",
    "prometheus_scrape",
    "prometheus_textfile",
    "random",
    "serial",
    "splunk",
    "statsd",
    "stdin",
    "syslog",
    "systemd",
    "tcp",
    "thermal",
    "udp",
    "windows_exporter_metrics",
    "winevtlog",
    "winlog",
    "winstat",
];

/// Fluent Bit filters kubetrail does not have, with advice where there is some.
const FILTERS: &[(&str, &str)] = &[
    ("alter_size", ""),
    ("aws", ""),
    ("checklist", ""),
    ("ecs", ""),
    ("expect", ""),
    ("geoip2", ""),
    (
        "kubernetes",
        "Events and audit events already name their object (namespace, name, kind); \
         kubetrail adds no pod metadata",
    ),
    ("log_to_metrics", ""),
    ("lua", "use grep, modify or redact"),
    ("multiline", "audit events are one JSON object per line"),
    ("nest", ""),
    ("nightfall", "use redact"),
    ("parser", "records are already parsed JSON"),
    ("rewrite_tag", "give each input its own tag"),
    ("stdout", "add a stdout output"),
    ("sysinfo", ""),
    ("tensorflow", ""),
    ("throttle", ""),
    ("type_converter", ""),
    ("wasm", "use grep, modify or redact"),
];

/// Fluent Bit outputs kubetrail does not have, with advice.
const OUTPUTS: &[(&str, &str)] = &[
    ("azure", ""),
    ("azure_blob", ""),
    ("azure_kusto", ""),
    ("azure_logs_ingestion", ""),
    ("bigquery", ""),
    ("calyptia", ""),
    ("chronicle", ""),
    ("cloudwatch_logs", ""),
    ("counter", ""),
    ("datadog", "use http to Datadog's intake API"),
    ("exit", ""),
    ("flowcounter", ""),
    ("forward", "use http, nats or opentelemetry"),
    ("gelf", ""),
    ("influxdb", ""),
    ("kafka", "use nats (JetStream) or http"),
    ("kafka-rest", "use http"),
    ("kinesis_firehose", ""),
    ("kinesis_streams", ""),
    ("lib", ""),
    ("logdna", ""),
    ("new_relic", "use opentelemetry"),
    ("null", "give the records no output (match nothing)"),
    ("observe", "use http"),
    ("oracle_log_analytics", ""),
    ("parseable", "use http"),
    ("plot", ""),
    ("prometheus_exporter", ""),
    ("prometheus_remote_write", ""),
    (
        "s3",
        "use file (and your own upload) or a store kubetrail delivers to",
    ),
    ("skywalking", ""),
    ("slack", ""),
    ("splunk", "use http to the HTTP Event Collector"),
    ("stackdriver", "use opentelemetry"),
    ("syslog", ""),
    ("tcp", "use http"),
    ("td", ""),
    ("udp", ""),
    ("vivo_exporter", ""),
    ("websocket", ""),
];

/// The outputs kubetrail has (for messages).
pub const KUBETRAIL_OUTPUTS: &str =
    "stdout, file, http, es (elasticsearch), loki, opentelemetry, pgsql (postgresql), nats";

/// The message for a Fluent Bit input kubetrail does not have, if `name` is one.
pub fn unsupported_input(name: &str) -> Option<String> {
    INPUTS
        .contains(&name)
        .then(|| format!("Fluent Bit's '{name}' input is not supported: {INPUT_ADVICE}"))
}

/// The message for a Fluent Bit filter kubetrail does not have, if `name` is one.
pub fn unsupported_filter(name: &str) -> Option<String> {
    FILTERS.iter().find(|(n, _)| *n == name).map(|(_, advice)| {
        let advice = if advice.is_empty() {
            "kubetrail's filters are grep, modify (and record_modifier read as modify) and redact"
        } else {
            advice
        };
        format!("Fluent Bit's '{name}' filter is not supported: {advice}")
    })
}

/// The message for a Fluent Bit output kubetrail does not have, if `name` is one.
pub fn unsupported_output(name: &str) -> Option<String> {
    OUTPUTS.iter().find(|(n, _)| *n == name).map(|(_, advice)| {
        let advice = if advice.is_empty() {
            format!("kubetrail's outputs are {KUBETRAIL_OUTPUTS}")
        } else {
            format!("{advice} (kubetrail's outputs are {KUBETRAIL_OUTPUTS})")
        };
        format!("Fluent Bit's '{name}' output is not supported: {advice}")
    })
}
