//! Checks a consumed event against its JSON Schema, so that every service refuses the same
//! malformed events (before this, audit-service recorded what the others dead-lettered).
//!
//! The schemas are the checked-in files under `services/kit/event-schemas/` (generated from the
//! types in [`crate::events`]; a test keeps them in sync), compiled in. They use a small part of
//! JSON Schema, and this validator implements exactly that part: `type` (one or several),
//! `properties`, `required`, `items`, `enum`, `minimum`, `format` (`uuid`, `date-time`, `int32`,
//! `int64`, `uint32`; other formats are annotations) and `$ref` to `#/$defs/...`. Annotations
//! (`title`, `description`, `default`, `$schema`) are ignored. A test fails when a schema starts
//! using any other keyword, so the validator never silently checks less than the schema says.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

/// The checked-in schema of each event type, as text.
const SOURCES: [(&str, &str); 15] = [
    (
        "user.created",
        include_str!("../../event-schemas/user.created.json"),
    ),
    (
        "user.updated",
        include_str!("../../event-schemas/user.updated.json"),
    ),
    (
        "user.deleted",
        include_str!("../../event-schemas/user.deleted.json"),
    ),
    (
        "user.role_changed",
        include_str!("../../event-schemas/user.role_changed.json"),
    ),
    (
        "user.password_reset_requested",
        include_str!("../../event-schemas/user.password_reset_requested.json"),
    ),
    (
        "ticket.created",
        include_str!("../../event-schemas/ticket.created.json"),
    ),
    (
        "ticket.updated",
        include_str!("../../event-schemas/ticket.updated.json"),
    ),
    (
        "ticket.status_changed",
        include_str!("../../event-schemas/ticket.status_changed.json"),
    ),
    (
        "ticket.assigned",
        include_str!("../../event-schemas/ticket.assigned.json"),
    ),
    (
        "ticket.unassigned",
        include_str!("../../event-schemas/ticket.unassigned.json"),
    ),
    (
        "ticket.deleted",
        include_str!("../../event-schemas/ticket.deleted.json"),
    ),
    (
        "ticket.comment_added",
        include_str!("../../event-schemas/ticket.comment_added.json"),
    ),
    (
        "email.queued",
        include_str!("../../event-schemas/email.queued.json"),
    ),
    (
        "email.sent",
        include_str!("../../event-schemas/email.sent.json"),
    ),
    (
        "email.failed",
        include_str!("../../event-schemas/email.failed.json"),
    ),
];

/// Nesting deeper than this is refused (events are a few levels deep; a self-referencing schema
/// must not recurse forever).
const MAX_DEPTH: usize = 32;
/// At most this many problems are reported per event.
const MAX_PROBLEMS: usize = 5;

fn schemas() -> &'static HashMap<&'static str, Value> {
    static SCHEMAS: OnceLock<HashMap<&'static str, Value>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        SOURCES
            .iter()
            .map(|(event_type, text)| {
                // The files are checked by this crate's tests; a broken one fails them first.
                let schema = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("event-schemas/{event_type}.json is not JSON: {e}"));
                (*event_type, schema)
            })
            .collect()
    })
}

/// The JSON Schema of `event_type` (its whole envelope), when it is one of the platform's events.
pub fn schema_of(event_type: &str) -> Option<&'static Value> {
    schemas().get(event_type)
}

/// Checks `envelope` (an event as received, envelope and payload) against the schema of
/// `event_type`. An event type without a schema passes: it is the handler's to ignore or refuse.
/// The error lists what does not match, each with its JSON Pointer, e.g.
/// `/payload: missing required property "ticket"`.
pub fn validate(event_type: &str, envelope: &Value) -> Result<(), String> {
    let Some(schema) = schema_of(event_type) else {
        return Ok(());
    };
    let mut check = Check {
        root: schema,
        problems: Vec::new(),
    };
    check.value(schema, envelope, &mut String::new(), 0);
    if check.problems.is_empty() {
        Ok(())
    } else {
        Err(check.problems.join("; "))
    }
}

struct Check<'a> {
    root: &'a Value,
    problems: Vec<String>,
}

impl<'a> Check<'a> {
    fn problem(&mut self, path: &str, what: impl std::fmt::Display) {
        if self.problems.len() < MAX_PROBLEMS {
            let at = if path.is_empty() { "/" } else { path };
            self.problems.push(format!("{at}: {what}"));
        }
    }

