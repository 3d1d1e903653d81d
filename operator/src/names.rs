//! Names and labels of everything the operator creates, in one place.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

pub const MANAGER: &str = "helpdesk-operator";
pub const APP_NAME: &str = "helpdesk";
pub const HASH_ANNOTATION: &str = "helpdesk.dev/spec-hash";
pub const CONFIG_HASH_ANNOTATION: &str = "helpdesk.dev/config-hash";
/// On pod templates: a hash of the Secrets someone else provides that the pods read.
pub const SECRETS_HASH_ANNOTATION: &str = "helpdesk.dev/secrets-hash";
pub const DATASTORE_CLIENT_LABEL: &str = "helpdesk.dev/datastore-client";
pub const METRICS_LABEL: &str = "helpdesk.dev/metrics";
/// The port every service listens on (the contract's).
pub const HTTP_PORT: i32 = helpdesk_contract::http::PORT as i32;
pub const POSTGRES_PORT: i32 = 5432;
pub const AMQP_PORT: i32 = 5672;

/// The five services of the platform: the contract's [`helpdesk_contract::Service`] (short name
/// `as_str()`, image `binary()`, HTTP `peers()`, required variables `requires()`).
pub use helpdesk_contract::Service as Component;

/// `<instance>-<suffix>`, shortened with a hash when it would exceed `max` characters.
pub fn child_name(instance: &str, suffix: &str) -> String {
    bounded(&format!("{instance}-{suffix}"), 63)
}

/// Keeps a name within `max` characters (DNS label rules), replacing the tail by a short hash.
pub fn bounded(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let hash = hex::encode(&Sha256::digest(name.as_bytes())[..4]);
    let keep = max - hash.len() - 1;
    let head = name[..keep].trim_end_matches(['-', '.']);
    format!("{head}-{hash}")
}

/// A version usable inside a name: lower case, `[a-z0-9-]` only.
pub fn sanitize_version(version: &str) -> String {
    let s: String = version
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.trim_matches('-').to_string()
}

pub fn service_name(instance: &str, c: Component) -> String {
    child_name(instance, c.as_str())
}

pub fn migration_job_name(instance: &str, c: Component, version: &str) -> String {
    child_name(
        instance,
        &format!("{}-migrate-{}", c.as_str(), sanitize_version(version)),
    )
}

pub fn postgres_name(instance: &str) -> String {
    child_name(instance, "postgres")
}
pub fn rabbitmq_name(instance: &str) -> String {
    child_name(instance, "rabbitmq")
}
pub fn frontend_name(instance: &str) -> String {
    child_name(instance, "frontend")
}
pub fn config_map_name(instance: &str) -> String {
    child_name(instance, "config")
}
pub fn jwt_secret_default(instance: &str) -> String {
    child_name(instance, "jwt")
}
pub fn admin_secret_default(instance: &str) -> String {
    child_name(instance, "admin")
}
pub fn service_tokens_secret(instance: &str) -> String {
    child_name(instance, "service-tokens")
}
pub fn postgres_secret(instance: &str) -> String {
    child_name(instance, "postgres-credentials")
}
pub fn rabbitmq_secret(instance: &str) -> String {
    child_name(instance, "rabbitmq-credentials")
}

/// Labels every child carries; `component` distinguishes the parts of one instance.
pub fn labels(instance: &str, component: &str, version: Option<&str>) -> BTreeMap<String, String> {
    let mut l = selector_labels(instance, component);
    l.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    l.insert("app.kubernetes.io/part-of".into(), APP_NAME.into());
    if let Some(v) = version {
        l.insert("app.kubernetes.io/version".into(), bounded(v, 63));
    }
    l
}

/// The stable subset used in Service and Deployment selectors (never the version).
pub fn selector_labels(instance: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            instance.to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
    ])
}

/// Label selector that finds every child of one instance (used to list and to delete orphans).
pub fn instance_selector(instance: &str) -> String {
    format!("app.kubernetes.io/instance={instance},app.kubernetes.io/managed-by={MANAGER}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_bounded_and_stable() {
        let long = "a".repeat(80);
        let n = child_name(&long, "ticket-migrate-1-2-3");
        assert!(n.len() <= 63);
        assert_eq!(n, child_name(&long, "ticket-migrate-1-2-3"));
        assert_ne!(n, child_name(&long, "ticket-migrate-1-2-4"));
    }

    #[test]
    fn versions_are_sanitized() {
        assert_eq!(sanitize_version("0.1.0"), "0-1-0");
        assert_eq!(sanitize_version("1.0.0-RC_1"), "1-0-0-rc-1");
        assert_eq!(
            migration_job_name("helpdesk", Component::Ticket, "0.2.0"),
            "helpdesk-ticket-migrate-0-2-0"
        );
    }
}
