//! A minimal ELF64 writer for images gcc cannot produce (lands with issue 2).