    fn value(&mut self, schema: &'a Value, value: &Value, path: &mut String, depth: usize) {
        if depth > MAX_DEPTH {
            return self.problem(path, "nested too deeply");
        }
        let Some(schema) = schema.as_object() else {
            // `true` (anything) is the only boolean schema the generator writes.
            if schema == &Value::Bool(false) {
                self.problem(path, "no value is allowed here");
            }
            return;
        };
        if let Some(reference) = schema.get("$ref") {
            match reference
                .as_str()
                .and_then(|r| r.strip_prefix('#'))
                .and_then(|pointer| self.root.pointer(pointer))
            {
                Some(target) => self.value(target, value, path, depth + 1),
                None => self.problem(path, format!("the schema's $ref {reference} is unknown")),
            }
        }
        if let Some(types) = schema.get("type")
            && !type_matches(types, value)
        {
            // The other keywords would only repeat this.
            return self.problem(
                path,
                format!("expected {}, got {}", types_text(types), kind(value)),
            );
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let allowed: Vec<String> = allowed.iter().map(Value::to_string).collect();
            self.problem(
                path,
                format!("{value} is not one of {}", allowed.join(", ")),
            );
        }
        if let (Some(min), Some(n)) = (
            schema.get("minimum").and_then(Value::as_f64),
            value.as_f64(),
        ) && n < min
        {
            self.problem(path, format!("{n} is less than the minimum {min}"));
        }
        if let Some(format) = schema.get("format").and_then(Value::as_str)
            && let Some(problem) = format_problem(format, value)
        {
            self.problem(path, format!("not a valid {format}: {problem}"));
        }
        if let Some(object) = value.as_object() {
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for name in required.iter().filter_map(Value::as_str) {
                    if !object.contains_key(name) {
                        self.problem(path, format!("missing required property {name:?}"));
                    }
                }
            }
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, sub) in properties {
                    if let Some(v) = object.get(name) {
                        let len = path.len();
                        path.push('/');
                        path.push_str(&name.replace('~', "~0").replace('/', "~1"));
                        self.value(sub, v, path, depth + 1);
                        path.truncate(len);
                    }
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (i, v) in array.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("/{i}"));
                self.value(items, v, path, depth + 1);
                path.truncate(len);
            }
        }
    }
}

fn type_matches(types: &Value, value: &Value) -> bool {
    let one = |t: &Value| match t.as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        // What serde accepts for an integer field: no fraction, no exponent.
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some("null") => value.is_null(),
        _ => false,
    };
    match types {
        Value::Array(ts) => ts.iter().any(one),
        t => one(t),
    }
}

