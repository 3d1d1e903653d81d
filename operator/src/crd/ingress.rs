//! `spec.ingress`: the public host, served by an Ingress or OpenShift Routes.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IngressKind {
    /// A Route when the OpenShift Route API exists, an Ingress otherwise.
    #[default]
    Auto,
    Ingress,
    Route,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Public host name; the platform's URL is `https://<host>`.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// TLS certificate Secret for the Ingress; Routes use edge termination with the router's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
    #[serde(default)]
    pub kind: IngressKind,
    /// Extra annotations on the Ingress or Routes (e.g. cert-manager issuer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Namespace of the ingress controller, the only namespace whose pods may reach the services'
    /// HTTP port (with the platform's own pods). Default `ingress-nginx`; on OpenShift the
    /// router's namespaces are selected by their `policy-group.network.openshift.io/ingress`
    /// label, and this namespace is admitted too when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub controller_namespace: Option<String>,
}
