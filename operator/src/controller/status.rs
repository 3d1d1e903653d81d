//! Status (pure computation, then one patch only when it changed).

use std::collections::BTreeMap;

use kube::api::DynamicObject;

use super::apply::Rejection;
use super::dereference::{Existing, Migration, PodProblem, RolloutPlan};
use super::observed::{self, Workload};
use crate::build::Kind;
use crate::crd::{ComponentStatus, Condition, HelpdeskPlatform, HelpdeskPlatformStatus, Phase};
use crate::names::{self, Component};
use crate::validate::{PostgresMode, RabbitmqMode, Resolved};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const PAUSED: &str = "Paused";

fn cond(type_: &str, status: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: None,
        observed_generation: None,
    }
}

/// Keeps `lastTransitionTime` of conditions whose status did not change, so an unchanged
/// platform produces an identical status (and therefore no write).
fn finish(
    p: &HelpdeskPlatform,
    mut status: HelpdeskPlatformStatus,
    now: &str,
) -> HelpdeskPlatformStatus {
    let previous = p
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    for c in &mut status.conditions {
        c.observed_generation = p.metadata.generation;
        c.last_transition_time = match previous.iter().find(|o| o.type_ == c.type_) {
            Some(o) if o.status == c.status => o.last_transition_time.clone(),
            _ => Some(now.to_string()),
        };
    }
    status.observed_generation = p.metadata.generation;
    status
}

/// Status while reconciliation is paused: what was last observed, plus `Paused=True`.
pub fn paused(p: &HelpdeskPlatform, now: &str) -> HelpdeskPlatformStatus {
    let mut status = p.status.clone().unwrap_or_default();
    status.conditions.retain(|c| c.type_ != PAUSED);
    status.conditions.push(cond(
        PAUSED,
        true,
        "ReconcilePaused",
        "the helpdesk.dev/reconcile: paused annotation stops every change; remove it to resume",
    ));
    // Keep the observed generation: a paused platform has not acted on newer specs.
    let observed = status.observed_generation;
    let mut st = finish(p, status, now);
    st.observed_generation = observed;
    st
}

/// Status for a spec that failed validation.
pub fn invalid(p: &HelpdeskPlatform, problems: &[String], now: &str) -> HelpdeskPlatformStatus {
    problem(p, "InvalidSpec", &problems.join("; "), now)
}

