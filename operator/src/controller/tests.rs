//! Reconcile tests against the in-memory API server: each checks the requests the reconciler made.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::fake::FakeApi;
use super::{Context, Error, Report, reconcile_platform};
use crate::crd::{HelpdeskPlatform, Phase};

const NS: &str = "support";
const PLATFORM: &str = "/apis/helpdesk.dev/v1alpha1/namespaces/support/helpdeskplatforms/hd";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/support/deployments";
const STATEFULSETS: &str = "/apis/apps/v1/namespaces/support/statefulsets";
const JOBS: &str = "/apis/batch/v1/namespaces/support/jobs";
const HPAS: &str = "/apis/autoscaling/v2/namespaces/support/horizontalpodautoscalers";
const SECRETS: &str = "/api/v1/namespaces/support/secrets";

struct Harness {
    fake: FakeApi,
    ctx: Context,
}

impl Harness {
    fn new(spec: Value) -> Self {
        let fake = FakeApi::new();
        fake.put(
            PLATFORM,
            json!({
                "apiVersion": "helpdesk.dev/v1alpha1", "kind": "HelpdeskPlatform",
                "metadata": {"name": "hd", "namespace": NS},
                "spec": spec,
            }),
        );
        let ctx = Context::new(fake.client(), Some("test".into()));
        Self { fake, ctx }
    }

    fn minimal() -> Self {
        Self::new(json!({"version": "0.1.0", "ingress": {"host": "helpdesk.example.com"}}))
    }

    fn platform(&self) -> HelpdeskPlatform {
        serde_json::from_value(self.fake.get(PLATFORM).unwrap()).unwrap()
    }

    async fn reconcile(&self) -> Result<Report, Error> {
        self.fake.clear_requests();
        reconcile_platform(&self.platform(), &self.ctx).await
    }

    fn write_paths(&self) -> Vec<String> {
        self.fake
            .writes()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    fn edit_spec(&self, f: impl FnOnce(&mut Value)) {
        self.fake.edit(PLATFORM, |p| f(&mut p["spec"]));
    }

    /// Marks every migration Job as complete, like the Job controller would.
    fn finish_migrations(&self) {
        for job in self.fake.names(JOBS) {
            self.fake.edit(&format!("{JOBS}/{job}"), |j| {
                j["status"] = json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]});
            });
        }
    }

    /// Marks every workload as fully rolled out, like the Deployment/StatefulSet controllers would.
    fn make_ready(&self) {
        for coll in [DEPLOYMENTS, STATEFULSETS] {
            for name in self.fake.names(coll) {
                self.fake.edit(&format!("{coll}/{name}"), |d| {
                    let n = d["spec"]["replicas"].as_i64().unwrap_or(2);
                    d["status"] = json!({"replicas": n, "readyReplicas": n, "updatedReplicas": n,
                                         "observedGeneration": d["metadata"]["generation"].clone()});
                });
            }
        }
    }

    /// First create, migrations done, everything ready, status settled.
    async fn settled(self) -> Self {
        self.reconcile().await.unwrap();
        self.finish_migrations();
        self.reconcile().await.unwrap();
        self.make_ready();
        self.reconcile().await.unwrap();
        self
    }

    fn deployment(&self, name: &str) -> Value {
        self.fake
            .get(&format!("{DEPLOYMENTS}/{name}"))
            .unwrap_or_else(|| panic!("no deployment {name}"))
    }

    fn image(&self, name: &str) -> String {
        self.deployment(name)["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

fn condition(p: &HelpdeskPlatform, t: &str) -> (String, String) {
    let c = p
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap();
    (c.status.clone(), c.reason.clone())
}

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
async fn no_op_reconcile_makes_zero_writes() {
    let h = Harness::minimal().settled().await;
    let before = h.fake.get(&format!("{SECRETS}/hd-jwt")).unwrap();
    let report = h.reconcile().await.unwrap();
    assert_eq!(h.write_paths(), Vec::<String>::new());
    assert_eq!(report.outcome.writes(), 0);
    assert!(!report.status_written);
    // And again: the generated secrets are read back, never regenerated.
    h.reconcile().await.unwrap();
    assert!(h.fake.writes().is_empty());
    assert_eq!(
        h.fake.get(&format!("{SECRETS}/hd-jwt")).unwrap()["data"],
        before["data"]
    );
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

#[tokio::test]
async fn supplied_secrets_are_read_not_written() {
    let h = Harness::new(
        json!({"version": "0.1.0", "ingress": {"host": "h.example.com"},
        "auth": {"signingKeySecretRef": {"name": "my-jwt"}, "bootstrapAdminSecretRef": {"name": "my-admin"}}}),
    );
    let keys = crate::material::JwtKeys::generate();
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    h.fake.put(
        &format!("{SECRETS}/my-jwt"),
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "my-jwt", "namespace": NS},
        "data": {"private.pem": b64(&keys.private_pem), "public.pem": b64(&keys.public_pem)}}),
    );
    h.fake.put(&format!("{SECRETS}/my-admin"), json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "my-admin", "namespace": NS}, "data": {"email": b64("a@b.c"), "password": b64("a-long-password")}}));
    h.reconcile().await.unwrap();
    let writes = h.write_paths();
    assert!(
        !writes
            .iter()
            .any(|w| w.contains("my-jwt") || w.contains("my-admin")),
        "{writes:?}"
    );
    let tokens = h.fake.get(&format!("{SECRETS}/hd-service-tokens")).unwrap();
    assert_eq!(
        tokens["metadata"]["annotations"]["helpdesk.dev/signing-key-fingerprint"],
        keys.fingerprint()
    );
}

