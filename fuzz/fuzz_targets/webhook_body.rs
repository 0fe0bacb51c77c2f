//! Fuzzes the audit webhook body parser (EventList / Event / array of Events) and the
//! normalization of whatever it accepts: no input may panic.
#![no_main]

use std::sync::Arc;

use kubetrail::sources::audit;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (source, tag): (Arc<str>, Arc<str>) = (Arc::from("fuzz"), Arc::from("fuzz"));
    if let Ok(items) = audit::parse_body(data) {
        for item in items {
            let record = match item {
                Ok(item) => audit::normalize(item, &source, &tag, false),
                Err(err) => audit::error_record(err, &source, &tag),
            };
            let _ = record.encode();
        }
    }
});
