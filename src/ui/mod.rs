//! The ratatui front end. It reaches the host only through the daemon, in
//! [`crate::api`] types; it never opens a host file or spawns a process.
//!
//! [`app::App`] is the whole UI as a synchronous state machine; [`link`] is
//! the task that talks to the daemon; [`run`] joins them to a terminal.

pub mod app;
pub mod config;
pub mod consoles;
pub mod format;
pub mod keymap;
pub mod link;
pub mod message;
pub mod model;
pub mod run;
pub mod screens;
pub mod theme;
pub mod transfer;
pub mod widgets;

#[cfg(test)]
mod app_tests;
#[cfg(test)]
pub mod fixtures;