#[tokio::test]
async fn an_incomplete_supplied_secret_is_reported_in_status() {
    let h = Harness::new(
        json!({"version": "0.1.0", "ingress": {"host": "h.example.com"},
        "auth": {"bootstrapAdminSecretRef": {"name": "my-admin"}}}),
    );
    h.fake.put(
        &format!("{SECRETS}/my-admin"),
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "my-admin", "namespace": NS}, "data": {"email": "YUBiLmM="}}),
    );
    h.reconcile().await.unwrap();
    let p = h.platform();
    assert_eq!(
        condition(&p, "Degraded"),
        ("True".into(), "InvalidSpec".into())
    );
    let msg = &p.status.as_ref().unwrap().conditions[0].message;
    assert!(msg.contains("my-admin has no key password"), "{msg}");
    assert!(h.fake.names(DEPLOYMENTS).is_empty() && h.fake.names(JOBS).is_empty());
}

#[tokio::test]
async fn deletion_needs_no_work_and_no_finalizer() {
    let h = Harness::minimal().settled().await;
    assert!(h.platform().metadata.finalizers.is_none());
    h.fake.edit(PLATFORM, |p| {
        p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into()
    });
    let report = h.reconcile().await.unwrap();
    assert!(
        h.fake.requests().is_empty(),
        "owner references cascade; nothing to call"
    );
    assert_eq!(report.outcome.writes(), 0);
    // Every child carries the owner reference that makes the cascade happen.
    for name in h.fake.names(DEPLOYMENTS) {
        let d = h.deployment(&name);
        assert_eq!(
            d["metadata"]["ownerReferences"][0]["uid"],
            h.platform().metadata.uid.unwrap()
        );
    }
}

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

#[tokio::test]
async fn openshift_gets_routes_and_service_monitor() {
    let h = Harness::new(json!({"version": "0.1.0", "ingress": {"host": "h.apps.example.com"}}));
    h.fake.serve_api("route.openshift.io/v1");
    h.fake.serve_api("monitoring.coreos.com/v1");
    h.reconcile().await.unwrap();
    let routes = h
        .fake
        .names("/apis/route.openshift.io/v1/namespaces/support/routes");
    assert_eq!(routes.len(), 8);
    assert!(
        h.fake
            .names("/apis/networking.k8s.io/v1/namespaces/support/ingresses")
            .is_empty()
    );
    assert!(
        h.fake
            .get("/apis/monitoring.coreos.com/v1/namespaces/support/servicemonitors/hd")
            .is_some()
    );
}

