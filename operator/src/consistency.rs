//! Cross-object checks on a built platform: the mistakes a schema validator cannot see.
//!
//! Used by the tests over the sample platforms and by `render --check` in CI.
//!
//! This file holds the references between objects (Secrets and their keys, ConfigMaps, `$(VAR)`
//! order, probe and Service ports, backends, HPA and PDB targets); `contract` holds the checks
//! against the services' contract.

mod contract;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    batch::v1::Job,
    core::v1::{Container, PodTemplateSpec, Probe, Secret, Service},
    networking::v1::Ingress,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::build::{Child, Kind, typed};
use crate::crd::HelpdeskPlatform;
use crate::names;

pub use contract::{check_contract, service_of_image};

/// Secrets the platform reads but that someone else creates (the SRE or another operator).
pub fn secrets_provided_elsewhere(p: &HelpdeskPlatform) -> BTreeSet<String> {
    let inst = p.metadata.name.clone().unwrap_or_default();
    let s = &p.spec;
    let mut out = BTreeSet::new();
    if let Some(e) = &s.postgres.external {
        out.insert(e.secret_ref.name.clone());
        for c in names::Component::ALL {
            if let Some(r) = e.per_service.get(c) {
                out.insert(r.name.clone());
            }
        }
    }
    if s.postgres.cloud_native_pg.is_some() {
        out.insert(format!("{}-app", names::postgres_name(&inst)));
    }
    if let Some(e) = &s.rabbitmq.external {
        out.insert(e.secret_ref.name.clone());
    }
    if s.rabbitmq.rabbitmq_cluster_operator.is_some() {
        out.insert(format!("{}-default-user", names::rabbitmq_name(&inst)));
    }
    if let Some(c) = s
        .smtp
        .as_ref()
        .and_then(|m| m.credentials_secret_ref.as_ref())
    {
        out.insert(c.name.clone());
    }
    out
}

struct Pods {
    owner: String,
    labels: BTreeMap<String, String>,
    template: PodTemplateSpec,
}

fn pods_of(children: &[Child]) -> Vec<Pods> {
    let mut out = Vec::new();
    let mut push = |owner: String, t: PodTemplateSpec| {
        let labels = t
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        out.push(Pods {
            owner,
            labels,
            template: t,
        });
    };
    for c in children {
        match c.kind {
            Kind::Deployment => {
                let d: Deployment = typed(c);
                push(format!("Deployment/{}", c.name()), d.spec.template);
            }
            Kind::StatefulSet => {
                let s: StatefulSet = typed(c);
                push(format!("StatefulSet/{}", c.name()), s.spec.template);
            }
            Kind::Job => {
                let j: Job = typed(c);
                if let Some(spec) = j.spec {
                    push(format!("Job/{}", c.name()), spec.template);
                }
            }
            Kind::CronJob => {
                let j: k8s_openapi::api::batch::v1::CronJob = typed(c);
                if let Some(spec) = j.spec.job_template.spec {
                    push(format!("CronJob/{}", c.name()), spec.template);
                }
            }
            _ => {}
        }
    }
    out
}

fn matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn containers(t: &PodTemplateSpec) -> Vec<Container> {
    t.spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default()
}

fn has_port(c: &Container, port: &IntOrString) -> bool {
    c.ports.iter().flatten().any(|p| match port {
        IntOrString::Int(n) => p.container_port == *n,
        IntOrString::String(name) => p.name.as_deref() == Some(name),
    })
}

fn check_probe(owner: &str, c: &Container, what: &str, p: &Option<Probe>, errs: &mut Vec<String>) {
    let Some(p) = p else { return };
    let port = p
        .http_get
        .as_ref()
        .map(|h| h.port.clone())
        .or_else(|| p.tcp_socket.as_ref().map(|t| t.port.clone()));
    if let Some(port) = port
        && !has_port(c, &port)
    {
        errs.push(format!(
            "{owner}: {what} probe targets port {port:?} that container {} does not expose",
            c.name
        ));
    }
}

