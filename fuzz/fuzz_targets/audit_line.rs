//! Fuzzes the audit log line parser and the normalization of whatever it accepts: no input
//! may panic, and the record made of any line must encode as JSON (see
//! `kubetrail::fuzzing::audit_line`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kubetrail::fuzzing::audit_line(data);
});
