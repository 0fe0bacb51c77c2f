//! kubetrail-kube: the Kubernetes API connection (URL, CA file or directory, token file with
//! TTL, kubeconfig, in-cluster service account) and a resumable, paged list+watch.
//!
//! Layers, each usable alone:
//! - [`KubeConnectionOptions`] (Fluent Bit option names) → [`ResolvedConnection`] via an
//!   injectable [`Environment`];
//! - [`TokenSource`] (cached, re-read after the TTL and after 401s, never logged);
//! - [`KubeClient`] (GET with auth, one retry on 401, errors as [`ApiError`]);
//! - [`Watcher`], a state machine over the [`Api`] trait ([`HttpApi`] over HTTP), with a
//!   swappable [`Backoff`]; frames are parsed by [`frames`];
//! - [`leader`]: Lease leader election ([`leader::Elector`], a state machine over
//!   [`leader::LeaseApi`]) with a checkpoint handed over in the Lease.
//!
//! Knows nothing of the pipeline or the outputs.

pub mod backoff;
pub mod client;
pub mod connection;
pub mod frames;
pub mod http_api;
pub mod kubeconfig;
pub mod leader;
pub mod path;
pub mod status;
pub mod token;
pub mod watcher;

pub use backoff::{Backoff, ExponentialBackoff};
pub use client::{KubeClient, KubeError};
pub use connection::{
    Auth, ConnectionError, ConnectionOrigin, Environment, KubeConnectionOptions,
    ResolvedConnection, TokenFileOption,
};
pub use frames::{RawObject, WatchEventType};
pub use http_api::HttpApi;
pub use path::{ResourcePath, Selectors};
pub use status::{ApiError, Status};
pub use token::{Token, TokenError, TokenSource};
pub use watcher::{
    Api, ChunkSource, GapInfo, GapReason, WatchError, WatchStream, Watcher, WatcherConfig,
    WatcherCounters, WatcherEvent, WatcherStats,
};
