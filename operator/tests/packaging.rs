//! The operator's permissions as shipped: the Helm chart's ClusterRole and the OLM bundle's
//! CSV grant the same rules (`operator/ci.sh` checks the rendered chart too), and those rules
//! cover what the reconciler does.

use serde_yaml::Value;

fn read(rel: &str) -> String {
    let path = format!("{}/../{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The rules of the chart's ClusterRole (the first document of the template, without the
/// templated metadata lines).
fn chart_rules() -> Value {
    let text = read("charts/helpdesk-operator/templates/rbac.yaml");
    let first = text.split("\n---").next().unwrap();
    let plain: String = first
        .lines()
        .filter(|l| !l.contains("{{"))
        .map(|l| format!("{l}\n"))
        .collect();
    let doc: Value = serde_yaml::from_str(&plain).unwrap();
    assert_eq!(doc["kind"], "ClusterRole");
    doc["rules"].clone()
}

fn csv_rules() -> Value {
    let text = read("openshift/bundle/manifests/helpdesk-operator.clusterserviceversion.yaml");
    let csv: Value = serde_yaml::from_str(&text).unwrap();
    csv["spec"]["install"]["spec"]["clusterPermissions"][0]["rules"].clone()
}

fn grants(rules: &Value, group: &str, resource: &str, verb: &str) -> bool {
    let has = |v: &Value, s: &str| {
        v.as_sequence()
            .is_some_and(|seq| seq.iter().any(|x| x.as_str() == Some(s)))
    };
    rules.as_sequence().unwrap().iter().any(|r| {
        has(&r["apiGroups"], group) && has(&r["resources"], resource) && has(&r["verbs"], verb)
    })
}

#[test]
fn chart_and_csv_grant_the_same_rules() {
    assert_eq!(chart_rules(), csv_rules());
}

/// Issue 11 item 5: owner references carry `blockOwnerDeletion: true`, which OpenShift (the
/// OwnerReferencesPermissionEnforcement admission plugin) allows only with `update` on the
/// owner's `finalizers` subresource. Item 4: storage growth patches the datastores' claims.
#[test]
fn the_grants_cover_what_the_reconciler_does() {
    for rules in [chart_rules(), csv_rules()] {
        assert!(grants(
            &rules,
            "helpdesk.dev",
            "helpdeskplatforms/finalizers",
            "update"
        ));
        assert!(grants(&rules, "", "persistentvolumeclaims", "get"));
        assert!(grants(&rules, "", "persistentvolumeclaims", "patch"));
        assert!(grants(
            &rules,
            "helpdesk.dev",
            "helpdeskplatforms/status",
            "patch"
        ));
    }
}
