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

/// Configuration variable names, the same everywhere a service runs (tests, `helpdesk up`, the
/// operator's Deployments and Jobs).
pub mod var {
    /// Suffix of the variant that names a file holding the value (a mounted Secret).
    pub const FILE_SUFFIX: &str = "_FILE";

    /// HTTP listen address, `host:port`.
    pub const BIND_ADDR: &str = "BIND_ADDR";
    /// PostgreSQL URL (a service may take its own, `<PREFIX>_DATABASE_URL`).
    pub const DATABASE_URL: &str = "DATABASE_URL";
    /// RabbitMQ URL (the virtual host comes from it).
    pub const AMQP_URL: &str = "AMQP_URL";
    /// Prefix of exchange and queue names (several platforms on one broker).
    pub const BUS_PREFIX: &str = "BUS_PREFIX";
    /// Delivery attempts of an event before it is dead-lettered.
    pub const EVENT_MAX_ATTEMPTS: &str = "EVENT_MAX_ATTEMPTS";
    /// Delay before the first retry of a failed event.
    pub const EVENT_RETRY_BASE_DELAY: &str = "EVENT_RETRY_BASE_DELAY";

    /// `smtp://user:pass@host:port?tls=none|starttls|tls` (or `smtps://`).
    pub const SMTP_URL: &str = "SMTP_URL";
    pub const SMTP_URL_FILE: &str = "SMTP_URL_FILE";
    /// SMTP server, when not given as [`SMTP_URL`].
    pub const SMTP_HOST: &str = "SMTP_HOST";
    pub const SMTP_PORT: &str = "SMTP_PORT";
    /// `none`, `starttls` or `tls`.
    pub const SMTP_TLS: &str = "SMTP_TLS";
    pub const SMTP_USERNAME: &str = "SMTP_USERNAME";
    pub const SMTP_PASSWORD: &str = "SMTP_PASSWORD";
    pub const SMTP_PASSWORD_FILE: &str = "SMTP_PASSWORD_FILE";
    /// A PEM file with an extra trusted root certificate (a private relay's CA).
    pub const SMTP_TLS_CA_FILE: &str = "SMTP_TLS_CA_FILE";
    /// Bound of each SMTP exchange.
    pub const SMTP_TIMEOUT: &str = "SMTP_TIMEOUT";
    pub const SMTP_POOL_SIZE: &str = "SMTP_POOL_SIZE";
    /// Sender address of outgoing mail.
    pub const MAIL_FROM: &str = "MAIL_FROM";
    /// Where new-ticket notices for staff go.
    pub const STAFF_NOTIFY_EMAIL: &str = "STAFF_NOTIFY_EMAIL";
    /// Write outgoing mail as `.eml` files to this folder instead of sending it (local runs).
    pub const NOTIFICATION_MAIL_DIR: &str = "NOTIFICATION_MAIL_DIR";

    /// The frontend's base URL: used in links, and the default CORS origin.
    pub const FRONTEND_BASE_URL: &str = "FRONTEND_BASE_URL";
    /// Comma-separated allowed origins (default: [`FRONTEND_BASE_URL`]).
    pub const CORS_ALLOWED_ORIGINS: &str = "CORS_ALLOWED_ORIGINS";
    /// Take the client address from `X-Forwarded-For` (behind a trusted ingress).
    pub const TRUST_FORWARDED_FOR: &str = "TRUST_FORWARDED_FOR";
    /// Largest accepted request body.
    pub const HTTP_BODY_LIMIT_BYTES: &str = "HTTP_BODY_LIMIT_BYTES";

    /// Ed25519 signing key, PKCS#8 PEM (user-service only).
    pub const JWT_PRIVATE_KEY: &str = "JWT_PRIVATE_KEY";
    pub const JWT_PRIVATE_KEY_FILE: &str = "JWT_PRIVATE_KEY_FILE";
    /// Ed25519 verification key, SPKI PEM (every service).
    pub const JWT_PUBLIC_KEY: &str = "JWT_PUBLIC_KEY";
    pub const JWT_PUBLIC_KEY_FILE: &str = "JWT_PUBLIC_KEY_FILE";
    /// Lifetime of user tokens, e.g. `7d`.
    pub const JWT_TTL: &str = "JWT_TTL";
    pub const JWT_ISSUER: &str = "JWT_ISSUER";
    /// This service's credential for internal calls.
    pub const SERVICE_TOKEN: &str = "SERVICE_TOKEN";
    pub const SERVICE_TOKEN_FILE: &str = "SERVICE_TOKEN_FILE";

