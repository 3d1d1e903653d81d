//! Credentials that `Debug` cannot print: a configuration struct may derive `Debug` and be
//! logged whole without leaking a password, a token or a database URL's password.

/// A credential. Its `Debug` says `[redacted]`; [`Secret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself, to hand to whatever needs it (a header, a hash check).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `url` with its password (if any) replaced, for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "[unparseable URL]".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2-token");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(
            format!("{:?}", Some((String::from("a"), s.clone()))),
            "Some((\"a\", [redacted]))"
        );
        assert_eq!(s.expose(), "hunter2-token");
    }

    #[test]
    fn urls_lose_only_their_password() {
        let r = redact_url("postgres://app:s3cret@db.example:5432/helpdesk?sslmode=require");
        assert!(!r.contains("s3cret"), "{r}");
        assert!(r.contains("app:redacted@db.example:5432/helpdesk"), "{r}");
        assert_eq!(redact_url("postgres://db/x"), "postgres://db/x");
        assert!(!redact_url("not a url with s3cret").contains("s3cret"));
    }
}
