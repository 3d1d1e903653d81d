//! Reconcile tests against the in-memory API server: each checks the requests the reconciler made.
//!
//! This file holds the harness (a platform in the fake API, passes, edits, completions) and the
//! helpers the tests share; the tests are in submodules by theme.

mod datastores;
mod drift;
mod failures;
mod lifecycle;
mod network;
mod rollout;
mod secrets;
/// Issue 11 follow-ups (password re-application, backups, pull secrets).
mod sre;
mod writes;

use serde_json::{Value, json};

use super::fake::FakeApi;
use super::{Context, Error, Report, reconcile_platform};
use crate::crd::{HelpdeskPlatform, Phase};

const NS: &str = "support";
const PLATFORM: &str = "/apis/helpdesk.dev/v1alpha1/namespaces/support/helpdeskplatforms/hd";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/support/deployments";
const STATEFULSETS: &str = "/apis/apps/v1/namespaces/support/statefulsets";
const JOBS: &str = "/apis/batch/v1/namespaces/support/jobs";
const HPAS: &str = "/apis/autoscaling/v2/namespaces/support/horizontalpodautoscalers";
const SECRETS: &str = "/api/v1/namespaces/support/secrets";
const POLICIES: &str = "/apis/networking.k8s.io/v1/namespaces/support/networkpolicies";

struct Harness {
    fake: FakeApi,
    ctx: Context,
}

impl Harness {
    fn new(spec: Value) -> Self {
        let fake = FakeApi::new();
        fake.put(
            PLATFORM,
            json!({
                "apiVersion": "helpdesk.dev/v1alpha1", "kind": "HelpdeskPlatform",
                "metadata": {"name": "hd", "namespace": NS},
                "spec": spec,
            }),
        );
        let ctx = Context::new(fake.client(), Some("test".into()));
        Self { fake, ctx }
    }

    fn minimal() -> Self {
        Self::new(json!({"version": "0.1.0", "ingress": {"host": "helpdesk.example.com"}}))
    }

    fn platform(&self) -> HelpdeskPlatform {
        serde_json::from_value(self.fake.get(PLATFORM).unwrap()).unwrap()
    }

    async fn reconcile(&self) -> Result<Report, Error> {
        self.fake.clear_requests();
        reconcile_platform(&self.platform(), &self.ctx).await
    }

    fn write_paths(&self) -> Vec<String> {
        self.fake
            .writes()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    fn edit_spec(&self, f: impl FnOnce(&mut Value)) {
        self.fake.edit(PLATFORM, |p| f(&mut p["spec"]));
    }

    /// Marks every migration Job as complete, like the Job controller would.
    fn finish_migrations(&self) {
        for job in self.fake.names(JOBS) {
            self.fake.edit(&format!("{JOBS}/{job}"), |j| {
                j["status"] = json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]});
            });
        }
    }

    /// Marks every workload as fully rolled out, like the Deployment/StatefulSet controllers would.
    fn make_ready(&self) {
        for coll in [DEPLOYMENTS, STATEFULSETS] {
            for name in self.fake.names(coll) {
                self.fake.edit(&format!("{coll}/{name}"), |d| {
                    let n = d["spec"]["replicas"].as_i64().unwrap_or(2);
                    d["status"] = json!({"replicas": n, "readyReplicas": n, "updatedReplicas": n,
                                         "observedGeneration": d["metadata"]["generation"].clone()});
                });
            }
        }
    }

    /// First create, migrations done, everything ready, status settled.
    async fn settled(self) -> Self {
        self.reconcile().await.unwrap();
        self.finish_migrations();
        self.reconcile().await.unwrap();
        self.make_ready();
        self.reconcile().await.unwrap();
        self
    }

    fn deployment(&self, name: &str) -> Value {
        self.fake
            .get(&format!("{DEPLOYMENTS}/{name}"))
            .unwrap_or_else(|| panic!("no deployment {name}"))
    }

    fn image(&self, name: &str) -> String {
        self.deployment(name)["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

fn condition(p: &HelpdeskPlatform, t: &str) -> (String, String) {
    let c = p
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap();
    (c.status.clone(), c.reason.clone())
}

fn secret_value(h: &Harness, name: &str, key: &str) -> String {
    use base64::Engine;
    let s = h.fake.get(&format!("{SECRETS}/{name}")).unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s["data"][key].as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Child writes of the last pass (no status, no events), as `PATCH <path>`.
fn child_writes(h: &Harness) -> Vec<String> {
    let mut w: Vec<String> = h
        .write_paths()
        .into_iter()
        .filter(|w| !w.contains("/events") && !w.ends_with("/status"))
        .collect();
    w.sort();
    w
}

fn condition_message(p: &HelpdeskPlatform, t: &str) -> String {
    p.status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap()
        .message
        .clone()
}
