//! Fluent Bit configurations read by kubetrail: every fixture configuration with its exact
//! expected outcome and the supported ones run against the emulator (`fixtures`), and each
//! supported plugin's translation built into a pipeline (`translation`). One test binary for
//! both, so CI links the kubetrail crate once for them.

#[path = "../common/mod.rs"]
mod common;
mod fixtures;
mod translation;
