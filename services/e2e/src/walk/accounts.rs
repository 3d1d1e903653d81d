//! The walk's account steps at the end: password change and reset, and deletion.

use reqwest::Method;
use serde_json::json;

use super::*;

impl Walk<'_> {
    /// Forgot/reset and change password; other sessions end.
    pub(super) async fn passwords(&mut self) {
        let api = &self.api;
        let sink = self.sink;
        let alice_email = self.alice_email.clone();
        let alice_id = self.alice_id.clone();
        // Forgot / reset with the link from the mail, then change password.
        let v = api
            .ok(
                Method::POST,
                "/auth/forgot-password",
                None,
                Some(json!({"email": alice_email})),
                200,
            )
            .await;
        assert_eq!(
            v["message"],
            "If the email exists, a reset link has been sent"
        );
        // The reset needs the link from the mail.
        let alice_password = match sink {
            Some(sink) => {
                let mail = mail_about(sink, &alice_email, "token=").await;
                let token = reset_token(&mail);
                api.ok(
                    Method::POST,
                    "/auth/reset-password",
                    None,
                    Some(json!({"token": token, "newPassword": "alice-pass-2"})),
                    200,
                )
                .await;
                let msg = api
                    .fails(
                        Method::POST,
                        "/auth/reset-password",
                        None,
                        Some(json!({"token": token, "newPassword": "alice-pass-3"})),
                        400,
                    )
                    .await;
                assert_eq!(msg, "Invalid or expired reset token");
                let msg = api
                    .fails(
                        Method::POST,
                        "/auth/login",
                        None,
                        Some(json!({"email": alice_email, "password": "alice-pass-1"})),
                        401,
                    )
                    .await;
                assert_eq!(msg, "Invalid credentials");
                "alice-pass-2"
            }
            None => "alice-pass-1",
        };
        let (alice, _) = api.login(&alice_email, alice_password).await;
        let (elsewhere, _) = api.login(&alice_email, alice_password).await;
        api.ok(
            Method::POST,
            "/auth/change-password",
            Some(&alice),
            Some(json!({"oldPassword": alice_password, "newPassword": "alice-pass-4"})),
            200,
        )
        .await;
        // Every other session ends (within seconds in every service); this one stays signed in.
        api.fails(Method::GET, "/auth/me", Some(&elsewhere), None, 401)
            .await;
        eventually(
            Duration::from_secs(30),
            "the other session's token to stop working for tickets",
            || async {
                let (s, _) = api
                    .call(Method::GET, "/tickets", Some(&elsewhere), None)
                    .await;
                (s == 401).then_some(())
            },
        )
        .await;
        api.ok(Method::GET, "/tickets", Some(&alice), None, 200)
            .await;
        let msg = api
            .fails(
                Method::POST,
                "/auth/change-password",
                Some(&alice),
                Some(json!({"oldPassword": "nope-nope", "newPassword": "alice-pass-5"})),
                400,
            )
            .await;
        assert_eq!(msg, "Current password is incorrect");
        let (alice, _) = api.login(&alice_email, "alice-pass-4").await;
        let me = api
            .ok(Method::GET, "/auth/me", Some(&alice), None, 200)
            .await;
        assert_eq!(me["id"], alice_id);
        self.alice = alice;
    }

    /// Deleting a user takes their tickets and token.
    pub(super) async fn deletion(&self) {
        let api = &self.api;
        let alice_id = self.alice_id.clone();
        let bob_id = self.bob_id.clone();
        let admin = self.admin.clone();
        let admin_user = self.admin_user.clone();
        let alice = self.alice.clone();
        let tid = self.tid.clone();
        // Deletion: yourself is refused; a user's tickets go with them.
        let admin_id = admin_user["id"].as_str().unwrap();
        let msg = api
            .fails(
                Method::DELETE,
                &format!("/admin/users/{admin_id}"),
                Some(&admin),
                None,
                400,
            )
            .await;
        assert_eq!(msg, "You cannot delete your own account");
        let v = api
            .ok(
                Method::DELETE,
                &format!("/admin/users/{alice_id}"),
                Some(&admin),
                None,
                200,
            )
            .await;
        assert_eq!(v["message"], "User deleted successfully");
        api.fails(
            Method::DELETE,
            &format!("/admin/users/{alice_id}"),
            Some(&admin),
            None,
            404,
        )
        .await;
        eventually(
            Duration::from_secs(30),
            "the deleted user's ticket to go",
            || async {
                let (s, _) = api
                    .call(Method::GET, &format!("/tickets/{tid}"), Some(&admin), None)
                    .await;
                (s == 404).then_some(())
            },
        )
        .await;
        api.fails(Method::GET, "/auth/me", Some(&alice), None, 401)
            .await;
        eventually(
            Duration::from_secs(30),
            "the deleted user's token to stop working for tickets",
            || async {
                let (s, _) = api.call(Method::GET, "/tickets", Some(&alice), None).await;
                (s == 401).then_some(())
            },
        )
        .await;
        // Internal routes are not reachable from the public entry point.
        let (s, _) = api
            .call(Method::GET, &format!("/users/{bob_id}"), Some(&admin), None)
            .await;
        assert_eq!(s, 404);
    }
}
