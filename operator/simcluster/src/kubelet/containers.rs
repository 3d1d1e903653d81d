//! Running a pod's container as the kubelet would: restarts with back-off, the pod's volumes
//! materialised with their modes and ownership, the datastores' init containers and postStart hook,
//! and the process started with the resolved env, mounts and user.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use k8s_openapi::api::core::v1::{Container, PodSpec, SecurityContext, Volume};

use super::{CRASH_BACKOFF, CRASH_BACKOFF_MAX, IMAGE_UID, Image, Kubelet, Owner, Pod, expand};
use crate::process::{self, Launch, Mount, Running};

impl Kubelet {
    pub(super) async fn run_pods(&mut self) {
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
