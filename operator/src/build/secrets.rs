//! Secrets holding generated material. Their content comes from [`SecretMaterial`], which the
//! reconciler reads back from the cluster, so re-building never changes them.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};

use super::{BuildInput, Child, Kind, child};
use crate::crd::PvcRetention;
use crate::material::{Owned, PRIVATE_KEY, PUBLIC_KEY};
use crate::names::{self, AMQP_PORT, POSTGRES_PORT};
use crate::validate::{PostgresMode, RabbitmqMode};

pub const FINGERPRINT_ANNOTATION: &str = "helpdesk.dev/signing-key-fingerprint";
pub const DATABASE: &str = "helpdesk";

fn secret(input: &BuildInput, name: &str, component: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: input.meta(name, component),
        type_: Some("Opaque".into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

/// A URL's userinfo part: an admin may rotate to a password with `@`, `:` or `/` in it (the
/// generated ones need no escaping, so their URLs are unchanged).
fn userinfo(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Datastore credentials live exactly as long as the data they open: with `pvcRetention: Retain`
/// the volumes outlive the platform, so the credential Secret does too (no owner reference; a
/// platform created again with the same name finds it by its labels and reuses the passwords the
/// retained data was initialised with). With `Delete` it goes with the platform, like the volumes.
fn retained_with_data(mut s: Secret, retention: PvcRetention) -> Secret {
    if retention == PvcRetention::Retain {
        s.metadata.owner_references = None;
    }
    s
}

pub(super) fn build(input: &BuildInput, out: &mut Vec<Child>) {
    let m = input.material;
    let inst = input.name();
    if let Owned::Ours(keys) = &m.jwt {
        let s = secret(
            input,
            &input.resolved.jwt_secret,
            "jwt",
            &[
                (PRIVATE_KEY, &keys.private_pem),
                (PUBLIC_KEY, &keys.public_pem),
            ],
        );
        out.push(child(Kind::Secret, &s));
    }
    if let Owned::Ours(admin) = &m.admin {
        let s = secret(
            input,
            &input.resolved.admin_secret,
            "bootstrap-admin",
            &[("email", &admin.email), ("password", &admin.password)],
        );
        out.push(child(Kind::Secret, &s));
    }
    let tokens: Vec<(&str, &str)> = m
        .service_tokens
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut s = secret(
        input,
        &names::service_tokens_secret(inst),
        "service-tokens",
        &tokens,
    );
    s.metadata.annotations = Some(BTreeMap::from([(
        FINGERPRINT_ANNOTATION.to_string(),
        m.signing_fingerprint.clone(),
    )]));
    out.push(child(Kind::Secret, &s));

    if let (Some(c), PostgresMode::Managed(pg)) = (&m.postgres, &input.resolved.postgres) {
        let host = names::postgres_name(inst);
        let url = format!(
            "postgres://{}:{}@{host}:{POSTGRES_PORT}/{DATABASE}",
            userinfo(&c.username),
            userinfo(&c.password)
        );
        let s = secret(
            input,
            &names::postgres_secret(inst),
            "postgres",
            &[
                ("username", &c.username),
                ("password", &c.password),
                ("database", DATABASE),
                ("url", &url),
            ],
        );
        out.push(child(
            Kind::Secret,
            &retained_with_data(s, pg.pvc_retention),
        ));
    }
    if let (Some(c), RabbitmqMode::Managed(mq)) = (&m.rabbitmq, &input.resolved.rabbitmq) {
        let host = names::rabbitmq_name(inst);
        let url = format!(
            "amqp://{}:{}@{host}:{AMQP_PORT}/%2f",
            userinfo(&c.username),
            userinfo(&c.password)
        );
        let s = secret(
            input,
            &names::rabbitmq_secret(inst),
            "rabbitmq",
            &[
                ("username", &c.username),
                ("password", &c.password),
                ("erlang-cookie", &c.erlang_cookie),
                ("url", &url),
            ],
        );
        out.push(child(
            Kind::Secret,
            &retained_with_data(s, mq.pvc_retention),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn data(s: &Secret, key: &str) -> String {
        String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
    }

    #[test]
    fn generated_secrets_for_a_minimal_platform() {
        let all = build_default("  ingress: {host: h.example.com}");
        assert_eq!(
            names_of(&all, Kind::Secret),
            [
                "hd-jwt",
                "hd-admin",
                "hd-service-tokens",
                "hd-postgres-credentials",
                "hd-rabbitmq-credentials"
            ]
        );
        let jwt: Secret = get(&all, Kind::Secret, "hd-jwt");
        assert!(data(&jwt, "private.pem").contains("PRIVATE KEY"));
        let pg: Secret = get(&all, Kind::Secret, "hd-postgres-credentials");
        assert!(data(&pg, "url").starts_with("postgres://helpdesk:"));
        assert!(data(&pg, "url").ends_with("@hd-postgres:5432/helpdesk"));
        let mq: Secret = get(&all, Kind::Secret, "hd-rabbitmq-credentials");
        assert!(data(&mq, "url").ends_with("@hd-rabbitmq:5672/%2f"));
        let tokens: Secret = get(&all, Kind::Secret, "hd-service-tokens");
        assert_eq!(tokens.data.as_ref().unwrap().len(), 5);
        assert!(
            tokens
                .metadata
                .annotations
                .unwrap()
                .contains_key(FINGERPRINT_ANNOTATION)
        );
    }

    #[test]
    fn a_rotated_password_with_url_characters_is_escaped_in_the_urls() {
        let p = platform("  ingress: {host: h.example.com}");
        let r = crate::validate::validate(&p, &Default::default()).unwrap();
        let mut m = crate::material::SecretMaterial::generate("a@b.c", true, true);
        m.postgres.as_mut().unwrap().password = "p@ss:w/rd%".into();
        m.rabbitmq.as_mut().unwrap().password = "a b#c".into();
        let all = super::super::build(&BuildInput {
            platform: &p,
            resolved: &r,
            material: &m,
            deploy_versions: Default::default(),
        });
        let pg: Secret = get(&all, Kind::Secret, "hd-postgres-credentials");
        assert_eq!(
            data(&pg, "url"),
            "postgres://helpdesk:p%40ss%3Aw%2Frd%25@hd-postgres:5432/helpdesk"
        );
        assert_eq!(data(&pg, "password"), "p@ss:w/rd%");
        let mq: Secret = get(&all, Kind::Secret, "hd-rabbitmq-credentials");
        assert_eq!(
            data(&mq, "url"),
            "amqp://helpdesk:a%20b%23c@hd-rabbitmq:5672/%2f"
        );
    }

    #[test]
    fn datastore_credentials_follow_the_volumes_retention() {
        let owners = |all: &[Child], name: &str| {
            let s: Secret = get(all, Kind::Secret, name);
            s.metadata.owner_references.map_or(0, |o| o.len())
        };
        let kept = build_default("  ingress: {host: h.example.com}");
        assert_eq!(
            owners(&kept, "hd-postgres-credentials"),
            0,
            "Retain by default"
        );
        assert_eq!(owners(&kept, "hd-rabbitmq-credentials"), 0);
        assert_eq!(
            owners(&kept, "hd-jwt"),
            1,
            "other Secrets go with the platform"
        );
        let deleted = build_default(
            "  ingress: {host: h.example.com}\n  postgres: {managed: {pvcRetention: Delete}}\n  rabbitmq: {managed: {pvcRetention: Delete}}",
        );
        assert_eq!(owners(&deleted, "hd-postgres-credentials"), 1);
        assert_eq!(owners(&deleted, "hd-rabbitmq-credentials"), 1);
    }

    #[test]
    fn supplied_and_external_secrets_are_not_created() {
        let p = platform(
            "  ingress: {host: h.example.com}\n  postgres: {external: {secretRef: {name: db, key: url}}}\n  rabbitmq: {external: {secretRef: {name: mq}}}",
        );
        let r = crate::validate::validate(&p, &Default::default()).unwrap();
        let mut m = crate::material::SecretMaterial::generate("a@b.c", false, false);
        m.jwt = Owned::Theirs;
        m.admin = Owned::Theirs;
        let all = super::super::build(&BuildInput {
            platform: &p,
            resolved: &r,
            material: &m,
            deploy_versions: Default::default(),
        });
        assert_eq!(names_of(&all, Kind::Secret), ["hd-service-tokens"]);
    }
}
