//! End-to-end figure: the real `helpdesk-operator run` process against the in-memory API server
//! served over loopback HTTP, with N platforms. Measures time to converge, the operator's RSS and
//! the writes made once every platform is Ready.
//!
//!   cargo build -p helpdesk-operator
//!   cargo run -p helpdesk-operator --example fleet_figures -- [N=50] [path/to/helpdesk-operator]
//!
//! Watches are answered with a stream that never sends anything, so the operator works from its
//! initial lists and its requeues, like an operator on a quiet cluster.

use std::time::{Duration, Instant};

use axum::{Router, body::Body as AxumBody, extract::State};
use helpdesk_operator::controller::fake::FakeApi;
use http_body_util::BodyExt;
use serde_json::json;

async fn handle(
    State(fake): State<FakeApi>,
    req: axum::extract::Request,
) -> axum::response::Response {
    if req
        .uri()
        .query()
        .is_some_and(|q| q.contains("watch=true") || q.contains("watch=1"))
    {
        let stream = futures_util::stream::pending::<Result<Vec<u8>, std::io::Error>>();
        return axum::response::Response::builder()
            .header("content-type", "application/json")
            .body(AxumBody::from_stream(stream))
            .unwrap();
    }
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let req = http::Request::from_parts(parts, kube::client::Body::from(bytes.to_vec()));
    let resp = fake.serve(req).await;
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    axum::response::Response::from_parts(parts, AxumBody::from(bytes))
}

/// GET /metrics of the operator over a plain TCP connection.
async fn scrape(addr: std::net::SocketAddr) -> std::io::Result<String> {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr)?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .await?
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn ready_count(fake: &FakeApi, n: usize) -> usize {
    (0..n)
        .filter(|i| {
            fake.get(&format!(
                "/apis/helpdesk.dev/v1alpha1/namespaces/team{i}/helpdeskplatforms/helpdesk"
            ))
            .is_some_and(|p| p["status"]["phase"] == "Ready")
        })
        .count()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let binary = args.get(2).cloned().unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("exe");
        exe.parent()
            .and_then(|p| p.parent())
            .expect("target dir")
            .join("helpdesk-operator")
            .display()
            .to_string()
    });

    let fake = FakeApi::new();
    fake.simulate_controllers();
    for i in 0..n {
        fake.put(
            &format!("/apis/helpdesk.dev/v1alpha1/namespaces/team{i}/helpdeskplatforms/helpdesk"),
            json!({"apiVersion": "helpdesk.dev/v1alpha1", "kind": "HelpdeskPlatform",
                   "metadata": {"name": "helpdesk", "namespace": format!("team{i}")},
                   "spec": {"version": "0.1.0", "ingress": {"host": format!("team{i}.helpdesk.example.com")},
                            "services": {"ticket": {"replicas": 2}}, "frontend": {"image": "fe:1"}}}),
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().fallback(handle).with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = std::env::temp_dir().join(format!("fleet-figures-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"http://{addr}\"}}}}]\nusers: [{{name: fake, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: default}}}}]\ncurrent-context: fake\n"
        ),
    )?;
    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let mut child = tokio::process::Command::new(&binary)
        .arg("run")
        .env("KUBECONFIG", &kubeconfig)
        .env("METRICS_ADDR", metrics_addr.to_string())
        .env("RUST_LOG", "warn")
        .env("POD_NAME", "fleet-figures")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().expect("pid");
    let start = Instant::now();
    let idle_rss = {
        tokio::time::sleep(Duration::from_millis(300)).await;
        rss_kib(pid)
    };
    // Platforms need two passes (migrations, then Deployments); the second comes from the 30 s requeue.
    let deadline = start + Duration::from_secs(150);
    while ready_count(&fake, n) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let converged = start.elapsed();
    let ready = ready_count(&fake, n);
    let peak_rss = rss_kib(pid);
    // Lease renewals (every 5 s) are the leader's heartbeat, not reconcile writes.
    let child_writes = |f: &FakeApi| {
        f.writes()
            .iter()
            .filter(|r| !r.path.contains("/leases/"))
            .count()
    };
    let writes_before = child_writes(&fake);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes_after = child_writes(&fake);
    let rss = rss_kib(pid);
    let metrics = scrape(metrics_addr).await.unwrap_or_default();
    child.kill().await.ok();
    std::fs::remove_dir_all(&dir).ok();
    println!(
        "FIGURES fleet: {ready}/{n} platforms Ready after {converged:?}; operator RSS {idle_rss} KiB at start, {peak_rss} KiB when converged, {rss} KiB 10 s later; {} writes (besides Lease renewals) in those 10 s",
        writes_after - writes_before
    );
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let count = value("helpdesk_operator_reconcile_duration_seconds_count");
    let sum = value("helpdesk_operator_reconcile_duration_seconds_sum");
    if count > 0.0 {
        println!(
            "FIGURES fleet: {count} reconciles, {:.1} ms average (from the operator's /metrics), {} API writes counted by the operator",
            sum / count * 1000.0,
            metrics
                .lines()
                .filter(|l| l.starts_with("helpdesk_operator_api_writes_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        );
    }
    if ready < n {
        anyhow::bail!("not every platform converged");
    }
    if writes_after > writes_before {
        anyhow::bail!("the operator kept writing after convergence");
    }
    Ok(())
}
