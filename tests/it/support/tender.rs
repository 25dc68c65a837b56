//! The test tender (the `fulmar-test-tender` crate in `test-tender/`, a test
//! double) installed under Solo5 tender names in a temporary directory, for tests
//! to put on PATH or use as a data directory.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;
use tempfile::TempDir;

/// The test double as cargo built it: a workspace member of its own, so that
/// installing fulmar leaves it out, built by `cargo test` and `cargo bench` into
/// the directory that holds `fulmar`. A run that names only some targets
/// (`cargo test --test it`) does not build it, so a tender missing, or older than
/// its source or the library it links, stops the test with the command that
/// builds it rather than testing old code.
pub fn binary() -> &'static Path {
    static TENDER: OnceLock<PathBuf> = OnceLock::new();
    TENDER.get_or_init(|| {
        let tender = Path::new(env!("CARGO_BIN_EXE_fulmar")).with_file_name("fulmar-test-tender");
        let build = "run `cargo build -p fulmar-test-tender` (with --release for benches)";
        let built = std::fs::metadata(&tender)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| panic!("no test tender at {}: {build}", tender.display()));
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // The tender's own code and the library's (not the CLI's, which it does not link).
        let sources = [
            "test-tender/src",
            "src/lib.rs",
            "src/api",
            "src/host",
            "src/ui",
        ];
        let sources: Vec<PathBuf> = sources.iter().map(|s| root.join(s)).collect();
        if let Some(newer) = newer_source(&sources, built) {
            panic!(
                "the test tender at {} is older than {}: {build}",
                tender.display(),
                newer.display()
            );
        }
        tender
    })
}

/// A Rust source file in `paths` (files, or directories searched down) modified
/// after `built`, if there is one.
fn newer_source(paths: &[PathBuf], built: SystemTime) -> Option<PathBuf> {
    let mut pending = paths.to_vec();
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            let Ok(entries) = std::fs::read_dir(&path) else {
                continue;
            };
            pending.extend(entries.flatten().map(|entry| entry.path()));
        } else if path.extension().is_some_and(|ext| ext == "rs")
            && meta.modified().is_ok_and(|modified| modified > built)
        {
            return Some(path);
        }
    }
    None
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
