use super::*;
use std::path::PathBuf;

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("event-schemas")
}

/// The checked-in schemas equal the ones generated from the types.
/// Regenerate with `UPDATE_EVENT_SCHEMAS=1 cargo test -p helpdesk-kit event_schemas`.
#[test]
fn event_schemas_match_checked_in_files() {
    let update = std::env::var("UPDATE_EVENT_SCHEMAS").is_ok();
    let dir = schema_dir();
    for (event_type, schema) in all_schemas() {
        let path = dir.join(format!("{event_type}.json"));
        let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "{} is missing; run with UPDATE_EVENT_SCHEMAS=1",
                path.display()
            )
        });
        assert_eq!(
            on_disk,
            text,
            "{} drifted from the Rust types; run with UPDATE_EVENT_SCHEMAS=1",
            path.display()
        );
    }
}

#[test]
fn envelope_round_trip_and_redaction() {
    let p = UserPasswordResetRequested {
        user_id: Uuid::new_v4(),
        email: "a@b.co".into(),
        first_name: None,
        reset_link: "https://x/reset-password?token=secret".into(),
        expires_at: Utc::now(),
    };
    let env = Envelope::wrap(&p, EventMetadata::default());
    assert_eq!(env.event_type, "user.password_reset_requested");
    assert_eq!(env.exchange(), USER_EVENTS);
    let back: UserPasswordResetRequested = env.payload().unwrap();
    assert_eq!(back, p);
    let redacted = redact_secrets(&env.payload);
    assert!(!redacted.to_string().contains("secret"));
    assert!(redacted.get("email").is_some());
}

/// Security review, item 10: secrets are found by pattern, not by exact name.
#[test]
fn secrets_are_redacted_by_pattern_in_any_case() {
    let value = serde_json::json!({
        "Reset_Link": "https://app.example.com/reset-password?token=SECRET1",
        "callbackUrl": "https://x.example/cb?lang=en&Reset-Token=SECRET2",
        "authorization": "Bearer SECRET3",
        "Cookie": "sid=SECRET4",
        "X-Api-Token": "SECRET5",
        "client_secret": "SECRET6",
        "NEW_PASSWORD": "SECRET7",
        "password_hash": "SECRET8",
        "nested": [{"AccessToken": "SECRET9", "kept": 1}],
        "ticketLink": "https://app.example.com/tickets/42",
        "title": "How do I reset my password?",
        "email": "ann@example.com",
    });
    let redacted = redact_secrets(&value);
    assert!(!redacted.to_string().contains("SECRET"), "{redacted}");
    assert_eq!(
        redacted,
        serde_json::json!({
            "nested": [{"kept": 1}],
            "ticketLink": "https://app.example.com/tickets/42",
            "title": "How do I reset my password?",
            "email": "ann@example.com",
        })
    );
}
