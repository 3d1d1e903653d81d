//! The kubelet and the built-in controllers of the simulated cluster: Deployments (rolling update
//! with the rendered surge), StatefulSets, Jobs (retries up to `backoffLimit`), HPAs (keep at least
//! `minReplicas`), Services (endpoints of ready pods) and the Ingress; pods run as real processes
//! (see [`crate::process`]) with env, files and user resolved from the rendered objects exactly as
//! a kubelet would, and their readiness comes from the rendered probes. Everything observed is
//! written back to the in-memory API: workload status, and Pod objects with container states
//! (`CrashLoopBackOff`, `ErrImagePull`, `CreateContainerConfigError`) as `kubectl get pods` would
//! show them.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use base64::Engine;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, PodSpec, PodTemplateSpec, Probe, SecurityContext, Volume,
};
use serde_json::{Value, json};

use helpdesk_operator::controller::fake::FakeApi;

use crate::network::{self, Addresses, Endpoints, Route, Spread};
use crate::process::{self, Launch, Mount, Running};
use crate::sandbox::Sandbox;

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

    async fn sync_services(&mut self) -> anyhow::Result<()> {
        let collection = format!("/api/v1/namespaces/{}/services", self.ns);
        let live = self.list(&collection);
        for (name, svc) in &live {
            if self.services.contains_key(name) {
                continue;
            }
            let ip = self.addresses.service();
            let ns = &self.ns;
            self.sandbox.add_host(
                ip,
                vec![
                    name.clone(),
                    format!("{name}.{ns}"),
                    format!("{name}.{ns}.svc"),
                    format!("{name}.{ns}.svc.cluster.local"),
                ],
            )?;
            let spread = Spread::default();
            let mut ports = Vec::new();
            let mut tasks = Vec::new();
            for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
                let port = p["port"].as_u64().unwrap_or(0) as u16;
                let target = p.get("targetPort").cloned().unwrap_or(json!(port));
                let endpoints = Endpoints::default();
                tasks.push(
                    network::service_proxy(
                        SocketAddr::from((ip, port)),
                        endpoints.clone(),
                        spread.clone(),
                    )
                    .await
                    .with_context(|| format!("Service {name} on {ip}:{port}"))?,
                );
                ports.push((port, target, endpoints));
            }
            self.services.insert(
                name.clone(),
                ServiceRt {
                    ip,
                    selector: labels_of(&svc["spec"]["selector"]),
                    ports,
                    tasks,
                    spread,
                },
            );
        }
        let names: Vec<String> = live.into_iter().map(|(n, _)| n).collect();
        self.services.retain(|n, s| {
            let keep = names.contains(n);
            if !keep {
                s.tasks.iter().for_each(|t| t.abort());
            }
            keep
        });
        Ok(())
    }

    async fn sync_ingress(&mut self) -> anyhow::Result<()> {
        let collection = format!(
            "/apis/networking.k8s.io/v1/namespaces/{}/ingresses",
            self.ns
        );
        let mut routes = Vec::new();
        let mut hosts = Vec::new();
        for (_, ing) in self.list(&collection) {
            for rule in ing["spec"]["rules"].as_array().into_iter().flatten() {
                if let Some(h) = rule["host"].as_str() {
                    hosts.push(h.to_string());
                }
                for p in rule["http"]["paths"].as_array().into_iter().flatten() {
                    let svc = p["backend"]["service"]["name"].as_str().unwrap_or_default();
                    let Some(rt) = self.services.get(svc) else {
                        continue;
                    };
                    let port = &p["backend"]["service"]["port"];
                    let port = match (port["number"].as_u64(), port["name"].as_str()) {
                        (Some(n), _) => n as u16,
                        (None, Some(name)) => self
                            .list(&format!("/api/v1/namespaces/{}/services", self.ns))
                            .into_iter()
                            .find(|(n, _)| n == svc)
                            .and_then(|(_, s)| {
                                s["spec"]["ports"].as_array()?.iter().find_map(|sp| {
                                    (sp["name"].as_str() == Some(name))
                                        .then(|| sp["port"].as_u64())
                                        .flatten()
                                })
                            })
                            .unwrap_or(80) as u16,
                        _ => 80,
                    };
                    routes.push(Route {
                        path: p["path"].as_str().unwrap_or("/").to_string(),
                        exact: p["pathType"].as_str() == Some("Exact"),
                        backend: SocketAddr::from((rt.ip, port)),
                    });
                }
            }
        }
        *self
            .ingress_routes
            .write()
            .unwrap_or_else(|e| e.into_inner()) = routes.clone();
        if self.ingress.is_none() && !routes.is_empty() {
            let ip = self.addresses.external();
            if !hosts.is_empty() {
                self.sandbox.add_host(ip, hosts)?;
            }
            let task =
                network::ingress(SocketAddr::from((ip, 80)), self.ingress_routes.clone()).await?;
            self.ingress = Some((ip, task));
        }
        Ok(())
    }

    /// The HPA controller, as far as replicas go: at least `minReplicas`, at most `maxReplicas`.
    fn sync_hpas(&mut self) {
        let collection = format!(
            "/apis/autoscaling/v2/namespaces/{}/horizontalpodautoscalers",
            self.ns
        );
        for (_, hpa) in self.list(&collection) {
            let target = hpa["spec"]["scaleTargetRef"]["name"]
                .as_str()
                .unwrap_or_default();
            let min = hpa["spec"]["minReplicas"].as_i64().unwrap_or(1);
            let max = hpa["spec"]["maxReplicas"].as_i64().unwrap_or(min);
            let path = format!("{}/{target}", apps(&self.ns, "deployments"));
            if let Some(d) = self.fake.get(&path) {
                let cur = d["spec"]["replicas"].as_i64().unwrap_or(1);
                let want = cur.clamp(min, max);
                if want != cur {
                    self.fake
                        .edit(&path, |d| d["spec"]["replicas"] = json!(want));
                }
            }
        }
    }

    fn new_pod(
        &mut self,
        name: String,
        owner: Owner,
        owner_uid: &Value,
        template: &Value,
    ) -> anyhow::Result<()> {
        let tpl: PodTemplateSpec = serde_json::from_value(template.clone())
            .map_err(|e| anyhow!("pod template of {}: {e}", owner.name()))?;
        let spec = tpl.spec.unwrap_or_default();
        let labels = tpl.metadata.and_then(|m| m.labels).unwrap_or_default();
        let dir = self.work.join("pods").join(&name);
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let ip = self.addresses.pod();
        self.events.push(format!("created pod {name} ({ip})"));
        self.pods.push(Pod {
            name,
            owner,
            owner_uid: owner_uid.as_str().unwrap_or_default().to_string(),
            template_hash: hash_of(template),
            labels,
            spec,
            ip,
            dir,
            proc: None,
            post_start: None,
            restarts: 0,
            last_exit: None,
            backoff_until: None,
            ready: false,
            probe_ok: 0,
            probe_fail: 0,
            live_fail: 0,
            next_probe: Instant::now(),
            started: None,
            waiting: None,
            finished: false,
            written: Value::Null,
        });
        Ok(())
    }

    fn next_suffix(&mut self) -> String {
        self.seq += 1;
        format!("{:05x}", self.seq)
    }

    fn sync_statefulsets(&mut self) {
        for (name, sts) in self.list(&apps(&self.ns, "statefulsets")) {
            let template = &sts["spec"]["template"];
            let hash = hash_of(template);
            let pod_name = format!("{name}-0");
            let stale = self
                .pods
                .iter()
                .any(|p| p.name == pod_name && p.template_hash != hash);
            if stale {
                self.mark_deleted(&pod_name);
            }
            if !self.pods.iter().any(|p| p.name == pod_name)
                && let Err(e) = self.new_pod(
                    pod_name,
                    Owner::StatefulSet(name.clone()),
                    &sts["metadata"]["uid"],
                    template,
                )
            {
                self.events.push(format!("StatefulSet {name}: {e:#}"));
            }
        }
    }

    fn sync_jobs(&mut self) {
        let collection = format!("/apis/batch/v1/namespaces/{}/jobs", self.ns);
        for (name, job) in self.list(&collection) {
            let done = job["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| {
                    (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True"
                });
            if done {
                continue;
            }
            let owner = Owner::Job(name.clone());
            let uid = job["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let mine = |p: &&Pod| p.owner == owner && p.owner_uid == uid;
            let active = self.pods.iter().filter(mine).any(|p| !p.finished);
            let succeeded = self
                .pods
                .iter()
                .filter(mine)
                .any(|p| p.finished && p.last_exit == Some(0));
            let failed = self
                .pods
                .iter()
                .filter(mine)
                .filter(|p| p.finished && p.last_exit != Some(0))
                .count() as i64;
            let limit = job["spec"]["backoffLimit"].as_i64().unwrap_or(6);
            let path = format!("{collection}/{name}");
            if succeeded {
                self.fake.edit(&path, |j| {
                    j["status"] = json!({"succeeded": 1, "failed": failed,
                        "conditions": [{"type": "Complete", "status": "True"}]});
                });
                continue;
            }
            if failed > limit {
                let why = self
                    .pods
                    .iter()
                    .rev()
                    .find(|p| p.owner == owner)
                    .map(|p| process::tail(&p.log(), 3))
                    .unwrap_or_default();
                self.fake.edit(&path, |j| {
                    j["status"] = json!({"failed": failed, "conditions": [{"type": "Failed",
                        "status": "True", "reason": "BackoffLimitExceeded",
                        "message": format!("Job has reached the specified backoff limit: {why}")}]});
                });
                continue;
            }
            if failed > 0 || active {
                self.fake.edit(&path, |j| {
                    j["status"] = json!({"active": i64::from(active), "failed": failed});
                });
            }
            let due = self
                .job_backoff
                .get(&name)
                .is_none_or(|t| Instant::now() >= *t);
            if !active && due {
                let pod = format!("{name}-{}", self.next_suffix());
                if let Err(e) = self.new_pod(
                    pod,
                    owner,
                    &job["metadata"]["uid"],
                    &job["spec"]["template"],
                ) {
                    self.events.push(format!("Job {name}: {e:#}"));
                }
                // A failed Job pod is replaced after a delay (doubling, like the Job controller).
                let delay = CRASH_BACKOFF * 2u32.pow((failed as u32).min(4));
                self.job_backoff
                    .insert(name.clone(), Instant::now() + delay);
            }
        }
    }

    fn sync_deployments(&mut self) {
        for (name, d) in self.list(&apps(&self.ns, "deployments")) {
            let template = &d["spec"]["template"];
            let hash = hash_of(template);
            let desired = d["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
            let owner = Owner::Deployment(name.clone());
            let mine: Vec<(String, bool, bool)> = self
                .pods
                .iter()
                .filter(|p| p.owner == owner)
                .map(|p| (p.name.clone(), p.template_hash == hash, p.ready))
                .collect();
            let new: Vec<&(String, bool, bool)> = mine.iter().filter(|p| p.1).collect();
            let old: Vec<&(String, bool, bool)> = mine.iter().filter(|p| !p.1).collect();
            let surge = 1;
            if new.len() > desired {
                // Scale down: not-ready pods first.
                let mut extra: Vec<&&(String, bool, bool)> = new.iter().collect();
                extra.sort_by_key(|p| p.2);
                for p in extra.iter().take(new.len() - desired) {
                    self.mark_deleted(&p.0);
                }
            } else if new.len() < desired && mine.len() < desired + surge {
                let pod = format!("{name}-{}-{}", &hash[..6], self.next_suffix());
                if let Err(e) = self.new_pod(pod, owner.clone(), &d["metadata"]["uid"], template) {
                    self.events.push(format!("Deployment {name}: {e:#}"));
                }
            }
            // maxUnavailable 0: an old pod goes only when enough pods are ready without it.
            let ready = mine.iter().filter(|p| p.2).count();
            if let Some(victim) = old
                .iter()
                .find(|p| !p.2)
                .or_else(|| (ready > desired).then(|| old.first()).flatten())
            {
                self.mark_deleted(&victim.0);
            }
        }
    }

    fn mark_deleted(&mut self, pod: &str) {
        if let Some(p) = self.pods.iter_mut().find(|p| p.name == pod) {
            p.finished = true;
            p.ready = false;
            p.labels
                .insert("simcluster/terminating".into(), "true".into());
        }
    }

    /// Stops pods whose owner is gone or that were marked for deletion.
    async fn reap_orphans(&mut self) {
        let uids = |collection: String| -> HashMap<String, String> {
            self.list(&collection)
                .into_iter()
                .map(|(n, o)| {
                    (
                        n,
                        o["metadata"]["uid"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect()
        };
        let deployments = uids(apps(&self.ns, "deployments"));
        let statefulsets = uids(apps(&self.ns, "statefulsets"));
        let jobs = uids(format!("/apis/batch/v1/namespaces/{}/jobs", self.ns));
        let mut keep = Vec::with_capacity(self.pods.len());
        for mut p in std::mem::take(&mut self.pods) {
            let owners = match &p.owner {
                Owner::Deployment(_) => &deployments,
                Owner::StatefulSet(_) => &statefulsets,
                Owner::Job(_) => &jobs,
            };
            let owner_exists = owners.get(p.owner.name()) == Some(&p.owner_uid);
            let terminating = p.labels.contains_key("simcluster/terminating");
            if owner_exists && !terminating {
                keep.push(p);
                continue;
            }
            if let Some(hook) = p.post_start.take() {
                hook.abort();
            }
            if let Some(mut proc) = p.proc.take() {
                proc.stop(Duration::from_secs(10)).await;
            }
            if owner_exists && matches!(p.owner, Owner::Job(_)) {
                // A finished Job pod stays (Completed / Error) for the Job's record.
                p.labels.remove("simcluster/terminating");
                keep.push(p);
                continue;
            }
            self.events.push(format!("deleted pod {}", p.name));
            self.delete_pod_object(&p.name).await;
        }
        self.pods = keep;
    }

    async fn delete_pod_object(&self, name: &str) {
        let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(self.fake.client(), &self.ns);
        let _ = api.delete(name, &Default::default()).await;
    }

    async fn run_pods(&mut self) {
        let now = Instant::now();
        for i in 0..self.pods.len() {
            // Exited?
            let exited = self.pods[i].proc.as_mut().and_then(|p| p.exited());
            if let Some(code) = exited {
                let p = &mut self.pods[i];
                p.proc = None;
                if let Some(hook) = p.post_start.take() {
                    hook.abort();
                }
                p.ready = false;
                p.last_exit = Some(code);
                let never = p.spec.restart_policy.as_deref() == Some("Never")
                    || matches!(p.owner, Owner::Job(_));
                if never {
                    p.finished = true;
                } else {
                    p.restarts += 1;
                    let delay =
                        (CRASH_BACKOFF * 2u32.pow(p.restarts.min(6))).min(CRASH_BACKOFF_MAX);
                    p.backoff_until = Some(now + delay);
                    p.waiting = Some((
                        "CrashLoopBackOff".into(),
                        format!(
                            "back-off restarting failed container (exit code {code}): {}",
                            process::tail(&p.log(), 2)
                        ),
                    ));
                }
            }
            let p = &self.pods[i];
            let startable =
                p.proc.is_none() && !p.finished && p.backoff_until.is_none_or(|t| now >= t);
            if !startable {
                continue;
            }
            match self.start(i).await {
                Ok((running, hook)) => {
                    let p = &mut self.pods[i];
                    p.proc = Some(running);
                    p.post_start = hook;
                    p.started = Some(Instant::now());
                    p.waiting = None;
                    p.probe_ok = 0;
                    p.probe_fail = 0;
                    p.live_fail = 0;
                    p.next_probe = Instant::now();
                }
                Err((reason, message)) => {
                    let p = &mut self.pods[i];
                    p.waiting = Some((reason, message));
                    p.backoff_until = Some(now + CRASH_BACKOFF_MAX);
                }
            }
        }
    }

    fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let s = self
            .fake
            .get(&format!("/api/v1/namespaces/{}/secrets/{name}", self.ns))?;
        let mut out = BTreeMap::new();
        for (k, v) in s["data"].as_object().into_iter().flatten() {
            out.insert(k.clone(), b64(v.as_str().unwrap_or_default()));
        }
        for (k, v) in s["stringData"].as_object().into_iter().flatten() {
            out.insert(
                k.clone(),
                v.as_str().unwrap_or_default().as_bytes().to_vec(),
            );
        }
        Some(out)
    }

    fn config_map(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let c = self
            .fake
            .get(&format!("/api/v1/namespaces/{}/configmaps/{name}", self.ns))?;
        let mut out = BTreeMap::new();
        for (k, v) in c["data"].as_object().into_iter().flatten() {
            out.insert(
                k.clone(),
                v.as_str().unwrap_or_default().as_bytes().to_vec(),
            );
        }
        Some(out)
    }

    /// The container's environment as the kubelet builds it: `envFrom`, then `env` in order with
    /// `$(VAR)` references to earlier variables expanded.
    fn resolve_env(&self, pod: &Pod, c: &Container) -> Result<Vec<(String, String)>, String> {
        let mut env: Vec<(String, String)> = Vec::new();
        let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
            env.retain(|(n, _)| *n != k);
            env.push((k, v));
        };
        for from in c.env_from.iter().flatten() {
            let prefix = from.prefix.clone().unwrap_or_default();
            let (data, optional, what) = if let Some(r) = &from.secret_ref {
                (
                    self.secret(&r.name),
                    r.optional.unwrap_or(false),
                    format!("secret {}", r.name),
                )
            } else if let Some(r) = &from.config_map_ref {
                (
                    self.config_map(&r.name),
                    r.optional.unwrap_or(false),
                    format!("configmap {}", r.name),
                )
            } else {
                continue;
            };
            match data {
                Some(data) => {
                    for (k, v) in data {
                        set(
                            &mut env,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v).into(),
                        );
                    }
                }
                None if optional => {}
                None => return Err(format!("{what} not found")),
            }
        }
        for e in c.env.iter().flatten() {
            if let Some(v) = self.env_value(pod, c, e, &env)? {
                set(&mut env, e.name.clone(), v);
            }
        }
        Ok(env)
    }

    fn env_value(
        &self,
        pod: &Pod,
        c: &Container,
        e: &EnvVar,
        earlier: &[(String, String)],
    ) -> Result<Option<String>, String> {
        if let Some(v) = &e.value {
            return Ok(Some(expand(v, earlier)));
        }
        let Some(from) = &e.value_from else {
            return Ok(Some(String::new()));
        };
        if let Some(r) = &from.secret_key_ref {
            let optional = r.optional.unwrap_or(false);
            return match self.secret(&r.name).and_then(|s| s.get(&r.key).cloned()) {
                Some(v) => Ok(Some(String::from_utf8_lossy(&v).into())),
                None if optional => Ok(None),
                None => Err(format!(
                    "couldn't find key {} in Secret {}/{}",
                    r.key, self.ns, r.name
                )),
            };
        }
        if let Some(r) = &from.config_map_key_ref {
            let optional = r.optional.unwrap_or(false);
            return match self
                .config_map(&r.name)
                .and_then(|s| s.get(&r.key).cloned())
            {
                Some(v) => Ok(Some(String::from_utf8_lossy(&v).into())),
                None if optional => Ok(None),
                None => Err(format!(
                    "couldn't find key {} in ConfigMap {}/{}",
                    r.key, self.ns, r.name
                )),
            };
        }
        if let Some(f) = &from.field_ref {
            return Ok(Some(match f.field_path.as_str() {
                "metadata.name" => pod.name.clone(),
                "metadata.namespace" => self.ns.clone(),
                "status.podIP" | "status.podIPs" => pod.ip.to_string(),
                "status.hostIP" => "127.0.0.1".into(),
                "spec.nodeName" => "simcluster-node".into(),
                "spec.serviceAccountName" => pod
                    .spec
                    .service_account_name
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                p if p.starts_with("metadata.labels['") => {
                    let key = p
                        .trim_start_matches("metadata.labels['")
                        .trim_end_matches("']");
                    pod.labels.get(key).cloned().unwrap_or_default()
                }
                other => return Err(format!("unsupported fieldRef {other}")),
            }));
        }
        if let Some(r) = &from.resource_field_ref {
            let res = c.resources.clone().unwrap_or_default();
            let (kind, name) = r.resource.split_once('.').unwrap_or(("limits", "cpu"));
            let map = if kind == "limits" {
                res.limits
            } else {
                res.requests
            };
            let q = map.and_then(|m| m.get(name).map(|q| q.0.clone()));
            return Ok(Some(match (name, q) {
                ("memory", Some(q)) => memory_bytes(&q).to_string(),
                ("cpu", Some(q)) => {
                    let milli = if let Some(m) = q.strip_suffix('m') {
                        m.parse::<f64>().unwrap_or(1000.0)
                    } else {
                        q.parse::<f64>().unwrap_or(1.0) * 1000.0
                    };
                    ((milli / 1000.0).ceil() as u64).max(1).to_string()
                }
                // No limit: the node's capacity.
                ("cpu", None) => std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
                    .to_string(),
                (_, None) => "0".into(),
                (_, Some(q)) => q,
            }));
        }
        Ok(Some(String::new()))
    }

    /// Materialises the pod's volumes under its folder, with the rendered modes and the
    /// ownership a kubelet gives them (root, group `fsGroup` when set, group-readable then).
    fn volumes(&self, pod: &Pod) -> Result<HashMap<String, PathBuf>, String> {
        let fs_group = pod
            .spec
            .security_context
            .as_ref()
            .and_then(|s| s.fs_group)
            .map(|g| g as u32);
        let mut out = HashMap::new();
        for v in pod.spec.volumes.iter().flatten() {
            let dir = pod.dir.join("volumes").join(&v.name);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            self.fill_volume(pod, v, &dir, fs_group)?;
            out.insert(v.name.clone(), dir);
        }
        Ok(out)
    }

    fn fill_volume(
        &self,
        pod: &Pod,
        v: &Volume,
        dir: &Path,
        fs_group: Option<u32>,
    ) -> Result<(), String> {
        let write = |path: &Path, data: &[u8], mode: i32| -> Result<(), String> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(path, data).map_err(|e| e.to_string())?;
            let mut mode = mode as u32 & 0o7777;
            if let Some(g) = fs_group {
                std::os::unix::fs::chown(path, Some(0), Some(g)).map_err(|e| e.to_string())?;
                mode |= 0o440;
            } else {
                std::os::unix::fs::chown(path, Some(0), Some(0)).map_err(|e| e.to_string())?;
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| e.to_string())
        };
        let project = |data: BTreeMap<String, Vec<u8>>,
                       items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
                       default_mode: Option<i32>|
         -> Result<(), String> {
            let default_mode = default_mode.unwrap_or(0o644);
            match items {
                Some(items) => {
                    for it in items {
                        let value = data
                            .get(&it.key)
                            .ok_or_else(|| format!("key {} not found", it.key))?;
                        write(&dir.join(&it.path), value, it.mode.unwrap_or(default_mode))?;
                    }
                }
                None => {
                    for (k, value) in &data {
                        write(&dir.join(k), value, default_mode)?;
                    }
                }
            }
            Ok(())
        };
        if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            match self.secret(&name) {
                Some(data) => project(data, s.items.as_ref(), s.default_mode)?,
                None if s.optional.unwrap_or(false) => {}
                None => return Err(format!("secret \"{name}\" not found")),
            }
        } else if let Some(c) = &v.config_map {
            let name = c.name.clone();
            match self.config_map(&name) {
                Some(data) => project(data, c.items.as_ref(), c.default_mode)?,
                None if c.optional.unwrap_or(false) => {}
                None => return Err(format!("configmap \"{name}\" not found")),
            }
        } else if v.empty_dir.is_some() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777))
                .map_err(|e| e.to_string())?;
        } else if let Some(pvc) = &v.persistent_volume_claim {
            // A claim's data outlives its pods.
            let data = self.work.join("pvc").join(&pvc.claim_name);
            std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        } else {
            return Err(format!(
                "volume {}: kind not supported by the simulation",
                pod.name
            ));
        }
        if let Some(g) = fs_group {
            std::os::unix::fs::chown(dir, Some(0), Some(g)).map_err(|e| e.to_string())?;
            let mode = std::fs::metadata(dir)
                .map_err(|e| e.to_string())?
                .permissions()
                .mode();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o2070))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// A datastore pod's init containers (`postgres:*`) or postStart hook, resolved like a
    /// container's; only the datastores' own images can run them here.
    fn datastore_steps(
        &self,
        pod: &Pod,
        c: &Container,
    ) -> Result<
        (
            Vec<crate::datastores::Step>,
            Option<crate::datastores::Step>,
        ),
        String,
    > {
        let mut init = Vec::new();
        for ic in pod.spec.init_containers.iter().flatten() {
            let same = ic.image == c.image;
            if !same {
                return Err(format!(
                    "init container {}: image {:?} is not available in the simulated cluster",
                    ic.name, ic.image
                ));
            }
            let mut command: Vec<String> = ic.command.clone().unwrap_or_default();
            command.extend(ic.args.iter().flatten().cloned());
            init.push(crate::datastores::Step {
                name: ic.name.clone(),
                command,
                env: self.resolve_env(pod, ic)?,
            });
        }
        let hook = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
            .map(|h| {
                let command = h
                    .exec
                    .as_ref()
                    .and_then(|e| e.command.clone())
                    .ok_or_else(|| "only exec postStart hooks are simulated".to_string())?;
                Ok::<_, String>(crate::datastores::Step {
                    name: format!("postStart hook of {}", c.name),
                    command,
                    env: self.resolve_env(pod, c)?,
                })
            })
            .transpose()?;
        Ok((init, hook))
    }

    /// Starts pod `i`'s first container, or says why it cannot (a waiting reason and message).
    async fn start(
        &self,
        i: usize,
    ) -> Result<(Running, Option<crate::datastores::Hook>), (String, String)> {
        let pod = &self.pods[i];
        let Some(c) = pod.container() else {
            return Err(("CreateContainerConfigError".into(), "no container".into()));
        };
        let image = self.images.resolve(c.image.as_deref().unwrap_or_default());
        let config_error = |m: String| ("CreateContainerConfigError".to_string(), m);
        let env = self.resolve_env(pod, c).map_err(config_error)?;
        match image {
            Image::Missing(m) => Err(("ErrImagePull".into(), m)),
            Image::Postgres => {
                let (init, _) = self.datastore_steps(pod, c).map_err(config_error)?;
                crate::datastores::postgres(pod.ip, &pod.dir, &self.work, &env, init, &pod.log())
                    .await
                    .map(|r| (r, None))
                    .map_err(|e| ("RunContainerError".into(), format!("{e:#}")))
            }
            Image::RabbitMq => {
                let (_, hook) = self.datastore_steps(pod, c).map_err(config_error)?;
                crate::datastores::rabbitmq(pod.ip, &pod.dir, &self.work, &env, hook, &pod.log())
                    .await
                    .map_err(|e| ("RunContainerError".into(), format!("{e:#}")))
            }
            Image::Binary(binary) => {
                let volumes = self.volumes(pod).map_err(config_error)?;
                let (uid, gid, groups) = identity(&pod.spec, c);
                if uid == 0 && run_as_non_root(&pod.spec, c) {
                    return Err(config_error(
                        "container has runAsNonRoot and image will run as root".into(),
                    ));
                }
                let mut mounts = Vec::new();
                let mut tmp = None;
                for m in c.volume_mounts.iter().flatten() {
                    let Some(src) = volumes.get(&m.name) else {
                        return Err(config_error(format!("volume {} not found", m.name)));
                    };
                    let mount = Mount {
                        source: match &m.sub_path {
                            Some(sub) if !sub.is_empty() => src.join(sub),
                            _ => src.clone(),
                        },
                        target: PathBuf::from(&m.mount_path),
                        read_only: m.read_only.unwrap_or(false),
                    };
                    // /tmp last: binding over it first would hide later sources under it.
                    if m.mount_path == "/tmp" {
                        tmp = Some(mount);
                    } else {
                        mounts.push(mount);
                    }
                }
                mounts.extend(tmp);
                let mut env = env;
                bind_to_pod_ip(&mut env, pod.ip, c);
                env.push(("HOSTNAME".into(), pod.name.clone()));
                if !env.iter().any(|(k, _)| k == "PATH") {
                    env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
                }
                let program = match c.command.as_ref().and_then(|c| c.first()) {
                    None => binary,
                    Some(p) if p == "/usr/local/bin/service" => binary,
                    Some(p) => PathBuf::from(p),
                };
                let mut args: Vec<String> = c.command.iter().flatten().skip(1).cloned().collect();
                args.extend(c.args.iter().flatten().map(|a| expand(a, &env)));
                Launch {
                    program,
                    args,
                    env,
                    mounts,
                    uid,
                    gid,
                    groups,
                    log: pod.log(),
                    cwd: PathBuf::from("/"),
                    stdin: None,
                }
                .spawn()
                .map(|r| (r, None))
                .map_err(|e| ("RunContainerError".into(), format!("{e:#}")))
            }
        }
    }

    async fn probe(&mut self) {
        let now = Instant::now();
        // A postStart hook that ended: a failure kills the container (it restarts with back-off).
        for p in self.pods.iter_mut() {
            if !p.post_start.as_ref().is_some_and(|h| h.is_finished()) {
                continue;
            }
            let Some(hook) = p.post_start.take() else {
                continue;
            };
            let failed = match hook.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{e:#}")),
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = failed {
                self.events
                    .push(format!("pod {}: FailedPostStartHook: {why}", p.name));
                if let Some(proc) = p.proc.as_mut() {
                    proc.stop(Duration::from_secs(10)).await;
                }
            }
        }
        let mut checks = Vec::new();
        for (i, p) in self.pods.iter().enumerate() {
            // Probes start once the postStart hook has finished, as the kubelet's do.
            if p.proc.is_none() || p.post_start.is_some() || now < p.next_probe {
                continue;
            }
            let Some(c) = p.container() else { continue };
            checks.push((i, readiness_check(p, c), liveness_check(p, c)));
        }
        let results =
            futures_util::future::join_all(checks.into_iter().map(|(i, ready, live)| async move {
                let r = match &ready {
                    Some(check) => check.run().await,
                    None => true,
                };
                let l = match &live {
                    Some(check) => check.run().await,
                    None => true,
                };
                (i, r, l, ready, live)
            }))
            .await;
        for (i, r, l, ready, live) in results {
            let p = &mut self.pods[i];
            let period = ready
                .as_ref()
                .map(|c| c.period)
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            p.next_probe = now + period;
            if r {
                p.probe_ok += 1;
                p.probe_fail = 0;
                if p.probe_ok >= ready.as_ref().map(|c| c.success).unwrap_or(1) {
                    p.ready = true;
                }
            } else {
                p.probe_fail += 1;
                p.probe_ok = 0;
                if p.probe_fail >= ready.as_ref().map(|c| c.failure).unwrap_or(3) {
                    p.ready = false;
                }
            }
            let grace = live
                .as_ref()
                .map(|c| c.initial + c.period * c.failure as u32);
            if !l
                && p.started
                    .is_some_and(|s| grace.is_some_and(|g| s.elapsed() > g))
            {
                p.live_fail += 1;
                if p.live_fail >= live.as_ref().map(|c| c.failure).unwrap_or(3)
                    && let Some(proc) = p.proc.as_mut()
                {
                    // Liveness failed: the kubelet kills the container; it restarts with back-off.
                    proc.stop(Duration::from_secs(5)).await;
                }
            } else if l {
                p.live_fail = 0;
            }
        }
    }

    fn update_endpoints(&mut self) {
        for svc in self.services.values() {
            for (_, target, endpoints) in &svc.ports {
                let mut addrs = Vec::new();
                for p in self
                    .pods
                    .iter()
                    .filter(|p| p.ready && !p.finished && matches(&svc.selector, &p.labels))
                {
                    let port = match target {
                        Value::Number(n) => n.as_u64().map(|n| n as u16),
                        Value::String(name) => p.container().and_then(|c| {
                            c.ports.iter().flatten().find_map(|cp| {
                                (cp.name.as_deref() == Some(name))
                                    .then_some(cp.container_port as u16)
                            })
                        }),
                        _ => None,
                    };
                    if let Some(port) = port {
                        addrs.push(SocketAddr::from((p.ip, port)));
                    }
                }
                endpoints.set(addrs);
            }
        }
    }

    async fn write_status(&mut self) {
        // Deployments.
        for (name, d) in self.list(&apps(&self.ns, "deployments")) {
            let hash = hash_of(&d["spec"]["template"]);
            let owner = Owner::Deployment(name.clone());
            let mine: Vec<&Pod> = self
                .pods
                .iter()
                .filter(|p| p.owner == owner && !p.finished)
                .collect();
            let updated = mine.iter().filter(|p| p.template_hash == hash).count();
            let ready = mine.iter().filter(|p| p.ready).count();
            let updated_ready = mine
                .iter()
                .filter(|p| p.ready && p.template_hash == hash)
                .count();
            let desired = d["spec"]["replicas"].as_i64().unwrap_or(1);
            let complete = updated_ready as i64 >= desired && mine.len() as i64 == desired;
            let status = json!({
                "observedGeneration": d["metadata"]["generation"],
                "replicas": mine.len(),
                "updatedReplicas": updated,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "unavailableReplicas": (desired - ready as i64).max(0),
                "conditions": [
                    {"type": "Available", "status": if ready as i64 >= desired { "True" } else { "False" }},
                    {"type": "Progressing", "status": "True",
                     "reason": if complete { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" }},
                ],
            });
            if d["status"] != status {
                self.fake
                    .edit(&format!("{}/{name}", apps(&self.ns, "deployments")), |d| {
                        d["status"] = status
                    });
            }
        }
        for (name, s) in self.list(&apps(&self.ns, "statefulsets")) {
            let owner = Owner::StatefulSet(name.clone());
            let mine: Vec<&Pod> = self
                .pods
                .iter()
                .filter(|p| p.owner == owner && !p.finished)
                .collect();
            let ready = mine.iter().filter(|p| p.ready).count();
            let status = json!({"observedGeneration": s["metadata"]["generation"],
                "replicas": mine.len(), "readyReplicas": ready, "currentReplicas": mine.len(),
                "updatedReplicas": mine.len(), "availableReplicas": ready});
            if s["status"] != status {
                self.fake
                    .edit(&format!("{}/{name}", apps(&self.ns, "statefulsets")), |s| {
                        s["status"] = status
                    });
            }
        }
        // Pods, as kubectl would show them.
        for i in 0..self.pods.len() {
            let p = &self.pods[i];
            let obj = pod_object(&self.ns, p);
            if obj != p.written {
                self.fake.put(
                    &format!("/api/v1/namespaces/{}/pods/{}", self.ns, p.name),
                    obj.clone(),
                );
                self.pods[i].written = obj;
            }
        }
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

/// The Pod object for the API, with container state.
fn pod_object(ns: &str, p: &Pod) -> Value {
    let c = p.container();
    let name = c.map(|c| c.name.clone()).unwrap_or_default();
    let state = if let Some((reason, message)) = &p.waiting {
        json!({"waiting": {"reason": reason, "message": message}})
    } else if p.proc.is_some() {
        json!({"running": {}})
    } else if let Some(code) = p.last_exit {
        json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }}})
    } else {
        json!({"waiting": {"reason": "ContainerCreating"}})
    };
    let phase = match (&p.owner, p.finished, p.last_exit) {
        (Owner::Job(_), true, Some(0)) => "Succeeded",
        (Owner::Job(_), true, _) => "Failed",
        _ if p.proc.is_some() => "Running",
        _ => "Pending",
    };
    let mut last_state = json!({});
    if let (Some(code), Some(_)) = (p.last_exit, p.waiting.as_ref()) {
        last_state = json!({"terminated": {"exitCode": code, "reason": "Error"}});
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": p.name,
            "namespace": ns,
            "labels": p.labels,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": p.owner.kind(), "name": p.owner.name(), "uid": "sim"}],
        },
        "spec": serde_json::to_value(&p.spec).unwrap_or(Value::Null),
        "status": {
            "phase": phase,
            "podIP": p.ip.to_string(),
            "conditions": [{"type": "Ready", "status": if p.ready { "True" } else { "False" }}],
            "containerStatuses": [{
                "name": name,
                "image": c.and_then(|c| c.image.clone()).unwrap_or_default(),
                "ready": p.ready,
                "restartCount": p.restarts,
                "state": state,
                "lastState": last_state,
            }],
        },
    })
}

