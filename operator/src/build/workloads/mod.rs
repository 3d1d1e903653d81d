//! Per-service workloads: ConfigMap, ServiceAccounts, Services, migration Jobs, Deployments,
//! HPAs and PDBs (and the optional frontend).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        autoscaling::v2::{
            CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
            MetricSpec, MetricTarget, ResourceMetricSource,
        },
        batch::v1::{Job, JobSpec},
        core::v1::{
            Capabilities, ConfigMap, ConfigMapKeySelector, Container, ContainerPort,
            EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, KeyToPath,
            Lifecycle, LifecycleHandler, LocalObjectReference, PodSecurityContext, PodSpec,
            PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
            SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
            Volume, VolumeMount,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{
        api::resource::Quantity, apis::meta::v1::LabelSelector, util::intstr::IntOrString,
    },
};

use helpdesk_contract::{Command, SERVICE_IMAGE_UID, http, lifecycle, var};

use super::{BuildInput, Child, Kind, child, content_hash};
use crate::crd::ServiceSpec as PlatformServiceSpec;
use crate::material::{PRIVATE_KEY, PUBLIC_KEY};
use crate::names::{
    self, CONFIG_HASH_ANNOTATION, Component, DATASTORE_CLIENT_LABEL, HTTP_PORT, METRICS_LABEL,
    SECRETS_HASH_ANNOTATION,
};
use crate::validate::{PostgresMode, RabbitmqMode};

mod deployments;
mod env;
mod jobs;
mod pod;
mod scaling;
mod services;
#[cfg(test)]
mod tests;

// Each part sees the others' items (they `use super::*`); the rest of `build` sees these.
pub use deployments::image_for;
pub(in crate::build) use deployments::*;
pub(in crate::build) use env::*;
pub(in crate::build) use jobs::*;
pub(in crate::build) use pod::*;
pub(in crate::build) use scaling::*;
pub(in crate::build) use services::*;
