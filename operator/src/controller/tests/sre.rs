//! Issue 11 follow-ups against the in-memory API: a rotated datastore password reaches the
//! datastore and its clients; scheduled backups of the managed PostgreSQL.

use serde_json::json;

use super::*;

fn template_annotation(obj: &Value, key: &str) -> Option<String> {
    obj["spec"]["template"]["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_string)
}

const CREDENTIALS_HASH: &str = crate::build::DATASTORE_CREDENTIALS_ANNOTATION;

/// Issue 11 item 3: an admin rotates the managed PostgreSQL's password in its Secret. The
/// operator keeps the new password, rewrites the URL from it, restarts the PostgreSQL pod (whose
/// init container sets the password from the Secret before the server starts) and every service
/// (they read the URL at start); RabbitMQ is left alone; then the passes are write-free again.
#[tokio::test]
async fn a_rotated_datastore_password_restarts_the_datastore_and_its_clients() {
    let h = Harness::minimal().settled().await;
    let sts = |name: &str| h.fake.get(&format!("{STATEFULSETS}/{name}")).unwrap();
    let pg_before = template_annotation(&sts("hd-postgres"), CREDENTIALS_HASH).unwrap();
    let mq_before = template_annotation(&sts("hd-rabbitmq"), CREDENTIALS_HASH).unwrap();
    let ticket_before = template_annotation(&h.deployment("hd-ticket"), CREDENTIALS_HASH).unwrap();
    let init = &sts("hd-postgres")["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(init["name"], "apply-credentials");
    assert_eq!(
        init["env"][1],
        json!({"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef":
            {"name": "hd-postgres-credentials", "key": "password"}}})
    );

    h.fake
        .edit(&format!("{SECRETS}/hd-postgres-credentials"), |s| {
            s["data"]["password"] = b64("rotated-by-an-admin").into();
        });
    h.reconcile().await.unwrap();
    assert_eq!(
        secret_value(&h, "hd-postgres-credentials", "password"),
        "rotated-by-an-admin",
        "the admin's password is kept"
    );
    assert_eq!(
        secret_value(&h, "hd-postgres-credentials", "url"),
        "postgres://helpdesk:rotated-by-an-admin@hd-postgres:5432/helpdesk"
    );
    let writes = child_writes(&h);
    assert!(
        writes
            .iter()
            .any(|w| w.ends_with("/statefulsets/hd-postgres")),
        "{writes:?}"
    );
    assert!(
        !writes
            .iter()
            .any(|w| w.ends_with("/statefulsets/hd-rabbitmq")),
        "{writes:?}"
    );
    assert_eq!(
        writes
            .iter()
            .filter(|w| w.contains("/deployments/"))
            .count(),
        5,
        "{writes:?}"
    );
    assert_ne!(
        template_annotation(&sts("hd-postgres"), CREDENTIALS_HASH).unwrap(),
        pg_before
    );
    assert_eq!(
        template_annotation(&sts("hd-rabbitmq"), CREDENTIALS_HASH).unwrap(),
        mq_before
    );
    assert_ne!(
        template_annotation(&h.deployment("hd-ticket"), CREDENTIALS_HASH).unwrap(),
        ticket_before
    );
    h.make_ready();
    h.reconcile().await.unwrap();
    h.reconcile().await.unwrap();
    assert!(h.fake.writes().is_empty(), "{:?}", h.write_paths());
}

/// Issue 11 item 3: a Secret kept from an earlier platform (Retain) that an admin changed while
/// no platform existed: the new platform's datastore pods carry the re-application, so the
/// retained volume ends up accepting the Secret's password, whatever it was initialised with.
#[tokio::test]
async fn a_retained_secret_changed_in_between_is_applied_to_the_retained_data() {
    let h = Harness::minimal().settled().await;
    let uid = h.platform().metadata.uid.unwrap();
    let spec = h.fake.remove(PLATFORM).unwrap()["spec"].clone();
    h.fake.collect_garbage(&uid);
    h.fake
        .edit(&format!("{SECRETS}/hd-rabbitmq-credentials"), |s| {
            s["data"]["password"] = b64("changed-meanwhile").into();
        });
    h.fake.put(
        PLATFORM,
        json!({"apiVersion": "helpdesk.dev/v1alpha1", "kind": "HelpdeskPlatform",
               "metadata": {"name": "hd", "namespace": NS}, "spec": spec}),
    );
    h.reconcile().await.unwrap();
    assert_eq!(
        secret_value(&h, "hd-rabbitmq-credentials", "url"),
        "amqp://helpdesk:changed-meanwhile@hd-rabbitmq:5672/%2f"
    );
    let mq = h.fake.get(&format!("{STATEFULSETS}/hd-rabbitmq")).unwrap();
    let hook = &mq["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["postStart"];
    assert!(
        hook["exec"]["command"][2]
            .as_str()
            .unwrap()
            .contains("change_password"),
        "{hook}"
    );
}
