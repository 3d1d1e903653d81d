//! Build (pure): everything the operator wants to exist for one platform, in apply order.
//!
//! The reconciler and `render` call the same [`build`]; nothing here talks to a cluster.

mod backup;
mod credentials;
mod datastores;
mod network;
pub mod secrets;
mod workloads;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{
    api::DynamicObject,
    core::{ApiResource, GroupVersionKind},
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::crd::HelpdeskPlatform;
use crate::material::SecretMaterial;
use crate::names::{self, Component, HASH_ANNOTATION};
use crate::validate::Resolved;

pub use credentials::DATASTORE_CREDENTIALS_ANNOTATION;
pub use datastores::{amqp_env, database_env};
pub use workloads::image_for;

/// Every kind the operator may create, in the order objects are applied: what a workload
/// depends on comes before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Secret,
    ConfigMap,
    ServiceAccount,
    PersistentVolumeClaim,
    Service,
    StatefulSet,
    PostgresCluster,
    RabbitmqCluster,
    Job,
    CronJob,
    Deployment,
    HorizontalPodAutoscaler,
    PodDisruptionBudget,
    Ingress,
    Route,
    NetworkPolicy,
    ServiceMonitor,
}

impl Kind {
    pub const ALL: [Kind; 17] = [
        Kind::Secret,
        Kind::ConfigMap,
        Kind::ServiceAccount,
        Kind::PersistentVolumeClaim,
        Kind::Service,
        Kind::StatefulSet,
        Kind::PostgresCluster,
        Kind::RabbitmqCluster,
        Kind::Job,
        Kind::CronJob,
        Kind::Deployment,
        Kind::HorizontalPodAutoscaler,
        Kind::PodDisruptionBudget,
        Kind::Ingress,
        Kind::Route,
        Kind::NetworkPolicy,
        Kind::ServiceMonitor,
    ];

    pub fn api_resource(self) -> ApiResource {
        let (g, v, k, plural) = match self {
            Kind::Secret => ("", "v1", "Secret", "secrets"),
            Kind::ConfigMap => ("", "v1", "ConfigMap", "configmaps"),
            Kind::ServiceAccount => ("", "v1", "ServiceAccount", "serviceaccounts"),
            Kind::PersistentVolumeClaim => {
                ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims")
            }
            Kind::Service => ("", "v1", "Service", "services"),
            Kind::StatefulSet => ("apps", "v1", "StatefulSet", "statefulsets"),
            Kind::PostgresCluster => ("postgresql.cnpg.io", "v1", "Cluster", "clusters"),
            Kind::RabbitmqCluster => (
                "rabbitmq.com",
                "v1beta1",
                "RabbitmqCluster",
                "rabbitmqclusters",
            ),
            Kind::Job => ("batch", "v1", "Job", "jobs"),
            Kind::CronJob => ("batch", "v1", "CronJob", "cronjobs"),
            Kind::Deployment => ("apps", "v1", "Deployment", "deployments"),
            Kind::HorizontalPodAutoscaler => (
                "autoscaling",
                "v2",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
            ),
            Kind::PodDisruptionBudget => (
                "policy",
                "v1",
                "PodDisruptionBudget",
                "poddisruptionbudgets",
            ),
            Kind::Ingress => ("networking.k8s.io", "v1", "Ingress", "ingresses"),
            Kind::Route => ("route.openshift.io", "v1", "Route", "routes"),
            Kind::NetworkPolicy => (
                "networking.k8s.io",
                "v1",
                "NetworkPolicy",
                "networkpolicies",
            ),
            Kind::ServiceMonitor => (
                "monitoring.coreos.com",
                "v1",
                "ServiceMonitor",
                "servicemonitors",
            ),
        };
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), plural)
    }

    /// Kinds served only when an optional operator or OpenShift is installed.
    pub fn optional_api(self) -> bool {
        matches!(
            self,
            Kind::PostgresCluster | Kind::RabbitmqCluster | Kind::Route | Kind::ServiceMonitor
        )
    }

    /// The kind as it appears in manifests.
    pub fn kind_name(self) -> &'static str {
        match self {
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::PersistentVolumeClaim => "PersistentVolumeClaim",
            Kind::Service => "Service",
            Kind::StatefulSet => "StatefulSet",
            Kind::PostgresCluster => "Cluster",
            Kind::RabbitmqCluster => "RabbitmqCluster",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
            Kind::Deployment => "Deployment",
            Kind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            Kind::PodDisruptionBudget => "PodDisruptionBudget",
            Kind::Ingress => "Ingress",
            Kind::Route => "Route",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::ServiceMonitor => "ServiceMonitor",
        }
    }
}