/// All problems found; empty means consistent.
pub fn check(children: &[Child], provided_elsewhere: &BTreeSet<String>) -> Vec<String> {
    let mut errs = Vec::new();
    let mut secrets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut config_maps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    let mut deployments = BTreeSet::new();
    for c in children {
        match c.kind {
            Kind::Secret => {
                let s: Secret = typed(c);
                let keys = s.data.unwrap_or_default().into_keys().collect();
                secrets.insert(c.name().to_string(), keys);
            }
            Kind::ConfigMap => {
                let m: k8s_openapi::api::core::v1::ConfigMap = typed(c);
                config_maps.insert(
                    c.name().to_string(),
                    m.data.unwrap_or_default().into_keys().collect(),
                );
            }
            Kind::Service => {
                services.insert(c.name().to_string(), typed(c));
            }
            Kind::Deployment => {
                deployments.insert(c.name().to_string());
            }
            _ => {}
        }
    }
    let pods = pods_of(children);

    let secret_key =
        |owner: &str, name: &str, key: &str, errs: &mut Vec<String>| match secrets.get(name) {
            Some(keys) if keys.contains(key) => {}
            Some(_) => errs.push(format!("{owner}: Secret {name} has no key {key}")),
            None if provided_elsewhere.contains(name) => {}
            None => errs.push(format!(
                "{owner}: Secret {name} is neither created nor provided"
            )),
        };

    for p in &pods {
        let spec = p.template.spec.clone().unwrap_or_default();
        for c in containers(&p.template) {
            let mut defined = BTreeSet::new();
            for e in c.env.iter().flatten() {
                if let Some(from) = &e.value_from {
                    if let Some(r) = &from.secret_key_ref {
                        secret_key(&p.owner, &r.name, &r.key, &mut errs);
                    }
                    if let Some(r) = &from.config_map_key_ref {
                        match config_maps.get(&r.name) {
                            Some(keys) if keys.contains(&r.key) => {}
                            _ => errs.push(format!(
                                "{}: ConfigMap {} has no key {}",
                                p.owner, r.name, r.key
                            )),
                        }
                    }
                }
                if let Some(v) = &e.value {
                    for var in v.split("$(").skip(1).filter_map(|s| s.split(')').next()) {
                        if !defined.contains(var) {
                            errs.push(format!(
                                "{}: {} uses $({var}) before it is defined",
                                p.owner, e.name
                            ));
                        }
                    }
                }
                defined.insert(e.name.clone());
            }
            check_probe(&p.owner, &c, "liveness", &c.liveness_probe, &mut errs);
            check_probe(&p.owner, &c, "readiness", &c.readiness_probe, &mut errs);
            check_probe(&p.owner, &c, "startup", &c.startup_probe, &mut errs);
        }
        for v in spec.volumes.iter().flatten() {
            if let Some(s) = &v.secret {
                let name = s.secret_name.clone().unwrap_or_default();
                for item in s.items.iter().flatten() {
                    secret_key(&p.owner, &name, &item.key, &mut errs);
                }
            }
        }
        if let Some(sa) = &spec.service_account_name
            && !children
                .iter()
                .any(|c| c.kind == Kind::ServiceAccount && c.name() == sa)
        {
            errs.push(format!("{}: ServiceAccount {sa} is not created", p.owner));
        }
    }

    for (name, svc) in &services {
        let spec = svc.spec.clone().unwrap_or_default();
        let selector = spec.selector.unwrap_or_default();
        let matched: Vec<&Pods> = pods
            .iter()
            .filter(|p| matches(&selector, &p.labels))
            .collect();
        if matched.is_empty() {
            errs.push(format!("Service {name}: selector matches no pods"));
        }
        if let Some(job) = matched
            .iter()
            .find(|p| p.owner.starts_with("Job/") || p.owner.starts_with("CronJob/"))
        {
            errs.push(format!(
                "Service {name}: selector also matches {}",
                job.owner
            ));
        }
        for port in spec.ports.iter().flatten() {
            let target = port
                .target_port
                .clone()
                .unwrap_or(IntOrString::Int(port.port));
            for p in &matched {
                if !containers(&p.template).iter().any(|c| has_port(c, &target)) {
                    errs.push(format!(
                        "Service {name}: target port {target:?} not exposed by {}",
                        p.owner
                    ));
                }
            }
        }
    }

    let service_port = |svc: &str, port_name: &str| -> bool {
        services.get(svc).is_some_and(|s| {
            s.spec
                .iter()
                .flat_map(|s| s.ports.iter().flatten())
                .any(|p| p.name.as_deref() == Some(port_name))
        })
    };
    for c in children {
        match c.kind {
            Kind::Ingress => {
                let ing: Ingress = typed(c);
                for rule in ing.spec.iter().flat_map(|s| s.rules.iter().flatten()) {
                    for path in rule.http.iter().flat_map(|h| h.paths.iter()) {
                        let Some(b) = &path.backend.service else {
                            continue;
                        };
                        let port = b
                            .port
                            .as_ref()
                            .and_then(|p| p.name.clone())
                            .unwrap_or_default();
                        if !service_port(&b.name, &port) {
                            errs.push(format!(
                                "Ingress {}: backend {}:{port} does not exist",
                                c.name(),
                                b.name
                            ));
                        }
                    }
                }
            }
            Kind::Route => {
                let svc = c.obj.data["spec"]["to"]["name"]
                    .as_str()
                    .unwrap_or_default();
                let port = c.obj.data["spec"]["port"]["targetPort"]
                    .as_str()
                    .unwrap_or_default();
                if !service_port(svc, port) {
                    errs.push(format!(
                        "Route {}: backend {svc}:{port} does not exist",
                        c.name()
                    ));
                }
            }
            Kind::HorizontalPodAutoscaler => {
                let target = c.obj.data["spec"]["scaleTargetRef"]["name"]
                    .as_str()
                    .unwrap_or_default();
                if !deployments.contains(target) {
                    errs.push(format!(
                        "HPA {}: target Deployment {target} does not exist",
                        c.name()
                    ));
                }
            }
            Kind::PodDisruptionBudget => {
                let sel: BTreeMap<String, String> =
                    serde_json::from_value(c.obj.data["spec"]["selector"]["matchLabels"].clone())
                        .unwrap_or_default();
                if !pods.iter().any(|p| matches(&sel, &p.labels)) {
                    errs.push(format!("PDB {}: selector matches no pods", c.name()));
                }
            }
            _ => {}
        }
    }
    errs
}

#[cfg(test)]
mod tests;
