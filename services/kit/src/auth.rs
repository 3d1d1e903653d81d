//! JWTs: user-service signs with an Ed25519 private key; every service verifies with the public key.
//!
//! Two kinds of token share the key but not the audience: user tokens (audience
//! [`USER_AUDIENCE`]) and service credentials for internal routes (audience
//! [`SERVICE_AUDIENCE`]). Each extractor accepts only its own kind.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
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

    /// Issues a user token valid for the configured lifetime, for a new session at epoch 0.
    pub fn issue_user_token(&self, id: Uuid, email: &str, role: Role) -> Result<String, KeyError> {
        self.issue_session_token(id, email, role, Uuid::new_v4(), 0)
    }

    /// Issues a user token for `session` at the account's token `epoch`.
    pub fn issue_session_token(
        &self,
        id: Uuid,
        email: &str,
        role: Role,
        session: Uuid,
        epoch: i64,
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

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The signed-in user, as stated by a valid user token. Services that keep a user read model
/// check existence and the current role there.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    /// The token's session and epoch (see [`Sessions`]).
    pub session: Option<Uuid>,
    pub epoch: i64,
}

impl From<UserClaims> for AuthUser {
    fn from(claims: UserClaims) -> Self {
        AuthUser {
            id: claims.sub,
            email: claims.email,
            role: claims.role,
            session: claims.sid,
            epoch: claims.ep,
        }
    }
}

impl<S> FromRequestParts<S> for AuthUser
where
    Arc<JwtKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token =
            bearer(parts).ok_or_else(|| ApiError::unauthorized("Authentication required"))?;
        let keys = Arc::<JwtKeys>::from_ref(state);
        let claims = keys.verify_user_token(token)?;
        Ok(AuthUser::from(claims))
    }
}

/// Another service calling an internal route with its service credential. User tokens are refused.
#[derive(Debug, Clone)]
pub struct ServiceCaller {
    pub service: String,
}

impl ServiceCaller {
    /// Internal routes are scoped: only the services listed may call this one (e.g. only
    /// admin-service changes roles and deletes users), whatever other service's credential is
    /// presented. 403 otherwise.
    pub fn require(&self, allowed: &[crate::contract::Service]) -> Result<(), ApiError> {
        if allowed.iter().any(|s| s.binary() == self.service) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{} may not call this route",
                self.service
            )))
        }
    }
}

impl<S> FromRequestParts<S> for ServiceCaller
where
    Arc<JwtKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)
            .ok_or_else(|| ApiError::unauthorized("A valid service credential is required"))?;
        let keys = Arc::<JwtKeys>::from_ref(state);
        let claims = keys.verify_service_token(token)?;
        Ok(ServiceCaller {
            service: claims.sub,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_tokens_are_remembered_exactly_and_expire() {
        let k = keys();
        let id = Uuid::new_v4();
        let token = k
            .issue_user_token(id, "a@example.com", Role::Agent)
            .unwrap();
        assert_eq!(k.verify_user_token(&token).unwrap().sub, id);
        assert_eq!(k.verified.len(), 1);
        // A hit gives the same claims; a token differing in one character is verified in full
        // (and refused), never matched against the remembered one.
        assert_eq!(k.verify_user_token(&token).unwrap().sub, id);
        let mut forged = token.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(k.verify_user_token(&forged).is_err());
        assert_eq!(k.verified.len(), 1);
        // Past its expiry (and the leeway) a remembered token is refused and forgotten.
        let exp = k.verify_user_token(&token).unwrap().exp;
        assert!(k.verified.get(&token, exp + 30).is_some_and(|r| r.is_ok()));
        assert!(matches!(k.verified.get(&token, exp + 31), Some(Err(()))));
        assert!(k.verified.is_empty());
        // Another key never sees this process's remembered tokens.
        assert!(keys().verify_user_token(&token).is_err());
    }

    fn keys() -> JwtKeys {
        let (private, public) = generate_key_pair();
        JwtKeys::from_pem(
            &public,
            Some(&private),
            DEFAULT_ISSUER,
            Duration::from_secs(3600),
        )
        .unwrap()
    }

    #[test]
    fn user_token_round_trip_and_audience_separation() {
        let k = keys();
        let id = Uuid::new_v4();
        let token = k.issue_user_token(id, "a@b.co", Role::Agent).unwrap();
        let claims = k.verify_user_token(&token).unwrap();
        assert_eq!(claims.sub, id);
        assert_eq!(claims.role, Role::Agent);
        assert!(
            k.verify_service_token(&token).is_err(),
            "a user token is not a service credential"
        );
        let svc = k
            .issue_service_token("admin-service", Duration::from_secs(60))
            .unwrap();
        assert_eq!(k.verify_service_token(&svc).unwrap().sub, "admin-service");
        assert!(k.verify_user_token(&svc).is_err());
    }

    #[test]
    fn foreign_key_and_alg_none_are_refused() {
        let k = keys();
        let other = keys();
        let token = other
            .issue_user_token(Uuid::new_v4(), "a@b.co", Role::Admin)
            .unwrap();
        assert!(k.verify_user_token(&token).is_err());
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let payload = token.split('.').nth(1).unwrap();
        assert!(
            k.verify_user_token(&format!("{header}.{payload}."))
                .is_err()
        );
    }

    #[test]
    fn roles_are_the_contracts() {
        for r in contract::Role::ALL {
            let ours = Role::from(r);
            assert_eq!(contract::Role::from(ours), r);
            assert_eq!(ours.as_str(), r.as_str());
            assert_eq!(serde_json::to_value(ours).unwrap(), r.as_str());
            assert_eq!(r.as_str().parse::<Role>().unwrap(), ours);
        }
        assert!("agent".parse::<Role>().is_err());
    }

    #[test]
    fn mismatched_private_key_is_refused() {
        let (_, public) = generate_key_pair();
        let (private, _) = generate_key_pair();
        let err =
            JwtKeys::from_pem(&public, Some(&private), "x", Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, KeyError::Mismatch));
    }
}
