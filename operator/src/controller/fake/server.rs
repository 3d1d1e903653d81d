//! The fake API server's answers: discovery of the served API groups, LIST (in one namespace or
//! all, with label selectors), GET, server-side apply (field managers, generation, immutable
//! volume claim templates, replicas left to another manager), POST, PUT with resourceVersion
//! conflicts, the status subresource and DELETE; and, when asked, the status the cluster's own
//! controllers would write.

use serde_json::{Value, json};

use super::{State, status};

/// Splits `/apis/g/v/namespaces/ns/plural/name/sub` into (collection, name, subresource).
fn split(path: &str) -> Option<(String, Option<String>, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ns_at = parts.iter().position(|p| *p == "namespaces")?;
    if parts.len() < ns_at + 3 {
        return None;
    }
    let collection = parts[..ns_at + 3].join("/");
    Some((
        format!("/{collection}"),
        parts.get(ns_at + 3).map(|s| s.to_string()),
        parts.get(ns_at + 4).map(|s| s.to_string()),
    ))
}

fn labels_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            v.replace("%2C", ",")
                .replace("%3D", "=")
                .replace("%2F", "/")
                .replace('+', " ")
        })
    })
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// What the Job, Deployment and StatefulSet controllers would eventually write.
fn simulate(obj: &mut Value) {
    let generation = obj["metadata"]["generation"].clone();
    match obj["kind"].as_str() {
        Some("Job") => {
            obj["status"] =
                json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
        }
        Some("Deployment") | Some("StatefulSet") => {
            let n = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            obj["status"] = json!({"replicas": n, "readyReplicas": n, "updatedReplicas": n, "observedGeneration": generation});
        }
        _ => {}
    }
}

