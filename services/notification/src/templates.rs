//! Email templates: a `Subject:` line, a blank line, then the text body, with `{{name}}`
//! placeholders. Built-in defaults are compiled in; a deployer overrides any of them (or adds new
//! ones for `POST /notifications/email`) with `<name>.txt` files in `NOTIFICATION_TEMPLATE_DIR`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The built-in templates, by name.
const BUILT_IN: [(&str, &str); 7] = [
    (WELCOME, include_str!("../templates/welcome.txt")),
    (
        PASSWORD_RESET,
        include_str!("../templates/password_reset.txt"),
    ),
    (
        TICKET_CREATED,
        include_str!("../templates/ticket_created.txt"),
    ),
    (
        TICKET_STATUS_CHANGED,
        include_str!("../templates/ticket_status_changed.txt"),
    ),
    (
        TICKET_ASSIGNED,
        include_str!("../templates/ticket_assigned.txt"),
    ),
    (
        TICKET_ASSIGNED_TO_YOU,
        include_str!("../templates/ticket_assigned_to_you.txt"),
    ),
    (
        TICKET_UNASSIGNED,
        include_str!("../templates/ticket_unassigned.txt"),
    ),
];

pub const WELCOME: &str = "welcome";
pub const PASSWORD_RESET: &str = "password_reset";
pub const TICKET_CREATED: &str = "ticket_created";
pub const TICKET_STATUS_CHANGED: &str = "ticket_status_changed";
pub const TICKET_ASSIGNED: &str = "ticket_assigned";
pub const TICKET_ASSIGNED_TO_YOU: &str = "ticket_assigned_to_you";
pub const TICKET_UNASSIGNED: &str = "ticket_unassigned";

/// The data the event triggers provide to each built-in template: an overriding template may use
/// any of these placeholders and no other (checked at start-up).
pub const PROVIDED: [(&str, &[&str]); 7] = [
    (WELCOME, &["firstName", "email", "loginUrl"]),
    (PASSWORD_RESET, &["firstName", "resetLink", "expiresAt"]),
    (
        TICKET_CREATED,
        &[
            "title",
            "ticketId",
            "creatorName",
            "creatorEmail",
            "ticketUrl",
        ],
    ),
    (
        TICKET_STATUS_CHANGED,
        &["firstName", "title", "oldStatus", "newStatus", "ticketUrl"],
    ),
    (
        TICKET_ASSIGNED,
        &["firstName", "title", "assigneeName", "ticketUrl"],
    ),
    (
        TICKET_ASSIGNED_TO_YOU,
        &["firstName", "title", "creatorName", "ticketUrl"],
    ),
    (TICKET_UNASSIGNED, &["firstName", "title", "ticketUrl"]),
];

/// Templates whose rendered body carries a secret (the reset link): the body is blanked in the
/// table once the email is sent or has failed for good.
pub fn is_sensitive(name: &str) -> bool {
    name == PASSWORD_RESET
}

/// One parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    subject: String,
    body: String,
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

/// Why a template could not be loaded or rendered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("template {0:?} must start with a \"Subject:\" line followed by a blank line")]
    Malformed(String),
    #[error("unknown template {0:?}")]
    Unknown(String),
    #[error("data is missing {}", .0.join(", "))]
    MissingData(Vec<String>),
    #[error("template {0:?} uses a placeholder its event does not provide: {1}")]
    Override(String, String),
    #[error("cannot read templates from {path}: {error}")]
    Io { path: String, error: String },
}

impl Template {
    /// Parses `Subject: ...`, a blank line, then the body.
    pub fn parse(name: &str, text: &str) -> Result<Self, TemplateError> {
        let text = text.replace("\r\n", "\n");
        let (first, rest) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        let subject = first
            .strip_prefix("Subject:")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| TemplateError::Malformed(name.to_string()))?;
        let body = rest.strip_prefix('\n').unwrap_or(rest);
        Ok(Self {
            subject: subject.to_string(),
            body: body.to_string(),
        })
    }

    /// Substitutes every `{{name}}`; a placeholder without a value is an error naming it.
    pub fn render(&self, data: &HashMap<String, String>) -> Result<Rendered, TemplateError> {
        let mut missing = Vec::new();
        let subject = substitute(&self.subject, data, &mut missing);
        let body = substitute(&self.body, data, &mut missing);
        if !missing.is_empty() {
            missing.sort();
            missing.dedup();
            return Err(TemplateError::MissingData(missing));
        }
        // A subject is one line, whatever the data held.
        let subject = subject.replace(['\r', '\n'], " ");
        Ok(Rendered { subject, body })
    }
}

