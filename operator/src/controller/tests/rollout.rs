//! Migrations before rollouts, scaling and autoscaling, version bumps, a failed migration,
//! failing pods, and the conditions' transition times.

use super::*;

#[tokio::test]
async fn first_create_runs_migrations_before_any_deployment() {
    let h = Harness::minimal();
    let report = h.reconcile().await.unwrap();
    let writes = h.write_paths();
    // Every child write is a server-side apply with our field manager and force.
    for r in h
        .fake
        .writes()
        .iter()
        .filter(|r| r.method == "PATCH" && !r.path.contains("/events"))
    {
        assert!(
            r.query.contains("fieldManager=helpdesk-operator") && r.query.contains("force=true"),
            "{r:?}"
        );
    }
    assert!(
        writes
            .iter()
            .any(|w| w == &format!("PATCH {SECRETS}/hd-jwt"))
    );
    assert!(
        writes
            .iter()
            .any(|w| w == &format!("PATCH {STATEFULSETS}/hd-postgres"))
    );
    assert!(
        writes
            .iter()
            .any(|w| w == "PATCH /apis/networking.k8s.io/v1/namespaces/support/ingresses/hd")
    );
    assert_eq!(h.fake.names(JOBS).len(), 5);
    assert!(
        h.fake.names(DEPLOYMENTS).is_empty(),
        "no Deployment before its migration succeeded"
    );
    // Secrets, then the datastores, then Jobs: the apply order of the builders.
    let pos = |needle: &str| writes.iter().position(|w| w.contains(needle)).unwrap();
    assert!(pos("/secrets/") < pos("/statefulsets/") && pos("/statefulsets/") < pos("/jobs/"));
    assert_eq!(report.outcome.jobs_created.len(), 5);
    let p = h.platform();
    let st = p.status.as_ref().unwrap();
    assert_eq!(st.phase, Some(Phase::Pending));
    assert_eq!(st.url.as_deref(), Some("https://helpdesk.example.com"));
    assert_eq!(
        condition(&p, "Progressing"),
        ("True".into(), "MigrationRunning".into())
    );
    assert_eq!(condition(&p, "Ready").0, "False");
    let events = h
        .fake
        .writes()
        .iter()
        .filter(|r| r.path.contains("/events"))
        .count();
    assert_eq!(events, report.events);
    assert_eq!(events, 2, "MigrationStarted and the first Ready=False");
}

#[tokio::test]
async fn deployments_follow_successful_migrations_then_ready() {
    let h = Harness::minimal();
    h.reconcile().await.unwrap();
    h.finish_migrations();
    h.reconcile().await.unwrap();
    assert_eq!(h.fake.names(DEPLOYMENTS).len(), 5);
    assert_eq!(
        h.image("hd-ticket"),
        "ghcr.io/helpdesk/ticket-service:0.1.0"
    );
    assert_eq!(h.platform().status.unwrap().phase, Some(Phase::Progressing));
    h.make_ready();
    let report = h.reconcile().await.unwrap();
    assert!(report.ready);
    let p = h.platform();
    assert_eq!(
        condition(&p, "Ready"),
        ("True".into(), "AllComponentsReady".into())
    );
    assert_eq!(condition(&p, "Degraded").0, "False");
    let st = p.status.unwrap();
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(st.components["ticket"].ready, 1);
    assert_eq!(st.components["postgres"].ready, 1);
}

#[tokio::test]
async fn scaling_ticket_from_2_to_5_touches_only_its_deployment() {
    let h = Harness::new(
        json!({"version": "0.1.0", "ingress": {"host": "h.example.com"},
                                 "services": {"ticket": {"replicas": 2}}}),
    )
    .settled()
    .await;
    assert_eq!(h.deployment("hd-ticket")["spec"]["replicas"], 2);
    h.edit_spec(|s| s["services"]["ticket"]["replicas"] = 5.into());
    let report = h.reconcile().await.unwrap();
    assert_eq!(report.outcome.applied, ["Deployment/hd-ticket"]);
    assert_eq!(h.deployment("hd-ticket")["spec"]["replicas"], 5);
    assert!(
        report.status_written,
        "observedGeneration and readiness change"
    );
    let st = h.platform().status.unwrap();
    assert_eq!(st.observed_generation, Some(2));
    assert_eq!(st.components["ticket"].desired, 5);
}

