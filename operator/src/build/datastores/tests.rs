//! Tests of the datastores' objects in each mode: managed StatefulSets with retention, delegated
//! operator resources, external URLs per service, pull secrets and OpenShift's UIDs.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::super::fixtures::*;
use super::*;
use crate::validate::Capabilities;

fn db_env(all: &[Child], svc: &str) -> EnvVar {
    let d: Deployment = get(all, Kind::Deployment, svc);
    d.spec.template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .find(|e| e.name == "DATABASE_URL")
        .unwrap()
}
fn secret_of(e: &EnvVar) -> (String, String) {
    let r = e.value_from.clone().unwrap().secret_key_ref.unwrap();
    (r.name, r.key)
}

#[test]
fn managed_datastores_are_statefulsets_with_retention() {
    let all = build_default(
        "  ingress: {host: h.example.com}\n  postgres: {managed: {storage: 20Gi, storageClassName: fast, pvcRetention: Delete}}",
    );
    let sts: StatefulSet = get(&all, Kind::StatefulSet, "hd-postgres");
    let spec = sts.spec;
    let pvc = &spec.volume_claim_templates.unwrap()[0];
    let pvc_spec = pvc.spec.as_ref().unwrap();
    assert_eq!(pvc_spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        pvc_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"],
        Quantity("20Gi".into())
    );
    assert_eq!(
        spec.persistent_volume_claim_retention_policy
            .unwrap()
            .when_deleted
            .as_deref(),
        Some("Delete")
    );
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.security_context.unwrap().run_as_user, Some(999));
    let svc: Service = get(&all, Kind::Service, "hd-postgres");
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 5432);
    assert_eq!(
        secret_of(&db_env(&all, "hd-ticket")),
        ("hd-postgres-credentials".into(), "url".into())
    );
    let mq: StatefulSet = get(&all, Kind::StatefulSet, "hd-rabbitmq");
    assert_eq!(
        mq.spec
            .persistent_volume_claim_retention_policy
            .unwrap()
            .when_deleted
            .as_deref(),
        Some("Retain")
    );
}

#[test]
fn pull_secrets_reach_the_datastore_pods_in_every_mode() {
    let spec = "  ingress: {host: h.example.com}\n  image: {pullSecrets: [regcred, mirror]}";
    let all = build_default(spec);
    for name in ["hd-postgres", "hd-rabbitmq"] {
        let sts: StatefulSet = get(&all, Kind::StatefulSet, name);
        let names: Vec<String> = sts
            .spec
            .template
            .spec
            .unwrap()
            .image_pull_secrets
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["regcred", "mirror"], "{name}");
    }
    let caps = Capabilities {
        cloud_native_pg: true,
        rabbitmq_operator: true,
        ..Default::default()
    };
    let all = build_with(
        &format!(
            "{spec}\n  postgres: {{cloudNativePG: {{}}}}\n  rabbitmq: {{rabbitmqClusterOperator: {{}}}}"
        ),
        caps,
    );
    let expected = json!([{"name": "regcred"}, {"name": "mirror"}]);
    let pg = find(&all, Kind::PostgresCluster, "hd-postgres");
    assert_eq!(pg.obj.data["spec"]["imagePullSecrets"], expected);
    let mq = find(&all, Kind::RabbitmqCluster, "hd-rabbitmq");
    assert_eq!(mq.obj.data["spec"]["imagePullSecrets"], expected);
    // None asked for: none rendered.
    let all = build_default("  ingress: {host: h.example.com}");
    let sts: StatefulSet = get(&all, Kind::StatefulSet, "hd-postgres");
    assert!(sts.spec.template.spec.unwrap().image_pull_secrets.is_none());
}