/// One object the operator wants to exist, with the hash of its content in an annotation.
#[derive(Clone, Debug)]
pub struct Child {
    pub kind: Kind,
    pub obj: DynamicObject,
}

impl Child {
    pub fn name(&self) -> &str {
        self.obj.metadata.name.as_deref().unwrap_or_default()
    }
    pub fn hash(&self) -> Option<&str> {
        self.obj
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(HASH_ANNOTATION))
            .map(String::as_str)
    }
}

/// Inputs of the pure build, gathered by the reconciler (or made up by `render`).
pub struct BuildInput<'a> {
    pub platform: &'a HelpdeskPlatform,
    pub resolved: &'a Resolved,
    pub material: &'a SecretMaterial,
    /// Version each service's Deployment runs; `None` while its first migration has not finished
    /// (no Deployment yet). Missing entries mean `spec.version`.
    pub deploy_versions: BTreeMap<Component, Option<String>>,
}

impl BuildInput<'_> {
    pub fn name(&self) -> &str {
        &self.resolved.name
    }
    pub fn namespace(&self) -> &str {
        &self.resolved.namespace
    }
    pub fn version(&self) -> &str {
        &self.platform.spec.version
    }
    pub fn deploy_version(&self, c: Component) -> Option<String> {
        match self.deploy_versions.get(&c) {
            Some(v) => v.clone(),
            None => Some(self.version().to_string()),
        }
    }

    /// Metadata for a child: name, namespace, labels, owner reference.
    pub fn meta(&self, name: &str, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace().to_string()),
            labels: Some(names::labels(self.name(), component, Some(self.version()))),
            owner_references: self.owner_reference().map(|o| vec![o]),
            ..Default::default()
        }
    }

    /// Without a uid (in `render`) there is nothing to point at, so no owner reference.
    fn owner_reference(&self) -> Option<OwnerReference> {
        (!self.resolved.uid.is_empty()).then(|| OwnerReference {
            api_version: format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
            kind: "HelpdeskPlatform".into(),
            name: self.name().to_string(),
            uid: self.resolved.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        })
    }
}

/// Everything desired for one platform, in apply order.
pub fn build(input: &BuildInput) -> Vec<Child> {
    let mut out = Vec::new();
    secrets::build(input, &mut out);
    workloads::config_map(input, &mut out);
    workloads::service_accounts(input, &mut out);
    workloads::services(input, &mut out);
    datastores::build(input, &mut out);
    backup::build(input, &mut out);
    workloads::migration_jobs(input, &mut out);
    workloads::deployments(input, &mut out);
    workloads::autoscalers_and_budgets(input, &mut out);
    network::exposure(input, &mut out);
    network::network_policies(input, &mut out);
    network::service_monitor(input, &mut out);
    out.sort_by_key(|c| c.kind);
    out
}

/// Converts a typed object into a [`Child`], stamping the content hash.
pub(crate) fn child<T: Serialize>(kind: Kind, typed: &T) -> Child {
    let mut value = serde_json::to_value(typed).expect("k8s objects serialize");
    let ar = kind.api_resource();
    value["apiVersion"] = ar.api_version.clone().into();
    value["kind"] = ar.kind.clone().into();
    let hash = content_hash(&value);
    let mut obj: DynamicObject = serde_json::from_value(value).expect("object has metadata");
    obj.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_ANNOTATION.into(), hash);
    Child { kind, obj }
}

/// Stable hash of an object's desired content (serde_json maps are sorted, so this is canonical).
pub fn content_hash(value: &serde_json::Value) -> String {
    let bytes = serde_json::to_vec(value).expect("json serializes");
    hex::encode(&Sha256::digest(&bytes)[..12])
}

