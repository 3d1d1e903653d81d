//! The services' rendered preStop hook, run with the real service binaries as the kubelet would
//! (in the container, with none of the service's configuration): it waits, then exits 0, well
//! within the pod's grace period. No root needed.

use std::time::{Duration, Instant};

use helpdesk_operator::build::{Kind, typed};
use helpdesk_operator::crd::HelpdeskPlatform;
use helpdesk_operator::render::render_platform;
use k8s_openapi::api::apps::v1::Deployment;

#[test]
fn the_rendered_pre_stop_hook_waits_then_exits_cleanly() {
    let bin_dir = helpdesk_simcluster::service_binaries().expect("the service binaries");
    let mut p: HelpdeskPlatform =
        serde_yaml::from_str(include_str!("../../../samples/minimal.yaml")).unwrap();
    p.metadata.namespace.get_or_insert_with(|| "support".into());
    let children = render_platform(&p, &Default::default()).unwrap();
    let deployments: Vec<Deployment> = children
        .iter()
        .filter(|c| c.kind == Kind::Deployment)
        .map(typed)
        .collect();
    assert_eq!(deployments.len(), 5);
    let runs: Vec<_> = deployments
        .into_iter()
        .map(|d| {
            let pod = d.spec.template.spec.unwrap();
            let c = &pod.containers[0];
            let command = c
                .lifecycle
                .as_ref()
                .unwrap()
                .pre_stop
                .as_ref()
                .unwrap()
                .exec
                .as_ref()
                .unwrap()
                .command
                .clone()
                .unwrap();
            // The image's entrypoint is this service's binary.
            let binary = bin_dir.join(
                c.image
                    .as_deref()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .split(':')
                    .next()
                    .unwrap(),
            );
            assert_eq!(command[0], "/usr/local/bin/service");
            let grace = Duration::from_secs(pod.termination_grace_period_seconds.unwrap() as u64);
            std::thread::spawn(move || {
                let start = Instant::now();
                let out = std::process::Command::new(&binary)
                    .args(&command[1..])
                    .env_clear()
                    .output()
                    .unwrap();
                (binary, out, start.elapsed(), grace)
            })
        })
        .collect();
    for run in runs {
        let (binary, out, took, grace) = run.join().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            took >= Duration::from_secs(5),
            "{}: returned after {took:?}",
            binary.display()
        );
        assert!(
            took + Duration::from_secs(30) < grace,
            "{}: {took:?} vs {grace:?}",
            binary.display()
        );
    }
}
