//! Small files that must survive a crash whole: the run file, a run's
//! record of what it changed. A crash at any moment leaves the old contents
//! or the new, never a mix; with [`replace`] a write that returned is on disk.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where [`replace`] writes before the rename; a crash can leave it behind.
pub fn temp_of(path: &Path) -> PathBuf {
    let mut tmp = OsString::from(path.as_os_str());
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Replaces `path` with `bytes` (mode 0600): a temporary file beside it,
/// fsync, rename, and an fsync of the directory so the rename is durable too.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_then_rename(path, bytes, true)?;
    sync_dir(path)
}

/// Replaces `path` with `bytes` whole, for a file that only has to survive
/// a crash of its writer, not of the host: one in the runtime directory,
/// which a reboot empties along with what the file describes. Saves the two
/// fsyncs (milliseconds on a disk) on every launch.
pub fn replace_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_then_rename(path, bytes, false)
}

fn write_then_rename(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let tmp = temp_of(path);
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    out.write_all(bytes)?;
    if sync {
        out.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// Makes a rename or removal of `path` durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_and_private_leaving_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        fs::write(&path, b"old contents").unwrap();
        replace(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!temp_of(&path).exists());
    }

    #[test]
    fn a_failed_write_keeps_the_old_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        fs::write(&path, b"old").unwrap();
        // The temporary file's place is taken by a directory: the write fails.
        fs::create_dir(temp_of(&path)).unwrap();
        assert!(replace(&path, b"new").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }
}
