//! Drift (pure): does the live object still hold every field the operator applies?
//!
//! The operator's applied configuration is the desired object itself (server-side apply with one
//! field manager), so a child has drifted when some field of the desired object is missing or
//! different in the live one. Fields only the live object has (defaults filled in by the API
//! server, status, fields of other managers such as the HPA's replicas, annotations added by
//! `kubectl rollout restart`) are not ours and are ignored. Comparing in memory keeps a pass over
//! an unchanged platform free of writes; only a real difference leads to a (re-)apply.

use serde_json::Value;

/// The first field of `desired` that `live` does not hold, as a readable path
/// (`spec.template.spec.containers[ticket].image`), or `None` when nothing drifted.
pub fn first_difference(desired: &Value, live: &Value) -> Option<String> {
    let mut path = Vec::new();
    if covers(desired, live, &mut path) {
        None
    } else {
        Some(render(&path))
    }
}

fn render(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if seg.starts_with('[') || out.is_empty() {
            out.push_str(seg);
        } else {
            out.push('.');
            out.push_str(seg);
        }
    }
    out
}

/// A value the API server drops when serializing (`omitempty`): `false`, `0`, `""`, `[]`, `{}`.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
    }
}

/// Map keys whose string values are resource quantities, which the API server canonicalises
/// (`0.5` → `500m`, `1024Mi` → `1Gi`).
fn is_quantity_context(path: &[String]) -> bool {
    let n = path.len();
    let key = path.last().map(String::as_str);
    let parent = n.checked_sub(2).map(|i| path[i].as_str());
    matches!(parent, Some("requests" | "limits" | "capacity"))
        || matches!(key, Some("sizeLimit" | "storage" | "size"))
}

/// `desired` ⊆ `live`. On a difference, `path` names where it is.
fn covers(desired: &Value, live: &Value, path: &mut Vec<String>) -> bool {
    match (desired, live) {
        (d, Value::Null) => is_zero(d),
        (Value::Null, _) => true,
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| {
            path.push(k.clone());
            let ok = covers(dv, l.get(k).unwrap_or(&Value::Null), path);
            if ok {
                path.pop();
            }
            ok
        }),
        (Value::Array(d), Value::Array(l)) => covers_list(d, l, path),
        (Value::String(d), Value::String(l)) => {
            d == l
                || (is_quantity_context(path)
                    && matches!((quantity(d), quantity(l)), (Some(a), Some(b)) if same(a, b)))
        }
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        (d, l) => d == l,
    }
}

/// The key of a list element, when every desired element is an object with a unique `name`
/// (containers, env, volumes, volume mounts, ports, owner references, ...). Such lists are merged
/// by key on the server and other managers may add elements (an injected sidecar, a variable set
/// by `kubectl set env`): those are not ours. Other lists are compared element by element.
fn keyed(d: &[Value]) -> bool {
    let names: Vec<&str> = d.iter().filter_map(|v| v["name"].as_str()).collect();
    if names.len() != d.len() || names.is_empty() {
        return false;
    }
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.len() == names.len()
}

fn covers_list(d: &[Value], l: &[Value], path: &mut Vec<String>) -> bool {
    if keyed(d) {
        return d.iter().all(|dv| {
            let name = dv["name"].as_str().unwrap_or_default();
            path.push(format!("[{name}]"));
            let ok = match l.iter().find(|lv| lv["name"].as_str() == Some(name)) {
                Some(lv) => covers(dv, lv, path),
                None => false,
            };
            if ok {
                path.pop();
            }
            ok
        });
    }
    if d.len() != l.len() {
        path.push(format!("[{} items, live {}]", d.len(), l.len()));
        return false;
    }
    d.iter().zip(l).enumerate().all(|(i, (dv, lv))| {
        path.push(format!("[{i}]"));
        let ok = covers(dv, lv, path);
        if ok {
            path.pop();
        }
        ok
    })
}

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= f64::EPSILON * 16.0 * a.abs().max(b.abs()).max(1.0)
}

/// The value of a Kubernetes quantity (`100m`, `1.5Gi`, `2e3`), or `None` when it is not one.
pub use crate::rules::quantity;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_status_and_other_managers_fields_are_not_drift() {
        let desired = json!({"spec": {"template": {"spec": {
            "containers": [{"name": "a", "image": "x:1", "env": [{"name": "A", "value": "1"}],
                            "volumeMounts": [{"name": "v", "mountPath": "/v", "readOnly": false}]}],
            "automountServiceAccountToken": false}}}});
        let live = json!({"spec": {"replicas": 4, "template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}},
            "spec": {"dnsPolicy": "ClusterFirst", "automountServiceAccountToken": false,
            "containers": [
                {"name": "sidecar", "image": "istio"},
                {"name": "a", "image": "x:1", "terminationMessagePath": "/dev/termination-log",
                 "env": [{"name": "EXTRA", "value": "x"}, {"name": "A", "value": "1"}],
                 "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]}}},
            "status": {"readyReplicas": 4}});
        assert_eq!(first_difference(&desired, &live), None);
    }

    #[test]
    fn edits_of_our_fields_are_drift_with_their_path() {
        let desired = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [
            {"name": "ticket", "image": "x:1", "env": [{"name": "A", "value": "1"}]}]}}}});
        let mut live = desired.clone();
        live["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1".into();
        assert_eq!(
            first_difference(&desired, &live).as_deref(),
            Some("spec.template.spec.containers[ticket].image")
        );
        let mut live = desired.clone();
        live["spec"]["replicas"] = 7.into();
        assert_eq!(
            first_difference(&desired, &live).as_deref(),
            Some("spec.replicas")
        );
        let mut live = desired.clone();
        live["spec"]["template"]["spec"]["containers"][0]["env"] = json!([]);
        assert_eq!(
            first_difference(&desired, &live).as_deref(),
            Some("spec.template.spec.containers[ticket].env[A]")
        );
    }

    #[test]
    fn atomic_lists_must_match_exactly() {
        let desired = json!({"spec": {"ports": [{"port": 53, "protocol": "UDP"}], "ingress": []}});
        let live = json!({"spec": {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 1}]}});
        assert!(first_difference(&desired, &live).is_some());
        // An empty list is dropped by the API server.
        let live = json!({"spec": {"ports": [{"port": 53, "protocol": "UDP"}]}});
        assert_eq!(first_difference(&desired, &live), None);
        let live = json!({"spec": {"ports": [{"port": 53, "protocol": "UDP"}], "ingress": [{}]}});
        assert!(first_difference(&desired, &live).is_some());
    }

    #[test]
    fn quantities_compare_by_value() {
        let desired = json!({"resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}}});
        let live = json!({"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}});
        assert_eq!(first_difference(&desired, &live), None);
        let live = json!({"resources": {"requests": {"cpu": "500m", "memory": "2Gi"}}});
        assert!(first_difference(&desired, &live).is_some());
        // Elsewhere strings are strings.
        let desired = json!({"env": [{"name": "N", "value": "1000"}]});
        let live = json!({"env": [{"name": "N", "value": "1k"}]});
        assert!(first_difference(&desired, &live).is_some());
        assert_eq!(quantity("10Gi"), Some(10.0 * 1024f64.powi(3)));
        assert_eq!(quantity("2e3"), Some(2000.0));
        assert_eq!(quantity("lots"), None);
    }
}
