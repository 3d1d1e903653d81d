use super::super::fixtures::*;
use super::*;

fn env_of(d: &Deployment) -> Vec<EnvVar> {
    d.spec.template.spec.as_ref().unwrap().containers[0]
        .env
        .clone()
        .unwrap()
}
fn env_names(d: &Deployment) -> Vec<String> {
    env_of(d).into_iter().map(|e| e.name).collect()
}

const SPEC: &str = r#"  version: "0.2.0"
  ingress: {host: helpdesk.example.com}
  image: {registry: "registry.local/hd/", pullPolicy: Always, pullSecrets: [regcred]}
  smtp: {host: smtp.example.com, credentialsSecretRef: {name: smtp-creds}, staffNotifyEmail: staff@example.com}
  services:
    ticket:
      replicas: 3
      env: [{name: RUST_LOG, value: debug}]
      nodeSelector: {pool: apps}
      tolerations: [{key: dedicated, operator: Equal, value: apps, effect: NoSchedule}]
    audit:
      autoscaling: {minReplicas: 2, maxReplicas: 6, targetCPUUtilizationPercentage: 60}
"#;

#[test]
fn deployment_has_probes_security_and_image() {
    let all = build_default(SPEC);
    let d: Deployment = get(&all, Kind::Deployment, "hd-ticket");
    let spec = &d.spec;
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some("registry.local/hd/ticket-service:0.2.0")
    );
    assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
    let path = |p: &Option<Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
    assert_eq!(path(&c.liveness_probe).as_deref(), Some("/health"));
    assert_eq!(path(&c.readiness_probe).as_deref(), Some("/ready"));
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(),
        &["ALL"]
    );
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    // The images' user, and fsGroup so the JWT keys (mode 0440) are readable.
    assert_eq!(
        (psc.run_as_user, psc.run_as_group, psc.fs_group),
        (Some(65532), Some(65532), Some(65532))
    );
    assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
    assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "apps");
    assert_eq!(
        pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
    assert_eq!(
        spec.strategy.as_ref().unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );
}

#[test]
fn pods_wait_for_endpoint_removal_and_get_the_whole_drain_time() {
    let all = build_default(SPEC);
    for svc in [
        "hd-user",
        "hd-ticket",
        "hd-notification",
        "hd-audit",
        "hd-admin",
    ] {
        let d: Deployment = get(&all, Kind::Deployment, svc);
        let pod = d.spec.template.spec.unwrap();
        let c = &pod.containers[0];
        let pre_stop = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
        // The image's own binary (distroless: no shell, no sleep) with the contract's argument.
        assert_eq!(
            pre_stop.exec.as_ref().unwrap().command.as_deref().unwrap(),
            ["/usr/local/bin/service", "pre-stop"]
        );
        // SIGKILL must not come before preStop's sleep plus the workers' drain.
        let needed = lifecycle::PRE_STOP_DELAY_SECS as i64 + lifecycle::SHUTDOWN_DRAIN_SECS as i64;
        let grace = pod.termination_grace_period_seconds.unwrap();
        assert!(grace > needed, "{svc}: grace {grace}s <= {needed}s");
    }
}

#[test]
fn service_pods_run_as_the_images_user_except_on_openshift() {
    let ids = |pod: &PodSpec| {
        let psc = pod.security_context.clone().unwrap();
        (psc.run_as_user, psc.run_as_group, psc.fs_group)
    };
    let uid = Some(SERVICE_IMAGE_UID);
    let all = build_default(SPEC);
    for c in Component::ALL {
        let d: Deployment = get(&all, Kind::Deployment, &format!("hd-{}", c.as_str()));
        assert_eq!(ids(&d.spec.template.spec.unwrap()), (uid, uid, uid), "{c}");
        let j: Job = get(&all, Kind::Job, &format!("hd-{}-migrate-0-2-0", c.as_str()));
        let pod = j.spec.unwrap().template.spec.unwrap();
        assert_eq!(ids(&pod), (uid, uid, uid), "{c} migration");
    }
    let openshift = build_with(
        SPEC,
        crate::validate::Capabilities {
            routes: true,
            ..Default::default()
        },
    );
    for c in Component::ALL {
        let d: Deployment = get(&openshift, Kind::Deployment, &format!("hd-{}", c.as_str()));
        let pod = d.spec.template.spec.unwrap();
        assert_eq!(ids(&pod), (None, None, None), "the SCC assigns them");
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    }
    let dockerfile = concat!(env!("CARGO_MANIFEST_DIR"), "/../Dockerfile");
    let text = std::fs::read_to_string(dockerfile).unwrap();
    assert!(
        text.contains(&format!("USER {SERVICE_IMAGE_UID}:{SERVICE_IMAGE_UID}")),
        "the service images run as the contract's UID"
    );
}

