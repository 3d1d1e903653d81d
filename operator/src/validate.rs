//! Validation (pure): turns a spec plus the cluster's capabilities into resolved choices, or into
//! the list of problems reported in status.

use crate::crd::{
    CloudNativePgSpec, ExternalPostgres, ExternalRabbitmq, HelpdeskPlatform, IngressKind,
    ManagedPostgres, ManagedRabbitmq, RabbitmqClusterOperatorSpec, ServiceMonitorMode,
};
use crate::names;

/// Which optional APIs the cluster serves (discovered by the controller, flags in `render`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `route.openshift.io/v1` Route; also means OpenShift's random UIDs.
    pub routes: bool,
    /// `postgresql.cnpg.io/v1` Cluster.
    pub cloud_native_pg: bool,
    /// `rabbitmq.com/v1beta1` RabbitmqCluster.
    pub rabbitmq_operator: bool,
    /// `monitoring.coreos.com/v1` ServiceMonitor.
    pub service_monitor: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PostgresMode {
    Managed(ManagedPostgres),
    CloudNativePg(CloudNativePgSpec),
    External(ExternalPostgres),
}

#[derive(Clone, Debug, PartialEq)]
pub enum RabbitmqMode {
    Managed(ManagedRabbitmq),
    ClusterOperator(RabbitmqClusterOperatorSpec),
    External(ExternalRabbitmq),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposure {
    Ingress,
    Route,
}

/// A validated platform: every choice the builders need, made once.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub postgres: PostgresMode,
    pub rabbitmq: RabbitmqMode,
    pub exposure: Exposure,
    pub service_monitor: bool,
    /// Random UIDs (OpenShift): leave runAsUser/fsGroup to the platform.
    pub openshift: bool,
    pub jwt_secret: String,
    pub admin_secret: String,
    /// Where traces go: the OTLP/HTTP base URL and its port.
    pub otlp: Option<(String, u16)>,
}

impl Resolved {
    pub fn url(&self, p: &HelpdeskPlatform) -> String {
        format!("https://{}", p.spec.ingress.host)
    }
}

