//! Tests of exposure and network objects: the Ingress's public paths, Routes on OpenShift, the
//! NetworkPolicies of the architecture (with the trace collector), and the ServiceMonitor.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::super::fixtures::*;
use super::*;
use crate::names::DATASTORE_CLIENT_LABEL;
use crate::validate::Capabilities;

#[test]
fn ingress_routes_public_paths_only() {
    let all = build_default(
        "  ingress: {host: h.example.com, className: nginx, tlsSecretName: h-tls, annotations: {a: b}}\n  frontend: {image: fe:1}",
    );
    let ing: Ingress = get(&all, Kind::Ingress, "hd");
    assert_eq!(ing.metadata.annotations.as_ref().unwrap()["a"], "b");
    let spec = ing.spec.unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    assert_eq!(spec.tls.unwrap()[0].secret_name.as_deref(), Some("h-tls"));
    let rule = &spec.rules.unwrap()[0];
    assert_eq!(rule.host.as_deref(), Some("h.example.com"));
    let routes: Vec<(String, String)> = rule
        .http
        .as_ref()
        .unwrap()
        .paths
        .iter()
        .map(|p| {
            (
                p.path.clone().unwrap(),
                p.backend.service.as_ref().unwrap().name.clone(),
            )
        })
        .collect();
    let get = |path: &str| {
        routes
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, s)| s.as_str())
    };
    assert_eq!(get("/auth"), Some("hd-user"));
    assert_eq!(get("/tickets"), Some("hd-ticket"));
    assert_eq!(get("/admin"), Some("hd-admin"));
    assert_eq!(get("/audit"), Some("hd-audit"));
    assert_eq!(get("/.well-known"), Some("hd-user"));
    assert_eq!(get("/"), Some("hd-frontend"));
    assert_eq!(get("/users"), None);
    assert_eq!(get("/notifications"), None);
    assert_eq!(get("/notifications/status"), Some("hd-notification"));
}

#[test]
fn no_frontend_no_root_path() {
    let all = build_default("  ingress: {host: h.example.com}");
    let ing: Ingress = get(&all, Kind::Ingress, "hd");
    let paths = &ing.spec.unwrap().rules.unwrap()[0]
        .http
        .as_ref()
        .unwrap()
        .paths
        .clone();
    assert!(paths.iter().all(|p| p.path.as_deref() != Some("/")));
}

#[test]
fn routes_on_openshift() {
    let caps = Capabilities {
        routes: true,
        ..Default::default()
    };
    let all = build_with("  ingress: {host: h.example.com}", caps);
    assert!(names_of(&all, Kind::Ingress).is_empty());
    let routes = names_of(&all, Kind::Route);
    assert_eq!(routes.len(), 8);
    let r = find(&all, Kind::Route, "hd-tickets");
    assert_eq!(r.obj.data["spec"]["to"]["name"], "hd-ticket");
    assert_eq!(r.obj.data["spec"]["path"], "/tickets");
    assert_eq!(r.obj.data["spec"]["tls"]["termination"], "edge");
}

#[test]
fn network_policies_follow_the_architecture() {
    let all = build_default(
        "  ingress: {host: h.example.com}\n  smtp: {host: smtp.example.com, port: 2525}",
    );
    let mut names = names_of(&all, Kind::NetworkPolicy);
    names.sort();
    assert_eq!(
        names,
        [
            "hd-admin-egress",
            "hd-allow-dns",
            "hd-allow-http",
            "hd-datastore-egress",
            "hd-default-deny",
            "hd-notification-smtp",
            "hd-postgres-ingress",
            "hd-rabbitmq-ingress",
            "hd-ticket-egress",
        ]
    );
    let t: NetworkPolicy = get(&all, Kind::NetworkPolicy, "hd-ticket-egress");
    let to = &t.spec.unwrap().egress.unwrap()[0].to.clone().unwrap()[0];
    assert_eq!(
        to.pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["app.kubernetes.io/component"],
        "audit"
    );
    let smtp: NetworkPolicy = get(&all, Kind::NetworkPolicy, "hd-notification-smtp");
    assert_eq!(
        smtp.spec.unwrap().egress.unwrap()[0]
            .ports
            .as_ref()
            .unwrap()[0]
            .port,
        Some(IntOrString::Int(2525))
    );
    let off = build_default("  ingress: {host: h.example.com}\n  networkPolicies: false");
    assert!(names_of(&off, Kind::NetworkPolicy).is_empty());
}

#[test]
fn services_may_reach_the_trace_collector() {
    let all = build_default(
        "  ingress: {host: h.example.com}\n  monitoring: {otlpEndpoint: \"http://otel.observability:4318/\"}",
    );
    let p: NetworkPolicy = get(&all, Kind::NetworkPolicy, "hd-otlp-egress");
    let spec = p.spec.unwrap();
    assert_eq!(
        spec.pod_selector.unwrap().match_labels.unwrap()[DATASTORE_CLIENT_LABEL],
        "true",
        "every service pod"
    );
    assert_eq!(
        spec.egress.unwrap()[0].ports.as_ref().unwrap()[0].port,
        Some(IntOrString::Int(4318))
    );
    let none = build_default("  ingress: {host: h.example.com}");
    assert!(!names_of(&none, Kind::NetworkPolicy).contains(&"hd-otlp-egress".to_string()));
}

#[test]
fn service_monitor_when_available() {
    let caps = Capabilities {
        service_monitor: true,
        ..Default::default()
    };
    let all = build_with("  ingress: {host: h.example.com}", caps);
    let sm = find(&all, Kind::ServiceMonitor, "hd");
    assert_eq!(sm.obj.data["spec"]["endpoints"][0]["path"], "/metrics");
    let none = build_with(
        "  ingress: {host: h.example.com}\n  monitoring: {serviceMonitor: false}",
        caps,
    );
    assert!(names_of(&none, Kind::ServiceMonitor).is_empty());
}
