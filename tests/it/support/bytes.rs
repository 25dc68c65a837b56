//! Test data and its fingerprint, for the transfer tests.

use sha2::{Digest, Sha256};
use std::path::Path;

/// Makes a named pipe at `path`, for a transfer the test feeds by hand, so
/// that it is surely midway when something happens to it.
pub fn fifo(path: &Path) {
    use nix::sys::stat::Mode;
    nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
}

/// Bytes that differ everywhere (xorshift), so a misplaced chunk shows.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn sha_of(path: &Path) -> String {
    sha(&std::fs::read(path).unwrap())
}
