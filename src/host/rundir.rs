//! Who holds a run directory (`<runtime>/unikernels/<name>/`).
//!
//! A monitor holds an exclusive `flock` on its run directory for as long as
//! it lives, taken before its tender starts. That is what lets a daemon that
//! finds a run directory after a crash tell, without races, "a monitor lives
//! here, perhaps not yet recorded in its run file" from "nothing lives here":
//! it takes the lock itself before it removes anything, so no monitor can
//! start a tender in a directory that is being reclaimed.
//!
//! On Linux the monitor is handed its directory as an open descriptor and
//! reaches its files through `/proc/self/fd/N/`, so a monitor whose daemon
//! was killed right after starting it can never write into a later directory
//! of the same name, and cannot write at all once its own has been removed.

use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io;
use std::path::Path;

/// The lock on a run directory; released when dropped.
#[derive(Debug)]
pub struct Held {
    _lock: Flock<File>,
}

/// What [`claim`] found.
#[derive(Debug)]
pub enum Claim {
    /// No monitor lives in it; nothing can start there while this is held.
    Free(Held),
    /// A monitor holds it.
    Taken,
}

/// Takes `dir`'s lock if no monitor holds it.
pub fn claim(dir: &Path) -> io::Result<Claim> {
    lock(File::open(dir)?).map(|held| held.map_or(Claim::Taken, Claim::Free))
}

/// Locks an open run directory; None when another process holds it.
pub fn lock(dir: File) -> io::Result<Option<Held>> {
    match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(Held { _lock: lock })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// Whether the open directory `dir` has been removed.
pub fn is_removed(dir: &File) -> io::Result<bool> {
    Ok(nix::sys::stat::fstat(dir)?.st_nlink == 0)
}

/// `file` in the directory open as descriptor `fd` of this process, whatever
/// has become of the directory's path since.
#[cfg(target_os = "linux")]
pub fn anchored(fd: std::os::fd::RawFd, file: &Path) -> std::path::PathBuf {
    let name = file.file_name().unwrap_or(file.as_os_str());
    std::path::PathBuf::from(format!("/proc/self/fd/{fd}")).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_free_again_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let Claim::Free(held) = claim(dir.path()).unwrap() else {
            panic!("a fresh directory is taken");
        };
        assert!(matches!(claim(dir.path()).unwrap(), Claim::Taken));
        drop(held);
        assert!(matches!(claim(dir.path()).unwrap(), Claim::Free(_)));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_anchored_path_follows_the_directory_not_its_name() {
        use std::os::fd::AsRawFd;
        let root = tempfile::tempdir().unwrap();
        let first = root.path().join("web");
        std::fs::create_dir(&first).unwrap();
        let open = File::open(&first).unwrap();
        let run_file = anchored(open.as_raw_fd(), &first.join("run.json"));
        // The name is reclaimed and made again for a later run.
        std::fs::remove_dir(&first).unwrap();
        std::fs::create_dir(&first).unwrap();
        assert!(is_removed(&open).unwrap());
        assert!(std::fs::write(&run_file, b"late").is_err());
        assert!(!first.join("run.json").exists());
    }
}
