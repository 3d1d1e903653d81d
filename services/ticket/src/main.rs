fn main() -> std::process::ExitCode {
    helpdesk_kit::runtime::service_main::<ticket_service::TicketService>()
}
