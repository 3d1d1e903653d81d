//! Dereference (reads only): which APIs exist, what the platform already owns, the secret
//! material to keep, and how far each service's migration has got.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams},
};

use super::Error;
use super::observed::{self, JobOutcome, Workload};
use crate::build::{Kind, secrets::FINGERPRINT_ANNOTATION};
use crate::crd::HelpdeskPlatform;
use crate::material::{
    AdminCredentials, Credentials, JwtKeys, Owned, PRIVATE_KEY, RabbitCredentials, SecretMaterial,
    mint_service_tokens, random_password,
};
use crate::names::{self, Component};
use crate::validate::{Capabilities, PostgresMode, RabbitmqMode, Resolved};

/// Children that exist now, by kind and name.
pub type Existing = HashMap<(Kind, String), DynamicObject>;

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

async fn api_has(client: &Client, group_version: &str, plural: &str) -> Result<bool, Error> {
    match client.list_api_group_resources(group_version).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == plural)),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(Error::Discover(e)),
    }
}

/// Asks discovery which optional APIs the cluster serves (no RBAC needed beyond discovery).
pub async fn discover(client: &Client) -> Result<Capabilities, Error> {
    Ok(Capabilities {
        routes: api_has(client, "route.openshift.io/v1", "routes").await?,
        cloud_native_pg: api_has(client, "postgresql.cnpg.io/v1", "clusters").await?,
        rabbitmq_operator: api_has(client, "rabbitmq.com/v1beta1", "rabbitmqclusters").await?,
        service_monitor: api_has(client, "monitoring.coreos.com/v1", "servicemonitors").await?,
    })
}

/// Lists every child of the platform (by label), one LIST per kind the cluster serves.
pub async fn list_children(
    client: &Client,
    ns: &str,
    instance: &str,
    caps: &Capabilities,
) -> Result<Existing, Error> {
    let lp = ListParams::default().labels(&names::instance_selector(instance));
    let mut out = Existing::new();
    for kind in Kind::ALL {
        let served = match kind {
            Kind::Route => caps.routes,
            Kind::PostgresCluster => caps.cloud_native_pg,
            Kind::RabbitmqCluster => caps.rabbitmq_operator,
            Kind::ServiceMonitor => caps.service_monitor,
            _ => true,
        };
        if !served {
            continue;
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &kind.api_resource());
        for obj in api.list(&lp).await.map_err(Error::Dereference)?.items {
            if let Some(name) = obj.metadata.name.clone() {
                out.insert((kind, name), obj);
            }
        }
    }
    Ok(out)
}

/// A component whose pods cannot run, as the kubelet reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodProblem {
    /// The component label (`ticket`, `postgres`, ...).
    pub component: String,
    /// `CrashLoop`, `ImagePullFailed` or `ContainerConfigError`.
    pub reason: &'static str,
    pub message: String,
}

/// The reason a waiting container's state stands for, if it is a problem (not a normal start).
fn waiting_problem(reason: &str) -> Option<&'static str> {
    match reason {
        "CrashLoopBackOff" => Some("CrashLoop"),
        "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" | "ErrImageNeverPull" => {
            Some("ImagePullFailed")
        }
        "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
            Some("ContainerConfigError")
        }
        _ => None,
    }
}

/// The platform's pods in trouble (crash loops, image pulls, bad container config), one entry
/// per component. Pods are only read; without permission to list them (an older RBAC), nothing
/// is reported and a warning is logged.
pub async fn pod_problems(client: &Client, ns: &str, instance: &str) -> Vec<PodProblem> {
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&names::instance_selector(instance));
    let pods = match api.list(&lp).await {
        Ok(list) => list.items,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the platform's pods; crash loops are not reported");
            return Vec::new();
        }
    };
    let mut out: Vec<PodProblem> = Vec::new();
    for pod in pods {
        let component = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/component").cloned())
            .unwrap_or_default();
        let statuses = pod
            .status
            .and_then(|s| s.container_statuses)
            .unwrap_or_default();
        for cs in statuses {
            let Some(waiting) = cs.state.and_then(|s| s.waiting) else {
                continue;
            };
            let Some(reason) = waiting.reason.as_deref().and_then(waiting_problem) else {
                continue;
            };
            if out.iter().any(|p| p.component == component) {
                continue;
            }
            let detail = waiting.message.unwrap_or_default();
            let detail = detail.lines().last().unwrap_or_default().to_string();
            out.push(PodProblem {
                message: format!(
                    "{component}: pod {} is in {} (restarts: {}){}",
                    pod.metadata.name.clone().unwrap_or_default(),
                    waiting.reason.clone().unwrap_or_default(),
                    cs.restart_count,
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", detail.chars().take(300).collect::<String>())
                    }
                ),
                component: component.clone(),
                reason,
            });
        }
    }
    out.sort_by(|a, b| a.component.cmp(&b.component));
    out
}

