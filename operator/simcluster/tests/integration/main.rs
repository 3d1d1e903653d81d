//! The simulated cluster's tests, one binary: the scenarios (`scenarios`, root) and the services'
//! rendered preStop hook run with the real binaries (`prestop`).

mod prestop;
mod scenarios;
