//! Invalid specs (unknown fields included) and API errors: reported in status, backed off, and
//! one refused object (422, 403) not stopping the others.

use std::time::Duration;

use super::*;

#[tokio::test]
async fn invalid_spec_is_reported_in_status_once() {
    let h = Harness::new(
        json!({"version": "0.1.0", "ingress": {"host": "Not A Host"},
        "services": {"ticket": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}}),
    );
    h.reconcile().await.unwrap();
    let p = h.platform();
    assert_eq!(
        condition(&p, "Ready"),
        ("False".into(), "InvalidSpec".into())
    );
    let msg = &p.status.as_ref().unwrap().conditions[0].message;
    assert!(
        msg.contains("spec.ingress.host") && msg.contains("autoscaling"),
        "{msg}"
    );
    assert_eq!(p.status.unwrap().phase, Some(Phase::Degraded));
    let writes = h.write_paths();
    assert_eq!(writes.len(), 2, "status + one Warning event: {writes:?}");
    // Unchanged invalid spec: nothing more.
    h.reconcile().await.unwrap();
    assert!(h.fake.writes().is_empty());
    // Fixing it recovers.
    h.edit_spec(|s| {
        s["ingress"]["host"] = "ok.example.com".into();
        s["services"] = json!({});
    });
    h.reconcile().await.unwrap();
    assert_eq!(h.fake.names(JOBS).len(), 5);
}

/// Issue 11, item 8: a misspelled field (seen when the CRD in place preserves unknown fields)
/// is an invalid spec naming each path, and nothing is written but the status and its event;
/// a platform that was running keeps its children as they are.
#[tokio::test]
async fn unknown_fields_are_an_invalid_spec_naming_their_paths() {
    let h = Harness::new(
        json!({"version": "0.1.0", "ingress": {"host": "h.example.com"},
        "servces": {"ticket": {"replicas": 3}},
        "services": {"tiket": {"replicas": 3}, "user": {"replicas": -1}},
        "postgres": {"managed": {"storage": "10GB"}}}),
    );
    h.reconcile().await.unwrap();
    let p = h.platform();
    assert_eq!(
        condition(&p, "Ready"),
        ("False".into(), "InvalidSpec".into())
    );
    let msg = &p.status.as_ref().unwrap().conditions[0].message;
    for needle in [
        "spec.servces: unknown field, did you mean services?",
        "spec.services.tiket: unknown field, did you mean ticket?",
        "spec.services.user.replicas: must be >= 0",
        "spec.postgres.managed.storage: \"10GB\" is not a Kubernetes quantity",
    ] {
        assert!(msg.contains(needle), "{needle} not in {msg}");
    }
    let writes = h.write_paths();
    assert!(
        writes
            .iter()
            .all(|w| w.ends_with("/hd/status") || w.contains("/events")),
        "{writes:?}"
    );
    assert!(h.fake.names(SECRETS).is_empty() && h.fake.names(STATEFULSETS).is_empty());

    // A running platform: the typo stops changes (no child is touched) until it is fixed.
    let h = Harness::minimal().settled().await;
    let before = h.fake.names(DEPLOYMENTS);
    h.edit_spec(|s| s["services"] = json!({"tiket": {"replicas": 5}}));
    h.reconcile().await.unwrap();
    let msg = h.platform().status.unwrap().conditions[0].message.clone();
    assert!(
        msg.starts_with("spec.services.tiket: unknown field"),
        "{msg}"
    );
    assert!(
        h.write_paths()
            .iter()
            .all(|w| w.ends_with("/hd/status") || w.contains("/events")),
        "{:?}",
        h.write_paths()
    );
    assert_eq!(h.fake.names(DEPLOYMENTS), before);
    h.edit_spec(|s| s["services"] = json!({"ticket": {"replicas": 5}}));
    h.reconcile().await.unwrap();
    assert_eq!(h.deployment("hd-ticket")["spec"]["replicas"], 5);
}

#[tokio::test]
async fn api_errors_fail_the_reconcile_and_back_off() {
    let h = Harness::minimal();
    h.fake.fail_next("PATCH", "/statefulsets/hd-postgres", 500);
    let err = h.reconcile().await.unwrap_err();
    assert!(
        matches!(&err, Error::Apply { object, .. } if object == "StatefulSet/hd-postgres"),
        "{err}"
    );
    assert_eq!(err.metric_label(), "apply");
    let delays: Vec<Duration> = (0..4).map(|_| h.ctx.backoff("support/hd")).collect();
    assert_eq!(delays, [5, 10, 20, 40].map(Duration::from_secs));
    for _ in 0..20 {
        h.ctx.backoff("support/hd");
    }
    assert_eq!(
        h.ctx.backoff("support/hd"),
        Duration::from_secs(300),
        "capped"
    );
    h.ctx.succeeded("support/hd");
    assert_eq!(
        h.ctx.backoff("support/hd"),
        Duration::from_secs(5),
        "reset after success"
    );
    // The next pass picks up where the failed one stopped.
    h.reconcile().await.unwrap();
    assert!(
        h.fake
            .names(STATEFULSETS)
            .contains(&"hd-postgres".to_string())
    );
    // Discovery failures are errors too (not "API absent").
    h.ctx.caps.lock().unwrap().take();
    h.fake.fail_next("GET", "/apis/route.openshift.io/v1", 503);
    assert!(h.reconcile().await.is_err());
}

