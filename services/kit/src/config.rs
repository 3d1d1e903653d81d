//! Typed configuration from the environment.
//!
//! Every reader returns a [`ConfigError`] that names the variable and what is wrong with it, so a
//! service that cannot start says so in one line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// A configuration value that is missing or invalid.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: {var} {problem}")]
pub struct ConfigError {
    pub var: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(var: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            var: var.into(),
            problem: problem.into(),
        }
    }
}

/// Where configuration values come from: the process environment, or a map in tests and in the
/// all-in-one launcher.
#[derive(Debug, Clone, Default)]
pub struct Env {
    overrides: HashMap<String, String>,
    use_process_env: bool,
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Self {
            overrides: HashMap::new(),
            use_process_env: true,
        }
    }

    /// Only the given values (tests).
    pub fn from_map<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            overrides: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            use_process_env: false,
        }
    }

    /// Sets a value that wins over the process environment.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.overrides.insert(key.into(), value.into());
        self
    }

    /// The raw value; empty strings count as unset.
    pub fn raw(&self, key: &str) -> Option<String> {
        let value = match self.overrides.get(key) {
            Some(v) => Some(v.clone()),
            None if self.use_process_env => std::env::var(key).ok(),
            None => None,
        };
        value.filter(|v| !v.trim().is_empty())
    }

    /// A required value.
    pub fn required(&self, key: &str) -> Result<String, ConfigError> {
        self.raw(key)
            .ok_or_else(|| ConfigError::new(key, "is required but not set"))
    }

    /// An optional value, or the default.
    pub fn string_or(&self, key: &str, default: &str) -> String {
        self.raw(key).unwrap_or_else(|| default.to_string())
    }

    /// A value parsed with `FromStr`, or the default when unset.
    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|e| ConfigError::new(key, format!("has invalid value {v:?}: {e}"))),
        }
    }

    /// A boolean (`true/false/1/0/yes/no`).
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => Ok(false),
            Some(v) => Err(ConfigError::new(
                key,
                format!("must be true or false, got {v:?}"),
            )),
        }
    }

    /// A socket address.
    pub fn socket_addr_or(&self, key: &str, default: &str) -> Result<SocketAddr, ConfigError> {
        let v = self.string_or(key, default);
        v.parse().map_err(|_| {
            ConfigError::new(
                key,
                format!("must be host:port like 0.0.0.0:8080, got {v:?}"),
            )
        })
    }

    /// A duration such as `7d`, `12h`, `30m`, `45s`, `250ms` (a bare number means seconds).
    pub fn duration_or(&self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => parse_duration(&v).ok_or_else(|| {
                ConfigError::new(
                    key,
                    format!("must be a duration like 7d, 12h or 30s, got {v:?}"),
                )
            }),
        }
    }

    /// A comma-separated list.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.raw(key)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A value given directly (`KEY`) or as a file path (`KEY_FILE`), e.g. a mounted secret.
    pub fn value_or_file(&self, key: &str) -> Result<Option<String>, ConfigError> {
        if let Some(v) = self.raw(key) {
            return Ok(Some(v));
        }
        let file_key = format!("{key}{}", helpdesk_contract::var::FILE_SUFFIX);
        match self.raw(&file_key) {
            None => Ok(None),
            Some(path) => std::fs::read_to_string(&path)
                .map(Some)
                .map_err(|e| ConfigError::new(file_key, format!("cannot read file {path:?}: {e}"))),
        }
    }
}

/// Parses `7d`, `12h`, `30m`, `45s`, `250ms` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => return Some(Duration::from_millis(n)),
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("3w"), None);
        assert_eq!(parse_duration("abc"), None);
    }

    #[test]
    fn errors_name_the_variable() {
        use helpdesk_contract::var::{BIND_ADDR, DATABASE_URL};
        let env = Env::from_map([(BIND_ADDR, "nonsense"), ("FLAG", "maybe")]);
        let err = env.socket_addr_or(BIND_ADDR, "0.0.0.0:8080").unwrap_err();
        assert_eq!(err.var, BIND_ADDR);
        assert!(err.to_string().contains(BIND_ADDR));
        assert_eq!(env.bool_or("FLAG", false).unwrap_err().var, "FLAG");
        assert_eq!(env.required(DATABASE_URL).unwrap_err().var, DATABASE_URL);
    }

    #[test]
    fn file_variants_are_read_and_named_in_errors() {
        use helpdesk_contract::var::{JWT_PUBLIC_KEY, JWT_PUBLIC_KEY_FILE};
        let path = std::env::temp_dir().join(format!("kit-config-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, "pem").unwrap();
        let env = Env::from_map([(JWT_PUBLIC_KEY_FILE, path.to_string_lossy())]);
        assert_eq!(
            env.value_or_file(JWT_PUBLIC_KEY).unwrap().as_deref(),
            Some("pem")
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            env.value_or_file(JWT_PUBLIC_KEY).unwrap_err().var,
            JWT_PUBLIC_KEY_FILE
        );
    }
}
