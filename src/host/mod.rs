//! The host backend: everything that touches processes, files and interfaces.
//!
//! It knows nothing of the terminal; callers get [`crate::api`] types back.

pub mod block;
pub mod console;
pub mod image;
pub mod net;
pub mod paths;
pub mod policy;
pub mod stats;
pub mod tender;
