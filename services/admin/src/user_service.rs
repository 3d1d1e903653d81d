//! The client of user-service's internal routes: service credential, timeout, retries for reads
//! only, and a circuit breaker. Every call carries the request id and the acting admin's id
//! (`x-acting-user-id`, the audit trail's actor).
//!
//! Built on the kit's `PeerClient`.

use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use helpdesk_kit::auth::Role;
use helpdesk_kit::peer::{PeerClient, PeerError};

const PEER: &str = "user-service";

/// The contract's User object, as user-service returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub role: Role,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// `{message}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Message {
    pub message: String,
}

/// Who is calling and in which request.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    pub request_id: &'a str,
    pub acting_user: Uuid,
}

/// user-service's internal API.
#[derive(Debug)]
pub struct UserServiceClient {
    peer: PeerClient,
}

impl UserServiceClient {
    pub fn new(
        base_url: &str,
        token: helpdesk_kit::secret::Secret,
        timeout: Duration,
        retries: u32,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            peer: PeerClient::new(PEER, base_url, Some(token), timeout, retries),
        })
    }

    async fn call<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        ctx: CallContext<'_>,
    ) -> Result<T, PeerError> {
        let reads_only = method == Method::GET;
        let acting = [("x-acting-user-id", ctx.acting_user.to_string())];
        self.peer
            .call_with_headers(
                method,
                path,
                body,
                Some(ctx.request_id),
                &acting,
                reads_only,
            )
            .await
    }

    /// Users with one of `roles` (all when empty), newest first.
    pub async fn list_users(
        &self,
        roles: &[Role],
        ctx: CallContext<'_>,
    ) -> Result<Vec<User>, PeerError> {
        let path = if roles.is_empty() {
            "/users".to_string()
        } else {
            format!(
                "/users?roles={}",
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        self.call::<(), _>(Method::GET, &path, None, ctx).await
    }

    pub async fn change_role(
        &self,
        id: Uuid,
        role: Role,
        ctx: CallContext<'_>,
    ) -> Result<User, PeerError> {
        self.call(
            Method::PATCH,
            &format!("/users/{id}/role"),
            Some(&serde_json::json!({ "role": role })),
            ctx,
        )
        .await
    }

    pub async fn delete_user(&self, id: Uuid, ctx: CallContext<'_>) -> Result<Message, PeerError> {
        self.call::<(), _>(Method::DELETE, &format!("/users/{id}"), None, ctx)
            .await
    }
}
