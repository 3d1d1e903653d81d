//! The kubelet and the built-in controllers of the simulated cluster: Deployments (rolling update
//! with the rendered surge), StatefulSets, Jobs (retries up to `backoffLimit`), HPAs (keep at least
//! `minReplicas`), Services (endpoints of ready pods) and the Ingress; pods run as real processes
//! (see [`crate::process`]) with env, files and user resolved from the rendered objects exactly as
//! a kubelet would, and their readiness comes from the rendered probes. Everything observed is
//! written back to the in-memory API: workload status, and Pod objects with container states
//! (`CrashLoopBackOff`, `ErrImagePull`, `CreateContainerConfigError`) as `kubectl get pods` would
//! show them.
//!
//! This file holds the kubelet's state (pods, Services, the Ingress), the `sync` pass that runs
//! every part in turn, and the harness's accessors; the parts are its submodules:
//! `controllers` (the workload controllers, Services and Ingress), `containers` (starting a
//! pod's container), `env` (environment and secret/ConfigMap data) and `probes` (probes,
//! endpoints and the status written back).

mod containers;
mod controllers;
mod env;
mod probes;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::Value;

use helpdesk_operator::controller::fake::FakeApi;

use crate::network::{Addresses, Endpoints, Route, Spread};
use crate::process::{self, Running};
use crate::sandbox::Sandbox;

pub use env::expand;

/// The image user of the service images (`USER 65532:65532` in the Dockerfile).
pub const IMAGE_UID: u32 = 65532;
/// How long a crashed container waits before its next start, doubling per restart (a kubelet
/// waits 10 s doubling to 5 min; the simulation is faster so scenarios stay short).
const CRASH_BACKOFF: Duration = Duration::from_millis(500);
const CRASH_BACKOFF_MAX: Duration = Duration::from_secs(8);

fn apps(ns: &str, kind: &str) -> String {
    format!("/apis/apps/v1/namespaces/{ns}/{kind}")
}

#[derive(Debug, Clone, PartialEq)]
enum Owner {
    Deployment(String),
    StatefulSet(String),
    Job(String),
}

impl Owner {
    fn kind(&self) -> &'static str {
        match self {
            Owner::Deployment(_) => "ReplicaSet",
            Owner::StatefulSet(_) => "StatefulSet",
            Owner::Job(_) => "Job",
        }
    }
    fn name(&self) -> &str {
        match self {
            Owner::Deployment(n) | Owner::StatefulSet(n) | Owner::Job(n) => n,
        }
    }
}

/// What a container image stands for here.
#[derive(Debug, Clone)]
enum Image {
    /// A service image: the locally built binary.
    Binary(PathBuf),
    Postgres,
    RabbitMq,
    /// No local stand-in: the pod stays in `ErrImagePull`.
    Missing(String),
}

struct Pod {
    name: String,
    owner: Owner,
    /// The owner's uid: a Job deleted and created again under the same name is a new owner.
    owner_uid: String,
    template_hash: String,
    labels: BTreeMap<String, String>,
    spec: PodSpec,
    ip: Ipv4Addr,
    dir: PathBuf,
    proc: Option<Running>,
    /// The container's postStart hook while it runs (probes wait for it, as the kubelet's do).
    post_start: Option<crate::datastores::Hook>,
    restarts: u32,
    last_exit: Option<i32>,
    backoff_until: Option<Instant>,
    ready: bool,
    probe_ok: i32,
    probe_fail: i32,
    live_fail: i32,
    next_probe: Instant,
    started: Option<Instant>,
    /// Why the container is not running (`CrashLoopBackOff`, `ErrImagePull`, ...).
    waiting: Option<(String, String)>,
    /// A Job pod that ended (Never restart).
    finished: bool,
    written: Value,
}

impl Pod {
    fn container(&self) -> Option<&Container> {
        self.spec.containers.first()
    }
    fn log(&self) -> PathBuf {
        self.dir.join("container.log")
    }
}

struct ServiceRt {
    ip: Ipv4Addr,
    selector: BTreeMap<String, String>,
    /// (port, targetPort as rendered) → endpoints.
    ports: Vec<(u16, Value, Endpoints)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    spread: Spread,
}

/// Where the service binaries are and what the images are called.
#[derive(Debug, Clone)]
pub struct Images {
    /// Folder of `user-service`, `ticket-service`, ... (e.g. `target/debug`).
    pub bin_dir: PathBuf,
}