#[tokio::test]
async fn autoscaling_on_and_off() {
    let h = Harness::new(
        json!({"version": "0.1.0", "ingress": {"host": "h.example.com"},
                                 "services": {"ticket": {"replicas": 3}}}),
    )
    .settled()
    .await;
    h.edit_spec(|s| {
        s["services"]["ticket"] = json!({"autoscaling": {"minReplicas": 2, "maxReplicas": 8}});
    });
    let report = h.reconcile().await.unwrap();
    let applied = &report.outcome.applied;
    assert!(applied.contains(&"Deployment/hd-ticket".to_string()));
    assert!(applied.contains(&"HorizontalPodAutoscaler/hd-ticket".to_string()));
    let apply = h
        .fake
        .writes()
        .into_iter()
        .rfind(|r| r.path.ends_with("/deployments/hd-ticket"))
        .unwrap();
    assert!(
        apply.body.unwrap()["spec"].get("replicas").is_none(),
        "replicas left to the HPA"
    );
    assert_eq!(
        h.fake.get(&format!("{HPAS}/hd-ticket")).unwrap()["spec"]["maxReplicas"],
        8
    );

    // The HPA scales the Deployment: the operator must not fight it.
    h.fake.edit(&format!("{DEPLOYMENTS}/hd-ticket"), |d| {
        d["spec"]["replicas"] = 6.into();
        d["status"] = json!({"replicas": 6, "readyReplicas": 6, "updatedReplicas": 6, "observedGeneration": d["metadata"]["generation"].clone()});
    });
    h.reconcile().await.unwrap();
    let writes = h.write_paths();
    assert!(
        !writes.iter().any(|w| w.contains("/deployments/")),
        "{writes:?}"
    );

    h.edit_spec(|s| s["services"]["ticket"] = json!({"replicas": 1}));
    let report = h.reconcile().await.unwrap();
    assert!(
        report
            .outcome
            .deleted
            .contains(&"HorizontalPodAutoscaler/hd-ticket".to_string())
    );
    assert!(
        report
            .outcome
            .deleted
            .contains(&"PodDisruptionBudget/hd-ticket".to_string())
    );
    assert_eq!(h.deployment("hd-ticket")["spec"]["replicas"], 1);
    assert!(h.fake.get(&format!("{HPAS}/hd-ticket")).is_none());
}

#[tokio::test]
async fn version_bump_migrates_first_then_rolls_out() {
    let h = Harness::minimal().settled().await;
    h.edit_spec(|s| s["version"] = "0.2.0".into());
    let report = h.reconcile().await.unwrap();
    assert_eq!(report.outcome.jobs_created.len(), 5);
    assert!(
        h.fake
            .names(JOBS)
            .contains(&"hd-ticket-migrate-0-2-0".to_string())
    );
    assert!(
        !h.fake
            .names(JOBS)
            .contains(&"hd-ticket-migrate-0-1-0".to_string()),
        "old Job removed"
    );
    assert_eq!(
        h.image("hd-ticket"),
        "ghcr.io/helpdesk/ticket-service:0.1.0",
        "old image until migrated"
    );
    assert!(report.outcome.rollouts.is_empty());
    let p = h.platform();
    assert_eq!(
        condition(&p, "Progressing"),
        ("True".into(), "MigrationRunning".into())
    );

    // Only ticket's migration finishes: only ticket rolls out.
    h.fake
        .edit(&format!("{JOBS}/hd-ticket-migrate-0-2-0"), |j| {
            j["status"] = json!({"succeeded": 1})
        });
    let report = h.reconcile().await.unwrap();
    assert_eq!(report.outcome.rollouts, ["hd-ticket"]);
    assert_eq!(
        h.image("hd-ticket"),
        "ghcr.io/helpdesk/ticket-service:0.2.0"
    );
    assert_eq!(h.image("hd-user"), "ghcr.io/helpdesk/user-service:0.1.0");

    h.finish_migrations();
    h.reconcile().await.unwrap();
    h.make_ready();
    let report = h.reconcile().await.unwrap();
    assert!(report.ready);
    assert_eq!(
        h.platform().status.unwrap().version.as_deref(),
        Some("0.2.0")
    );
}

