//! The end-to-end walk against a running platform behind a cluster ingress (see
//! `operator/scripts/kind-e2e.sh`): `E2E_BASE_URL`, `E2E_ADMIN_EMAIL`, `E2E_ADMIN_PASSWORD`, and
//! optionally `E2E_RESOLVE=host=ip:port`. Mail is not checked (no SMTP sink of ours there).

#[tokio::main]
async fn main() {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            eprintln!("{name} is required");
            std::process::exit(2)
        })
    };
    let admin = helpdesk_e2e::Admin {
        email: var("E2E_ADMIN_EMAIL"),
        password: var("E2E_ADMIN_PASSWORD"),
    };
    helpdesk_e2e::walk(
        &var("E2E_BASE_URL"),
        &admin,
        None,
        helpdesk_e2e::Entry::ClusterIngress,
    )
    .await;
    println!("end-to-end walk passed");
}
