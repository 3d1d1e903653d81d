//! The shared service kit: everything the five Helpdesk services have in common.
//!
//! - [`config`]: typed configuration from the environment, one-line errors naming the variable.
//! - [`error`]: the contract's error shape (`{statusCode, message, error}`) and JSON extraction.
//! - [`http`]: the middleware stack (request id, logs, metrics, CORS, body limit) and the
//!   `/health`, `/ready`, `/metrics` routes.
//! - [`auth`]: Ed25519 JWTs for users and services, and their extractors.
//! - [`events`]: the event envelope and a typed payload per event type.
//! - [`outbox`]: the transactional outbox and its relay.
//! - [`bus`]: the message bus trait, its RabbitMQ implementation and the idempotent consumer runner.
//! - [`db`]: a pool per service on its own schema, with its migrations.
//! - [`json`]: faster serialization of timestamps in responses.
//! - [`pagination`]: keyset cursor pagination (`limit`, `cursor`, `X-Next-Cursor`).
//! - [`peer`]: calls to another service with timeout, retries and a circuit breaker.
//! - [`service`]: the common configuration section, the handlers' state and the wiring of a
//!   service's parts; [`runtime`] runs it.
//! - [`contract`]: the names every service and the operator share (re-export of
//!   `helpdesk-contract`): configuration variables, what each command requires, routes, roles.

pub mod access;
pub mod auth;
pub mod bus;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod http;
pub mod json;
pub mod outbox;
pub mod pagination;
pub mod peer;
pub mod priority;
pub mod ratelimit;
pub mod remembered;
pub mod runtime;
pub mod secret;
pub mod service;
pub mod telemetry;
pub mod trace;

pub use error::{ApiError, ApiJson, ApiResult};

/// Every process built on the kit (the five services, `helpdesk up`, their tests) allocates with
/// mimalloc: glibc's malloc spent ~8 % of a loaded `helpdesk up`'s CPU in `malloc`/`free` and
/// keeps per-thread arenas that grow its resident memory under concurrency.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub use helpdesk_contract as contract;
