//! The test tender (`src/bin/fulmar-test-tender.rs`, a test double) installed under
//! Solo5 tender names in a temporary directory, for tests to put on PATH or use
//! as a data directory.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// The test double as cargo built it.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fulmar-test-tender"))
}

/// Links the test tender into `dir` as each of `names` (e.g. `solo5-hvt`,
/// `solo5-spt`, `solo5-hvt.2`); it learns its target from the name it runs under.
pub fn install_into(dir: &Path, names: &[&str]) {
    for name in names {
        std::os::unix::fs::symlink(binary(), dir.join(name)).unwrap();
    }
}

/// A temporary directory holding the test tender under tender names.
pub struct Tenders {
    dir: TempDir,
}

impl Tenders {
    pub fn install(names: &[&str]) -> Tenders {
        let dir = tempfile::tempdir().unwrap();
        install_into(dir.path(), names);
        Tenders { dir }
    }

    /// Copies of the test tender that any user may run: a directory and files
    /// 0755 away from the build tree, which may sit in a 0700 home.
    pub fn install_for_anyone(names: &[&str]) -> Tenders {
        let dir = tempfile::tempdir().unwrap();
        let anyone = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(dir.path(), anyone.clone()).unwrap();
        for name in names {
            let copy = dir.path().join(name);
            std::fs::copy(binary(), &copy).unwrap();
            std::fs::set_permissions(&copy, anyone.clone()).unwrap();
        }
        Tenders { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the tender installed as `name` is.
    pub fn tender(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// A PATH value with this directory in front of the test process's own PATH.
    pub fn path_var(&self) -> OsString {
        let rest = std::env::var_os("PATH").unwrap_or_default();
        std::env::join_paths(
            std::iter::once(self.dir().to_path_buf()).chain(std::env::split_paths(&rest)),
        )
        .unwrap()
    }
}
