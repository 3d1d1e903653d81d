//! The `HelpdeskPlatform` custom resource: the public contract SREs script against.
//!
//! Field names follow `shared/spec/operator.md`; every field except `ingress.host` has a default,
//! and those defaults are written into the generated CRD schema.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::names::Component;
use crate::validate::FieldError;

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

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Image = `<registry>/<service>-service:<version>`.
    #[serde(default = "default_registry")]
    pub registry: String,
    #[serde(default)]
    pub pull_policy: PullPolicy,
    /// Names of image pull Secrets in the platform's namespace.
    #[serde(default)]
    pub pull_secrets: Vec<String>,
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            registry: default_registry(),
            pull_policy: PullPolicy::default(),
            pull_secrets: Vec::new(),
        }
    }
}

fn default_registry() -> String {
    "ghcr.io/helpdesk".to_string()
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// One entry per service; unknown keys are rejected by the schema.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicesSpec {
    #[serde(default)]
    pub user: ServiceSpec,
    #[serde(default)]
    pub ticket: ServiceSpec,
    #[serde(default)]
    pub notification: ServiceSpec,
    #[serde(default)]
    pub audit: ServiceSpec,
    #[serde(default)]
    pub admin: ServiceSpec,
}

impl ServicesSpec {
    pub fn get(&self, c: Component) -> &ServiceSpec {
        match c {
            Component::User => &self.user,
            Component::Ticket => &self.ticket,
            Component::Notification => &self.notification,
            Component::Audit => &self.audit,
            Component::Admin => &self.admin,
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Ignored while `autoscaling` is set (the HPA owns replicas).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Defaults to requests cpu 50m / memory 64Mi and a 256Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables; they win over the operator's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Pod tolerations (core/v1 Toleration objects).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "free_form_list")]
    pub tolerations: Vec<serde_json::Value>,
    /// Pod affinity (core/v1 Affinity object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub affinity: Option<serde_json::Value>,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            autoscaling: None,
            resources: None,
            env: Vec::new(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
        }
    }
}

fn default_replicas() -> i32 {
    1
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

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
pub struct AutoscalingSpec {
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    #[serde(
        default = "default_cpu_target",
        rename = "targetCPUUtilizationPercentage"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

fn default_min_replicas() -> i32 {
    2
}
fn default_max_replicas() -> i32 {
    10
}
fn default_cpu_target() -> i32 {
    70
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

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PvcRetention {
    /// Keep the volume when the platform is deleted (data survives; delete the PVC by hand).
    #[default]
    Retain,
    /// Delete the volume together with the platform.
    Delete,
}

impl PvcRetention {
    pub fn as_str(self) -> &'static str {
        match self {
            PvcRetention::Retain => "Retain",
            PvcRetention::Delete => "Delete",
        }
    }
}

/// Exactly one of `managed`, `cloudNativePG`, `external`; none means `managed` with defaults.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.managed) ? 1 : 0) + (has(self.cloudNativePG) ? 1 : 0) + (has(self.external) ? 1 : 0) <= 1").message("set at most one of managed, cloudNativePG, external"))]
pub struct PostgresSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedPostgres>,
    #[serde(
        default,
        rename = "cloudNativePG",
        skip_serializing_if = "Option::is_none"
    )]
    pub cloud_native_pg: Option<CloudNativePgSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalPostgres>,
    /// Scheduled backups; none when absent. Managed: a CronJob writing `pg_dump` archives to a
    /// volume, keeping the newest `retention`. CloudNativePG: `cloudNativePG` is its `Cluster`'s
    /// `spec.backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<PostgresBackup>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackup {
    /// Cron schedule of the logical backup (managed PostgreSQL), in the controller manager's
    /// time zone.
    #[serde(default = "default_backup_schedule")]
    pub schedule: String,
    /// How many dumps are kept; older ones are deleted after each successful dump.
    #[serde(default = "default_backup_retention")]
    #[schemars(range(min = 1, max = 1000))]
    pub retention: i32,
    /// Size of the volume holding the dumps (managed PostgreSQL).
    #[serde(default = "default_backup_storage")]
    pub storage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// CloudNativePG only: passed as the `Cluster`'s `spec.backup` (e.g. `barmanObjectStore`,
    /// `retentionPolicy`); schedule its base backups with CloudNativePG's `ScheduledBackup`.
    #[serde(
        default,
        rename = "cloudNativePG",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "free_form_object")]
    pub cloud_native_pg: Option<serde_json::Value>,
}

