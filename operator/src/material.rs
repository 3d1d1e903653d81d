//! Generated credentials: the JWT signing key pair, service tokens, datastore and admin passwords.
//!
//! Generated once, stored in Secrets, and read back on every later reconcile so they never change.

use std::collections::BTreeMap;

use base64::Engine;
use ed25519_dalek::{
    SigningKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::{RngCore, rngs::OsRng};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::names::Component;

pub const PRIVATE_KEY: &str = "private.pem";
pub const PUBLIC_KEY: &str = "public.pem";
pub const SERVICE_TOKEN_AUDIENCE: &str = helpdesk_contract::auth::SERVICE_AUDIENCE;
pub const SERVICE_TOKEN_ISSUER: &str = helpdesk_contract::auth::ISSUER;
/// Service tokens live as long as the key that signed them; rotating the key re-mints them.
/// Service credentials live 90 days and are minted anew when fewer than
/// [`SERVICE_TOKEN_RENEW_BEFORE_SECS`] remain: the new ones roll the pods (their hash is on the pod
/// template), and the old ones stay valid until they expire, so pods of both generations talk to
/// each other throughout the rollout.
pub const SERVICE_TOKEN_LIFETIME_SECS: i64 = 90 * 24 * 3600;
pub const SERVICE_TOKEN_RENEW_BEFORE_SECS: i64 = 30 * 24 * 3600;

/// The first administrator's email when the platform does not supply one: `admin@<ingress host>`.
pub fn default_admin_email(host: &str) -> String {
    format!("admin@{host}")
}

/// The `exp` of a JWT (without verifying it: the operator minted it), if it can be read.
pub fn token_expiry(token: &str) -> Option<i64> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok()?["exp"].as_i64()
}

#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error("signing key is not a PKCS#8 Ed25519 PEM: {0}")]
    BadKey(String),
    #[error("cannot sign service token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// PEM key pair for user tokens: user-service signs, everyone verifies.
#[derive(Clone, Debug, PartialEq)]
pub struct JwtKeys {
    pub private_pem: String,
    pub public_pem: String,
}

impl JwtKeys {
    pub fn generate() -> Self {
        let key = SigningKey::generate(&mut OsRng);
        Self::from_signing_key(&key)
    }

    fn from_signing_key(key: &SigningKey) -> Self {
        let private_pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("Ed25519 key encodes")
            .to_string();
        let public_pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("Ed25519 key encodes");
        Self {
            private_pem,
            public_pem,
        }
    }

    /// Rebuilds the pair from a stored private key (the public half is derived, never trusted).
    pub fn from_private_pem(pem: &str) -> Result<Self, MaterialError> {
        let key =
            SigningKey::from_pkcs8_pem(pem).map_err(|e| MaterialError::BadKey(e.to_string()))?;
        Ok(Self::from_signing_key(&key))
    }

    /// Short fingerprint of the public key, stored next to tokens minted with it.
    pub fn fingerprint(&self) -> String {
        hex::encode(&Sha256::digest(self.public_pem.as_bytes())[..8])
    }
}

#[derive(Serialize)]
struct ServiceClaims {
    sub: String,
    aud: String,
    iss: String,
    iat: i64,
    exp: i64,
    /// A unique id: a renewal within the same second still yields a new credential.
    jti: String,
}

/// One EdDSA JWT per service, `sub = <service>-service`, with the contract's service audience.
pub fn mint_service_tokens(
    keys: &JwtKeys,
    now_unix: i64,
) -> Result<BTreeMap<String, String>, MaterialError> {
    let key = EncodingKey::from_ed_pem(keys.private_pem.as_bytes())?;
    let header = Header::new(Algorithm::EdDSA);
    Component::ALL
        .iter()
        .map(|c| {
            let claims = ServiceClaims {
                sub: c.binary().into(),
                aud: SERVICE_TOKEN_AUDIENCE.into(),
                iss: SERVICE_TOKEN_ISSUER.into(),
                iat: now_unix,
                exp: now_unix + SERVICE_TOKEN_LIFETIME_SECS,
                jti: {
                    use rand::RngCore;
                    let mut id = [0u8; 16];
                    rand::thread_rng().fill_bytes(&mut id);
                    hex::encode(id)
                },
            };
            Ok((
                c.as_str().to_string(),
                jsonwebtoken::encode(&header, &claims, &key)?,
            ))
        })
        .collect()
}

