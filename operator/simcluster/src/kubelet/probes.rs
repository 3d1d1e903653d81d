//! Readiness and liveness probes (HTTP, TCP; exec probes check the server's port), the Service
//! endpoints that follow readiness, and what is written back to the API: Deployment and StatefulSet
//! status and the Pod objects with their container states.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use serde_json::{Value, json};

use super::{Kubelet, Owner, Pod, apps, hash_of, matches};

impl Kubelet {
    pub(super) async fn probe(&mut self) {
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

    pub(super) fn update_endpoints(&mut self) {
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

    pub(super) async fn write_status(&mut self) {
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
            let hash = hash_of(&s["spec"]["template"]);
            let owner = Owner::StatefulSet(name.clone());
            let mine: Vec<&Pod> = self
                .pods
                .iter()
                .filter(|p| p.owner == owner && !p.finished)
                .collect();
            let ready = mine.iter().filter(|p| p.ready).count();
            // As the StatefulSet controller counts them: only pods of the current template are
            // updated, so a pod that still runs the previous one (a datastore about to restart
            // for new credentials) is not reported as rolled out.
            let updated = mine.iter().filter(|p| p.template_hash == hash).count();
            let status = json!({"observedGeneration": s["metadata"]["generation"],
                "replicas": mine.len(), "readyReplicas": ready, "currentReplicas": mine.len(),
                "updatedReplicas": updated, "availableReplicas": ready});
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
