//! Kubernetes audit events (audit.k8s.io v1 and v1beta1, or without `apiVersion`), shared by
//! the `audit_file` and `audit_webhook` sources: parsing lines and webhook bodies
//! ([`parse_line`], [`parse_body`]) and turning events into records ([`normalize`]) or, for
//! items that are not audit events, into error records ([`error_record`]).
//!
//! A `k8s_audit` record has id `{auditID}/{stage}`, the same dedup key in scope `audit` (so
//! both sources and apiserver retries share one duplicate check), time = `stageTimestamp`, and
//! these fields (each only when the event has it): `audit_id`, `stage`, `level`, `verb`,
//! `user` {`username`, `uid`, `groups`}, `impersonated_user` {`username`, `groups`},
//! `source_ips`, `user_agent`, `object_ref` {`resource`, `subresource`, `namespace`, `name`,
//! `api_group`, `api_version`}, `response_code`, `request_uri`, `decision` and `reason` (the
//! `authorization.k8s.io/*` annotations), `api_version`. The original is the event's exact
//! bytes.
//!
//! An item kept as an error record's original nests at most [`MAX_STORED_DEPTH`] deep; a
//! deeper one is kept as a JSON string of its text ([`nesting`]), so that the readers
//! downstream take the record.

pub mod nesting;
mod normalize;
mod parse;

pub use nesting::MAX_STORED_DEPTH;
pub use normalize::{
    DEDUP_SCOPE, ERROR_DEDUP_SCOPE, ERROR_SOURCE_KIND, error_record, invalid_input_record,
    normalize,
};
pub use parse::{
    AuditItem, AuditParseError, BodyParseError, ItemError, MAX_BODY_ITEMS, parse_body,
    parse_body_owned, parse_body_split, parse_line, parse_line_in,
};

#[cfg(test)]
mod tests;