    /// Base URL of each service, for the services that call it and for the gateway
    /// (see [`Service::url_var`](crate::Service::url_var)).
    pub const USER_SERVICE_URL: &str = "USER_SERVICE_URL";
    pub const TICKET_SERVICE_URL: &str = "TICKET_SERVICE_URL";
    pub const NOTIFICATION_SERVICE_URL: &str = "NOTIFICATION_SERVICE_URL";
    pub const AUDIT_SERVICE_URL: &str = "AUDIT_SERVICE_URL";
    pub const ADMIN_SERVICE_URL: &str = "ADMIN_SERVICE_URL";

    /// The first administrator, created when missing (user-service).
    pub const BOOTSTRAP_ADMIN_EMAIL: &str = "BOOTSTRAP_ADMIN_EMAIL";
    pub const BOOTSTRAP_ADMIN_PASSWORD: &str = "BOOTSTRAP_ADMIN_PASSWORD";
    pub const BOOTSTRAP_ADMIN_PASSWORD_FILE: &str = "BOOTSTRAP_ADMIN_PASSWORD_FILE";
    /// Role of new sign-ups: `USER`, `AGENT` or `ADMIN`.
    pub const SIGNUP_DEFAULT_ROLE: &str = "SIGNUP_DEFAULT_ROLE";

    /// OTLP/HTTP collector; traces go to `<endpoint>/v1/traces`.
    pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    /// OTLP/HTTP traces URL, as given (wins over [`OTEL_EXPORTER_OTLP_ENDPOINT`]).
    pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    /// Log filter.
    pub const RUST_LOG: &str = "RUST_LOG";

    /// Variables that may be given as a file path instead, with their `_FILE` variant.
    pub const WITH_FILE_VARIANT: &[(&str, &str)] = &[
        (JWT_PRIVATE_KEY, JWT_PRIVATE_KEY_FILE),
        (JWT_PUBLIC_KEY, JWT_PUBLIC_KEY_FILE),
        (SERVICE_TOKEN, SERVICE_TOKEN_FILE),
        (BOOTSTRAP_ADMIN_PASSWORD, BOOTSTRAP_ADMIN_PASSWORD_FILE),
        (SMTP_URL, SMTP_URL_FILE),
        (SMTP_PASSWORD, SMTP_PASSWORD_FILE),
    ];
}

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

/// A path (prefix, or exact) and the service that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub path: &'static str,
    /// Only this path, not the ones below it.
    pub exact: bool,
    pub service: Service,
    /// Stable short name (e.g. the suffix of an OpenShift Route's name).
    pub name: &'static str,
}

impl Route {
    /// Whether the route answers `path`: the path itself, or (for a prefix) a path below it,
    /// element-wise as an Ingress `Prefix` path (`/auth` matches `/auth/login`, not `/authx`).
    pub fn matches(&self, path: &str) -> bool {
        path == self.path
            || (!self.exact
                && path
                    .strip_prefix(self.path)
                    .is_some_and(|rest| rest.starts_with('/')))
    }
}

const fn route(path: &'static str, service: Service, name: &'static str) -> Route {
    Route {
        path,
        exact: false,
        service,
        name,
    }
}

/// The public entry point's path table: the cluster's Ingress (or Routes), `helpdesk up` and the
/// gateway route exactly these. A frontend, when there is one, takes `/` (everything else).
pub const PUBLIC_ROUTES: &[Route] = &[
    route("/auth", Service::User, "auth"),
    route("/.well-known", Service::User, "well-known"),
    route("/tickets", Service::Ticket, "tickets"),
    route("/admin", Service::Admin, "admin"),
    route("/audit", Service::Audit, "audit"),
    // "internal or ADMIN": the rest of /notifications is internal.
    route(
        "/notifications/status",
        Service::Notification,
        "notifications-status",
    ),
    route(http::DOCS_PATH, Service::User, "api-docs"),
    Route {
        path: http::OPENAPI_PATH,
        exact: true,
        service: Service::User,
        name: "openapi",
    },
];

/// Service-to-service prefixes: never on the public entry point.
pub const INTERNAL_ROUTES: &[Route] = &[
    route("/users", Service::User, "users"),
    route("/notifications", Service::Notification, "notifications"),
];

/// Service-to-service routes below a public prefix: the public entry point of `helpdesk up` and
/// the gateway refuse them (the cluster's Ingress cannot exclude a sub-path; there they stay
/// behind their service credential).
pub const INTERNAL_PATHS: &[&str] = &["/auth/validate", "/audit/log"];

/// Whether `path` is an internal route below a public prefix.
pub fn is_internal_path(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    INTERNAL_PATHS.contains(&path)
}

