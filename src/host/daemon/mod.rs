//! The long-running host backend: hosts the supervisor behind the Unix socket.

pub mod access;
pub mod listen;
pub mod session;
