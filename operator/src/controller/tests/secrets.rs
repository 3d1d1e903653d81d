//! Secrets the SRE supplies (read, never written; incomplete ones reported), a rotated external
//! Secret rolling its readers, and the renewal of service credentials.

use super::*;

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
