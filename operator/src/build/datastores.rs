//! PostgreSQL and RabbitMQ in their three modes: a StatefulSet the operator runs, a resource for
//! CloudNativePG / the RabbitMQ Cluster Operator, or an external server named by a Secret.
//!
//! This file holds the objects per mode and the URLs the services get; `statefulset` the pieces
//! of the managed datastores' StatefulSets and Services.

mod statefulset;

use k8s_openapi::api::core::v1::{Container, EnvVar};
use serde_json::json;

use helpdesk_contract::var;

use super::credentials;
use super::workloads::{container_security, pull_secrets, secret_env};
use super::{BuildInput, Child, Kind, child};
use crate::names::{self, AMQP_PORT, Component, POSTGRES_PORT};
use crate::validate::{PostgresMode, RabbitmqMode};
use statefulset::{
    datastore_resources, datastore_service, exec_probe, mount, port, stateful_set, tcp_probe,
    with_credentials,
};

pub(super) fn build(input: &BuildInput, out: &mut Vec<Child>) {
    let inst = input.name();
    match &input.resolved.postgres {
        PostgresMode::Managed(m) => {
            let name = names::postgres_name(inst);
            out.push(child(
                Kind::Service,
                &datastore_service(input, &name, "postgres", POSTGRES_PORT),
            ));
            let secret = names::postgres_secret(inst);
            let container = Container {
                name: "postgres".into(),
                image: Some(m.image.clone()),
                ports: Some(vec![port("postgres", POSTGRES_PORT)]),
                env: Some(vec![
                    secret_env("POSTGRES_USER", &secret, "username"),
                    secret_env("POSTGRES_PASSWORD", &secret, "password"),
                    secret_env("POSTGRES_DB", &secret, "database"),
                    EnvVar {
                        name: "PGDATA".into(),
                        value: Some("/var/lib/postgresql/data/pgdata".into()),
                        ..Default::default()
                    },
                ]),
                readiness_probe: Some(exec_probe(
                    &[
                        "sh",
                        "-c",
                        "pg_isready -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\" -h 127.0.0.1",
                    ],
                    5,
                )),
                liveness_probe: Some(tcp_probe(POSTGRES_PORT)),
                resources: m
                    .resources
                    .clone()
                    .or_else(|| Some(datastore_resources("512Mi"))),
                security_context: Some(container_security(true)),
                volume_mounts: Some(vec![
                    mount("data", "/var/lib/postgresql/data"),
                    mount("run", "/var/run/postgresql"),
                    mount("tmp", "/tmp"),
                ]),
                ..Default::default()
            };
            let init = credentials::postgres_init_container(&container);
            let mut sts = stateful_set(
                input,
                &name,
                "postgres",
                container,
                &m.storage,
                m.storage_class_name.as_deref(),
                m.pvc_retention,
                &["run", "tmp"],
            );
            let hash = input
                .material
                .postgres
                .as_ref()
                .map(credentials::postgres_hash);
            with_credentials(&mut sts, Some(init), hash);
            out.push(child(Kind::StatefulSet, &sts));
        }
        PostgresMode::CloudNativePg(c) => {
            let mut spec = json!({
                "instances": c.instances,
                "storage": {"size": c.storage},
                "bootstrap": {"initdb": {"database": "helpdesk", "owner": "helpdesk"}},
            });
            if let Some(sc) = &c.storage_class_name {
                spec["storage"]["storageClass"] = sc.clone().into();
            }
            if let Some(img) = &c.image_name {
                spec["imageName"] = img.clone().into();
            }
            if let Some(secrets) = pull_secrets(input) {
                spec["imagePullSecrets"] = json!(secrets);
            }
            // Backup settings pass through as they are (barmanObjectStore, retentionPolicy...).
            if let Some(b) = input
                .platform
                .spec
                .postgres
                .backup
                .as_ref()
                .and_then(|b| b.cloud_native_pg.clone())
            {
                spec["backup"] = b;
            }
            let cluster = json!({
                "metadata": input.meta(&names::postgres_name(inst), "postgres"),
                "spec": spec,
            });
            out.push(child(Kind::PostgresCluster, &cluster));
        }
        PostgresMode::External(_) => {}
    }
    match &input.resolved.rabbitmq {
        RabbitmqMode::Managed(m) => {
            let name = names::rabbitmq_name(inst);
            out.push(child(
                Kind::Service,
                &datastore_service(input, &name, "rabbitmq", AMQP_PORT),
            ));
            let secret = names::rabbitmq_secret(inst);
            let container = Container {
                name: "rabbitmq".into(),
                image: Some(m.image.clone()),
                ports: Some(vec![port("amqp", AMQP_PORT)]),
                env: Some(vec![
                    secret_env("RABBITMQ_DEFAULT_USER", &secret, "username"),
                    secret_env("RABBITMQ_DEFAULT_PASS", &secret, "password"),
                    secret_env("RABBITMQ_ERLANG_COOKIE", &secret, "erlang-cookie"),
                ]),
                readiness_probe: Some(exec_probe(
                    &["rabbitmq-diagnostics", "-q", "check_port_connectivity"],
                    10,
                )),
                liveness_probe: Some(tcp_probe(AMQP_PORT)),
                resources: m
                    .resources
                    .clone()
                    .or_else(|| Some(datastore_resources("512Mi"))),
                // The image's entrypoint writes its configuration below /etc and /var/lib.
                security_context: Some(container_security(false)),
                volume_mounts: Some(vec![mount("data", "/var/lib/rabbitmq")]),
                lifecycle: Some(credentials::rabbitmq_hook()),
                ..Default::default()
            };
            let mut sts = stateful_set(
                input,
                &name,
                "rabbitmq",
                container,
                &m.storage,
                m.storage_class_name.as_deref(),
                m.pvc_retention,
                &[],
            );
            let hash = input
                .material
                .rabbitmq
                .as_ref()
                .map(credentials::rabbitmq_hash);
            with_credentials(&mut sts, None, hash);
            out.push(child(Kind::StatefulSet, &sts));
        }
        RabbitmqMode::ClusterOperator(o) => {
            let mut persistence = json!({"storage": o.storage});
            if let Some(sc) = &o.storage_class_name {
                persistence["storageClassName"] = sc.clone().into();
            }
            let mut spec = json!({"replicas": o.replicas, "persistence": persistence});
            if let Some(secrets) = pull_secrets(input) {
                spec["imagePullSecrets"] = json!(secrets);
            }
            if input.resolved.openshift {
                // The RabbitMQ Cluster Operator's documented override for OpenShift: drop the
                // fixed UID/GID (999) it sets, so the restricted SCC assigns the namespace's own.
                spec["override"] = json!({"statefulSet": {"spec": {"template": {"spec": {
                    "securityContext": {},
                    "containers": [{"name": "rabbitmq", "securityContext": {}}],
                    "initContainers": [{"name": "setup-container", "securityContext": {}}],
                }}}}});
            }
            let cluster = json!({
                "metadata": input.meta(&names::rabbitmq_name(inst), "rabbitmq"),
                "spec": spec,
            });
            out.push(child(Kind::RabbitmqCluster, &cluster));
        }
        RabbitmqMode::External(_) => {}
    }
}

