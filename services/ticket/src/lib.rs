//! ticket-service (under construction).