#[tokio::test]
async fn leader_election_on_a_lease() {
    use crate::leader::LeaderElector;
    let fake = FakeApi::new();
    let a = LeaderElector::new(fake.client(), "ops", "helpdesk-operator", "a");
    let b = LeaderElector::new(fake.client(), "ops", "helpdesk-operator", "b");
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "a creates the lease"
    );
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "b waits while a renews"
    );
    assert!(a.try_acquire_or_renew().await.unwrap(), "a renews");
    let lease = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/helpdesk-operator";
    fake.edit(lease, |l| {
        l["spec"]["renewTime"] = "2020-01-01T00:00:00.000000Z".into()
    });
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "b takes over an expired lease"
    );
    let l = fake.get(lease).unwrap();
    assert_eq!(l["spec"]["holderIdentity"], "b");
    assert_eq!(l["spec"]["leaseTransitions"], 1);
    assert!(!a.try_acquire_or_renew().await.unwrap(), "a lost it");
    a.release().await.unwrap();
    assert_eq!(
        fake.get(lease).unwrap()["spec"]["holderIdentity"],
        "b",
        "only the holder releases"
    );
    b.release().await.unwrap();
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "a released lease is free at once"
    );
}

/// Figures for the issue note: `cargo nextest run -p helpdesk-operator figures --no-capture`.
#[tokio::test]
async fn figures_reconcile_time_and_noop_writes() {
    let full: Value = serde_yaml::from_str::<Value>(include_str!("../../samples/full.yaml"))
        .unwrap()["spec"]
        .clone();
    let h = Harness::new(full);
    let t = Instant::now();
    h.reconcile().await.unwrap();
    let first = t.elapsed();
    let first_writes = h.fake.writes().len();
    let first_requests = h.fake.requests().len();
    h.finish_migrations();
    h.reconcile().await.unwrap();
    h.make_ready();
    h.reconcile().await.unwrap();
    let t = Instant::now();
    let n = 20;
    let mut writes = 0;
    for _ in 0..n {
        h.reconcile().await.unwrap();
        writes += h.fake.writes().len();
    }
    let noop = t.elapsed() / n;
    assert_eq!(writes, 0);
    // Where the time of a no-op pass goes: the pure build alone.
    let p = h.platform();
    let caps = crate::validate::Capabilities::default();
    let t = Instant::now();
    for _ in 0..n {
        let r = crate::validate::validate(&p, &caps).unwrap();
        let m = crate::material::SecretMaterial::generate("a@b.c", true, true);
        crate::build::build(&crate::build::BuildInput {
            platform: &p,
            resolved: &r,
            material: &m,
            deploy_versions: Default::default(),
        });
    }
    eprintln!(
        "FIGURES pure build (with fresh key generation) {:?} avg",
        t.elapsed() / n
    );
    eprintln!(
        "FIGURES full platform vs mocked API: first reconcile {first:?} ({first_writes} writes, {first_requests} requests); no-op reconcile {noop:?} avg, {writes} writes over {n} passes"
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

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Memory figure: `cargo nextest run -p helpdesk-operator figures_rss --run-ignored only --no-capture`.
#[tokio::test]
#[ignore = "figure, not a check; run explicitly"]
async fn figures_rss_with_50_platforms() {
    let fake = FakeApi::new();
    let ctx = Context::new(fake.client(), Some("rss".into()));
    let before = rss_kib();
    let t = Instant::now();
    for i in 0..50 {
        fake.put(
            &format!("/apis/helpdesk.dev/v1alpha1/namespaces/ns{i}/helpdeskplatforms/hd"),
            json!({"apiVersion": "helpdesk.dev/v1alpha1", "kind": "HelpdeskPlatform",
                   "metadata": {"name": "hd", "namespace": format!("ns{i}")},
                   "spec": {"version": "0.1.0", "ingress": {"host": format!("hd{i}.example.com")},
                            "services": {"ticket": {"replicas": 2}}, "frontend": {"image": "fe:1"}}}),
        );
    }
    for pass in 0..3 {
        for i in 0..50 {
            let path = format!("/apis/helpdesk.dev/v1alpha1/namespaces/ns{i}/helpdeskplatforms/hd");
            let p: HelpdeskPlatform = serde_json::from_value(fake.get(&path).unwrap()).unwrap();
            fake.clear_requests();
            reconcile_platform(&p, &ctx).await.unwrap();
            if pass == 0 {
                for job in fake.names(&format!("/apis/batch/v1/namespaces/ns{i}/jobs")) {
                    fake.edit(
                        &format!("/apis/batch/v1/namespaces/ns{i}/jobs/{job}"),
                        |j| {
                            j["status"] = json!({"succeeded": 1});
                        },
                    );
                }
            }
        }
    }
    let after = rss_kib();
    let objects: usize = (0..50)
        .map(|i| {
            fake.names(&format!("/apis/apps/v1/namespaces/ns{i}/deployments"))
                .len()
        })
        .sum();
    assert_eq!(objects, 50 * 6);
    eprintln!(
        "FIGURES 50 platforms, 3 passes each in {:?}: process RSS {before} KiB before, {after} KiB after (includes the in-memory API server holding every object)",
        t.elapsed()
    );
}

/// The exact requests of a pass over an unchanged platform: one LIST per kind (and one of the
/// pods), nothing else.
#[tokio::test]
async fn no_op_reconcile_request_by_request() {
    let h = Harness::minimal().settled().await;
    h.reconcile().await.unwrap();
    let seen: Vec<String> = h
        .fake
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let expected: Vec<String> = [
        "/api/v1/namespaces/support/secrets",
        "/api/v1/namespaces/support/configmaps",
        "/api/v1/namespaces/support/serviceaccounts",
        // The backup volume and CronJob (spec.postgres.backup), listed to notice their removal.
        "/api/v1/namespaces/support/persistentvolumeclaims",
        "/api/v1/namespaces/support/services",
        "/apis/apps/v1/namespaces/support/statefulsets",
        "/apis/batch/v1/namespaces/support/jobs",
        "/apis/batch/v1/namespaces/support/cronjobs",
        "/apis/apps/v1/namespaces/support/deployments",
        "/apis/autoscaling/v2/namespaces/support/horizontalpodautoscalers",
        "/apis/policy/v1/namespaces/support/poddisruptionbudgets",
        "/apis/networking.k8s.io/v1/namespaces/support/ingresses",
        "/apis/networking.k8s.io/v1/namespaces/support/networkpolicies",
        // Read only: crash loops and image pull failures for the status.
        "/api/v1/namespaces/support/pods",
    ]
    .iter()
    .map(|p| format!("GET {p}"))
    .collect();
    assert_eq!(seen, expected);
    for r in h.fake.requests() {
        assert!(
            r.query.contains("labelSelector=app.kubernetes.io%2Finstance%3Dhd%2Capp.kubernetes.io%2Fmanaged-by%3Dhelpdesk-operator")
                || r.query.contains("labelSelector=app.kubernetes.io/instance=hd"),
            "{}",
            r.query
        );
    }
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

const POLICIES: &str = "/apis/networking.k8s.io/v1/namespaces/support/networkpolicies";

fn policy(h: &Harness, name: &str) -> Value {
    h.fake
        .get(&format!("{POLICIES}/{name}"))
        .unwrap_or_else(|| panic!("no NetworkPolicy {name}"))
}

/// Issue 11 item 6: DNS on 53 and 5353; the HTTP port only from the ingress controller's
/// namespace and the platform's own pods (on OpenShift: the router's policy-group label);
/// ipBlock rules for IPv4 and IPv6.
#[tokio::test]
async fn network_policies_admit_http_only_from_the_ingress_controller() {
    let h = Harness::new(
        json!({"version": "0.1.0", "ingress": {"host": "h.example.com"},
        "postgres": {"external": {"secretRef": {"name": "db"}}},
        "smtp": {"host": "smtp.example.com"}}),
    );
    h.reconcile().await.unwrap();
    let dns = policy(&h, "hd-allow-dns");
    let ports: Vec<(i64, String)> = dns["spec"]["egress"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_i64().unwrap(),
                p["protocol"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in [(53, "UDP"), (53, "TCP"), (5353, "UDP"), (5353, "TCP")] {
        assert!(ports.contains(&(want.0, want.1.to_string())), "{ports:?}");
    }
    let from = policy(&h, "hd-allow-http")["spec"]["ingress"][0]["from"].clone();
    assert_eq!(
        from,
        json!([
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
            {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "hd",
                                             "app.kubernetes.io/managed-by": "helpdesk-operator"}}},
        ])
    );
    for name in ["hd-datastore-egress", "hd-notification-smtp"] {
        let rules = policy(&h, name)["spec"]["egress"].clone();
        let cidrs: Vec<&str> = rules
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["to"].as_array().unwrap().iter())
            .filter_map(|p| p["ipBlock"]["cidr"].as_str())
            .collect();
        assert_eq!(cidrs, ["0.0.0.0/0", "::/0"], "{name}");
    }
    // Another ingress controller, and Prometheus where the SRE says.
    h.edit_spec(|s| {
        s["ingress"]["controllerNamespace"] = "traefik".into();
        s["monitoring"] = json!({"prometheusNamespace": "observability"});
    });
    h.reconcile().await.unwrap();
    let from = policy(&h, "hd-allow-http")["spec"]["ingress"][0]["from"].clone();
    let names: Vec<&str> = from
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str()
        })
        .collect();
    assert_eq!(names, ["traefik", "observability"]);

    // OpenShift: the router's namespaces by label (it may run on the host network), and the
    // monitoring stack for the ServiceMonitor.
    let h = Harness::new(json!({"version": "0.1.0", "ingress": {"host": "h.apps.example.com"}}));
    h.fake.serve_api("route.openshift.io/v1");
    h.fake.serve_api("monitoring.coreos.com/v1");
    h.reconcile().await.unwrap();
    let from = policy(&h, "hd-allow-http")["spec"]["ingress"][0]["from"].clone();
    assert_eq!(
        from[0],
        json!({"namespaceSelector": {"matchLabels": {"policy-group.network.openshift.io/ingress": ""}}})
    );
    assert_eq!(
        from[1],
        json!({"namespaceSelector": {"matchLabels": {"network.openshift.io/policy-group": "monitoring"}}})
    );
    assert!(
        !from.to_string().contains("\"namespaceSelector\":{}"),
        "not every namespace"
    );
}

