//! `spec.monitoring`: the ServiceMonitor (`auto`, `true` or `false`), the OTLP collector and the
//! Prometheus namespace.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// `auto` (when the Prometheus operator's CRD exists), `true` or `false`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ServiceMonitorMode {
    #[default]
    Auto,
    Enabled,
    Disabled,
    /// Anything else: kept (so one bad resource cannot break the watch) and reported in status.
    Invalid(String),
}

impl Serialize for ServiceMonitorMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ServiceMonitorMode::Auto => s.serialize_str("auto"),
            ServiceMonitorMode::Enabled => s.serialize_bool(true),
            ServiceMonitorMode::Disabled => s.serialize_bool(false),
            ServiceMonitorMode::Invalid(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for ServiceMonitorMode {
    // SREs write `serviceMonitor: true` unquoted, so both booleans and the strings are accepted.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(true) => Ok(Self::Enabled),
            serde_json::Value::Bool(false) => Ok(Self::Disabled),
            serde_json::Value::String(s) => match s.as_str() {
                "auto" => Ok(Self::Auto),
                "true" => Ok(Self::Enabled),
                "false" => Ok(Self::Disabled),
                _ => Ok(Self::Invalid(s)),
            },
            other => Ok(Self::Invalid(other.to_string())),
        }
    }
}

impl JsonSchema for ServiceMonitorMode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ServiceMonitorMode".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // Booleans and a string share this field, which a structural schema can only express as
        // an untyped node; other values are reported in status by the operator's validation.
        schemars::Schema::try_from(json!({
            "description": "auto | true | false",
            "x-kubernetes-preserve-unknown-fields": true
        }))
        .expect("valid schema")
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    #[serde(default)]
    pub service_monitor: ServiceMonitorMode,
    /// OTLP/HTTP base URL of an OpenTelemetry collector, e.g.
    /// `http://otel-collector.observability:4318`: every service exports its request and event
    /// traces there (`OTEL_EXPORTER_OTLP_ENDPOINT`), and the network policies let them reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// Namespace of the Prometheus that scrapes the services' `/metrics`: admitted to their HTTP
    /// port by the network policies. When unset and a ServiceMonitor is created: `monitoring`, or
    /// on OpenShift the namespaces labelled `network.openshift.io/policy-group: monitoring`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub prometheus_namespace: Option<String>,
}
