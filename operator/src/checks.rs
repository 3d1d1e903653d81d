//! Field-level checks of a spec, each reported at its field's path: names that become object
//! names, storage and resource quantities, email addresses, and the ranges the CRD schema
//! declares (`render` has no API server to enforce them). The mode choices (which datastore,
//! Ingress or Route) are `validate`'s.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};

use crate::crd::{HelpdeskPlatform, SecretKeyRef, SecretRef};
use crate::names::Component;
use crate::rules;
use crate::validate::FieldError;

/// Longest platform name: children append suffixes (`-rabbitmq-credentials`, `-notification`),
/// the managed datastores' StatefulSets (`<name>-postgres`) must stay within 52 characters
/// (their pods' `controller-revision-hash` label is the name plus a hash, at most 63), and the
/// name is the `app.kubernetes.io/instance` label of everything.
pub const MAX_NAME: usize = 40;
/// With the RabbitMQ Cluster Operator: its StatefulSet `<name>-rabbitmq-server` within 52.
pub const MAX_NAME_RABBITMQ_OPERATOR: usize = 52 - "-rabbitmq-server".len();
/// With scheduled backups of the managed PostgreSQL: the CronJob `<name>-postgres-backup` within
/// 52 (Kubernetes' limit for CronJob names: its Jobs append an 11-character suffix).
pub const MAX_NAME_BACKUP: usize = 52 - "-postgres-backup".len();

