//! `render`: every object the operator would create for a resource, without a cluster.

use std::collections::BTreeMap;

use crate::build::{BuildInput, Child, build};
use crate::crd::{GROUP, HelpdeskPlatform, IngressKind, ServiceMonitorMode, VERSION};
use crate::material::SecretMaterial;
use crate::validate::{Capabilities, PostgresMode, RabbitmqMode, validate};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot parse the resource: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("invalid HelpdeskPlatform {name}:\n  - {}", problems.join("\n  - "))]
    Invalid { name: String, problems: Vec<String> },
    #[error("inconsistent objects for HelpdeskPlatform {name}:\n  - {}", problems.join("\n  - "))]
    Inconsistent { name: String, problems: Vec<String> },
}

/// Builds the children of one platform as if every migration had finished.
pub fn render_platform(
    p: &HelpdeskPlatform,
    caps: &Capabilities,
) -> Result<Vec<Child>, RenderError> {
    let resolved = validate(p, caps).map_err(|problems| RenderError::Invalid {
        name: p.metadata.name.clone().unwrap_or_default(),
        problems: problems.iter().map(ToString::to_string).collect(),
    })?;
    let material = SecretMaterial::generate(
        &crate::material::default_admin_email(&p.spec.ingress.host),
        matches!(resolved.postgres, PostgresMode::Managed(_)),
        matches!(resolved.rabbitmq, RabbitmqMode::Managed(_)),
    );
    Ok(build(&BuildInput {
        platform: p,
        resolved: &resolved,
        material: &material,
        deploy_versions: BTreeMap::new(),
    }))
}

/// The optional APIs a resource explicitly asks for, and the field that asks. Offline there is
/// no cluster to ask whether they exist, so `render` assumes them.
pub fn named_apis(p: &HelpdeskPlatform) -> Capabilities {
    let s = &p.spec;
    Capabilities {
        routes: s.ingress.kind == IngressKind::Route,
        cloud_native_pg: s.postgres.cloud_native_pg.is_some(),
        rabbitmq_operator: s.rabbitmq.rabbitmq_cluster_operator.is_some(),
        service_monitor: s.monitoring.service_monitor == ServiceMonitorMode::Enabled,
    }
}

/// The header comment naming every optional API a render assumed, and why; empty when none.
fn assumptions(named: &Capabilities, forced: &Capabilities) -> String {
    let apis = [
        (
            named.cloud_native_pg,
            forced.cloud_native_pg,
            "postgresql.cnpg.io/v1 Cluster",
            "spec.postgres.cloudNativePG",
            "--cloud-native-pg",
        ),
        (
            named.rabbitmq_operator,
            forced.rabbitmq_operator,
            "rabbitmq.com/v1beta1 RabbitmqCluster",
            "spec.rabbitmq.rabbitmqClusterOperator",
            "--rabbitmq-operator",
        ),
        (
            named.routes,
            forced.routes,
            "route.openshift.io/v1 Route",
            "spec.ingress.kind: route; OpenShift, random UIDs",
            "--openshift; OpenShift, random UIDs",
        ),
        (
            named.service_monitor,
            forced.service_monitor,
            "monitoring.coreos.com/v1 ServiceMonitor",
            "spec.monitoring.serviceMonitor: true",
            "--service-monitor",
        ),
    ];
    let list: Vec<String> = apis
        .iter()
        .filter(|(n, f, ..)| *n || *f)
        .map(|(n, _, api, field, flag)| format!("{api} ({})", if *n { field } else { flag }))
        .collect();
    if list.is_empty() {
        String::new()
    } else {
        format!(
            "# rendered assuming these APIs exist: {}\n",
            list.join(", ")
        )
    }
}

/// Reads one document: every unknown field (top level, `metadata`, anywhere in `spec`) and every
/// field that does not parse is a problem with its path, as `kubectl --validate=strict` reports.
/// The platform comes back when it parses, with the problems found at the top level.
fn read_platform(doc: serde_json::Value) -> (Option<HelpdeskPlatform>, Vec<String>) {
    let mut problems: Vec<String> = crate::strict::unknown_resource_fields(&doc)
        .iter()
        .map(ToString::to_string)
        .collect();
    let (group_version, kind) = (format!("{GROUP}/{VERSION}"), "HelpdeskPlatform");
    if doc["apiVersion"].as_str() != Some(group_version.as_str()) {
        problems.push(format!(
            "apiVersion: must be {group_version}, not {}",
            doc["apiVersion"]
        ));
    }
    if doc["kind"].as_str() != Some(kind) {
        problems.push(format!("kind: must be {kind}, not {}", doc["kind"]));
    }
    match serde_json::from_value::<HelpdeskPlatform>(doc) {
        Ok(p) => (Some(p), problems),
        Err(e) => {
            problems.push(e.to_string());
            (None, problems)
        }
    }
}

/// Renders every `HelpdeskPlatform` document of a YAML stream into one multi-document YAML.
/// `forced` are the APIs the flags force; the ones a resource names are assumed too, and a
/// comment above its objects says which. With `check`, the cross-object consistency checks run too and
/// fail the render.
pub fn render_yaml(input: &str, forced: &Capabilities, check: bool) -> Result<String, RenderError> {
    let mut out = String::new();
    for doc in serde_yaml::Deserializer::from_str(input) {
        let value = serde_json::Value::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (p, mut problems) = read_platform(value);
        let Some(mut p) = p else {
            return Err(RenderError::Invalid { name, problems });
        };
        if p.metadata.namespace.is_none() {
            p.metadata.namespace = Some("default".into());
        }
        let named = named_apis(&p);
        let caps = Capabilities {
            routes: forced.routes || named.routes,
            cloud_native_pg: forced.cloud_native_pg || named.cloud_native_pg,
            rabbitmq_operator: forced.rabbitmq_operator || named.rabbitmq_operator,
            service_monitor: forced.service_monitor || named.service_monitor,
        };
        if !problems.is_empty() {
            // Report the spec's problems together with the ones found at the top level.
            if let Err(more) = validate(&p, &caps) {
                problems.extend(more.iter().map(ToString::to_string));
            }
            return Err(RenderError::Invalid { name, problems });
        }
        let children = render_platform(&p, &caps)?;
        if check {
            let mut problems = crate::consistency::check(
                &children,
                &crate::consistency::secrets_provided_elsewhere(&p),
            );
            // Routes mean OpenShift, whose SCC assigns the pods' user and groups.
            problems.extend(crate::consistency::check_contract(&children, caps.routes));
            if !problems.is_empty() {
                return Err(RenderError::Inconsistent {
                    name: p.metadata.name.clone().unwrap_or_default(),
                    problems,
                });
            }
        }
        out.push_str(&assumptions(&named, forced));
        for c in children {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(&c.obj)?);
        }
    }
    Ok(out)
}

use serde::Deserialize;
