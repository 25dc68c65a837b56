//! The host backend: everything that touches processes, files and interfaces.
//!
//! It knows nothing of the terminal; callers get [`crate::api`] types back.

pub mod block;
pub mod console;
pub mod daemon;
pub mod durable;
pub mod image;
pub mod monitor;
pub mod net;
pub mod paths;
pub mod policy;
pub mod privilege;
pub mod rundir;
pub mod state;
pub mod stats;
pub mod supervisor;
pub mod tender;

/// The integration tests' network namespace helper, for the unit tests too.
#[cfg(all(test, target_os = "linux"))]
#[path = "../../tests/it/support/netns.rs"]
pub(crate) mod netns;
