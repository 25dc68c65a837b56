//! fulmar: a terminal console and host supervisor for Solo5 unikernels.
//!
//! The crate is split the way the process model is: [`host`] is the backend that
//! touches processes, files and interfaces; [`ui`] is the terminal front end; both
//! speak only the types in [`api`], which [`wire`] carries between them.

pub mod api;
pub mod host;
pub mod ui;
pub mod wire;