#[tokio::test]
async fn failed_migration_is_degraded_and_keeps_the_old_version() {
    let h = Harness::minimal().settled().await;
    h.edit_spec(|s| s["version"] = "0.3.0".into());
    h.reconcile().await.unwrap();
    h.fake.edit(&format!("{JOBS}/hd-audit-migrate-0-3-0"), |j| {
        j["status"] = json!({"failed": 7, "conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]});
    });
    h.reconcile().await.unwrap();
    let p = h.platform();
    assert_eq!(
        condition(&p, "Degraded"),
        ("True".into(), "MigrationFailed".into())
    );
    assert_eq!(p.status.as_ref().unwrap().phase, Some(Phase::Degraded));
    assert_eq!(h.image("hd-audit"), "ghcr.io/helpdesk/audit-service:0.1.0");
    let msg = &p.status.as_ref().unwrap().conditions[0].message;
    assert!(msg.contains("delete it to retry"), "{msg}");
    let warnings = h
        .fake
        .writes()
        .into_iter()
        .filter(|r| r.path.contains("/events"))
        .count();
    assert_eq!(warnings, 1, "one event for the transition");
    // The other services roll out 0.3.0; the platform still runs 0.1.0 where audit is concerned.
    for job in h.fake.names(JOBS) {
        if job != "hd-audit-migrate-0-3-0" {
            h.fake.edit(&format!("{JOBS}/{job}"), |j| {
                j["status"] = json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]});
            });
        }
    }
    h.reconcile().await.unwrap();
    h.make_ready();
    h.reconcile().await.unwrap();
    assert_eq!(
        h.image("hd-ticket"),
        "ghcr.io/helpdesk/ticket-service:0.3.0"
    );
    assert_eq!(
        h.platform().status.unwrap().version.as_deref(),
        Some("0.1.0"),
        "status.version moves only when every component runs the new version"
    );
}

#[tokio::test]
async fn unchanged_conditions_keep_their_transition_time() {
    let h = Harness::minimal().settled().await;
    let p = h.platform();
    let before = p.status.clone().unwrap();
    let t0 = before.conditions[0].last_transition_time.clone();
    assert!(t0.is_some());
    // Scale up: Ready flips to False (new time), Degraded stays False (time kept).
    h.edit_spec(|s| s["services"]["user"]["replicas"] = 3.into());
    h.reconcile().await.unwrap();
    let after = h.platform().status.unwrap();
    let time = |s: &crate::crd::HelpdeskPlatformStatus, t: &str| {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
            .last_transition_time
            .clone()
    };
    assert_eq!(time(&after, "Degraded"), time(&before, "Degraded"));
    assert_eq!(condition(&h.platform(), "Ready").0, "False");
    assert!(
        after
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(2))
    );
}

/// Issue 11 item 2: a crash-looping or image-less pod is Degraded with a reason naming the
/// component, not Progressing forever; the pods are read, never written.
#[tokio::test]
async fn failing_pods_are_degraded_with_a_reason_naming_the_component() {
    let h = Harness::minimal().settled().await;
    assert_eq!(h.platform().status.unwrap().phase, Some(Phase::Ready));
    let pod = |name: &str, component: &str, reason: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {
                "app.kubernetes.io/instance": "hd", "app.kubernetes.io/managed-by": "helpdesk-operator",
                "app.kubernetes.io/component": component}},
            "status": {"containerStatuses": [{"name": component, "ready": false, "restartCount": 4,
                "image": "x", "imageID": "", "state": {"waiting": {"reason": reason, "message": "exit code 2"}}}]}})
    };
    h.fake.put(
        &format!("/api/v1/namespaces/{NS}/pods/hd-audit-1"),
        pod("hd-audit-1", "audit", "CrashLoopBackOff"),
    );
    h.reconcile().await.unwrap();
    let p = h.platform();
    assert_eq!(p.status.as_ref().unwrap().phase, Some(Phase::Degraded));
    assert_eq!(
        condition(&p, "Degraded"),
        ("True".into(), "CrashLoop".into())
    );
    let msg = &p
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap()
        .message;
    assert!(msg.contains("audit") && msg.contains("hd-audit-1"), "{msg}");
    assert!(
        h.write_paths().iter().all(|w| !w.contains("/pods")),
        "pods are only read"
    );

    h.fake.put(
        &format!("/api/v1/namespaces/{NS}/pods/hd-audit-1"),
        pod("hd-audit-1", "audit", "ImagePullBackOff"),
    );
    h.reconcile().await.unwrap();
    assert_eq!(
        condition(&h.platform(), "Degraded"),
        ("True".into(), "ImagePullFailed".into())
    );

    // Healthy again: Ready.
    h.fake.put(
        &format!("/api/v1/namespaces/{NS}/pods/hd-audit-1"),
        pod("hd-audit-1", "audit", "ContainerCreating"),
    );
    h.reconcile().await.unwrap();
    assert_eq!(h.platform().status.unwrap().phase, Some(Phase::Ready));

    // A rollout past its progress deadline.
    h.fake.edit(&format!("{DEPLOYMENTS}/hd-ticket"), |d| {
        d["status"]["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]);
    });
    h.reconcile().await.unwrap();
    assert_eq!(
        condition(&h.platform(), "Degraded"),
        ("True".into(), "RolloutStuck".into())
    );
}
