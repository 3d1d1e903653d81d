//! Tests of the field-level checks: storage and resource quantities, email addresses, backup
//! settings and names, each reported at its field's path.

use crate::crd::HelpdeskPlatform;
use crate::validate::{Capabilities, validate};

fn platform(spec: &str) -> HelpdeskPlatform {
    serde_yaml::from_str(&format!(
        "apiVersion: helpdesk.dev/v1alpha1\nkind: HelpdeskPlatform\nmetadata: {{name: hd, namespace: ns}}\nspec:\n{spec}"
    ))
    .unwrap()
}

/// Every message of every rule, as an SRE reads it: `<path>: <problem>`.
fn messages(spec: &str) -> Vec<String> {
    match validate(&platform(spec), &Capabilities::default()) {
        Ok(_) => Vec::new(),
        Err(errs) => errs.iter().map(ToString::to_string).collect(),
    }
}

fn assert_reports(spec: &str, expected: &[&str]) {
    let got = messages(spec);
    for e in expected {
        assert!(
            got.iter().any(|g| g.starts_with(e)),
            "missing {e:?} in {got:#?}"
        );
    }
    assert_eq!(got.len(), expected.len(), "{got:#?}");
}

#[test]
fn storage_sizes_must_be_quantities() {
    assert_reports(
        "  ingress: {host: a.example.com}\n  postgres: {managed: {storage: 10GB}}\n  rabbitmq: {managed: {storage: -1Gi}}",
        &[
            "spec.postgres.managed.storage: \"10GB\" is not a Kubernetes quantity",
            "spec.rabbitmq.managed.storage: \"-1Gi\" must be a positive size",
        ],
    );
    let caps = Capabilities {
        cloud_native_pg: true,
        rabbitmq_operator: true,
        ..Default::default()
    };
    let p = platform(
        "  ingress: {host: a.example.com}\n  postgres: {cloudNativePG: {storage: abc, storageClassName: Fast_SSD}}\n  rabbitmq: {rabbitmqClusterOperator: {storage: 500m}}",
    );
    let errs: Vec<String> = validate(&p, &caps)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with(
            "spec.postgres.cloudNativePG.storage: \"abc\" is not a Kubernetes quantity"
        )
    );
    assert!(errs[1].starts_with("spec.postgres.cloudNativePG.storageClassName: \"Fast_SSD\""));
    assert!(errs[2].starts_with(
        "spec.rabbitmq.rabbitmqClusterOperator.storage: \"500m\" is a fraction of a byte"
    ));
    assert_eq!(
        messages(
            "  ingress: {host: a.example.com}\n  postgres: {managed: {storage: 500M}}\n  rabbitmq: {managed: {storage: \"1e9\"}}"
        ),
        Vec::<String>::new()
    );
}

#[test]
fn resource_quantities_and_requests_within_limits() {
    assert_reports(
        "  ingress: {host: a.example.com}\n  services: {ticket: {resources: {requests: {cpu: 1 core, memory: 512Mi}, limits: {memory: 256Mi}}}}",
        &[
            "spec.services.ticket.resources.requests.cpu: \"1 core\" is not a Kubernetes quantity",
            "spec.services.ticket.resources.requests.memory: 512Mi must not exceed the limit 256Mi",
        ],
    );
}

#[test]
fn email_addresses_are_checked() {
    assert_reports(
        "  ingress: {host: a.example.com}\n  smtp: {host: smtp.example.com, from: helpdesk, staffNotifyEmail: \"support at example.com\"}",
        &[
            "spec.smtp.from: \"helpdesk\" is not an email address",
            "spec.smtp.staffNotifyEmail: \"support at example.com\" is not an email address",
        ],
    );
    assert_eq!(
        messages(
            "  ingress: {host: a.example.com}\n  smtp: {host: 10.0.0.25, from: \"Helpdesk <helpdesk@example.com>\", staffNotifyEmail: support@example.com}"
        ),
        Vec::<String>::new()
    );
    // A host without a dot makes the generated addresses invalid: said where to fix it.
    assert_reports(
        "  ingress: {host: localhost}\n  smtp: {host: \"smtp host\"}",
        &[
            "spec.smtp.host: \"smtp host\" is not a host name or IP address",
            "spec.smtp.from: is unset and the default helpdesk@localhost is not an email address",
            "spec.auth.bootstrapAdminSecretRef: is unset and the generated administrator admin@localhost",
        ],
    );
}