fn types_text(types: &Value) -> String {
    match types {
        Value::Array(ts) => ts
            .iter()
            .map(|t| t.as_str().unwrap_or("?"))
            .collect::<Vec<_>>()
            .join(" or "),
        t => t.as_str().unwrap_or("?").to_string(),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Why `value` does not have `format`, if it does not (values of another type pass: `type`
/// decides about those). The parsers are the ones serde uses for the Rust types.
fn format_problem(format: &str, value: &Value) -> Option<String> {
    match (format, value) {
        ("uuid", Value::String(s)) => uuid::Uuid::parse_str(s).err().map(|e| e.to_string()),
        ("date-time", Value::String(s)) => s
            .parse::<chrono::DateTime<chrono::FixedOffset>>()
            .err()
            .map(|e| e.to_string()),
        ("int32", Value::Number(n)) => out_of_range(n, i32::MIN.into(), i32::MAX.into()),
        ("uint32", Value::Number(n)) => out_of_range(n, 0, u32::MAX.into()),
        ("int64", Value::Number(n)) => out_of_range(n, i64::MIN.into(), i64::MAX.into()),
        _ => None,
    }
}

fn out_of_range(n: &serde_json::Number, min: i128, max: i128) -> Option<String> {
    let v = n
        .as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))?;
    (v < min || v > max).then(|| format!("{v} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::*;
    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;

    /// Keywords the validator enforces.
    const CHECKED: [&str; 8] = [
        "type",
        "properties",
        "required",
        "items",
        "enum",
        "minimum",
        "format",
        "$ref",
    ];
    /// Keywords that only describe.
    const ANNOTATIONS: [&str; 5] = ["title", "description", "default", "$schema", "$defs"];

    fn ticket_created() -> Value {
        let now = Utc::now();
        let id = Uuid::new_v4();
        let envelope = Envelope::wrap(
            &TicketCreated {
                ticket: TicketSnapshot {
                    id: Uuid::new_v4(),
                    user_id: id,
                    title: "Printer".into(),
                    status: TicketStatus::Open,
                    assigned_to_user_id: None,
                    created_at: now,
                    updated_at: now,
                },
                creator: UserRef {
                    id,
                    email: "kim@example.com".into(),
                    first_name: Some("Kim".into()),
                    last_name: None,
                },
            },
            EventMetadata::default(),
        );
        serde_json::to_value(envelope).unwrap()
    }

    #[test]
    fn every_event_type_has_its_checked_in_schema() {
        for (event_type, generated) in all_schemas() {
            assert_eq!(
                schema_of(event_type),
                Some(&generated),
                "{event_type}: the compiled-in schema differs from the generated one"
            );
        }
        assert_eq!(SOURCES.len(), all_schemas().len());
    }

    /// The validator implements every keyword the schemas use (a new one fails here, not by
    /// being ignored at run time), and every `$ref` resolves.
    #[test]
    fn the_schemas_use_only_what_the_validator_checks() {
        fn walk(root: &Value, schema: &Value, at: &str) {
            let Some(map) = schema.as_object() else {
                return;
            };
            for (k, v) in map {
                assert!(
                    CHECKED.contains(&k.as_str()) || ANNOTATIONS.contains(&k.as_str()),
                    "{at}: keyword {k} is not implemented by the event validator"
                );
                match k.as_str() {
                    "properties" | "$defs" => {
                        for (name, sub) in v.as_object().unwrap() {
                            walk(root, sub, &format!("{at}/{k}/{name}"));
                        }
                    }
                    "items" => walk(root, v, &format!("{at}/items")),
                    "$ref" => {
                        let r = v.as_str().unwrap();
                        assert!(
                            r.strip_prefix('#').and_then(|p| root.pointer(p)).is_some(),
                            "{at}: $ref {r} does not resolve"
                        );
                    }
                    _ => {}
                }
            }
        }
        for (event_type, _) in SOURCES {
            let root = schema_of(event_type).unwrap();
            walk(root, root, event_type);
        }
    }

    #[test]
    fn events_the_services_publish_are_valid() {
        assert_eq!(validate("ticket.created", &ticket_created()), Ok(()));
        let env = Envelope::wrap(
            &UserUpdated {
                user: UserSnapshot {
                    id: Uuid::new_v4(),
                    email: "a@b.co".into(),
                    first_name: None,
                    last_name: None,
                    role: crate::auth::Role::Agent,
                    created_at: Utc::now(),
                    revision: 3,
                    token_epoch: 1,
                    kept_session: Some(Uuid::new_v4()),
                },
                changes: vec!["password".into()],
            },
            EventMetadata {
                correlation_id: Some("req-1".into()),
                causation_id: Some(Uuid::new_v4()),
                user_id: None,
            },
        );
        assert_eq!(
            validate("user.updated", &serde_json::to_value(env).unwrap()),
            Ok(())
        );
    }

    #[test]
    fn malformed_events_are_refused_with_where_and_why() {
        let mut foo = ticket_created();
        foo["payload"] = json!({"foo": 1});
        let e = validate("ticket.created", &foo).unwrap_err();
        assert!(
            e.contains(r#"/payload: missing required property "ticket""#),
            "{e}"
        );
        assert!(e.contains(r#"missing required property "creator""#), "{e}");

        let cases: [(&str, Value, &str); 8] = [
            (
                "/payload/ticket/id",
                json!("not-a-uuid"),
                "not a valid uuid",
            ),
            ("/payload/ticket/status", json!("CLOSED"), "is not one of"),
            (
                "/payload/ticket/title",
                json!(42),
                "expected string, got integer",
            ),
            (
                "/payload/ticket/createdAt",
                json!("yesterday"),
                "not a valid date-time",
            ),
            (
                "/payload/ticket/assignedToUserId",
                json!(7),
                "expected string or null",
            ),
            (
                "/payload/creator",
                json!("nobody"),
                "expected object, got string",
            ),
            ("/version", json!(-1), "less than the minimum 0"),
            ("/version", json!(1.5), "expected integer, got number"),
        ];
        for (pointer, bad, expected) in cases {
            let mut event = ticket_created();
            *event.pointer_mut(pointer).unwrap() = bad;
            let e = validate("ticket.created", &event).unwrap_err();
            assert!(
                e.starts_with(pointer) && e.contains(expected),
                "{pointer}: {e}"
            );
        }
        let mut event = ticket_created();
        event["version"] = json!(u64::from(u32::MAX) + 1);
        assert!(validate("ticket.created", &event).is_err());
        let mut event = ticket_created();
        event["payload"]["ticket"]
            .as_object_mut()
            .unwrap()
            .remove("userId");
        let e = validate("ticket.created", &event).unwrap_err();
        assert_eq!(e, r#"/payload/ticket: missing required property "userId""#);
    }

    #[test]
    fn unknown_event_types_pass_and_extra_properties_are_allowed() {
        assert_eq!(validate("invoice.paid", &json!({"anything": true})), Ok(()));
        let mut event = ticket_created();
        event["payload"]["ticket"]["priority"] = json!("HIGH");
        assert_eq!(validate("ticket.created", &event), Ok(()));
    }
}
