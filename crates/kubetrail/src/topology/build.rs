//! Turns a parsed configuration into a [`Plan`]: constructs every component from its section,
//! reads the options common to all of them, and rejects unknown keys.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kubetrail_core::config::{Config, ConfigError, Section, closest};

use super::{DeliveryOptions, FilterPlan, InputPlan, OutputPlan, Plan};
use crate::pipeline::journal::OnFull;
use crate::pipeline::matcher::Matcher;
use crate::pipeline::{Filter, Output, Source};
use crate::service::ServiceOptions;
use crate::{filters, outputs, sources};

/// A configuration that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
}

const INPUTS: &[&str] = &["kubernetes_events", "audit_webhook", "audit_file"];
const FILTERS: &[&str] = &["grep", "redact", "modify"];
const OUTPUTS: &[&str] = &[
    "stdout",
    "file",
    "http",
    "loki",
    "elasticsearch",
    "opentelemetry",
    "postgresql",
    "nats",
    "store",
];

/// The component names this build knows, by kind: (inputs, filters, outputs).
pub fn component_names() -> (
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
) {
    (INPUTS, FILTERS, OUTPUTS)
}

fn unknown_component(s: &Section, known: &[&'static str]) -> ConfigError {
    let mut e = s.error(
        "name",
        format!(
            "unknown component '{}' (known: {})",
            s.name(),
            known.join(", ")
        ),
    );
    if let ConfigError::Setting(b) = &mut e {
        b.suggestion = closest(s.name(), known.iter().copied()).map(str::to_string);
    }
    e
}

fn build_source(s: &mut Section) -> Result<Box<dyn Source>, ConfigError> {
    Ok(match s.name() {
        "kubernetes_events" => Box::new(
            sources::kubernetes_events::KubernetesEvents::from_section(s)?,
        ),
        "audit_webhook" => Box::new(sources::audit_webhook::AuditWebhook::from_section(s)?),
        "audit_file" => Box::new(sources::audit_file::AuditFile::from_section(s)?),
        _ => return Err(unknown_component(s, INPUTS)),
    })
}

fn build_filter(s: &mut Section) -> Result<Arc<dyn Filter>, ConfigError> {
    Ok(match s.name() {
        "grep" => Arc::new(filters::grep::Grep::from_section(s)?),
        "redact" => Arc::new(filters::redact::Redact::from_section(s)?),
        "modify" => Arc::new(filters::modify::Modify::from_section(s)?),
        _ => return Err(unknown_component(s, FILTERS)),
    })
}

fn build_output(s: &mut Section, service: &ServiceOptions) -> Result<Box<dyn Output>, ConfigError> {
    Ok(match s.name() {
        "stdout" => Box::new(outputs::stdout::Stdout::from_section(s)?),
        "file" => Box::new(outputs::file::FileOutput::from_section(s)?),
        "http" => Box::new(outputs::http::HttpOutput::from_section(s)?),
        "loki" => Box::new(outputs::loki::LokiOutput::from_section(s)?),
        "elasticsearch" => Box::new(outputs::elasticsearch::ElasticsearchOutput::from_section(
            s,
        )?),
        "opentelemetry" => Box::new(outputs::opentelemetry::OpenTelemetryOutput::from_section(
            s,
        )?),
        "postgresql" => Box::new(outputs::postgresql::PostgresqlOutput::from_section(s)?),
        "nats" => Box::new(outputs::nats::NatsOutput::from_section(s)?),
        "store" => Box::new(outputs::store::StoreOutput::from_section(
            s,
            &service.data_dir,
        )?),
        _ => return Err(unknown_component(s, OUTPUTS)),
    })
}

/// The instance name: `alias`, else `<plugin>.<n>` where n counts instances of that plugin.
/// Stable across restarts as long as the configuration keeps its order: state is keyed by it.
fn instance_name(
    s: &mut Section,
    counts: &mut std::collections::HashMap<String, usize>,
    seen: &mut HashSet<String>,
) -> Result<String, ConfigError> {
    let n = counts.entry(s.name().to_string()).or_default();
    let default = format!("{}.{}", s.name(), n);
    *n += 1;
    let name = match s.get_str("alias")? {
        Some(a) if !a.trim().is_empty() => {
            let a = a.trim().to_string();
            if !a
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(s.error("alias", "may only hold letters, digits, '.', '_' and '-'"));
            }
            a
        }
        _ => default,
    };
    if !seen.insert(name.clone()) {
        return Err(s.error(
            "alias",
            format!("the name '{name}' is used by two components"),
        ));
    }
    Ok(name)
}

