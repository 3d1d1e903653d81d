//! The parts of a datastore the operator runs itself: its StatefulSet (the official image's user,
//! the data volume and its retention), Service, ports, probes, default resources and the
//! credentials re-applied on a changed Secret.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec},
        core::v1::{
            Container, ContainerPort, EmptyDirVolumeSource, ExecAction, PersistentVolumeClaim,
            PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
            Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
            VolumeResourceRequirements,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use crate::build::BuildInput;
use crate::build::credentials::DATASTORE_CREDENTIALS_ANNOTATION;
use crate::build::workloads::{pod_security, pull_secrets};
use crate::crd::PvcRetention;
use crate::names::{self, POSTGRES_PORT};

/// UID/GID of the official postgres and rabbitmq images; left out on OpenShift (random UIDs).
const IMAGE_UID: i64 = 999;

pub(super) fn port(name: &str, p: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: p,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

pub(super) fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

pub(super) fn exec_probe(cmd: &[&str], period: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(cmd.iter().map(|s| s.to_string()).collect()),
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(6),
        ..Default::default()
    }
}

pub(super) fn tcp_probe(p: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(p),
            ..Default::default()
        }),
        initial_delay_seconds: Some(30),
        period_seconds: Some(10),
        failure_threshold: Some(6),
        ..Default::default()
    }
}

pub(super) fn datastore_resources(memory: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".into())),
            ("memory".to_string(), Quantity("256Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity(memory.into()),
        )])),
        ..Default::default()
    }
}

pub(super) fn datastore_service(
    input: &BuildInput,
    name: &str,
    component: &str,
    p: i32,
) -> Service {
    Service {
        metadata: input.meta(name, component),
        spec: Some(ServiceSpec {
            selector: Some(names::selector_labels(input.name(), component)),
            ports: Some(vec![ServicePort {
                name: Some(
                    if p == POSTGRES_PORT {
                        "postgres"
                    } else {
                        "amqp"
                    }
                    .into(),
                ),
                port: p,
                target_port: Some(IntOrString::Int(p)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The password re-application (an init container or the container's hook) and the hash of the
/// credentials on the pod template, so a changed Secret restarts the pod, which re-applies it.
pub(super) fn with_credentials(
    sts: &mut StatefulSet,
    init: Option<Container>,
    hash: Option<String>,
) {
    let spec = &mut sts.spec;
    if let Some(pod) = spec.template.spec.as_mut() {
        pod.init_containers = init.map(|c| vec![c]);
    }
    if let (Some(meta), Some(hash)) = (spec.template.metadata.as_mut(), hash) {
        meta.annotations = Some(BTreeMap::from([(
            DATASTORE_CREDENTIALS_ANNOTATION.to_string(),
            hash,
        )]));
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn stateful_set(
    input: &BuildInput,
    name: &str,
    component: &str,
    container: Container,
    storage: &str,
    storage_class: Option<&str>,
    retention: PvcRetention,
    empty_dirs: &[&str],
) -> StatefulSet {
    let mut pod_security = pod_security();
    if !input.resolved.openshift {
        pod_security.run_as_user = Some(IMAGE_UID);
        pod_security.run_as_group = Some(IMAGE_UID);
        pod_security.fs_group = Some(IMAGE_UID);
    }
    let mut labels = names::labels(input.name(), component, Some(input.version()));
    // No version on the pods: a platform upgrade must not restart the datastore.
    labels.remove("app.kubernetes.io/version");
    let volumes: Vec<Volume> = empty_dirs
        .iter()
        .map(|n| Volume {
            name: n.to_string(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        })
        .collect();
    StatefulSet {
        metadata: input.meta(name, component),
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name.to_string()),
            selector: LabelSelector {
                match_labels: Some(names::selector_labels(input.name(), component)),
                ..Default::default()
            },
            // PVCs are not owned by the platform; this policy (not a finalizer) decides their fate.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(retention.as_str().into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    image_pull_secrets: pull_secrets(input),
                    security_context: Some(pod_security),
                    containers: vec![container],
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: storage_class.map(str::to_string),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_string(),
                            Quantity(storage.to_string()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    }
}
