//! Datastores in each mode (managed, delegated, external), switching mode, storage growth, and
//! credentials that outlive a deleted platform with their data.

use super::*;

#[tokio::test]
async fn managed_datastores_are_statefulsets() {
    let h = Harness::minimal();
    h.reconcile().await.unwrap();
    assert_eq!(h.fake.names(STATEFULSETS), ["hd-postgres", "hd-rabbitmq"]);
    let secrets = h.fake.names(SECRETS);
    assert!(secrets.contains(&"hd-postgres-credentials".to_string()));
    assert!(secrets.contains(&"hd-rabbitmq-credentials".to_string()));
}

#[tokio::test]
async fn delegated_datastores_use_the_operators_resources() {
    let h = Harness::new(
        json!({"version": "0.1.0", "ingress": {"host": "h.example.com"},
        "postgres": {"cloudNativePG": {"instances": 3}}, "rabbitmq": {"rabbitmqClusterOperator": {"replicas": 3}}}),
    );
    h.fake.serve_api("postgresql.cnpg.io/v1");
    h.fake.serve_api("rabbitmq.com/v1beta1");
    h.reconcile().await.unwrap();
    assert!(h.fake.names(STATEFULSETS).is_empty());
    let cluster = h
        .fake
        .get("/apis/postgresql.cnpg.io/v1/namespaces/support/clusters/hd-postgres")
        .unwrap();
    assert_eq!(cluster["spec"]["instances"], 3);
    assert_eq!(
        cluster["metadata"]["ownerReferences"][0]["kind"],
        "HelpdeskPlatform"
    );
    assert!(
        h.fake
            .get("/apis/rabbitmq.com/v1beta1/namespaces/support/rabbitmqclusters/hd-rabbitmq")
            .is_some()
    );
    assert!(
        !h.fake
            .names(SECRETS)
            .contains(&"hd-postgres-credentials".to_string())
    );
    let st = h.platform().status.unwrap();
    assert_eq!(
        (
            st.components["postgres"].ready,
            st.components["postgres"].desired
        ),
        (0, 3)
    );
}

#[tokio::test]
async fn delegated_datastores_without_their_crds_are_an_invalid_spec() {
    let h = Harness::new(
        json!({"version": "0.1.0", "ingress": {"host": "h.example.com"},
        "postgres": {"cloudNativePG": {}}}),
    );
    h.reconcile().await.unwrap();
    let p = h.platform();
    assert_eq!(
        condition(&p, "Degraded"),
        ("True".into(), "InvalidSpec".into())
    );
    assert!(
        h.write_paths()
            .iter()
            .all(|w| w.contains("/status") || w.contains("/events"))
    );
}

#[tokio::test]
async fn external_datastores_create_nothing_for_them() {
    let h = Harness::new(
        json!({"version": "0.1.0", "ingress": {"host": "h.example.com"},
        "postgres": {"external": {"secretRef": {"name": "db", "key": "url"}}},
        "rabbitmq": {"external": {"secretRef": {"name": "mq", "key": "url"}}}}),
    );
    h.reconcile().await.unwrap();
    assert!(h.fake.names(STATEFULSETS).is_empty());
    let secrets = h.fake.names(SECRETS);
    assert!(
        !secrets
            .iter()
            .any(|s| s.contains("postgres") || s.contains("rabbitmq"))
    );
    let st = h.platform().status.unwrap();
    assert_eq!(
        st.components["postgres"].message.as_deref(),
        Some("external")
    );
}

#[tokio::test]
async fn switching_to_external_postgres_deletes_the_managed_one() {
    let h = Harness::minimal().settled().await;
    h.edit_spec(|s| s["postgres"] = json!({"external": {"secretRef": {"name": "db"}}}));
    let report = h.reconcile().await.unwrap();
    for gone in ["StatefulSet/hd-postgres", "Service/hd-postgres"] {
        assert!(
            report.outcome.deleted.contains(&gone.to_string()),
            "{gone} in {:?}",
            report.outcome.deleted
        );
    }
    // The credentials stay with the retained volume (pvcRetention: Retain, the default), so
    // switching back to managed finds PostgreSQL's data with its password (issue 11, item 3).
    assert!(
        !report
            .outcome
            .deleted
            .contains(&"Secret/hd-postgres-credentials".to_string())
    );
    assert!(
        h.fake
            .names(SECRETS)
            .contains(&"hd-postgres-credentials".to_string())
    );
    let deletes: Vec<_> = h
        .fake
        .writes()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert!(
        deletes
            .iter()
            .all(|r| r.body.as_ref().unwrap()["propagationPolicy"] == "Background")
    );
}