#[test]
fn only_user_service_gets_the_private_key_and_admin() {
    let all = build_default(SPEC);
    for c in Component::ALL {
        let d: Deployment = get(&all, Kind::Deployment, &format!("hd-{}", c.as_str()));
        let names = env_names(&d);
        let pod = d.spec.template.spec.unwrap();
        let items = pod.volumes.unwrap()[0]
            .secret
            .clone()
            .unwrap()
            .items
            .unwrap();
        let has_private = items.iter().any(|i| i.key == "private.pem");
        assert_eq!(has_private, c == Component::User, "{c:?}");
        assert_eq!(
            names.contains(&var::JWT_PRIVATE_KEY_FILE.to_string()),
            c == Component::User
        );
        assert_eq!(
            names.contains(&var::BOOTSTRAP_ADMIN_PASSWORD.to_string()),
            c == Component::User
        );
        for common in [
            var::BIND_ADDR,
            var::DATABASE_URL,
            var::AMQP_URL,
            var::SERVICE_TOKEN,
            var::JWT_PUBLIC_KEY_FILE,
            var::FRONTEND_BASE_URL,
        ] {
            assert!(names.contains(&common.to_string()), "{c:?} lacks {common}");
        }
    }
}

#[test]
fn peers_and_smtp_env() {
    let all = build_default(SPEC);
    let ticket: Deployment = get(&all, Kind::Deployment, "hd-ticket");
    assert!(env_names(&ticket).contains(&var::AUDIT_SERVICE_URL.into()));
    let admin: Deployment = get(&all, Kind::Deployment, "hd-admin");
    assert!(env_names(&admin).contains(&var::USER_SERVICE_URL.into()));
    let n: Deployment = get(&all, Kind::Deployment, "hd-notification");
    let names = env_names(&n);
    for k in [
        var::SMTP_HOST,
        var::SMTP_PORT,
        var::SMTP_TLS,
        var::SMTP_USERNAME,
        var::SMTP_PASSWORD,
        var::MAIL_FROM,
        var::STAFF_NOTIFY_EMAIL,
    ] {
        assert!(names.contains(&k.to_string()), "notification lacks {k}");
    }
    let cm: ConfigMap = get(&all, Kind::ConfigMap, "hd-config");
    let data = cm.data.unwrap();
    assert_eq!(data[var::USER_SERVICE_URL], "http://hd-user:8080");
    assert_eq!(data[var::AUDIT_SERVICE_URL], "http://hd-audit:8080");
    assert_eq!(data[var::FRONTEND_BASE_URL], "https://helpdesk.example.com");
    assert_eq!(data[var::SMTP_PORT], "587");
    assert_eq!(data[var::MAIL_FROM], "helpdesk@helpdesk.example.com");
    let minimal: Deployment = get(
        &build_default("  ingress: {host: helpdesk.example.com}"),
        Kind::Deployment,
        "hd-notification",
    );
    assert!(
        !env_names(&minimal).iter().any(|n| n.starts_with("SMTP_")),
        "without spec.smtp notification-service runs with delivery disabled"
    );
}

#[test]
fn every_service_exports_traces_to_the_configured_collector() {
    let spec = format!("{SPEC}  monitoring: {{otlpEndpoint: \"https://otel.example.com/\"}}\n");
    let all = build_default(&spec);
    for c in Component::ALL {
        let d: Deployment = get(&all, Kind::Deployment, &format!("hd-{}", c.as_str()));
        let otlp: Vec<_> = env_of(&d)
            .into_iter()
            .filter(|e| e.name == var::OTEL_EXPORTER_OTLP_ENDPOINT)
            .collect();
        assert_eq!(otlp.len(), 1, "{}", c.as_str());
        assert_eq!(otlp[0].value.as_deref(), Some("https://otel.example.com"));
    }
    let d: Deployment = get(&build_default(SPEC), Kind::Deployment, "hd-ticket");
    assert!(!env_names(&d).contains(&var::OTEL_EXPORTER_OTLP_ENDPOINT.into()));
}

#[test]
fn sre_env_overrides_operator_env() {
    let all = build_default(SPEC);
    let d: Deployment = get(&all, Kind::Deployment, "hd-ticket");
    let logs: Vec<_> = env_of(&d)
        .into_iter()
        .filter(|e| e.name == var::RUST_LOG)
        .collect();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].value.as_deref(), Some("debug"));
}

#[test]
fn autoscaling_leaves_replicas_to_the_hpa() {
    let all = build_default(SPEC);
    let d: Deployment = get(&all, Kind::Deployment, "hd-audit");
    assert_eq!(d.spec.replicas, None);
    let hpa: HorizontalPodAutoscaler = get(&all, Kind::HorizontalPodAutoscaler, "hd-audit");
    let spec = hpa.spec;
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 6));
    assert_eq!(spec.scale_target_ref.name, "hd-audit");
    assert_eq!(
        spec.metrics.unwrap()[0]
            .resource
            .as_ref()
            .unwrap()
            .target
            .average_utilization,
        Some(60)
    );
    assert_eq!(names_of(&all, Kind::HorizontalPodAutoscaler), ["hd-audit"]);
}