fn secret_value(h: &Harness, name: &str, key: &str) -> String {
    use base64::Engine;
    let s = h.fake.get(&format!("{SECRETS}/{name}")).unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s["data"][key].as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
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

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Child writes of the last pass (no status, no events), as `PATCH <path>`.
fn child_writes(h: &Harness) -> Vec<String> {
    let mut w: Vec<String> = h
        .write_paths()
        .into_iter()
        .filter(|w| !w.contains("/events") && !w.ends_with("/status"))
        .collect();
    w.sort();
    w
}

/// Issue 11 item 1: a rotated external Secret rolls the pods that read it (a hash of its data on
/// the pod template); the Jobs are left alone and nothing else is written.
#[tokio::test]
async fn a_rotated_external_secret_rolls_the_pods_that_read_it() {
    let h = Harness::new(
        json!({"version": "0.1.0", "ingress": {"host": "h.example.com"},
        "postgres": {"external": {"secretRef": {"name": "db", "key": "url"}}},
        "rabbitmq": {"external": {"secretRef": {"name": "mq", "key": "url"}}}}),
    );
    for (name, url) in [
        ("db", "postgres://a:b@db:5432/x"),
        ("mq", "amqp://a:b@mq:5672/%2f"),
    ] {
        h.fake.put(
            &format!("{SECRETS}/{name}"),
            json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": NS}, "data": {"url": b64(url)}}),
        );
    }
    let h = h.settled().await;
    let annotation = |h: &Harness, d: &str| {
        h.deployment(d)["spec"]["template"]["metadata"]["annotations"]["helpdesk.dev/secrets-hash"]
            .as_str()
            .map(str::to_string)
    };
    let before = annotation(&h, "hd-ticket").expect("hash of the external Secrets");
    h.reconcile().await.unwrap();
    assert!(h.fake.writes().is_empty(), "unchanged Secret: no writes");
    h.fake.edit(&format!("{SECRETS}/db"), |s| {
        s["data"]["url"] = b64("postgres://a:rotated@db:5432/x").into();
    });
    h.reconcile().await.unwrap();
    let writes = child_writes(&h);
    assert_eq!(
        writes.len(),
        5,
        "every service reads DATABASE_URL: {writes:?}"
    );
    assert!(
        writes.iter().all(|w| w.contains("/deployments/")),
        "{writes:?}"
    );
    assert_ne!(annotation(&h, "hd-ticket").unwrap(), before);
    h.make_ready();
    h.reconcile().await.unwrap();
    h.reconcile().await.unwrap();
    assert!(h.fake.writes().is_empty());
}

const SERVICES: &str = "/api/v1/namespaces/support/services";
const PVCS: &str = "/api/v1/namespaces/support/persistentvolumeclaims";

fn condition_message(p: &HelpdeskPlatform, t: &str) -> String {
    p.status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap()
        .message
        .clone()
}

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

/// Issue 14 item 11 (rotation): service credentials live 90 days and are minted anew when fewer
/// than 30 remain; the renewal rolls the pods that present them (credential hash on the pod
/// template), while the old ones stay valid until they expire.
#[tokio::test]
async fn service_credentials_are_renewed_before_they_expire() {
    use base64::Engine;
    let h = Harness::minimal().settled().await;
    let path = format!("/api/v1/namespaces/{NS}/secrets/hd-service-tokens");
    let hash = |h: &Harness| {
        h.deployment("hd-ticket")["spec"]["template"]["metadata"]["annotations"]
            ["helpdesk.dev/credential-hash"]
            .clone()
    };
    let before = hash(&h);
    assert!(before.is_string());
    let token = |secret: &Value| secret["data"]["ticket"].as_str().unwrap().to_string();
    let original = token(&h.fake.get(&path).unwrap());
    // A fresh credential is kept across passes.
    h.reconcile().await.unwrap();
    assert_eq!(token(&h.fake.get(&path).unwrap()), original);
    // One that expires in ten days is renewed, and the pods roll.
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let soon = chrono::Utc::now().timestamp() + 10 * 24 * 3600;
    let expiring = format!(
        "{}.{}.sig",
        b64(&json!({"alg": "EdDSA"})),
        b64(&json!({"exp": soon}))
    );
    h.fake.edit(&path, |s| {
        for c in ["user", "ticket", "notification", "audit", "admin"] {
            s["data"][c] = json!(base64::engine::general_purpose::STANDARD.encode(&expiring));
        }
    });
    h.reconcile().await.unwrap();
    let renewed = token(&h.fake.get(&path).unwrap());
    assert_ne!(renewed, original, "a new credential, not the old one again");
    let renewed = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(renewed)
            .unwrap(),
    )
    .unwrap();
    let exp = crate::material::token_expiry(&renewed).unwrap();
    assert!(
        exp - chrono::Utc::now().timestamp() > 80 * 24 * 3600,
        "a new 90-day credential"
    );
    let writes = h.write_paths();
    assert_ne!(hash(&h), before, "the pods roll to present it: {writes:?}");
}