fn default_backup_schedule() -> String {
    "30 2 * * *".to_string()
}
fn default_backup_retention() -> i32 {
    7
}
fn default_backup_storage() -> String {
    "10Gi".to_string()
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedPostgres {
    #[serde(default = "default_pg_storage")]
    pub storage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    #[serde(default = "default_pg_image")]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// What happens to the data volume when the platform is deleted.
    #[serde(default)]
    pub pvc_retention: PvcRetention,
}

impl Default for ManagedPostgres {
    fn default() -> Self {
        Self {
            storage: default_pg_storage(),
            storage_class_name: None,
            image: default_pg_image(),
            resources: None,
            pvc_retention: PvcRetention::default(),
        }
    }
}

fn default_pg_storage() -> String {
    "10Gi".to_string()
}
fn default_pg_image() -> String {
    "postgres:16".to_string()
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudNativePgSpec {
    #[serde(default = "default_instances")]
    #[schemars(range(min = 1, max = 9))]
    pub instances: i32,
    #[serde(default = "default_pg_storage")]
    pub storage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// PostgreSQL operand image; CloudNativePG's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
}

fn default_instances() -> i32 {
    1
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalPostgres {
    /// Secret key holding a `postgres://` URL shared by every service.
    pub secret_ref: SecretKeyRef,
    /// Optional per-service URLs ("database per service"); keys: user, ticket, notification, audit, admin.
    #[serde(default, skip_serializing_if = "PerServiceRefs::is_empty")]
    pub per_service: PerServiceRefs,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PerServiceRefs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<SecretKeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<SecretKeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<SecretKeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<SecretKeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<SecretKeyRef>,
}

impl PerServiceRefs {
    pub fn is_empty(&self) -> bool {
        Component::ALL.iter().all(|c| self.get(*c).is_none())
    }
    pub fn get(&self, c: Component) -> Option<&SecretKeyRef> {
        match c {
            Component::User => self.user.as_ref(),
            Component::Ticket => self.ticket.as_ref(),
            Component::Notification => self.notification.as_ref(),
            Component::Audit => self.audit.as_ref(),
            Component::Admin => self.admin.as_ref(),
        }
    }
}

/// Exactly one of `managed`, `rabbitmqClusterOperator`, `external`; none means `managed`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.managed) ? 1 : 0) + (has(self.rabbitmqClusterOperator) ? 1 : 0) + (has(self.external) ? 1 : 0) <= 1").message("set at most one of managed, rabbitmqClusterOperator, external"))]
pub struct RabbitmqSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedRabbitmq>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbitmq_cluster_operator: Option<RabbitmqClusterOperatorSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalRabbitmq>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedRabbitmq {
    #[serde(default = "default_mq_storage")]
    pub storage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    #[serde(default = "default_mq_image")]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub pvc_retention: PvcRetention,
}

impl Default for ManagedRabbitmq {
    fn default() -> Self {
        Self {
            storage: default_mq_storage(),
            storage_class_name: None,
            image: default_mq_image(),
            resources: None,
            pvc_retention: PvcRetention::default(),
        }
    }
}

fn default_mq_storage() -> String {
    "5Gi".to_string()
}
fn default_mq_image() -> String {
    "rabbitmq:3.13-management".to_string()
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RabbitmqClusterOperatorSpec {
    #[serde(default = "default_instances")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,
    #[serde(default = "default_mq_storage")]
    pub storage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRabbitmq {
    /// Secret key holding an `amqp://` URL (the virtual host comes from the URL).
    pub secret_ref: SecretKeyRef,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    #[default]
    Starttls,
    Tls,
}

impl SmtpTls {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpTls::None => "none",
            SmtpTls::Starttls => "starttls",
            SmtpTls::Tls => "tls",
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmtpSpec {
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    #[serde(default = "default_smtp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    #[serde(default)]
    pub tls: SmtpTls,
    /// Sender address; `helpdesk@<ingress.host>` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Secret with keys `username` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// Where new-ticket notices for staff go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staff_notify_email: Option<String>,
}

fn default_smtp_port() -> i32 {
    587
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    User,
    #[default]
    Agent,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        helpdesk_contract::Role::from(self).as_str()
    }
}

impl From<Role> for helpdesk_contract::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::User => helpdesk_contract::Role::User,
            Role::Agent => helpdesk_contract::Role::Agent,
            Role::Admin => helpdesk_contract::Role::Admin,
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Lifetime of user tokens, e.g. `7d`, `12h`.
    #[serde(default = "default_ttl")]
    #[schemars(regex(pattern = r"^[0-9]+(s|m|h|d)$"))]
    pub token_ttl: String,
    #[serde(default)]
    pub signup_default_role: Role,
    /// Secret with `private.pem` (PKCS#8 Ed25519) and `public.pem`; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_secret_ref: Option<SecretRef>,
    /// Secret with `email` and `password` of the first administrator; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_admin_secret_ref: Option<SecretRef>,
}

impl Default for AuthSpec {
    fn default() -> Self {
        Self {
            token_ttl: default_ttl(),
            signup_default_role: Role::default(),
            signing_key_secret_ref: None,
            bootstrap_admin_secret_ref: None,
        }
    }
}

fn default_ttl() -> String {
    helpdesk_contract::auth::DEFAULT_TOKEN_TTL.to_string()
}

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

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrontendSpec {
    pub image: String,
    #[serde(default = "default_frontend_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Port the frontend's web server listens on.
    #[serde(default = "default_frontend_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_frontend_replicas() -> i32 {
    2
}
fn default_frontend_port() -> i32 {
    8080
}

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

// ---------------------------------------------------------------------------------------------
// Status

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Progressing,
    Ready,
    Degraded,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelpdeskPlatformStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub components: BTreeMap<String, ComponentStatus>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Progressing` or `Degraded`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    pub ready: i32,
    pub desired: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
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
mod tests {
    use super::*;

    #[test]
    fn roles_are_the_contracts() {
        for r in [Role::User, Role::Agent, Role::Admin] {
            let c = helpdesk_contract::Role::from(r);
            assert_eq!(serde_json::to_value(r).unwrap(), c.as_str());
            assert_eq!(r.as_str(), c.as_str());
        }
        assert_eq!(
            helpdesk_contract::Role::from(Role::default()),
            helpdesk_contract::DEFAULT_SIGNUP_ROLE
        );
    }

    #[test]
    fn minimal_resource_gets_defaults() {
        let p: HelpdeskPlatform = serde_yaml::from_str(
            r#"
apiVersion: helpdesk.dev/v1alpha1
kind: HelpdeskPlatform
metadata: {name: helpdesk, namespace: support}
spec:
  version: "0.1.0"
  ingress: {host: helpdesk.example.com}
"#,
        )
        .unwrap();
        let s = &p.spec;
        assert_eq!(s.image.registry, "ghcr.io/helpdesk");
        assert_eq!(s.services.ticket.replicas, 1);
        assert!(s.postgres.managed.is_none() && s.postgres.external.is_none());
        assert_eq!(s.auth.token_ttl, "7d");
        assert_eq!(s.auth.signup_default_role, Role::Agent);
        assert!(s.network_policies && s.pod_disruption_budgets);
        assert_eq!(s.monitoring.service_monitor, ServiceMonitorMode::Auto);
        assert_eq!(s.ingress.kind, IngressKind::Auto);
    }

    #[test]
    fn service_monitor_accepts_bools_and_strings() {
        for (y, want) in [
            ("true", ServiceMonitorMode::Enabled),
            ("\"false\"", ServiceMonitorMode::Disabled),
            ("auto", ServiceMonitorMode::Auto),
        ] {
            let m: MonitoringSpec = serde_yaml::from_str(&format!("serviceMonitor: {y}")).unwrap();
            assert_eq!(m.service_monitor, want);
        }
        let m: MonitoringSpec = serde_yaml::from_str("serviceMonitor: maybe").unwrap();
        assert_eq!(
            m.service_monitor,
            ServiceMonitorMode::Invalid("maybe".into())
        );
    }

    #[test]
    fn crd_has_status_printer_columns_and_cel_rules() {
        let crd = serde_json::to_value(crd()).unwrap();
        let v = &crd["spec"]["versions"][0];
        assert_eq!(v["subresources"]["status"], json!({}));
        let cols: Vec<&str> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(cols, ["Ready", "Phase", "Version", "URL", "Age"]);
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["hdp"]));
        let text = serde_json::to_string(&crd).unwrap();
        assert!(text.contains("set at most one of managed, cloudNativePG, external"));
        assert!(text.contains("minReplicas must not exceed maxReplicas"));
        assert!(
            !text.contains("$ref"),
            "schema must be structural (no $ref)"
        );
    }

    /// Fails when `crds/` drifts from the Rust types; fix with `cargo run -p helpdesk-operator -- crd > crds/...`.
    #[test]
    fn committed_crd_matches_types() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crds/helpdeskplatforms.helpdesk.dev.yaml"
        );
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == crd_yaml(),
            "{CRD_FILE} is out of date: run operator/scripts/sync-crds.sh"
        );
        // The chart and the OLM bundle ship the same file.
        for copy in [
            "/../charts/helpdesk-operator/crds/helpdeskplatforms.helpdesk.dev.yaml",
            "/../openshift/bundle/manifests/helpdeskplatforms.helpdesk.dev.crd.yaml",
        ] {
            let path = format!("{}{copy}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                text == committed,
                "{path} differs from {CRD_FILE}: run operator/scripts/sync-crds.sh"
            );
        }
    }
}
