//! Scheduled logical backups of the managed PostgreSQL (`spec.postgres.backup`): a CronJob runs
//! `pg_dump` (from the server's own image, so the client matches the server's major version)
//! into a volume of its own and keeps the newest `retention` dumps. With CloudNativePG the
//! settings go to its `Cluster` instead (see the datastores).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec},
        core::v1::{
            Container, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec,
            PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, ResourceRequirements,
            Volume, VolumeMount, VolumeResourceRequirements,
        },
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};

use super::workloads::{container_security, pod_security, pull_secrets, secret_env};
use super::{BuildInput, Child, Kind, child};
use crate::crd::PostgresBackup;
use crate::names::{self, POSTGRES_PORT};
use crate::validate::PostgresMode;

/// The component label of the backup pods (the PostgreSQL NetworkPolicy admits it).
pub const COMPONENT: &str = "postgres-backup";
/// Where the backup volume is mounted.
pub const BACKUP_DIR: &str = "/backup";
/// UID/GID of the official postgres image (the volume must be writable by it).
const IMAGE_UID: i64 = 999;

/// Dumps the database (custom format: compressed, restorable with `pg_restore`, per schema),
/// renames it into place only when complete, then keeps the newest `$BACKUP_RETENTION` dumps.
/// Connection settings come from the libpq variables (`PGHOST`, `PGUSER`, `PGPASSWORD`, ...).
pub const BACKUP_SCRIPT: &str = r#"set -eu
umask 077
dir="${BACKUP_DIR:?}"
keep="${BACKUP_RETENTION:?}"
rm -f "$dir"/.helpdesk-*.partial
stamp=$(date -u +%Y%m%dT%H%M%SZ)
tmp="$dir/.helpdesk-$stamp.partial"
pg_dump --format=custom --no-password --file="$tmp"
mv "$tmp" "$dir/helpdesk-$stamp.dump"
echo "wrote helpdesk-$stamp.dump ($(wc -c < "$dir/helpdesk-$stamp.dump") bytes)"
ls -1 "$dir" | grep -E '^helpdesk-[0-9]{8}T[0-9]{6}Z\.dump$' | sort -r | tail -n +"$((keep + 1))" |
  while read -r old; do rm -f "$dir/$old"; echo "removed $old (keeping $keep)"; done
"#;

pub fn name(instance: &str) -> String {
    format!("{}-backup", names::postgres_name(instance))
}

