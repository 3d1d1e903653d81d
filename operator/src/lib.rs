//! The Helpdesk operator: reconciles a `HelpdeskPlatform` into the running platform.
//!
//! Pipeline per reconcile: dereference (reads) → [`validate`] (pure) → [`build`] (pure) →
//! apply (writes) → status. `render` runs the pure part without a cluster.

pub mod build;
pub mod checks;
pub mod consistency;
pub mod controller;
pub mod crd;
pub mod leader;
pub mod material;
pub mod names;
pub mod render;
pub mod rules;
pub mod strict;
pub mod telemetry;
pub mod validate;
