//! Signup, login, the current user, password change, token validation and the JWKS.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use helpdesk_kit::auth::{AuthUser, SESSION_ENDED, ServiceCaller, Sessions};
use helpdesk_kit::error::{ApiError, ApiJson, ApiResult, check_length, is_valid_email};
use helpdesk_kit::events::{UserCreated, UserUpdated};
use helpdesk_kit::http::{ClientIp, RequestId};
use helpdesk_kit::outbox::{self, EventContext};
use helpdesk_kit::ratelimit::{Attempt, reserve_attempt};

use crate::AppState;
use crate::passwords::Verified;
use crate::users::{self, NewUser, User, UserRow};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/signup", post(signup))
        .route("/auth/login", post(login))
        .route("/auth/me", get(me))
        .route("/auth/change-password", post(change_password))
        .route("/auth/validate", post(validate))
        .route("/.well-known/jwks.json", get(jwks))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"email": "ann@example.com", "password": "secret12", "firstName": "Ann", "lastName": "Lee"}))]
pub struct SignupRequest {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// At least the configured minimum (6 by default), at most 128 characters.
    #[schema(min_length = 6, max_length = 128)]
    pub password: String,
    /// At most 100 characters after trimming; blank means none.
    #[schema(format = "trimmed", max_length = 100)]
    pub first_name: Option<String>,
    /// At most 100 characters after trimming; blank means none.
    #[schema(format = "trimmed", max_length = 100)]
    pub last_name: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"email": "ann@example.com", "password": "secret12"}))]
pub struct LoginRequest {
    #[schema(format = "trimmed", min_length = 1)]
    pub email: String,
    #[schema(min_length = 1)]
    pub password: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuthResponse {
    pub user: User,
    pub token: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"oldPassword": "secret12", "newPassword": "secret34"}))]
pub struct ChangePasswordRequest {
    #[schema(min_length = 1, max_length = 128)]
    pub old_password: String,
    /// At least the configured minimum (6 by default), at most 128 characters.
    #[schema(min_length = 6, max_length = 128)]
    pub new_password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ValidateRequest {
    pub token: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ValidateResponse {
    pub valid: bool,
    pub user: User,
}

/// `{message}` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Message {
    pub message: String,
}

impl Message {
    pub fn new(m: &str) -> ApiJson<Message> {
        ApiJson(Message {
            message: m.to_string(),
        })
    }
}

/// Checks a new password against the configured length limits.
pub fn check_password(state: &AppState, field: &str, password: &str) -> ApiResult<()> {
    let n = password.chars().count();
    let min = state.config.password_min_length;
    if n < min {
        return Err(ApiError::bad_request(format!(
            "{field} must be at least {min} characters"
        )));
    }
    if n > 128 {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most 128 characters"
        )));
    }
    Ok(())
}

fn optional_name(field: &str, value: Option<String>) -> ApiResult<Option<String>> {
    match value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    {
        None => Ok(None),
        Some(v) => {
            check_length(field, &v, 1, 100)?;
            Ok(Some(v))
        }
    }
}

/// A token for a new session at the account's current token epoch.
fn issue(state: &AppState, row: &UserRow) -> ApiResult<String> {
    state
        .keys()
        .issue_session_token(
            row.id,
            &row.email,
            row.role,
            Uuid::new_v4(),
            (row.token_epoch, row.revision),
        )
        .map_err(ApiError::internal)
}

/// Create an account.
#[utoipa::path(post, path = "/auth/signup", request_body = SignupRequest, tag = "auth",
    responses((status = 201, body = AuthResponse), (status = 400, description = "Invalid field"), (status = 409, description = "Email already exists")))]
pub async fn signup(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<SignupRequest>,
) -> ApiResult<(StatusCode, ApiJson<AuthResponse>)> {
    let email = body.email.trim().to_string();
    // At most 254 characters as sent (as documented), blanks around it included.
    if body.email.chars().count() > 254 || !is_valid_email(&email) {
        return Err(ApiError::bad_request("email must be a valid email address"));
    }
    check_password(&state, "password", &body.password)?;
    let first_name = optional_name("firstName", body.first_name)?;
    let last_name = optional_name("lastName", body.last_name)?;
    if users::find_by_email(&state.pool, &email).await?.is_some() {
        return Err(ApiError::conflict("Email already exists"));
    }
    let hash = state.passwords.hash(body.password).await?;
    let mut tx = state.pool.begin().await?;
    let new = NewUser {
        email: &email,
        password_hash: &hash,
        first_name: first_name.as_deref(),
        last_name: last_name.as_deref(),
        role: state.config.signup_default_role,
    };
    let row = match users::insert(&mut tx, &new).await {
        Ok(row) => row,
        Err(e) if users::is_duplicate_email(&e) => {
            return Err(ApiError::conflict("Email already exists"));
        }
        Err(e) => return Err(e.into()),
    };
    let ctx = EventContext::request(request_id, Some(row.id));
    outbox::publish(
        &mut tx,
        &UserCreated {
            user: row.snapshot(),
        },
        &ctx,
    )
    .await?;
    tx.commit().await?;
    let token = issue(&state, &row)?;
    Ok((
        StatusCode::CREATED,
        ApiJson(AuthResponse {
            user: User::from(&row),
            token,
        }),
    ))
}

