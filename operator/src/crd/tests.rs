//! The resource's defaults and parsing, and the generated CRD (printer columns, CEL rules, and the
//! committed copies in `crds/`, the chart and the OLM bundle).

use super::*;

#[test]
fn roles_are_the_contracts() {
    for r in [Role::User, Role::Agent, Role::Admin] {
        let c = helpdesk_contract::Role::from(r);
        assert_eq!(serde_json::to_value(r).unwrap(), c.as_str());
        assert_eq!(r.as_str(), c.as_str());
    }
    assert_eq!(
        helpdesk_contract::Role::from(Role::default()),
        helpdesk_contract::DEFAULT_SIGNUP_ROLE
    );
}

#[test]
fn minimal_resource_gets_defaults() {
    let p: HelpdeskPlatform = serde_yaml::from_str(
        r#"
apiVersion: helpdesk.dev/v1alpha1
kind: HelpdeskPlatform
metadata: {name: helpdesk, namespace: support}
spec:
  version: "0.1.0"
  ingress: {host: helpdesk.example.com}
"#,
    )
    .unwrap();
    let s = &p.spec;
    assert_eq!(s.image.registry, "ghcr.io/helpdesk");
    assert_eq!(s.services.ticket.replicas, 1);
    assert!(s.postgres.managed.is_none() && s.postgres.external.is_none());
    assert_eq!(s.auth.token_ttl, "7d");
    assert_eq!(s.auth.signup_default_role, Role::Agent);
    assert!(s.network_policies && s.pod_disruption_budgets);
    assert_eq!(s.monitoring.service_monitor, ServiceMonitorMode::Auto);
    assert_eq!(s.ingress.kind, IngressKind::Auto);
}

#[test]
fn service_monitor_accepts_bools_and_strings() {
    for (y, want) in [
        ("true", ServiceMonitorMode::Enabled),
        ("\"false\"", ServiceMonitorMode::Disabled),
        ("auto", ServiceMonitorMode::Auto),
    ] {
        let m: MonitoringSpec = serde_yaml::from_str(&format!("serviceMonitor: {y}")).unwrap();
        assert_eq!(m.service_monitor, want);
    }
    let m: MonitoringSpec = serde_yaml::from_str("serviceMonitor: maybe").unwrap();
    assert_eq!(
        m.service_monitor,
        ServiceMonitorMode::Invalid("maybe".into())
    );
}

#[test]
fn crd_has_status_printer_columns_and_cel_rules() {
    let crd = serde_json::to_value(crd()).unwrap();
    let v = &crd["spec"]["versions"][0];
    assert_eq!(v["subresources"]["status"], json!({}));
    let cols: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Ready", "Phase", "Version", "URL", "Age"]);
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["hdp"]));
    let text = serde_json::to_string(&crd).unwrap();
    assert!(text.contains("set at most one of managed, cloudNativePG, external"));
    assert!(text.contains("minReplicas must not exceed maxReplicas"));
    assert!(
        !text.contains("$ref"),
        "schema must be structural (no $ref)"
    );
}

/// Fails when `crds/` drifts from the Rust types; fix with `cargo run -p helpdesk-operator -- crd > crds/...`.
#[test]
fn committed_crd_matches_types() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/helpdeskplatforms.helpdesk.dev.yaml"
    );
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == crd_yaml(),
        "{CRD_FILE} is out of date: run operator/scripts/sync-crds.sh"
    );
    // The chart and the OLM bundle ship the same file.
    for copy in [
        "/../charts/helpdesk-operator/crds/helpdeskplatforms.helpdesk.dev.yaml",
        "/../openshift/bundle/manifests/helpdeskplatforms.helpdesk.dev.crd.yaml",
    ] {
        let path = format!("{}{copy}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            text == committed,
            "{path} differs from {CRD_FILE}: run operator/scripts/sync-crds.sh"
        );
    }
}
