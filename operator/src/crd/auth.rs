//! `spec.auth`: token lifetime, the role of new sign-ups, the signing key and the first
//! administrator.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretRef;

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    User,
    #[default]
    Agent,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        helpdesk_contract::Role::from(self).as_str()
    }
}

impl From<Role> for helpdesk_contract::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::User => helpdesk_contract::Role::User,
            Role::Agent => helpdesk_contract::Role::Agent,
            Role::Admin => helpdesk_contract::Role::Admin,
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Lifetime of user tokens, e.g. `7d`, `12h`.
    #[serde(default = "default_ttl")]
    #[schemars(regex(pattern = r"^[0-9]+(s|m|h|d)$"))]
    pub token_ttl: String,
    #[serde(default)]
    pub signup_default_role: Role,
    /// Secret with `private.pem` (PKCS#8 Ed25519) and `public.pem`; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_secret_ref: Option<SecretRef>,
    /// Secret with `email` and `password` of the first administrator; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_admin_secret_ref: Option<SecretRef>,
}

impl Default for AuthSpec {
    fn default() -> Self {
        Self {
            token_ttl: default_ttl(),
            signup_default_role: Role::default(),
            signing_key_secret_ref: None,
            bootstrap_admin_secret_ref: None,
        }
    }
}

fn default_ttl() -> String {
    helpdesk_contract::auth::DEFAULT_TOKEN_TTL.to_string()
}
