//! The services' (and the frontend's) Deployments.

use super::*;

/// `<registry>/<service>-service:<version>`.
pub fn image_for(registry: &str, c: Component, version: &str) -> String {
    format!(
        "{}/{}:{version}",
        registry.trim_end_matches('/'),
        c.binary()
    )
}

pub(in crate::build) fn service_deployment(
    input: &BuildInput,
    c: Component,
    version: &str,
) -> Deployment {
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
            .map(crate::build::credentials::postgres_hash),
        input
            .material
            .rabbitmq
            .as_ref()
            .filter(|_| matches!(input.resolved.rabbitmq, RabbitmqMode::Managed(_)))
            .map(crate::build::credentials::rabbitmq_hash),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !datastores.is_empty() {
        annotations.insert(
            crate::build::credentials::DATASTORE_CREDENTIALS_ANNOTATION.to_string(),
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

#[allow(clippy::too_many_arguments)]
pub(in crate::build) fn deployment(
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

pub(in crate::build) fn deployments(input: &BuildInput, out: &mut Vec<Child>) {
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
