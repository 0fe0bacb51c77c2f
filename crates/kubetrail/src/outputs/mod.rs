//! The outputs: one folder per component. `build` turns an output section into an output.

pub mod dead_letter;
pub mod elasticsearch;
pub mod file;
pub mod http;
pub mod http_common;
pub mod loki;
pub mod nats;
pub mod opentelemetry;
pub mod postgresql;
pub mod stdout;
pub mod store;
