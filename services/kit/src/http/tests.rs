use super::docs::{BLANK, pin_string_patterns};
use super::*;

/// Security review, item 13: every operation documents the contract's errors, and formats
/// are spelled as patterns a validator enforces.
#[test]
fn the_contract_errors_and_patterns_are_documented() {
    let mut doc = serde_json::json!({
        "paths": {
            "/things/{id}": {"patch": {
                "security": [{"bearer": []}],
                "parameters": [{"name": "id", "in": "path", "required": true,
                                "schema": {"type": "string", "format": "uuid"}}],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "ok"}, "403": {"description": "Not yours"}},
            }},
            "/open": {"post": {"requestBody": {}, "responses": {"200": {"description": "ok"}}}},
        },
        "components": {"schemas": {"Thing": {"type": "object", "properties": {
            "email": {"type": "string", "format": "email"},
            "name": {"type": ["string", "null"]},
            "role": {"type": "string", "enum": ["A", "B"]},
        }}}},
    });
    ContractErrors::document(&mut doc);
    pin_string_patterns(&mut doc);
    let op = &doc["paths"]["/things/{id}"]["patch"]["responses"];
    for status in ["400", "401", "403", "404", "413", "415"] {
        assert_eq!(
            op[status]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody",
            "{status}"
        );
    }
    assert_eq!(op["403"]["description"], "Not yours");
    let open = &doc["paths"]["/open"]["post"]["responses"];
    assert!(open.get("401").is_none() && open.get("404").is_none());
    assert!(doc["components"]["schemas"]["ErrorBody"]["required"].is_array());
    let param = &doc["paths"]["/things/{id}"]["patch"]["parameters"][0]["schema"];
    assert_eq!(param["pattern"], UUID_PATTERN);
    let props = &doc["components"]["schemas"]["Thing"]["properties"];
    assert_eq!(props["email"]["pattern"], EMAIL_PATTERN);
    assert!(props["email"].get("format").is_none());
    assert_eq!(props["name"]["pattern"], NO_NUL_PATTERN);
    assert!(props["role"].get("pattern").is_none());
}

#[test]
fn trimmed_text_patterns_say_what_trim_then_check_length_takes() {
    let title = trimmed_text_pattern(true, Some(5));
    assert_eq!(
        title,
        format!("^[{BLANK}]*[^\\x00{BLANK}]([^\\x00]{{0,3}}[^\\x00{BLANK}])?[{BLANK}]*$")
    );
    let name = trimmed_text_pattern(false, Some(100));
    assert!(name.starts_with(&format!("^[{BLANK}]*([^")));
    assert!(trimmed_text_pattern(true, None).contains("[^\\x00]*"));
}

#[test]
fn origins_of_urls() {
    assert_eq!(
        origin_of("https://app.example.com/helpdesk/").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        origin_of("http://localhost:5173").as_deref(),
        Some("http://localhost:5173")
    );
    assert_eq!(
        origin_of("https://app.example.com:443/").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(origin_of("not a url"), None);
}

#[test]
fn the_default_cors_origin_is_the_frontends_origin() {
    let env = Env::from_map([(var::FRONTEND_BASE_URL, "https://app.example.com/helpdesk/")]);
    let cfg = HttpConfig::from_env(&env).unwrap();
    assert_eq!(
        cfg.cors_origins,
        vec!["https://app.example.com".to_string()]
    );
    let env = Env::from_map([
        (var::FRONTEND_BASE_URL, "https://app.example.com"),
        (
            var::CORS_ALLOWED_ORIGINS,
            "https://a.example, https://b.example",
        ),
    ]);
    let cfg = HttpConfig::from_env(&env).unwrap();
    assert_eq!(cfg.cors_origins, ["https://a.example", "https://b.example"]);
}