/// One problem of a platform, at the path of the field that has it:
/// `spec.services.ticket.replicas: must be >= 0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// `spec.services.ticket.replicas`, `metadata.name`, `spec.servces`.
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Checks what the schema cannot (or what `render` gets without an API server to enforce it).
/// Every problem is reported, each with its field's path.
pub fn validate(p: &HelpdeskPlatform, caps: &Capabilities) -> Result<Resolved, Vec<FieldError>> {
    let s = &p.spec;
    // Fields the operator does not know (found when the spec was read), then each field's rules.
    let mut errs: Vec<FieldError> = s.unknown_fields.clone();
    crate::checks::spec(p, &mut errs);
    let err = |path: &str, message: String| FieldError::new(path, message);
    let name = p.metadata.name.clone().unwrap_or_default();
    let namespace = p
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    if !is_dns_name(&s.ingress.host) {
        errs.push(err(
            "spec.ingress.host",
            format!("{:?} is not a DNS name", s.ingress.host),
        ));
    }
    if !s.auth.token_ttl.ends_with(['s', 'm', 'h', 'd'])
        || s.auth.token_ttl[..s.auth.token_ttl.len().saturating_sub(1)]
            .parse::<u64>()
            .is_err()
    {
        errs.push(err(
            "spec.auth.tokenTtl",
            format!("{:?} must look like 7d, 12h, 30m", s.auth.token_ttl),
        ));
    }

    let pg = &s.postgres;
    let postgres = match (&pg.managed, &pg.cloud_native_pg, &pg.external) {
        (None, None, None) => Some(PostgresMode::Managed(ManagedPostgres::default())),
        (Some(m), None, None) => Some(PostgresMode::Managed(m.clone())),
        (None, Some(c), None) => {
            if !caps.cloud_native_pg {
                errs.push(err("spec.postgres.cloudNativePG", "the CloudNativePG Cluster API (postgresql.cnpg.io/v1) is not installed in this cluster".into()));
            }
            Some(PostgresMode::CloudNativePg(c.clone()))
        }
        (None, None, Some(e)) => Some(PostgresMode::External(e.clone())),
        _ => {
            errs.push(err(
                "spec.postgres",
                "set exactly one of managed, cloudNativePG, external".into(),
            ));
            None
        }
    };
    let mq = &s.rabbitmq;
    let rabbitmq = match (&mq.managed, &mq.rabbitmq_cluster_operator, &mq.external) {
        (None, None, None) => Some(RabbitmqMode::Managed(ManagedRabbitmq::default())),
        (Some(m), None, None) => Some(RabbitmqMode::Managed(m.clone())),
        (None, Some(o), None) => {
            if !caps.rabbitmq_operator {
                errs.push(err("spec.rabbitmq.rabbitmqClusterOperator", "the RabbitmqCluster API (rabbitmq.com/v1beta1) is not installed in this cluster".into()));
            }
            Some(RabbitmqMode::ClusterOperator(o.clone()))
        }
        (None, None, Some(e)) => Some(RabbitmqMode::External(e.clone())),
        _ => {
            errs.push(err(
                "spec.rabbitmq",
                "set exactly one of managed, rabbitmqClusterOperator, external".into(),
            ));
            None
        }
    };
    let exposure = match s.ingress.kind {
        IngressKind::Auto if caps.routes => Exposure::Route,
        IngressKind::Auto | IngressKind::Ingress => Exposure::Ingress,
        IngressKind::Route => {
            if !caps.routes {
                errs.push(err(
                    "spec.ingress.kind",
                    "is route but the Route API (route.openshift.io/v1) is not installed".into(),
                ));
            }
            Exposure::Route
        }
    };
    let service_monitor = match &s.monitoring.service_monitor {
        ServiceMonitorMode::Auto => caps.service_monitor,
        ServiceMonitorMode::Enabled => {
            if !caps.service_monitor {
                errs.push(err("spec.monitoring.serviceMonitor", "is true but the ServiceMonitor API (monitoring.coreos.com/v1) is not installed".into()));
            }
            true
        }
        ServiceMonitorMode::Disabled => false,
        ServiceMonitorMode::Invalid(v) => {
            errs.push(err(
                "spec.monitoring.serviceMonitor",
                format!("must be auto, true or false, not {v}"),
            ));
            false
        }
    };
    let otlp = match s.monitoring.otlp_endpoint.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(url) => match otlp_port(url) {
            Some(port) => Some((url.trim_end_matches('/').to_string(), port)),
            None => {
                errs.push(err(
                    "spec.monitoring.otlpEndpoint",
                    format!("must be an http(s) URL with a host, like http://otel-collector.observability:4318, not {url}"),
                ));
                None
            }
        },
    };
    for (field, ns) in [
        (
            "spec.ingress.controllerNamespace",
            &s.ingress.controller_namespace,
        ),
        (
            "spec.monitoring.prometheusNamespace",
            &s.monitoring.prometheus_namespace,
        ),
    ] {
        if let Some(ns) = ns
            && (ns.len() > 63 || ns.contains('.') || !is_dns_name(ns))
        {
            errs.push(err(field, format!("{ns:?} is not a namespace name")));
        }
    }

    match (postgres, rabbitmq) {
        (Some(postgres), Some(rabbitmq)) if errs.is_empty() => Ok(Resolved {
            jwt_secret: s
                .auth
                .signing_key_secret_ref
                .as_ref()
                .map(|r| r.name.clone())
                .unwrap_or_else(|| names::jwt_secret_default(&name)),
            admin_secret: s
                .auth
                .bootstrap_admin_secret_ref
                .as_ref()
                .map(|r| r.name.clone())
                .unwrap_or_else(|| names::admin_secret_default(&name)),
            uid: p.metadata.uid.clone().unwrap_or_default(),
            name,
            namespace,
            postgres,
            rabbitmq,
            exposure,
            service_monitor,
            openshift: caps.routes,
            otlp,
        }),
        _ => Err(errs),
    }
}

