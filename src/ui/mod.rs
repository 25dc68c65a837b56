//! The ratatui front end. It reaches the host only through the daemon, in
//! [`crate::api`] types; it never opens a host file or spawns a process.
