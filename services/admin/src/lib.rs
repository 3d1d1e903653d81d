//! admin-service (under construction).
