//! The `HelpdeskPlatform` custom resource: the public contract SREs script against.
//!
//! Field names follow `shared/spec/operator.md`; every field except `ingress.host` has a default,
//! and those defaults are written into the generated CRD schema.
//!
//! This file holds the resource itself (the spec's top level, with its strict reading), the
//! references and free-form schemas the areas share, and the generated CRD; the spec's areas are
//! in submodules named after their fields (`services` also holds `image` and `frontend`,
//! `datastores` holds `postgres` and `rabbitmq`), and `status` the status. Everything is
//! re-exported here: the types are `crate::crd::X`.

mod auth;
mod datastores;
mod ingress;
mod monitoring;
mod services;
mod smtp;
mod status;

use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::validate::FieldError;

pub use auth::{AuthSpec, Role};
pub use datastores::{
    CloudNativePgSpec, ExternalPostgres, ExternalRabbitmq, ManagedPostgres, ManagedRabbitmq,
    PerServiceRefs, PostgresBackup, PostgresSpec, PvcRetention, RabbitmqClusterOperatorSpec,
    RabbitmqSpec,
};
pub use ingress::{IngressKind, IngressSpec};
pub use monitoring::{MonitoringSpec, ServiceMonitorMode};
pub use services::{
    AutoscalingSpec, FrontendSpec, ImageSpec, PullPolicy, ServiceSpec, ServicesSpec,
};
pub use smtp::{SmtpSpec, SmtpTls};
pub use status::{ComponentStatus, Condition, HelpdeskPlatformStatus, Phase};

pub const GROUP: &str = "helpdesk.dev";
pub const VERSION: &str = "v1alpha1";

/// Desired state of one Helpdesk installation.
#[derive(CustomResource, JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "helpdesk.dev",
    version = "v1alpha1",
    kind = "HelpdeskPlatform",
    plural = "helpdeskplatforms",
    shortname = "hdp",
    namespaced,
    status = "HelpdeskPlatformStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", remote = "Self")]
pub struct HelpdeskPlatformSpec {
    /// Image tag of every service, and the migration version.
    #[serde(default = "default_version")]
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    )]
    pub version: String,
    #[serde(default)]
    pub image: ImageSpec,
    #[serde(default)]
    pub services: ServicesSpec,
    #[serde(default)]
    pub postgres: PostgresSpec,
    #[serde(default)]
    pub rabbitmq: RabbitmqSpec,
    /// Outgoing mail. Without it notification-service keeps mail to itself (no SMTP egress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpSpec>,
    #[serde(default)]
    pub auth: AuthSpec,
    pub ingress: IngressSpec,
    /// Optional single-page frontend, routed at `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend: Option<FrontendSpec>,
    /// NetworkPolicies allowing only the flows the platform needs.
    #[serde(default = "default_true")]
    pub network_policies: bool,
    /// PodDisruptionBudgets for components that run more than one replica.
    #[serde(default = "default_true")]
    pub pod_disruption_budgets: bool,
    #[serde(default)]
    pub monitoring: MonitoringSpec,
    /// Fields of the spec as received that the schema does not define (misspelled or from a
    /// newer CRD), with their paths: `validate` reports them. Never serialized.
    #[serde(skip)]
    pub unknown_fields: Vec<FieldError>,
}

// `remote = "Self"` above makes the serde derives inherent functions, so that reading a spec can
// note its unknown fields (kept out of the typed value otherwise) and name the path of a field
// that does not parse. (The spec derives plain `JsonSchema`: it has no `x_kube` rule, and
// `KubeSchema` would copy the serde attributes onto a private struct. The CRD is unchanged.)
impl<'de> Deserialize<'de> for HelpdeskPlatformSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = serde_json::Value::deserialize(d)?;
        let unknown_fields = crate::strict::unknown_spec_fields(&raw);
        let mut track = serde_path_to_error::Track::new();
        let spec = HelpdeskPlatformSpec::deserialize(serde_path_to_error::Deserializer::new(
            raw, &mut track,
        ))
        .map_err(|e| {
            let path = track.path().to_string();
            let path = if path == "." {
                "spec".to_string()
            } else {
                format!("spec.{path}")
            };
            serde::de::Error::custom(format!("{path}: {e}"))
        })?;
        Ok(Self {
            unknown_fields,
            ..spec
        })
    }
}

impl Serialize for HelpdeskPlatformSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        HelpdeskPlatformSpec::serialize(self, s)
    }
}

fn default_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
fn default_true() -> bool {
    true
}

/// Core types are kept free-form here: inlining the full Affinity schema five times would make
/// the CRD too large for client-side `kubectl apply`. The API server validates them on the pods.
fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::Schema::try_from(json!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true
    }))
    .expect("valid schema")
}

fn free_form_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::Schema::try_from(json!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    }))
    .expect("valid schema")
}

/// Reference to one key of a Secret in the platform's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default = "default_url_key")]
    pub key: String,
}

fn default_url_key() -> String {
    "url".to_string()
}

/// Reference to a whole Secret in the platform's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The CRD, with the long generic descriptions of embedded quantities trimmed (they repeat
/// dozens of times and would double the size of the CRD).
pub fn crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    fn trim(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                if m.contains_key("x-kubernetes-int-or-string") {
                    m.remove("description");
                }
                m.values_mut().for_each(trim);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(trim),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(HelpdeskPlatform::crd()).expect("CRD serializes");
    trim(&mut value["spec"]["versions"]);
    serde_json::from_value(value).expect("CRD deserializes")
}

/// The CRD as YAML, exactly as written to `crds/helpdeskplatforms.helpdesk.dev.yaml`.
pub fn crd_yaml() -> String {
    let crd = crd();
    let body = serde_yaml::to_string(&crd).expect("CRD serializes");
    format!("# Generated by `helpdesk-operator crd` from operator/src/crd.rs; do not edit.\n{body}")
}

pub const CRD_FILE: &str = "crds/helpdeskplatforms.helpdesk.dev.yaml";

#[cfg(test)]
mod tests;
