//! The platform's shared definitions (see the crate description).