/// Sign in.
#[utoipa::path(post, path = "/auth/login", request_body = LoginRequest, tag = "auth",
    responses((status = 200, body = AuthResponse), (status = 401, description = "Invalid credentials"), (status = 429, description = "Too many attempts")))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<LoginRequest>,
) -> ApiResult<ApiJson<AuthResponse>> {
    let email = body.email.trim().to_lowercase();
    if email.is_empty() || body.password.is_empty() {
        return Err(ApiError::bad_request("email and password are required"));
    }
    // Only failures count ("repeated failures are rate limited"): signing in again and again
    // with the right password is never refused.
    let limits = [
        (state.limiters.login_ip.as_ref(), ip.as_str()),
        (state.limiters.login_account.as_ref(), email.as_str()),
    ];
    // The attempt is reserved before the hash, so concurrent wrong passwords cannot all pass
    // the check before the first failure is counted.
    let attempt = reserve_attempt(&limits)?;
    if body.password.chars().count() > 128 {
        attempt.failed();
        return Err(ApiError::unauthorized("Invalid credentials"));
    }
    let row = users::find_by_email(&state.pool, &email).await?;
    let verified = state
        .passwords
        .verify_for_login(body.password, row.as_ref().map(|r| r.password_hash.clone()))
        .await?;
    match (row, verified) {
        (Some(row), Verified::Right) => signed_in(&state, attempt, row),
        (Some(row), Verified::RightRehashed(hash)) => {
            // Moves the account to the current argon2id parameters; the login stands either way.
            if let Err(e) = users::rehash(&state.pool, row.id, &row.password_hash, &hash).await {
                tracing::warn!(error = %e, "storing a password hash with the current parameters failed");
            }
            signed_in(&state, attempt, row)
        }
        _ => {
            attempt.failed();
            Err(ApiError::unauthorized("Invalid credentials"))
        }
    }
}

fn signed_in(
    state: &AppState,
    attempt: Attempt<'_>,
    row: UserRow,
) -> ApiResult<ApiJson<AuthResponse>> {
    attempt.succeeded();
    let token = issue(state, &row)?;
    Ok(ApiJson(AuthResponse {
        user: User::from(&row),
        token,
    }))
}

/// Loads the signed-in user; a token of a deleted account, or of a session a password change
/// or reset ended, no longer works.
pub async fn current_user(state: &AppState, auth: &AuthUser) -> ApiResult<UserRow> {
    let row = users::find_by_id(&state.pool, auth.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("User no longer exists"))?;
    let sessions = Sessions {
        epoch: row.token_epoch,
        kept: row.kept_session,
    };
    if !sessions.admits(auth) {
        return Err(ApiError::unauthorized(SESSION_ENDED));
    }
    Ok(row)
}

/// The signed-in user.
#[utoipa::path(get, path = "/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, description = "Not signed in")))]
pub async fn me(State(state): State<AppState>, auth: AuthUser) -> ApiResult<ApiJson<User>> {
    let row = current_user(&state, &auth).await?;
    Ok(ApiJson(User::from(&row)))
}

/// Change the signed-in user's password.
#[utoipa::path(post, path = "/auth/change-password", request_body = ChangePasswordRequest, tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Message), (status = 400, description = "Current password is incorrect")))]
pub async fn change_password(
    State(state): State<AppState>,
    auth: AuthUser,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> ApiResult<ApiJson<Message>> {
    check_password(&state, "newPassword", &body.new_password)?;
    let row = current_user(&state, &auth).await?;
    if body.old_password.chars().count() > 128
        || !state
            .passwords
            .verify(body.old_password, Some(row.password_hash.clone()))
            .await?
    {
        return Err(ApiError::bad_request("Current password is incorrect"));
    }
    let hash = state.passwords.hash(body.new_password).await?;
    let mut tx = state.pool.begin().await?;
    // The event carries the row as this transaction writes it, not `row` read before hashing: a
    // role change committed meanwhile must not be overwritten in the read models by a stale copy.
    // Every other session ends; this one stays signed in.
    let updated = users::set_password(&mut tx, row.id, &hash, auth.session)
        .await?
        .ok_or_else(|| ApiError::unauthorized("User no longer exists"))?;
    let ctx = EventContext::request(request_id, Some(row.id));
    outbox::publish(
        &mut tx,
        &UserUpdated {
            user: updated.snapshot(),
            changes: vec!["password".into()],
        },
        &ctx,
    )
    .await?;
    tx.commit().await?;
    Ok(Message::new("Password changed successfully"))
}

/// Validate a user token (internal: for callers that cannot verify JWTs themselves).
#[utoipa::path(post, path = "/auth/validate", request_body = ValidateRequest, tag = "internal", security(("bearer" = [])),
    responses((status = 200, body = ValidateResponse), (status = 401, description = "Invalid token or missing service credential")))]
pub async fn validate(
    State(state): State<AppState>,
    _caller: ServiceCaller,
    ApiJson(body): ApiJson<ValidateRequest>,
) -> ApiResult<ApiJson<ValidateResponse>> {
    let claims = state.keys().verify_user_token(body.token.trim())?;
    let row = current_user(&state, &AuthUser::from(claims)).await?;
    Ok(ApiJson(ValidateResponse {
        valid: true,
        user: User::from(&row),
    }))
}

/// Public keys that verify user tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth", responses((status = 200, description = "JWKS")))]
pub async fn jwks(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(state.keys().jwks())
}
