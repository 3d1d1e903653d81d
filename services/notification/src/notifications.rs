//! `POST /notifications/email` (internal) and `GET /notifications/status/{id}` (internal or ADMIN).

use std::collections::HashMap;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use helpdesk_kit::auth::{AuthUser, Role, ServiceCaller};
use helpdesk_kit::error::{ApiError, ApiJson, ApiPath, ApiResult, check_length, is_valid_email};
use helpdesk_kit::http::RequestId;
use helpdesk_kit::outbox::EventContext;

use crate::AppState;
use crate::emails::{self, EmailStatus, EmailView, NewEmail};
use crate::templates::{self, TemplateError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/notifications/email", post(send_email))
        .route("/notifications/status/{id}", get(email_status))
}

/// `{to, subject, body}` or `{to, template, data}`.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct SendEmailRequest {
    pub to: String,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub template: Option<String>,
    /// Template values; strings, numbers and booleans.
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Queued {
    pub id: Uuid,
    pub status: EmailStatus,
}

fn template_data(
    data: Option<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<HashMap<String, String>> {
    data.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            serde_json::Value::Number(n) => Ok((k, n.to_string())),
            serde_json::Value::Bool(b) => Ok((k, b.to_string())),
            serde_json::Value::Null => Ok((k, String::new())),
            _ => Err(ApiError::bad_request(format!(
                "data.{k} must be a string, number or boolean"
            ))),
        })
        .collect()
}

/// Queue an email (internal). Sent asynchronously; follow it with the status route.
#[utoipa::path(post, path = "/notifications/email", request_body = SendEmailRequest, tag = "internal", security(("bearer" = [])),
    responses((status = 202, body = Queued), (status = 400, description = "Invalid request"), (status = 401, description = "Service credential required")))]
pub async fn send_email(
    State(state): State<AppState>,
    caller: ServiceCaller,
    RequestId(request_id): RequestId,
    ApiJson(req): ApiJson<SendEmailRequest>,
) -> ApiResult<(StatusCode, ApiJson<Queued>)> {
    let to = req.to.trim().to_string();
    if !is_valid_email(&to) {
        return Err(ApiError::bad_request("to must be a valid email address"));
    }
    let (template, subject, body) = match (req.template, req.subject, req.body) {
        (Some(name), None, None) => {
            let rendered = state
                .templates
                .render(&name, &template_data(req.data)?)
                .map_err(|e| match e {
                    TemplateError::Unknown(_) => {
                        ApiError::bad_request(format!("template: unknown template {name:?}"))
                    }
                    other => ApiError::bad_request(format!("template {name}: {other}")),
                })?;
            (Some(name), rendered.subject, rendered.body)
        }
        (None, Some(subject), Some(body)) => {
            (None, subject.trim().replace(['\r', '\n'], " "), body)
        }
        _ => {
            return Err(ApiError::bad_request(
                "Give either subject and body, or template (with data)",
            ));
        }
    };
    check_length("subject", &subject, 1, 998)?;
    check_length("body", &body, 1, 100_000)?;
    let sensitive = template.as_deref().is_some_and(templates::is_sensitive);
    let email = NewEmail {
        source_event_id: None,
        recipient: to,
        template,
        subject,
        body,
        sensitive,
    };
    let ctx = EventContext::request(request_id, None);
    let mut tx = state.pool.begin().await?;
    let id = emails::queue(&mut tx, &email, &ctx)
        .await?
        .ok_or_else(|| ApiError::internal("an email without source event conflicted"))?;
    tx.commit().await?;
    tracing::info!(email_id = %id, caller = %caller.service, "email queued by request");
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(Queued {
            id,
            status: EmailStatus::Pending,
        }),
    ))
}

/// Another service with its credential, or a signed-in user whose *current* role is ADMIN (from
/// notification-service's record of role changes, password changes and deletions,
/// [`helpdesk_kit::access`]): a demoted, signed-out or deleted admin is refused at once.
pub struct ServiceOrAdmin;

impl FromRequestParts<AppState> for ServiceOrAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if ServiceCaller::from_request_parts(parts, state)
            .await
            .is_ok()
        {
            return Ok(ServiceOrAdmin);
        }
        let user = AuthUser::from_request_parts(parts, state).await?;
        match helpdesk_kit::access::current_role(&state.pool, &state.access, &user).await? {
            None => Err(ApiError::unauthorized("This account no longer exists")),
            Some(Role::Admin) => Ok(ServiceOrAdmin),
            Some(_) => Err(ApiError::forbidden("Admin access required")),
        }
    }
}

/// An email's delivery state (internal or ADMIN).
#[utoipa::path(get, path = "/notifications/status/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Email id")),
    responses((status = 200, body = EmailView), (status = 403, description = "Admin access required"), (status = 404, description = "Email not found")))]
pub async fn email_status(
    State(state): State<AppState>,
    _who: ServiceOrAdmin,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<ApiJson<EmailView>> {
    let email = emails::find(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("Email not found"))?;
    Ok(ApiJson(email))
}