fn substitute(text: &str, data: &HashMap<String, String>, missing: &mut Vec<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let key = after[..end].trim();
        match data.get(key) {
            Some(v) => out.push_str(v),
            None => missing.push(key.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Every template the service can render.
#[derive(Debug, Clone)]
pub struct Templates {
    by_name: BTreeMap<String, Template>,
}

impl Templates {
    /// The built-in defaults.
    pub fn built_in() -> Self {
        let by_name = BUILT_IN
            .iter()
            .filter_map(|(name, text)| {
                Template::parse(name, text)
                    .ok()
                    .map(|t| (name.to_string(), t))
            })
            .collect();
        Self { by_name }
    }

    /// The defaults, overridden and extended by the `*.txt` files of `dir`.
    pub fn load(dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut templates = Self::built_in();
        let Some(dir) = dir else { return Ok(templates) };
        let io = |e: std::io::Error| TemplateError::Io {
            path: dir.display().to_string(),
            error: e.to_string(),
        };
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("txt") {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).map_err(io)?;
            let template = Template::parse(name, &text)?;
            // An override of a built-in may only use the data its trigger provides.
            if let Some((_, keys)) = PROVIDED.iter().find(|(n, _)| *n == name) {
                let sample = data(keys.iter().map(|k| (*k, String::new())));
                template
                    .render(&sample)
                    .map_err(|e| TemplateError::Override(name.to_string(), e.to_string()))?;
            }
            templates.by_name.insert(name.to_string(), template);
        }
        Ok(templates)
    }

    /// Renders template `name` with `data`.
    pub fn render(
        &self,
        name: &str,
        data: &HashMap<String, String>,
    ) -> Result<Rendered, TemplateError> {
        self.by_name
            .get(name)
            .ok_or_else(|| TemplateError::Unknown(name.to_string()))?
            .render(data)
    }
}

/// Builds template data from `(key, value)` pairs.
pub fn data<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> HashMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_template_parses() {
        let t = Templates::built_in();
        assert_eq!(t.by_name.len(), BUILT_IN.len());
    }

    #[test]
    fn renders_placeholders_and_names_missing_ones() {
        let t = Template::parse(
            "x",
            "Subject: Hi {{ name }}\n\nHello {{name}}, see {{link}}.\n",
        )
        .unwrap();
        let r = t
            .render(&data([
                ("name", "Ann".to_string()),
                ("link", "https://x/y".to_string()),
            ]))
            .unwrap();
        assert_eq!(r.subject, "Hi Ann");
        assert_eq!(r.body, "Hello Ann, see https://x/y.\n");
        let err = t.render(&data([("name", "Ann".to_string())])).unwrap_err();
        assert_eq!(err.to_string(), "data is missing link");
        let r = t
            .render(&data([
                ("name", "A\r\nBcc: x".to_string()),
                ("link", String::new()),
            ]))
            .unwrap();
        assert!(!r.subject.contains('\n'), "the subject stays one line");
    }

    #[test]
    fn built_ins_use_exactly_the_provided_data() {
        let t = Templates::built_in();
        for (name, keys) in PROVIDED {
            let all = data(keys.iter().map(|k| (*k, format!("<{k}>"))));
            let r = t.render(name, &all).unwrap();
            for k in keys {
                assert!(
                    r.subject.contains(&format!("<{k}>")) || r.body.contains(&format!("<{k}>")),
                    "{name} does not use {k}"
                );
            }
        }
    }

    #[test]
    fn an_override_needing_unknown_data_is_refused_at_load() {
        let dir = std::env::temp_dir().join(format!("tpl-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("welcome.txt"),
            "Subject: Hi {{nickname}}\n\nBody\n",
        )
        .unwrap();
        let err = Templates::load(Some(&dir)).unwrap_err();
        assert!(err.to_string().contains("nickname"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_templates_are_refused() {
        assert!(Template::parse("x", "no subject line\n\nbody").is_err());
        assert!(Template::parse("x", "Subject:\n\nbody").is_err());
    }

    #[test]
    fn a_directory_overrides_and_extends() {
        let dir = std::env::temp_dir().join(format!("tpl-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("welcome.txt"),
            "Subject: Custom {{firstName}}\n\nCustom body\n",
        )
        .unwrap();
        std::fs::write(dir.join("extra.txt"), "Subject: Extra\n\nExtra body\n").unwrap();
        std::fs::write(dir.join("README.md"), "ignored").unwrap();
        let t = Templates::load(Some(&dir)).unwrap();
        let r = t
            .render(WELCOME, &data([("firstName", "Bo".to_string())]))
            .unwrap();
        assert_eq!(r.subject, "Custom Bo");
        assert_eq!(
            t.render("extra", &HashMap::new()).unwrap().body,
            "Extra body\n"
        );
        assert!(
            t.render(PASSWORD_RESET, &HashMap::new()).is_err(),
            "other defaults stay"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
