//! audit-service (under construction).
