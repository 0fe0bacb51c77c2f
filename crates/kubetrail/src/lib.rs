//! kubetrail: records what happens in a Kubernetes cluster (Events and audit logs) and
//! delivers each record exactly once to the stores people already run.
//!
//! The pipeline (`pipeline`) defines what components are; `sources`, `filters` and `outputs`
//! hold one folder per component; `topology` builds and runs the graph from configuration.

pub mod filters;
#[doc(hidden)]
pub mod fuzzing;
pub mod outputs;
pub mod pipeline;
pub mod service;
pub mod shutdown;
pub mod sources;
pub mod telemetry;
pub mod topology;