/// Collects every field-level problem of `p` into `errs`.
pub fn spec(p: &HelpdeskPlatform, errs: &mut Vec<FieldError>) {
    let mut e = Errs(errs);
    let s = &p.spec;
    metadata(p, &mut e);

    if !s
        .version
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        || s.version.is_empty()
        || s.version.len() > 128
    {
        e.at(
            "spec.version",
            format!(
                "{:?} is not a valid image tag (letters, digits, '.', '-', '_'; at most 128)",
                s.version
            ),
        );
    } else if !s.version.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !s.version.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        e.at(
            "spec.version",
            format!(
                "{:?} must start and end with a letter or digit (it is also the app.kubernetes.io/version label)",
                s.version
            ),
        );
    }
    let registry = s.image.registry.as_str();
    if registry.trim_end_matches('/').is_empty()
        || registry.contains(char::is_whitespace)
        || registry.contains("://")
    {
        e.at(
            "spec.image.registry",
            format!("{registry:?} is not an image repository prefix like ghcr.io/helpdesk"),
        );
    }
    for (i, name) in s.image.pull_secrets.iter().enumerate() {
        e.check(
            &format!("spec.image.pullSecrets[{i}]"),
            name,
            rules::dns1123_subdomain,
        );
    }

    for c in Component::ALL {
        let path = format!("spec.services.{}", c.as_str());
        let svc = s.services.get(c);
        e.range(&format!("{path}.replicas"), svc.replicas, 0, 100);
        if let Some(a) = &svc.autoscaling {
            let ap = format!("{path}.autoscaling");
            e.range(&format!("{ap}.minReplicas"), a.min_replicas, 1, 100);
            e.range(&format!("{ap}.maxReplicas"), a.max_replicas, 1, 100);
            if a.min_replicas > a.max_replicas {
                e.at(
                    &format!("{ap}.minReplicas"),
                    format!(
                        "{} must not exceed maxReplicas ({})",
                        a.min_replicas, a.max_replicas
                    ),
                );
            }
            e.range(
                &format!("{ap}.targetCPUUtilizationPercentage"),
                a.target_cpu_utilization_percentage,
                1,
                100,
            );
        }
        resources(&format!("{path}.resources"), svc.resources.as_ref(), &mut e);
        env(&format!("{path}.env"), &svc.env, &mut e);
    }

    let pg = &s.postgres;
    if let Some(m) = &pg.managed {
        let path = "spec.postgres.managed";
        e.check(&format!("{path}.storage"), &m.storage, rules::storage);
        storage_class(path, m.storage_class_name.as_deref(), &mut e);
        image(&format!("{path}.image"), &m.image, &mut e);
        resources(&format!("{path}.resources"), m.resources.as_ref(), &mut e);
    }
    if let Some(c) = &pg.cloud_native_pg {
        let path = "spec.postgres.cloudNativePG";
        e.range(&format!("{path}.instances"), c.instances, 1, 9);
        e.check(&format!("{path}.storage"), &c.storage, rules::storage);
        storage_class(path, c.storage_class_name.as_deref(), &mut e);
        if let Some(i) = &c.image_name {
            image(&format!("{path}.imageName"), i, &mut e);
        }
    }
    if let Some(b) = &pg.backup {
        let path = "spec.postgres.backup";
        e.check(
            &format!("{path}.schedule"),
            &b.schedule,
            rules::cron_schedule,
        );
        e.range(&format!("{path}.retention"), b.retention, 1, 1000);
        e.check(&format!("{path}.storage"), &b.storage, rules::storage);
        storage_class(path, b.storage_class_name.as_deref(), &mut e);
    }
    if let Some(x) = &pg.external {
        key_ref("spec.postgres.external.secretRef", &x.secret_ref, &mut e);
        for c in Component::ALL {
            if let Some(r) = x.per_service.get(c) {
                let path = format!("spec.postgres.external.perService.{}", c.as_str());
                key_ref(&path, r, &mut e);
            }
        }
    }
    let mq = &s.rabbitmq;
    if let Some(m) = &mq.managed {
        let path = "spec.rabbitmq.managed";
        e.check(&format!("{path}.storage"), &m.storage, rules::storage);
        storage_class(path, m.storage_class_name.as_deref(), &mut e);
        image(&format!("{path}.image"), &m.image, &mut e);
        resources(&format!("{path}.resources"), m.resources.as_ref(), &mut e);
    }
    if let Some(o) = &mq.rabbitmq_cluster_operator {
        let path = "spec.rabbitmq.rabbitmqClusterOperator";
        e.range(&format!("{path}.replicas"), o.replicas, 1, 9);
        e.check(&format!("{path}.storage"), &o.storage, rules::storage);
        storage_class(path, o.storage_class_name.as_deref(), &mut e);
    }
    if let Some(x) = &mq.external {
        key_ref("spec.rabbitmq.external.secretRef", &x.secret_ref, &mut e);
    }

    let host = s.ingress.host.as_str();
    if let Some(smtp) = &s.smtp {
        let h = smtp.host.to_ascii_lowercase();
        if rules::dns1123_subdomain(&h).is_err() && h.parse::<std::net::IpAddr>().is_err() {
            e.at(
                "spec.smtp.host",
                format!("{:?} is not a host name or IP address", smtp.host),
            );
        }
        e.range("spec.smtp.port", smtp.port, 1, 65535);
        match &smtp.from {
            Some(from) => e.check("spec.smtp.from", from, rules::mailbox),
            None => {
                if rules::email(&format!("helpdesk@{host}")).is_err() {
                    e.at(
                        "spec.smtp.from",
                        format!("is unset and the default helpdesk@{host} is not an email address (spec.ingress.host has no dot): set it"),
                    );
                }
            }
        }
        if let Some(to) = &smtp.staff_notify_email {
            e.check("spec.smtp.staffNotifyEmail", to, rules::email);
        }
        if let Some(r) = &smtp.credentials_secret_ref {
            secret_ref("spec.smtp.credentialsSecretRef", r, &mut e);
        }
    }
    let auth = &s.auth;
    if let Some(r) = &auth.signing_key_secret_ref {
        secret_ref("spec.auth.signingKeySecretRef", r, &mut e);
    }
    match &auth.bootstrap_admin_secret_ref {
        Some(r) => secret_ref("spec.auth.bootstrapAdminSecretRef", r, &mut e),
        None => {
            if rules::email(&crate::material::default_admin_email(host)).is_err() {
                e.at(
                    "spec.auth.bootstrapAdminSecretRef",
                    format!("is unset and the generated administrator {} would not be a valid email address (spec.ingress.host has no dot): set it", crate::material::default_admin_email(host)),
                );
            }
        }
    }

    let ing = &s.ingress;
    if let Some(class) = &ing.class_name {
        e.check("spec.ingress.className", class, rules::dns1123_subdomain);
    }
    if let Some(tls) = &ing.tls_secret_name {
        e.check("spec.ingress.tlsSecretName", tls, rules::dns1123_subdomain);
    }
    if let Some(f) = &s.frontend {
        image("spec.frontend.image", &f.image, &mut e);
        e.range("spec.frontend.replicas", f.replicas, 0, 100);
        e.range("spec.frontend.port", f.port, 1, 65535);
        resources("spec.frontend.resources", f.resources.as_ref(), &mut e);
    }
}

