//! ticket-service against the platform's contract (`helpdesk-contract`): it needs exactly the
//! variables the contract says each command requires (the operator renders those), and
//! `migrate` needs nothing but the database.

use helpdesk_testkit::contract;
use ticket_service::TicketService;

#[test]
fn configuration_loading_follows_the_contract() {
    contract::assert_loader_follows_the_contract::<TicketService>();
}

#[tokio::test]
async fn the_binary_migrates_with_only_database_url() {
    contract::assert_binary_follows_the_contract::<TicketService>(env!(
        "CARGO_BIN_EXE_ticket-service"
    ))
    .await;
}
