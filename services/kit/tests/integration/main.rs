//! The crate's integration tests, one binary (one link) for all: a module per concern.

mod bus;
mod db;
mod pgbus;
mod relay;
mod smtp;
mod stand_in;
mod telemetry;
mod upgrade;
