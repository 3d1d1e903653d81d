//! Unknown and misspelled fields (`servces:`, `tiket:`), found the way `kubectl --validate=strict`
//! finds them: against the CRD's own schema, which is generated from the Rust types. Every level
//! is checked, embedded core types included (`env[0].valueFrom.secretKeyRef.nmae`); only the
//! parts the schema leaves free-form (`affinity`, `tolerations`, `serviceMonitor`) are not.
//!
//! The API server prunes unknown fields with our structural schema, so in a cluster the operator
//! sees them only when the CRD in place preserves them (an older or hand-made CRD, one newer than
//! the operator); `render` reads files that no API server has seen. Either way a field the
//! operator does not know is something an SRE asked for that would silently not happen, so it is
//! an error with its path. Fields are only ever added to `v1alpha1`; removing one would need a
//! new API version with conversion, so objects written for older versions stay valid.

use std::sync::OnceLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::validate::FieldError;

/// The `spec` schema of the generated CRD (computed once).
fn spec_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = serde_json::to_value(crate::crd::crd()).expect("CRD serializes");
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
    })
}

/// Every field of a `spec` (as received) that the schema does not define, with its path.
pub fn unknown_spec_fields(spec: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    walk("spec", spec, spec_schema(), &mut out);
    out
}

/// Unknown top-level and `metadata` fields of a whole resource (what `render` reads from a file;
/// `spec` is checked when it is deserialized, `status` is the operator's own).
pub fn unknown_resource_fields(doc: &Value) -> Vec<FieldError> {
    const TOP: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];
    let mut out = Vec::new();
    let Some(map) = doc.as_object() else {
        return vec![FieldError::new("", "the document is not an object")];
    };
    for key in map.keys().filter(|k| !TOP.contains(&k.as_str())) {
        out.push(unknown("", key, TOP.iter().copied()));
    }
    if let Some(meta) = map.get("metadata").and_then(Value::as_object) {
        let known = metadata_fields();
        for key in meta.keys().filter(|k| !known.contains(k)) {
            out.push(unknown("metadata", key, known.iter().map(String::as_str)));
        }
    }
    out
}

/// The fields of `ObjectMeta`, from its own schema.
fn metadata_fields() -> &'static Vec<String> {
    static FIELDS: OnceLock<Vec<String>> = OnceLock::new();
    FIELDS.get_or_init(|| {
        let schema = serde_json::to_value(schemars::schema_for!(ObjectMeta)).unwrap_or_default();
        schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    })
}

fn walk(path: &str, value: &Value, schema: &Value, out: &mut Vec<FieldError>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (key, child) in map {
                    match props.get(key) {
                        Some(s) => walk(&format!("{path}.{key}"), child, s, out),
                        None => out.push(unknown(path, key, props.keys().map(String::as_str))),
                    }
                }
            } else if let Some(values) =
                schema.get("additionalProperties").filter(|s| s.is_object())
            {
                for (key, child) in map {
                    walk(&format!("{path}.{key}"), child, values, out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(&format!("{path}[{i}]"), item, s, out);
                }
            }
        }
        _ => {}
    }
}

fn unknown<'a>(parent: &str, key: &str, known: impl Iterator<Item = &'a str>) -> FieldError {
    let known: Vec<&str> = known.collect();
    let path = if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    };
    let hint = known
        .iter()
        .map(|k| {
            (
                edit_distance(&key.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                k,
            )
        })
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| format!(", did you mean {k}?"))
        .unwrap_or_default();
    FieldError::new(
        path,
        format!(
            "unknown field{hint} (expected one of: {})",
            known.join(", ")
        ),
    )
}

/// Levenshtein distance (field names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(errs: &[FieldError]) -> Vec<&str> {
        errs.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn misspelled_fields_are_found_at_every_level_with_a_suggestion() {
        let errs = unknown_spec_fields(&json!({
            "version": "0.1.0",
            "servces": {},
            "services": {"tiket": {"replicas": 2}, "user": {"replicas": 1, "replica": 2,
                "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"nmae": "s", "key": "k"}}}]}},
            "postgres": {"managed": {"storgae": "10Gi"}},
            "ingress": {"host": "a.example.com"},
        }));
        assert_eq!(
            paths(&errs),
            [
                "spec.postgres.managed.storgae",
                "spec.servces",
                "spec.services.tiket",
                "spec.services.user.env[0].valueFrom.secretKeyRef.nmae",
                "spec.services.user.replica",
            ]
        );
        let servces = errs[1].to_string();
        assert!(
            servces.starts_with(
                "spec.servces: unknown field, did you mean services? (expected one of: "
            ) && servces.contains("ingress"),
            "{servces}"
        );
        assert!(
            errs[2].message.contains("did you mean ticket?"),
            "{}",
            errs[2]
        );
        assert!(
            errs[3].message.contains("did you mean name?"),
            "{}",
            errs[3]
        );
    }

    #[test]
    fn known_and_free_form_fields_pass() {
        let errs = unknown_spec_fields(&json!({
            "ingress": {"host": "a.example.com", "annotations": {"anything.example/x": "y"}},
            "services": {"ticket": {
                "nodeSelector": {"disk": "ssd"},
                "tolerations": [{"key": "k", "operator": "Exists", "future": 1}],
                "affinity": {"nodeAffinity": {"whatever": true}},
                "resources": {"limits": {"memory": "256Mi"}}}},
            "monitoring": {"serviceMonitor": true},
        }));
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn every_sample_is_free_of_unknown_fields() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/samples");
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let v: Value = serde::Deserialize::deserialize(doc).unwrap();
                assert!(unknown_resource_fields(&v).is_empty());
                assert!(unknown_spec_fields(&v["spec"]).is_empty(), "{v}");
            }
        }
    }

    #[test]
    fn top_level_and_metadata_are_checked_for_render() {
        let errs = unknown_resource_fields(&json!({
            "apiVersion": "helpdesk.dev/v1alpha1", "kind": "HelpdeskPlatform",
            "metadata": {"name": "hd", "namespace": "ns", "label": {"a": "b"}},
            "spce": {},
        }));
        assert_eq!(paths(&errs), ["spce", "metadata.label"]);
        assert!(errs[0].message.contains("did you mean spec?"));
        assert!(errs[1].message.contains("did you mean labels?"));
    }
}
