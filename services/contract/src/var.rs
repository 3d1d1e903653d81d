//! Configuration variable names, the same everywhere a service runs (tests, `helpdesk up`, the
//! operator's Deployments and Jobs).

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
