//! The migration Job of each service and version.

use super::*;

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
    env.extend(crate::build::database_env(input, c));
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

pub(in crate::build) fn migration_jobs(input: &BuildInput, out: &mut Vec<Child>) {
    for c in Component::ALL {
        out.push(child(Kind::Job, &migration_job(input, c)));
    }
}