#[test]
fn pdbs_only_for_more_than_one_replica() {
    let all = build_default(SPEC);
    assert_eq!(
        names_of(&all, Kind::PodDisruptionBudget),
        ["hd-ticket", "hd-audit"]
    );
    let off = build_default(&format!("{SPEC}  podDisruptionBudgets: false\n"));
    assert!(names_of(&off, Kind::PodDisruptionBudget).is_empty());
}

#[test]
fn migration_job_runs_migrate_with_the_new_image() {
    let all = build_default(SPEC);
    let j: Job = get(&all, Kind::Job, "hd-ticket-migrate-0-2-0");
    let pod = j.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let c = &pod.containers[0];
    assert_eq!(c.args.as_ref().unwrap(), &[Command::Migrate.as_str()]);
    assert_eq!(
        c.image.as_deref(),
        Some("registry.local/hd/ticket-service:0.2.0")
    );
    let env: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
    assert_eq!(env, [var::RUST_LOG, var::DATABASE_URL]);
}

#[test]
fn deployments_wait_for_their_first_migration() {
    let p = platform(SPEC);
    let r = crate::validate::validate(&p, &Default::default()).unwrap();
    let m = crate::material::SecretMaterial::generate("a@b.c", true, true);
    let all = super::super::build(&BuildInput {
        platform: &p,
        resolved: &r,
        material: &m,
        deploy_versions: BTreeMap::from([
            (Component::Ticket, None),
            (Component::User, Some("0.1.0".into())),
        ]),
    });
    assert!(!names_of(&all, Kind::Deployment).contains(&"hd-ticket".to_string()));
    let user: Deployment = get(&all, Kind::Deployment, "hd-user");
    let img = user.spec.template.spec.unwrap().containers[0].image.clone();
    assert_eq!(img.as_deref(), Some("registry.local/hd/user-service:0.1.0"));
    assert!(names_of(&all, Kind::Job).contains(&"hd-ticket-migrate-0-2-0".to_string()));
}

#[test]
fn frontend_gets_deployment_service_and_pdb() {
    let all = build_default(&format!(
        "{SPEC}  frontend: {{image: \"ghcr.io/helpdesk/frontend:1.0.0\", replicas: 2, port: 3000}}\n"
    ));
    let d: Deployment = get(&all, Kind::Deployment, "hd-frontend");
    let c = &d.spec.template.spec.unwrap().containers[0];
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 3000);
    let s: Service = get(&all, Kind::Service, "hd-frontend");
    assert_eq!(
        s.spec.unwrap().ports.unwrap()[0].target_port,
        Some(IntOrString::String("http".into()))
    );
    assert!(names_of(&all, Kind::PodDisruptionBudget).contains(&"hd-frontend".to_string()));
}

#[test]
fn a_rotated_supplied_secret_rolls_the_pods_that_read_it() {
    let p = platform(&format!(
        "{SPEC}  postgres: {{external: {{secretRef: {{name: db, key: url}}}}}}\n"
    ));
    let r = crate::validate::validate(&p, &Default::default()).unwrap();
    let mut m = crate::material::SecretMaterial::generate("a@b.c", false, true);
    let annotation = |m: &crate::material::SecretMaterial, svc: &str| {
        let all = super::super::build(&BuildInput {
            platform: &p,
            resolved: &r,
            material: m,
            deploy_versions: BTreeMap::new(),
        });
        let d: Deployment = get(&all, Kind::Deployment, svc);
        d.spec
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()
            .get(SECRETS_HASH_ANNOTATION)
            .cloned()
    };
    assert_eq!(
        annotation(&m, "hd-ticket"),
        None,
        "nothing supplied is read"
    );
    m.supplied.insert("db".into(), "h1".into());
    m.supplied.insert("smtp-creds".into(), "s1".into());
    let ticket = annotation(&m, "hd-ticket").unwrap();
    let notification = annotation(&m, "hd-notification").unwrap();
    m.supplied.insert("db".into(), "h2".into());
    assert_ne!(annotation(&m, "hd-ticket").unwrap(), ticket, "db rotated");
    m.supplied.insert("smtp-creds".into(), "s2".into());
    assert_ne!(annotation(&m, "hd-notification").unwrap(), notification);
    let before = annotation(&m, "hd-ticket");
    m.supplied.insert("smtp-creds".into(), "s3".into());
    assert_eq!(
        annotation(&m, "hd-ticket"),
        before,
        "ticket does not read SMTP credentials"
    );
}

#[test]
fn config_change_rolls_pods_via_annotation() {
    let hash = |spec: &str| {
        let d: Deployment = get(&build_default(spec), Kind::Deployment, "hd-user");
        d.spec.template.metadata.unwrap().annotations.unwrap()[CONFIG_HASH_ANNOTATION].clone()
    };
    assert_ne!(
        hash(SPEC),
        hash(&SPEC.replace("helpdesk.example.com", "hd.example.org"))
    );
}
