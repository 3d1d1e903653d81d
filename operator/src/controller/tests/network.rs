//! Exposure and network policies: Routes and the ServiceMonitor on OpenShift, and who may reach
//! the HTTP port.

use super::*;

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
