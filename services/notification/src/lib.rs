//! notification-service (under construction).
