//! The crate's integration tests, one binary (one link) for all: a module per concern.

mod auth_flows;
mod common;
mod contract;
mod reset_and_internal;
mod secrets_in_logs;
