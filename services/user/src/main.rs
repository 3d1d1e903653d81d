fn main() -> std::process::ExitCode {
    helpdesk_kit::runtime::service_main::<user_service::UserService>()
}
