//! user-service against the platform's contract (`helpdesk-contract`): it needs exactly the
//! variables the contract says each command requires (the operator renders those), and
//! `migrate` needs nothing but the database.

use helpdesk_testkit::contract;
use user_service::UserService;

#[test]
fn configuration_loading_follows_the_contract() {
    contract::assert_loader_follows_the_contract::<UserService>();
}

#[tokio::test]
async fn the_binary_migrates_with_only_database_url() {
    contract::assert_binary_follows_the_contract::<UserService>(env!("CARGO_BIN_EXE_user-service"))
        .await;
}
