//! Exposure (Ingress or Routes) with the contract's public paths, NetworkPolicies for the flows
//! the architecture needs, and the ServiceMonitor.
//!
//! This file holds the exposure and the ServiceMonitor; `policies` the NetworkPolicies.

mod policies;

use std::collections::BTreeMap;

use helpdesk_contract::{PUBLIC_ROUTES, http};
use k8s_openapi::{
    api::networking::v1::{
        HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
        IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use serde_json::json;

use super::{BuildInput, Child, Kind, child};
use crate::names::{self, Component, METRICS_LABEL};
use crate::validate::Exposure;

pub(super) use policies::network_policies;

/// A public path and where it goes: the contract's public routes (the same table `helpdesk up`
/// serves), then the frontend at `/`. Internal routes (`/users`, `/notifications` but its status
/// route, which ADMINs may read) are absent on purpose.
pub struct PublicPath {
    pub path: &'static str,
    pub exact: bool,
    /// Suffix of the Route name.
    pub route: &'static str,
    /// `None`: the frontend, only when one is configured.
    pub target: Option<Component>,
}

pub fn public_paths() -> impl Iterator<Item = PublicPath> {
    PUBLIC_ROUTES
        .iter()
        .map(|r| PublicPath {
            path: r.path,
            exact: r.exact,
            route: r.name,
            target: Some(r.service),
        })
        .chain(std::iter::once(PublicPath {
            path: "/",
            exact: false,
            route: "frontend",
            target: None,
        }))
}

fn backend_service(input: &BuildInput, p: &PublicPath) -> Option<String> {
    match p.target {
        Some(c) => Some(names::service_name(input.name(), c)),
        None => input
            .platform
            .spec
            .frontend
            .as_ref()
            .map(|_| names::frontend_name(input.name())),
    }
}

fn with_annotations(
    input: &BuildInput,
    mut meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    let a = &input.platform.spec.ingress.annotations;
    if !a.is_empty() {
        meta.annotations = Some(a.clone());
    }
    meta
}

pub(super) fn exposure(input: &BuildInput, out: &mut Vec<Child>) {
    let spec = &input.platform.spec.ingress;
    match input.resolved.exposure {
        Exposure::Ingress => {
            let paths = public_paths()
                .filter_map(|p| {
                    backend_service(input, &p).map(|svc| HTTPIngressPath {
                        path: Some(p.path.into()),
                        path_type: if p.exact { "Exact" } else { "Prefix" }.into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: svc,
                                port: Some(ServiceBackendPort {
                                    name: Some("http".into()),
                                    ..Default::default()
                                }),
                            }),
                            ..Default::default()
                        },
                    })
                })
                .collect();
            let ing = Ingress {
                metadata: with_annotations(input, input.meta(input.name(), "ingress")),
                spec: Some(IngressSpec {
                    ingress_class_name: spec.class_name.clone(),
                    tls: spec.tls_secret_name.as_ref().map(|s| {
                        vec![IngressTLS {
                            hosts: Some(vec![spec.host.clone()]),
                            secret_name: Some(s.clone()),
                        }]
                    }),
                    rules: Some(vec![IngressRule {
                        host: Some(spec.host.clone()),
                        http: Some(HTTPIngressRuleValue { paths }),
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            };
            out.push(child(Kind::Ingress, &ing));
        }
        Exposure::Route => {
            // A Route carries one path, so each public prefix gets its own.
            for p in public_paths() {
                let Some(svc) = backend_service(input, &p) else {
                    continue;
                };
                let name = names::child_name(input.name(), p.route);
                let route = json!({
                    "metadata": with_annotations(input, input.meta(&name, "route")),
                    "spec": {
                        "host": spec.host,
                        "path": p.path,
                        "to": {"kind": "Service", "name": svc, "weight": 100},
                        "port": {"targetPort": "http"},
                        "tls": {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"},
                        "wildcardPolicy": "None",
                    },
                });
                out.push(child(Kind::Route, &route));
            }
        }
    }
}

fn selector(input: &BuildInput, extra: &[(&str, &str)]) -> LabelSelector {
    let mut m = BTreeMap::from([
        (
            "app.kubernetes.io/instance".to_string(),
            input.name().to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            names::MANAGER.to_string(),
        ),
    ]);
    for (k, v) in extra {
        m.insert(k.to_string(), v.to_string());
    }
    LabelSelector {
        match_labels: Some(m),
        ..Default::default()
    }
}

pub(super) fn service_monitor(input: &BuildInput, out: &mut Vec<Child>) {
    if !input.resolved.service_monitor {
        return;
    }
    let sm = json!({
        "metadata": input.meta(input.name(), "monitoring"),
        "spec": {
            "selector": selector(input, &[(METRICS_LABEL, "true")]),
            "endpoints": [{"port": "http", "path": http::METRICS_PATH, "interval": "30s"}],
        },
    });
    out.push(child(Kind::ServiceMonitor, &sm));
}

#[cfg(test)]
mod tests;
