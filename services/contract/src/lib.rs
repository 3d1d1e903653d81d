//! The platform's shared definitions: the names the five services, `helpdesk up` / the gateway
//! and the operator must agree on. A name lives here once; every side uses the constant, so a
//! renamed or newly required variable cannot reach only one of them.
//!
//! - [`var`]: every platform-wide configuration variable (service-specific settings keep their
//!   service's prefix and live in the service).
//! - [`Service`]: the five services, their names, image, env prefix, schema, peers, and which
//!   variables each [`Command`] requires ([`Requirement`]).
//! - [`http`]: the port and the operational paths; [`PUBLIC_ROUTES`], [`INTERNAL_ROUTES`] and
//!   [`INTERNAL_PATHS`]: what the ingress (and `helpdesk up`) routes where.
//! - [`Role`] and [`auth`]: role names, token audiences and issuer.
//!
//! No dependencies: plain data, `const`, and pure checks both sides apply ([`is_valid_email`]).

use std::fmt;

pub mod var;

/// What a service binary is asked to do: `<binary> [serve|migrate]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Run migrations, then serve (the default; the operator's Deployments).
    Serve,
    /// Run migrations and exit (the operator's migration Jobs).
    Migrate,
}

impl Command {
    pub const ALL: [Command; 2] = [Command::Serve, Command::Migrate];

    /// The argument: `serve` or `migrate`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Command::Serve => "serve",
            Command::Migrate => "migrate",
        }
    }

    pub fn parse(arg: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == arg)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One variable a command cannot run without: `var`, or any of its `alternatives` (e.g.
/// `JWT_PUBLIC_KEY` or `JWT_PUBLIC_KEY_FILE`; `DATABASE_URL` or `USER_DATABASE_URL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Requirement {
    /// The variable, named in the error when none is set.
    pub var: &'static str,
    /// Variables that satisfy the requirement instead.
    pub alternatives: &'static [&'static str],
}

impl Requirement {
    /// `var` then its alternatives.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        std::iter::once(self.var).chain(self.alternatives.iter().copied())
    }

    /// Whether one of the names is set.
    pub fn is_met_by(&self, is_set: impl Fn(&str) -> bool) -> bool {
        self.names().any(is_set)
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.var)?;
        if !self.alternatives.is_empty() {
            write!(f, " (or {})", self.alternatives.join(" or "))?;
        }
        Ok(())
    }
}

/// One of the five services. Declaration order is the platform's order everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    User,
    Ticket,
    Notification,
    Audit,
    Admin,
}

const AMQP: Requirement = Requirement {
    var: var::AMQP_URL,
    alternatives: &[],
};
const JWT_PUBLIC: Requirement = Requirement {
    var: var::JWT_PUBLIC_KEY,
    alternatives: &[var::JWT_PUBLIC_KEY_FILE],
};
const JWT_PRIVATE: Requirement = Requirement {
    var: var::JWT_PRIVATE_KEY,
    alternatives: &[var::JWT_PRIVATE_KEY_FILE],
};
const SERVICE_TOKEN: Requirement = Requirement {
    var: var::SERVICE_TOKEN,
    alternatives: &[var::SERVICE_TOKEN_FILE],
};
const USER_SERVICE: Requirement = Requirement {
    var: var::USER_SERVICE_URL,
    alternatives: &[],
};

const fn database(own: &'static [&'static str]) -> Requirement {
    Requirement {
        var: var::DATABASE_URL,
        alternatives: own,
    }
}
const USER_DB: Requirement = database(&["USER_DATABASE_URL"]);
const TICKET_DB: Requirement = database(&["TICKET_DATABASE_URL"]);
const NOTIFICATION_DB: Requirement = database(&["NOTIFICATION_DATABASE_URL"]);
const AUDIT_DB: Requirement = database(&["AUDIT_DATABASE_URL"]);
const ADMIN_DB: Requirement = database(&["ADMIN_DATABASE_URL"]);

impl Service {
    pub const ALL: [Service; 5] = [
        Service::User,
        Service::Ticket,
        Service::Notification,
        Service::Audit,
        Service::Admin,
    ];

