//! Fuzzes the audit webhook body parser (EventList / Event / array of Events) and the
//! normalization of whatever it accepts: no input may panic, and the parser (one pass where
//! it can) must say exactly what the careful two-pass parser says.
#![no_main]

use std::sync::Arc;

use kubetrail::sources::audit;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (source, tag): (Arc<str>, Arc<str>) = (Arc::from("fuzz"), Arc::from("fuzz"));
    let parsed = audit::parse_body(data);
    let careful = audit::parse_body_split(data);
    match (&parsed, &careful) {
        (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
        (Err(_), Err(_)) => {}
        _ => panic!("one pass and the careful way disagree"),
    }
    if let Ok(items) = parsed {
        for item in items {
            let record = match item {
                Ok(item) => audit::normalize(item, &source, &tag, false),
                Err(err) => audit::error_record(err, &source, &tag),
            };
            let _ = record.encode();
        }
    }
});
