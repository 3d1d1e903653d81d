//! A simulated Kubernetes cluster that runs what the Helpdesk operator renders.
//!
//! The operator's real reconciler runs against its in-memory API ([`FakeApi`]); this crate plays
//! the rest of the cluster: the kubelet and the built-in controllers start every Job, Deployment
//! and StatefulSet pod as a real local process (service images → the locally built binaries,
//! `postgres`/`rabbitmq` images → the machine's PostgreSQL and RabbitMQ) with the env, files and
//! user a kubelet would give it, report readiness from the rendered probes, and write status back;
//! Services get addresses and names in a private network namespace; the Ingress path table is
//! served at one URL. What it does not simulate: a scheduler, nodes and resource limits, a CNI
//! with NetworkPolicies, admission webhooks, image pulls (images map to local binaries), and exec
//! probes (the datastores' readiness is their port accepting connections).
//!
//! Runs as root only (network and mount namespaces; pods run under their rendered UIDs).

pub mod datastores;
pub mod kubelet;
pub mod network;
pub mod process;
pub mod sandbox;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use helpdesk_operator::controller::fake::FakeApi;
use helpdesk_operator::controller::{Context as OperatorContext, reconcile_platform};
use helpdesk_operator::crd::HelpdeskPlatform;

pub use kubelet::Images;

/// How often the operator reconciles and the kubelet syncs.
const TICK: Duration = Duration::from_millis(250);

/// A running simulated cluster with one `HelpdeskPlatform`.
pub struct Cluster {
    pub fake: FakeApi,
    pub namespace: String,
    pub name: String,
    kubelet: Arc<Mutex<kubelet::Kubelet>>,
    driver: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
    /// Reconcile errors, newest last.
    pub errors: Arc<std::sync::Mutex<Vec<String>>>,
    work: PathBuf,
    /// Servers the harness runs outside the cluster (external datastores).
    externals: Mutex<Vec<process::Running>>,
}

impl Cluster {
    fn platform_path(&self) -> String {
        platform_path(&self.namespace, &self.name)
    }

