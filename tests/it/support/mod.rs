//! Helpers shared by the integration tests: generated images, the test tender.
#![allow(dead_code)] // tests/bounds.rs and each bench use a different part of it

pub mod bytes;
pub mod daemon;
pub mod elf;
pub mod images;
pub mod netns;
pub mod pty;
pub mod tender;
