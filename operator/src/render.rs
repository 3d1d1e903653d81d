//! `render`: every object the operator would create for a resource, without a cluster.

use std::collections::BTreeMap;

use crate::build::{BuildInput, Child, build};
use crate::crd::HelpdeskPlatform;
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
        problems,
    })?;
    let material = SecretMaterial::generate(
        &format!("admin@{}", p.spec.ingress.host),
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

/// Renders every `HelpdeskPlatform` document of a YAML stream into one multi-document YAML.
/// With `check`, the cross-object consistency checks run too and fail the render.
pub fn render_yaml(input: &str, caps: &Capabilities, check: bool) -> Result<String, RenderError> {
    let mut out = String::new();
    for doc in serde_yaml::Deserializer::from_str(input) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        let mut p: HelpdeskPlatform = serde_yaml::from_value(value)?;
        if p.metadata.namespace.is_none() {
            p.metadata.namespace = Some("default".into());
        }
        let children = render_platform(&p, caps)?;
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
        for c in children {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(&c.obj)?);
        }
    }
    Ok(out)
}

use serde::Deserialize;
