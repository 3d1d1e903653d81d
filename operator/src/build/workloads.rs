//! Per-service workloads: ConfigMap, ServiceAccounts, Services, migration Jobs, Deployments,
//! HPAs and PDBs (and the optional frontend).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        autoscaling::v2::{
            CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
            MetricSpec, MetricTarget, ResourceMetricSource,
        },
        batch::v1::{Job, JobSpec},
        core::v1::{
            Capabilities, ConfigMap, ConfigMapKeySelector, Container, ContainerPort,
            EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, KeyToPath,
            Lifecycle, LifecycleHandler, LocalObjectReference, PodSecurityContext, PodSpec,
            PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
            SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
            Volume, VolumeMount,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{
        api::resource::Quantity, apis::meta::v1::LabelSelector, util::intstr::IntOrString,
    },
};

use helpdesk_contract::{Command, SERVICE_IMAGE_UID, http, lifecycle, var};

use super::{BuildInput, Child, Kind, child, content_hash};
use crate::crd::ServiceSpec as PlatformServiceSpec;
use crate::material::{PRIVATE_KEY, PUBLIC_KEY};
use crate::names::{
    self, CONFIG_HASH_ANNOTATION, Component, DATASTORE_CLIENT_LABEL, HTTP_PORT, METRICS_LABEL,
    SECRETS_HASH_ANNOTATION,
};
use crate::validate::{PostgresMode, RabbitmqMode};

pub const JWT_MOUNT: &str = "/etc/helpdesk/jwt";
pub const HTTP_SERVER_LABEL: &str = "helpdesk.dev/http-server";

/// `<registry>/<service>-service:<version>`.
pub fn image_for(registry: &str, c: Component, version: &str) -> String {
    format!(
        "{}/{}:{version}",
        registry.trim_end_matches('/'),
        c.binary()
    )
}

fn str_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

