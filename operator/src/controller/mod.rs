//! The reconciler: dereference → validate → build → apply → status, for each `HelpdeskPlatform`.
//!
//! This file holds one reconcile pass (`reconcile_platform`) with its context, errors, events and
//! status write; `runtime` runs it under kube-runtime's `Controller`.

pub mod apply;
pub mod dereference;
pub mod drift;
pub mod observed;
mod runtime;
pub mod status;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::build::{BuildInput, build};
use crate::crd::{HelpdeskPlatform, HelpdeskPlatformStatus};
use crate::material::MaterialError;
use crate::names::MANAGER;
use crate::validate::{Capabilities, validate};

pub use runtime::run;

/// Every way a reconcile can fail, one variant per step that calls the API; `metric_label`
/// names it in `/metrics`, so an alert can tell a failing apply from a failing status write.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("discovering the cluster's optional APIs: {0}")]
    Discover(#[source] kube::Error),
    #[error("reading the platform's children and Secrets: {0}")]
    Dereference(#[source] kube::Error),
    #[error("applying {object}: {source}")]
    Apply {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting children the platform no longer wants: {0}")]
    Prune(#[source] kube::Error),
    #[error("writing the platform's status: {0}")]
    Status(#[source] kube::Error),
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
    #[error("generated material: {0}")]
    Material(#[from] MaterialError),
    #[error("supplied Secret is unusable: {0}")]
    SuppliedSecret(String),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Discover(_) => "discover",
            Error::Dereference(_) => "dereference",
            Error::Apply { .. } => "apply",
            Error::Prune(_) => "prune",
            Error::Status(_) => "status",
            Error::MissingObjectKey(_) => "missing_object_key",
            Error::Material(_) => "material",
            Error::SuppliedSecret(_) => "supplied_secret",
        }
    }
}

/// Built once, shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    /// Discovered optional APIs, refreshed at most every `caps_ttl`.
    caps: Mutex<Option<(Instant, Capabilities)>>,
    caps_ttl: Duration,
    /// Consecutive failures per platform (namespace/name), for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance,
            },
        );
        Self {
            client,
            recorder,
            caps: Mutex::new(None),
            caps_ttl: Duration::from_secs(60),
            failures: Mutex::new(HashMap::new()),
        }
    }

    async fn capabilities(&self) -> Result<Capabilities, Error> {
        if let Some((at, caps)) = *self.caps.lock().expect("lock")
            && at.elapsed() < self.caps_ttl
        {
            return Ok(caps);
        }
        let caps = dereference::discover(&self.client).await?;
        *self.caps.lock().expect("lock") = Some((Instant::now(), caps));
        Ok(caps)
    }

    /// Exponential backoff per platform: 5 s, 10 s, 20 s, ... up to 5 minutes.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().expect("lock");
        let n = f.entry(key.to_string()).or_insert(0);
        *n = (*n + 1).min(16);
        Duration::from_secs((5u64 << (*n - 1).min(6)).min(300))
    }

    fn succeeded(&self, key: &str) {
        self.failures.lock().expect("lock").remove(key);
    }
}

/// What one reconcile did (for logs, metrics and tests).
#[derive(Debug, Default)]
pub struct Report {
    pub outcome: apply::Outcome,
    pub status_written: bool,
    pub events: usize,
    pub ready: bool,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn publish(
    ctx: &Context,
    p: &HelpdeskPlatform,
    type_: EventType,
    reason: &str,
    note: String,
) -> usize {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    // Events are best effort: a failure to record one must not fail the reconcile.
    if let Err(e) = ctx.recorder.publish(&ev, &p.object_ref(&())).await {
        warn!(error = %e, "cannot publish event");
        return 0;
    }
    1
}

/// The annotation that pauses reconciliation of one platform.
pub const PAUSE_ANNOTATION: &str = "helpdesk.dev/reconcile";

fn is_paused(p: &HelpdeskPlatform) -> bool {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PAUSE_ANNOTATION))
        .is_some_and(|v| v.eq_ignore_ascii_case("paused"))
}

