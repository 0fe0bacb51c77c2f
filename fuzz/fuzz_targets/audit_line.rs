//! Fuzzes the audit log line parser and the normalization of whatever it accepts: no input
//! may panic.
#![no_main]

use std::sync::Arc;

use kubetrail::sources::audit::{self, AuditParseError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (source, tag): (Arc<str>, Arc<str>) = (Arc::from("fuzz"), Arc::from("fuzz"));
    let record = match audit::parse_line(data) {
        Ok(item) => audit::normalize(item, &source, &tag, true),
        Err(AuditParseError::NotAnEvent(err)) => audit::error_record(err, &source, &tag),
        Err(AuditParseError::Json(e)) => {
            audit::invalid_input_record(data, &e.to_string(), &source, &tag)
        }
    };
    let _ = record.encode();
});
