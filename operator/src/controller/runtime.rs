//! The controller around the reconcile pass: kube-runtime's `Controller` per watched namespace
//! (the platforms, and the Deployments, Jobs and StatefulSets they own), the requeue after a pass,
//! the per-platform backoff after an error, and the reconcile metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    batch::v1::Job,
};
use kube::{
    Api, Client, ResourceExt,
    core::DeserializeGuard,
    runtime::{Controller, controller::Action, watcher},
};
use tracing::warn;

use super::{Context, Error, reconcile_platform};
use crate::crd::HelpdeskPlatform;
use crate::names::MANAGER;

fn key(p: &HelpdeskPlatform) -> String {
    format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
}

async fn reconcile(
    guard: Arc<DeserializeGuard<HelpdeskPlatform>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let p = match &guard.0 {
        Ok(p) => p,
        Err(invalid) => {
            // One malformed resource must not stop the others: log it and wait for an edit.
            warn!(name = ?invalid.metadata.name, error = %invalid.error, "cannot parse HelpdeskPlatform");
            return Ok(Action::await_change());
        }
    };
    let start = Instant::now();
    metrics::counter!("helpdesk_operator_reconciles_total").increment(1);
    let result = reconcile_platform(p, &ctx).await;
    metrics::histogram!("helpdesk_operator_reconcile_duration_seconds")
        .record(start.elapsed().as_secs_f64());
    let report = result?;
    ctx.succeeded(&key(p));
    // Watches on owned objects wake us on change; the requeue is a safety net.
    Ok(Action::requeue(Duration::from_secs(if report.ready {
        300
    } else {
        30
    })))
}

fn error_policy(
    guard: Arc<DeserializeGuard<HelpdeskPlatform>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    metrics::counter!("helpdesk_operator_reconcile_errors_total", "error" => error.metric_label())
        .increment(1);
    let key = match &guard.0 {
        Ok(p) => key(p),
        Err(i) => format!("{:?}/{:?}", i.metadata.namespace, i.metadata.name),
    };
    let delay = ctx.backoff(&key);
    warn!(platform = %key, error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Runs the controller for the given namespaces (empty: all namespaces) until shutdown.
/// `concurrency` bounds the platforms reconciled at once (memory and API pressure).
pub async fn run(
    client: Client,
    namespaces: Vec<String>,
    instance: Option<String>,
    concurrency: u16,
) {
    let ctx = Arc::new(Context::new(client.clone(), instance));
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let controllers = scopes.into_iter().map(|ns| {
        let api = |c: &Client| match &ns {
            Some(ns) => (
                Api::<DeserializeGuard<HelpdeskPlatform>>::namespaced(c.clone(), ns),
                Api::<Deployment>::namespaced(c.clone(), ns),
                Api::<Job>::namespaced(c.clone(), ns),
                Api::<StatefulSet>::namespaced(c.clone(), ns),
            ),
            None => (
                Api::all(c.clone()),
                Api::all(c.clone()),
                Api::all(c.clone()),
                Api::all(c.clone()),
            ),
        };
        let (platforms, deployments, jobs, sets) = api(&client);
        Controller::new(platforms, watcher::Config::default().any_semantic())
            .with_config(
                kube::runtime::controller::Config::default()
                    .concurrency(concurrency)
                    .debounce(Duration::from_millis(500)),
            )
            // Owned objects are watched metadata-only by kube-runtime: only their owner matters.
            .owns(deployments, owned.clone())
            .owns(jobs, owned.clone())
            .owns(sets, owned.clone())
            .shutdown_on_signal()
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|res| async move {
                if let Err(e) = res {
                    warn!(error = %e, "controller");
                }
            })
    });
    futures_util::future::join_all(controllers).await;
}
