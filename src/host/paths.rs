//! Where fulmar keeps things on the host.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The data directory's own directories: only root (the daemon) may list them,
/// since image and block file names tell who runs what.
const DATA_SUBDIRS: [&str; 2] = ["images", "block"];

/// Creates `dir` (and any missing parent) as 0700, and makes it 0700 if it
/// existed with a looser mode: earlier versions created `images/` as 0755.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The data directory holds state, block devices, stored images and optional
/// tenders; the runtime directory holds the socket, console FIFOs and per-run
/// image copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    pub data: PathBuf,
    pub runtime: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PathsError {
    #[error("no home directory to keep fulmar's data in: pass --dir DIR or set FULMAR_DIR")]
    NoDataDir,
    #[error("XDG_RUNTIME_DIR is not set: pass --runtime-dir DIR or set FULMAR_RUNTIME_DIR")]
    NoRuntimeDir,
}

impl Dirs {
    /// Root gets the system locations; anyone else the per-user ones. Explicit
    /// directories (flags or environment) win over both.
    pub fn resolve(data: Option<PathBuf>, runtime: Option<PathBuf>) -> Result<Dirs, PathsError> {
        let root = nix::unistd::geteuid().is_root();
        let data = match data {
            Some(dir) => dir,
            None if root => PathBuf::from("/var/lib/fulmar"),
            None => directories::ProjectDirs::from("", "", "fulmar")
                .map(|p| p.data_dir().to_path_buf())
                .ok_or(PathsError::NoDataDir)?,
        };
        let runtime = match runtime {
            Some(dir) => dir,
            None if root => PathBuf::from("/run/fulmar"),
            None => std::env::var_os("XDG_RUNTIME_DIR")
                .filter(|v| !v.is_empty())
                .map(|v| PathBuf::from(v).join("fulmar"))
                .ok_or(PathsError::NoRuntimeDir)?,
        };
        Ok(Dirs { data, runtime })
    }

    /// Makes the data directory and those the daemon keeps in it 0700 where
    /// others may read or write them; returns those it changed, for the log.
    pub fn tighten(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut changed = Vec::new();
        let dirs = std::iter::once(self.data.clone())
            .chain(DATA_SUBDIRS.iter().map(|d| self.data.join(d)));
        for dir in dirs {
            let Ok(meta) = std::fs::symlink_metadata(&dir) else {
                continue;
            };
            // Search without read lists nothing: it is how tenders reach their
            // files (host::privilege).
            if meta.is_dir() && meta.permissions().mode() & 0o066 != 0 {
                private_dir(&dir)?;
                changed.push(dir);
            }
        }
        Ok(changed)
    }

    /// Where the daemon listens unless `--socket` says otherwise.
    pub fn socket(&self) -> PathBuf {
        self.runtime.join("fulmar.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_are_created_private_and_loose_ones_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a/images");
        private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);

        let loose = tmp.path().join("old/images");
        std::fs::create_dir_all(&loose).unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&loose).unwrap();
        assert_eq!(mode(&loose), 0o700);
    }

    #[test]
    fn start_up_tightens_the_data_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = Dirs::resolve(Some(tmp.path().into()), Some(tmp.path().into())).unwrap();
        let images = tmp.path().join("images");
        std::fs::create_dir(&images).unwrap();
        for dir in [tmp.path(), images.as_path()] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        assert_eq!(
            dirs.tighten().unwrap(),
            vec![tmp.path().to_owned(), images.clone()]
        );
        assert_eq!(mode(tmp.path()), 0o700);
        assert_eq!(mode(&images), 0o700);
        assert_eq!(dirs.tighten().unwrap(), Vec::<PathBuf>::new());
    }

    /// Search without read is how tender users reach their files (host::privilege).
    #[test]
    fn search_only_directories_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = Dirs::resolve(Some(tmp.path().into()), Some(tmp.path().into())).unwrap();
        let block = tmp.path().join("block");
        std::fs::create_dir(&block).unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o701)).unwrap();
        std::fs::set_permissions(&block, std::fs::Permissions::from_mode(0o710)).unwrap();
        assert_eq!(dirs.tighten().unwrap(), Vec::<PathBuf>::new());
        assert_eq!((mode(tmp.path()), mode(&block)), (0o701, 0o710));
    }

    #[test]
    fn explicit_directories_win() {
        let dirs = Dirs::resolve(Some("/tmp/d".into()), Some("/tmp/r".into())).unwrap();
        assert_eq!(dirs.data, PathBuf::from("/tmp/d"));
        assert_eq!(dirs.socket(), PathBuf::from("/tmp/r/fulmar.sock"));
    }
}