pub(super) fn build(input: &BuildInput, out: &mut Vec<Child>) {
    let (PostgresMode::Managed(pg), Some(backup)) = (
        &input.resolved.postgres,
        input.platform.spec.postgres.backup.as_ref(),
    ) else {
        return;
    };
    let inst = input.name();
    let name = name(inst);
    // The dumps are data: kept (or deleted) with the platform like the database's own volume.
    let mut claim = PersistentVolumeClaim {
        metadata: input.meta(&name, COMPONENT),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: backup.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(backup.storage.clone()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    if pg.pvc_retention == crate::crd::PvcRetention::Retain {
        claim.metadata.owner_references = None;
    }
    out.push(child(Kind::PersistentVolumeClaim, &claim));
    out.push(child(
        Kind::CronJob,
        &cron_job(input, &name, &pg.image, backup),
    ));
}

fn cron_job(input: &BuildInput, name: &str, image: &str, backup: &PostgresBackup) -> CronJob {
    let inst = input.name();
    let secret = names::postgres_secret(inst);
    let value = |n: &str, v: String| EnvVar {
        name: n.into(),
        value: Some(v),
        ..Default::default()
    };
    let container = Container {
        name: "pg-dump".into(),
        image: Some(image.to_string()),
        command: Some(vec!["sh".into(), "-c".into(), BACKUP_SCRIPT.into()]),
        env: Some(vec![
            value("PGHOST", names::postgres_name(inst)),
            value("PGPORT", POSTGRES_PORT.to_string()),
            secret_env("PGUSER", &secret, "username"),
            secret_env("PGPASSWORD", &secret, "password"),
            secret_env("PGDATABASE", &secret, "database"),
            value("BACKUP_DIR", BACKUP_DIR.into()),
            value("BACKUP_RETENTION", backup.retention.to_string()),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("50m".into())),
                ("memory".to_string(), Quantity("64Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity("512Mi".into()),
            )])),
            ..Default::default()
        }),
        security_context: Some(container_security(true)),
        volume_mounts: Some(vec![VolumeMount {
            name: "backup".into(),
            mount_path: BACKUP_DIR.into(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let mut security = pod_security();
    if !input.resolved.openshift {
        security.run_as_user = Some(IMAGE_UID);
        security.run_as_group = Some(IMAGE_UID);
        security.fs_group = Some(IMAGE_UID);
    }
    // No version on the pods: a platform upgrade changes nothing here.
    let labels = names::labels(inst, COMPONENT, None);
    CronJob {
        metadata: input.meta(name, COMPONENT),
        spec: CronJobSpec {
            schedule: backup.schedule.clone(),
            // One dump at a time; a missed run is started late up to an hour, else skipped.
            concurrency_policy: Some("Forbid".into()),
            starting_deadline_seconds: Some(3600),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: None,
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    active_deadline_seconds: Some(6 * 3600),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(labels),
                            ..Default::default()
                        }),
                        spec: Some(PodSpec {
                            restart_policy: Some("Never".into()),
                            automount_service_account_token: Some(false),
                            enable_service_links: Some(false),
                            image_pull_secrets: pull_secrets(input),
                            security_context: Some(security),
                            containers: vec![container],
                            volumes: Some(vec![Volume {
                                name: "backup".into(),
                                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                                    claim_name: name.to_string(),
                                    read_only: None,
                                }),
                                ..Default::default()
                            }]),
                            ..Default::default()
                        }),
                    },
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use crate::validate::Capabilities;

    const WITH_BACKUP: &str = "  ingress: {host: h.example.com}\n  postgres:\n    managed: {image: \"postgres:16.4\"}\n    backup: {schedule: \"15 1 * * *\", retention: 14, storage: 20Gi, storageClassName: slow}";

    #[test]
    fn no_backup_unless_asked() {
        let all = build_default("  ingress: {host: h.example.com}");
        assert!(names_of(&all, Kind::CronJob).is_empty());
        assert!(names_of(&all, Kind::PersistentVolumeClaim).is_empty());
    }

    #[test]
    fn managed_postgres_gets_a_cron_job_dumping_to_its_own_volume() {
        let all = build_default(WITH_BACKUP);
        let claim: PersistentVolumeClaim =
            get(&all, Kind::PersistentVolumeClaim, "hd-postgres-backup");
        let spec = claim.spec.unwrap();
        assert_eq!(spec.storage_class_name.as_deref(), Some("slow"));
        assert_eq!(
            spec.resources.unwrap().requests.unwrap()["storage"],
            Quantity("20Gi".into())
        );
        let cj: CronJob = get(&all, Kind::CronJob, "hd-postgres-backup");
        assert_eq!(cj.spec.schedule, "15 1 * * *");
        assert_eq!(cj.spec.concurrency_policy.as_deref(), Some("Forbid"));
        let pod = cj.spec.job_template.spec.unwrap().template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some("postgres:16.4"),
            "pg_dump of the server's version"
        );
        let env = c.env.clone().unwrap();
        let get_env = |n: &str| env.iter().find(|e| e.name == n).unwrap().clone();
        assert_eq!(get_env("PGHOST").value.as_deref(), Some("hd-postgres"));
        assert_eq!(get_env("BACKUP_RETENTION").value.as_deref(), Some("14"));
        let pw = get_env("PGPASSWORD")
            .value_from
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!(
            (pw.name.as_str(), pw.key.as_str()),
            ("hd-postgres-credentials", "password")
        );
        assert_eq!(
            pod.volumes.unwrap()[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "hd-postgres-backup"
        );
        // Writable for the image's user.
        assert_eq!(pod.security_context.unwrap().fs_group, Some(999));
    }

    #[test]
    fn the_dumps_live_as_long_as_the_data() {
        let owners = |spec: &str| {
            let all = build_default(spec);
            let claim: PersistentVolumeClaim =
                get(&all, Kind::PersistentVolumeClaim, "hd-postgres-backup");
            claim.metadata.owner_references.map_or(0, |o| o.len())
        };
        assert_eq!(owners(WITH_BACKUP), 0, "Retain (the default): kept");
        assert_eq!(
            owners(&WITH_BACKUP.replace("image: \"postgres:16.4\"", "pvcRetention: Delete")),
            1
        );
    }

    #[test]
    fn backup_pods_may_reach_postgres_and_nothing_else() {
        let all = build_default(WITH_BACKUP);
        let np: k8s_openapi::api::networking::v1::NetworkPolicy =
            get(&all, Kind::NetworkPolicy, "hd-postgres-ingress");
        let from = np.spec.unwrap().ingress.unwrap()[0].from.clone().unwrap();
        assert!(from.iter().any(|p| {
            let labels = p
                .pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .clone()
                .unwrap();
            labels
                .get("app.kubernetes.io/component")
                .map(String::as_str)
                == Some(COMPONENT)
        }));
        let egress: k8s_openapi::api::networking::v1::NetworkPolicy =
            get(&all, Kind::NetworkPolicy, "hd-postgres-backup-egress");
        let rules = egress.spec.unwrap().egress.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].ports.as_ref().unwrap()[0].port,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(5432))
        );
    }

    #[test]
    fn cloud_native_pg_gets_the_backup_settings_as_they_are() {
        let caps = Capabilities {
            cloud_native_pg: true,
            ..Default::default()
        };
        let all = build_with(
            "  ingress: {host: h.example.com}\n  postgres:\n    cloudNativePG: {instances: 2}\n    backup:\n      cloudNativePG:\n        retentionPolicy: 30d\n        barmanObjectStore: {destinationPath: \"s3://backups/helpdesk\", s3Credentials: {accessKeyId: {name: s3, key: id}, secretAccessKey: {name: s3, key: secret}}}",
            caps,
        );
        let pg = find(&all, Kind::PostgresCluster, "hd-postgres");
        assert_eq!(pg.obj.data["spec"]["backup"]["retentionPolicy"], "30d");
        assert_eq!(
            pg.obj.data["spec"]["backup"]["barmanObjectStore"]["destinationPath"],
            "s3://backups/helpdesk"
        );
        assert!(
            names_of(&all, Kind::CronJob).is_empty(),
            "CloudNativePG backs up itself"
        );
    }
}