/// The refused objects as one message, each with the API's code, reason and message; a 403
/// carries the likely cause.
pub fn rejection_message(rejected: &[Rejection]) -> String {
    rejected
        .iter()
        .map(|r| {
            let hint = if r.code == 403 {
                " (the operator's RBAC or an admission policy forbids it; with owner references \
                 blockOwnerDeletion needs update on helpdeskplatforms/finalizers)"
            } else {
                ""
            };
            format!(
                "{} refused ({} {}): {}{hint}",
                r.object, r.code, r.reason, r.message
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn problem(p: &HelpdeskPlatform, reason: &str, message: &str, now: &str) -> HelpdeskPlatformStatus {
    let message = message.to_string();
    let status = HelpdeskPlatformStatus {
        phase: Some(Phase::Degraded),
        url: p.status.as_ref().and_then(|s| s.url.clone()),
        version: p.status.as_ref().and_then(|s| s.version.clone()),
        conditions: vec![
            cond(READY, false, reason, message.clone()),
            cond(PROGRESSING, false, reason, "fix the spec to continue"),
            cond(DEGRADED, true, reason, message),
        ],
        components: p
            .status
            .as_ref()
            .map(|s| s.components.clone())
            .unwrap_or_default(),
        ..Default::default()
    };
    finish(p, status, now)
}

fn workload_status(w: Option<&Workload>, fallback_desired: i32) -> ComponentStatus {
    match w {
        None => ComponentStatus {
            ready: 0,
            desired: fallback_desired,
            image: None,
            message: Some("not created yet".into()),
        },
        // With an HPA the Deployment's own replica count is the truth.
        Some(w) => ComponentStatus {
            ready: w.ready,
            desired: w.desired.unwrap_or(fallback_desired),
            image: w.image.clone(),
            message: None,
        },
    }
}

/// The typed view of a Deployment or StatefulSet, read once per status computation.
fn workload(kind: Kind, obj: Option<&DynamicObject>) -> Option<Workload> {
    obj.map(|o| Workload::read(kind, o))
}

/// Computes the full status from what exists now, and what the API server refused in this pass
/// (`ApplyRejected` for 422, `ApplyForbidden` when a 403 is among them).
pub fn compute(
    p: &HelpdeskPlatform,
    r: &Resolved,
    existing: &Existing,
    plan: &RolloutPlan,
    pods: &[PodProblem],
    rejected: &[Rejection],
    now: &str,
) -> HelpdeskPlatformStatus {
    let inst = &r.name;
    let get = |k: Kind, n: String| existing.get(&(k, n));
    let mut components = BTreeMap::new();
    let mut waiting = Vec::new();
    let mut failed = Vec::new();
    let mut migrating = false;
    let mut any_deployment = false;
    // `status.version` names the version the platform runs: it moves only when every service
    // runs the new one (a failed migration keeps one component, and the platform, on the old).
    let mut all_at_version = true;

    for c in Component::ALL {
        let spec = p.spec.services.get(c);
        let fallback = spec
            .autoscaling
            .as_ref()
            .map_or(spec.replicas, |a| a.min_replicas);
        let dep = get(Kind::Deployment, names::service_name(inst, c));
        any_deployment |= dep.is_some();
        let w = workload(Kind::Deployment, dep);
        let rolled_out = w.as_ref().is_some_and(Workload::rolled_out);
        let mut st = workload_status(w.as_ref(), fallback);
        let at_version =
            w.as_ref().and_then(Workload::version).as_deref() == Some(p.spec.version.as_str());
        match plan.migrations.get(&c) {
            Some(Migration::Failed(msg)) => {
                let job = names::migration_job_name(inst, c, &p.spec.version);
                failed.push(format!(
                    "{} migration failed ({msg}); see the logs of Job {job}, delete it to retry",
                    c.as_str()
                ));
                st.message = Some(format!("migration to {} failed", p.spec.version));
            }
            Some(Migration::Running | Migration::NotStarted) if !at_version => {
                migrating = true;
                st.message = Some(format!("migrating to {}", p.spec.version));
            }
            _ => {}
        }
        if !(at_version && rolled_out) {
            waiting.push(format!("{} ({}/{})", c.as_str(), st.ready, st.desired));
        }
        all_at_version &= at_version && rolled_out;
        components.insert(c.as_str().to_string(), st);
    }
    if let Some(f) = &p.spec.frontend {
        let dep = get(Kind::Deployment, names::frontend_name(inst));
        let w = workload(Kind::Deployment, dep);
        let st = workload_status(w.as_ref(), f.replicas);
        if !w.as_ref().is_some_and(Workload::rolled_out) {
            waiting.push(format!("frontend ({}/{})", st.ready, st.desired));
        }
        components.insert("frontend".into(), st);
    }

    let pg = match &r.postgres {
        PostgresMode::Managed(_) => {
            let sts = get(Kind::StatefulSet, names::postgres_name(inst));
            workload_status(workload(Kind::StatefulSet, sts).as_ref(), 1)
        }
        PostgresMode::CloudNativePg(c) => {
            let cl = get(Kind::PostgresCluster, names::postgres_name(inst));
            ComponentStatus {
                ready: cl.map_or(0, observed::cnpg_ready_instances),
                desired: c.instances,
                image: None,
                message: Some("CloudNativePG".into()),
            }
        }
        PostgresMode::External(_) => external(),
    };
    let mq = match &r.rabbitmq {
        RabbitmqMode::Managed(_) => workload_status(
            workload(
                Kind::StatefulSet,
                get(Kind::StatefulSet, names::rabbitmq_name(inst)),
            )
            .as_ref(),
            1,
        ),
        RabbitmqMode::ClusterOperator(o) => {
            let cl = get(Kind::RabbitmqCluster, names::rabbitmq_name(inst));
            let all_ready = cl.is_some_and(observed::rabbitmq_all_ready);
            ComponentStatus {
                ready: if all_ready { o.replicas } else { 0 },
                desired: o.replicas,
                image: None,
                message: Some("RabbitMQ Cluster Operator".into()),
            }
        }
        RabbitmqMode::External(_) => external(),
    };
    for (name, st) in [("postgres", &pg), ("rabbitmq", &mq)] {
        if st.ready < st.desired {
            waiting.push(format!("{name} ({}/{})", st.ready, st.desired));
        }
    }
    components.insert("postgres".into(), pg);
    components.insert("rabbitmq".into(), mq);

    // Pods that cannot run, and rollouts past their progress deadline: Degraded, naming the
    // component, instead of Progressing forever.
    let mut problems: Vec<(&str, String)> = pods
        .iter()
        .map(|pp| (pp.reason, pp.message.clone()))
        .collect();
    for pp in pods {
        if let Some(st) = components.get_mut(&pp.component) {
            st.message = Some(pp.message.clone());
        }
    }
    for c in Component::ALL {
        if let Some(dep) = get(Kind::Deployment, names::service_name(inst, c))
            && Workload::read(Kind::Deployment, dep).stuck
            && !pods.iter().any(|pp| pp.component == c.as_str())
        {
            problems.push((
                "RolloutStuck",
                format!("{}: the rollout exceeded its progress deadline", c.as_str()),
            ));
        }
    }
    let (phase, conditions) = if !rejected.is_empty() {
        let reason = if rejected.iter().any(|r| r.code == 403) {
            "ApplyForbidden"
        } else {
            "ApplyRejected"
        };
        let message = rejection_message(rejected);
        (
            Phase::Degraded,
            vec![
                cond(READY, false, reason, message.clone()),
                cond(
                    PROGRESSING,
                    false,
                    reason,
                    "the API server refused part of the desired state; the rest was applied",
                ),
                cond(DEGRADED, true, reason, message),
            ],
        )
    } else if !failed.is_empty() {
        (
            Phase::Degraded,
            vec![
                cond(READY, false, "MigrationFailed", failed.join("; ")),
                cond(
                    PROGRESSING,
                    false,
                    "MigrationFailed",
                    "a migration Job failed; the previous version keeps running",
                ),
                cond(DEGRADED, true, "MigrationFailed", failed.join("; ")),
            ],
        )
    } else if let Some((reason, _)) = problems.first() {
        let message = problems
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        (
            Phase::Degraded,
            vec![
                cond(READY, false, reason, message.clone()),
                if waiting.is_empty() {
                    cond(
                        PROGRESSING,
                        false,
                        reason,
                        "the workloads are not all healthy",
                    )
                } else {
                    cond(
                        PROGRESSING,
                        true,
                        "RollingOut",
                        format!("rolling out version {}", p.spec.version),
                    )
                },
                cond(DEGRADED, true, reason, message),
            ],
        )
    } else if waiting.is_empty() {
        (
            Phase::Ready,
            vec![
                cond(
                    READY,
                    true,
                    "AllComponentsReady",
                    format!("{} components ready", components.len()),
                ),
                cond(
                    PROGRESSING,
                    false,
                    "RolloutComplete",
                    format!("running version {}", p.spec.version),
                ),
                cond(DEGRADED, false, "AsExpected", ""),
            ],
        )
    } else {
        let reason = if migrating {
            "MigrationRunning"
        } else {
            "RollingOut"
        };
        (
            if any_deployment {
                Phase::Progressing
            } else {
                Phase::Pending
            },
            vec![
                cond(
                    READY,
                    false,
                    "ComponentsNotReady",
                    format!("waiting for {}", waiting.join(", ")),
                ),
                cond(
                    PROGRESSING,
                    true,
                    reason,
                    format!("rolling out version {}", p.spec.version),
                ),
                cond(DEGRADED, false, "AsExpected", ""),
            ],
        )
    };
    let status = HelpdeskPlatformStatus {
        observed_generation: None,
        phase: Some(phase),
        url: Some(r.url(p)),
        version: if all_at_version {
            Some(p.spec.version.clone())
        } else {
            p.status.as_ref().and_then(|s| s.version.clone())
        },
        conditions,
        components,
    };
    finish(p, status, now)
}

fn external() -> ComponentStatus {
    ComponentStatus {
        ready: 1,
        desired: 1,
        image: None,
        message: Some("external".into()),
    }
}

pub fn condition<'a>(s: Option<&'a HelpdeskPlatformStatus>, type_: &str) -> Option<&'a Condition> {
    s?.conditions.iter().find(|c| c.type_ == type_)
}
