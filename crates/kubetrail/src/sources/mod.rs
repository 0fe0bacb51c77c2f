//! The sources: one folder per component. `build` turns an input section into a source.

pub mod audit;
pub mod audit_file;
pub mod audit_webhook;
pub mod kubernetes_events;
