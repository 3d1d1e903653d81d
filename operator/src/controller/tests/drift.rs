//! Drift repair: hand edits are put back and the next pass is write-free; an HPA keeps its
//! replicas.

use super::*;

const SERVICES: &str = "/api/v1/namespaces/support/services";

/// Issue 11 item 1: `kubectl set image`, `kubectl scale` (no HPA), an edited env var and an
/// edited Service port are put back on the next pass, and only those objects are written; the
/// pass after that is write-free again.
#[tokio::test]
async fn hand_edits_are_put_back_and_the_next_pass_is_write_free() {
    let h = Harness::minimal().settled().await;
    h.fake.edit(&format!("{DEPLOYMENTS}/hd-ticket"), |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = "evil/ticket:latest".into();
    });
    h.fake.edit(&format!("{DEPLOYMENTS}/hd-user"), |d| {
        d["spec"]["replicas"] = 4.into();
    });
    h.fake.edit(&format!("{DEPLOYMENTS}/hd-audit"), |d| {
        let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap();
        let log = env.iter_mut().find(|e| e["name"] == "RUST_LOG").unwrap();
        log["value"] = "trace".into();
    });
    h.fake.edit(&format!("{SERVICES}/hd-admin"), |s| {
        s["spec"]["ports"][0]["port"] = 9090.into();
    });
    let report = h.reconcile().await.unwrap();
    assert_eq!(
        child_writes(&h),
        [
            format!("PATCH {SERVICES}/hd-admin"),
            format!("PATCH {DEPLOYMENTS}/hd-audit"),
            format!("PATCH {DEPLOYMENTS}/hd-ticket"),
            format!("PATCH {DEPLOYMENTS}/hd-user"),
        ]
    );
    assert_eq!(
        h.image("hd-ticket"),
        "ghcr.io/helpdesk/ticket-service:0.1.0"
    );
    assert_eq!(h.deployment("hd-user")["spec"]["replicas"], 1);
    let env = h.deployment("hd-audit")["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    let log = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "RUST_LOG")
        .unwrap()
        .clone();
    assert_eq!(log["value"], "info");
    assert_eq!(
        h.fake.get(&format!("{SERVICES}/hd-admin")).unwrap()["spec"]["ports"][0]["port"],
        8080
    );
    let repaired = report.outcome.repaired.join("\n");
    assert!(
        repaired.contains("Deployment/hd-ticket: spec.template.spec.containers[ticket].image")
            && repaired.contains("Deployment/hd-user: spec.replicas"),
        "{repaired}"
    );
    let events: Vec<_> = h
        .fake
        .writes()
        .into_iter()
        .filter(|r| r.path.contains("/events"))
        .collect();
    assert!(
        events.iter().any(|e| e
            .body
            .as_ref()
            .unwrap()
            .to_string()
            .contains("DriftRepaired")),
        "an event says what was put back"
    );
    h.make_ready();
    h.reconcile().await.unwrap();
    h.reconcile().await.unwrap();
    assert_eq!(h.write_paths(), Vec::<String>::new(), "write-free again");
}

/// Issue 11 item 1: with an HPA the replicas are its own (not put back), the rest of the
/// Deployment still is.
#[tokio::test]
async fn with_an_hpa_only_the_replicas_are_left_alone() {
    let h = Harness::new(
        json!({"version": "0.1.0", "ingress": {"host": "h.example.com"},
        "services": {"ticket": {"autoscaling": {"minReplicas": 2, "maxReplicas": 8}}}}),
    )
    .settled()
    .await;
    // The HPA scales through the scale subresource: kube-controller-manager owns replicas.
    let hpa_scales = |d: &mut Value, n: i64| {
        d["spec"]["replicas"] = n.into();
        d["metadata"]["managedFields"].as_array_mut().unwrap().push(
            json!({"manager": "kube-controller-manager", "operation": "Update",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}),
        );
    };
    h.fake
        .edit(&format!("{DEPLOYMENTS}/hd-ticket"), |d| hpa_scales(d, 7));
    h.reconcile().await.unwrap();
    assert_eq!(child_writes(&h), Vec::<String>::new(), "the HPA's replicas");
    h.fake.edit(&format!("{DEPLOYMENTS}/hd-ticket"), |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = "evil/ticket:latest".into();
    });
    h.reconcile().await.unwrap();
    assert_eq!(child_writes(&h), [format!("PATCH {DEPLOYMENTS}/hd-ticket")]);
    assert_eq!(
        h.image("hd-ticket"),
        "ghcr.io/helpdesk/ticket-service:0.1.0"
    );
    assert_eq!(h.deployment("hd-ticket")["spec"]["replicas"], 7);
}
