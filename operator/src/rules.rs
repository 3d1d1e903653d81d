//! Syntax rules for the values of a `HelpdeskPlatform` that end up in other objects: Kubernetes
//! quantities, object names, Secret keys, email addresses. Pure functions; `validate` applies
//! them with the field path. Each returns `Err(reason)` phrased to follow `<path>: <value> `.

/// What a DNS-1123 label may contain: lower-case letters, digits, `-` inside, at most 63.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!("is {} characters, at most 63 are allowed", s.len()));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("may contain only lower-case letters, digits and '-'".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// A DNS-1035 label (Service names): a DNS-1123 label that starts with a letter.
pub fn dns1035_label(s: &str) -> Result<(), String> {
    dns1123_label(s)?;
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a lower-case letter".into());
    }
    Ok(())
}

/// A DNS-1123 subdomain (most object names, e.g. Secrets): dot-separated labels, at most 253.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 253 {
        return Err(format!(
            "is {} characters, at most 253 are allowed",
            s.len()
        ));
    }
    for label in s.split('.') {
        dns1123_label(label).map_err(|e| {
            if label.is_empty() {
                "must not contain empty labels ('..', or a leading or trailing '.')".to_string()
            } else {
                e
            }
        })?;
    }
    Ok(())
}

/// A key of a Secret or ConfigMap: letters, digits, `-`, `_`, `.`; at most 253.
pub fn config_key(s: &str) -> Result<(), String> {
    if s.is_empty() || s == "." || s == ".." {
        return Err("is not a valid key".into());
    }
    if s.len() > 253 {
        return Err(format!(
            "is {} characters, at most 253 are allowed",
            s.len()
        ));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("may contain only letters, digits, '-', '_' and '.'".into());
    }
    Ok(())
}

/// The value of a Kubernetes quantity, following the API's grammar exactly:
/// `[+-]<digits>[.<digits>]` then one of `Ki Mi Gi Ti Pi Ei`, `n u m k M G T P E`, nothing, or a
/// decimal exponent `e<int>` / `E<int>`. `10GB`, `1 Gi`, `abc` or `1.5.2` are not quantities.
pub fn quantity(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let sign = if s.starts_with('-') { -1.0 } else { 1.0 };
    let num_len = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, suffix) = body.split_at(num_len);
    let digits = num.chars().filter(char::is_ascii_digit).count();
    if digits == 0 || num.matches('.').count() > 1 {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => {
            let exp = &e[1..];
            let unsigned = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if unsigned.is_empty() || !unsigned.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            10f64.powi(exp.parse().ok()?)
        }
        _ => return None,
    };
    Some(sign * n * factor)
}

/// A storage size for a volume claim: a quantity of at least one byte, in whole-byte units.
pub fn storage(s: &str) -> Result<(), String> {
    let Some(bytes) = quantity(s) else {
        return Err(
            "is not a Kubernetes quantity (examples: 10Gi, 500Mi, 20G; units are Ki Mi Gi Ti Pi Ei \
             or k M G T P E, not KB/MB/GB)"
                .into(),
        );
    };
    if s.ends_with(['m', 'u', 'n']) {
        return Err("is a fraction of a byte (m is milli): did you mean M or Mi?".into());
    }
    if bytes < 1.0 {
        return Err("must be a positive size".into());
    }
    Ok(())
}

/// A resource request or limit (`100m`, `256Mi`): a quantity that is not negative.
pub fn resource_quantity(s: &str) -> Result<(), String> {
    match quantity(s) {
        None => Err("is not a Kubernetes quantity (examples: 100m, 0.5, 256Mi, 1Gi)".into()),
        Some(v) if v < 0.0 => Err("must not be negative".into()),
        Some(_) => Ok(()),
    }
}

/// An email address as the services accept it (the contract's rule).
pub fn email(s: &str) -> Result<(), String> {
    if helpdesk_contract::is_valid_email(s) {
        Ok(())
    } else {
        Err("is not an email address (expected local@domain.tld)".into())
    }
}

/// A sender as `MAIL_FROM` takes it: `addr@domain.tld` or `Display Name <addr@domain.tld>`.
pub fn mailbox(s: &str) -> Result<(), String> {
    match s
        .trim_end()
        .strip_suffix('>')
        .and_then(|r| r.rsplit_once('<'))
    {
        Some((name, addr)) if !name.contains(['<', '>', '\n', '\r']) => email(addr),
        Some(_) => Err("has an unusable display name (no angle brackets or line breaks)".into()),
        None => email(s),
    }
}

