//! The operator's integration tests, one binary (one link) for all: the CLI (`render`, `crd`,
//! `render --check`), the backup script against a real PostgreSQL, the operator against a
//! Kubernetes API over HTTP, and the packaging (chart, CSV, RBAC rules).

mod backup;
mod cli;
mod cluster;
mod packaging;
