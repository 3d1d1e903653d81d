//! `spec.postgres` (managed, CloudNativePG or external, and backups) and `spec.rabbitmq` (managed,
//! RabbitMQ Cluster Operator or external), with the volume retention they share.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{SecretKeyRef, free_form_object};
use crate::names::Component;

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
