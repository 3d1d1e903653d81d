//! A container's environment as the kubelet builds it (`envFrom`, `env` with `valueFrom` and
//! `$(VAR)` expansion), and the Secret and ConfigMap data it and the volumes read.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar};

use super::{Kubelet, Pod, b64};

impl Kubelet {
    pub(super) fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
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

    pub(super) fn config_map(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
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
    pub(super) fn resolve_env(
        &self,
        pod: &Pod,
        c: &Container,
    ) -> Result<Vec<(String, String)>, String> {
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
