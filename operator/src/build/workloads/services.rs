//! ServiceAccounts and the HTTP Services in front of the workloads.

use super::*;

pub const HTTP_SERVER_LABEL: &str = "helpdesk.dev/http-server";

pub(in crate::build) fn service_accounts(input: &BuildInput, out: &mut Vec<Child>) {
    let mut names_: Vec<(String, String)> = Component::ALL
        .iter()
        .map(|c| {
            (
                names::service_name(input.name(), *c),
                c.as_str().to_string(),
            )
        })
        .collect();
    if input.platform.spec.frontend.is_some() {
        names_.push((names::frontend_name(input.name()), "frontend".into()));
    }
    for (name, component) in names_ {
        let sa = ServiceAccount {
            metadata: input.meta(&name, &component),
            // None of the platform's pods talks to the Kubernetes API.
            automount_service_account_token: Some(false),
            ..Default::default()
        };
        out.push(child(Kind::ServiceAccount, &sa));
    }
}

pub(in crate::build) fn http_service(input: &BuildInput, name: &str, component: &str) -> Service {
    let mut meta = input.meta(name, component);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(METRICS_LABEL.into(), (component != "frontend").to_string());
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(names::selector_labels(input.name(), component)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: HTTP_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(in crate::build) fn services(input: &BuildInput, out: &mut Vec<Child>) {
    for c in Component::ALL {
        let svc = http_service(input, &names::service_name(input.name(), c), c.as_str());
        out.push(child(Kind::Service, &svc));
    }
    if input.platform.spec.frontend.is_some() {
        let svc = http_service(input, &names::frontend_name(input.name()), "frontend");
        out.push(child(Kind::Service, &svc));
    }
}