fn delivery_options(s: &mut Section) -> Result<DeliveryOptions, ConfigError> {
    let total_limit_size = s.get_size("storage.total_limit_size")?.unwrap_or(1 << 30);
    let on_full = match s.get_choice(
        "storage.on_full",
        &["backpressure", "drop_oldest", "drop_newest"],
    )? {
        Some("drop_oldest") => OnFull::DropOldest,
        Some("drop_newest") => OnFull::DropNewest,
        _ => OnFull::Backpressure,
    };
    let retry_limit = match s.get_str("retry_limit")? {
        None => None,
        Some(v)
            if ["no_limits", "false", "off", "no_retries"]
                .contains(&v.to_ascii_lowercase().as_str()) =>
        {
            if v.eq_ignore_ascii_case("no_retries") {
                Some(0)
            } else {
                None
            }
        }
        Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
            s.error(
                "retry_limit",
                format!("'{v}' is not a number, 'no_limits' or 'no_retries'"),
            )
        })?),
    };
    let retry_max_backoff = s
        .get_duration("retry_max_backoff")?
        .unwrap_or(Duration::from_secs(60));
    let retry_base_backoff = s
        .get_duration("retry_base_backoff")?
        .unwrap_or(Duration::from_secs(1));
    let batch_records = s
        .get_u64("batch.records")?
        .unwrap_or(2000)
        .clamp(1, 1_000_000) as usize;
    let batch_bytes = s
        .get_size("batch.bytes")?
        .unwrap_or(4 << 20)
        .clamp(1024, 1 << 30) as usize;
    Ok(DeliveryOptions {
        total_limit_size,
        on_full,
        retry_limit,
        retry_max_backoff: retry_max_backoff.max(retry_base_backoff),
        retry_base_backoff,
        batch_records,
        batch_bytes,
    })
}

impl Plan {
    /// Builds every component; the first configuration problem is returned.
    pub fn from_config(mut config: Config) -> Result<Plan, BuildError> {
        let service = ServiceOptions::from_section(&mut config.service)?;
        config.service.finish()?;
        let mut counts = Default::default();
        let mut seen = HashSet::new();

        let mut inputs = Vec::new();
        for s in &mut config.inputs {
            let name = instance_name(s, &mut counts, &mut seen)?;
            let tag = s
                .get_str("tag")?
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| name.clone());
            let source = build_source(s)?;
            s.finish()?;
            inputs.push(InputPlan {
                name: Arc::from(name),
                plugin: s.name().to_string(),
                tag: Arc::from(tag),
                source,
            });
        }
        let mut filters = Vec::new();
        let mut secrets_opt_out = false;
        for s in &mut config.filters {
            let name = instance_name(s, &mut counts, &mut seen)?;
            let matcher = Matcher::from_section(s, false)?;
            if s.name() == "redact" {
                let r = filters::redact::Redact::from_section(s)?;
                secrets_opt_out |= r.keeps_secrets();
            }
            let filter = build_filter(s)?;
            s.finish()?;
            filters.push(FilterPlan {
                name,
                plugin: s.name().to_string(),
                matcher,
                filter,
            });
        }
        if !secrets_opt_out {
            // Secure by default: audit events about Secrets lose their request and response
            // bodies, whatever the audit policy's level, unless a redact filter says
            // `secrets: keep` in so many words.
            filters.insert(
                0,
                FilterPlan {
                    name: "builtin.redact_secrets".into(),
                    plugin: "redact".into(),
                    matcher: Matcher::Wildcard("*".into()),
                    filter: Arc::new(filters::redact::Redact::secrets_only()),
                },
            );
        }
        let mut outputs = Vec::new();
        for s in &mut config.outputs {
            let name = instance_name(s, &mut counts, &mut seen)?;
            let matcher = Matcher::from_section(s, false)?;
            let delivery = delivery_options(s)?;
            let output = build_output(s, &service)?;
            s.finish()?;
            outputs.push(OutputPlan {
                name,
                plugin: s.name().to_string(),
                matcher,
                output,
                delivery,
            });
        }
        if inputs.is_empty() {
            return Err(BuildError::Config(config.service.section_error(
                "the configuration has no inputs (pipeline.inputs)",
            )));
        }
        if outputs.is_empty() {
            return Err(BuildError::Config(config.service.section_error(
                "the configuration has no outputs (pipeline.outputs)",
            )));
        }
        Ok(Plan {
            service,
            inputs,
            filters,
            outputs,
        })
    }
}
