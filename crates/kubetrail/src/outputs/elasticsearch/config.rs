//! The `elasticsearch` output's options: the index name (with a date pattern, or Fluent Bit's
//! `logstash_*` options), `_type`, the ingest pipeline, the time key and dot replacement.

use kubetrail_core::config::{ConfigError, Section};

use super::index::IndexPattern;
use crate::outputs::http_common::{EndpointDefaults, HttpSender, encode_query_value};

/// The endpoint defaults of Fluent Bit's `es` output (`path` is a prefix before `/_bulk`).
pub const DEFAULTS: EndpointDefaults = EndpointDefaults {
    port: 9200,
    path_key: "path",
    path: "",
};

/// The default index: one per day of the records' time.
pub const DEFAULT_INDEX: &str = "kubetrail-%Y.%m.%d";

/// Only what is needed to tell each item's fate is asked back, so that the answer to a large
/// bulk request stays small.
const FILTER_PATH: &str =
    "errors,items.*.status,items.*.error.type,items.*.error.reason,items.*.error.caused_by.reason";

/// The `elasticsearch` output's own settings.
#[derive(Debug, Clone)]
pub struct EsConfig {
    /// `<path prefix>/_bulk?filter_path=...[&pipeline=...]`.
    pub bulk_path: String,
    /// `index`, or `logstash_prefix` + `logstash_prefix_separator` + `logstash_dateformat`.
    pub index: IndexPattern,
    /// `_type` in action lines: `None` with `suppress_type_name: on` (the default, needed by
    /// Elasticsearch 8 and OpenSearch 2), else `type` (default `_doc`).
    pub type_name: Option<String>,
    /// `time_key` (default `@timestamp`): a field with the record's time added to each
    /// document that does not have it; empty = none.
    pub time_key: Option<String>,
    /// `replace_dots` (default off): `.` in field names becomes `_` (so that `app` and
    /// `app.kubernetes.io/name` labels do not clash in the mapping).
    pub replace_dots: bool,
}

impl EsConfig {
    /// Reads the shared HTTP options and the options above; builds the client.
    pub fn from_section(s: &mut Section) -> Result<(HttpSender, EsConfig), ConfigError> {
        let (sender, prefix) = HttpSender::from_section(s, DEFAULTS)?;
        let index_opt = s.get_str("index")?.map(|i| i.trim().to_string());
        let logstash = s.get_bool("logstash_format")?.unwrap_or(false);
        let ls_prefix = s.get_str_or("logstash_prefix", "logstash")?;
        let ls_sep = s.get_str_or("logstash_prefix_separator", "-")?;
        let ls_date = s.get_str_or("logstash_dateformat", "%Y.%m.%d")?;
        let (key, pattern) = match (logstash, index_opt) {
            (true, Some(_)) => {
                return Err(s.error("index", "give either index or logstash_format, not both"));
            }
            (true, None) => ("logstash_prefix", format!("{ls_prefix}{ls_sep}{ls_date}")),
            (false, Some(i)) => ("index", i),
            (false, None) => ("index", DEFAULT_INDEX.to_string()),
        };
        let index = IndexPattern::parse(&pattern).map_err(|m| s.error(key, m))?;
        let suppress = s.get_bool("suppress_type_name")?.unwrap_or(true);
        let type_opt = s.get_str_or("type", "_doc")?;
        let type_name = (!suppress).then_some(type_opt);
        let pipeline = s
            .get_str("pipeline")?
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty());
        let time_key = s.get_str_or("time_key", "@timestamp")?;
        let time_key = Some(time_key.trim().to_string()).filter(|k| !k.is_empty());
        let replace_dots = s.get_bool("replace_dots")?.unwrap_or(false);
        let prefix = prefix.trim_end_matches('/');
        if prefix.contains('?') {
            return Err(s.error(DEFAULTS.path_key, "the path prefix cannot have a query"));
        }
        let mut bulk_path = format!("{prefix}/_bulk?filter_path={FILTER_PATH}");
        if let Some(p) = pipeline {
            bulk_path.push_str("&pipeline=");
            bulk_path.push_str(&encode_query_value(&p));
        }
        Ok((
            sender,
            EsConfig {
                bulk_path,
                index,
                type_name,
                time_key,
                replace_dots,
            },
        ))
    }
}
