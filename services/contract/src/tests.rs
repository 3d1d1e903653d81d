use super::*;

#[test]
fn file_variants_are_the_name_with_the_suffix() {
    for (name, file) in var::WITH_FILE_VARIANT {
        assert_eq!(*file, format!("{name}{}", var::FILE_SUFFIX));
    }
}

#[test]
fn service_names_follow_one_pattern() {
    for s in Service::ALL {
        assert_eq!(s.binary(), format!("{}-service", s.as_str()));
        assert_eq!(s.env_prefix(), s.as_str().to_ascii_uppercase());
        assert_eq!(
            s.database_url_var(),
            format!("{}_{}", s.env_prefix(), var::DATABASE_URL)
        );
        assert_eq!(s.url_var(), format!("{}_SERVICE_URL", s.env_prefix()));
        assert_eq!(Service::parse(s.as_str()), Some(s));
        assert_eq!(Service::from_binary(s.binary()), Some(s));
        assert!(!s.peers().contains(&s));
    }
}

#[test]
fn migrate_needs_the_database_only_and_serve_needs_it_too() {
    for s in Service::ALL {
        let migrate = s.requires(Command::Migrate);
        assert_eq!(migrate.len(), 1);
        assert_eq!(migrate[0].var, var::DATABASE_URL);
        assert!(s.requires(Command::Serve).contains(&migrate[0]));
        assert!(migrate[0].is_met_by(|v| v == s.database_url_var()));
    }
}

#[test]
fn only_user_service_needs_the_signing_key() {
    for s in Service::ALL {
        let needs = s
            .requires(Command::Serve)
            .iter()
            .any(|r| r.var == var::JWT_PRIVATE_KEY);
        assert_eq!(needs, s == Service::User);
    }
}

#[test]
fn requirements_are_met_by_any_of_their_names() {
    let r = JWT_PUBLIC;
    assert!(r.is_met_by(|v| v == var::JWT_PUBLIC_KEY_FILE));
    assert!(!r.is_met_by(|v| v == var::JWT_PRIVATE_KEY));
    assert_eq!(r.to_string(), "JWT_PUBLIC_KEY (or JWT_PUBLIC_KEY_FILE)");
    let missing = Service::Admin.missing(Command::Serve, |v| v != var::USER_SERVICE_URL);
    assert_eq!(missing, [USER_SERVICE]);
}

#[test]
fn public_routes_resolve_by_longest_prefix_and_hide_internal_paths() {
    let svc = |p: &str| public_route(p).map(|r| r.service);
    assert_eq!(svc("/auth/login"), Some(Service::User));
    assert_eq!(svc("/auth"), Some(Service::User));
    assert_eq!(svc("/authx"), None);
    assert_eq!(svc("/tickets/1/comments"), Some(Service::Ticket));
    assert_eq!(svc("/notifications/status/1"), Some(Service::Notification));
    assert_eq!(svc("/notifications/email"), None);
    assert_eq!(svc("/users"), None);
    assert_eq!(svc("/auth/validate"), None);
    assert_eq!(svc("/audit/log/"), None);
    assert_eq!(svc("/api/openapi.json"), Some(Service::User));
    assert_eq!(svc("/api/openapi.json/x"), None);
    assert_eq!(
        route_for(INTERNAL_ROUTES, "/notifications/email").map(|r| r.service),
        Some(Service::Notification)
    );
    let mut names: Vec<_> = PUBLIC_ROUTES.iter().map(|r| r.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), PUBLIC_ROUTES.len(), "route names are unique");
}

#[test]
fn internal_paths_sit_below_a_public_prefix() {
    for p in INTERNAL_PATHS {
        assert!(route_for(PUBLIC_ROUTES, p).is_some(), "{p}");
    }
    for r in INTERNAL_ROUTES {
        assert!(route_for(PUBLIC_ROUTES, r.path).is_none(), "{}", r.path);
    }
}

#[test]
fn roles_and_commands_round_trip() {
    for r in Role::ALL {
        assert_eq!(Role::parse(r.as_str()), Some(r));
    }
    assert_eq!(Role::parse("admin"), None);
    for c in Command::ALL {
        assert_eq!(Command::parse(c.as_str()), Some(c));
    }
    assert_eq!(
        http::DEFAULT_BIND_ADDR,
        format!("0.0.0.0:{}", http::PORT),
        "BIND_ADDR default is the shared port"
    );
}