/// The route of `routes` that answers `path` (the longest match, as an Ingress picks).
pub fn route_for<'a>(routes: &'a [Route], path: &str) -> Option<&'a Route> {
    routes
        .iter()
        .filter(|r| r.matches(path))
        .max_by_key(|r| r.path.len())
}

/// The public route for `path`, `None` for internal paths and paths no service answers.
pub fn public_route(path: &str) -> Option<&'static Route> {
    if is_internal_path(path) {
        return None;
    }
    route_for(PUBLIC_ROUTES, path)
}

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
mod tests {
    use super::*;

    #[test]
    fn file_variants_are_the_name_with_the_suffix() {
        for (name, file) in var::WITH_FILE_VARIANT {
            assert_eq!(*file, format!("{name}{}", var::FILE_SUFFIX));
        }
    }

    #[test]
    fn service_names_follow_one_pattern() {
        for s in Service::ALL {
            assert_eq!(s.binary(), format!("{}-service", s.as_str()));
            assert_eq!(s.env_prefix(), s.as_str().to_ascii_uppercase());
            assert_eq!(
                s.database_url_var(),
                format!("{}_{}", s.env_prefix(), var::DATABASE_URL)
            );
            assert_eq!(s.url_var(), format!("{}_SERVICE_URL", s.env_prefix()));
            assert_eq!(Service::parse(s.as_str()), Some(s));
            assert_eq!(Service::from_binary(s.binary()), Some(s));
            assert!(!s.peers().contains(&s));
        }
    }

    #[test]
    fn migrate_needs_the_database_only_and_serve_needs_it_too() {
        for s in Service::ALL {
            let migrate = s.requires(Command::Migrate);
            assert_eq!(migrate.len(), 1);
            assert_eq!(migrate[0].var, var::DATABASE_URL);
            assert!(s.requires(Command::Serve).contains(&migrate[0]));
            assert!(migrate[0].is_met_by(|v| v == s.database_url_var()));
        }
    }

    #[test]
    fn only_user_service_needs_the_signing_key() {
        for s in Service::ALL {
            let needs = s
                .requires(Command::Serve)
                .iter()
                .any(|r| r.var == var::JWT_PRIVATE_KEY);
            assert_eq!(needs, s == Service::User);
        }
    }

    #[test]
    fn requirements_are_met_by_any_of_their_names() {
        let r = JWT_PUBLIC;
        assert!(r.is_met_by(|v| v == var::JWT_PUBLIC_KEY_FILE));
        assert!(!r.is_met_by(|v| v == var::JWT_PRIVATE_KEY));
        assert_eq!(r.to_string(), "JWT_PUBLIC_KEY (or JWT_PUBLIC_KEY_FILE)");
        let missing = Service::Admin.missing(Command::Serve, |v| v != var::USER_SERVICE_URL);
        assert_eq!(missing, [USER_SERVICE]);
    }

    #[test]
    fn public_routes_resolve_by_longest_prefix_and_hide_internal_paths() {
        let svc = |p: &str| public_route(p).map(|r| r.service);
        assert_eq!(svc("/auth/login"), Some(Service::User));
        assert_eq!(svc("/auth"), Some(Service::User));
        assert_eq!(svc("/authx"), None);
        assert_eq!(svc("/tickets/1/comments"), Some(Service::Ticket));
        assert_eq!(svc("/notifications/status/1"), Some(Service::Notification));
        assert_eq!(svc("/notifications/email"), None);
        assert_eq!(svc("/users"), None);
        assert_eq!(svc("/auth/validate"), None);
        assert_eq!(svc("/audit/log/"), None);
        assert_eq!(svc("/api/openapi.json"), Some(Service::User));
        assert_eq!(svc("/api/openapi.json/x"), None);
        assert_eq!(
            route_for(INTERNAL_ROUTES, "/notifications/email").map(|r| r.service),
            Some(Service::Notification)
        );
        let mut names: Vec<_> = PUBLIC_ROUTES.iter().map(|r| r.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), PUBLIC_ROUTES.len(), "route names are unique");
    }

    #[test]
    fn internal_paths_sit_below_a_public_prefix() {
        for p in INTERNAL_PATHS {
            assert!(route_for(PUBLIC_ROUTES, p).is_some(), "{p}");
        }
        for r in INTERNAL_ROUTES {
            assert!(route_for(PUBLIC_ROUTES, r.path).is_none(), "{}", r.path);
        }
    }

    #[test]
    fn roles_and_commands_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("admin"), None);
        for c in Command::ALL {
            assert_eq!(Command::parse(c.as_str()), Some(c));
        }
        assert_eq!(
            http::DEFAULT_BIND_ADDR,
            format!("0.0.0.0:{}", http::PORT),
            "BIND_ADDR default is the shared port"
        );
    }
}
