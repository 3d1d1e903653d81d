fn main() -> std::process::ExitCode {
    helpdesk_kit::runtime::service_main::<notification_service::NotificationService>()
}
