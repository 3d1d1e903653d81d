//! The platform's lifecycle around the passes: deletion, pausing and resuming, and leader
//! election.

use super::*;

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