/// `DATABASE_URL` for one service (or its migration Job), whatever the mode.
pub fn database_env(input: &BuildInput, c: Component) -> Vec<EnvVar> {
    let inst = input.name();
    vec![match &input.resolved.postgres {
        PostgresMode::Managed(_) => {
            secret_env(var::DATABASE_URL, &names::postgres_secret(inst), "url")
        }
        // CloudNativePG writes the application user's URL into `<cluster>-app`.
        PostgresMode::CloudNativePg(_) => secret_env(
            var::DATABASE_URL,
            &format!("{}-app", names::postgres_name(inst)),
            "uri",
        ),
        PostgresMode::External(e) => {
            let r = e.per_service.get(c).unwrap_or(&e.secret_ref);
            secret_env(var::DATABASE_URL, &r.name, &r.key)
        }
    }]
}

/// `AMQP_URL`, whatever the mode. The RabbitMQ Cluster Operator only publishes user and password,
/// so the URL is composed with Kubernetes' `$(VAR)` expansion.
pub fn amqp_env(input: &BuildInput) -> Vec<EnvVar> {
    let inst = input.name();
    match &input.resolved.rabbitmq {
        RabbitmqMode::Managed(_) => {
            vec![secret_env(
                var::AMQP_URL,
                &names::rabbitmq_secret(inst),
                "url",
            )]
        }
        RabbitmqMode::ClusterOperator(_) => {
            let host = names::rabbitmq_name(inst);
            let secret = format!("{host}-default-user");
            vec![
                secret_env("RABBITMQ_USERNAME", &secret, "username"),
                secret_env("RABBITMQ_PASSWORD", &secret, "password"),
                EnvVar {
                    name: var::AMQP_URL.into(),
                    value: Some(format!(
                        "amqp://$(RABBITMQ_USERNAME):$(RABBITMQ_PASSWORD)@{host}:{AMQP_PORT}/%2f"
                    )),
                    ..Default::default()
                },
            ]
        }
        RabbitmqMode::External(e) => {
            vec![secret_env(
                var::AMQP_URL,
                &e.secret_ref.name,
                &e.secret_ref.key,
            )]
        }
    }
}

#[cfg(test)]
mod tests;
