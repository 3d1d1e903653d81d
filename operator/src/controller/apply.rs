//! Apply (writes): server-side apply of what changed or drifted, PVC expansion, deletion of
//! orphans. All writes of the reconciler to children go through here, with one field manager.

use std::collections::HashSet;

use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, Patch, PatchParams},
    core::Status,
};
use serde_json::Value;

use super::Error;
use super::dereference::Existing;
use super::drift;
use crate::build::{Child, Kind};
use crate::names::{HASH_ANNOTATION, MANAGER};

/// An object the API server refused (422 Invalid, 403 Forbidden): reported in status, and the
/// rest of the pass goes on.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// `Kind/name`.
    pub object: String,
    pub code: u16,
    /// The API's reason (`Invalid`, `Forbidden`, ...).
    pub reason: String,
    /// The API's message.
    pub message: String,
}

impl Rejection {
    fn new(object: String, s: &Status) -> Self {
        Self {
            object,
            code: s.code,
            reason: s.reason.clone(),
            message: s.message.clone(),
        }
    }

    /// The API error this stands for (returned from the reconcile so that it backs off).
    pub fn to_error(&self) -> Error {
        Error::Apply {
            object: self.object.clone(),
            source: kube::Error::Api(
                Status::failure(&self.message, &self.reason)
                    .with_code(self.code)
                    .boxed(),
            ),
        }
    }
}

/// 422 (invalid, e.g. an immutable field) and 403 (forbidden by RBAC or an admission policy)
/// concern one object: the others can still be applied.
fn rejected(e: &kube::Error) -> Option<&Status> {
    match e {
        kube::Error::Api(s) if s.code == 422 || s.code == 403 => Some(s),
        _ => None,
    }
}

/// What one pass changed.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Objects created or updated, as `Kind/name`.
    pub applied: Vec<String>,
    /// Objects deleted as orphans, as `Kind/name`.
    pub deleted: Vec<String>,
    /// Migration Jobs created in this pass.
    pub jobs_created: Vec<String>,
    /// Deployments whose image changed in this pass.
    pub rollouts: Vec<String>,
    /// Objects re-applied because a field we own was changed by someone else, with that field
    /// (`Deployment/hd-ticket: spec.replicas`).
    pub repaired: Vec<String>,
    /// PersistentVolumeClaims whose storage request was raised, as `PersistentVolumeClaim/name`.
    pub expanded: Vec<String>,
    /// Objects the API server refused in this pass.
    pub rejected: Vec<Rejection>,
    /// The objects as the API server returned them after apply (for status).
    pub live: Vec<(Kind, DynamicObject)>,
}

impl Outcome {
    /// What exists after this pass: the listed objects, updated by applies and deletions.
    pub fn after(&self, existing: &Existing) -> Existing {
        let mut after = existing.clone();
        for (kind, obj) in &self.live {
            if let Some(name) = &obj.metadata.name {
                after.insert((*kind, name.clone()), obj.clone());
            }
        }
        for d in &self.deleted {
            after.retain(|(k, n), _| format!("{}/{n}", k.kind_name()) != *d);
        }
        after
    }
}

impl Outcome {
    pub fn writes(&self) -> usize {
        self.applied.len() + self.deleted.len() + self.expanded.len()
    }
}

fn existing_hash(obj: &DynamicObject) -> Option<&str> {
    obj.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(HASH_ANNOTATION))
        .map(String::as_str)
}

fn image(obj: &DynamicObject) -> Option<&str> {
    obj.data["spec"]["template"]["spec"]["containers"][0]["image"].as_str()
}

/// The object to apply over `live`: the desired one, except for fields the API server never lets
/// change. A StatefulSet's `volumeClaimTemplates` are immutable, so the live ones are kept (a
/// larger storage request goes to the PVCs instead, see [`expand_claims`]).
fn to_apply(child: &Child, live: Option<&DynamicObject>) -> DynamicObject {
    let mut obj = child.obj.clone();
    if child.kind == Kind::StatefulSet
        && let Some(live) = live
        && let Some(templates) = live.data["spec"].get("volumeClaimTemplates")
    {
        obj.data["spec"]["volumeClaimTemplates"] = templates.clone();
    }
    obj
}