impl State {
    /// `GET /apis/<g>/<v>/<plural>` (or `/api/v1/<plural>`): a list across namespaces.
    fn list_all_namespaces(&self, parts: &[&str], query: &str) -> (u16, Value) {
        let Some((plural, base)) = parts.split_last() else {
            return (404, status(404, "NotFound", "unsupported path"));
        };
        let prefix = format!("/{}/namespaces/", base.join("/"));
        let selector = query_param(query, "labelSelector").unwrap_or_default();
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|(k, v)| {
                k.strip_prefix(&prefix).is_some_and(|rest| {
                    let seg: Vec<&str> = rest.split('/').collect();
                    seg.len() == 3 && seg[1] == *plural
                }) && labels_match(v, &selector)
            })
            .map(|(_, v)| v.clone())
            .collect();
        (
            200,
            json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": self.rv.to_string()}, "items": items}),
        )
    }

    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    pub(super) fn route(
        &mut self,
        method: &str,
        path: &str,
        query: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        // Discovery of API groups: /apis/<group>/<version>
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        if method == "GET" && parts.len() == 3 && parts[0] == "apis" {
            let gv = format!("{}/{}", parts[1], parts[2]);
            if !self.served.contains(&gv) {
                return (
                    404,
                    status(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    ),
                );
            }
            let plural = match parts[1] {
                "route.openshift.io" => "routes",
                "postgresql.cnpg.io" => "clusters",
                "rabbitmq.com" => "rabbitmqclusters",
                "monitoring.coreos.com" => "servicemonitors",
                _ => "things",
            };
            return (
                200,
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                "resources": [{"name": plural, "singularName": "", "namespaced": true, "kind": "X", "verbs": ["get", "list"]}]}),
            );
        }
        if method == "GET" && !parts.contains(&"namespaces") {
            return self.list_all_namespaces(&parts, query);
        }
        let Some((collection, name, sub)) = split(path) else {
            return (404, status(404, "NotFound", "unsupported path"));
        };
        let key = |n: &str| format!("{collection}/{n}");
        match (method, name, sub) {
            ("GET", None, _) => {
                let selector = query_param(query, "labelSelector").unwrap_or_default();
                let prefix = format!("{collection}/");
                let items: Vec<Value> = self
                    .objects
                    .iter()
                    .filter(|(k, v)| {
                        k.starts_with(&prefix)
                            && !k[prefix.len()..].contains('/')
                            && labels_match(v, &selector)
                    })
                    .map(|(_, v)| v.clone())
                    .collect();
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": self.rv.to_string()}, "items": items}),
                )
            }
            ("GET", Some(n), _) => match self.objects.get(&key(&n)) {
                Some(v) => (200, v.clone()),
                None => (404, status(404, "NotFound", &format!("{n} not found"))),
            },
            ("PATCH", Some(n), Some(sub)) if sub == "status" => {
                let rv = self.next_rv();
                match self.objects.get_mut(&key(&n)) {
                    Some(obj) => {
                        obj["status"] = body.unwrap_or_default()["status"].clone();
                        obj["metadata"]["resourceVersion"] = rv.into();
                        (200, obj.clone())
                    }
                    None => (404, status(404, "NotFound", &format!("{n} not found"))),
                }
            }
            ("PATCH", Some(n), None) if collection.ends_with("/events") => {
                match self.objects.get(&key(&n)) {
                    Some(v) => (200, v.clone()),
                    None => (404, status(404, "NotFound", "not found")),
                }
            }
            ("PATCH", Some(n), None) => {
                let manager = query_param(query, "fieldManager").unwrap_or_default();
                assert!(
                    manager.starts_with("helpdesk-operator"),
                    "apply without our field manager: {query}"
                );
                let body = body.expect("apply body");
                assert!(
                    body["apiVersion"].is_string() && body["kind"].is_string(),
                    "apply body lacks apiVersion/kind"
                );
                let old = self.objects.get(&key(&n)).cloned();
                // Like the API server: a StatefulSet's volume claim templates are immutable.
                if manager == "helpdesk-operator"
                    && body["kind"] == "StatefulSet"
                    && let Some(o) = &old
                    && o["spec"]["volumeClaimTemplates"] != body["spec"]["volumeClaimTemplates"]
                {
                    return (
                        422,
                        status(
                            422,
                            "Invalid",
                            &format!(
                                "StatefulSet.apps \"{n}\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
                            ),
                        ),
                    );
                }
                let rv = self.next_rv();
                self.uid += 1;
                let mut managers: Vec<Value> = old
                    .as_ref()
                    .and_then(|o| o["metadata"]["managedFields"].as_array().cloned())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|m| m["manager"] != manager.as_str())
                    .collect();
                let mut new = body.clone();
                if manager != "helpdesk-operator" {
                    // Another manager only adds its fields to the live object.
                    let mut merged = old.clone().unwrap_or(Value::Null);
                    merge(&mut merged, &body);
                    new = merged;
                } else if new["kind"] == "Deployment" && new["spec"].get("replicas").is_none() {
                    // Like the API server: a field nobody owns any more is removed, then defaulted.
                    let other_owns = managers
                        .iter()
                        .any(|m| !m["fieldsV1"]["f:spec"]["f:replicas"].is_null());
                    let live = old
                        .as_ref()
                        .map(|o| o["spec"]["replicas"].clone())
                        .unwrap_or(Value::Null);
                    new["spec"]["replicas"] = if other_owns && !live.is_null() {
                        live
                    } else {
                        1.into()
                    };
                }
                let mut fields = json!({"f:spec": {}});
                if body["spec"].get("replicas").is_some() {
                    fields["f:spec"]["f:replicas"] = json!({});
                }
                managers.push(json!({"manager": manager, "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": fields}));
                let (uid, generation, st) = match &old {
                    Some(o) => {
                        let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
                        let g = if o["spec"] != new["spec"] { g + 1 } else { g };
                        (o["metadata"]["uid"].clone(), g, o["status"].clone())
                    }
                    None => (format!("uid-{}", self.uid).into(), 1, Value::Null),
                };
                new["metadata"]["uid"] = uid;
                new["metadata"]["resourceVersion"] = rv.into();
                new["metadata"]["generation"] = generation.into();
                new["metadata"]["managedFields"] = managers.into();
                if self.simulate {
                    simulate(&mut new);
                }
                if !st.is_null() {
                    new["status"] = st;
                }
                self.objects.insert(key(&n), new.clone());
                (if old.is_some() { 200 } else { 201 }, new)
            }
            ("POST", None, _) => {
                let mut new = body.expect("create body");
                let n = new["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if self.objects.contains_key(&key(&n)) {
                    return (409, status(409, "AlreadyExists", "already exists"));
                }
                new["metadata"]["resourceVersion"] = self.next_rv().into();
                self.objects.insert(key(&n), new.clone());
                (201, new)
            }
            ("PUT", Some(n), None) => {
                let mut new = body.expect("replace body");
                let Some(old) = self.objects.get(&key(&n)) else {
                    return (404, status(404, "NotFound", "not found"));
                };
                if old["metadata"]["resourceVersion"] != new["metadata"]["resourceVersion"] {
                    return (409, status(409, "Conflict", "the object has been modified"));
                }
                new["metadata"]["resourceVersion"] = self.next_rv().into();
                self.objects.insert(key(&n), new.clone());
                (200, new)
            }
            ("DELETE", Some(n), None) => match self.objects.remove(&key(&n)) {
                Some(_) => (200, status(200, "", "deleted")),
                None => (404, status(404, "NotFound", "not found")),
            },
            _ => (405, status(405, "MethodNotAllowed", "unsupported")),
        }
    }
}