/// `$(VAR)` references to earlier variables, as Kubernetes expands them (`$$` escapes).
pub fn expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn memory_bytes(q: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap_or(0) * mult;
        }
    }
    q.parse().unwrap_or(0)
}

/// The user the container runs as: container securityContext, then the pod's, then the image's.
fn identity(spec: &PodSpec, c: &Container) -> (u32, u32, Vec<u32>) {
    let pod = spec.security_context.clone().unwrap_or_default();
    let own: SecurityContext = c.security_context.clone().unwrap_or_default();
    let uid = own
        .run_as_user
        .or(pod.run_as_user)
        .map(|u| u as u32)
        .unwrap_or(IMAGE_UID);
    let gid = own
        .run_as_group
        .or(pod.run_as_group)
        .map(|g| g as u32)
        .unwrap_or(IMAGE_UID);
    let mut groups: Vec<u32> = pod
        .supplemental_groups
        .unwrap_or_default()
        .into_iter()
        .map(|g| g as u32)
        .collect();
    if let Some(g) = pod.fs_group {
        groups.push(g as u32);
    }
    (uid, gid, groups)
}

fn run_as_non_root(spec: &PodSpec, c: &Container) -> bool {
    c.security_context
        .as_ref()
        .and_then(|s| s.run_as_non_root)
        .or(spec
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root))
        .unwrap_or(false)
}