/// Parses a dynamic child back into a typed object (tests and status).
pub fn typed<T: serde::de::DeserializeOwned>(c: &Child) -> T {
    serde_json::from_value(serde_json::to_value(&c.obj).expect("serializes")).expect("typed object")
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::material::SecretMaterial;
    use crate::validate::{Capabilities, validate};

    pub fn platform(spec_yaml: &str) -> HelpdeskPlatform {
        let mut p: HelpdeskPlatform = serde_yaml::from_str(&format!(
            "apiVersion: helpdesk.dev/v1alpha1\nkind: HelpdeskPlatform\nmetadata: {{name: hd, namespace: support, uid: 1234-uid, generation: 1}}\nspec:\n{spec_yaml}"
        ))
        .expect("fixture parses");
        p.metadata.uid = Some("1234-uid".into());
        p
    }

    pub fn build_with(spec_yaml: &str, caps: Capabilities) -> Vec<Child> {
        let p = platform(spec_yaml);
        let r = validate(&p, &caps).expect("fixture is valid");
        let m = SecretMaterial::generate(
            "admin@example.com",
            matches!(r.postgres, crate::validate::PostgresMode::Managed(_)),
            matches!(r.rabbitmq, crate::validate::RabbitmqMode::Managed(_)),
        );
        build(&BuildInput {
            platform: &p,
            resolved: &r,
            material: &m,
            deploy_versions: BTreeMap::new(),
        })
    }

    pub fn build_default(spec_yaml: &str) -> Vec<Child> {
        build_with(spec_yaml, Capabilities::default())
    }

    pub fn find<'a>(children: &'a [Child], kind: Kind, name: &str) -> &'a Child {
        children
            .iter()
            .find(|c| c.kind == kind && c.name() == name)
            .unwrap_or_else(|| panic!("no {kind:?} {name}"))
    }

    pub fn get<T: serde::de::DeserializeOwned>(children: &[Child], kind: Kind, name: &str) -> T {
        typed(find(children, kind, name))
    }

    pub fn names_of(children: &[Child], kind: Kind) -> Vec<String> {
        children
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.name().to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    const MINIMAL: &str = "  version: \"0.1.0\"\n  ingress: {host: helpdesk.example.com}";

    #[test]
    fn every_child_is_labelled_owned_and_hashed() {
        for c in build_default(MINIMAL) {
            let m = &c.obj.metadata;
            let labels = m.labels.as_ref().unwrap();
            for key in [
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/version",
                "app.kubernetes.io/component",
                "app.kubernetes.io/managed-by",
            ] {
                assert!(
                    labels.contains_key(key),
                    "{:?} {} lacks {key}",
                    c.kind,
                    c.name()
                );
            }
            assert_eq!(m.namespace.as_deref(), Some("support"));
            // Datastore credentials live as long as the retained volumes (issue 11, item 3).
            if c.name().ends_with("-credentials") {
                assert!(m.owner_references.is_none(), "{}", c.name());
            } else {
                let owner = &m.owner_references.as_ref().unwrap()[0];
                assert_eq!(
                    (owner.kind.as_str(), owner.uid.as_str()),
                    ("HelpdeskPlatform", "1234-uid")
                );
            }
            assert!(c.hash().is_some());
            let types = c.obj.types.as_ref().unwrap();
            assert_eq!(types.kind, c.kind.api_resource().kind);
        }
    }

    #[test]
    fn build_is_deterministic_for_the_same_material() {
        let p = platform(MINIMAL);
        let r = crate::validate::validate(&p, &Default::default()).unwrap();
        let m = SecretMaterial::generate("a@b.c", true, true);
        let input = BuildInput {
            platform: &p,
            resolved: &r,
            material: &m,
            deploy_versions: BTreeMap::new(),
        };
        let a: Vec<_> = build(&input)
            .iter()
            .map(|c| c.hash().unwrap().to_string())
            .collect();
        let b: Vec<_> = build(&input)
            .iter()
            .map(|c| c.hash().unwrap().to_string())
            .collect();
        assert_eq!(a, b);
    }

    #[test]
    fn minimal_platform_creates_the_expected_set() {
        let all = build_default(MINIMAL);
        assert_eq!(
            names_of(&all, Kind::Deployment),
            [
                "hd-user",
                "hd-ticket",
                "hd-notification",
                "hd-audit",
                "hd-admin"
            ]
        );
        assert_eq!(
            names_of(&all, Kind::StatefulSet),
            ["hd-postgres", "hd-rabbitmq"]
        );
        assert_eq!(names_of(&all, Kind::Job).len(), 5);
        assert_eq!(names_of(&all, Kind::Ingress), ["hd"]);
        assert!(names_of(&all, Kind::HorizontalPodAutoscaler).is_empty());
        assert!(names_of(&all, Kind::PodDisruptionBudget).is_empty());
        assert!(names_of(&all, Kind::Route).is_empty());
        let kinds: Vec<Kind> = all.iter().map(|c| c.kind).collect();
        let mut sorted = kinds.clone();
        sorted.sort();
        assert_eq!(kinds, sorted, "apply order: dependencies first");
    }
}
