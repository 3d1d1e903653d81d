//! The end-to-end walk.
