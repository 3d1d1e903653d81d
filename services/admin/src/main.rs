fn main() -> std::process::ExitCode {
    helpdesk_kit::runtime::service_main::<admin_service::AdminService>()
}