    /// Starts the cluster (inside the namespaces entered with [`sandbox::enter`]) and applies
    /// `resource` (a `HelpdeskPlatform` YAML), plus any `extra` objects (Secrets a user creates
    /// first) given as (API path, object).
    pub async fn start(
        sandbox: Arc<sandbox::Sandbox>,
        work: &Path,
        images: Images,
        resource: &str,
        extra: Vec<(String, Value)>,
    ) -> anyhow::Result<Cluster> {
        let cr: Value = serde_yaml::from_str(resource).context("the resource is not YAML")?;
        let namespace = cr["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = cr["metadata"]["name"]
            .as_str()
            .context("the resource has no metadata.name")?
            .to_string();
        let fake = FakeApi::new();
        for (path, obj) in extra {
            fake.put(&path, obj);
        }
        fake.put(&platform_path(&namespace, &name), cr);
        let kubelet = Arc::new(Mutex::new(kubelet::Kubelet::new(
            fake.clone(),
            &namespace,
            sandbox,
            images,
            work,
        )));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let driver = {
            let (fake, kubelet, errors) = (fake.clone(), kubelet.clone(), errors.clone());
            let path = platform_path(&namespace, &name);
            tokio::spawn(async move {
                let ctx = OperatorContext::new(fake.client(), Some("simcluster".into()));
                loop {
                    if let Some(p) = fake.get(&path) {
                        match serde_json::from_value::<HelpdeskPlatform>(p) {
                            Ok(p) => {
                                if let Err(e) = reconcile_platform(&p, &ctx).await {
                                    push(&errors, format!("reconcile: {e}"));
                                }
                            }
                            Err(e) => push(&errors, format!("platform: {e}")),
                        }
                    }
                    if let Err(e) = kubelet.lock().await.sync().await {
                        push(&errors, format!("kubelet: {e:#}"));
                    }
                    tokio::select! {
                        _ = stopped.changed() => break,
                        _ = tokio::time::sleep(TICK) => {}
                    }
                }
            })
        };
        Ok(Cluster {
            fake,
            namespace,
            name,
            kubelet,
            driver,
            stop,
            errors,
            work: work.to_path_buf(),
            externals: Mutex::new(Vec::new()),
        })
    }

    /// The platform object as `kubectl get hdp -o json` would show it.
    pub fn platform(&self) -> Value {
        self.fake.get(&self.platform_path()).unwrap_or(Value::Null)
    }

    /// `status.phase`.
    pub fn phase(&self) -> String {
        self.platform()["status"]["phase"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Waits until `check` accepts the platform, or fails with the status, the pods and the
    /// newest logs.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let start = Instant::now();
        loop {
            let p = self.platform();
            if check(&p) {
                return Ok(p);
            }
            if start.elapsed() > timeout {
                bail!(
                    "timed out after {timeout:?} waiting for {what}\nstatus: {}\npods:\n{}\nerrors: {:?}",
                    serde_json::to_string_pretty(&p["status"]).unwrap_or_default(),
                    self.describe().await,
                    self.errors
                        .lock()
                        .map(|e| e.iter().rev().take(5).cloned().collect::<Vec<_>>())
                        .unwrap_or_default()
                );
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// Waits for `Ready` at the current generation; fails at once when the platform reports
    /// `Degraded` for the current generation for longer than `grace` (a failed migration, a
    /// crash loop), with the status in the error.
    pub async fn wait_ready(&self, timeout: Duration, grace: Duration) -> anyhow::Result<Value> {
        let start = Instant::now();
        let mut degraded_since: Option<Instant> = None;
        loop {
            let p = self.platform();
            let current = p["status"]["observedGeneration"] == p["metadata"]["generation"];
            if current && p["status"]["phase"] == "Ready" {
                return Ok(p);
            }
            if current && p["status"]["phase"] == "Degraded" {
                let since = *degraded_since.get_or_insert_with(Instant::now);
                if since.elapsed() > grace {
                    bail!(
                        "the platform is Degraded: {}
pods:
{}",
                        serde_json::to_string_pretty(&p["status"]["conditions"])
                            .unwrap_or_default(),
                        self.describe().await
                    );
                }
            } else {
                degraded_since = None;
            }
            if start.elapsed() > timeout {
                return self.wait_phase("Ready", Duration::ZERO).await;
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// The URL of the managed PostgreSQL as the operator generated it (for a test that reaches
    /// into the data, like an SRE with `kubectl port-forward`).
    pub fn postgres_url(&self) -> anyhow::Result<String> {
        let name = format!("{}-postgres-credentials", self.name);
        self.secret(&name)
            .and_then(|s| s.get("url").cloned())
            .ok_or_else(|| anyhow!("no url in Secret {name}"))
    }

    /// Waits for `phase` with `status.observedGeneration` current.
    pub async fn wait_phase(&self, phase: &str, timeout: Duration) -> anyhow::Result<Value> {
        self.wait_for(timeout, &format!("phase {phase}"), |p| {
            p["status"]["phase"] == phase
                && p["status"]["observedGeneration"] == p["metadata"]["generation"]
        })
        .await
    }

    /// Edits the platform's spec as an SRE would (`kubectl edit` / `patch`).
    pub fn edit_spec(&self, f: impl FnOnce(&mut Value)) {
        self.fake.edit(&self.platform_path(), |p| f(&mut p["spec"]));
    }

    /// A Secret's data, decoded.
    pub fn secret(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let s = self.fake.get(&format!(
            "/api/v1/namespaces/{}/secrets/{name}",
            self.namespace
        ))?;
        Some(
            s["data"]
                .as_object()?
                .iter()
                .map(|(k, v)| {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(v.as_str().unwrap_or_default())
                        .unwrap_or_default();
                    (k.clone(), String::from_utf8_lossy(&bytes).into_owned())
                })
                .collect(),
        )
    }

    /// The platform's first administrator, from the Secret the operator generated (or the one
    /// the resource names).
    pub fn admin(&self) -> anyhow::Result<helpdesk_e2e::Admin> {
        let p = self.platform();
        let name = p["spec"]["auth"]["bootstrapAdminSecretRef"]["name"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}-admin", self.name));
        let s = self
            .secret(&name)
            .ok_or_else(|| anyhow!("no Secret {name} with the admin's credentials"))?;
        Ok(helpdesk_e2e::Admin {
            email: s
                .get("email")
                .cloned()
                .context("no email in the admin Secret")?,
            password: s
                .get("password")
                .cloned()
                .context("no password in the admin Secret")?,
        })
    }

    /// The public URL through the Ingress: `http://<spec.ingress.host>` (resolvable inside the
    /// cluster's namespaces).
    pub async fn url(&self) -> anyhow::Result<String> {
        let host = self.platform()["spec"]["ingress"]["host"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ip = self.kubelet.lock().await.ingress_address();
        match (ip, host.is_empty()) {
            (Some(_), false) => Ok(format!("http://{host}")),
            (Some(ip), true) => Ok(format!("http://{ip}")),
            (None, _) => bail!("the operator created no Ingress"),
        }
    }

    /// An address for a process the harness runs outside the cluster, reachable as `names`.
    pub async fn external(&self, names: &[&str]) -> anyhow::Result<Ipv4Addr> {
        let mut k = self.kubelet.lock().await;
        let ip = k.external_address();
        k.sandbox()
            .add_host(ip, names.iter().map(|n| n.to_string()).collect())?;
        Ok(ip)
    }

    /// Starts a PostgreSQL outside the cluster, reachable as `host:5432`, with `user`'s
    /// `password` and database `db` (an "external" datastore).
    pub async fn external_postgres(
        &self,
        host: &str,
        user: &str,
        password: &str,
        db: &str,
    ) -> anyhow::Result<()> {
        let ip = self.external(&[host]).await?;
        let dir = self.work.join("external").join(host);
        std::fs::create_dir_all(&dir)?;
        let env: Vec<(String, String)> = [
            ("POSTGRES_USER", user),
            ("POSTGRES_PASSWORD", password),
            ("POSTGRES_DB", db),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let running = datastores::postgres(
            ip,
            &dir,
            &self.work,
            &env,
            Vec::new(),
            &dir.join("server.log"),
        )
        .await?;
        self.externals.lock().await.push(running);
        Ok(())
    }

    /// Starts a RabbitMQ node outside the cluster, reachable as `host:5672` with `user`'s
    /// `password`.
    pub async fn external_rabbitmq(
        &self,
        host: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        let ip = self.external(&[host]).await?;
        let dir = self.work.join("external").join(host);
        std::fs::create_dir_all(&dir)?;
        let env: Vec<(String, String)> = [
            ("RABBITMQ_DEFAULT_USER", user),
            ("RABBITMQ_DEFAULT_PASS", password),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (running, _) =
            datastores::rabbitmq(ip, &dir, &self.work, &env, None, &dir.join("server.log")).await?;
        self.externals.lock().await.push(running);
        Ok(())
    }

    /// Makes `names` resolve to `ip` in the cluster (e.g. a server the harness started on
    /// 127.0.0.1 of the cluster's namespace).
    pub async fn alias(&self, ip: Ipv4Addr, names: &[&str]) -> anyhow::Result<()> {
        self.kubelet
            .lock()
            .await
            .sandbox()
            .add_host(ip, names.iter().map(|n| n.to_string()).collect())
    }

    /// Connections each pod behind Service `name` received.
    pub async fn spread(
        &self,
        service: &str,
    ) -> std::collections::HashMap<std::net::SocketAddr, usize> {
        self.kubelet.lock().await.spread(service)
    }

    /// Running pods of Deployment `name`.
    pub async fn running_pods(&self, deployment: &str) -> usize {
        self.kubelet.lock().await.running_pods(deployment)
    }

    /// Pods and their state, one per line.
    pub async fn describe(&self) -> String {
        let k = self.kubelet.lock().await;
        let mut out = k.describe();
        out.push_str("\n--- events ---\n");
        out.push_str(
            &k.events
                .iter()
                .rev()
                .take(15)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
        );
        out
    }

    /// The newest log lines of the newest pod whose name starts with `prefix`.
    pub async fn log_of(&self, prefix: &str) -> String {
        self.kubelet.lock().await.log_of(prefix)
    }

    /// Stops the operator loop and every pod, and removes the cluster's files.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.driver.await;
        self.kubelet.lock().await.shutdown().await;
        for mut r in self.externals.lock().await.drain(..) {
            r.stop(Duration::from_secs(15)).await;
        }
        // RabbitMQ leaves its port mapper running in the cluster's namespace.
        let _ = tokio::process::Command::new("epmd")
            .arg("-kill")
            .output()
            .await;
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

fn push(errors: &std::sync::Mutex<Vec<String>>, e: String) {
    if let Ok(mut errs) = errors.lock() {
        if errs.last() != Some(&e) {
            errs.push(e);
        }
        if errs.len() > 200 {
            errs.remove(0);
        }
    }
}

fn platform_path(ns: &str, name: &str) -> String {
    format!("/apis/helpdesk.dev/v1alpha1/namespaces/{ns}/helpdeskplatforms/{name}")
}

/// The API path of a Secret.
pub fn secret_path(ns: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{ns}/secrets/{name}")
}

/// A Secret object with `data` (base64) from plain strings.
pub fn secret(ns: &str, name: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                json!(base64::engine::general_purpose::STANDARD.encode(v)),
            )
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": ns}, "data": data})
}

/// The folder of the service binaries next to the running executable (`target/<profile>`),
/// building the missing ones with cargo.
pub fn service_binaries() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("no executable folder")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let services = [
        "user-service",
        "ticket-service",
        "notification-service",
        "audit-service",
        "admin-service",
    ];
    let missing: Vec<&str> = services
        .iter()
        .copied()
        .filter(|s| !dir.join(s).is_file())
        .collect();
    if !missing.is_empty() {
        let mut cmd =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.arg("build");
        for s in &missing {
            cmd.args(["-p", s, "--bin", s]);
        }
        let status = cmd
            .status()
            .context("running cargo to build the service binaries")?;
        if !status.success() {
            bail!("building {} failed", missing.join(", "));
        }
    }
    Ok(dir)
}
