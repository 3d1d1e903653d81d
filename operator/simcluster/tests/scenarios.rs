//! The operator's output, run: each scenario applies a `HelpdeskPlatform` to a simulated cluster
//! (real processes for every pod, see `helpdesk_simcluster`) and ends in a working platform or in
//! the status the operator must report. Needs root, PostgreSQL's and RabbitMQ's binaries on the
//! machine; each scenario has its own network namespace, datastores and files.

use std::sync::Arc;
use std::time::Duration;

use helpdesk_simcluster::{Cluster, Images, sandbox, service_binaries};

const MINIMAL: &str = include_str!("../../samples/minimal.yaml");

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
    let _ = std::fs::remove_dir_all(&work);
    if let Err(e) = result {
        panic!("scenario {name}: {e:#}");
    }
}

#[test]
fn the_minimal_sample_serves_the_whole_contract_through_its_ingress() {
    scenario("minimal", |sandbox, work, images| async move {
        let cluster =
            Cluster::start(sandbox, &work.join("cluster"), images, MINIMAL, vec![]).await?;
        let outcome = async {
            let p = cluster
                .wait_phase("Ready", Duration::from_secs(180))
                .await?;
            assert_eq!(p["status"]["version"], "0.1.0");
            let url = cluster.url().await?;
            helpdesk_e2e::wait_ready_path(&url, "/auth/me", 401).await;
            helpdesk_e2e::walk(&url, &cluster.admin()?, None).await;
            anyhow::Ok(())
        }
        .await;
        if outcome.is_err() {
            eprintln!("{}", cluster.describe().await);
        }
        cluster.shutdown().await;
        outcome
    });
}
