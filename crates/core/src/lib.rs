//! kubetrail-core: the record that flows through kubetrail, the configuration value types and
//! the YAML configuration loader. Knows nothing of Kubernetes, SQLite or HTTP.

pub mod config;
pub mod fields;
pub mod record;
pub mod time;

pub use fields::{Fields, Member};
pub use record::{DedupKey, Original, RawJson, Record, RecordKind};
pub use time::Timestamp;

/// The shared, immutable UTF-8 buffer type raw originals can be views into.
pub use bytestring::ByteString;
