//! The crate's integration tests, one binary (one link) for all: a module per concern.

mod common;
mod contract;
mod delivery;
mod mail_flow;
