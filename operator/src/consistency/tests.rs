//! Tests of the cross-object checks: every sample platform is consistent, the samples give each
//! service what the contract requires, and contract breaches and broken references are caught.

use helpdesk_contract::{Command, var};

use super::contract::command_of;
use super::*;
use crate::names::Component;
use crate::render::render_platform;
use crate::validate::Capabilities;

fn samples() -> Vec<(&'static str, Capabilities)> {
    let all = Capabilities {
        routes: false,
        cloud_native_pg: true,
        rabbitmq_operator: true,
        service_monitor: true,
    };
    vec![
        ("minimal.yaml", Capabilities::default()),
        ("full.yaml", Capabilities::default()),
        ("external.yaml", Capabilities::default()),
        ("delegated.yaml", all),
        (
            "openshift.yaml",
            Capabilities {
                routes: true,
                ..Default::default()
            },
        ),
    ]
}

fn sample(file: &str, caps: &Capabilities) -> (HelpdeskPlatform, Vec<Child>) {
    let path = format!("{}/samples/{file}", env!("CARGO_MANIFEST_DIR"));
    let p: HelpdeskPlatform =
        serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let children = render_platform(&p, caps).unwrap();
    (p, children)
}

#[test]
fn every_sample_platform_is_consistent() {
    for (file, caps) in samples() {
        let (p, children) = sample(file, &caps);
        let mut errs = check(&children, &secrets_provided_elsewhere(&p));
        errs.extend(check_contract(&children, caps.routes));
        assert!(errs.is_empty(), "{file}:\n{}", errs.join("\n"));
    }
}

/// The service container of each Deployment and Job, with its service and command.
fn service_containers(children: &[Child]) -> Vec<(String, Component, Command, Container)> {
    pods_of(children)
        .into_iter()
        .flat_map(|p| {
            containers(&p.template).into_iter().filter_map(move |c| {
                let s = service_of_image(c.image.as_deref()?)?;
                Some((p.owner.clone(), s, command_of(&c)?, c))
            })
        })
        .collect()
}

#[test]
fn the_minimal_and_full_samples_give_every_service_what_the_contract_requires() {
    for file in ["minimal.yaml", "full.yaml"] {
        let (_, children) = sample(file, &Capabilities::default());
        let found = service_containers(&children);
        for command in Command::ALL {
            let mut services: Vec<Component> = found
                .iter()
                .filter(|(_, _, c, _)| *c == command)
                .map(|(_, s, _, _)| *s)
                .collect();
            services.sort();
            assert_eq!(
                services,
                Component::ALL,
                "{file}: one {command} pod per service"
            );
        }
        for (owner, service, command, c) in &found {
            let kind = if *command == Command::Serve {
                "Deployment/"
            } else {
                "Job/"
            };
            assert!(owner.starts_with(kind), "{file}: {owner} runs {command}");
            let names: BTreeSet<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
            let missing = service.missing(*command, |v| names.contains(v));
            assert!(
                missing.is_empty(),
                "{file}: {owner} ({}) lacks {missing:?}",
                service.binary()
            );
            if *command == Command::Migrate {
                // The Job gets the database and the log filter: nothing migrate cannot use.
                let extra: Vec<_> = names
                    .iter()
                    .filter(|n| {
                        **n != var::RUST_LOG
                            && !service
                                .requires(Command::Migrate)
                                .iter()
                                .any(|r| r.names().any(|x| x == **n))
                    })
                    .collect();
                assert!(extra.is_empty(), "{file}: {owner} also gets {extra:?}");
            }
        }
        assert!(
            check_contract(&children, false).is_empty(),
            "{file}: {:?}",
            check_contract(&children, false)
        );
    }
}

#[test]
fn contract_breaches_are_caught() {
    let (_, children) = sample("minimal.yaml", &Capabilities::default());
    let edit = |kind: Kind, name: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut out = children.clone();
        let c = out
            .iter_mut()
            .find(|c| c.kind == kind && c.name() == name)
            .unwrap();
        f(&mut c.obj.data);
        check_contract(&out, false).join("\n")
    };
    let drop_env = |name: &'static str| {
        move |d: &mut serde_json::Value| {
            let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array_mut()
                .unwrap();
            env.retain(|e| e["name"] != name);
        }
    };
    let errs = edit(
        Kind::Deployment,
        "helpdesk-ticket",
        &drop_env(var::JWT_PUBLIC_KEY_FILE),
    );
    assert!(
        errs.contains("ticket-service serve requires JWT_PUBLIC_KEY (or JWT_PUBLIC_KEY_FILE)"),
        "{errs}"
    );
    let errs = edit(
        Kind::Deployment,
        "helpdesk-admin",
        &drop_env(var::USER_SERVICE_URL),
    );
    assert!(
        errs.contains("admin-service serve requires USER_SERVICE_URL"),
        "{errs}"
    );
    let errs = edit(
        Kind::Deployment,
        "helpdesk-ticket",
        &drop_env(var::AUDIT_SERVICE_URL),
    );
    assert!(errs.contains("gets no AUDIT_SERVICE_URL"), "{errs}");
    let errs = edit(
        Kind::Job,
        "helpdesk-audit-migrate-0-1-0",
        &drop_env(var::DATABASE_URL),
    );
    assert!(
        errs.contains("audit-service migrate requires DATABASE_URL"),
        "{errs}"
    );
    let errs = edit(Kind::Deployment, "helpdesk-user", &|d| {
        d["spec"]["template"]["spec"]["securityContext"]["fsGroup"] = serde_json::Value::Null;
    });
    assert!(errs.contains("Secret volume jwt (mode 0o440)"), "{errs}");
    let errs = edit(Kind::Deployment, "helpdesk-user", &|d| {
        let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap();
        for e in env {
            if e["name"] == var::JWT_PRIVATE_KEY_FILE {
                e["value"] = "/etc/helpdesk/jwt/private-key.pem".into();
            }
        }
    });
    assert!(
        errs.contains("JWT_PRIVATE_KEY_FILE=/etc/helpdesk/jwt/private-key.pem is not a file"),
        "{errs}"
    );
}

#[test]
fn broken_references_are_caught() {
    let p: HelpdeskPlatform = serde_yaml::from_str(
        "apiVersion: helpdesk.dev/v1alpha1\nkind: HelpdeskPlatform\nmetadata: {name: hd, namespace: ns}\nspec: {ingress: {host: a.example.com}}",
    )
    .unwrap();
    let mut children = render_platform(&p, &Capabilities::default()).unwrap();
    // Drop the ConfigMap and break a Service selector.
    children.retain(|c| {
        c.kind != Kind::ConfigMap && !(c.kind == Kind::Service && c.name() == "hd-audit")
    });
    let svc = children
        .iter_mut()
        .find(|c| c.kind == Kind::Service && c.name() == "hd-ticket")
        .unwrap();
    svc.obj.data["spec"]["selector"]["app.kubernetes.io/component"] = "tickets".into();
    let errs = check(&children, &BTreeSet::new()).join("\n");
    assert!(errs.contains("ConfigMap hd-config has no key"), "{errs}");
    assert!(
        errs.contains("Service hd-ticket: selector matches no pods"),
        "{errs}"
    );
    assert!(
        errs.contains("Ingress hd: backend hd-audit:http does not exist"),
        "{errs}"
    );
}