impl Images {
    fn resolve(&self, image: &str) -> Image {
        let name = image.rsplit('/').next().unwrap_or(image);
        let repo = name.split([':', '@']).next().unwrap_or(name);
        match repo {
            "postgres" => Image::Postgres,
            "rabbitmq" => Image::RabbitMq,
            r if r.ends_with("-service") => {
                let path = self.bin_dir.join(r);
                if path.is_file() {
                    Image::Binary(path)
                } else {
                    Image::Missing(format!(
                        "image {image}: no binary {} (cargo build -p {r})",
                        path.display()
                    ))
                }
            }
            _ => Image::Missing(format!(
                "image {image} is not available in the simulated cluster"
            )),
        }
    }
}

pub struct Kubelet {
    fake: FakeApi,
    ns: String,
    sandbox: Arc<Sandbox>,
    images: Images,
    work: PathBuf,
    addresses: Addresses,
    pods: Vec<Pod>,
    services: HashMap<String, ServiceRt>,
    ingress_routes: Arc<RwLock<Vec<Route>>>,
    ingress: Option<(Ipv4Addr, tokio::task::JoinHandle<()>)>,
    job_backoff: HashMap<String, Instant>,
    seq: u64,
    /// What happened (pods created and deleted, controller errors), newest last, for reports.
    pub events: Vec<String>,
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}

fn hash_of(v: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:010x}", h.finish() & 0xff_ffff_ffff)
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

fn matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Kubelet {
    pub fn new(
        fake: FakeApi,
        ns: &str,
        sandbox: Arc<Sandbox>,
        images: Images,
        work: &Path,
    ) -> Self {
        Self {
            fake,
            ns: ns.to_string(),
            sandbox,
            images,
            work: work.to_path_buf(),
            addresses: Addresses::default(),
            pods: Vec::new(),
            services: HashMap::new(),
            ingress_routes: Arc::default(),
            ingress: None,
            job_backoff: HashMap::new(),
            seq: 0,
            events: Vec::new(),
        }
    }

    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// An address for something the harness runs outside the cluster.
    pub fn external_address(&mut self) -> Ipv4Addr {
        self.addresses.external()
    }

    fn list(&self, collection: &str) -> Vec<(String, Value)> {
        self.fake
            .names(collection)
            .into_iter()
            .filter_map(|n| {
                let v = self.fake.get(&format!("{collection}/{n}"))?;
                Some((n, v))
            })
            .collect()
    }

    /// The Ingress address (`None` before the operator created one).
    pub fn ingress_address(&self) -> Option<Ipv4Addr> {
        self.ingress.as_ref().map(|(ip, _)| *ip)
    }

    /// Connections each endpoint of Service `name` received.
    pub fn spread(&self, name: &str) -> HashMap<SocketAddr, usize> {
        self.services
            .get(name)
            .map(|s| s.spread.snapshot())
            .unwrap_or_default()
    }

    /// Running pods (not finished, not waiting) owned by Deployment `name`.
    pub fn running_pods(&self, deployment: &str) -> usize {
        self.pods
            .iter()
            .filter(|p| p.owner == Owner::Deployment(deployment.to_string()) && p.proc.is_some())
            .count()
    }

    /// One pass of every controller and the kubelet.
    pub async fn sync(&mut self) -> anyhow::Result<()> {
        self.sync_services().await?;
        self.sync_ingress().await?;
        self.sync_hpas();
        self.sync_statefulsets();
        self.sync_jobs();
        self.sync_deployments();
        self.reap_orphans().await;
        self.run_pods().await;
        self.probe().await;
        self.update_endpoints();
        self.write_status().await;
        Ok(())
    }

    /// Stops every pod (the cluster goes away).
    pub async fn shutdown(&mut self) {
        for p in &mut self.pods {
            if let Some(hook) = p.post_start.take() {
                hook.abort();
            }
            if let Some(mut proc) = p.proc.take() {
                proc.stop(Duration::from_secs(15)).await;
            }
        }
        for s in self.services.values() {
            s.tasks.iter().for_each(|t| t.abort());
        }
        if let Some((_, t)) = &self.ingress {
            t.abort();
        }
    }

    /// The log of the newest pod whose name starts with `prefix` (for failure reports).
    pub fn log_of(&self, prefix: &str) -> String {
        self.pods
            .iter()
            .rev()
            .find(|p| p.name.starts_with(prefix))
            .map(|p| process::tail(&p.log(), 20))
            .unwrap_or_default()
    }

    /// One line per pod: name, ready, restarts, waiting reason.
    pub fn describe(&self) -> String {
        self.pods
            .iter()
            .map(|p| {
                format!(
                    "{} ready={} restarts={} running={} finished={} exit={:?} waiting={:?}",
                    p.name,
                    p.ready,
                    p.restarts,
                    p.proc.is_some(),
                    p.finished,
                    p.last_exit,
                    p.waiting.as_ref().map(|w| &w.0)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