/// `helpdesk_operator_platform_ready{namespace,name}`: 1 when the platform is Ready, for alerts.
fn record_readiness(ns: &str, name: &str, ready: bool) {
    metrics::gauge!("helpdesk_operator_platform_ready", "namespace" => ns.to_string(), "name" => name.to_string())
        .set(if ready { 1.0 } else { 0.0 });
}

async fn write_status(
    ctx: &Context,
    p: &HelpdeskPlatform,
    ns: &str,
    name: &str,
    status: &HelpdeskPlatformStatus,
) -> Result<bool, Error> {
    if p.status.as_ref() == Some(status) {
        return Ok(false);
    }
    let api: Api<HelpdeskPlatform> = Api::namespaced(ctx.client.clone(), ns);
    let body = json!({
        "apiVersion": HelpdeskPlatform::api_version(&()),
        "kind": HelpdeskPlatform::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::Status)?;
    metrics::counter!("helpdesk_operator_api_writes_total", "kind" => "HelpdeskPlatformStatus")
        .increment(1);
    Ok(true)
}

/// Events for transitions of the Ready condition.
async fn transition_events(
    ctx: &Context,
    p: &HelpdeskPlatform,
    new: &HelpdeskPlatformStatus,
) -> usize {
    let old = status::condition(p.status.as_ref(), status::READY);
    let Some(now) = status::condition(Some(new), status::READY) else {
        return 0;
    };
    if old.is_some_and(|o| o.status == now.status && o.reason == now.reason) {
        return 0;
    }
    let type_ = match now.reason.as_str() {
        "InvalidSpec" | "MigrationFailed" | "ApplyRejected" | "ApplyForbidden" => {
            EventType::Warning
        }
        _ => EventType::Normal,
    };
    publish(ctx, p, type_, &now.reason, now.message.clone()).await
}

/// One pass for one platform. Public so tests can drive it against a mocked API.
#[instrument(skip_all, fields(platform = %p.name_any(), namespace = p.namespace().unwrap_or_default()))]
pub async fn reconcile_platform(p: &HelpdeskPlatform, ctx: &Context) -> Result<Report, Error> {
    let ns = p
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = p
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.name"))?;
    let uid = p
        .metadata
        .uid
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.uid"))?;
    let mut report = Report::default();
    if p.metadata.deletion_timestamp.is_some() && !is_paused(p) {
        // Owner references cascade the deletion; the StatefulSets' PVC retention policy decides
        // about the data. Nothing to do, so no finalizer either.
        return Ok(report);
    }
    let (resolved, existing, material) = match prepare(p, ctx, &ns, &name).await? {
        Ok(prepared) => prepared,
        Err(stop) => {
            // Every reason to stop before building is reported here, the same way; nothing is
            // applied, children stay as they are.
            let st = match &stop {
                Stop::Paused => status::paused(p, &now()),
                Stop::Invalid(problems) => {
                    warn!(?problems, "invalid spec");
                    status::invalid(p, problems, &now())
                }
            };
            if matches!(stop, Stop::Invalid(_)) {
                report.events += transition_events(ctx, p, &st).await;
            }
            report.status_written = write_status(ctx, p, &ns, &name, &st).await?;
            record_readiness(&ns, &name, false);
            return Ok(report);
        }
    };
    let plan = dereference::rollout_plan(p, &name, &existing);

    // Build (pure).
    let desired = build(&BuildInput {
        platform: p,
        resolved: &resolved,
        material: &material,
        deploy_versions: plan.deploy_versions.clone(),
    });

    // Apply. An object the API server refuses (422, 403) does not stop the others.
    let mut outcome = apply::apply_children(&ctx.client, &ns, &desired, &existing).await?;
    if outcome.rejected.is_empty() {
        apply::delete_orphans(&ctx.client, &ns, &uid, &desired, &existing, &mut outcome).await?;
    } else {
        // Part of the desired state is missing: keep what the new spec no longer wants until
        // the whole of it is in place.
        warn!(rejected = ?outcome.rejected, "the API server refused some objects");
    }
    // One event per kind of transition and pass (the recorder folds same-reason events anyway).
    if !outcome.jobs_created.is_empty() {
        let note = format!(
            "migrating to {}: created Job(s) {}",
            p.spec.version,
            outcome.jobs_created.join(", ")
        );
        report.events += publish(ctx, p, EventType::Normal, "MigrationStarted", note).await;
    }
    if !outcome.rollouts.is_empty() {
        let note = format!(
            "rolling out {}: {}",
            p.spec.version,
            outcome.rollouts.join(", ")
        );
        report.events += publish(ctx, p, EventType::Normal, "RolloutStarted", note).await;
    }
    if !outcome.repaired.is_empty() {
        let note = format!(
            "put back what was changed by hand: {}",
            outcome.repaired.join(", ")
        );
        report.events += publish(ctx, p, EventType::Normal, "DriftRepaired", note).await;
    }
    if !outcome.expanded.is_empty() {
        let note = format!("storage request raised: {}", outcome.expanded.join(", "));
        report.events += publish(ctx, p, EventType::Normal, "StorageExpanding", note).await;
    }

    // Status, from what exists after this pass's writes.
    let after = outcome.after(&existing);
    let pods = dereference::pod_problems(&ctx.client, &ns, &name).await;
    let st = status::compute(
        p,
        &resolved,
        &after,
        &plan,
        &pods,
        &outcome.rejected,
        &now(),
    );
    report.ready = st.phase == Some(crate::crd::Phase::Ready);
    record_readiness(&ns, &name, report.ready);
    report.events += transition_events(ctx, p, &st).await;
    report.status_written = write_status(ctx, p, &ns, &name, &st).await?;
    if outcome.writes() > 0 {
        info!(applied = ?outcome.applied, deleted = ?outcome.deleted, repaired = ?outcome.repaired, "reconciled with changes");
    }
    // Refused objects: reported above; the error makes the platform back off and retry.
    if let Some(first) = outcome.rejected.first() {
        return Err(first.to_error());
    }
    report.outcome = outcome;
    Ok(report)
}

/// Why a reconcile stops before building anything: written to status, not returned as an error
/// (retrying does not help until someone changes the resource or its Secrets).
enum Stop {
    /// Paused by an SRE (`helpdesk.dev/reconcile: paused`): no writes but the status saying so,
    /// as CloudNativePG's and the RabbitMQ Cluster Operator's pause annotations do.
    Paused,
    /// The spec, or a Secret the SRE supplied, cannot be used: each problem with its field path.
    Invalid(Vec<String>),
}

/// The validated spec, the children that exist, and the Secrets' material.
type Prepared = (
    crate::validate::Resolved,
    dereference::Existing,
    crate::material::SecretMaterial,
);

/// Validate, then dereference: what building needs, or why to stop.
async fn prepare(
    p: &HelpdeskPlatform,
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<Result<Prepared, Stop>, Error> {
    if is_paused(p) {
        return Ok(Err(Stop::Paused));
    }
    let caps = ctx.capabilities().await?;
    let resolved = match validate(p, &caps) {
        Ok(r) => r,
        Err(problems) => {
            return Ok(Err(Stop::Invalid(
                problems.iter().map(ToString::to_string).collect(),
            )));
        }
    };
    let existing = dereference::list_children(&ctx.client, ns, name, &caps).await?;
    match dereference::secret_material(&ctx.client, ns, p, &resolved, &existing).await {
        Ok(material) => Ok(Ok((resolved, existing, material))),
        Err(Error::SuppliedSecret(problem)) => Ok(Err(Stop::Invalid(vec![problem]))),
        Err(e) => Err(e),
    }
}

/// In-memory API server for tests, the simulated cluster and the figures example (feature
/// `fake-api`); not part of the operator's API.
#[cfg(any(test, feature = "fake-api"))]
#[doc(hidden)]
pub mod fake;
#[cfg(test)]
mod tests;
