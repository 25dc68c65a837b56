//! Snapshots and behaviour of the console panes.
