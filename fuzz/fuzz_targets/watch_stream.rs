//! Fuzzes the Events watch: a response body split into chunks (the first byte picks their
//! size) goes through the frame splitter, each frame through the frame parser and each Event
//! through the normalizer; the whole input is also parsed as a list page. No input may panic,
//! the splitter must yield exactly the body's lines with bounded buffering (see
//! `kubetrail::fuzzing::watch_stream`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kubetrail::fuzzing::watch_stream(data);
});
