//! Where fulmar keeps things on the host (DESIGN.md, "Host files").

use std::path::PathBuf;

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

    /// Where the daemon listens unless `--socket` says otherwise.
    pub fn socket(&self) -> PathBuf {
        self.runtime.join("fulmar.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_directories_win() {
        let dirs = Dirs::resolve(Some("/tmp/d".into()), Some("/tmp/r".into())).unwrap();
        assert_eq!(dirs.data, PathBuf::from("/tmp/d"));
        assert_eq!(dirs.socket(), PathBuf::from("/tmp/r/fulmar.sock"));
    }
}
