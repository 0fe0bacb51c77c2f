//! The filters: one folder per component. `build` turns a filter section into a filter.

pub mod grep;
pub mod modify;
pub mod redact;