pub(super) fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn config_env(input: &BuildInput, key: &str) -> EnvVar {
    EnvVar {
        name: key.into(),
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: names::config_map_name(input.name()),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The hash of the service credential a pod presents (a renewal rolls the pods).
pub const CREDENTIAL_HASH_ANNOTATION: &str = "helpdesk.dev/credential-hash";

/// Shared, non-secret settings (changes roll the pods through the config-hash annotation).
fn config_data(input: &BuildInput) -> BTreeMap<String, String> {
    let s = &input.platform.spec;
    let inst = input.name();
    let url = input.resolved.url(input.platform);
    let mut d = BTreeMap::from([
        (var::FRONTEND_BASE_URL.to_string(), url.clone()),
        (var::CORS_ALLOWED_ORIGINS.to_string(), url),
        (var::JWT_TTL.to_string(), s.auth.token_ttl.clone()),
        (
            var::SIGNUP_DEFAULT_ROLE.to_string(),
            s.auth.signup_default_role.as_str().to_string(),
        ),
    ]);
    // Where each service that another one calls is found.
    for peer in Component::ALL.iter().flat_map(|c| c.peers()) {
        d.insert(
            peer.url_var().to_string(),
            format!("http://{}:{HTTP_PORT}", names::service_name(inst, *peer)),
        );
    }
    if let Some(smtp) = &s.smtp {
        d.insert(var::SMTP_HOST.into(), smtp.host.clone());
        d.insert(var::SMTP_PORT.into(), smtp.port.to_string());
        d.insert(var::SMTP_TLS.into(), smtp.tls.as_str().into());
        d.insert(
            var::MAIL_FROM.into(),
            smtp.from
                .clone()
                .unwrap_or_else(|| format!("helpdesk@{}", s.ingress.host)),
        );
        if let Some(staff) = &smtp.staff_notify_email {
            d.insert(var::STAFF_NOTIFY_EMAIL.into(), staff.clone());
        }
    }
    d
}

pub(super) fn config_map(input: &BuildInput, out: &mut Vec<Child>) {
    let cm = ConfigMap {
        metadata: input.meta(&names::config_map_name(input.name()), "config"),
        data: Some(config_data(input)),
        ..Default::default()
    };
    out.push(child(Kind::ConfigMap, &cm));
}

pub(super) fn service_accounts(input: &BuildInput, out: &mut Vec<Child>) {
    let mut names_: Vec<(String, String)> = Component::ALL
        .iter()
        .map(|c| {
            (
                names::service_name(input.name(), *c),
                c.as_str().to_string(),
            )
        })
        .collect();
    if input.platform.spec.frontend.is_some() {
        names_.push((names::frontend_name(input.name()), "frontend".into()));
    }
    for (name, component) in names_ {
        let sa = ServiceAccount {
            metadata: input.meta(&name, &component),
            // None of the platform's pods talks to the Kubernetes API.
            automount_service_account_token: Some(false),
            ..Default::default()
        };
        out.push(child(Kind::ServiceAccount, &sa));
    }
}

fn http_service(input: &BuildInput, name: &str, component: &str) -> Service {
    let mut meta = input.meta(name, component);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(METRICS_LABEL.into(), (component != "frontend").to_string());
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(names::selector_labels(input.name(), component)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: HTTP_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn services(input: &BuildInput, out: &mut Vec<Child>) {
    for c in Component::ALL {
        let svc = http_service(input, &names::service_name(input.name(), c), c.as_str());
        out.push(child(Kind::Service, &svc));
    }
    if input.platform.spec.frontend.is_some() {
        let svc = http_service(input, &names::frontend_name(input.name()), "frontend");
        out.push(child(Kind::Service, &svc));
    }
}

/// The security context of the service pods (Deployments and migration Jobs): [`pod_security`],
/// and outside OpenShift the images' user and group, with `fsGroup` so the mounted Secrets
/// (mode 0440) are readable. On OpenShift the SCC assigns all three.
fn service_pod_security(input: &BuildInput) -> PodSecurityContext {
    let mut security = pod_security();
    if !input.resolved.openshift {
        security.run_as_user = Some(SERVICE_IMAGE_UID);
        security.run_as_group = Some(SERVICE_IMAGE_UID);
        security.fs_group = Some(SERVICE_IMAGE_UID);
    }
    security
}

/// Runs under any UID (OpenShift's restricted SCC assigns a random one), non-root, no privileges.
pub(super) fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn container_security(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(read_only_root),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Concurrent password hashes that fit a container's memory limit: what is left after a 96 MiB
/// baseline (the service at load), at 12 MiB per hash, between 1 and 16. `None` without a limit.
fn hashing_concurrency(resources: &ResourceRequirements) -> Option<u64> {
    let limit = resources.limits.as_ref()?.get("memory")?;
    let bytes = quantity_bytes(&limit.0)?;
    let mib = bytes / (1024 * 1024);
    Some((mib.saturating_sub(96) / 12).clamp(1, 16))
}

/// A memory quantity in bytes (`256Mi`, `1Gi`, `500M`, `1073741824`).
fn quantity_bytes(q: &str) -> Option<u64> {
    let units: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n
                .trim()
                .parse::<f64>()
                .ok()
                .map(|v| (v * mult as f64) as u64);
        }
    }
    q.trim().parse::<f64>().ok().map(|v| v as u64)
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("50m".into())),
            ("memory".to_string(), Quantity("64Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("256Mi".into()),
        )])),
        ..Default::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

fn tmp_volume() -> (Volume, VolumeMount) {
    (
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
    )
}

/// The environment of one service's container, in dependency order ($(VAR) needs earlier vars).
fn service_env(input: &BuildInput, c: Component) -> Vec<EnvVar> {
    let s = &input.platform.spec;
    let mut env = vec![
        str_env(var::BIND_ADDR, format!("0.0.0.0:{HTTP_PORT}")),
        str_env(var::RUST_LOG, "info"),
        // Behind the ingress / Route: per-address rate limits need the client's address.
        str_env(var::TRUST_FORWARDED_FOR, "true"),
    ];
    env.extend(super::database_env(input, c));
    env.extend(super::amqp_env(input));
    for key in [
        var::FRONTEND_BASE_URL,
        var::CORS_ALLOWED_ORIGINS,
        var::JWT_TTL,
        var::SIGNUP_DEFAULT_ROLE,
    ] {
        env.push(config_env(input, key));
    }
    for peer in c.peers() {
        env.push(config_env(input, peer.url_var()));
    }
    env.push(str_env(
        var::JWT_PUBLIC_KEY_FILE,
        format!("{JWT_MOUNT}/{PUBLIC_KEY}"),
    ));
    env.push(secret_env(
        var::SERVICE_TOKEN,
        &names::service_tokens_secret(input.name()),
        c.as_str(),
    ));
    match c {
        Component::User => {
            env.push(str_env(
                var::JWT_PRIVATE_KEY_FILE,
                format!("{JWT_MOUNT}/{PRIVATE_KEY}"),
            ));
            env.push(secret_env(
                var::BOOTSTRAP_ADMIN_EMAIL,
                &input.resolved.admin_secret,
                "email",
            ));
            env.push(secret_env(
                var::BOOTSTRAP_ADMIN_PASSWORD,
                &input.resolved.admin_secret,
                "password",
            ));
            // Password hashes in flight, from the memory limit rather than the node's CPU count
            // (each argon2id hash holds 12 MiB; a 16-CPU node would otherwise run 16 at once
            // inside a 256Mi container).
            let resources = s
                .services
                .get(c)
                .resources
                .clone()
                .unwrap_or_else(default_resources);
            if let Some(n) = hashing_concurrency(&resources) {
                env.push(str_env("USER_HASHING_CONCURRENCY", n.to_string()));
            }
        }
        Component::Notification => {
            // Without spec.smtp the service records emails and marks them failed.
            if let Some(smtp) = &s.smtp {
                for key in [
                    var::SMTP_HOST,
                    var::SMTP_PORT,
                    var::SMTP_TLS,
                    var::MAIL_FROM,
                ] {
                    env.push(config_env(input, key));
                }
                if smtp.staff_notify_email.is_some() {
                    env.push(config_env(input, var::STAFF_NOTIFY_EMAIL));
                }
                if let Some(creds) = &smtp.credentials_secret_ref {
                    env.push(secret_env(var::SMTP_USERNAME, &creds.name, "username"));
                    env.push(secret_env(var::SMTP_PASSWORD, &creds.name, "password"));
                }
            }
        }
        _ => {}
    }
    if let Some((url, _)) = &input.resolved.otlp {
        env.push(str_env(var::OTEL_EXPORTER_OTLP_ENDPOINT, url.clone()));
    }
    // The SRE's variables win over ours.
    let extra = &s.services.get(c).env;
    env.retain(|e| !extra.iter().any(|x| x.name == e.name));
    env.extend(extra.iter().cloned());
    env
}

/// JWT keys: user-service gets both halves, every other service only the public key.
fn jwt_volume(input: &BuildInput, c: Component) -> (Volume, VolumeMount) {
    let mut items = vec![KeyToPath {
        key: PUBLIC_KEY.into(),
        path: PUBLIC_KEY.into(),
        ..Default::default()
    }];
    if c == Component::User {
        items.push(KeyToPath {
            key: PRIVATE_KEY.into(),
            path: PRIVATE_KEY.into(),
            ..Default::default()
        });
    }
    (
        Volume {
            name: "jwt".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(input.resolved.jwt_secret.clone()),
                items: Some(items),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        },
        VolumeMount {
            name: "jwt".into(),
            mount_path: JWT_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        },
    )
}

/// The services' images' entrypoint (the root Dockerfile), also used for the preStop hook.
pub const SERVICE_ENTRYPOINT: &str = "/usr/local/bin/service";

/// Graceful shutdown: `preStop` runs `service pre-stop` (a sleep: the distroless image has no
/// shell) so the endpoints drop the pod before it gets SIGTERM; after SIGTERM the service finishes
/// in-flight requests and waits up to the contract's drain time for its workers. The grace period
/// covers both plus a margin, so the kubelet's SIGKILL never cuts a drain short.
fn graceful_shutdown() -> (Lifecycle, i64) {
    let hook = Lifecycle {
        pre_stop: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec![SERVICE_ENTRYPOINT.into(), lifecycle::PRE_STOP.into()]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let grace = lifecycle::PRE_STOP_DELAY_SECS + lifecycle::SHUTDOWN_DRAIN_SECS + 10;
    (hook, grace as i64)
}

pub(super) fn pull_secrets(input: &BuildInput) -> Option<Vec<LocalObjectReference>> {
    let s = &input.platform.spec.image.pull_secrets;
    (!s.is_empty()).then(|| {
        s.iter()
            .map(|n| LocalObjectReference { name: n.clone() })
            .collect()
    })
}

fn scheduling(spec: &PlatformServiceSpec, pod: &mut PodSpec) {
    if !spec.node_selector.is_empty() {
        pod.node_selector = Some(spec.node_selector.clone());
    }
    if !spec.tolerations.is_empty() {
        pod.tolerations = serde_json::from_value(spec.tolerations.clone().into()).ok();
    }
    if let Some(a) = &spec.affinity {
        pod.affinity = serde_json::from_value(a.clone()).ok();
    }
}

fn pod_labels(input: &BuildInput, component: &str, version: &str) -> BTreeMap<String, String> {
    names::labels(input.name(), component, Some(version))
}

fn service_deployment(input: &BuildInput, c: Component, version: &str) -> Deployment {
    let spec = input.platform.spec.services.get(c);
    let name = names::service_name(input.name(), c);
    let mut labels = pod_labels(input, c.as_str(), version);
    labels.insert(DATASTORE_CLIENT_LABEL.into(), "true".into());
    labels.insert(HTTP_SERVER_LABEL.into(), "true".into());
    let (jwt_vol, jwt_mount) = jwt_volume(input, c);
    let (tmp_vol, tmp_mount) = tmp_volume();
    let (hook, grace) = graceful_shutdown();
    let container = Container {
        name: c.as_str().into(),
        lifecycle: Some(hook),
        image: Some(image_for(&input.platform.spec.image.registry, c, version)),
        image_pull_policy: Some(input.platform.spec.image.pull_policy.as_str().into()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: HTTP_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: Some(service_env(input, c)),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        startup_probe: Some(http_probe(http::HEALTH_PATH, 2, 30)),
        liveness_probe: Some(http_probe(http::HEALTH_PATH, 10, 3)),
        readiness_probe: Some(http_probe(http::READY_PATH, 5, 3)),
        security_context: Some(container_security(true)),
        volume_mounts: Some(vec![jwt_mount, tmp_mount]),
        ..Default::default()
    };
    let mut pod = PodSpec {
        service_account_name: Some(name.clone()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(service_pod_security(input)),
        image_pull_secrets: pull_secrets(input),
        containers: vec![container],
        volumes: Some(vec![jwt_vol, tmp_vol]),
        termination_grace_period_seconds: Some(grace),
        ..Default::default()
    };
    scheduling(spec, &mut pod);
    // Several replicas: spread over nodes (preferred, so a one-node cluster still schedules),
    // unless the SRE set their own affinity.
    let max_replicas = spec
        .autoscaling
        .as_ref()
        .map_or(spec.replicas, |a| a.max_replicas);
    if max_replicas > 1 && spec.affinity.is_none() {
        pod.topology_spread_constraints = Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(names::selector_labels(input.name(), c.as_str())),
                ..Default::default()
            }),
            ..Default::default()
        }]);
    }
    let mut annotations = BTreeMap::from([(
        CONFIG_HASH_ANNOTATION.to_string(),
        content_hash(&serde_json::to_value(config_data(input)).expect("map serializes")),
    )]);
    // Secrets someone else provides are not ours to watch: their hash on the template makes a
    // rotation roll the pods that read them (env values are read once, at start).
    let supplied: BTreeMap<&String, &String> = secrets_read_by(&pod)
        .into_iter()
        .filter_map(|n| input.material.supplied.get_key_value(&n))
        .collect();
    if !supplied.is_empty() {
        annotations.insert(
            SECRETS_HASH_ANNOTATION.to_string(),
            content_hash(&serde_json::to_value(&supplied).expect("map serializes")),
        );
    }
    // A renewed service credential rolls the pods that present it (env is read at start).
    if let Some(token) = input.material.service_tokens.get(c.as_str()) {
        annotations.insert(
            CREDENTIAL_HASH_ANNOTATION.to_string(),
            content_hash(&serde_json::json!(token)),
        );
    }
    // The managed datastores' credentials are in the URLs the pods read at start: a changed
    // password (re-applied to the datastore by its own restart) rolls them too.
    let datastores: Vec<String> = [
        input
            .material
            .postgres
            .as_ref()
            .filter(|_| matches!(input.resolved.postgres, PostgresMode::Managed(_)))
            .map(super::credentials::postgres_hash),
        input
            .material
            .rabbitmq
            .as_ref()
            .filter(|_| matches!(input.resolved.rabbitmq, RabbitmqMode::Managed(_)))
            .map(super::credentials::rabbitmq_hash),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !datastores.is_empty() {
        annotations.insert(
            super::credentials::DATASTORE_CREDENTIALS_ANNOTATION.to_string(),
            content_hash(&serde_json::json!(datastores)),
        );
    }
    deployment(
        input,
        &name,
        c.as_str(),
        version,
        // The HPA owns replicas while autoscaling is on: leave the field out entirely.
        spec.autoscaling.is_none().then_some(spec.replicas),
        labels,
        annotations,
        pod,
    )
}

