//! (lands with issue 3)
