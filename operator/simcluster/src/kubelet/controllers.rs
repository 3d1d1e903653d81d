//! The built-in controllers of the simulated cluster: Services (a proxy per port) and the Ingress,
//! the HPA's replica bounds, StatefulSets, Jobs (retries up to `backoffLimit`) and Deployments
//! (rolling update with the rendered surge) creating and deleting pods, and the reaping of pods
//! whose owner is gone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Value, json};

use super::{CRASH_BACKOFF, Kubelet, Owner, Pod, ServiceRt, apps, hash_of, labels_of};
use crate::network::{self, Endpoints, Route, Spread};
use crate::process;

impl Kubelet {
    pub(super) async fn sync_services(&mut self) -> anyhow::Result<()> {
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

    pub(super) async fn sync_ingress(&mut self) -> anyhow::Result<()> {
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
    pub(super) fn sync_hpas(&mut self) {
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

    pub(super) fn sync_statefulsets(&mut self) {
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

    pub(super) fn sync_jobs(&mut self) {
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

    pub(super) fn sync_deployments(&mut self) {
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
    pub(super) async fn reap_orphans(&mut self) {
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
}