/// Names of the Secrets a pod reads (env, envFrom, volumes).
fn secrets_read_by(pod: &PodSpec) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for c in &pod.containers {
        for e in c.env.iter().flatten() {
            if let Some(r) = e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            {
                out.insert(r.name.clone());
            }
        }
        for e in c.env_from.iter().flatten() {
            if let Some(r) = &e.secret_ref {
                out.insert(r.name.clone());
            }
        }
    }
    for v in pod.volumes.iter().flatten() {
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            out.insert(name);
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn deployment(
    input: &BuildInput,
    name: &str,
    component: &str,
    version: &str,
    replicas: Option<i32>,
    pod_labels: BTreeMap<String, String>,
    pod_annotations: BTreeMap<String, String>,
    pod: PodSpec,
) -> Deployment {
    let mut metadata = input.meta(name, component);
    metadata.labels = Some(names::labels(input.name(), component, Some(version)));
    Deployment {
        metadata,
        spec: DeploymentSpec {
            replicas,
            revision_history_limit: Some(5),
            selector: LabelSelector {
                match_labels: Some(names::selector_labels(input.name(), component)),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!pod_annotations.is_empty()).then_some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

pub(super) fn deployments(input: &BuildInput, out: &mut Vec<Child>) {
    for c in Component::ALL {
        if let Some(version) = input.deploy_version(c) {
            out.push(child(
                Kind::Deployment,
                &service_deployment(input, c, &version),
            ));
        }
    }
    if let Some(f) = &input.platform.spec.frontend {
        let name = names::frontend_name(input.name());
        let mut labels = pod_labels(input, "frontend", input.version());
        labels.insert(HTTP_SERVER_LABEL.into(), "true".into());
        // The frontend has its own image tag: a platform upgrade must not restart it.
        labels.remove("app.kubernetes.io/version");
        let (tmp_vol, tmp_mount) = tmp_volume();
        let pod = PodSpec {
            service_account_name: Some(name.clone()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(pod_security()),
            image_pull_secrets: pull_secrets(input),
            containers: vec![Container {
                name: "frontend".into(),
                image: Some(f.image.clone()),
                image_pull_policy: Some(input.platform.spec.image.pull_policy.as_str().into()),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: f.port,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                resources: Some(f.resources.clone().unwrap_or_else(default_resources)),
                liveness_probe: Some(http_probe("/", 10, 3)),
                readiness_probe: Some(http_probe("/", 5, 3)),
                security_context: Some(container_security(false)),
                volume_mounts: Some(vec![tmp_mount]),
                ..Default::default()
            }],
            volumes: Some(vec![tmp_vol]),
            ..Default::default()
        };
        let version = input.version().to_string();
        out.push(child(
            Kind::Deployment,
            &deployment(
                input,
                &name,
                "frontend",
                &version,
                Some(f.replicas),
                labels,
                BTreeMap::new(),
                pod,
            ),
        ));
    }
}

/// One Job per service and version running `<binary> migrate`; the Deployment of that version
/// is only applied once it has succeeded (see the reconciler).
pub fn migration_job(input: &BuildInput, c: Component) -> Job {
    let version = input.version();
    let name = names::migration_job_name(input.name(), c, version);
    let component = format!("{}-migrate", c.as_str());
    let mut labels = pod_labels(input, &component, version);
    labels.insert(DATASTORE_CLIENT_LABEL.into(), "true".into());
    // `migrate` reads the database settings and nothing else (the contract's requirements).
    let mut env = vec![str_env(var::RUST_LOG, "info")];
    env.extend(super::database_env(input, c));
    let (tmp_vol, tmp_mount) = tmp_volume();
    let spec = input.platform.spec.services.get(c);
    let mut pod = PodSpec {
        restart_policy: Some("Never".into()),
        service_account_name: Some(names::service_name(input.name(), c)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(service_pod_security(input)),
        image_pull_secrets: pull_secrets(input),
        containers: vec![Container {
            name: "migrate".into(),
            image: Some(image_for(&input.platform.spec.image.registry, c, version)),
            image_pull_policy: Some(input.platform.spec.image.pull_policy.as_str().into()),
            args: Some(vec![Command::Migrate.as_str().into()]),
            env: Some(env),
            resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
            security_context: Some(container_security(true)),
            volume_mounts: Some(vec![tmp_mount]),
            ..Default::default()
        }],
        volumes: Some(vec![tmp_vol]),
        ..Default::default()
    };
    scheduling(spec, &mut pod);
    Job {
        metadata: input.meta(&name, &component),
        spec: Some(JobSpec {
            // Retries cover the database still starting on a fresh platform.
            backoff_limit: Some(6),
            active_deadline_seconds: Some(1800),
            template: PodTemplateSpec {
                metadata: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn migration_jobs(input: &BuildInput, out: &mut Vec<Child>) {
    for c in Component::ALL {
        out.push(child(Kind::Job, &migration_job(input, c)));
    }
}

pub(super) fn autoscalers_and_budgets(input: &BuildInput, out: &mut Vec<Child>) {
    let s = &input.platform.spec;
    for c in Component::ALL {
        if input.deploy_version(c).is_none() {
            continue;
        }
        let spec = s.services.get(c);
        let name = names::service_name(input.name(), c);
        if let Some(a) = &spec.autoscaling {
            let hpa = HorizontalPodAutoscaler {
                metadata: input.meta(&name, c.as_str()),
                spec: HorizontalPodAutoscalerSpec {
                    scale_target_ref: CrossVersionObjectReference {
                        api_version: Some("apps/v1".into()),
                        kind: "Deployment".into(),
                        name: name.clone(),
                    },
                    min_replicas: Some(a.min_replicas),
                    max_replicas: a.max_replicas,
                    metrics: Some(vec![MetricSpec {
                        type_: "Resource".into(),
                        resource: Some(ResourceMetricSource {
                            name: "cpu".into(),
                            target: MetricTarget {
                                type_: "Utilization".into(),
                                average_utilization: Some(a.target_cpu_utilization_percentage),
                                ..Default::default()
                            },
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                ..Default::default()
            };
            out.push(child(Kind::HorizontalPodAutoscaler, &hpa));
        }
        let min = spec
            .autoscaling
            .as_ref()
            .map_or(spec.replicas, |a| a.min_replicas);
        if s.pod_disruption_budgets && min > 1 {
            out.push(child(
                Kind::PodDisruptionBudget,
                &pdb(input, &name, c.as_str()),
            ));
        }
    }
    if let Some(f) = &s.frontend
        && s.pod_disruption_budgets
        && f.replicas > 1
    {
        let name = names::frontend_name(input.name());
        out.push(child(
            Kind::PodDisruptionBudget,
            &pdb(input, &name, "frontend"),
        ));
    }
}

fn pdb(input: &BuildInput, name: &str, component: &str) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: input.meta(name, component),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(names::selector_labels(input.name(), component)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod scheduling_tests {
    use super::*;

    #[test]
    fn hashing_concurrency_follows_the_memory_limit() {
        let with = |m: &str| ResourceRequirements {
            limits: Some(BTreeMap::from([("memory".to_string(), Quantity(m.into()))])),
            ..Default::default()
        };
        assert_eq!(hashing_concurrency(&with("256Mi")), Some(13));
        assert_eq!(hashing_concurrency(&with("128Mi")), Some(2));
        assert_eq!(hashing_concurrency(&with("64Mi")), Some(1));
        assert_eq!(hashing_concurrency(&with("1Gi")), Some(16));
        assert_eq!(hashing_concurrency(&ResourceRequirements::default()), None);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn env_of(d: &Deployment) -> Vec<EnvVar> {
        d.spec.template.spec.as_ref().unwrap().containers[0]
            .env
            .clone()
            .unwrap()
    }
    fn env_names(d: &Deployment) -> Vec<String> {
        env_of(d).into_iter().map(|e| e.name).collect()
    }

    const SPEC: &str = r#"  version: "0.2.0"
  ingress: {host: helpdesk.example.com}
  image: {registry: "registry.local/hd/", pullPolicy: Always, pullSecrets: [regcred]}
  smtp: {host: smtp.example.com, credentialsSecretRef: {name: smtp-creds}, staffNotifyEmail: staff@example.com}
  services:
    ticket:
      replicas: 3
      env: [{name: RUST_LOG, value: debug}]
      nodeSelector: {pool: apps}
      tolerations: [{key: dedicated, operator: Equal, value: apps, effect: NoSchedule}]
    audit:
      autoscaling: {minReplicas: 2, maxReplicas: 6, targetCPUUtilizationPercentage: 60}
"#;

    #[test]
    fn deployment_has_probes_security_and_image() {
        let all = build_default(SPEC);
        let d: Deployment = get(&all, Kind::Deployment, "hd-ticket");
        let spec = &d.spec;
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some("registry.local/hd/ticket-service:0.2.0")
        );
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
        let path = |p: &Option<Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
        assert_eq!(path(&c.liveness_probe).as_deref(), Some("/health"));
        assert_eq!(path(&c.readiness_probe).as_deref(), Some("/ready"));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(),
            &["ALL"]
        );
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        // The images' user, and fsGroup so the JWT keys (mode 0440) are readable.
        assert_eq!(
            (psc.run_as_user, psc.run_as_group, psc.fs_group),
            (Some(65532), Some(65532), Some(65532))
        );
        assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
        assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "apps");
        assert_eq!(
            pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
            Some("dedicated")
        );
        assert_eq!(
            spec.strategy.as_ref().unwrap().type_.as_deref(),
            Some("RollingUpdate")
        );
    }

    #[test]
    fn pods_wait_for_endpoint_removal_and_get_the_whole_drain_time() {
        let all = build_default(SPEC);
        for svc in [
            "hd-user",
            "hd-ticket",
            "hd-notification",
            "hd-audit",
            "hd-admin",
        ] {
            let d: Deployment = get(&all, Kind::Deployment, svc);
            let pod = d.spec.template.spec.unwrap();
            let c = &pod.containers[0];
            let pre_stop = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
            // The image's own binary (distroless: no shell, no sleep) with the contract's argument.
            assert_eq!(
                pre_stop.exec.as_ref().unwrap().command.as_deref().unwrap(),
                ["/usr/local/bin/service", "pre-stop"]
            );
            // SIGKILL must not come before preStop's sleep plus the workers' drain.
            let needed =
                lifecycle::PRE_STOP_DELAY_SECS as i64 + lifecycle::SHUTDOWN_DRAIN_SECS as i64;
            let grace = pod.termination_grace_period_seconds.unwrap();
            assert!(grace > needed, "{svc}: grace {grace}s <= {needed}s");
        }
    }

    #[test]
    fn service_pods_run_as_the_images_user_except_on_openshift() {
        let ids = |pod: &PodSpec| {
            let psc = pod.security_context.clone().unwrap();
            (psc.run_as_user, psc.run_as_group, psc.fs_group)
        };
        let uid = Some(SERVICE_IMAGE_UID);
        let all = build_default(SPEC);
        for c in Component::ALL {
            let d: Deployment = get(&all, Kind::Deployment, &format!("hd-{}", c.as_str()));
            assert_eq!(ids(&d.spec.template.spec.unwrap()), (uid, uid, uid), "{c}");
            let j: Job = get(&all, Kind::Job, &format!("hd-{}-migrate-0-2-0", c.as_str()));
            let pod = j.spec.unwrap().template.spec.unwrap();
            assert_eq!(ids(&pod), (uid, uid, uid), "{c} migration");
        }
        let openshift = build_with(
            SPEC,
            crate::validate::Capabilities {
                routes: true,
                ..Default::default()
            },
        );
        for c in Component::ALL {
            let d: Deployment = get(&openshift, Kind::Deployment, &format!("hd-{}", c.as_str()));
            let pod = d.spec.template.spec.unwrap();
            assert_eq!(ids(&pod), (None, None, None), "the SCC assigns them");
            assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
        }
        let dockerfile = concat!(env!("CARGO_MANIFEST_DIR"), "/../Dockerfile");
        let text = std::fs::read_to_string(dockerfile).unwrap();
        assert!(
            text.contains(&format!("USER {SERVICE_IMAGE_UID}:{SERVICE_IMAGE_UID}")),
            "the service images run as the contract's UID"
        );
    }

    #[test]
    fn only_user_service_gets_the_private_key_and_admin() {
        let all = build_default(SPEC);
        for c in Component::ALL {
            let d: Deployment = get(&all, Kind::Deployment, &format!("hd-{}", c.as_str()));
            let names = env_names(&d);
            let pod = d.spec.template.spec.unwrap();
            let items = pod.volumes.unwrap()[0]
                .secret
                .clone()
                .unwrap()
                .items
                .unwrap();
            let has_private = items.iter().any(|i| i.key == "private.pem");
            assert_eq!(has_private, c == Component::User, "{c:?}");
            assert_eq!(
                names.contains(&var::JWT_PRIVATE_KEY_FILE.to_string()),
                c == Component::User
            );
            assert_eq!(
                names.contains(&var::BOOTSTRAP_ADMIN_PASSWORD.to_string()),
                c == Component::User
            );
            for common in [
                var::BIND_ADDR,
                var::DATABASE_URL,
                var::AMQP_URL,
                var::SERVICE_TOKEN,
                var::JWT_PUBLIC_KEY_FILE,
                var::FRONTEND_BASE_URL,
            ] {
                assert!(names.contains(&common.to_string()), "{c:?} lacks {common}");
            }
        }
    }

    #[test]
    fn peers_and_smtp_env() {
        let all = build_default(SPEC);
        let ticket: Deployment = get(&all, Kind::Deployment, "hd-ticket");
        assert!(env_names(&ticket).contains(&var::AUDIT_SERVICE_URL.into()));
        let admin: Deployment = get(&all, Kind::Deployment, "hd-admin");
        assert!(env_names(&admin).contains(&var::USER_SERVICE_URL.into()));
        let n: Deployment = get(&all, Kind::Deployment, "hd-notification");
        let names = env_names(&n);
        for k in [
            var::SMTP_HOST,
            var::SMTP_PORT,
            var::SMTP_TLS,
            var::SMTP_USERNAME,
            var::SMTP_PASSWORD,
            var::MAIL_FROM,
            var::STAFF_NOTIFY_EMAIL,
        ] {
            assert!(names.contains(&k.to_string()), "notification lacks {k}");
        }
        let cm: ConfigMap = get(&all, Kind::ConfigMap, "hd-config");
        let data = cm.data.unwrap();
        assert_eq!(data[var::USER_SERVICE_URL], "http://hd-user:8080");
        assert_eq!(data[var::AUDIT_SERVICE_URL], "http://hd-audit:8080");
        assert_eq!(data[var::FRONTEND_BASE_URL], "https://helpdesk.example.com");
        assert_eq!(data[var::SMTP_PORT], "587");
        assert_eq!(data[var::MAIL_FROM], "helpdesk@helpdesk.example.com");
        let minimal: Deployment = get(
            &build_default("  ingress: {host: helpdesk.example.com}"),
            Kind::Deployment,
            "hd-notification",
        );
        assert!(
            !env_names(&minimal).iter().any(|n| n.starts_with("SMTP_")),
            "without spec.smtp notification-service runs with delivery disabled"
        );
    }

    #[test]
    fn every_service_exports_traces_to_the_configured_collector() {
        let spec = format!("{SPEC}  monitoring: {{otlpEndpoint: \"https://otel.example.com/\"}}\n");
        let all = build_default(&spec);
        for c in Component::ALL {
            let d: Deployment = get(&all, Kind::Deployment, &format!("hd-{}", c.as_str()));
            let otlp: Vec<_> = env_of(&d)
                .into_iter()
                .filter(|e| e.name == var::OTEL_EXPORTER_OTLP_ENDPOINT)
                .collect();
            assert_eq!(otlp.len(), 1, "{}", c.as_str());
            assert_eq!(otlp[0].value.as_deref(), Some("https://otel.example.com"));
        }
        let d: Deployment = get(&build_default(SPEC), Kind::Deployment, "hd-ticket");
        assert!(!env_names(&d).contains(&var::OTEL_EXPORTER_OTLP_ENDPOINT.into()));
    }

    #[test]
    fn sre_env_overrides_operator_env() {
        let all = build_default(SPEC);
        let d: Deployment = get(&all, Kind::Deployment, "hd-ticket");
        let logs: Vec<_> = env_of(&d)
            .into_iter()
            .filter(|e| e.name == var::RUST_LOG)
            .collect();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].value.as_deref(), Some("debug"));
    }

    #[test]
    fn autoscaling_leaves_replicas_to_the_hpa() {
        let all = build_default(SPEC);
        let d: Deployment = get(&all, Kind::Deployment, "hd-audit");
        assert_eq!(d.spec.replicas, None);
        let hpa: HorizontalPodAutoscaler = get(&all, Kind::HorizontalPodAutoscaler, "hd-audit");
        let spec = hpa.spec;
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 6));
        assert_eq!(spec.scale_target_ref.name, "hd-audit");
        assert_eq!(
            spec.metrics.unwrap()[0]
                .resource
                .as_ref()
                .unwrap()
                .target
                .average_utilization,
            Some(60)
        );
        assert_eq!(names_of(&all, Kind::HorizontalPodAutoscaler), ["hd-audit"]);
    }

    #[test]
    fn pdbs_only_for_more_than_one_replica() {
        let all = build_default(SPEC);
        assert_eq!(
            names_of(&all, Kind::PodDisruptionBudget),
            ["hd-ticket", "hd-audit"]
        );
        let off = build_default(&format!("{SPEC}  podDisruptionBudgets: false\n"));
        assert!(names_of(&off, Kind::PodDisruptionBudget).is_empty());
    }

    #[test]
    fn migration_job_runs_migrate_with_the_new_image() {
        let all = build_default(SPEC);
        let j: Job = get(&all, Kind::Job, "hd-ticket-migrate-0-2-0");
        let pod = j.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = &pod.containers[0];
        assert_eq!(c.args.as_ref().unwrap(), &[Command::Migrate.as_str()]);
        assert_eq!(
            c.image.as_deref(),
            Some("registry.local/hd/ticket-service:0.2.0")
        );
        let env: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert_eq!(env, [var::RUST_LOG, var::DATABASE_URL]);
    }

    #[test]
    fn deployments_wait_for_their_first_migration() {
        let p = platform(SPEC);
        let r = crate::validate::validate(&p, &Default::default()).unwrap();
        let m = crate::material::SecretMaterial::generate("a@b.c", true, true);
        let all = super::super::build(&BuildInput {
            platform: &p,
            resolved: &r,
            material: &m,
            deploy_versions: BTreeMap::from([
                (Component::Ticket, None),
                (Component::User, Some("0.1.0".into())),
            ]),
        });
        assert!(!names_of(&all, Kind::Deployment).contains(&"hd-ticket".to_string()));
        let user: Deployment = get(&all, Kind::Deployment, "hd-user");
        let img = user.spec.template.spec.unwrap().containers[0].image.clone();
        assert_eq!(img.as_deref(), Some("registry.local/hd/user-service:0.1.0"));
        assert!(names_of(&all, Kind::Job).contains(&"hd-ticket-migrate-0-2-0".to_string()));
    }

    #[test]
    fn frontend_gets_deployment_service_and_pdb() {
        let all = build_default(&format!(
            "{SPEC}  frontend: {{image: \"ghcr.io/helpdesk/frontend:1.0.0\", replicas: 2, port: 3000}}\n"
        ));
        let d: Deployment = get(&all, Kind::Deployment, "hd-frontend");
        let c = &d.spec.template.spec.unwrap().containers[0];
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 3000);
        let s: Service = get(&all, Kind::Service, "hd-frontend");
        assert_eq!(
            s.spec.unwrap().ports.unwrap()[0].target_port,
            Some(IntOrString::String("http".into()))
        );
        assert!(names_of(&all, Kind::PodDisruptionBudget).contains(&"hd-frontend".to_string()));
    }

    #[test]
    fn a_rotated_supplied_secret_rolls_the_pods_that_read_it() {
        let p = platform(&format!(
            "{SPEC}  postgres: {{external: {{secretRef: {{name: db, key: url}}}}}}\n"
        ));
        let r = crate::validate::validate(&p, &Default::default()).unwrap();
        let mut m = crate::material::SecretMaterial::generate("a@b.c", false, true);
        let annotation = |m: &crate::material::SecretMaterial, svc: &str| {
            let all = super::super::build(&BuildInput {
                platform: &p,
                resolved: &r,
                material: m,
                deploy_versions: BTreeMap::new(),
            });
            let d: Deployment = get(&all, Kind::Deployment, svc);
            d.spec
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()
                .get(SECRETS_HASH_ANNOTATION)
                .cloned()
        };
        assert_eq!(
            annotation(&m, "hd-ticket"),
            None,
            "nothing supplied is read"
        );
        m.supplied.insert("db".into(), "h1".into());
        m.supplied.insert("smtp-creds".into(), "s1".into());
        let ticket = annotation(&m, "hd-ticket").unwrap();
        let notification = annotation(&m, "hd-notification").unwrap();
        m.supplied.insert("db".into(), "h2".into());
        assert_ne!(annotation(&m, "hd-ticket").unwrap(), ticket, "db rotated");
        m.supplied.insert("smtp-creds".into(), "s2".into());
        assert_ne!(annotation(&m, "hd-notification").unwrap(), notification);
        let before = annotation(&m, "hd-ticket");
        m.supplied.insert("smtp-creds".into(), "s3".into());
        assert_eq!(
            annotation(&m, "hd-ticket"),
            before,
            "ticket does not read SMTP credentials"
        );
    }

    #[test]
    fn config_change_rolls_pods_via_annotation() {
        let hash = |spec: &str| {
            let d: Deployment = get(&build_default(spec), Kind::Deployment, "hd-user");
            d.spec.template.metadata.unwrap().annotations.unwrap()[CONFIG_HASH_ANNOTATION].clone()
        };
        assert_ne!(
            hash(SPEC),
            hash(&SPEC.replace("helpdesk.example.com", "hd.example.org"))
        );
    }
}
