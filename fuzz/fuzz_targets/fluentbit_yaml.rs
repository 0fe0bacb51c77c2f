//! Fuzzes the reader of Fluent Bit's yaml configuration format and the translation of what it
//! reads: no input may panic, and what translates without errors must print (as `kubetrail
//! migrate` does) as YAML that kubetrail's own loader reads.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kubetrail_fluentbit::fuzzing::yaml(data);
});