#[test]
fn backup_settings_are_checked() {
    assert_reports(
        "  ingress: {host: a.example.com}\n  postgres: {backup: {schedule: \"every night\", retention: 0, storage: 5GB}}",
        &[
            "spec.postgres.backup.schedule: \"every night\" is not a cron schedule: 2 fields",
            "spec.postgres.backup.retention: must be >= 1",
            "spec.postgres.backup.storage: \"5GB\" is not a Kubernetes quantity",
        ],
    );
    assert_reports(
        "  ingress: {host: a.example.com}\n  postgres: {backup: {schedule: \"30 2 * * 1-5\"}}",
        &[],
    );
    assert!(crate::rules::cron_schedule("@daily").is_ok());
    assert!(crate::rules::cron_schedule("0 2 * * * *").is_err());
    assert!(crate::rules::cron_schedule("0 2 * * $(reboot)").is_err());
}

#[test]
fn names_that_become_object_names_follow_kubernetes_rules() {
    let long = "a".repeat(41);
    let p = |name: &str, spec: &str| {
        serde_yaml::from_str::<HelpdeskPlatform>(&format!(
            "apiVersion: helpdesk.dev/v1alpha1\nkind: HelpdeskPlatform\nmetadata: {{name: {name}, namespace: Support}}\nspec:\n  ingress: {{host: a.example.com}}\n{spec}"
        ))
        .unwrap()
    };
    let errs = |p: HelpdeskPlatform, caps: Capabilities| -> Vec<String> {
        validate(&p, &caps)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let got = errs(
        p(
            "help.desk",
            "  image: {pullSecrets: [regcred, Reg_Cred]}\n  auth: {signingKeySecretRef: {name: \"my key\"}}\n  postgres: {external: {secretRef: {name: db, key: \"a/b\"}}}",
        ),
        Capabilities::default(),
    );
    let want = [
        "metadata.name: \"help.desk\" may contain only lower-case letters, digits and '-' (it prefixes the platform's Service names)",
        "metadata.namespace: \"Support\" may contain only",
        "spec.image.pullSecrets[1]: \"Reg_Cred\" may contain only",
        "spec.postgres.external.secretRef.key: \"a/b\" may contain only letters, digits",
        "spec.auth.signingKeySecretRef.name: \"my key\" may contain only",
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (g, w) in got.iter().zip(want) {
        assert!(g.starts_with(w), "{g} does not start with {w}");
    }
    assert!(
        errs(p("1desk", ""), Capabilities::default())[0]
            .contains("must start with a lower-case letter")
    );
    assert!(errs(p(&long, ""), Capabilities::default())[0].contains("at most 40"));
    // The RabbitMQ Cluster Operator's StatefulSet is <name>-rabbitmq-server: 36 at most.
    let caps = Capabilities {
        rabbitmq_operator: true,
        ..Default::default()
    };
    let got = errs(
        p(&"a".repeat(37), "  rabbitmq: {rabbitmqClusterOperator: {}}"),
        caps,
    );
    assert!(
        got[0].contains("at most 36") && got[0].contains("-rabbitmq-server"),
        "{got:?}"
    );
    // A backup CronJob is <name>-postgres-backup: 36 at most too.
    let got = errs(
        p(&"b".repeat(37), "  postgres: {backup: {storage: 5Gi}}"),
        Capabilities::default(),
    );
    assert!(
        got.iter()
            .any(|g| g.contains("at most 36") && g.contains("-postgres-backup")),
        "{got:?}"
    );
    assert!(
        !errs(
            p(&"b".repeat(36), "  postgres: {backup: {storage: 5Gi}}"),
            Capabilities::default()
        )
        .iter()
        .any(|g| g.contains("-postgres-backup"))
    );
}