/// A CronJob schedule: five fields (minute hour day-of-month month day-of-week) of digits, names,
/// `*`, `?`, `,`, `-`, `/`, or one of the `@` macros Kubernetes accepts.
pub fn cron_schedule(s: &str) -> Result<(), String> {
    const MACROS: [&str; 7] = [
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
    ];
    if MACROS.contains(&s.trim()) {
        return Ok(());
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "is not a cron schedule: {} fields, 5 expected (minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\"), or one of {}",
            fields.len(),
            MACROS.join(", ")
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '*' | '?' | ',' | '-' | '/');
    match fields.iter().find(|f| !f.chars().all(allowed)) {
        Some(f) => Err(format!("is not a cron schedule: {f:?} is not a cron field")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_follow_the_api_grammar() {
        for (q, v) in [
            ("10Gi", 10.0 * 1024f64.powi(3)),
            ("500M", 5e8),
            ("1.5Gi", 1.5 * 1024f64.powi(3)),
            ("100m", 0.1),
            ("+2", 2.0),
            ("-1Gi", -(1024f64.powi(3))),
            ("1e3", 1000.0),
            ("2E-2", 0.02),
            (".5", 0.5),
            ("5.", 5.0),
        ] {
            assert_eq!(quantity(q), Some(v), "{q}");
        }
        for q in [
            "10GB", "abc", "", "Gi", "1 Gi", " 1Gi", "1.5.2Gi", "1gi", "1e", "1e+", "1ee3", "--1",
            "1Mib", "1KB", ".", "inf", "NaN",
        ] {
            assert_eq!(quantity(q), None, "{q:?}");
        }
    }

    #[test]
    fn storage_sizes_are_positive_whole_byte_quantities() {
        for ok in ["10Gi", "500M", "1", "1e9", "0.5Gi"] {
            assert_eq!(storage(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("10GB", "not a Kubernetes quantity"),
            ("-1Gi", "positive"),
            ("0", "positive"),
            ("abc", "not a Kubernetes quantity"),
            ("500m", "did you mean M or Mi"),
        ] {
            let e = storage(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(resource_quantity("100m"), Ok(()));
        assert!(resource_quantity("-1").is_err());
        assert!(resource_quantity("256MB").is_err());
    }

    #[test]
    fn names_follow_dns_rules() {
        assert_eq!(dns1123_label("helpdesk-1"), Ok(()));
        assert_eq!(dns1123_label("1helpdesk"), Ok(()));
        assert!(dns1035_label("1helpdesk").unwrap_err().contains("letter"));
        assert!(dns1123_label("Helpdesk").is_err());
        assert!(dns1123_label("a_b").is_err());
        assert!(dns1123_label("-a").is_err());
        assert!(dns1123_label(&"a".repeat(64)).unwrap_err().contains("63"));
        assert_eq!(dns1123_subdomain("regcred.v2"), Ok(()));
        assert!(
            dns1123_subdomain("a..b")
                .unwrap_err()
                .contains("empty labels")
        );
        assert!(dns1123_subdomain("a.").is_err());
        assert!(dns1123_subdomain("My_Secret").is_err());
        assert!(dns1123_subdomain(&"a.".repeat(127)).is_err());
        assert_eq!(config_key("tls.crt"), Ok(()));
        assert_eq!(config_key("DATABASE_URL"), Ok(()));
        assert!(config_key("a/b").is_err());
        assert!(config_key("..").is_err());
    }

    #[test]
    fn emails_and_mailboxes() {
        assert_eq!(email("support@example.com"), Ok(()));
        for bad in [
            "support",
            "a@b",
            "a b@example.com",
            "@example.com",
            "a@@b.c",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
        assert_eq!(mailbox("Helpdesk <no-reply@example.com>"), Ok(()));
        assert_eq!(mailbox("no-reply@example.com"), Ok(()));
        assert_eq!(mailbox("\"Help, Desk\" <no-reply@example.com>"), Ok(()));
        assert!(mailbox("Helpdesk <no-reply>").is_err());
        assert!(mailbox("Help<desk <a@b.co>").is_err());
    }
}