/// The port of an http(s) URL with a host (the scheme's default when none is given).
fn otlp_port(url: &str) -> Option<u16> {
    let uri: http::Uri = url.parse().ok()?;
    let default = match uri.scheme_str()? {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    uri.host().filter(|h| !h.is_empty())?;
    Some(uri.port_u16().unwrap_or(default))
}

fn is_dns_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(spec: &str) -> HelpdeskPlatform {
        serde_yaml::from_str(&format!(
            "apiVersion: helpdesk.dev/v1alpha1\nkind: HelpdeskPlatform\nmetadata: {{name: hd, namespace: ns}}\nspec:\n{spec}"
        ))
        .unwrap()
    }

    #[test]
    fn minimal_spec_resolves_to_managed_datastores_and_ingress() {
        let r = validate(
            &platform("  ingress: {host: helpdesk.example.com}"),
            &Capabilities::default(),
        )
        .unwrap();
        assert!(matches!(r.postgres, PostgresMode::Managed(_)));
        assert!(matches!(r.rabbitmq, RabbitmqMode::Managed(_)));
        assert_eq!(r.exposure, Exposure::Ingress);
        assert!(!r.service_monitor);
        assert_eq!(r.jwt_secret, "hd-jwt");
        assert_eq!(r.admin_secret, "hd-admin");
        assert_eq!(r.otlp, None);
        let traced = validate(
            &platform("  ingress: {host: a.example.com}\n  monitoring: {otlpEndpoint: \"https://otel.example.com\"}"),
            &Capabilities::default(),
        )
        .unwrap();
        assert_eq!(traced.otlp, Some(("https://otel.example.com".into(), 443)));
    }

    #[test]
    fn auto_picks_route_and_service_monitor_when_the_apis_exist() {
        let caps = Capabilities {
            routes: true,
            service_monitor: true,
            ..Default::default()
        };
        let r = validate(&platform("  ingress: {host: a.example.com}"), &caps).unwrap();
        assert_eq!(r.exposure, Exposure::Route);
        assert!(r.service_monitor && r.openshift);
    }

    #[test]
    fn problems_are_all_reported() {
        let errs = validate(
            &platform(
                r#"  version: "bad tag!"
  ingress: {host: "Not_A_Host", kind: route}
  postgres: {managed: {}, external: {secretRef: {name: x}}}
  rabbitmq: {rabbitmqClusterOperator: {}}
  services: {ticket: {autoscaling: {minReplicas: 5, maxReplicas: 2}}}
  auth: {tokenTtl: "seven days"}
  monitoring: {otlpEndpoint: "otel-collector:4318", prometheusNamespace: "Mon"}
"#,
            ),
            &Capabilities::default(),
        )
        .unwrap_err();
        let all: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let all = all.join("\n");
        for needle in [
            "spec.version: \"bad tag!\" is not a valid image tag",
            "spec.ingress.host: \"Not_A_Host\" is not a DNS name",
            "spec.postgres: set exactly one",
            "spec.rabbitmq.rabbitmqClusterOperator: the RabbitmqCluster API",
            "spec.ingress.kind: is route but the Route API",
            "spec.services.ticket.autoscaling.minReplicas: 5 must not exceed maxReplicas (2)",
            "spec.auth.tokenTtl: \"seven days\" must look like",
            "spec.monitoring.otlpEndpoint: must be an http(s) URL",
            "spec.monitoring.prometheusNamespace: \"Mon\" is not a namespace name",
        ] {
            assert!(all.contains(needle), "missing {needle} in {all}");
        }
    }

    #[test]
    fn every_error_names_its_field_path() {
        let errs = validate(
            &platform(
                "  ingress: {host: a.example.com}\n  services: {ticket: {replicas: -1}, user: {replicas: 101}}",
            ),
            &Capabilities::default(),
        )
        .unwrap_err();
        assert_eq!(
            errs,
            [
                FieldError::new("spec.services.user.replicas", "must be <= 100"),
                FieldError::new("spec.services.ticket.replicas", "must be >= 0"),
            ]
        );
        assert_eq!(
            errs[1].to_string(),
            "spec.services.ticket.replicas: must be >= 0"
        );
    }

    #[test]
    fn unknown_fields_are_errors_with_their_paths() {
        let errs: Vec<String> = validate(
            &platform(
                "  ingress: {host: a.example.com}\n  servces: {}\n  services: {tiket: {replicas: 2}}",
            ),
            &Capabilities::default(),
        )
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(errs[0].starts_with("spec.servces: unknown field, did you mean services?"));
        assert!(errs[1].starts_with("spec.services.tiket: unknown field, did you mean ticket?"));
    }

    #[test]
    fn delegated_modes_need_their_crds() {
        let p = platform("  ingress: {host: a.b}\n  postgres: {cloudNativePG: {instances: 3}}");
        assert!(validate(&p, &Capabilities::default()).is_err());
        let caps = Capabilities {
            cloud_native_pg: true,
            ..Default::default()
        };
        let r = validate(&p, &caps).unwrap();
        assert!(matches!(r.postgres, PostgresMode::CloudNativePg(ref c) if c.instances == 3));
    }
}
