//! Fuzzes the audit webhook body parser (EventList / Event / array of Events) and the
//! normalization of whatever it accepts: no input may panic, the parser (one pass where it
//! can) must say exactly what the careful two-pass parser says, and every record must encode
//! as JSON (see `kubetrail::fuzzing::webhook_body`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kubetrail::fuzzing::webhook_body(data);
});
