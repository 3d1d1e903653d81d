//! The operator's permissions as shipped: the Helm chart's rules (`files/operator-rules.yaml`,
//! bound per watched namespace or cluster-wide) and the OLM bundle's CSV grant the same
//! namespaced rules (`operator/ci.sh` checks the rendered chart too), nothing cluster-wide, and
//! those rules cover what the reconciler does.

use serde_yaml::Value;

use helpdesk_operator::build::Kind;

fn read(rel: &str) -> String {
    let path = format!("{}/../{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The operator's rules as the chart ships them (a plain YAML list).
fn chart_rules() -> Value {
    serde_yaml::from_str(&read("charts/helpdesk-operator/files/operator-rules.yaml")).unwrap()
}

fn csv_install() -> Value {
    let text = read("openshift/bundle/manifests/helpdesk-operator.clusterserviceversion.yaml");
    let csv: Value = serde_yaml::from_str(&text).unwrap();
    csv["spec"]["install"]["spec"].clone()
}

fn csv_rules() -> Value {
    csv_install()["permissions"][0]["rules"].clone()
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

/// Issue 11 item 7: the CSV's rules are namespaced `permissions` (OLM scopes them to the
/// OperatorGroup's namespaces), the chart's plus leader election, and no `clusterPermissions`.
#[test]
fn chart_and_csv_grant_the_same_namespaced_rules() {
    let mut expected = chart_rules().as_sequence().unwrap().clone();
    expected.push(
        serde_yaml::from_str(
            "{apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, create, update]}",
        )
        .unwrap(),
    );
    assert_eq!(csv_rules(), Value::Sequence(expected));
    assert!(
        csv_install().get("clusterPermissions").is_none(),
        "nothing the operator does needs a cluster-wide grant"
    );
}

/// Issue 11 item 7: with watched namespaces listed, the chart binds Roles in them and creates
/// nothing cluster-wide; the ClusterRole exists only for watching every namespace.
#[test]
fn the_chart_binds_cluster_wide_only_when_watching_every_namespace() {
    let text = read("charts/helpdesk-operator/templates/rbac.yaml");
    let listed = text
        .split("{{- else }}")
        .nth(1)
        .and_then(|t| t.split("{{- end }}\n{{- end }}").next())
        .expect("a branch for listed namespaces");
    assert!(listed.contains("kind: Role\n") && listed.contains("kind: RoleBinding\n"));
    assert!(!listed.contains("ClusterRole"), "{listed}");
    let all = text.split("{{- else }}").next().unwrap();
    assert!(all.contains("{{- if empty .Values.watchNamespaces }}"));
    assert!(all.contains("kind: ClusterRole\n"));
}

/// Every kind the operator applies can be created, patched, listed and deleted; plus what
/// issue 11 needs: `update` on the finalizers subresource (OpenShift's
/// OwnerReferencesPermissionEnforcement for `blockOwnerDeletion: true`), patching claims
/// (storage growth) and the status.
#[test]
fn the_grants_cover_what_the_reconciler_does() {
    for rules in [chart_rules(), csv_rules()] {
        for kind in Kind::ALL {
            let ar = kind.api_resource();
            for verb in ["get", "list", "create", "patch", "delete"] {
                assert!(
                    grants(&rules, &ar.group, &ar.plural, verb),
                    "{verb} {}.{}",
                    ar.plural,
                    ar.group
                );
            }
        }
        assert!(grants(
            &rules,
            "helpdesk.dev",
            "helpdeskplatforms/finalizers",
            "update"
        ));
        assert!(grants(&rules, "", "persistentvolumeclaims", "patch"));
        assert!(grants(
            &rules,
            "helpdesk.dev",
            "helpdeskplatforms/status",
            "patch"
        ));
    }
}
