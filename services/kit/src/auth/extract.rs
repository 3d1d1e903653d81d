//! The extractors: the signed-in user ([`AuthUser`]) from a user token, and the calling service
//! ([`ServiceCaller`]) from a service credential; each accepts only its own kind of token.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;

use super::*;

/// The token of an `Authorization: Bearer …` header (scheme case-insensitive), if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
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
    /// The account's revision when the token was issued.
    pub revision: i64,
}

impl AuthUser {
    /// The role to authorize by, given what a read model has applied of the account (its role
    /// and revision): the model's role, unless the token was issued at a later revision than the
    /// model has seen. Then the model has not caught up yet (the role change's event is on its
    /// way) and the token, signed by user-service at that revision, states the newer role: a user
    /// who signs in again after a demotion is never taken for staff, nor one signing in after a
    /// promotion for a requester. Without a row the token's role counts.
    pub fn role_by(&self, known: Option<(Role, i64)>) -> Role {
        match known {
            Some((role, revision)) if !self.is_newer_than(revision) => role,
            _ => self.role,
        }
    }

    /// Whether a read model that has applied `revision` of the account is behind this token.
    pub fn is_newer_than(&self, revision: i64) -> bool {
        revision < self.revision
    }
}

impl From<UserClaims> for AuthUser {
    fn from(claims: UserClaims) -> Self {
        AuthUser {
            id: claims.sub,
            email: claims.email,
            role: claims.role,
            session: claims.sid,
            epoch: claims.ep,
            revision: claims.rv,
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
