//! The block device store: files `<data dir>/block/<name>`, sized in whole MiB,
//! 0600 in a 0700 directory.

use crate::api::label::Label;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const MIB: u64 = 1024 * 1024;

/// A block device file that passed the store's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockFile {
    pub name: Label,
    pub size_mb: u64,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("block device {0} does not exist: create it with `fulmar block create {0} SIZE_MB`")]
    NotFound(Label),
    #[error("block device {name} already exists: pick another name or destroy it first")]
    Exists { name: Label },
    #[error("{} is {size} bytes, not a whole number of MiB, so it is not a block device: resize it or move it out of {}", path.display(), dir.display())]
    NotWholeMib {
        path: PathBuf,
        dir: PathBuf,
        size: u64,
    },
    #[error("{} is not a regular file: move it out of the block directory", .0.display())]
    NotAFile(PathBuf),
    #[error("a block device needs a size of at least 1 MB")]
    ZeroSize,
    #[error("block store {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BlockError + '_ {
    move |source| BlockError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct BlockStore {
    dir: PathBuf,
}

impl BlockStore {
    /// The store under `data_dir`; the directory is made on first use.
    pub fn new(data_dir: &Path) -> BlockStore {
        BlockStore {
            dir: data_dir.join("block"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The named device, checked: a regular file of a whole number of MiB.
    pub fn get(&self, name: &Label) -> Result<BlockFile, BlockError> {
        let path = self.dir.join(name.as_str());
        let meta = match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BlockError::NotFound(name.clone()));
            }
            other => other.map_err(io_err(&path))?,
        };
        if !meta.is_file() {
            return Err(BlockError::NotAFile(path));
        }
        if meta.size() % MIB != 0 {
            return Err(BlockError::NotWholeMib {
                path,
                dir: self.dir.clone(),
                size: meta.size(),
            });
        }
        Ok(BlockFile {
            name: name.clone(),
            size_mb: meta.size() / MIB,
            path,
        })
    }

    /// Creates an empty (sparse) device of `size_mb` MiB.
    pub fn create(&self, name: &Label, size_mb: u64) -> Result<BlockFile, BlockError> {
        if size_mb == 0 {
            return Err(BlockError::ZeroSize);
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err(&self.dir))?;
        let path = self.dir.join(name.as_str());
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => BlockError::Exists { name: name.clone() },
                _ => io_err(&path)(e),
            })?;
        file.set_len(size_mb * MIB).map_err(io_err(&path))?;
        Ok(BlockFile {
            name: name.clone(),
            size_mb,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(s: &str) -> Label {
        Label::new(s).unwrap()
    }

    #[test]
    fn creates_sparse_private_devices() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlockStore::new(tmp.path());
        let dev = store.create(&label("disk"), 3).unwrap();
        let meta = fs::metadata(&dev.path).unwrap();
        assert_eq!(meta.len(), 3 * MIB);
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(store.dir()).unwrap().mode() & 0o777, 0o700);
        assert!(meta.blocks() * 512 < MIB, "not sparse");
        assert_eq!(store.get(&label("disk")).unwrap(), dev);
        assert!(matches!(
            store.create(&label("disk"), 1),
            Err(BlockError::Exists { .. })
        ));
        assert!(matches!(
            store.create(&label("zero"), 0),
            Err(BlockError::ZeroSize)
        ));
    }

    #[test]
    fn refuses_what_is_not_a_block_device() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlockStore::new(tmp.path());
        assert!(matches!(
            store.get(&label("none")),
            Err(BlockError::NotFound(_))
        ));
        fs::create_dir_all(store.dir()).unwrap();
        fs::write(store.dir().join("odd"), b"12345").unwrap();
        assert!(matches!(
            store.get(&label("odd")),
            Err(BlockError::NotWholeMib { size: 5, .. })
        ));
        fs::create_dir(store.dir().join("sub")).unwrap();
        assert!(matches!(
            store.get(&label("sub")),
            Err(BlockError::NotAFile(_))
        ));
        // Nothing was touched.
        assert_eq!(fs::read(store.dir().join("odd")).unwrap(), b"12345");
    }
}
