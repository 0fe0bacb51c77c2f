//! The `http` output's options: the body format and the endpoint (the rest is shared by the
//! HTTP outputs, see `outputs::http_common`).

use kubetrail_core::config::{ConfigError, Section};

use crate::outputs::http_common::{EndpointDefaults, HttpSender};

/// How a batch is put in the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `json_lines` (default): one record per line.
    JsonLines,
    /// `json`: one JSON array of records.
    Json,
}

impl BodyFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            BodyFormat::JsonLines => "application/x-ndjson",
            BodyFormat::Json => "application/json",
        }
    }
}

/// The endpoint defaults of Fluent Bit's `http` output.
pub const DEFAULTS: EndpointDefaults = EndpointDefaults {
    port: 80,
    path_key: "uri",
    path: "/",
};

/// The `http` output's own settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// `format`: `json_lines` (default) or `json`.
    pub format: BodyFormat,
    /// The request path and query (`uri`, or the path of `url`; default `/`).
    pub path: String,
}

impl HttpConfig {
    /// Reads the shared HTTP options and `format`; builds the client.
    pub fn from_section(s: &mut Section) -> Result<(HttpSender, HttpConfig), ConfigError> {
        let (sender, path) = HttpSender::from_section(s, DEFAULTS)?;
        let format = match s.get_choice("format", &["json_lines", "json"])? {
            Some("json") => BodyFormat::Json,
            _ => BodyFormat::JsonLines,
        };
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            path
        };
        Ok((sender, HttpConfig { format, path }))
    }
}