fn metadata(p: &HelpdeskPlatform, e: &mut Errs) {
    let name = p.metadata.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        e.at("metadata.name", "is required");
        return;
    }
    // The platform's Services are `<name>-<service>`: DNS-1035 labels (no dots, a leading letter).
    if let Err(why) = rules::dns1035_label(name) {
        e.at(
            "metadata.name",
            format!("{name:?} {why} (it prefixes the platform's Service names)"),
        );
    }
    let operator = p.spec.rabbitmq.rabbitmq_cluster_operator.is_some();
    if name.len() > MAX_NAME {
        e.at(
            "metadata.name",
            format!("{name:?} is {} characters, at most {MAX_NAME} are allowed (children append suffixes such as -rabbitmq-credentials; StatefulSet names stay within 52)", name.len()),
        );
    } else if operator && name.len() > MAX_NAME_RABBITMQ_OPERATOR {
        e.at(
            "metadata.name",
            format!("{name:?} is {} characters, at most {MAX_NAME_RABBITMQ_OPERATOR} are allowed with spec.rabbitmq.rabbitmqClusterOperator (its StatefulSet {name}-rabbitmq-server must stay within 52)", name.len()),
        );
    }
    let cron_job = p.spec.postgres.cloud_native_pg.is_none()
        && p.spec.postgres.external.is_none()
        && p.spec.postgres.backup.is_some();
    if cron_job && name.len() <= MAX_NAME && name.len() > MAX_NAME_BACKUP {
        e.at(
            "metadata.name",
            format!("{name:?} is {} characters, at most {MAX_NAME_BACKUP} are allowed with spec.postgres.backup (its CronJob {name}-postgres-backup must stay within 52)", name.len()),
        );
    }
    if let Some(ns) = &p.metadata.namespace {
        e.check("metadata.namespace", ns, rules::dns1123_label);
    }
}

fn storage_class(path: &str, class: Option<&str>, e: &mut Errs) {
    if let Some(c) = class {
        e.check(
            &format!("{path}.storageClassName"),
            c,
            rules::dns1123_subdomain,
        );
    }
}

fn image(path: &str, image: &str, e: &mut Errs) {
    if image.trim().is_empty() || image.contains(char::is_whitespace) {
        e.at(path, format!("{image:?} is not an image reference"));
    }
}

fn secret_ref(path: &str, r: &SecretRef, e: &mut Errs) {
    e.check(&format!("{path}.name"), &r.name, rules::dns1123_subdomain);
}

fn key_ref(path: &str, r: &SecretKeyRef, e: &mut Errs) {
    e.check(&format!("{path}.name"), &r.name, rules::dns1123_subdomain);
    e.check(&format!("{path}.key"), &r.key, rules::config_key);
}

/// Quantities of requests and limits, and no request above its limit (the API server's rule).
fn resources(path: &str, r: Option<&ResourceRequirements>, e: &mut Errs) {
    let Some(r) = r else { return };
    let empty = BTreeMap::new();
    let requests = r.requests.as_ref().unwrap_or(&empty);
    let limits = r.limits.as_ref().unwrap_or(&empty);
    for (kind, map) in [("requests", requests), ("limits", limits)] {
        for (res, q) in map {
            e.check(
                &format!("{path}.{kind}.{res}"),
                &q.0,
                rules::resource_quantity,
            );
        }
    }
    for (res, q) in requests {
        if let (Some(req), Some(lim)) = (
            rules::quantity(&q.0),
            limits.get(res).and_then(|l| rules::quantity(&l.0)),
        ) && req > lim
        {
            e.at(
                &format!("{path}.requests.{res}"),
                format!("{} must not exceed the limit {}", q.0, limits[res].0),
            );
        }
    }
}

fn env(path: &str, vars: &[EnvVar], e: &mut Errs) {
    for (i, v) in vars.iter().enumerate() {
        if v.name.is_empty()
            || v.name.contains('=')
            || !v.name.chars().all(|c| c.is_ascii_graphic())
        {
            e.at(
                &format!("{path}[{i}].name"),
                format!(
                    "{:?} is not a variable name (printable characters, no '=')",
                    v.name
                ),
            );
        }
    }
}

/// Appends errors with their paths.
struct Errs<'a>(&'a mut Vec<FieldError>);

impl Errs<'_> {
    fn at(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }
    fn check(&mut self, path: &str, value: &str, rule: fn(&str) -> Result<(), String>) {
        if let Err(why) = rule(value) {
            self.at(path, format!("{value:?} {why}"));
        }
    }
    fn range(&mut self, path: &str, v: i32, min: i32, max: i32) {
        if v < min {
            self.at(path, format!("must be >= {min}"));
        } else if v > max {
            self.at(path, format!("must be <= {max}"));
        }
    }
}

#[cfg(test)]
mod tests;
