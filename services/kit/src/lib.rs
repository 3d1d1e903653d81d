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
//! - [`pagination`]: keyset cursor pagination (`limit`, `cursor`, `X-Next-Cursor`).
//! - [`peer`]: calls to another service with timeout, retries and a circuit breaker.
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
pub mod outbox;
pub mod pagination;
pub mod peer;
pub mod ratelimit;
pub mod runtime;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;

pub use error::{ApiError, ApiJson, ApiResult};
pub use helpdesk_contract as contract;

#[doc(hidden)]
pub mod __private {
    pub use {anyhow, axum, sqlx, tokio_util};
}

/// Declares a service's handler state over its `$inner` struct: `AppState(Arc<$inner>)`, cheap to
/// clone, dereferencing to `$inner`, whose `keys: Arc<JwtKeys>` field the auth extractors verify
/// tokens with.
#[macro_export]
macro_rules! app_state {
    ($inner:ident) => {
        /// Handler state (cheap to clone).
        #[derive(Clone)]
        pub struct AppState(pub ::std::sync::Arc<$inner>);

        impl ::std::ops::Deref for AppState {
            type Target = $inner;
            fn deref(&self) -> &$inner {
                &self.0
            }
        }

        impl $crate::__private::axum::extract::FromRef<AppState>
            for ::std::sync::Arc<$crate::auth::JwtKeys>
        {
            fn from_ref(s: &AppState) -> Self {
                s.keys.clone()
            }
        }
    };
}