/// Applies every desired child that is missing, whose content hash differs from the live
/// object's, or whose live fields drifted from what we apply (a hand edit). A pass over an
/// unchanged platform compares in memory and makes no API writes at all. An object the API
/// server refuses is recorded in [`Outcome::rejected`] and the others are still applied.
pub async fn apply_children(
    client: &Client,
    ns: &str,
    desired: &[Child],
    existing: &Existing,
) -> Result<Outcome, Error> {
    let mut out = Outcome::default();
    let params = PatchParams::apply(MANAGER).force();
    for child in desired {
        let key = (child.kind, child.name().to_string());
        let live = existing.get(&key);
        let label = format!("{}/{}", child.kind.kind_name(), child.name());
        // Jobs are immutable once created: one Job per version, never re-applied.
        if live.is_some() && child.kind == Kind::Job {
            continue;
        }
        let body = to_apply(child, live);
        let mut drifted = None;
        if let Some(live) = live
            && existing_hash(live) == child.hash()
        {
            let desired_value = serde_json::to_value(&body).expect("object serializes");
            let live_value = serde_json::to_value(live).expect("object serializes");
            match drift::first_difference(&desired_value, &live_value) {
                None => {
                    expand_claims(client, ns, child, live, &mut out).await?;
                    continue;
                }
                Some(field) => drifted = Some(format!("{label}: {field}")),
            }
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &child.kind.api_resource());
        if let Some(live) = live
            && let Err(e) = hand_replicas_to_hpa(&api, child, live).await
        {
            match rejected(&e) {
                Some(s) => {
                    out.rejected.push(Rejection::new(label, s));
                    continue;
                }
                None => {
                    return Err(Error::Apply {
                        object: label,
                        source: e,
                    });
                }
            }
        }
        let applied = match api.patch(child.name(), &params, &Patch::Apply(&body)).await {
            Ok(applied) => applied,
            Err(e) => match rejected(&e) {
                Some(s) => {
                    out.rejected.push(Rejection::new(label, s));
                    continue;
                }
                None => {
                    return Err(Error::Apply {
                        object: label,
                        source: e,
                    });
                }
            },
        };
        metrics::counter!("helpdesk_operator_api_writes_total", "kind" => child.kind.kind_name())
            .increment(1);
        if child.kind == Kind::Job && live.is_none() {
            out.jobs_created.push(child.name().to_string());
        }
        if child.kind == Kind::Deployment
            && live.and_then(image) != image(&child.obj)
            && live.is_some()
        {
            out.rollouts.push(child.name().to_string());
        }
        out.applied.push(label);
        out.repaired.extend(drifted);
        if let Some(live) = live {
            expand_claims(client, ns, child, live, &mut out).await?;
        }
        out.live.push((child.kind, applied));
    }
    Ok(out)
}

/// The storage request of a StatefulSet's first volume claim template.
fn template_storage(obj: &Value) -> Option<(&str, &str)> {
    let t = &obj["spec"]["volumeClaimTemplates"][0];
    Some((
        t["metadata"]["name"].as_str()?,
        t["spec"]["resources"]["requests"]["storage"].as_str()?,
    ))
}

pub const STORAGE_MANAGER: &str = "helpdesk-operator-storage";