/// Issue 11 item 3: with `pvcRetention: Retain` (the default) the datastore credentials survive
/// the platform like the volumes do, and a platform created again reuses them.
#[tokio::test]
async fn credentials_outlive_a_deleted_platform_with_their_data() {
    let h = Harness::minimal().settled().await;
    let pg = secret_value(&h, "hd-postgres-credentials", "password");
    let mq = secret_value(&h, "hd-rabbitmq-credentials", "password");
    let uid = h.platform().metadata.uid.unwrap();
    // kubectl delete hdp hd: the garbage collector removes what the platform owns.
    let spec = h.fake.remove(PLATFORM).unwrap()["spec"].clone();
    let gone = h.fake.collect_garbage(&uid);
    assert!(
        gone.iter()
            .any(|p| p.ends_with("/statefulsets/hd-postgres"))
    );
    assert!(gone.iter().any(|p| p.ends_with("/secrets/hd-jwt")));
    let kept = h.fake.names(SECRETS);
    assert_eq!(kept, ["hd-postgres-credentials", "hd-rabbitmq-credentials"]);
    // Created again: a new uid, the same name.
    h.fake.put(
        PLATFORM,
        json!({"apiVersion": "helpdesk.dev/v1alpha1", "kind": "HelpdeskPlatform",
               "metadata": {"name": "hd", "namespace": NS}, "spec": spec}),
    );
    assert_ne!(h.platform().metadata.uid.unwrap(), uid);
    h.reconcile().await.unwrap();
    assert_eq!(secret_value(&h, "hd-postgres-credentials", "password"), pg);
    assert_eq!(secret_value(&h, "hd-rabbitmq-credentials", "password"), mq);
    let s = h
        .fake
        .get(&format!("{SECRETS}/hd-postgres-credentials"))
        .unwrap();
    assert!(s["metadata"]["ownerReferences"].is_null(), "{s}");

    // With pvcRetention: Delete they go with the platform, like the volumes.
    let h = Harness::new(
        json!({"version": "0.1.0", "ingress": {"host": "h.example.com"},
        "postgres": {"managed": {"pvcRetention": "Delete"}}}),
    )
    .settled()
    .await;
    let uid = h.platform().metadata.uid.unwrap();
    h.fake.remove(PLATFORM);
    h.fake.collect_garbage(&uid);
    assert_eq!(h.fake.names(SECRETS), ["hd-rabbitmq-credentials"]);
}

const PVCS: &str = "/api/v1/namespaces/support/persistentvolumeclaims";

/// Issue 11 item 4: a larger storage request of a managed datastore goes to its PVC (the
/// StatefulSet's volumeClaimTemplates are immutable); a claim that cannot grow and a smaller
/// size are reported in status.
#[tokio::test]
async fn storage_growth_expands_the_claims() {
    let h = Harness::minimal().settled().await;
    for (claim, size) in [
        ("data-hd-postgres-0", "10Gi"),
        ("data-hd-rabbitmq-0", "5Gi"),
    ] {
        h.fake.put(
            &format!("{PVCS}/{claim}"),
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": NS},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}}),
        );
    }
    h.edit_spec(|s| s["postgres"] = json!({"managed": {"storage": "20Gi"}}));
    let report = h.reconcile().await.unwrap();
    let claim = h.fake.get(&format!("{PVCS}/data-hd-postgres-0")).unwrap();
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "20Gi");
    assert_eq!(claim["spec"]["accessModes"][0], "ReadWriteOnce");
    assert_eq!(
        report.outcome.expanded,
        ["PersistentVolumeClaim/data-hd-postgres-0"]
    );
    let sts = h.fake.get(&format!("{STATEFULSETS}/hd-postgres")).unwrap();
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"], "10Gi",
        "the template is immutable"
    );
    assert_eq!(h.platform().status.unwrap().phase, Some(Phase::Ready));
    // Done: the claim is only read from now on.
    h.reconcile().await.unwrap();
    assert_eq!(h.write_paths(), Vec::<String>::new());
    assert!(
        h.fake
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with("/data-hd-postgres-0"))
    );

    // A StorageClass without allowVolumeExpansion: the API server refuses; reported.
    h.edit_spec(|s| s["rabbitmq"] = json!({"managed": {"storage": "8Gi"}}));
    h.fake
        .fail_next("PATCH", "/persistentvolumeclaims/data-hd-rabbitmq-0", 422);
    assert!(h.reconcile().await.is_err());
    let msg = condition_message(&h.platform(), "Degraded");
    assert!(
        msg.contains("PersistentVolumeClaim/data-hd-rabbitmq-0"),
        "{msg}"
    );

    // Volumes never shrink.
    h.edit_spec(|s| s["postgres"] = json!({"managed": {"storage": "5Gi"}}));
    assert!(h.reconcile().await.is_err());
    let msg = condition_message(&h.platform(), "Degraded");
    assert!(
        msg.contains("PersistentVolumeClaim/data-hd-postgres-0") && msg.contains("cannot shrink"),
        "{msg}"
    );
    assert_eq!(
        h.fake.get(&format!("{PVCS}/data-hd-postgres-0")).unwrap()["spec"]["resources"]["requests"]
            ["storage"],
        "20Gi"
    );
}
