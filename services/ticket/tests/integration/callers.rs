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
