//! Forgot / reset password. Tokens are 32 random bytes, stored only as SHA-256, valid for an hour,
//! single use; a successful reset voids the user's other outstanding tokens.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use helpdesk_kit::error::{ApiError, ApiJson, ApiResult, is_valid_email};
use helpdesk_kit::events::{UserPasswordResetRequested, UserUpdated};
use helpdesk_kit::http::{ClientIp, RequestId};
use helpdesk_kit::outbox::{self, EventContext};
use helpdesk_kit::ratelimit::{enforce, reserve_attempt};

use crate::AppState;
use crate::auth::{Message, check_password};
use crate::users;

const FORGOT_ANSWER: &str = "If the email exists, a reset link has been sent";
const INVALID_TOKEN: &str = "Invalid or expired reset token";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/forgot-password", post(forgot_password))
        .route("/auth/reset-password", post(reset_password))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"email": "ann@example.com"}))]
pub struct ForgotPasswordRequest {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"token": "the token of the reset link", "newPassword": "secret34"}))]
pub struct ResetPasswordRequest {
    /// The token of the reset link.
    #[schema(min_length = 1)]
    pub token: String,
    /// At least the configured minimum (6 by default), at most 128 characters.
    #[schema(min_length = 6, max_length = 128)]
    pub new_password: String,
}

fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Request a reset link by email.
#[utoipa::path(post, path = "/auth/forgot-password", request_body = ForgotPasswordRequest, tag = "auth",
    responses((status = 200, body = Message), (status = 429, description = "Too many requests")))]
pub async fn forgot_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<ForgotPasswordRequest>,
) -> ApiResult<ApiJson<Message>> {
    let email = body.email.trim().to_lowercase();
    // At most 254 characters as sent (as documented), blanks around it included.
    if body.email.chars().count() > 254 || !is_valid_email(&email) {
        return Err(ApiError::bad_request("email must be a valid email address"));
    }
    enforce(&[
        (state.limiters.forgot_ip.as_ref(), ip.as_str()),
        (state.limiters.forgot_account.as_ref(), email.as_str()),
    ])?;
    let Some(user) = users::find_by_email(&state.pool, &email).await? else {
        return Ok(Message::new(FORGOT_ANSWER));
    };
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let expires_at = chrono::Utc::now()
        + chrono::Duration::from_std(state.config.reset_token_ttl)
            .unwrap_or(chrono::Duration::hours(1));
    let mut tx = state.pool.begin().await?;
    sqlx::query!(
        "INSERT INTO password_reset_tokens (id, user_id, token_hash, expires_at) VALUES ($1, $2, $3, $4)",
        Uuid::now_v7(),
        user.id,
        hash_token(&token),
        expires_at,
    )
    .execute(&mut *tx)
    .await?;
    let event = UserPasswordResetRequested {
        user_id: user.id,
        email: user.email.clone(),
        first_name: user.first_name.clone(),
        reset_link: format!(
            "{}/reset-password?token={token}",
            state.config.frontend_base_url
        ),
        expires_at,
    };
    let ctx = EventContext::request(request_id, Some(user.id));
    outbox::publish(&mut tx, &event, &ctx).await?;
    tx.commit().await?;
    Ok(Message::new(FORGOT_ANSWER))
}

/// Set a new password with a reset token.
#[utoipa::path(post, path = "/auth/reset-password", request_body = ResetPasswordRequest, tag = "auth",
    responses((status = 200, body = Message), (status = 400, description = "Invalid or expired reset token")))]
pub async fn reset_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<ResetPasswordRequest>,
) -> ApiResult<ApiJson<Message>> {
    // Guessing tokens is what this limits: only invalid tokens count.
    let limits = [(state.limiters.reset_ip.as_ref(), ip.as_str())];
    let attempt = reserve_attempt(&limits)?;
    check_password(&state, "newPassword", &body.new_password)?;
    let token = body.token.trim();
    if token.is_empty() || token.len() > 256 {
        attempt.failed();
        return Err(ApiError::bad_request(INVALID_TOKEN));
    }
    let token_hash = hash_token(token);
    // Cheap check first, so an invalid token costs no hashing.
    let valid = sqlx::query_scalar!(
        "SELECT user_id FROM password_reset_tokens WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()",
        token_hash,
    )
    .fetch_optional(&state.pool)
    .await?;
    if valid.is_none() {
        attempt.failed();
        return Err(ApiError::bad_request(INVALID_TOKEN));
    }
    attempt.succeeded();
    let hash = state.passwords.hash(body.new_password).await?;
    let mut tx = state.pool.begin().await?;
    // Claim the token atomically: of two concurrent resets, one wins.
    let user_id = sqlx::query_scalar!(
        "UPDATE password_reset_tokens SET used_at = now() \
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING user_id",
        token_hash,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(user_id) = user_id else {
        return Err(ApiError::bad_request(INVALID_TOKEN));
    };
    // A reset ends every session.
    let Some(user) = users::set_password(&mut tx, user_id, &hash, None).await? else {
        return Err(ApiError::bad_request(INVALID_TOKEN));
    };
    sqlx::query!(
        "UPDATE password_reset_tokens SET used_at = now() WHERE user_id = $1 AND used_at IS NULL",
        user_id,
    )
    .execute(&mut *tx)
    .await?;
    let ctx = EventContext::request(request_id, Some(user_id));
    outbox::publish(
        &mut tx,
        &UserUpdated {
            user: user.snapshot(),
            changes: vec!["password".into()],
        },
        &ctx,
    )
    .await?;
    tx.commit().await?;
    Ok(Message::new("Password reset successful"))
}
