//! The types both sides share: what the backend reports and what clients ask for.
//!
//! Nothing in here touches the host or the terminal, so the UI may use all of it.

pub mod block;
pub mod console;
pub mod event;
pub mod image;
pub mod label;
pub mod mac;
pub mod policy;
pub mod protocol;
pub mod stats;
pub mod time;
pub mod unikernel;
pub mod validate;
