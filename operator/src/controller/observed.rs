//! What status and the rollout plan read of the live children, parsed into typed objects
//! (k8s-openapi's specs and statuses, and the few fields of CloudNativePG's and the RabbitMQ
//! Cluster Operator's statuses that matter) instead of read from JSON paths.

use k8s_openapi::api::apps::v1::{
    DeploymentSpec, DeploymentStatus, StatefulSetSpec, StatefulSetStatus,
};
use k8s_openapi::api::batch::v1::JobStatus;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::DynamicObject;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::build::Kind;

/// `obj`'s `field` as `T`; a missing or unexpected shape reads as `T`'s default (nothing ready).
fn part<T: DeserializeOwned + Default>(obj: &DynamicObject, field: &str) -> T {
    obj.data
        .get(field)
        .and_then(|v| T::deserialize(v).ok())
        .unwrap_or_default()
}

fn first_image(template: Option<&PodTemplateSpec>) -> Option<String> {
    template?.spec.as_ref()?.containers.first()?.image.clone()
}

/// A Deployment's or StatefulSet's rollout, as status needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Workload {
    pub generation: i64,
    /// `spec.replicas` (with an HPA, the HPA's choice).
    pub desired: Option<i32>,
    pub observed_generation: i64,
    pub ready: i32,
    pub updated: i32,
    /// The first container's image.
    pub image: Option<String>,
    /// A Deployment whose rollout passed `progressDeadlineSeconds` without progress.
    pub stuck: bool,
}

impl Workload {
    /// Reads a Deployment or a StatefulSet (`kind` says which).
    pub fn read(kind: Kind, obj: &DynamicObject) -> Self {
        let generation = obj.metadata.generation.unwrap_or(0);
        if kind == Kind::StatefulSet {
            let spec: StatefulSetSpec = part(obj, "spec");
            let status: StatefulSetStatus = part(obj, "status");
            return Self {
                generation,
                desired: spec.replicas,
                observed_generation: status.observed_generation.unwrap_or(0),
                ready: status.ready_replicas.unwrap_or(0),
                updated: status.updated_replicas.unwrap_or(0),
                image: first_image(Some(&spec.template)),
                stuck: false,
            };
        }
        let spec: DeploymentSpec = part(obj, "spec");
        let status: DeploymentStatus = part(obj, "status");
        let stuck = status.conditions.iter().flatten().any(|c| {
            c.type_.as_deref() == Some("Progressing")
                && c.status.as_deref() == Some("False")
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
        Self {
            generation,
            desired: spec.replicas,
            observed_generation: status.observed_generation.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            image: first_image(Some(&spec.template)),
            stuck,
        }
    }

    /// Every replica runs the current template and is ready.
    pub fn rolled_out(&self) -> bool {
        let desired = self.desired.unwrap_or(1);
        self.observed_generation >= self.generation
            && self.updated >= desired
            && self.ready >= desired
    }

    /// The tag of the image the first container runs (the version of a service).
    pub fn version(&self) -> Option<String> {
        let (_, tag) = self.image.as_deref()?.rsplit_once(':')?;
        (!tag.contains('/')).then(|| tag.to_string())
    }
}

/// How a Job ended, if it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Succeeded,
    Failed(String),
    Running,
}

pub fn job_outcome(job: &DynamicObject) -> JobOutcome {
    let status: JobStatus = part(job, "status");
    let condition = |t: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t && c.status == "True")
    };
    if status.succeeded.unwrap_or(0) >= 1 || condition("Complete").is_some() {
        JobOutcome::Succeeded
    } else if let Some(c) = condition("Failed") {
        JobOutcome::Failed(c.message.clone().unwrap_or_else(|| "job failed".into()))
    } else {
        JobOutcome::Running
    }
}

/// The part of CloudNativePG's `Cluster` status the platform's status reports.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CnpgStatus {
    ready_instances: Option<i32>,
}

/// Ready instances of a CloudNativePG `Cluster`.
pub fn cnpg_ready_instances(cluster: &DynamicObject) -> i32 {
    part::<CnpgStatus>(cluster, "status")
        .ready_instances
        .unwrap_or(0)
}

#[derive(Debug, Default, Deserialize)]
struct RabbitmqClusterStatus {
    #[serde(default)]
    conditions: Vec<RabbitmqCondition>,
}

#[derive(Debug, Deserialize)]
struct RabbitmqCondition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

/// Whether a `RabbitmqCluster` reports all its replicas ready.
pub fn rabbitmq_all_ready(cluster: &DynamicObject) -> bool {
    part::<RabbitmqClusterStatus>(cluster, "status")
        .conditions
        .iter()
        .any(|c| c.type_ == "AllReplicasReady" && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: serde_json::Value) -> DynamicObject {
        serde_json::from_value(v).expect("object")
    }

    #[test]
    fn a_deployment_reads_its_rollout_and_version() {
        let d = object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "hd-ticket", "generation": 3},
            "spec": {"replicas": 2, "selector": {}, "template": {"spec": {"containers": [
                {"name": "ticket", "image": "registry.example:5000/helpdesk/ticket:1.4.0"}]}}},
            "status": {"observedGeneration": 3, "readyReplicas": 2, "updatedReplicas": 2,
                "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}
        }));
        let w = Workload::read(Kind::Deployment, &d);
        assert!(w.rolled_out() && !w.stuck, "{w:?}");
        assert_eq!(w.version().as_deref(), Some("1.4.0"));
        let mut stuck = d.clone();
        stuck.data["status"]["readyReplicas"] = json!(1);
        stuck.data["status"]["conditions"] = json!([{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded"}]);
        let w = Workload::read(Kind::Deployment, &stuck);
        assert!(!w.rolled_out() && w.stuck, "{w:?}");
    }

    #[test]
    fn an_unexpected_shape_reads_as_nothing_ready() {
        let d = object(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "hd-postgres", "generation": 1}, "status": {"readyReplicas": "three"}}));
        let w = Workload::read(Kind::StatefulSet, &d);
        assert_eq!((w.ready, w.rolled_out()), (0, false));
    }

    #[test]
    fn jobs_and_foreign_clusters() {
        let failed = object(
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "m"},
            "status": {"conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]}}),
        );
        assert_eq!(
            job_outcome(&failed),
            JobOutcome::Failed("BackoffLimitExceeded".into())
        );
        let cnpg = object(
            json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
            "metadata": {"name": "pg"}, "status": {"readyInstances": 2}}),
        );
        assert_eq!(cnpg_ready_instances(&cnpg), 2);
        let mq = object(
            json!({"apiVersion": "rabbitmq.com/v1beta1", "kind": "RabbitmqCluster",
            "metadata": {"name": "mq"}, "status": {"conditions": [{"type": "AllReplicasReady", "status": "True"}]}}),
        );
        assert!(rabbitmq_all_ready(&mq));
    }
}
