//! The crate's integration tests, one binary (one link) for all: a module per concern.

mod bench;
mod e2e;
mod faults;
mod outage;
mod up;