    /// Short name: `ticket` (CR keys, Kubernetes object names, labels).
    pub const fn as_str(self) -> &'static str {
        match self {
            Service::User => "user",
            Service::Ticket => "ticket",
            Service::Notification => "notification",
            Service::Audit => "audit",
            Service::Admin => "admin",
        }
    }

    /// Binary, image and crate name, and the name in logs, metrics and service tokens:
    /// `ticket-service`.
    pub const fn binary(self) -> &'static str {
        match self {
            Service::User => "user-service",
            Service::Ticket => "ticket-service",
            Service::Notification => "notification-service",
            Service::Audit => "audit-service",
            Service::Admin => "admin-service",
        }
    }

    /// Prefix of the service's own settings: `TICKET` (`TICKET_DATABASE_URL`, ...).
    pub const fn env_prefix(self) -> &'static str {
        match self {
            Service::User => "USER",
            Service::Ticket => "TICKET",
            Service::Notification => "NOTIFICATION",
            Service::Audit => "AUDIT",
            Service::Admin => "ADMIN",
        }
    }

    /// The PostgreSQL schema the service owns (its connection's `search_path`).
    pub const fn schema(self) -> &'static str {
        match self {
            Service::User => "users",
            Service::Ticket => "tickets",
            Service::Notification => "notifications",
            Service::Audit => "audit",
            Service::Admin => "admin",
        }
    }

    /// The service's own database URL, which wins over [`var::DATABASE_URL`] (database per
    /// service).
    pub const fn database_url_var(self) -> &'static str {
        self.database().alternatives[0]
    }

    const fn database(self) -> Requirement {
        match self {
            Service::User => USER_DB,
            Service::Ticket => TICKET_DB,
            Service::Notification => NOTIFICATION_DB,
            Service::Audit => AUDIT_DB,
            Service::Admin => ADMIN_DB,
        }
    }

    /// Where the other services (and the gateway) find this one: `AUDIT_SERVICE_URL`.
    pub const fn url_var(self) -> &'static str {
        match self {
            Service::User => var::USER_SERVICE_URL,
            Service::Ticket => var::TICKET_SERVICE_URL,
            Service::Notification => var::NOTIFICATION_SERVICE_URL,
            Service::Audit => var::AUDIT_SERVICE_URL,
            Service::Admin => var::ADMIN_SERVICE_URL,
        }
    }

    /// This service's own credential, when one process runs several services (`helpdesk up`):
    /// read before the shared [`var::SERVICE_TOKEN`], so each service calls its peers as itself.
    pub const fn service_token_var(self) -> &'static str {
        match self {
            Service::User => "USER_SERVICE_TOKEN",
            Service::Ticket => "TICKET_SERVICE_TOKEN",
            Service::Notification => "NOTIFICATION_SERVICE_TOKEN",
            Service::Audit => "AUDIT_SERVICE_TOKEN",
            Service::Admin => "ADMIN_SERVICE_TOKEN",
        }
    }

    /// Services this one calls over HTTP, each found through its [`url_var`](Self::url_var)
    /// (ticket → audit for a ticket's audit trail, admin → user for user administration).
    pub const fn peers(self) -> &'static [Service] {
        match self {
            Service::Ticket => &[Service::Audit],
            Service::Admin => &[Service::User],
            Service::User | Service::Notification | Service::Audit => &[],
        }
    }

    /// What the service's binary cannot run `command` without; it exits 2 naming the first
    /// missing one. `migrate` needs the database only. Anything else it reads has a default or
    /// is optional (e.g. ticket-service without `AUDIT_SERVICE_URL` answers the audit trail with
    /// 503; notification-service without SMTP records emails and marks them failed).
    pub const fn requires(self, command: Command) -> &'static [Requirement] {
        match (self, command) {
            (_, Command::Migrate) => match self {
                Service::User => &[USER_DB],
                Service::Ticket => &[TICKET_DB],
                Service::Notification => &[NOTIFICATION_DB],
                Service::Audit => &[AUDIT_DB],
                Service::Admin => &[ADMIN_DB],
            },
            (Service::User, Command::Serve) => &[USER_DB, AMQP, JWT_PUBLIC, JWT_PRIVATE],
            (Service::Ticket, Command::Serve) => &[TICKET_DB, AMQP, JWT_PUBLIC],
            (Service::Notification, Command::Serve) => &[NOTIFICATION_DB, AMQP, JWT_PUBLIC],
            (Service::Audit, Command::Serve) => &[AUDIT_DB, AMQP, JWT_PUBLIC],
            (Service::Admin, Command::Serve) => {
                &[ADMIN_DB, AMQP, JWT_PUBLIC, USER_SERVICE, SERVICE_TOKEN]
            }
        }
    }

    /// The requirements of `command` that `is_set` does not meet.
    pub fn missing(self, command: Command, is_set: impl Fn(&str) -> bool) -> Vec<Requirement> {
        self.requires(command)
            .iter()
            .filter(|r| !r.is_met_by(&is_set))
            .copied()
            .collect()
    }

    /// From the short name (`ticket`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// From the binary or image name (`ticket-service`).
    pub fn from_binary(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.binary() == name)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The HTTP side every service shares.