/// A URL-safe random password (24 bytes of entropy), safe inside connection URLs.
pub fn random_password() -> String {
    let mut bytes = [0u8; 24];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[derive(Clone, Debug, PartialEq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RabbitCredentials {
    pub username: String,
    pub password: String,
    pub erlang_cookie: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AdminCredentials {
    pub email: String,
    pub password: String,
}

/// A Secret the operator creates and keeps, or one the SRE supplied that it only reads.
#[derive(Clone, Debug, PartialEq)]
pub enum Owned<T> {
    /// Created (now or earlier) by the operator; it is part of the desired state.
    Ours(T),
    /// Supplied by the SRE; never written.
    Theirs,
}

/// Everything secret that the builders need, gathered before the pure build.
#[derive(Clone, Debug, PartialEq)]
pub struct SecretMaterial {
    pub jwt: Owned<JwtKeys>,
    pub admin: Owned<AdminCredentials>,
    /// Tokens keyed by short service name, and the fingerprint of the key that signed them.
    pub service_tokens: BTreeMap<String, String>,
    pub signing_fingerprint: String,
    /// Present when PostgreSQL is managed by the operator.
    pub postgres: Option<Credentials>,
    /// Present when RabbitMQ is managed by the operator.
    pub rabbitmq: Option<RabbitCredentials>,
    /// Secrets someone else provides that the pods read (the SRE's external datastore URLs,
    /// SMTP credentials, signing key or admin, and the delegated operators' credentials): name →
    /// hash of their data. A rotation changes the hash on the pod templates, which rolls the pods.
    pub supplied: BTreeMap<String, String>,
}

impl SecretMaterial {
    /// Fresh material for `render` (no cluster to read existing Secrets from).
    pub fn generate(admin_email: &str, with_postgres: bool, with_rabbitmq: bool) -> Self {
        let keys = JwtKeys::generate();
        let tokens = mint_service_tokens(&keys, chrono::Utc::now().timestamp())
            .expect("freshly generated key signs");
        Self {
            signing_fingerprint: keys.fingerprint(),
            jwt: Owned::Ours(keys),
            admin: Owned::Ours(AdminCredentials {
                email: admin_email.to_string(),
                password: random_password(),
            }),
            service_tokens: tokens,
            postgres: with_postgres.then(|| Credentials {
                username: "helpdesk".into(),
                password: random_password(),
            }),
            rabbitmq: with_rabbitmq.then(|| RabbitCredentials {
                username: "helpdesk".into(),
                password: random_password(),
                erlang_cookie: random_password(),
            }),
            supplied: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Claims {
        sub: String,
        aud: String,
        iss: String,
        exp: i64,
    }

    #[test]
    fn service_tokens_verify_with_the_public_key() {
        let keys = JwtKeys::generate();
        let now = 1_800_000_000;
        let tokens = mint_service_tokens(&keys, now).unwrap();
        assert_eq!(tokens.len(), 5);
        let dk = DecodingKey::from_ed_pem(keys.public_pem.as_bytes()).unwrap();
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_audience(&[SERVICE_TOKEN_AUDIENCE]);
        v.set_issuer(&[SERVICE_TOKEN_ISSUER]);
        v.validate_exp = false;
        let c = jsonwebtoken::decode::<Claims>(&tokens["ticket"], &dk, &v)
            .unwrap()
            .claims;
        assert_eq!(c.sub, "ticket-service");
        assert_eq!(c.aud, "helpdesk-internal");
        assert_eq!(c.iss, "helpdesk");
        assert_eq!(
            c.exp,
            now + SERVICE_TOKEN_LIFETIME_SECS,
            "90 days, renewed before expiry"
        );
    }

    #[test]
    fn keys_round_trip_through_private_pem() {
        let keys = JwtKeys::generate();
        assert!(keys.private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(keys.public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let again = JwtKeys::from_private_pem(&keys.private_pem).unwrap();
        assert_eq!(again, keys);
        assert_eq!(again.fingerprint(), keys.fingerprint());
        assert!(JwtKeys::from_private_pem("nope").is_err());
    }

    #[test]
    fn passwords_are_url_safe_and_distinct() {
        let a = random_password();
        assert_eq!(a.len(), 32);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(a, random_password());
    }
}
