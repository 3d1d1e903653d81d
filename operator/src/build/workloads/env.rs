//! The services' environment: the shared ConfigMap, each service's variables (from
//! `services/contract`), the signing-key volume.

use super::*;

pub const JWT_MOUNT: &str = "/etc/helpdesk/jwt";

pub(in crate::build) fn str_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

pub(in crate::build) fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(in crate::build) fn config_env(input: &BuildInput, key: &str) -> EnvVar {
    EnvVar {
        name: key.into(),
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: names::config_map_name(input.name()),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Shared, non-secret settings (changes roll the pods through the config-hash annotation).
pub(in crate::build) fn config_data(input: &BuildInput) -> BTreeMap<String, String> {
    let s = &input.platform.spec;
    let inst = input.name();
    let url = input.resolved.url(input.platform);
    let mut d = BTreeMap::from([
        (var::FRONTEND_BASE_URL.to_string(), url.clone()),
        (var::CORS_ALLOWED_ORIGINS.to_string(), url),
        (var::JWT_TTL.to_string(), s.auth.token_ttl.clone()),
        (
            var::SIGNUP_DEFAULT_ROLE.to_string(),
            s.auth.signup_default_role.as_str().to_string(),
        ),
    ]);
    // Where each service that another one calls is found.
    for peer in Component::ALL.iter().flat_map(|c| c.peers()) {
        d.insert(
            peer.url_var().to_string(),
            format!("http://{}:{HTTP_PORT}", names::service_name(inst, *peer)),
        );
    }
    if let Some(smtp) = &s.smtp {
        d.insert(var::SMTP_HOST.into(), smtp.host.clone());
        d.insert(var::SMTP_PORT.into(), smtp.port.to_string());
        d.insert(var::SMTP_TLS.into(), smtp.tls.as_str().into());
        d.insert(
            var::MAIL_FROM.into(),
            smtp.from
                .clone()
                .unwrap_or_else(|| format!("helpdesk@{}", s.ingress.host)),
        );
        if let Some(staff) = &smtp.staff_notify_email {
            d.insert(var::STAFF_NOTIFY_EMAIL.into(), staff.clone());
        }
    }
    d
}

pub(in crate::build) fn config_map(input: &BuildInput, out: &mut Vec<Child>) {
    let cm = ConfigMap {
        metadata: input.meta(&names::config_map_name(input.name()), "config"),
        data: Some(config_data(input)),
        ..Default::default()
    };
    out.push(child(Kind::ConfigMap, &cm));
}

/// The environment of one service's container, in dependency order ($(VAR) needs earlier vars).
pub(in crate::build) fn service_env(input: &BuildInput, c: Component) -> Vec<EnvVar> {
    let s = &input.platform.spec;
    let mut env = vec![
        str_env(var::BIND_ADDR, format!("0.0.0.0:{HTTP_PORT}")),
        str_env(var::RUST_LOG, "info"),
        // Behind the ingress / Route: per-address rate limits need the client's address.
        str_env(var::TRUST_FORWARDED_FOR, "true"),
    ];
    env.extend(crate::build::database_env(input, c));
    env.extend(crate::build::amqp_env(input));
    for key in [
        var::FRONTEND_BASE_URL,
        var::CORS_ALLOWED_ORIGINS,
        var::JWT_TTL,
        var::SIGNUP_DEFAULT_ROLE,
    ] {
        env.push(config_env(input, key));
    }
    for peer in c.peers() {
        env.push(config_env(input, peer.url_var()));
    }
    env.push(str_env(
        var::JWT_PUBLIC_KEY_FILE,
        format!("{JWT_MOUNT}/{PUBLIC_KEY}"),
    ));
    env.push(secret_env(
        var::SERVICE_TOKEN,
        &names::service_tokens_secret(input.name()),
        c.as_str(),
    ));
    match c {
        Component::User => {
            env.push(str_env(
                var::JWT_PRIVATE_KEY_FILE,
                format!("{JWT_MOUNT}/{PRIVATE_KEY}"),
            ));
            env.push(secret_env(
                var::BOOTSTRAP_ADMIN_EMAIL,
                &input.resolved.admin_secret,
                "email",
            ));
            env.push(secret_env(
                var::BOOTSTRAP_ADMIN_PASSWORD,
                &input.resolved.admin_secret,
                "password",
            ));
            // Password hashes in flight, from the memory limit rather than the node's CPU count
            // (each argon2id hash holds 7 MiB; a 16-CPU node would otherwise run 16 at once
            // inside a 256Mi container).
            let resources = s
                .services
                .get(c)
                .resources
                .clone()
                .unwrap_or_else(default_resources);
            if let Some(n) = hashing_concurrency(&resources) {
                env.push(str_env("USER_HASHING_CONCURRENCY", n.to_string()));
            }
        }
        Component::Notification => {
            // Without spec.smtp the service records emails and marks them failed.
            if let Some(smtp) = &s.smtp {
                for key in [
                    var::SMTP_HOST,
                    var::SMTP_PORT,
                    var::SMTP_TLS,
                    var::MAIL_FROM,
                ] {
                    env.push(config_env(input, key));
                }
                if smtp.staff_notify_email.is_some() {
                    env.push(config_env(input, var::STAFF_NOTIFY_EMAIL));
                }
                if let Some(creds) = &smtp.credentials_secret_ref {
                    env.push(secret_env(var::SMTP_USERNAME, &creds.name, "username"));
                    env.push(secret_env(var::SMTP_PASSWORD, &creds.name, "password"));
                }
            }
        }
        _ => {}
    }
    if let Some((url, _)) = &input.resolved.otlp {
        env.push(str_env(var::OTEL_EXPORTER_OTLP_ENDPOINT, url.clone()));
    }
    // The SRE's variables win over ours.
    let extra = &s.services.get(c).env;
    env.retain(|e| !extra.iter().any(|x| x.name == e.name));
    env.extend(extra.iter().cloned());
    env
}

/// JWT keys: user-service gets both halves, every other service only the public key.
pub(in crate::build) fn jwt_volume(input: &BuildInput, c: Component) -> (Volume, VolumeMount) {
    let mut items = vec![KeyToPath {
        key: PUBLIC_KEY.into(),
        path: PUBLIC_KEY.into(),
        ..Default::default()
    }];
    if c == Component::User {
        items.push(KeyToPath {
            key: PRIVATE_KEY.into(),
            path: PRIVATE_KEY.into(),
            ..Default::default()
        });
    }
    (
        Volume {
            name: "jwt".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(input.resolved.jwt_secret.clone()),
                items: Some(items),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        },
        VolumeMount {
            name: "jwt".into(),
            mount_path: JWT_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        },
    )
}