#[tokio::test]
async fn a_rejected_apply_is_reported_in_status_and_backs_off() {
    let h = Harness::minimal().settled().await;
    h.edit_spec(|s| s["postgres"] = json!({"managed": {"storage": "50Gi"}}));
    h.fake.fail_next("PATCH", "/statefulsets/hd-postgres", 422);
    let err = h.reconcile().await.unwrap_err();
    assert!(matches!(err, Error::Apply { source: kube::Error::Api(ref s), .. } if s.code == 422));
    let p = h.platform();
    assert_eq!(
        condition(&p, "Degraded"),
        ("True".into(), "ApplyRejected".into())
    );
}

/// Issue 11 item 4: one object the API server refuses (422) does not stop the others: Jobs,
/// Deployments, Ingress and NetworkPolicies are still applied, the object is named in status
/// with the API's message, the reconcile backs off, and the next pass completes.
#[tokio::test]
async fn one_rejected_object_does_not_stop_the_pass() {
    let h = Harness::minimal().settled().await;
    h.edit_spec(|s| {
        s["version"] = "0.2.0".into();
        s["postgres"] = json!({"managed": {"image": "postgres:17"}});
        s["services"] = json!({"ticket": {"replicas": 2}});
    });
    h.fake.fail_next("PATCH", "/statefulsets/hd-postgres", 422);
    let err = h.reconcile().await.unwrap_err();
    assert!(
        matches!(err, Error::Apply { source: kube::Error::Api(ref s), .. } if s.code == 422),
        "{err}"
    );
    assert!(
        h.fake
            .names(JOBS)
            .contains(&"hd-ticket-migrate-0-2-0".to_string())
    );
    let writes = h.write_paths();
    assert_eq!(h.deployment("hd-ticket")["spec"]["replicas"], 2);
    for later in [
        "/ingresses/hd",
        "/networkpolicies/hd-default-deny",
        "/deployments/hd-ticket",
        "/statefulsets/hd-rabbitmq",
    ] {
        assert!(
            writes.iter().any(|w| w.ends_with(later)),
            "{later} not applied: {writes:?}"
        );
    }
    assert!(
        h.fake
            .names(JOBS)
            .contains(&"hd-ticket-migrate-0-1-0".to_string()),
        "no orphan deletion while part of the desired state is missing"
    );
    let p = h.platform();
    assert_eq!(
        condition(&p, "Degraded"),
        ("True".into(), "ApplyRejected".into())
    );
    let msg = condition_message(&p, "Degraded");
    assert!(
        msg.contains("StatefulSet/hd-postgres")
            && msg.contains("422 Invalid")
            && msg.contains("injected failure"),
        "{msg}"
    );
    // The API server accepts it again: the pass completes and the rejection is gone.
    h.reconcile().await.unwrap();
    assert_eq!(
        h.fake.get(&format!("{STATEFULSETS}/hd-postgres")).unwrap()["spec"]["template"]["spec"]["containers"]
            [0]["image"],
        "postgres:17"
    );
    assert!(
        !h.fake
            .names(JOBS)
            .contains(&"hd-ticket-migrate-0-1-0".to_string())
    );
    assert_ne!(condition(&h.platform(), "Degraded").1, "ApplyRejected");
}

/// Issue 11 item 5: a 403 (on OpenShift: blockOwnerDeletion without update on
/// helpdeskplatforms/finalizers) is reported in status with the object and the API's reason, and
/// the other objects are still applied.
#[tokio::test]
async fn a_forbidden_apply_is_reported_with_the_object() {
    let h = Harness::minimal();
    h.fake.fail_next("PATCH", "/ingresses/hd", 403);
    let err = h.reconcile().await.unwrap_err();
    assert!(
        matches!(err, Error::Apply { source: kube::Error::Api(ref s), .. } if s.code == 403),
        "{err}"
    );
    let p = h.platform();
    assert_eq!(
        condition(&p, "Degraded"),
        ("True".into(), "ApplyForbidden".into())
    );
    let msg = condition_message(&p, "Ready");
    assert!(
        msg.contains("Ingress/hd")
            && msg.contains("403 Forbidden")
            && msg.contains("helpdeskplatforms/finalizers"),
        "{msg}"
    );
    assert!(
        !h.fake.names(POLICIES).is_empty(),
        "applied after the Ingress"
    );
    let warning = h
        .fake
        .writes()
        .into_iter()
        .filter(|r| r.path.contains("/events"))
        .any(|r| r.body.unwrap().to_string().contains("ApplyForbidden"));
    assert!(warning, "a Warning event names it");
}
