use super::*;

#[test]
fn verified_tokens_are_remembered_exactly_and_expire() {
    let k = keys();
    let id = Uuid::new_v4();
    let token = k
        .issue_user_token(id, "a@example.com", Role::Agent)
        .unwrap();
    assert_eq!(k.verify_user_token(&token).unwrap().sub, id);
    assert_eq!(k.verified.len(), 1);
    // A hit gives the same claims; a token differing in one character is verified in full
    // (and refused), never matched against the remembered one.
    assert_eq!(k.verify_user_token(&token).unwrap().sub, id);
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert!(k.verify_user_token(&forged).is_err());
    assert_eq!(k.verified.len(), 1);
    // Past its expiry (and the leeway) a remembered token is refused and forgotten.
    let exp = k.verify_user_token(&token).unwrap().exp;
    assert!(k.verified.get(&token, exp + 30).is_some_and(|r| r.is_ok()));
    assert!(matches!(k.verified.get(&token, exp + 31), Some(Err(()))));
    assert!(k.verified.is_empty());
    // Another key never sees this process's remembered tokens.
    assert!(keys().verify_user_token(&token).is_err());
}

fn keys() -> JwtKeys {
    let (private, public) = generate_key_pair();
    JwtKeys::from_pem(
        &public,
        Some(&private),
        DEFAULT_ISSUER,
        Duration::from_secs(3600),
    )
    .unwrap()
}

#[test]
fn user_token_round_trip_and_audience_separation() {
    let k = keys();
    let id = Uuid::new_v4();
    let token = k.issue_user_token(id, "a@b.co", Role::Agent).unwrap();
    let claims = k.verify_user_token(&token).unwrap();
    assert_eq!(claims.sub, id);
    assert_eq!(claims.role, Role::Agent);
    assert!(
        k.verify_service_token(&token).is_err(),
        "a user token is not a service credential"
    );
    let svc = k
        .issue_service_token("admin-service", Duration::from_secs(60))
        .unwrap();
    assert_eq!(k.verify_service_token(&svc).unwrap().sub, "admin-service");
    assert!(k.verify_user_token(&svc).is_err());
}

#[test]
fn foreign_key_and_alg_none_are_refused() {
    let k = keys();
    let other = keys();
    let token = other
        .issue_user_token(Uuid::new_v4(), "a@b.co", Role::Admin)
        .unwrap();
    assert!(k.verify_user_token(&token).is_err());
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = token.split('.').nth(1).unwrap();
    assert!(
        k.verify_user_token(&format!("{header}.{payload}."))
            .is_err()
    );
}

#[test]
fn roles_are_the_contracts() {
    for r in contract::Role::ALL {
        let ours = Role::from(r);
        assert_eq!(contract::Role::from(ours), r);
        assert_eq!(ours.as_str(), r.as_str());
        assert_eq!(serde_json::to_value(ours).unwrap(), r.as_str());
        assert_eq!(r.as_str().parse::<Role>().unwrap(), ours);
    }
    assert!("agent".parse::<Role>().is_err());
}

#[test]
fn mismatched_private_key_is_refused() {
    let (_, public) = generate_key_pair();
    let (private, _) = generate_key_pair();
    let err = JwtKeys::from_pem(&public, Some(&private), "x", Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, KeyError::Mismatch));
}

#[test]
fn a_token_newer_than_the_read_model_states_the_role() {
    let k = keys();
    let id = Uuid::new_v4();
    let token = k
        .issue_session_token(id, "a@b.co", Role::User, Uuid::new_v4(), (2, 5))
        .unwrap();
    let user = AuthUser::from(k.verify_user_token(&token).unwrap());
    assert_eq!((user.epoch, user.revision), (2, 5));
    // The model has applied revision 4 (an AGENT then): behind the token, whose role counts.
    assert_eq!(user.role_by(Some((Role::Agent, 4))), Role::User);
    // At the token's revision or later the model's role counts.
    assert_eq!(user.role_by(Some((Role::Agent, 5))), Role::Agent);
    assert_eq!(user.role_by(Some((Role::Admin, 6))), Role::Admin);
    // No row: the token's role.
    assert_eq!(user.role_by(None), Role::User);
    // A token without the claim (issued before it existed) is revision 0: the model always wins.
    let old = k.issue_user_token(id, "a@b.co", Role::Admin).unwrap();
    let old = AuthUser::from(k.verify_user_token(&old).unwrap());
    assert_eq!(old.role_by(Some((Role::User, 0))), Role::User);
}
