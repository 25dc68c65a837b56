//! The host backend: everything that touches processes, files and interfaces.
//!
//! It knows nothing of the terminal; callers get [`crate::api`] types back.

pub mod image;
pub mod paths;
pub mod tender;
