//! The whole path with the real user-service and ticket-service: role changes and deletions made
//! through admin-service reach user-service, ticket-service's user read model and the dashboard.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{Platform, http};
use admin_service::dashboard::Statistics;
use helpdesk_testkit::eventually;

const ADMIN: (&str, &str) = ("root@helpdesk.test", "admin-password-1");

async fn json_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn role_changes_and_deletions_reach_ticket_service_and_the_dashboard() {
    let mut p = Platform::new().await;
    let tickets = p.start_ticket_service().await;
    let users = p.start_user_service(ADMIN).await;
    let (admin, _pool) = p.start_admin(&users, &[]).await;
    let c = http();
    let signup = |name: &'static str| {
        let c = c.clone();
        let url = format!("{users}/auth/signup");
        async move {
            let email = format!("{name}-{}@example.com", Uuid::new_v4().simple());
            let body = json!({"email": email, "password": "password-1", "firstName": name});
            let (status, v) = json_of(c.post(url).json(&body).send().await.unwrap()).await;
            assert_eq!(status, 201);
            (
                v["user"]["id"].as_str().unwrap().to_string(),
                v["token"].as_str().unwrap().to_string(),
            )
        }
    };
    let (_, root) = {
        let (status, v) = json_of(
            c.post(format!("{users}/auth/login"))
                .json(&json!({"email": ADMIN.0, "password": ADMIN.1}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        (
            v["user"]["id"].as_str().unwrap().to_string(),
            v["token"].as_str().unwrap().to_string(),
        )
    };
    let (alice, _alice_token) = signup("alice").await;
    let (carl, carl_token) = signup("carl").await;

    // Carl opens two tickets; root assigns one to Alice once ticket-service knows her.
    let mut ids = Vec::new();
    for title in ["First", "Second"] {
        let res = c
            .post(format!("{tickets}/tickets"))
            .bearer_auth(&carl_token)
            .json(&json!({"title": title, "description": "d"}))
            .send()
            .await
            .unwrap();
        let (status, v) = json_of(res).await;
        assert_eq!(status, 201, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let assign = |ticket: String, to: String| {
        let c = c.clone();
        let url = format!("{tickets}/tickets/{ticket}/assign");
        let root = root.clone();
        async move {
            json_of(
                c.patch(url)
                    .bearer_auth(root)
                    .json(&json!({"assignedToUserId": to}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    eventually(
        Duration::from_secs(10),
        "ticket-service to know Alice",
        || async { (assign(ids[0].clone(), alice.clone()).await.0 == 200).then_some(()) },
    )
    .await;

    let stats = || {
        let c = c.clone();
        let url = format!("{admin}/admin/dashboard/statistics");
        let root = root.clone();
        async move {
            c.get(url)
                .bearer_auth(root)
                .send()
                .await
                .ok()?
                .json::<Statistics>()
                .await
                .ok()
        }
    };
    let s = eventually(
        Duration::from_secs(10),
        "the dashboard to see both tickets",
        || async {
            stats()
                .await
                .filter(|s| s.total_tickets == 2 && s.open_per_agent.len() == 1)
        },
    )
    .await;
    assert_eq!(
        (s.open_tickets, s.unassigned_tickets, s.created_last24h),
        (2, 1, 2)
    );
    assert_eq!(s.open_per_agent[0].agent_id.to_string(), alice);

    // Demoting Alice through admin-service: user-service has it, and ticket-service refuses her
    // as an assignee once its read model has the change.
    let res = c
        .patch(format!("{admin}/admin/users/{alice}/role"))
        .bearer_auth(&root)
        .json(&json!({"role": "USER"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let refused = eventually(
        Duration::from_secs(10),
        "ticket-service to see the demotion",
        || async {
            let (status, v) = assign(ids[1].clone(), alice.clone()).await;
            (status == 400).then_some(v)
        },
    )
    .await;
    assert_eq!(refused["message"], "Assignee must be an AGENT or ADMIN");

    // Deleting Carl through admin-service: his tickets go from ticket-service and from the figures.
    let res = c
        .delete(format!("{admin}/admin/users/{carl}"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(res).await,
        (200, json!({"message": "User deleted successfully"}))
    );
    eventually(
        Duration::from_secs(10),
        "ticket-service to remove Carl's tickets",
        || async {
            let res = c
                .get(format!("{tickets}/tickets/{}", ids[0]))
                .bearer_auth(&root)
                .send()
                .await
                .ok()?;
            (res.status() == 404).then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "ticket-service to refuse Carl's token",
        || async {
            let res = c
                .get(format!("{tickets}/tickets"))
                .bearer_auth(&carl_token)
                .send()
                .await
                .ok()?;
            (res.status() == 401).then_some(())
        },
    )
    .await;
    let s = eventually(
        Duration::from_secs(10),
        "the dashboard to drop Carl's tickets",
        || async { stats().await.filter(|s| s.total_tickets == 0) },
    )
    .await;
    assert!(
        s.open_per_agent.is_empty() && s.created_last24h == 0,
        "{s:?}"
    );
    p.finish().await;
}