/// Issue 11 item 9: `helpdesk.dev/reconcile: paused` stops every write for that platform but the
/// status saying so; removing it resumes, and the pending change is applied.
#[tokio::test]
async fn a_paused_platform_is_left_alone_until_resumed() {
    let h = Harness::minimal().settled().await;
    h.fake.edit(PLATFORM, |p| {
        p["metadata"]["annotations"] = json!({"helpdesk.dev/reconcile": "paused"});
        p["spec"]["services"] = json!({"ticket": {"replicas": 4}});
    });
    h.reconcile().await.unwrap();
    let writes = h.write_paths();
    assert!(
        writes.iter().all(|w| w.ends_with("/status")),
        "only the status: {writes:?}"
    );
    let p = h.platform();
    let paused = p
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Paused")
        .expect("a Paused condition");
    assert_eq!(paused.status, "True");
    assert_eq!(h.deployment("hd-ticket")["spec"]["replicas"], 1);
    h.reconcile().await.unwrap();
    assert!(h.fake.writes().is_empty(), "a paused pass writes nothing");
    h.fake.edit(PLATFORM, |p| {
        p["metadata"]["annotations"] = json!({});
    });
    h.reconcile().await.unwrap();
    assert_eq!(h.deployment("hd-ticket")["spec"]["replicas"], 4);
    let p = h.platform();
    assert!(
        p.status
            .unwrap()
            .conditions
            .iter()
            .all(|c| c.type_ != "Paused"),
        "resumed"
    );
}

/// Issue 11 follow-ups (password re-application, backups, pull secrets), in their own file.
#[path = "tests_sre.rs"]
mod sre;
