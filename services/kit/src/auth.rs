//! JWTs: user-service signs with an Ed25519 private key; every service verifies with the public key.
//!
//! Two kinds of token share the key but not the audience: user tokens (audience
//! [`USER_AUDIENCE`]) and service credentials for internal routes (audience
//! [`SERVICE_AUDIENCE`]). Each extractor accepts only its own kind.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use ed25519_dalek::pkcs8::{
    DecodePublicKey, EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use uuid::Uuid;

use crate::config::{ConfigError, Env, parse_duration};
use crate::error::ApiError;
use helpdesk_contract::{self as contract, var};

/// Audience of end-user tokens.
pub const USER_AUDIENCE: &str = contract::auth::USER_AUDIENCE;
/// Audience of service-to-service credentials.
pub const SERVICE_AUDIENCE: &str = contract::auth::SERVICE_AUDIENCE;
/// Default issuer.
pub const DEFAULT_ISSUER: &str = contract::auth::ISSUER;

// The contract's `contract::Role`, with the derives the services need (conversions below).
/// A user's role.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    utoipa::ToSchema,
    sqlx::Type,
)]
#[serde(rename_all = "UPPERCASE")]
#[sqlx(type_name = "text", rename_all = "UPPERCASE")]
pub enum Role {
    User,
    Agent,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        contract::Role::from(self).as_str()
    }
    /// AGENT or ADMIN.
    pub fn is_staff(self) -> bool {
        contract::Role::from(self).is_staff()
    }
}

impl From<Role> for contract::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::User => contract::Role::User,
            Role::Agent => contract::Role::Agent,
            Role::Admin => contract::Role::Admin,
        }
    }
}

impl From<contract::Role> for Role {
    fn from(r: contract::Role) -> Self {
        match r {
            contract::Role::User => Role::User,
            contract::Role::Agent => Role::Agent,
            contract::Role::Admin => Role::Admin,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        contract::Role::parse(s).map(Role::from).ok_or_else(|| {
            let names: Vec<_> = contract::Role::ALL.iter().map(|r| r.as_str()).collect();
            format!("role must be one of {}, got {s:?}", names.join(", "))
        })
    }
}

/// Claims of a user token. `sub`, `email` and `role` are read by the frontend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserClaims {
    pub sub: Uuid,
    pub email: String,
    pub role: Role,
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
    pub aud: String,
    /// The session (one per sign-in): the one that changes the password stays signed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
    /// The account's token epoch at issue: a password change or reset moves the epoch on, and
    /// tokens of earlier epochs stop counting (see [`Sessions`]).
    #[serde(default)]
    pub ep: i64,
    /// The account's revision at issue (see [`AuthUser::role_by`]): a read model that has applied
    /// an earlier revision has not caught up with this token yet.
    #[serde(default)]
    pub rv: i64,
}

/// Which of a user's tokens still count: those issued at the current `epoch` or later, and the
/// `kept` session (the one that changed the password). A password change moves the epoch on and
/// keeps its own session; a reset moves it on and keeps none. Every service checks it against its
/// read model when it resolves the caller, as it does for role and existence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sessions {
    pub epoch: i64,
    pub kept: Option<Uuid>,
}

impl Sessions {
    pub fn admits(&self, token: &AuthUser) -> bool {
        token.epoch >= self.epoch || (self.kept.is_some() && self.kept == token.session)
    }
}

/// The refusal of a token whose session ended with a password change or reset.
pub const SESSION_ENDED: &str =
    "Your session has ended because the password changed; sign in again";

/// Claims of a service credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceClaims {
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
    pub aud: String,
}

/// Signing and verification keys with their issuer and token lifetime.
pub struct JwtKeys {
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    /// User tokens whose signature was verified, with their claims (see [`VerifiedTokens`]).
    verified: VerifiedTokens,
    kid: String,
    public_raw: [u8; 32],
    pub issuer: String,
    pub token_ttl: Duration,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("kid", &self.kid)
            .field("can_sign", &self.encoding.is_some())
            .finish()
    }
}

