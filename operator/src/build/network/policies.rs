//! NetworkPolicies for the flows the architecture needs: default deny for the platform's pods,
//! then one allow-list per flow (ingress controller and Prometheus → HTTP servers, clients →
//! datastores, service → peer, notification → SMTP, → the trace collector, everyone → DNS).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::networking::v1::{
        IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule,
        NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use super::selector;
use crate::build::workloads::HTTP_SERVER_LABEL;
use crate::build::{BuildInput, Child, Kind, child};
use crate::names::{self, AMQP_PORT, Component, DATASTORE_CLIENT_LABEL, POSTGRES_PORT};
use crate::validate::{PostgresMode, RabbitmqMode};

fn tcp(port: IntOrString) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(port),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn pods(sel: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(sel),
        ..Default::default()
    }
}

/// Every address, IPv4 and IPv6 (a dual-stack or IPv6-only cluster reaches external servers
/// over either).
fn anywhere() -> Vec<NetworkPolicyPeer> {
    ["0.0.0.0/0", "::/0"]
        .into_iter()
        .map(|cidr| NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.into(),
                except: None,
            }),
            ..Default::default()
        })
        .collect()
}

/// Pods of the namespaces carrying these labels.
fn namespaces(labels: &[(&str, &str)]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Pods of the namespace with this name (the API server labels every namespace with its name).
fn namespace_named(name: &str) -> NetworkPolicyPeer {
    namespaces(&[("kubernetes.io/metadata.name", name)])
}

pub const DEFAULT_INGRESS_NAMESPACE: &str = "ingress-nginx";
pub const DEFAULT_PROMETHEUS_NAMESPACE: &str = "monitoring";
/// OpenShift labels the namespaces of its routers (on the host network too) with this.
pub const OPENSHIFT_INGRESS_LABEL: &str = "policy-group.network.openshift.io/ingress";
/// OpenShift labels its monitoring namespaces (platform and user workload) with this.
pub const OPENSHIFT_MONITORING_LABEL: (&str, &str) =
    ("network.openshift.io/policy-group", "monitoring");

/// Who may reach the services' HTTP port: the ingress controller, the platform's own pods (a
/// service calling a peer), and Prometheus when it scrapes them.
fn http_clients(input: &BuildInput) -> Vec<NetworkPolicyPeer> {
    let s = &input.platform.spec;
    let openshift = input.resolved.openshift;
    let mut from = Vec::new();
    if openshift {
        from.push(namespaces(&[(OPENSHIFT_INGRESS_LABEL, "")]));
        if let Some(ns) = &s.ingress.controller_namespace {
            from.push(namespace_named(ns));
        }
    } else {
        from.push(namespace_named(
            s.ingress
                .controller_namespace
                .as_deref()
                .unwrap_or(DEFAULT_INGRESS_NAMESPACE),
        ));
    }
    match &s.monitoring.prometheus_namespace {
        Some(ns) => from.push(namespace_named(ns)),
        None if input.resolved.service_monitor && openshift => {
            from.push(namespaces(&[OPENSHIFT_MONITORING_LABEL]))
        }
        None if input.resolved.service_monitor => {
            from.push(namespace_named(DEFAULT_PROMETHEUS_NAMESPACE))
        }
        None => {}
    }
    from.push(pods(selector(input, &[])));
    from
}

fn policy(
    input: &BuildInput,
    suffix: &str,
    pod_selector: LabelSelector,
    ingress: Option<Vec<NetworkPolicyIngressRule>>,
    egress: Option<Vec<NetworkPolicyEgressRule>>,
) -> Child {
    let mut types = Vec::new();
    if ingress.is_some() {
        types.push("Ingress".to_string());
    }
    if egress.is_some() {
        types.push("Egress".to_string());
    }
    let np = NetworkPolicy {
        metadata: input.meta(&names::child_name(input.name(), suffix), "network-policy"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pod_selector),
            policy_types: Some(types),
            ingress,
            egress,
        }),
    };
    child(Kind::NetworkPolicy, &np)
}

