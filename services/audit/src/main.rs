fn main() -> std::process::ExitCode {
    helpdesk_kit::runtime::service_main::<audit_service::AuditService>()
}
