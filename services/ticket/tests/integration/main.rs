//! The crate's integration tests, one binary (one link) for all: a module per concern.

mod callers;
mod common;
mod contract;
mod events;
mod role_matrix;
mod tickets_api;
mod writes;
