//! The simulated cluster.
