//! Leader election over a `coordination.k8s.io/v1` Lease, with a checkpoint handed from one
//! leader to the next in an annotation of the same Lease.
//!
//! The rules are client-go's (`tools/leaderelection`), with a fence added:
//! - A candidate polls the Lease every `retry_period` (with client-go's jitter, ×1.0–2.2). It
//!   takes a Lease held by someone else only once it has seen the record unchanged for the
//!   record's `leaseDurationSeconds`, measured by its own clock (never by the timestamps in the
//!   record, which come from another clock). Every write carries the `resourceVersion` read, so
//!   of two candidates one wins and the other gets 409.
//! - The holder renews every `retry_period`. It may emit only until `renew_deadline` after it
//!   *sent* its last successful renewal ([`Fence`]); since a candidate waits a whole
//!   `lease_duration` (more than `renew_deadline`) after the last change it saw, which it saw
//!   after that renewal was sent, the two never emit at the same time. The fence is checked by
//!   whoever emits, right before each commit, so it holds even while the renewal task is stuck.
//! - A holder whose Lease vanished (deleted by hand) creates it again at its next renewal, with
//!   its handover, and goes on leading; a standby that had seen the Lease leaves it a
//!   `lease_duration` to do so before creating it itself. Whoever creates a missing Lease
//!   waits one `lease_duration` before emitting: it may have been deleted under a holder that
//!   is still active.
//! - A graceful shutdown releases the Lease (holder cleared, as client-go does) after the last
//!   commit, marked as released in the handover, so the next leader starts at once.
//!
//! The handover ([`Handover`], annotation `kubetrail.io/checkpoint`) is written with every
//! renewal: each stream's committed position and the time of its last record, plus until when
//! the writer may still commit. The next leader resumes from it.
//!
//! Layers: [`LeaseApi`] (get/create/update, [`HttpLeaseApi`] over HTTP, scripted in tests),
//! [`Elector`] (the state machine, one step function, driven by [`Elector::next`]),
//! [`LeaderElectionOptions`] (the `leader_election.*` options).

pub mod config;
pub mod elector;
pub mod handover;
pub mod lease;

pub use config::{LeaderConfigError, LeaderElectionConfig, LeaderElectionOptions};
pub use elector::{ElectionEvent, Elector, Fence, LossReason, WallClock};
pub use handover::{CHECKPOINT_ANNOTATION, Handover, HandoverBook, StreamHandover};
pub use lease::{HttpLeaseApi, Lease, LeaseApi, LeaseError};

#[cfg(test)]
mod tests;