fn secret_data(obj: &DynamicObject, key: &str) -> Option<String> {
    use base64::Engine;
    let b64 = obj.data.get("data")?.get(key)?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

fn ours<'a>(existing: &'a Existing, name: &str) -> Option<&'a DynamicObject> {
    existing.get(&(Kind::Secret, name.to_string()))
}

/// Reads generated material back from the Secrets that hold it; generates only what is missing.
pub async fn secret_material(
    client: &Client,
    ns: &str,
    p: &HelpdeskPlatform,
    r: &Resolved,
    existing: &Existing,
) -> Result<SecretMaterial, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut supplied = BTreeMap::new();

    // JWT signing keys: ours (keep), theirs (read only), or none yet (generate).
    let (jwt, keys) = match ours(existing, &r.jwt_secret) {
        Some(obj) => match secret_data(obj, PRIVATE_KEY).map(|pem| JwtKeys::from_private_pem(&pem))
        {
            Some(Ok(keys)) => (Owned::Ours(keys.clone()), keys),
            // Our own Secret got damaged: start over with a fresh pair.
            _ => {
                let keys = JwtKeys::generate();
                (Owned::Ours(keys.clone()), keys)
            }
        },
        None => match secrets
            .get_opt(&r.jwt_secret)
            .await
            .map_err(Error::Dereference)?
        {
            Some(s) => {
                let has_public = s
                    .data
                    .as_ref()
                    .is_some_and(|d| d.contains_key(crate::material::PUBLIC_KEY));
                let path = "spec.auth.signingKeySecretRef";
                if !has_public {
                    return Err(Error::SuppliedSecret(format!(
                        "{path}: Secret {} has no key {}",
                        r.jwt_secret,
                        crate::material::PUBLIC_KEY
                    )));
                }
                let pem = s
                    .data
                    .as_ref()
                    .and_then(|d| d.get(PRIVATE_KEY))
                    .and_then(|b| String::from_utf8(b.0.clone()).ok())
                    .ok_or_else(|| {
                        Error::SuppliedSecret(format!(
                            "{path}: Secret {} has no key {PRIVATE_KEY}",
                            r.jwt_secret
                        ))
                    })?;
                let keys = JwtKeys::from_private_pem(&pem).map_err(|e| {
                    Error::SuppliedSecret(format!(
                        "{path}: Secret {} key {PRIVATE_KEY}: {e}",
                        r.jwt_secret
                    ))
                })?;
                supplied.insert(r.jwt_secret.clone(), data_hash(&s));
                (Owned::Theirs, keys)
            }
            None => {
                let keys = JwtKeys::generate();
                (Owned::Ours(keys.clone()), keys)
            }
        },
    };

    let admin = match ours(existing, &r.admin_secret) {
        Some(obj) => Owned::Ours(AdminCredentials {
            email: secret_data(obj, "email").unwrap_or_else(|| default_admin(p)),
            password: secret_data(obj, "password").unwrap_or_else(random_password),
        }),
        None => match secrets
            .get_opt(&r.admin_secret)
            .await
            .map_err(Error::Dereference)?
        {
            Some(s) => {
                supplied.insert(r.admin_secret.clone(), data_hash(&s));
                let data = s.data.unwrap_or_default();
                let path = "spec.auth.bootstrapAdminSecretRef";
                if let Some(missing) = ["email", "password"]
                    .into_iter()
                    .find(|k| !data.contains_key(*k))
                {
                    return Err(Error::SuppliedSecret(format!(
                        "{path}: Secret {} has no key {missing}",
                        r.admin_secret
                    )));
                }
                // What user-service checks at start-up: refused here, it cannot crash-loop on it.
                let text = |k: &str| String::from_utf8_lossy(&data[k].0).into_owned();
                let email = text("email");
                if let Err(why) = crate::rules::email(email.trim()) {
                    return Err(Error::SuppliedSecret(format!(
                        "{path}: Secret {} key email: {email:?} {why}",
                        r.admin_secret
                    )));
                }
                if text("password").chars().count() < 8 {
                    return Err(Error::SuppliedSecret(format!(
                        "{path}: Secret {} key password: must be at least 8 characters",
                        r.admin_secret
                    )));
                }
                Owned::Theirs
            }
            None => Owned::Ours(AdminCredentials {
                email: default_admin(p),
                password: random_password(),
            }),
        },
    };

    // Service tokens stay as long as the key that signed them does.
    let fingerprint = keys.fingerprint();
    let tokens_secret = ours(existing, &names::service_tokens_secret(&r.name));
    let reusable = tokens_secret.and_then(|obj| {
        let same_key = obj
            .metadata
            .annotations
            .as_ref()?
            .get(FINGERPRINT_ANNOTATION)?
            == &fingerprint;
        let tokens: Option<BTreeMap<String, String>> = Component::ALL
            .iter()
            .map(|c| Some((c.as_str().to_string(), secret_data(obj, c.as_str())?)))
            .collect();
        // Renewed before they expire (see SERVICE_TOKEN_RENEW_BEFORE_SECS).
        let now = chrono::Utc::now().timestamp();
        let fresh = tokens.as_ref()?.values().all(|t| {
            crate::material::token_expiry(t)
                .is_some_and(|exp| exp - now > crate::material::SERVICE_TOKEN_RENEW_BEFORE_SECS)
        });
        (same_key && fresh).then_some(tokens).flatten()
    });
    let service_tokens = match reusable {
        Some(t) => t,
        None => mint_service_tokens(&keys, chrono::Utc::now().timestamp())?,
    };

    let postgres = matches!(r.postgres, PostgresMode::Managed(_)).then(|| {
        let old = ours(existing, &names::postgres_secret(&r.name));
        Credentials {
            username: old
                .and_then(|o| secret_data(o, "username"))
                .unwrap_or_else(|| "helpdesk".into()),
            password: old
                .and_then(|o| secret_data(o, "password"))
                .unwrap_or_else(random_password),
        }
    });
    let rabbitmq = matches!(r.rabbitmq, RabbitmqMode::Managed(_)).then(|| {
        let old = ours(existing, &names::rabbitmq_secret(&r.name));
        RabbitCredentials {
            username: old
                .and_then(|o| secret_data(o, "username"))
                .unwrap_or_else(|| "helpdesk".into()),
            password: old
                .and_then(|o| secret_data(o, "password"))
                .unwrap_or_else(random_password),
            erlang_cookie: old
                .and_then(|o| secret_data(o, "erlang-cookie"))
                .unwrap_or_else(random_password),
        }
    });
    // Every other Secret the pods read that someone else provides: one GET each (only for
    // platforms that name such Secrets). A missing one is left out; the pods cannot start until it
    // exists, and its arrival changes the hash, which restarts them with it.
    for name in crate::consistency::secrets_provided_elsewhere(p) {
        if supplied.contains_key(&name) || ours(existing, &name).is_some() {
            continue;
        }
        if let Some(s) = secrets.get_opt(&name).await.map_err(Error::Dereference)? {
            supplied.insert(name, data_hash(&s));
        }
    }
    Ok(SecretMaterial {
        jwt,
        admin,
        service_tokens,
        signing_fingerprint: fingerprint,
        postgres,
        rabbitmq,
        supplied,
    })
}

