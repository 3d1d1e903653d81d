//! `GET /tickets/:id/audit`: the ticket's audit trail, served from audit-service.
//!
//! The call has a per-attempt timeout, bounded retries (an idempotent read) and the kit's circuit
//! breaker, all under one overall deadline, so a down or hanging audit-service yields a 503 with a
//! clear message in under two seconds.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use helpdesk_kit::error::{ApiError, ApiJson, ApiPath, ApiResult};
use helpdesk_kit::http::RequestId;
use helpdesk_kit::peer::PeerError;

use crate::AppState;
use crate::tickets::{self, NOT_FOUND};
use crate::users::{Caller, UserRef};

pub fn routes() -> Router<AppState> {
    Router::new().route("/tickets/{id}/audit", get(ticket_audit))
}

/// The audit-service answer when it cannot be reached.
pub const UNAVAILABLE: &str = "The audit trail is temporarily unavailable (audit-service is not responding); please try again shortly";

/// The contract's AuditEvent object, as audit-service returns it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub id: Uuid,
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    #[serde(serialize_with = "helpdesk_kit::json::timestamp")]
    pub created_at: DateTime<Utc>,
    pub actor: Option<ActorRef>,
}

/// The actor as audit-service embeds it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActorRef {
    pub id: Uuid,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

impl From<ActorRef> for UserRef {
    fn from(a: ActorRef) -> Self {
        UserRef {
            id: a.id,
            email: a.email,
            first_name: a.first_name,
            last_name: a.last_name,
        }
    }
}

/// The ticket's audit trail, newest first, with the actor (staff who can view the ticket).
#[utoipa::path(get, path = "/tickets/{id}/audit", tag = "tickets", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Ticket id")),
    responses((status = 200, body = [AuditEvent]), (status = 403, description = "Not staff"), (status = 404, description = "Ticket not found"),
        (status = 503, description = "audit-service unavailable")))]
pub async fn ticket_audit(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<ApiJson<Vec<AuditEvent>>> {
    let ticket = tickets::find(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(NOT_FOUND))?;
    if !ticket.visible_to(&caller) {
        return Err(ApiError::forbidden(tickets::NO_ACCESS));
    }
    if !caller.is_staff() {
        return Err(ApiError::forbidden(
            "Only staff can view a ticket's audit trail",
        ));
    }
    let peer = state.audit.as_ref().ok_or_else(|| {
        ApiError::unavailable("The audit trail is not configured (AUDIT_SERVICE_URL)")
    })?;
    let path = format!("/audit/entity/ticket/{id}?limit=500");
    let call = peer.call::<(), Vec<AuditEvent>>(Method::GET, &path, None, Some(&request_id), true);
    match tokio::time::timeout(state.config.audit.deadline, call).await {
        Err(_) | Ok(Err(PeerError::Unavailable(_))) => {
            metrics::counter!("helpdesk_ticket_audit_unavailable_total").increment(1);
            Err(ApiError::unavailable(UNAVAILABLE))
        }
        Ok(Err(PeerError::Rejected { status, message })) => {
            // A refusal here is our misconfiguration (e.g. a bad SERVICE_TOKEN), not the caller's.
            tracing::error!(status, %message, "audit-service refused the audit trail request");
            Err(ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "audit-service refused the request",
            ))
        }
        Ok(Ok(events)) => Ok(ApiJson(events)),
    }
}
