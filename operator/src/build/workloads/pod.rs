//! The pod template's parts: security contexts, resources, probes, volumes, graceful shutdown,
//! scheduling, labels, and which Secrets a pod reads.

use super::*;

/// The hash of the service credential a pod presents (a renewal rolls the pods).
pub const CREDENTIAL_HASH_ANNOTATION: &str = "helpdesk.dev/credential-hash";

/// The security context of the service pods (Deployments and migration Jobs): [`pod_security`],
/// and outside OpenShift the images' user and group, with `fsGroup` so the mounted Secrets
/// (mode 0440) are readable. On OpenShift the SCC assigns all three.
pub(in crate::build) fn service_pod_security(input: &BuildInput) -> PodSecurityContext {
    let mut security = pod_security();
    if !input.resolved.openshift {
        security.run_as_user = Some(SERVICE_IMAGE_UID);
        security.run_as_group = Some(SERVICE_IMAGE_UID);
        security.fs_group = Some(SERVICE_IMAGE_UID);
    }
    security
}

/// Runs under any UID (OpenShift's restricted SCC assigns a random one), non-root, no privileges.
pub(in crate::build) fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(in crate::build) fn container_security(read_only_root: bool) -> SecurityContext {
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
/// baseline (the service at load), at 7 MiB per hash (user-service's default argon2id memory),
/// between 1 and 16. `None` without a limit.
pub(in crate::build) fn hashing_concurrency(resources: &ResourceRequirements) -> Option<u64> {
    let limit = resources.limits.as_ref()?.get("memory")?;
    let bytes = quantity_bytes(&limit.0)?;
    let mib = bytes / (1024 * 1024);
    Some((mib.saturating_sub(96) / 7).clamp(1, 16))
}

/// A memory quantity in bytes (`256Mi`, `1Gi`, `500M`, `1073741824`).
pub(in crate::build) fn quantity_bytes(q: &str) -> Option<u64> {
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

pub(in crate::build) fn default_resources() -> ResourceRequirements {
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

pub(in crate::build) fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
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

pub(in crate::build) fn tmp_volume() -> (Volume, VolumeMount) {
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

/// The services' images' entrypoint (the root Dockerfile), also used for the preStop hook.
pub const SERVICE_ENTRYPOINT: &str = "/usr/local/bin/service";

/// Graceful shutdown: `preStop` runs `service pre-stop` (a sleep: the distroless image has no
/// shell) so the endpoints drop the pod before it gets SIGTERM; after SIGTERM the service finishes
/// in-flight requests and waits up to the contract's drain time for its workers. The grace period
/// covers both plus a margin, so the kubelet's SIGKILL never cuts a drain short.
pub(in crate::build) fn graceful_shutdown() -> (Lifecycle, i64) {
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

pub(in crate::build) fn pull_secrets(input: &BuildInput) -> Option<Vec<LocalObjectReference>> {
    let s = &input.platform.spec.image.pull_secrets;
    (!s.is_empty()).then(|| {
        s.iter()
            .map(|n| LocalObjectReference { name: n.clone() })
            .collect()
    })
}

pub(in crate::build) fn scheduling(spec: &PlatformServiceSpec, pod: &mut PodSpec) {
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

pub(in crate::build) fn pod_labels(
    input: &BuildInput,
    component: &str,
    version: &str,
) -> BTreeMap<String, String> {
    names::labels(input.name(), component, Some(version))
}

/// Names of the Secrets a pod reads (env, envFrom, volumes).
pub(in crate::build) fn secrets_read_by(pod: &PodSpec) -> std::collections::BTreeSet<String> {
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

#[cfg(test)]
mod scheduling_tests {
    use super::*;

    #[test]
    fn hashing_concurrency_follows_the_memory_limit() {
        let with = |m: &str| ResourceRequirements {
            limits: Some(BTreeMap::from([("memory".to_string(), Quantity(m.into()))])),
            ..Default::default()
        };
        assert_eq!(hashing_concurrency(&with("256Mi")), Some(16));
        assert_eq!(hashing_concurrency(&with("160Mi")), Some(9));
        assert_eq!(hashing_concurrency(&with("128Mi")), Some(4));
        assert_eq!(hashing_concurrency(&with("64Mi")), Some(1));
        assert_eq!(hashing_concurrency(&with("1Gi")), Some(16));
        assert_eq!(hashing_concurrency(&ResourceRequirements::default()), None);
    }
}