/// A hash of a Secret's data (keys and values), to notice its rotation.
fn data_hash(s: &Secret) -> String {
    let data = serde_json::to_value(&s.data).expect("secret data serializes");
    crate::build::content_hash(&data)
}

fn default_admin(p: &HelpdeskPlatform) -> String {
    crate::material::default_admin_email(&p.spec.ingress.host)
}

/// Where a service's migration for `spec.version` stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Migration {
    NotStarted,
    Running,
    Succeeded,
    Failed(String),
}

/// The rollout decision per service: which version its Deployment runs this pass.
#[derive(Clone, Debug, Default)]
pub struct RolloutPlan {
    pub deploy_versions: BTreeMap<Component, Option<String>>,
    pub migrations: BTreeMap<Component, Migration>,
}

pub fn job_state(job: Option<&DynamicObject>) -> Migration {
    match job.map(observed::job_outcome) {
        None => Migration::NotStarted,
        Some(JobOutcome::Succeeded) => Migration::Succeeded,
        Some(JobOutcome::Failed(message)) => Migration::Failed(message),
        Some(JobOutcome::Running) => Migration::Running,
    }
}

/// The tag of the image a Deployment's first container runs now.
pub fn deployed_version(deployment: &DynamicObject) -> Option<String> {
    Workload::read(Kind::Deployment, deployment).version()
}

/// A service moves to `spec.version` only after that version's migration Job succeeded; until
/// then an existing Deployment keeps its current version and a new one is not created.
pub fn rollout_plan(p: &HelpdeskPlatform, instance: &str, existing: &Existing) -> RolloutPlan {
    let version = &p.spec.version;
    let mut plan = RolloutPlan::default();
    for c in Component::ALL {
        let job = existing.get(&(Kind::Job, names::migration_job_name(instance, c, version)));
        let state = job_state(job);
        let current = existing
            .get(&(Kind::Deployment, names::service_name(instance, c)))
            .and_then(deployed_version);
        let deploy = match (&state, current) {
            (Migration::Succeeded, _) => Some(version.clone()),
            (_, Some(current)) => Some(current),
            (_, None) => None,
        };
        plan.deploy_versions.insert(c, deploy);
        plan.migrations.insert(c, state);
    }
    plan
}
