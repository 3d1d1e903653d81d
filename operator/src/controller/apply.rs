//! Apply (writes): server-side apply of what changed, deletion of orphans. All writes of the
//! reconciler to children go through here, with one field manager.

use std::collections::HashSet;

use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, Patch, PatchParams},
};

use super::Error;
use super::observe::Existing;
use crate::build::{Child, Kind};
use crate::names::{HASH_ANNOTATION, MANAGER};

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
        self.applied.len() + self.deleted.len()
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

/// Applies every desired child whose content hash differs from the live object's.
/// A no-op pass therefore makes no API writes at all.
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
        match live {
            // Jobs are immutable once created: one Job per version, never re-applied.
            Some(_) if child.kind == Kind::Job => continue,
            Some(live) if existing_hash(live) == child.hash() => continue,
            _ => {}
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &child.kind.api_resource());
        if let Some(live) = live {
            hand_replicas_to_hpa(&api, child, live).await?;
        }
        let applied = api
            .patch(child.name(), &params, &Patch::Apply(&child.obj))
            .await
            .map_err(Error::Kube)?;
        let label = format!("{}/{}", child.kind.kind_name(), child.name());
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
        out.live.push((child.kind, applied));
    }
    Ok(out)
}

/// When autoscaling turns on, our apply stops setting `spec.replicas`. Were we its only owner,
/// the API server would drop the field and default it to 1 before the HPA notices. A second
/// field manager first takes over the current value, so the count stays until the HPA changes it.
async fn hand_replicas_to_hpa(
    api: &Api<DynamicObject>,
    child: &Child,
    live: &DynamicObject,
) -> Result<(), Error> {
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
    .await
    .map_err(Error::Kube)?;
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
            Err(e) => return Err(Error::Kube(e)),
        }
        metrics::counter!("helpdesk_operator_api_writes_total", "kind" => kind.kind_name())
            .increment(1);
        out.deleted.push(format!("{}/{name}", kind.kind_name()));
    }
    Ok(())
}
