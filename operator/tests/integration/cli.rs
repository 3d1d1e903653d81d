//! The `helpdesk-operator` commands as a user runs them.

use std::io::Write;
use std::process::{Command, Stdio};

fn operator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_helpdesk-operator"))
}

#[test]
fn crd_prints_the_committed_crd() {
    let out = operator().arg("crd").output().unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/helpdeskplatforms.helpdesk.dev.yaml"
    ))
    .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}

#[test]
fn render_prints_every_object_of_a_sample() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/minimal.yaml");
    let out = operator()
        .args(["render", "--check", "-f", sample])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let kinds: Vec<String> = serde_yaml::Deserializer::from_str(&text)
        .filter_map(|d| {
            let v = <serde_yaml::Value as serde::Deserialize>::deserialize(d).ok()?;
            Some(v["kind"].as_str()?.to_string())
        })
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "Deployment").count(), 5);
    assert!(kinds.contains(&"Ingress".to_string()));
    assert!(!kinds.contains(&"Route".to_string()));
}

/// Runs `helpdesk-operator <args>` with `stdin` as its input.
fn run_with_stdin(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = operator()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

const HEAD: &str =
    "apiVersion: helpdesk.dev/v1alpha1\nkind: HelpdeskPlatform\nmetadata: {name: x}\n";

#[test]
fn render_refuses_an_invalid_platform_naming_every_field() {
    let out = run_with_stdin(
        &["render", "-f", "-"],
        &format!(
            "{HEAD}spec:\n  ingress: {{host: helpdesk.example.com}}\n  services: {{ticket: {{replicas: -1}}}}\n  postgres: {{managed: {{storage: 10GB}}}}\n"
        ),
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.services.ticket.replicas: must be >= 0")
            && err.contains("spec.postgres.managed.storage: \"10GB\" is not a Kubernetes quantity"),
        "{err}"
    );
}

/// Issue 11, item 8: misspelled fields are errors with their paths, as with
/// `kubectl --validate=strict`, wherever they are.
#[test]
fn render_refuses_misspelled_fields_with_their_paths() {
    let out = run_with_stdin(
        &["render", "-f", "-"],
        "apiVersion: helpdesk.dev/v1alpha1\nkind: HelpdeskPlatform\nmetadata:\n  name: x\n  labls: {a: b}\nspec:\n  ingress: {host: helpdesk.example.com}\n  servces: {ticket: {replicas: 2}}\n  services: {tiket: {replicas: 2}}\n",
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "invalid HelpdeskPlatform x",
        "metadata.labls: unknown field, did you mean labels?",
        "spec.servces: unknown field, did you mean services? (expected one of: ",
        "spec.services.tiket: unknown field, did you mean ticket? (expected one of: admin, audit, notification, ticket, user)",
    ] {
        assert!(err.contains(needle), "{needle} not in {err}");
    }
    // A value of the wrong type names its path too.
    let out = run_with_stdin(
        &["render", "-f", "-"],
        &format!(
            "{HEAD}spec:\n  ingress: {{host: helpdesk.example.com}}\n  services: {{ticket: {{replicas: two}}}}\n"
        ),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.services.ticket.replicas: invalid type"),
        "{err}"
    );
}

/// Issue 11, item 8: offline there is no cluster to ask, so the APIs a resource explicitly
/// names are assumed, and the output says so at the top.
#[test]
fn render_assumes_the_apis_a_resource_names_and_says_so() {
    let out = run_with_stdin(
        &["render", "--check", "-f", "-"],
        &format!(
            "{HEAD}spec:\n  ingress: {{host: helpdesk.example.com, kind: route}}\n  postgres: {{cloudNativePG: {{instances: 3}}}}\n  rabbitmq: {{rabbitmqClusterOperator: {{}}}}\n"
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().next(),
        Some(
            "# rendered assuming these APIs exist: postgresql.cnpg.io/v1 Cluster (spec.postgres.cloudNativePG), \
             rabbitmq.com/v1beta1 RabbitmqCluster (spec.rabbitmq.rabbitmqClusterOperator), \
             route.openshift.io/v1 Route (spec.ingress.kind: route; OpenShift, random UIDs)"
        )
    );
    for kind in ["kind: Cluster", "kind: RabbitmqCluster", "kind: Route"] {
        assert!(text.contains(kind), "{kind} missing");
    }
    assert!(!text.contains("kind: Ingress\n"));

    // Flags still force an API the resource does not name; nothing assumed, no comment.
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/minimal.yaml");
    let out = operator()
        .args(["render", "-f", sample, "--service-monitor"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(
        "# rendered assuming these APIs exist: monitoring.coreos.com/v1 ServiceMonitor (--service-monitor)\n---\n"
    ));
    assert!(text.contains("kind: ServiceMonitor"));
    let out = operator().args(["render", "-f", sample]).output().unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().starts_with("---\n"));
}

/// `render ... | head` stops reading early: that is not a crash (it used to panic on EPIPE).
#[test]
fn render_into_a_reader_that_stops_early_is_not_a_crash() {
    use std::io::{BufRead, BufReader};
    let sample =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/samples/full.yaml")).unwrap();
    // Two platforms: far more output than a pipe holds, so the write meets the closed pipe.
    let input = format!("{sample}\n---\n{sample}");
    let mut child = operator()
        .args(["render", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "---\n");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
}
