//! The operator's output, run: each scenario applies a `HelpdeskPlatform` to a simulated cluster
//! (real processes for every pod, see `helpdesk_simcluster`) and ends in a working platform or in
//! the status the operator must report. Needs root and PostgreSQL's and RabbitMQ's binaries on
//! the machine; each scenario has its own network namespace, datastores and files.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use helpdesk_simcluster::{Cluster, Images, sandbox, secret, secret_path, service_binaries};

const MINIMAL: &str = include_str!("../../../samples/minimal.yaml");
const READY_WITHIN: Duration = Duration::from_secs(240);
/// How long a Degraded status may last before a wait for Ready gives up (a Job retrying while
/// its datastore starts is Degraded for a moment).
const DEGRADED_GRACE: Duration = Duration::from_secs(60);

/// Runs `scenario` inside fresh namespaces on a runtime created after entering them.
fn scenario<F, Fut>(name: &str, f: F)
where
    F: FnOnce(Arc<sandbox::Sandbox>, std::path::PathBuf, Images) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let bin_dir = service_binaries().expect("the service binaries");
    let work = std::env::temp_dir().join(format!("simcluster-{name}-{}", std::process::id()));
    let sandbox =
        Arc::new(sandbox::enter(&work.join("net")).expect("entering the cluster's namespaces"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let started = std::time::Instant::now();
    let result = rt.block_on(f(sandbox, work.clone(), Images { bin_dir }));
    eprintln!("scenario {name}: {:.1} s", started.elapsed().as_secs_f64());
    drop(rt);
    let _ = std::fs::remove_dir_all(&work);
    if let Err(e) = result {
        panic!("scenario {name}: {e:#}");
    }
}

/// Runs `steps` on a started cluster, printing the pods on failure, and shuts it down.
async fn with_cluster<F, Fut>(cluster: Cluster, steps: F) -> anyhow::Result<()>
where
    F: FnOnce(Arc<Cluster>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let cluster = Arc::new(cluster);
    let outcome = steps(cluster.clone()).await;
    if outcome.is_err() {
        eprintln!("{}", cluster.describe().await);
    }
    if let Ok(cluster) = Arc::try_unwrap(cluster) {
        cluster.shutdown().await;
    }
    outcome
}

fn component<'a>(p: &'a Value, name: &str) -> &'a Value {
    &p["status"]["components"][name]
}

fn condition<'a>(p: &'a Value, type_: &str) -> &'a Value {
    p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

/// A signed-in admin's token through the ingress.
async fn admin_token(cluster: &Cluster, url: &str) -> anyhow::Result<String> {
    let admin = cluster.admin()?;
    let v: Value = reqwest::Client::new()
        .post(format!("{url}/auth/login"))
        .json(&json!({"email": admin.email, "password": admin.password}))
        .send()
        .await?
        .json()
        .await?;
    v["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("login failed: {v}"))
}

/// Requests GET /tickets through the ingress until stopped; counts answers other than 200.
struct Traffic {
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    last_failure: Arc<std::sync::Mutex<String>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(url: &str, token: &str) -> Traffic {
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let last_failure = Arc::new(std::sync::Mutex::new(String::new()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = {
            let (ok, failed, last) = (ok.clone(), failed.clone(), last_failure.clone());
            let (url, token) = (format!("{url}/tickets"), token.to_string());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                loop {
                    match http.get(&url).bearer_auth(&token).send().await {
                        Ok(r) if r.status() == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        other => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            if let Ok(mut l) = last.lock() {
                                *l = match other {
                                    Ok(r) => format!("{}", r.status()),
                                    Err(e) => e.to_string(),
                                };
                            }
                        }
                    }
                    tokio::select! {
                        _ = stopped.changed() => break,
                        _ = tokio::time::sleep(Duration::from_millis(40)) => {}
                    }
                }
            })
        };
        Traffic {
            ok,
            failed,
            last_failure,
            stop,
            task,
        }
    }

    async fn finish(self) -> (usize, usize, String) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let last = self
            .last_failure
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            last,
        )
    }
}