/// The user tokens this process verified recently, by their exact text, with their claims.
///
/// Verifying an Ed25519 signature is most of the CPU an authenticated read costs; a signed-in
/// client sends the same token with every request. The cache holds only what a full
/// verification accepted, keyed by the whole token (a token that differs in one character is a
/// different key and is verified in full), and checks the expiry on every hit with the same
/// leeway. It changes nothing about revocation: whether a token still counts (deleted user,
/// changed role, ended sessions) is decided by each service's read model on every request, not
/// here. Bounded: when full, it starts over.
#[derive(Default)]
pub struct VerifiedTokens {
    tokens: std::sync::Mutex<std::collections::HashMap<Box<str>, UserClaims>>,
}

impl VerifiedTokens {
    /// At most this many tokens are remembered (about 0.5 KiB each).
    pub const CAPACITY: usize = 4096;
    /// The expiry leeway of the full verification.
    const LEEWAY_SECS: u64 = 30;

    /// `None`: not seen; `Some(Err)`: seen but expired since.
    fn get(&self, token: &str, now: u64) -> Option<Result<UserClaims, ()>> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let claims = tokens.get(token)?;
        if now > claims.exp.saturating_add(Self::LEEWAY_SECS) {
            tokens.remove(token);
            return Some(Err(()));
        }
        Some(Ok(claims.clone()))
    }

    fn insert(&self, token: &str, claims: &UserClaims) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= Self::CAPACITY {
            tokens.clear();
        }
        tokens.insert(token.into(), claims.clone());
    }

    pub fn len(&self) -> usize {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Errors building keys or tokens.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not an Ed25519 public key in PEM (SPKI) form")]
    BadPublicKey,
    #[error("not an Ed25519 private key in PEM (PKCS#8) form")]
    BadPrivateKey,
    #[error("the private key does not match the public key")]
    Mismatch,
    #[error("this service holds no signing key")]
    CannotSign,
    #[error("token encoding failed: {0}")]
    Encode(#[from] jsonwebtoken::errors::Error),
}

impl JwtKeys {
    /// Keys from PEM text: the public key always, the private key only in user-service.
    pub fn from_pem(
        public_pem: &str,
        private_pem: Option<&str>,
        issuer: &str,
        token_ttl: Duration,
    ) -> Result<Self, KeyError> {
        let verifying = ed25519_dalek::VerifyingKey::from_public_key_pem(public_pem.trim())
            .map_err(|_| KeyError::BadPublicKey)?;
        let decoding = DecodingKey::from_ed_pem(public_pem.trim().as_bytes())
            .map_err(|_| KeyError::BadPublicKey)?;
        let encoding = match private_pem {
            None => None,
            Some(pem) => {
                use ed25519_dalek::pkcs8::DecodePrivateKey;
                let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(pem.trim())
                    .map_err(|_| KeyError::BadPrivateKey)?;
                if signing.verifying_key() != verifying {
                    return Err(KeyError::Mismatch);
                }
                Some(
                    EncodingKey::from_ed_pem(pem.trim().as_bytes())
                        .map_err(|_| KeyError::BadPrivateKey)?,
                )
            }
        };
        let public_raw = verifying.to_bytes();
        let kid = hex::encode(&sha2::Sha256::digest(public_raw)[..8]);
        Ok(Self {
            encoding,
            decoding,
            verified: VerifiedTokens::default(),
            kid,
            public_raw,
            issuer: issuer.to_string(),
            token_ttl,
        })
    }

    /// Keys from `JWT_PUBLIC_KEY(_FILE)`, `JWT_PRIVATE_KEY(_FILE)` (only when `with_private`),
    /// `JWT_ISSUER` and `JWT_TTL`.
    pub fn from_env(env: &Env, with_private: bool) -> Result<Self, ConfigError> {
        let public = env.value_or_file(var::JWT_PUBLIC_KEY)?.ok_or_else(|| {
            ConfigError::new(
                var::JWT_PUBLIC_KEY,
                format!("is required (PEM, or {})", var::JWT_PUBLIC_KEY_FILE),
            )
        })?;
        let private = if with_private {
            Some(env.value_or_file(var::JWT_PRIVATE_KEY)?.ok_or_else(|| {
                ConfigError::new(
                    var::JWT_PRIVATE_KEY,
                    format!("is required (PEM, or {})", var::JWT_PRIVATE_KEY_FILE),
                )
            })?)
        } else {
            None
        };
        let issuer = env.string_or(var::JWT_ISSUER, DEFAULT_ISSUER);
        let default_ttl =
            parse_duration(contract::auth::DEFAULT_TOKEN_TTL).expect("the default TTL parses");
        let ttl = env.duration_or(var::JWT_TTL, default_ttl)?;
        Self::from_pem(&public, private.as_deref(), &issuer, ttl).map_err(|e| {
            let name = if matches!(e, KeyError::BadPublicKey) {
                var::JWT_PUBLIC_KEY
            } else {
                var::JWT_PRIVATE_KEY
            };
            ConfigError::new(name, e.to_string())
        })
    }

    fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let key = self.encoding.as_ref().ok_or(KeyError::CannotSign)?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, key)?)
    }

    /// Issues a user token valid for the configured lifetime, for a new session at epoch 0 and
    /// revision 0.
    pub fn issue_user_token(&self, id: Uuid, email: &str, role: Role) -> Result<String, KeyError> {
        self.issue_session_token(id, email, role, Uuid::new_v4(), (0, 0))
    }

    /// Issues a user token for `session` at the account's `(token epoch, revision)`.
    pub fn issue_session_token(
        &self,
        id: Uuid,
        email: &str,
        role: Role,
        session: Uuid,
        (epoch, revision): (i64, i64),
    ) -> Result<String, KeyError> {
        let now = now_secs();
        self.sign(&UserClaims {
            sub: id,
            email: email.to_string(),
            role,
            iat: now,
            exp: now + self.token_ttl.as_secs(),
            iss: self.issuer.clone(),
            aud: USER_AUDIENCE.to_string(),
            sid: Some(session),
            ep: epoch,
            rv: revision,
        })
    }

    /// Issues a service credential (used by the launcher and tests; the operator mints its own).
    pub fn issue_service_token(&self, service: &str, ttl: Duration) -> Result<String, KeyError> {
        let now = now_secs();
        self.sign(&ServiceClaims {
            sub: service.to_string(),
            iat: now,
            exp: now + ttl.as_secs(),
            iss: self.issuer.clone(),
            aud: SERVICE_AUDIENCE.to_string(),
        })
    }

    fn validation(&self, audience: &str) -> Validation {
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_audience(&[audience]);
        v.set_issuer(&[self.issuer.as_str()]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = 30;
        v
    }

    /// Verifies a user token: signature, algorithm, issuer, audience and expiry. A token seen
    /// before skips the signature check (its claims are kept; the expiry is checked every time).
    pub fn verify_user_token(&self, token: &str) -> Result<UserClaims, ApiError> {
        let now = now_secs();
        match self.verified.get(token, now) {
            Some(Ok(claims)) => return Ok(claims),
            Some(Err(())) => return Err(ApiError::unauthorized("Invalid or expired token")),
            None => {}
        }
        let claims = jsonwebtoken::decode::<UserClaims>(
            token,
            &self.decoding,
            &self.validation(USER_AUDIENCE),
        )
        .map(|d| d.claims)
        .map_err(|_| ApiError::unauthorized("Invalid or expired token"))?;
        self.verified.insert(token, &claims);
        Ok(claims)
    }

    /// Verifies a service credential.
    pub fn verify_service_token(&self, token: &str) -> Result<ServiceClaims, ApiError> {
        jsonwebtoken::decode::<ServiceClaims>(
            token,
            &self.decoding,
            &self.validation(SERVICE_AUDIENCE),
        )
        .map(|d| d.claims)
        .map_err(|_| ApiError::unauthorized("A valid service credential is required"))
    }

    /// The JWKS document with the public key.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": self.kid,
                "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.public_raw),
            }]
        })
    }
}

fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// A fresh Ed25519 key pair as (private PKCS#8 PEM, public SPKI PEM).
pub fn generate_key_pair() -> (String, String) {
    let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    // Encoding freshly generated keys cannot fail.
    let private = signing
        .to_pkcs8_pem(LineEnding::LF)
        .map(|p| p.to_string())
        .unwrap_or_default();
    let public = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap_or_default();
    (private, public)
}

mod extract;
pub use extract::{AuthUser, ServiceCaller, bearer};

#[cfg(test)]
mod tests;