/// Points `BIND_ADDR` at the pod's own address (the one thing the harness sets: every pod shares
/// the cluster's network namespace, where a real pod has its own).
fn bind_to_pod_ip(env: &mut Vec<(String, String)>, ip: Ipv4Addr, c: &Container) {
    let port = c
        .ports
        .iter()
        .flatten()
        .next()
        .map(|p| p.container_port)
        .unwrap_or(8080);
    let value = match env.iter().find(|(k, _)| k == "BIND_ADDR") {
        Some((_, v)) => {
            let port = v.rsplit(':').next().unwrap_or("8080");
            format!("{ip}:{port}")
        }
        None => format!("{ip}:{port}"),
    };
    env.retain(|(k, _)| k != "BIND_ADDR");
    env.push(("BIND_ADDR".into(), value));
}

/// One probe, resolved against a pod.
#[derive(Clone)]
struct Check {
    target: CheckTarget,
    period: Duration,
    initial: Duration,
    failure: i32,
    success: i32,
    timeout: Duration,
}

#[derive(Clone)]
enum CheckTarget {
    Http(String),
    Tcp(SocketAddr),
}

impl Check {
    async fn run(&self) -> bool {
        match &self.target {
            CheckTarget::Http(url) => {
                let client = reqwest::Client::new();
                matches!(
                    tokio::time::timeout(self.timeout, client.get(url).send()).await,
                    Ok(Ok(r)) if (200..400).contains(&r.status().as_u16())
                )
            }
            CheckTarget::Tcp(addr) => matches!(
                tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            ),
        }
    }
}