/// A StatefulSet's `volumeClaimTemplates` cannot change, so a larger `storage` in the spec is
/// applied to the claims themselves (`<template>-<statefulset>-<ordinal>`), which the cluster
/// expands when their StorageClass allows it (`allowVolumeExpansion`); otherwise the API server
/// refuses and the refusal is reported. A smaller size is refused here: volumes never shrink.
/// Reads the claims only while the spec's size differs from the template's, and writes only when
/// a claim asks for less than the spec.
async fn expand_claims(
    client: &Client,
    ns: &str,
    child: &Child,
    live: &DynamicObject,
    out: &mut Outcome,
) -> Result<(), Error> {
    if child.kind != Kind::StatefulSet {
        return Ok(());
    }
    let (Some((template, want)), Some((_, have))) = (
        template_storage(&child.obj.data),
        template_storage(&live.data),
    ) else {
        return Ok(());
    };
    let (Some(want_q), Some(have_q)) = (drift::quantity(want), drift::quantity(have)) else {
        return Ok(());
    };
    if want_q == have_q {
        return Ok(());
    }
    let claims: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("", "v1", "PersistentVolumeClaim"),
            "persistentvolumeclaims",
        ),
    );
    let replicas = live.data["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    for ordinal in 0..replicas {
        let name = format!("{template}-{}-{ordinal}", child.name());
        let label = format!("PersistentVolumeClaim/{name}");
        let claim = match claims.get_opt(&name).await {
            Ok(Some(c)) => c,
            // Not created yet: the StatefulSet controller creates it from the template.
            Ok(None) => continue,
            Err(e) => match rejected(&e) {
                Some(s) => {
                    out.rejected.push(Rejection::new(label, s));
                    continue;
                }
                None => {
                    return Err(Error::Apply {
                        object: label,
                        source: e,
                    });
                }
            },
        };
        let current = claim.data["spec"]["resources"]["requests"]["storage"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match drift::quantity(&current) {
            Some(c) if c >= want_q => {
                if want_q < c {
                    out.rejected.push(Rejection {
                        object: label,
                        code: 422,
                        reason: "Invalid".into(),
                        message: format!(
                            "storage {want} is smaller than the claim's {current}: volumes cannot shrink"
                        ),
                    });
                }
                continue;
            }
            _ => {}
        }
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {"resources": {"requests": {"storage": want}}},
        });
        match claims
            .patch(
                &name,
                &PatchParams::apply(STORAGE_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
        {
            Ok(_) => {
                metrics::counter!("helpdesk_operator_api_writes_total", "kind" => "PersistentVolumeClaim")
                    .increment(1);
                out.expanded.push(label);
            }
            Err(e) => match rejected(&e) {
                Some(s) => out.rejected.push(Rejection::new(label, s)),
                None => {
                    return Err(Error::Apply {
                        object: label,
                        source: e,
                    });
                }
            },
        }
    }
    Ok(())
}

/// When autoscaling turns on, our apply stops setting `spec.replicas`. Were we its only owner,
/// the API server would drop the field and default it to 1 before the HPA notices. A second
/// field manager first takes over the current value, so the count stays until the HPA changes it.
async fn hand_replicas_to_hpa(
    api: &Api<DynamicObject>,
    child: &Child,
    live: &DynamicObject,
) -> Result<(), kube::Error> {
    let live_replicas = &live.data["spec"]["replicas"];
    if child.kind != Kind::Deployment
        || !child.obj.data["spec"]["replicas"].is_null()
        || live_replicas.is_null()
    {
        return Ok(());
    }
    let we_own_replicas = live.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(MANAGER)
            && m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0["f:spec"].get("f:replicas").is_some())
    });
    if !we_own_replicas {
        return Ok(());
    }
    let body = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": child.name()},
        "spec": {"replicas": live_replicas},
    });
    api.patch(
        child.name(),
        &PatchParams::apply(HPA_HANDOVER_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    metrics::counter!("helpdesk_operator_api_writes_total", "kind" => "Deployment").increment(1);
    Ok(())
}

pub const HPA_HANDOVER_MANAGER: &str = "helpdesk-operator-hpa-handover";

/// Deletes children that carry our labels and owner reference but are no longer desired
/// (an old version's migration Job, an HPA after autoscaling was turned off, ...).
pub async fn delete_orphans(
    client: &Client,
    ns: &str,
    uid: &str,
    desired: &[Child],
    existing: &Existing,
    out: &mut Outcome,
) -> Result<(), Error> {
    let wanted: HashSet<(Kind, &str)> = desired.iter().map(|c| (c.kind, c.name())).collect();
    let mut orphans: Vec<&(Kind, String)> = existing
        .keys()
        .filter(|(k, n)| !wanted.contains(&(*k, n.as_str())))
        .collect();
    orphans.sort();
    for (kind, name) in orphans {
        let obj = &existing[&(*kind, name.clone())];
        // Only what this platform owns: a label can be copied, the owner uid cannot.
        let owned = obj
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid);
        if !owned {
            continue;
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &kind.api_resource());
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::Prune(e)),
        }
        metrics::counter!("helpdesk_operator_api_writes_total", "kind" => kind.kind_name())
            .increment(1);
        out.deleted.push(format!("{}/{name}", kind.kind_name()));
    }
    Ok(())
}
