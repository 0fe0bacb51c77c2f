//! Fuzzes the queue segment reader's decoding (`kubetrail_state::format`): segment files of
//! any bytes, and blocks sealed from the input then damaged by one byte, which must always be
//! detected (see `kubetrail::fuzzing::segment`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kubetrail::fuzzing::segment(data);
});