pub mod http {
    /// Every service listens on this port (container port, Service port, `BIND_ADDR`).
    pub const PORT: u16 = 8080;
    /// The default `BIND_ADDR`.
    pub const DEFAULT_BIND_ADDR: &str = "0.0.0.0:8080";
    /// Liveness (and start-up) probe: the process answers.
    pub const HEALTH_PATH: &str = "/health";
    /// Readiness probe: database and broker reachable.
    pub const READY_PATH: &str = "/ready";
    /// Prometheus metrics.
    pub const METRICS_PATH: &str = "/metrics";
    /// The OpenAPI document and the Swagger UI.
    pub const OPENAPI_PATH: &str = "/api/openapi.json";
    pub const DOCS_PATH: &str = "/api/docs";
}

mod routes;
pub use routes::{
    INTERNAL_PATHS, INTERNAL_ROUTES, PUBLIC_ROUTES, Route, is_internal_path, public_route,
    route_for,
};

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    User,
    Agent,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::User, Role::Agent, Role::Admin];

    /// As in tokens, the API and `SIGNUP_DEFAULT_ROLE`: `USER`, `AGENT`, `ADMIN`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::User => "USER",
            Role::Agent => "AGENT",
            Role::Admin => "ADMIN",
        }
    }

    /// AGENT or ADMIN.
    pub const fn is_staff(self) -> bool {
        matches!(self, Role::Agent | Role::Admin)
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Role of new sign-ups when `SIGNUP_DEFAULT_ROLE` is not set.
pub const DEFAULT_SIGNUP_ROLE: Role = Role::Agent;

/// Tokens: user-service signs user tokens, the operator (or `helpdesk up`) mints service
/// credentials; every service verifies both with the public key.
pub mod auth {
    /// Audience of end-user tokens.
    pub const USER_AUDIENCE: &str = "helpdesk";
    /// Audience of service-to-service credentials (`sub` = the caller's
    /// [`binary`](crate::Service::binary) name).
    pub const SERVICE_AUDIENCE: &str = "helpdesk-internal";
    /// Issuer of both kinds, unless `JWT_ISSUER` says otherwise.
    pub const ISSUER: &str = "helpdesk";
    /// Lifetime of user tokens when `JWT_TTL` is not set.
    pub const DEFAULT_TOKEN_TTL: &str = "7d";
}

/// A pragmatic email check: one `@`, a non-empty local part of at most 64 characters, a dotted
/// domain without empty labels, no blanks or control characters, at most 254 characters. The
/// services use it for what users send and for their configuration (`BOOTSTRAP_ADMIN_EMAIL`,
/// `STAFF_NOTIFY_EMAIL`); the operator for the addresses a platform's spec names, so it refuses
/// exactly what a service would refuse at start-up.
pub fn is_valid_email(email: &str) -> bool {
    if email.chars().count() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.chars().count() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
}

/// UID and GID the service images run as (`USER 65532:65532` in the Dockerfile). Outside
/// OpenShift the operator sets them (and `fsGroup`) on the pods, so mounted Secrets are readable.
pub const SERVICE_IMAGE_UID: i64 = 65532;

/// Stopping a service pod gracefully: the orchestrator runs `<binary> pre-stop` (it sleeps
/// [`PRE_STOP_DELAY_SECS`](lifecycle::PRE_STOP_DELAY_SECS) so endpoints and load balancers stop
/// sending new requests), then sends SIGTERM; the service finishes in-flight requests and gives
/// its background workers up to [`SHUTDOWN_DRAIN_SECS`](lifecycle::SHUTDOWN_DRAIN_SECS).
pub mod lifecycle {
    /// The argument that makes a service binary sleep and exit (the images have no shell).
    pub const PRE_STOP: &str = "pre-stop";
    /// How long `pre-stop` waits before the pod gets SIGTERM.
    pub const PRE_STOP_DELAY_SECS: u64 = 5;
    /// How long a service waits for its workers after SIGTERM before exiting anyway.
    pub const SHUTDOWN_DRAIN_SECS: u64 = 30;
}

#[cfg(test)]
mod tests;
