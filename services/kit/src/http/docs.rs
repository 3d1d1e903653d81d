//! The OpenAPI side of the HTTP stack: the docs routes, the bearer security scheme, and the
//! contract's error responses and string patterns every service's document carries.

use axum::Router;
use helpdesk_contract as contract;

/// `/api/openapi.json` and Swagger UI at `/api/docs` (assets are vendored: works offline).
pub fn docs_routes(openapi: utoipa::openapi::OpenApi) -> Router {
    utoipa_swagger_ui::SwaggerUi::new(contract::http::DOCS_PATH)
        .url(contract::http::OPENAPI_PATH, openapi)
        .into()
}

/// Adds the `bearer` (JWT) security scheme to a service's OpenAPI document.
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Documents the contract's error answers on every operation of a service's OpenAPI document,
/// so a client (or a fuzzer such as schemathesis) can rely on the document:
///
/// - the `ErrorBody` schema (`{statusCode, message, error}`) on every 4xx/5xx answer;
/// - `400` wherever a request has parameters or a body (a field that does not parse);
/// - `401` wherever a credential is required;
/// - `404` wherever the path names a resource;
/// - `413` and `415` wherever a JSON body is taken.
pub struct ContractErrors;

/// The name of the error schema in `components.schemas`.
pub const ERROR_SCHEMA: &str = "ErrorBody";

impl ContractErrors {
    fn error_response(description: &str) -> serde_json::Value {
        serde_json::json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{ERROR_SCHEMA}")}}},
        })
    }

    pub(super) fn document(doc: &mut serde_json::Value) {
        doc["components"]["schemas"][ERROR_SCHEMA] = serde_json::json!({
            "type": "object",
            "description": "Every 4xx/5xx answer.",
            "required": ["statusCode", "message", "error"],
            "properties": {
                "statusCode": {"type": "integer", "description": "The HTTP status"},
                "message": {"type": "string", "description": "What went wrong, for people (names the field)"},
                "error": {"type": "string", "description": "The status's reason phrase"},
            },
        });
        let Some(paths) = doc["paths"].as_object_mut() else {
            return;
        };
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (_, op) in item.iter_mut() {
                let Some(op) = op.as_object_mut() else {
                    continue;
                };
                let secured = op
                    .get("security")
                    .and_then(|s| s.as_array())
                    .is_some_and(|s| {
                        s.iter()
                            .any(|r| r.as_object().is_some_and(|r| !r.is_empty()))
                    });
                let has_params = op
                    .get("parameters")
                    .and_then(|p| p.as_array())
                    .is_some_and(|p| !p.is_empty());
                let has_body = op.contains_key("requestBody");
                let names_resource = path.contains('{');
                let responses = op
                    .entry("responses")
                    .or_insert_with(|| serde_json::json!({}));
                let Some(responses) = responses.as_object_mut() else {
                    continue;
                };
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status)
                        .or_insert_with(|| Self::error_response(description));
                };
                if has_params || has_body {
                    add("400", "Invalid request: the message names the field");
                }
                if secured {
                    add("401", "Missing, invalid or expired credential");
                }
                if names_resource {
                    add("404", "Not found");
                }
                if has_body {
                    add("413", "Request body is too large");
                    add(
                        "415",
                        "Expected a JSON body with Content-Type: application/json",
                    );
                }
                for (status, response) in responses.iter_mut() {
                    if status.starts_with('4') || status.starts_with('5') {
                        let description = response["description"]
                            .as_str()
                            .unwrap_or("Error")
                            .to_string();
                        if response.get("content").is_none() {
                            *response = Self::error_response(&description);
                        }
                    }
                }
            }
        }
    }
}

/// What the `uuid` format means here, spelled as a pattern: JSON Schema 2020-12 treats `format`
/// as an annotation, so without it a validator takes `""` for a UUID.
pub const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// What [`crate::error::is_valid_email`] takes once trimmed, spelled as a pattern for the
/// `email` format: a local part of 1–64 characters, a dotted domain without empty labels, no
/// blanks or controls (`\x00-\x20`, `\x7f-\x9f` and what `str::trim` takes), blanks around it.
pub const EMAIL_PATTERN: &str = concat!(
    r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*",
    r"[^@\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]{1,64}@",
    r"[^@.\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+",
    r"(\.[^@.\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+)+",
    r"[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$",
);

/// Any text without a NUL character (which PostgreSQL cannot store: the API refuses it).
pub const NO_NUL_PATTERN: &str = r"^[^\x00]*$";

/// What Rust's `str::trim` removes (Unicode White_Space), as a regex character-class body.
pub(super) const BLANK: &str = r"\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// The pattern of a text whose limits hold once trimmed (the `trimmed` format): no NUL, at most
/// `max` characters between the first and last non-blank ones, at least one when `required`.
pub fn trimmed_text_pattern(required: bool, max: Option<u64>) -> String {
    let blanks = format!("[{BLANK}]*");
    let solid = format!("[^\\x00{BLANK}]");
    let inner = match max {
        None => "*".to_string(),
        Some(max) => format!("{{0,{}}}", max.saturating_sub(2)),
    };
    let core = if max == Some(1) {
        solid
    } else {
        format!("{solid}([^\\x00]{inner}{solid})?")
    };
    let core = if required { core } else { format!("({core})?") };
    format!("^{blanks}{core}{blanks}$")
}

/// Spells out, as a `pattern`, what every string schema without one accepts: the `uuid` and
/// `email` formats as the API parses them, `trimmed` texts (whose length limits hold after
/// trimming, which `minLength`/`maxLength` cannot say), and no NUL character anywhere. At any
/// depth.
pub(super) fn pin_string_patterns(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            let is_string = match map.get("type") {
                Some(serde_json::Value::String(t)) => t == "string",
                Some(serde_json::Value::Array(types)) => types.iter().any(|t| t == "string"),
                _ => false,
            };
            if is_string && !map.contains_key("pattern") && !map.contains_key("enum") {
                let format = map
                    .get("format")
                    .and_then(|f| f.as_str())
                    .map(str::to_owned);
                let pattern = match format.as_deref() {
                    None => Some(NO_NUL_PATTERN.to_string()),
                    Some("uuid") => Some(UUID_PATTERN.to_string()),
                    Some("trimmed") => {
                        let min = map.remove("minLength").and_then(|v| v.as_u64());
                        let max = map.remove("maxLength").and_then(|v| v.as_u64());
                        map.remove("format");
                        Some(trimmed_text_pattern(min.unwrap_or(0) > 0, max))
                    }
                    Some("email") => {
                        // The pattern says what the API takes; JSON Schema's `email` format
                        // (RFC 5321 with IDN rules) is another definition, so it goes.
                        map.remove("format");
                        Some(EMAIL_PATTERN.to_string())
                    }
                    // Another format (`date-time`, `cursor`) says what the value is.
                    Some(_) => None,
                };
                if let Some(pattern) = pattern {
                    map.insert("pattern".into(), pattern.into());
                }
            }
            map.values_mut().for_each(pin_string_patterns);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(pin_string_patterns),
        _ => {}
    }
}

impl utoipa::Modify for ContractErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Ok(mut doc) = serde_json::to_value(&*openapi) else {
            return;
        };
        Self::document(&mut doc);
        pin_string_patterns(&mut doc);
        if let Ok(documented) = serde_json::from_value(doc) {
            *openapi = documented;
        }
    }
}