#[test]
fn rabbitmq_cluster_on_openshift_drops_the_fixed_uids() {
    let spec = "  ingress: {host: h.example.com}\n  rabbitmq: {rabbitmqClusterOperator: {}}";
    let caps = |openshift| Capabilities {
        rabbitmq_operator: true,
        routes: openshift,
        ..Default::default()
    };
    let all = build_with(spec, caps(true));
    let mq = find(&all, Kind::RabbitmqCluster, "hd-rabbitmq");
    let pod = &mq.obj.data["spec"]["override"]["statefulSet"]["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"], json!({}));
    assert_eq!(
        pod["containers"],
        json!([{"name": "rabbitmq", "securityContext": {}}])
    );
    assert_eq!(
        pod["initContainers"],
        json!([{"name": "setup-container", "securityContext": {}}])
    );
    let all = build_with(spec, caps(false));
    let mq = find(&all, Kind::RabbitmqCluster, "hd-rabbitmq");
    assert!(mq.obj.data["spec"].get("override").is_none());
}

#[test]
fn openshift_leaves_uids_to_the_platform() {
    let caps = Capabilities {
        routes: true,
        ..Default::default()
    };
    let all = build_with("  ingress: {host: h.example.com}", caps);
    let sts: StatefulSet = get(&all, Kind::StatefulSet, "hd-postgres");
    let psc = sts.spec.template.spec.unwrap().security_context.unwrap();
    assert_eq!((psc.run_as_user, psc.fs_group), (None, None));
}

#[test]
fn delegated_datastores_are_operator_resources() {
    let caps = Capabilities {
        cloud_native_pg: true,
        rabbitmq_operator: true,
        ..Default::default()
    };
    let all = build_with(
        "  ingress: {host: h.example.com}\n  postgres: {cloudNativePG: {instances: 3, storage: 5Gi}}\n  rabbitmq: {rabbitmqClusterOperator: {replicas: 3}}",
        caps,
    );
    assert!(names_of(&all, Kind::StatefulSet).is_empty());
    let pg = find(&all, Kind::PostgresCluster, "hd-postgres");
    assert_eq!(pg.obj.data["spec"]["instances"], 3);
    assert_eq!(
        pg.obj.types.as_ref().unwrap().api_version,
        "postgresql.cnpg.io/v1"
    );
    let mq = find(&all, Kind::RabbitmqCluster, "hd-rabbitmq");
    assert_eq!(mq.obj.data["spec"]["replicas"], 3);
    assert_eq!(
        secret_of(&db_env(&all, "hd-user")),
        ("hd-postgres-app".into(), "uri".into())
    );
    let d: Deployment = get(&all, Kind::Deployment, "hd-user");
    let env = d.spec.template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let amqp = env.iter().find(|e| e.name == "AMQP_URL").unwrap();
    assert_eq!(
        amqp.value.as_deref(),
        Some("amqp://$(RABBITMQ_USERNAME):$(RABBITMQ_PASSWORD)@hd-rabbitmq:5672/%2f")
    );
    let pos = |n: &str| env.iter().position(|e| e.name == n).unwrap();
    assert!(
        pos("RABBITMQ_PASSWORD") < pos("AMQP_URL"),
        "$(VAR) needs earlier vars"
    );
    assert_eq!(
        names_of(&all, Kind::Secret).len(),
        3,
        "no datastore credentials of ours"
    );
}

#[test]
fn external_datastores_with_per_service_urls() {
    let all = build_default(
        "  ingress: {host: h.example.com}\n  postgres: {external: {secretRef: {name: helpdesk-db, key: url}, perService: {audit: {name: audit-db, key: dsn}}}}\n  rabbitmq: {external: {secretRef: {name: helpdesk-amqp, key: url}}}",
    );
    assert!(names_of(&all, Kind::StatefulSet).is_empty());
    assert_eq!(
        secret_of(&db_env(&all, "hd-ticket")),
        ("helpdesk-db".into(), "url".into())
    );
    assert_eq!(
        secret_of(&db_env(&all, "hd-audit")),
        ("audit-db".into(), "dsn".into())
    );
    let j: k8s_openapi::api::batch::v1::Job = get(&all, Kind::Job, "hd-audit-migrate-0-1-0");
    let env = j.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert_eq!(
        secret_of(env.iter().find(|e| e.name == "DATABASE_URL").unwrap()).0,
        "audit-db"
    );
}