fn port_of(
    c: &Container,
    port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
) -> Option<u16> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match port {
        IntOrString::Int(n) => Some(*n as u16),
        IntOrString::String(name) => c.ports.iter().flatten().find_map(|p| {
            (p.name.as_deref() == Some(name.as_str())).then_some(p.container_port as u16)
        }),
    }
}

fn check_of(p: &Pod, c: &Container, probe: &Probe) -> Option<Check> {
    let target = if let Some(h) = &probe.http_get {
        let port = port_of(c, &h.port)?;
        CheckTarget::Http(format!(
            "http://{}:{port}{}",
            p.ip,
            h.path.as_deref().unwrap_or("/")
        ))
    } else if let Some(t) = &probe.tcp_socket {
        CheckTarget::Tcp(SocketAddr::from((p.ip, port_of(c, &t.port)?)))
    } else {
        // exec probes (the datastores' pg_isready, rabbitmq-diagnostics) check the server's
        // port instead: the simulation has no container to exec into.
        let port = c.ports.iter().flatten().next()?.container_port as u16;
        CheckTarget::Tcp(SocketAddr::from((p.ip, port)))
    };
    Some(Check {
        target,
        period: Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64),
        initial: Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64),
        failure: probe.failure_threshold.unwrap_or(3).max(1),
        success: probe.success_threshold.unwrap_or(1).max(1),
        timeout: Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64),
    })
}

fn readiness_check(p: &Pod, c: &Container) -> Option<Check> {
    match &c.readiness_probe {
        Some(probe) => check_of(p, c, probe),
        // No readiness probe: ready once started (TCP on the first port when there is one).
        None => {
            let port = c.ports.iter().flatten().next()?.container_port as u16;
            Some(Check {
                target: CheckTarget::Tcp(SocketAddr::from((p.ip, port))),
                period: Duration::from_secs(1),
                initial: Duration::ZERO,
                failure: 1,
                success: 1,
                timeout: Duration::from_secs(1),
            })
        }
    }
}

fn liveness_check(p: &Pod, c: &Container) -> Option<Check> {
    check_of(p, c, c.liveness_probe.as_ref()?)
}