/// Default deny for the platform's own pods, then one allow-list per flow of the architecture:
/// ingress controller → HTTP servers, clients → datastores, ticket → audit, admin → user,
/// notification → SMTP, everyone → DNS.
pub(in crate::build) fn network_policies(input: &BuildInput, out: &mut Vec<Child>) {
    let s = &input.platform.spec;
    if !s.network_policies {
        return;
    }
    let inst = input.name();
    out.push(policy(
        input,
        "default-deny",
        selector(input, &[]),
        Some(vec![]),
        Some(vec![]),
    ));
    // Port 53, and 5353 where OpenShift's DNS pods listen (policies see the port after the
    // Service's translation).
    let dns_ports = [53, 5353]
        .into_iter()
        .flat_map(|p| {
            [
                NetworkPolicyPort {
                    port: Some(IntOrString::Int(p)),
                    protocol: Some("UDP".into()),
                    ..Default::default()
                },
                tcp(IntOrString::Int(p)),
            ]
        })
        .collect();
    out.push(policy(
        input,
        "allow-dns",
        selector(input, &[]),
        None,
        Some(vec![NetworkPolicyEgressRule {
            ports: Some(dns_ports),
            to: None,
        }]),
    ));
    // The services trust X-Forwarded-For from whoever connects: only the ingress controller (and
    // the platform's own pods, and Prometheus) may.
    out.push(policy(
        input,
        "allow-http",
        selector(input, &[(HTTP_SERVER_LABEL, "true")]),
        Some(vec![NetworkPolicyIngressRule {
            from: Some(http_clients(input)),
            ports: Some(vec![tcp(IntOrString::String("http".into()))]),
        }]),
        None,
    ));

    let mut datastore_egress = Vec::new();
    let component = |c: &str| selector(input, &[("app.kubernetes.io/component", c)]);
    match &input.resolved.postgres {
        PostgresMode::Managed(_) => {
            datastore_egress.push(NetworkPolicyEgressRule {
                to: Some(vec![pods(component("postgres"))]),
                ports: Some(vec![tcp(IntOrString::Int(POSTGRES_PORT))]),
            });
            // The services, and the scheduled backup's pods (spec.postgres.backup).
            let mut clients = vec![pods(selector(input, &[(DATASTORE_CLIENT_LABEL, "true")]))];
            if s.postgres.backup.is_some() {
                clients.push(pods(component(crate::build::backup::COMPONENT)));
                out.push(policy(
                    input,
                    "postgres-backup-egress",
                    component(crate::build::backup::COMPONENT),
                    None,
                    Some(vec![NetworkPolicyEgressRule {
                        to: Some(vec![pods(component("postgres"))]),
                        ports: Some(vec![tcp(IntOrString::Int(POSTGRES_PORT))]),
                    }]),
                ));
            }
            out.push(policy(
                input,
                "postgres-ingress",
                component("postgres"),
                Some(vec![NetworkPolicyIngressRule {
                    from: Some(clients),
                    ports: Some(vec![tcp(IntOrString::Int(POSTGRES_PORT))]),
                }]),
                None,
            ));
        }
        PostgresMode::CloudNativePg(_) => datastore_egress.push(NetworkPolicyEgressRule {
            to: Some(vec![pods(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "cnpg.io/cluster".to_string(),
                    names::postgres_name(inst),
                )])),
                ..Default::default()
            })]),
            ports: Some(vec![tcp(IntOrString::Int(POSTGRES_PORT))]),
        }),
        PostgresMode::External(_) => datastore_egress.push(NetworkPolicyEgressRule {
            to: Some(anywhere()),
            ports: Some(vec![tcp(IntOrString::Int(POSTGRES_PORT))]),
        }),
    }
    match &input.resolved.rabbitmq {
        RabbitmqMode::Managed(_) => {
            datastore_egress.push(NetworkPolicyEgressRule {
                to: Some(vec![pods(component("rabbitmq"))]),
                ports: Some(vec![tcp(IntOrString::Int(AMQP_PORT))]),
            });
            out.push(policy(
                input,
                "rabbitmq-ingress",
                component("rabbitmq"),
                Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![pods(selector(
                        input,
                        &[(DATASTORE_CLIENT_LABEL, "true")],
                    ))]),
                    ports: Some(vec![tcp(IntOrString::Int(AMQP_PORT))]),
                }]),
                None,
            ));
        }
        RabbitmqMode::ClusterOperator(_) => datastore_egress.push(NetworkPolicyEgressRule {
            to: Some(vec![pods(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/name".to_string(),
                    names::rabbitmq_name(inst),
                )])),
                ..Default::default()
            })]),
            ports: Some(vec![tcp(IntOrString::Int(AMQP_PORT))]),
        }),
        RabbitmqMode::External(_) => datastore_egress.push(NetworkPolicyEgressRule {
            to: Some(anywhere()),
            ports: Some(vec![
                tcp(IntOrString::Int(AMQP_PORT)),
                tcp(IntOrString::Int(5671)),
            ]),
        }),
    }
    out.push(policy(
        input,
        "datastore-egress",
        selector(input, &[(DATASTORE_CLIENT_LABEL, "true")]),
        None,
        Some(datastore_egress),
    ));
    for c in Component::ALL {
        let peers = c.peers();
        if peers.is_empty() {
            continue;
        }
        let to = peers.iter().map(|p| pods(component(p.as_str()))).collect();
        out.push(policy(
            input,
            &format!("{}-egress", c.as_str()),
            component(c.as_str()),
            None,
            Some(vec![NetworkPolicyEgressRule {
                to: Some(to),
                ports: Some(vec![tcp(IntOrString::String("http".into()))]),
            }]),
        ));
    }
    if let Some(smtp) = &s.smtp {
        out.push(policy(
            input,
            "notification-smtp",
            component(Component::Notification.as_str()),
            None,
            Some(vec![NetworkPolicyEgressRule {
                to: Some(anywhere()),
                ports: Some(vec![tcp(IntOrString::Int(smtp.port))]),
            }]),
        ));
    }
    if let Some((_, port)) = &input.resolved.otlp {
        // The collector may live in any namespace or outside the cluster.
        out.push(policy(
            input,
            "otlp-egress",
            selector(input, &[(DATASTORE_CLIENT_LABEL, "true")]),
            None,
            Some(vec![NetworkPolicyEgressRule {
                to: Some(anywhere()),
                ports: Some(vec![tcp(IntOrString::Int(i32::from(*port)))]),
            }]),
        ));
    }
}
