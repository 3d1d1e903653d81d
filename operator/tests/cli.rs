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

#[test]
fn render_refuses_an_invalid_platform_with_the_reason() {
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
        .write_all(b"apiVersion: helpdesk.dev/v1alpha1\nkind: HelpdeskPlatform\nmetadata: {name: x}\nspec:\n  ingress: {host: helpdesk.example.com}\n  postgres: {cloudNativePG: {}}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CloudNativePG"), "{err}");
}
