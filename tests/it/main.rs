//! The integration tests, one module per area, in one test binary: one link
//! instead of fifteen, and one process whose test threads share the support
//! code's caches (gcc-built images, the test tender's lookup).

mod blocks;
mod crash;
mod daemon;
mod image_notes;
mod inspect;
mod monitor;
mod privilege;
mod reconfigure;
mod supervisor;
mod support;
mod test_tender;
mod tui;
mod tui_create;
mod tui_link;
mod tui_transfer;