/// The minimal sample becomes a working platform that passes the whole end-to-end suite through
/// its ingress; then the operations an SRE performs through the resource.
#[test]
fn the_minimal_sample_serves_the_contract_and_follows_the_sre_through_scaling_and_upgrades() {
    scenario("minimal", |sandbox, work, images| async move {
        let cluster =
            Cluster::start(sandbox, &work.join("cluster"), images, MINIMAL, vec![]).await?;
        with_cluster(cluster, |cluster| async move {
            let started = std::time::Instant::now();
            let p = cluster.wait_ready(READY_WITHIN, DEGRADED_GRACE).await?;
            eprintln!(
                "minimal sample Ready after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            assert_eq!(p["status"]["version"], "0.1.0");
            assert_eq!(condition(&p, "Ready")["status"], "True");
            let url = cluster.url().await?;
            helpdesk_e2e::wait_ready_path(&url, "/auth/me", 401).await;
            helpdesk_e2e::walk(
                &url,
                &cluster.admin()?,
                None,
                helpdesk_e2e::Entry::ClusterIngress,
            )
            .await;
            let token = admin_token(&cluster, &url).await?;

            eprintln!("step: scaling ticket-service 1 -> 3 -> 1");
            // An SRE scales ticket-service through the resource: three processes serve behind
            // the one Service name, requests spread over them; scaling back stops two.
            cluster.edit_spec(|s| s["services"]["ticket"] = json!({"replicas": 3}));
            cluster
                .wait_for(READY_WITHIN, "three ready ticket pods", |p| {
                    component(p, "ticket")["ready"] == 3 && p["status"]["phase"] == "Ready"
                })
                .await?;
            // The pod template changed with the replica count (spread over nodes), so the old pod
            // goes once the new ones are ready.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while cluster.running_pods("helpdesk-ticket").await != 3 {
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "three ticket pods, not {}",
                    cluster.running_pods("helpdesk-ticket").await
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let before = cluster.spread("helpdesk-ticket").await;
            let http = reqwest::Client::new();
            for _ in 0..60 {
                let r = http
                    .get(format!("{url}/tickets"))
                    .bearer_auth(&token)
                    .send()
                    .await?;
                assert_eq!(r.status(), 200);
            }
            let after = cluster.spread("helpdesk-ticket").await;
            let served: Vec<usize> = after
                .iter()
                .map(|(pod, n)| n - before.get(pod).copied().unwrap_or(0))
                .filter(|n| *n > 0)
                .collect();
            assert_eq!(served.len(), 3, "requests reached every pod: {served:?}");
            assert!(served.iter().all(|n| *n >= 10), "{served:?}");
            cluster.edit_spec(|s| s["services"]["ticket"] = json!({"replicas": 1}));
            cluster
                .wait_for(READY_WITHIN, "one ticket pod", |p| {
                    component(p, "ticket")["desired"] == 1 && p["status"]["phase"] == "Ready"
                })
                .await?;
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while cluster.running_pods("helpdesk-ticket").await != 1 {
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "scaling back did not stop two ticket pods"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }

            eprintln!("step: version bump 0.1.0 -> 0.1.1 under traffic");
            // A version bump: migrations first, then the rollout; the old pods serve until the
            // new ones are ready, so requests keep succeeding throughout.
            let traffic = Traffic::start(&url, &token);
            cluster.edit_spec(|s| s["version"] = json!("0.1.1"));
            let p = cluster
                .wait_for(READY_WITHIN, "version 0.1.1 everywhere", |p| {
                    p["status"]["version"] == "0.1.1" && p["status"]["phase"] == "Ready"
                })
                .await?;
            let (ok, failed, last) = traffic.finish().await;
            assert_eq!(
                failed, 0,
                "requests failed during the rollout ({ok} ok; last: {last})"
            );
            assert!(ok > 20, "traffic ran during the rollout: {ok}");
            for c in ["user", "ticket", "notification", "audit", "admin"] {
                let image = component(&p, c)["image"].as_str().unwrap_or_default();
                assert!(image.ends_with(":0.1.1"), "{c}: {image}");
                let job = cluster.fake.get(&format!(
                    "/apis/batch/v1/namespaces/support/jobs/helpdesk-{c}-migrate-0-1-1"
                ));
                assert!(
                    job.is_some_and(|j| j["status"]["succeeded"] == 1),
                    "the {c} migration Job for 0.1.1 ran"
                );
            }

            eprintln!("step: a failing migration (0.1.2)");
            // A migration that fails: Degraded naming the component; the old version keeps
            // serving. (The ticket schema's migration record is tampered with, so `migrate`
            // refuses, as it would for a changed migration.)
            let pool = sqlx::PgPool::connect(&cluster.postgres_url()?).await?;
            let checksum: Vec<u8> = sqlx::query_scalar(
                "UPDATE tickets._sqlx_migrations SET checksum = '\\x00'::bytea WHERE version = 1 \
                 RETURNING (SELECT checksum FROM tickets._sqlx_migrations WHERE version = 1)",
            )
            .fetch_one(&pool)
            .await?;
            cluster.edit_spec(|s| s["version"] = json!("0.1.2"));
            let p = cluster
                .wait_for(READY_WITHIN, "Degraded by the ticket migration", |p| {
                    p["status"]["phase"] == "Degraded"
                        && condition(p, "Degraded")["reason"] == "MigrationFailed"
                })
                .await?;
            let message = condition(&p, "Degraded")["message"]
                .as_str()
                .unwrap_or_default();
            assert!(message.contains("ticket"), "{message}");
            assert_ne!(
                p["status"]["version"], "0.1.2",
                "not every component runs 0.1.2"
            );
            let ticket_image = component(&p, "ticket")["image"]
                .as_str()
                .unwrap_or_default();
            assert!(ticket_image.ends_with(":0.1.1"), "{ticket_image}");
            let r = http
                .get(format!("{url}/tickets"))
                .bearer_auth(&token)
                .send()
                .await?;
            assert_eq!(r.status(), 200, "the old ticket-service keeps serving");
            eprintln!("step: fixed; retrying the migration");
            // Fixed, and the failed Job deleted as the status says: the upgrade completes.
            sqlx::query("UPDATE tickets._sqlx_migrations SET checksum = $1 WHERE version = 1")
                .bind(&checksum)
                .execute(&pool)
                .await?;
            pool.close().await;
            let api: kube::Api<k8s_openapi::api::batch::v1::Job> =
                kube::Api::namespaced(cluster.fake.client(), "support");
            api.delete("helpdesk-ticket-migrate-0-1-2", &Default::default())
                .await?;
            cluster
                .wait_for(READY_WITHIN, "version 0.1.2 everywhere", |p| {
                    p["status"]["version"] == "0.1.2" && p["status"]["phase"] == "Ready"
                })
                .await?;

            // A pod that crash-loops (a bad setting): Degraded with a reason naming the
            // component, not Progressing forever; the old pod keeps serving meanwhile.
            eprintln!("step: a crash-looping audit-service");
            cluster.edit_spec(|s| {
                s["services"]["audit"] =
                    json!({"env": [{"name": "AUDIT_RETENTION_DAYS", "value": "banana"}]})
            });
            let p = cluster
                .wait_for(READY_WITHIN, "Degraded by a crash loop", |p| {
                    condition(p, "Degraded")["reason"] == "CrashLoop"
                })
                .await?;
            let message = condition(&p, "Degraded")["message"]
                .as_str()
                .unwrap_or_default();
            assert!(message.contains("audit"), "{message}");
            let r = http
                .get(format!("{url}/audit/search"))
                .bearer_auth(&token)
                .send()
                .await?;
            assert_eq!(
                r.status(),
                200,
                "the previous audit-service pod keeps serving"
            );
            cluster.edit_spec(|s| s["services"]["audit"] = json!({}));
            cluster
                .wait_ready(READY_WITHIN, Duration::from_secs(30))
                .await?;
            anyhow::Ok(())
        })
        .await
    });
}

/// External datastores: PostgreSQL and RabbitMQ outside the cluster, named through Secrets.
#[test]
fn external_datastores_named_by_secrets() {
    scenario("external", |sandbox, work, images| async move {
        let resource = r#"
apiVersion: helpdesk.dev/v1alpha1
kind: HelpdeskPlatform
metadata: {name: helpdesk, namespace: support}
spec:
  version: "0.1.0"
  ingress: {host: helpdesk.example.com}
  postgres:
    external: {secretRef: {name: helpdesk-db, key: url}}
  rabbitmq:
    external: {secretRef: {name: helpdesk-amqp, key: url}}
"#;
        let extra = vec![
            (
                secret_path("support", "helpdesk-db"),
                secret(
                    "support",
                    "helpdesk-db",
                    &[(
                        "url",
                        "postgres://app:db-secret-1@db.external.test:5432/helpdesk",
                    )],
                ),
            ),
            (
                secret_path("support", "helpdesk-amqp"),
                secret(
                    "support",
                    "helpdesk-amqp",
                    &[("url", "amqp://app:mq-secret-1@mq.external.test:5672/%2f")],
                ),
            ),
        ];
        let cluster =
            Cluster::start(sandbox, &work.join("cluster"), images, resource, extra).await?;
        cluster
            .external_postgres("db.external.test", "app", "db-secret-1", "helpdesk")
            .await?;
        cluster
            .external_rabbitmq("mq.external.test", "app", "mq-secret-1")
            .await?;
        with_cluster(cluster, |cluster| async move {
            let p = cluster.wait_ready(READY_WITHIN, DEGRADED_GRACE).await?;
            assert!(
                cluster
                    .fake
                    .names("/apis/apps/v1/namespaces/support/statefulsets")
                    .is_empty(),
                "no managed datastores"
            );
            assert_eq!(p["status"]["version"], "0.1.0");
            let url = cluster.url().await?;
            helpdesk_e2e::wait_ready_path(&url, "/auth/me", 401).await;
            helpdesk_e2e::walk(
                &url,
                &cluster.admin()?,
                None,
                helpdesk_e2e::Entry::ClusterIngress,
            )
            .await;
            anyhow::Ok(())
        })
        .await
    });
}

/// The full sample's shape: several replicas, autoscaling, SMTP (to a real SMTP server standing
/// in for smtp.example.com), with mail checked by the end-to-end suite.
#[test]
fn replicas_autoscaling_and_smtp_with_mail_end_to_end() {
    scenario("full", |sandbox, work, images| async move {
        let sink = helpdesk_e2e::SmtpSink::start();
        let resource = format!(
            r#"
apiVersion: helpdesk.dev/v1alpha1
kind: HelpdeskPlatform
metadata: {{name: helpdesk, namespace: support}}
spec:
  version: "0.2.0"
  services:
    user: {{replicas: 2}}
    ticket:
      autoscaling: {{minReplicas: 2, maxReplicas: 10, targetCPUUtilizationPercentage: 70}}
      resources: {{requests: {{cpu: 100m, memory: 64Mi}}, limits: {{memory: 256Mi}}}}
    audit: {{replicas: 3}}
  smtp:
    host: smtp.example.com
    port: {port}
    tls: none
    from: helpdesk@example.com
    staffNotifyEmail: support@example.com
  auth: {{signupDefaultRole: AGENT}}
  ingress: {{host: helpdesk.example.com, kind: ingress}}
"#,
            port = sink.port()
        );
        let cluster =
            Cluster::start(sandbox, &work.join("cluster"), images, &resource, vec![]).await?;
        cluster
            .alias(std::net::Ipv4Addr::LOCALHOST, &["smtp.example.com"])
            .await?;
        with_cluster(cluster, |cluster| async move {
            let p = cluster.wait_ready(READY_WITHIN, DEGRADED_GRACE).await?;
            assert_eq!(component(&p, "user")["ready"], 2);
            assert_eq!(component(&p, "audit")["ready"], 3);
            assert_eq!(component(&p, "ticket")["ready"], 2, "the HPA's minimum");
            let url = cluster.url().await?;
            helpdesk_e2e::wait_ready_path(&url, "/auth/me", 401).await;
            helpdesk_e2e::walk(
                &url,
                &cluster.admin()?,
                Some(&sink),
                helpdesk_e2e::Entry::ClusterIngress,
            )
            .await;
            anyhow::Ok(())
        })
        .await
    });
}

/// Issue 11 item 3: an admin rotates both managed datastores' passwords in their Secrets while
/// the data is kept. The datastore pods restart and set the Secret's password on the existing
/// data (PostgreSQL's init container, RabbitMQ's postStart hook, both as rendered), the services
/// restart with the new URLs, and the whole platform keeps working: the end-to-end suite passes,
/// the new PostgreSQL password is accepted and the old one refused.
#[test]
fn rotated_datastore_passwords_reach_the_running_datastores() {
    use base64::Engine;
    scenario("rotation", |sandbox, work, images| async move {
        let cluster =
            Cluster::start(sandbox, &work.join("cluster"), images, MINIMAL, vec![]).await?;
        with_cluster(cluster, |cluster| async move {
            cluster.wait_ready(READY_WITHIN, DEGRADED_GRACE).await?;
            let old_pg = cluster.postgres_url()?;
            sqlx::PgPool::connect(&old_pg).await?.close().await;
            let amqp_url = |cluster: &Cluster| {
                cluster
                    .secret("helpdesk-rabbitmq-credentials")
                    .and_then(|s| s.get("url").cloned())
                    .ok_or_else(|| anyhow::anyhow!("no AMQP url"))
            };
            let old_mq = amqp_url(&cluster)?;
            amqp_accepts(&old_mq).await?;
            for (name, password) in [
                ("helpdesk-postgres-credentials", "pg-rotated-by-an-admin"),
                ("helpdesk-rabbitmq-credentials", "mq-rotated-by-an-admin"),
            ] {
                cluster.fake.edit(&secret_path("support", name), |s| {
                    s["data"]["password"] = base64::engine::general_purpose::STANDARD
                        .encode(password)
                        .into();
                });
            }
            // Every Deployment rolled to the new URLs, every pod ready, the platform Ready.
            let deployments = "/apis/apps/v1/namespaces/support/deployments";
            let rolled = |cluster: &Cluster| {
                let names = cluster.fake.names(deployments);
                names.len() == 5
                    && names.iter().all(|n| {
                        let d = cluster
                            .fake
                            .get(&format!("{deployments}/{n}"))
                            .unwrap_or_default();
                        let hash = d["spec"]["template"]["metadata"]["annotations"]
                            ["helpdesk.dev/datastore-credentials-hash"]
                            .clone();
                        let s = &d["status"];
                        hash.is_string()
                            && s["observedGeneration"] == d["metadata"]["generation"]
                            && s["updatedReplicas"] == d["spec"]["replicas"]
                            && s["readyReplicas"] == d["spec"]["replicas"]
                            && s["replicas"] == d["spec"]["replicas"]
                    })
            };
            let new_pg = cluster.postgres_url()?;
            let deadline = std::time::Instant::now() + READY_WITHIN;
            loop {
                let url_rotated = cluster.postgres_url()?.contains("pg-rotated-by-an-admin");
                if url_rotated && rolled(&cluster) && cluster.phase() == "Ready" {
                    break;
                }
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "the rotation did not roll out: {}",
                    cluster.describe().await
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let new_pg = if new_pg.contains("pg-rotated-by-an-admin") {
                new_pg
            } else {
                cluster.postgres_url()?
            };
            // The operator writes the new URL into the Secret before it re-renders the
            // workloads, so the loop above can end in between, while every Deployment is still
            // rolled out on the old credentials (seen once under a loaded CI run): wait for the
            // datastore itself to take the new password, and for the platform to settle again.
            let deadline = std::time::Instant::now() + READY_WITHIN;
            loop {
                match sqlx::PgPool::connect(&new_pg).await {
                    Ok(pool) => {
                        pool.close().await;
                        break;
                    }
                    Err(e) => anyhow::ensure!(
                        std::time::Instant::now() < deadline,
                        "PostgreSQL did not take the rotated password: {e}\n{}",
                        cluster.describe().await
                    ),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            cluster.wait_ready(READY_WITHIN, DEGRADED_GRACE).await?;
            assert!(
                sqlx::PgPool::connect(&old_pg).await.is_err(),
                "the old password is refused"
            );
            let url = cluster.url().await?;
            helpdesk_e2e::wait_ready_path(&url, "/auth/me", 401).await;
            helpdesk_e2e::walk(
                &url,
                &cluster.admin()?,
                None,
                helpdesk_e2e::Entry::ClusterIngress,
            )
            .await;
            let new_mq = amqp_url(&cluster)?;
            assert!(new_mq.contains("mq-rotated-by-an-admin"), "{new_mq}");
            let deadline = std::time::Instant::now() + READY_WITHIN;
            while let Err(e) = amqp_accepts(&new_mq).await {
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "RabbitMQ did not take the rotated password: {e}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            assert!(
                amqp_accepts(&old_mq).await.is_err(),
                "the old RabbitMQ password is refused"
            );
            anyhow::Ok(())
        })
        .await
    });
}

async fn amqp_accepts(url: &str) -> anyhow::Result<()> {
    let c = tokio::time::timeout(
        Duration::from_secs(10),
        lapin::Connection::connect(url, Default::default()),
    )
    .await??;
    let _ = c.close(200, "ok".into()).await;
    Ok(())
}
