//! The platform's contract (`helpdesk-contract`) checked against the built pods: each service
//! container runs a known command, gets every variable the command requires and the URL of every
//! peer it calls, its `_FILE` variables name mounted files, and its Secret volumes are readable.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Container;

use helpdesk_contract::{Command, var};

use super::{containers, pods_of};
use crate::build::Child;
use crate::names::Component;

/// The service an image runs: `<registry>/<service>-service:<version>` → that service.
pub fn service_of_image(image: &str) -> Option<Component> {
    let name = image.rsplit('/').next().unwrap_or(image);
    let name = name.split(['@', ':']).next().unwrap_or(name);
    Component::from_binary(name)
}

/// The command a service container runs (its first argument; none means `serve`).
pub(super) fn command_of(c: &Container) -> Option<Command> {
    match c.args.as_ref().and_then(|a| a.first()) {
        None => Some(Command::Serve),
        Some(arg) => Command::parse(arg),
    }
}

/// What each service's binary needs (the platform's contract, `helpdesk-contract`) against what
/// its pods give it: a Deployment's container meets its service's `serve` requirements and names
/// every peer it calls, a migration Job's container meets `migrate`'s; a `_FILE` variable names a
/// file that a volume mounts; and a pod that mounts a Secret readable by owner and group only
/// runs with an `fsGroup`, unless the platform assigns users and groups (`platform_assigns_ids`:
/// OpenShift's SCC).
pub fn check_contract(children: &[Child], platform_assigns_ids: bool) -> Vec<String> {
    let mut errs = Vec::new();
    for p in pods_of(children) {
        let spec = p.template.spec.clone().unwrap_or_default();
        let volumes = spec.volumes.clone().unwrap_or_default();
        for c in containers(&p.template) {
            let Some(service) = c.image.as_deref().and_then(service_of_image) else {
                continue;
            };
            let Some(command) = command_of(&c) else {
                errs.push(format!(
                    "{}: {} runs an unknown command {:?}",
                    p.owner,
                    service.binary(),
                    c.args
                ));
                continue;
            };
            let env: BTreeMap<&str, Option<&str>> = c
                .env
                .iter()
                .flatten()
                .map(|e| (e.name.as_str(), e.value.as_deref()))
                .collect();
            for missing in service.missing(command, |v| env.contains_key(v)) {
                errs.push(format!(
                    "{}: {} {command} requires {missing}, which the container does not get",
                    p.owner,
                    service.binary()
                ));
            }
            if command == Command::Serve {
                for peer in service.peers() {
                    if !env.contains_key(peer.url_var()) {
                        errs.push(format!(
                            "{}: {} calls {} but gets no {}",
                            p.owner,
                            service.binary(),
                            peer.binary(),
                            peer.url_var()
                        ));
                    }
                }
            }
            for (name, value) in &env {
                let (true, Some(path)) = (name.ends_with(var::FILE_SUFFIX), value) else {
                    continue;
                };
                if !mounts_file(&c, &volumes, path) {
                    errs.push(format!(
                        "{}: {name}={path} is not a file any volume of the container mounts",
                        p.owner
                    ));
                }
            }
            if platform_assigns_ids {
                continue;
            }
            let fs_group = spec.security_context.as_ref().and_then(|s| s.fs_group);
            for m in c.volume_mounts.iter().flatten() {
                let Some(secret) = volumes
                    .iter()
                    .find(|v| v.name == m.name)
                    .and_then(|v| v.secret.as_ref())
                else {
                    continue;
                };
                let mode = secret.default_mode.unwrap_or(0o644);
                let modes = std::iter::once(mode).chain(
                    secret
                        .items
                        .iter()
                        .flatten()
                        .map(|i| i.mode.unwrap_or(mode)),
                );
                for mode in modes {
                    let readable = mode & 0o004 != 0 || (fs_group.is_some() && mode & 0o040 != 0);
                    if !readable {
                        errs.push(format!(
                            "{}: Secret volume {} (mode {mode:#o}) is not readable by the \
                             container's user: set fsGroup",
                            p.owner, m.name
                        ));
                        break;
                    }
                }
            }
        }
    }
    errs
}

/// Whether `path` is a file one of the container's volumes provides.
fn mounts_file(c: &Container, volumes: &[k8s_openapi::api::core::v1::Volume], path: &str) -> bool {
    c.volume_mounts.iter().flatten().any(|m| {
        let Some(rel) = path
            .strip_prefix(m.mount_path.trim_end_matches('/'))
            .and_then(|r| r.strip_prefix('/'))
        else {
            return false;
        };
        let Some(v) = volumes.iter().find(|v| v.name == m.name) else {
            return false;
        };
        let items = match (&v.secret, &v.config_map) {
            (Some(s), _) => &s.items,
            (_, Some(cm)) => &cm.items,
            _ => return false,
        };
        match items {
            // Every key of the Secret or ConfigMap is a file.
            None => !rel.contains('/'),
            Some(items) => items.iter().any(|i| i.path == rel),
        }
    })
}
