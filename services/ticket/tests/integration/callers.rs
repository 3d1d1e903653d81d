//! The caller cache (`ticket_service::users::CallerCache`, a `helpdesk_kit::remembered`): a user answered from the cache a moment ago is
//! refused as soon as the read model changes (demoted, deleted, signed out everywhere), because the
//! read model's trigger announces every change and the cache forgets that user. Without the
//! announcement the remembered answer would stand for good, and these waits would time out.

use helpdesk_kit::auth::Role;
use helpdesk_testkit::eventually;

use crate::common::{Api, Platform, WAIT, signed_out_everywhere, wait_user};

#[tokio::test]
async fn remembered_callers_are_forgotten_when_the_read_model_changes() {
    let mut p = Platform::new().await;
    let svc = p.start_ticket(None, &[]).await;
    let api = Api::new(&svc.url);
    let admin = p.announce_user(Role::Admin).await;
    let leaving = p.announce_user(Role::Agent).await;
    let signed_out = p.announce_user(Role::Agent).await;
    let requester = p.announce_user(Role::User).await;
    for u in [&admin, &leaving, &signed_out, &requester] {
        wait_user(&svc.pool, u).await;
    }
    let theirs = api.create_ticket(&requester, "the requester's").await;
    let own = api.create_ticket(&leaving, "mine").await;
    let kept = api.create_ticket(&signed_out, "theirs too").await;
    let path = |id| format!("/tickets/{id}");
    // Each caller is looked up, remembered, and answered again from the cache.
    for _ in 0..3 {
        assert_eq!(api.get(&path(theirs), &admin.token).await.status, 200);
        assert_eq!(api.get(&path(own), &leaving.token).await.status, 200);
        assert_eq!(api.get(&path(kept), &signed_out.token).await.status, 200);
    }

    // Demoted: an ADMIN may view anyone's ticket, a USER may not.
    let demoted = p.change_role(&admin, Role::User).await;
    wait_user(&svc.pool, &demoted).await;
    eventually(
        WAIT,
        "the demotion applied to the remembered caller",
        || async { (api.get(&path(theirs), &admin.token).await.status == 403).then_some(()) },
    )
    .await;

    // Deleted: refused.
    p.delete_user(&leaving, None).await;
    eventually(
        WAIT,
        "the deletion applied to the remembered caller",
        || async { (api.get(&path(own), &leaving.token).await.status == 401).then_some(()) },
    )
    .await;

    // Signed out everywhere (a password change moved the token epoch on): refused.
    let epoch = signed_out_everywhere(&signed_out);
    p.publish(&epoch).await;
    eventually(
        WAIT,
        "the ended session applied to the remembered caller",
        || async { (api.get(&path(kept), &signed_out.token).await.status == 401).then_some(()) },
    )
    .await;

    svc.stop().await;
    p.cleanup().await;
}

/// A token signed after a role change, before the change's event reaches this service (the user
/// signs in again at once), already has the new role: its revision is later than the read model's
/// row. Before, the row's stale role won until the event arrived: a requester who had just been
/// demoted from AGENT wrote internal notes they could then not read. An older token never wins
/// over a row that has caught up.
#[tokio::test]
async fn a_token_signed_after_a_role_change_counts_before_the_change_arrives() {
    use helpdesk_kit::auth::Role::*;
    use serde_json::json;
    let mut p = Platform::new().await;
    let svc = p.start_ticket(None, &[]).await;
    let api = Api::new(&svc.url);
    let agent = p.announce_user(Agent).await;
    let other = p.announce_user(User).await;
    for u in [&agent, &other] {
        wait_user(&svc.pool, u).await;
    }
    let others = api.create_ticket(&other, "someone else's").await;
    // user-service signs tokens at the account's revision; the read model has applied revision 1.
    let signed = |role, revision| {
        p.keys
            .keys
            .issue_session_token(
                agent.id,
                &agent.email,
                role,
                uuid::Uuid::new_v4(),
                (0, revision),
            )
            .expect("token")
    };

    // Demoted (revision 2), signed in again: a requester, on the write path and the listing.
    let demoted = signed(User, 2);
    let mine = api
        .post(
            "/tickets",
            &demoted,
            json!({"title": "after the demotion", "description": "x"}),
        )
        .await;
    assert_eq!(mine.status, 201, "{:?}", mine.body);
    let mine = mine.body["id"].as_str().expect("id").to_string();
    let note = api
        .post(
            &format!("/tickets/{mine}/comments"),
            &demoted,
            json!({"body": "internal?", "isInternal": true}),
        )
        .await;
    assert_eq!(note.status, 201, "{:?}", note.body);
    assert_eq!(
        note.body["isInternal"], false,
        "a requester writes no notes"
    );
    assert_eq!(note.body["author"]["role"], "USER");
    let read = api
        .get(&format!("/tickets/{mine}/comments"), &demoted)
        .await;
    assert_eq!(
        read.body.as_array().map(Vec::len),
        Some(1),
        "{:?}",
        read.body
    );
    assert_eq!(
        api.get(&format!("/tickets/{others}"), &demoted)
            .await
            .status,
        403
    );
    // The token from before the change (revision 0: no later than the row) is still the row's
    // AGENT, who writes notes.
    let old = api
        .post(
            &format!("/tickets/{mine}/comments"),
            &agent.token,
            json!({"body": "a note", "isInternal": true}),
        )
        .await;
    assert_eq!(old.body["isInternal"], true, "{:?}", old.body);

    // Promoted to ADMIN (revision 3), signed in again: showAll lists everyone's tickets at once.
    let promoted = signed(Admin, 3);
    let all = api.get("/tickets?showAll=true", &promoted).await;
    assert_eq!(all.status, 200, "{:?}", all.body);
    let ids: Vec<&str> = all
        .body
        .as_array()
        .expect("a page")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert!(ids.contains(&others.to_string().as_str()), "{ids:?}");

    // Once the read model has applied a later revision (4: a requester again), the older tokens'
    // roles no longer count: the row wins.
    let later = p
        .change_role(
            &crate::common::TestUser {
                revision: 3,
                ..agent.clone()
            },
            User,
        )
        .await;
    wait_user(&svc.pool, &later).await;
    for token in [&promoted, &agent.token] {
        eventually(WAIT, "the row's role wins over an older token", || async {
            (api.get(&format!("/tickets/{others}"), token).await.status == 403).then_some(())
        })
        .await;
    }
    svc.stop().await;
    p.cleanup().await;
}
