//! The crate's integration tests, one binary (one link) for all: a module per concern.

mod audit;
mod common;
mod contract;
