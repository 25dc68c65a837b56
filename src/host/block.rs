//! The block device store: files `<data dir>/block/<name>`, sized in whole MiB,
//! 0600 in a 0700 directory.
//!
//! Every write of contents goes to a temp file in the same directory that is
//! renamed into place only once it is complete and on disk, so a failed or
//! interrupted transfer never leaves a device half-written. Temp names start
//! with [`TEMP_PREFIX`] and contain `_`, which no [`Label`] may, so they can
//! never be mistaken for a device.

use crate::api::label::Label;
use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub const MIB: u64 = 1024 * 1024;

/// Names of in-progress writes: `.partial_<device>_<pid>_<n>`.
pub const TEMP_PREFIX: &str = ".partial_";

/// Transfers move data in pieces this big, never whole files.
const CHUNK: usize = 1024 * 1024;

/// An upload hands what it wrote to the disk's write-back every this many
/// bytes, so the disk writes while the rest arrives and the fsync that ends
/// the upload finds little left to do.
const WRITE_BACK_STEP: u64 = 8 * MIB;

/// A copy in the kernel moves this much at a time, so that a cancelled
/// transfer stops soon and progress is heard often.
const LOCAL_STEP: usize = WRITE_BACK_STEP as usize;

/// A block device file that passed the store's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockFile {
    pub name: Label,
    pub size_mb: u64,
    pub path: PathBuf,
}

/// One entry of the block directory, as [`BlockStore::list`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    Device {
        name: Label,
        size_mb: u64,
    },
    /// A file that is not a usable device; reported, never touched.
    Invalid {
        file_name: String,
        why: String,
    },
}

impl Listed {
    /// The directory entry this describes.
    pub fn file_name(&self) -> &str {
        match self {
            Listed::Device { name, .. } => name.as_str(),
            Listed::Invalid { file_name, .. } => file_name,
        }
    }
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
    #[error("a block device of {0} MB is more than a file can hold: give a smaller size")]
    SizeTooBig(u64),
    #[error("block device {0} is busy with another transfer: wait for it to finish and try again")]
    Busy(Label),
    #[error(
        "block device {name} is {size_mb} MB and a block device never shrinks: give a size above {size_mb} MB, not {asked_mb} MB"
    )]
    NeverShrinks {
        name: Label,
        size_mb: u64,
        asked_mb: u64,
    },
    #[error(
        "block device {name} is {size_mb} MB; the upload was {upload_mb} MB: grow it first (`fulmar block grow {name} {upload_mb}`) or upload less; its contents are unchanged"
    )]
    TooLarge {
        name: Label,
        size_mb: u64,
        upload_mb: u64,
    },
    #[error(
        "block device {name} would be {size_mb} MB but its data is {data_mb} MB: create it with at least {data_mb} MB; nothing was created"
    )]
    DataTooLarge {
        name: Label,
        size_mb: u64,
        data_mb: u64,
    },
    /// A stream's data passed the device's end; how far it goes is not
    /// waited for, since it may never end (`/dev/zero`).
    #[error(
        "the data is larger than {name} ({size_mb} MB): grow it first (`fulmar block grow {name} SIZE_MB`) or upload less; its contents are unchanged"
    )]
    StreamTooLarge { name: Label, size_mb: u64 },
    #[error(
        "the data is larger than {name} ({size_mb} MB): create it with a larger size; nothing was created"
    )]
    StreamDataTooLarge { name: Label, size_mb: u64 },
    #[error(
        "the data for block device {name} is {got} bytes, not the {expected} it was said to be: send it whole; nothing was changed"
    )]
    Shorter {
        name: Label,
        got: u64,
        expected: u64,
    },
    #[error(
        "the data for block device {name} is more than the {expected} bytes it was said to be: send only those; nothing was changed"
    )]
    Longer { name: Label, expected: u64 },
    #[error(
        "the data for block device {name} has SHA-256 {got}, not {expected}: it was damaged or is another file; nothing was changed"
    )]
    Digest {
        name: Label,
        got: String,
        expected: String,
    },
    #[error(
        "receiving the data for block device {name} failed: {source}; nothing was changed: send it again"
    )]
    Receive { name: Label, source: io::Error },
    #[error("no space left in {} for block device {name}: it takes {need_mb} MB and {free_mb} MB are free there: free some space or ask for less; nothing was changed", dir.display())]
    NoSpace {
        name: Label,
        dir: PathBuf,
        need_mb: u64,
        free_mb: u64,
    },
    #[error("sending block device {name} failed: {source}: try again")]
    Send { name: Label, source: io::Error },
    #[error("block store {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BlockError + '_ {
    move |source| BlockError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The store; clones share one set of busy devices, so the daemon can hand a
/// clone to every connection.
#[derive(Debug, Clone)]
pub struct BlockStore {
    dir: PathBuf,
    busy: Arc<Mutex<HashSet<Label>>>,
}

/// Marks a device busy until dropped.
struct Claim {
    busy: Arc<Mutex<HashSet<Label>>>,
    name: Label,
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.busy).remove(&self.name);
    }
}

/// The busy set stays consistent even if a holder panicked, so poisoning is ignored.
fn lock(busy: &Mutex<HashSet<Label>>) -> MutexGuard<'_, HashSet<Label>> {
    busy.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A temp file in the block directory, removed when dropped unless renamed
/// into place, so every error path cleans up after itself.
struct TempFile {
    path: PathBuf,
    file: File,
    renamed: bool,
    /// The bytes already handed to write-back.
    written_back: u64,
}

impl TempFile {
    fn create(dir: &Path, name: &Label) -> Result<TempFile, BlockError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{TEMP_PREFIX}{name}_{}_{n}", std::process::id()));
        // Readable too, so the data can be checked as stored.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(TempFile {
            path,
            file,
            renamed: false,
            written_back: 0,
        })
    }

    /// Starts writing the bytes up to `end` to disk in the background, a
    /// step at a time. Only a head start: the fsync in `finish` is what
    /// makes them durable.
    fn write_back(&mut self, end: u64) {
        if end - self.written_back >= WRITE_BACK_STEP {
            start_write_back(&self.file, self.written_back, end - self.written_back);
            self.written_back = end;
        }
    }

    /// Gives the file its full size (allocated by `reserve`) and puts it on disk.
    fn finish(&mut self, size: u64) -> io::Result<()> {
        self.file.set_len(size)?;
        self.file.sync_all()
    }

    fn rename_over(mut self, to: &Path) -> Result<(), BlockError> {
        fs::rename(&self.path, to).map_err(io_err(to))?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.renamed {
            // Best effort: a leftover is removed by `clean_stale` at the next start.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Why moving bytes stopped: the source failed, or the destination.
#[derive(Debug)]
pub enum MoveError {
    Read(io::Error),
    Write(io::Error),
}

/// What an upload's data must be (see [`BlockStore::upload`]); the default
/// checks nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    /// Its length in bytes.
    pub size: Option<u64>,
    /// Its SHA-256.
    pub sha256: Option<[u8; 32]>,
}

impl Check {
    pub const NONE: Check = Check {
        size: None,
        sha256: None,
    };
}

/// An upload's bytes, as the store takes them. `Read` gives them through
/// memory; a source that holds them where the kernel can move them from
/// without a copy (a pipe the daemon spliced them into) overrides
/// [`Source::move_into`].
pub trait Source: Read {
    /// How many bytes there are, when known before they move, so that too
    /// many are refused before any is written.
    fn size(&self) -> Option<u64> {
        None
    }

    /// Moves the next of the bytes, at most `max`, into `file` at its
    /// position and says how many (0 at the end). `buf` is scratch room for
    /// bytes that pass through memory.
    fn move_into(&mut self, file: &File, max: usize, buf: &mut [u8]) -> Result<usize, MoveError> {
        let want = max.min(buf.len());
        let n = loop {
            match self.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(MoveError::Read(e)),
            }
        };
        let mut file = file;
        file.write_all(&buf[..n]).map_err(MoveError::Write)?;
        Ok(n)
    }
}

/// An upload's bytes in a regular file the daemon holds open (the client's
/// own, taken with `pidfd_getfd`), from offset 0 to its size, copied into the
/// device's file in the kernel. `each` hears the bytes copied so far after
/// every piece; an error from it (the client went away) stops the copy.
pub struct LocalFile<F> {
    file: File,
    offset: u64,
    size: u64,
    each: F,
}

impl<F: FnMut(u64) -> io::Result<()>> LocalFile<F> {
    /// `file` must be a regular file open for reading; its size is taken now.
    pub fn new(file: File, each: F) -> io::Result<LocalFile<F>> {
        let size = file.metadata()?.len();
        Ok(LocalFile {
            file,
            offset: 0,
            size,
            each,
        })
    }
}

impl<F> Read for LocalFile<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl<F: FnMut(u64) -> io::Result<()>> Source for LocalFile<F> {
    fn size(&self) -> Option<u64> {
        Some(self.size)
    }

    fn move_into(&mut self, file: &File, max: usize, _: &mut [u8]) -> Result<usize, MoveError> {
        let left = usize::try_from(self.size.saturating_sub(self.offset)).unwrap_or(usize::MAX);
        let want = max.min(left).min(LOCAL_STEP);
        if want == 0 {
            return Ok(0);
        }
        let mut to = file;
        let at = to.stream_position().map_err(MoveError::Write)?;
        let n = copy_range(&self.file, self.offset, file, at, want)?;
        // `copy_range` writes by offset: the file's position follows by hand.
        to.seek(io::SeekFrom::Start(at + n as u64))
            .map_err(MoveError::Write)?;
        self.offset += n as u64;
        (self.each)(self.offset).map_err(MoveError::Read)?;
        Ok(n)
    }
}

impl Source for &[u8] {
    fn size(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
}
impl Source for io::Empty {}
impl<R: Read> Source for ZlibDecoder<R> {}

/// Copies `from` into `to` in [`CHUNK`]s and says how many bytes went.
fn pump(from: &mut dyn Read, to: &mut dyn Write) -> Result<u64, MoveError> {
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(done),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(MoveError::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(MoveError::Write)?;
        // A read never exceeds the buffer, which fits in u64.
        done += n as u64;
    }
}

/// Copies up to `len` bytes of `from` at `from_at` into `to` at `to_at`,
/// neither file's position moving, and says how many (0: `from` ended).
/// In the kernel with copy_file_range(2) where the two files allow it (the
/// same filesystem, or one that supports copies across), else through a buffer.
fn copy_range(
    from: &File,
    from_at: u64,
    to: &File,
    to_at: u64,
    len: usize,
) -> Result<usize, MoveError> {
    #[cfg(target_os = "linux")]
    if let Some(n) = kernel_copy(from, from_at, to, to_at, len)? {
        return Ok(n);
    }
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len.min(CHUNK)];
    let n = loop {
        match from.read_at(&mut buf, from_at) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => break other.map_err(MoveError::Read)?,
        }
    };
    to.write_all_at(&buf[..n], to_at)
        .map_err(MoveError::Write)?;
    Ok(n)
}

/// copy_file_range(2), or None where these two files cannot use it.
#[cfg(target_os = "linux")]
fn kernel_copy(
    from: &File,
    from_at: u64,
    to: &File,
    to_at: u64,
    len: usize,
) -> Result<Option<usize>, MoveError> {
    use std::os::fd::AsRawFd;
    let bad = |_| MoveError::Read(io::Error::from_raw_os_error(libc::EINVAL));
    let mut off_in = libc::loff_t::try_from(from_at).map_err(bad)?;
    let mut off_out = libc::loff_t::try_from(to_at).map_err(bad)?;
    loop {
        // SAFETY: both descriptors are open for the call; the offsets are
        // locals that outlive it.
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                &mut off_in,
                to.as_raw_fd(),
                &mut off_out,
                len,
                0,
            )
        };
        if let Ok(n) = usize::try_from(n) {
            return Ok(Some(n));
        }
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => Ok(None),
            // Which side failed is not told; a full disk is the writer's.
            Some(libc::ENOSPC | libc::EFBIG | libc::EDQUOT) => Err(MoveError::Write(e)),
            _ => Err(MoveError::Read(e)),
        };
    }
}

/// Allocates `len` bytes of `file` at once, so that a device is backed by
/// the disk, not a sparse file a full disk could never fill, a full disk is
/// known before any byte moves, and the filesystem lays the data out in one
/// go rather than piece by piece as write-back finds it (an upload of 1 GiB
/// on ext4 took 0.36 s instead of 0.41, the median of ten each). Only ENOSPC
/// and its kind are errors: a filesystem that cannot allocate ahead still
/// takes the writes.
#[cfg(target_os = "linux")]
fn reserve(file: &File, len: u64) -> io::Result<()> {
    use nix::errno::Errno;
    use nix::fcntl::{FallocateFlags, fallocate};
    let Ok(len) = libc::off_t::try_from(len) else {
        return Ok(());
    };
    if len == 0 {
        return Ok(());
    }
    match fallocate(file, FallocateFlags::empty(), 0, len) {
        Err(e @ (Errno::ENOSPC | Errno::EFBIG | Errno::EDQUOT)) => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(not(target_os = "linux"))]
fn reserve(_file: &File, _len: u64) -> io::Result<()> {
    Ok(())
}

#[cfg(target_os = "linux")]
fn start_write_back(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: takes no pointers. A failure costs only the head start: the
    // fsync reports any error writing these bytes.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Other systems write back on their own schedule; the fsync is enough.
#[cfg(not(target_os = "linux"))]
fn start_write_back(_file: &File, _offset: u64, _len: u64) {}

fn sync_dir(dir: &Path) -> Result<(), BlockError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// A size in MiB as bytes, refusing sizes no file can have.
fn bytes(size_mb: u64) -> Result<u64, BlockError> {
    match size_mb.checked_mul(MIB) {
        Some(0) => Err(BlockError::ZeroSize),
        Some(size) if size <= i64::MAX as u64 => Ok(size),
        _ => Err(BlockError::SizeTooBig(size_mb)),
    }
}

impl BlockStore {
    /// The store under `data_dir`; the directory is made on first use.
    pub fn new(data_dir: &Path) -> BlockStore {
        BlockStore {
            dir: data_dir.join("block"),
            busy: Arc::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a transfer, grow or destroy of `name` is under way.
    #[cfg(test)]
    pub fn busy(&self, name: &Label) -> bool {
        lock(&self.busy).contains(name)
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

    /// Every entry of the block directory, sorted by name: devices, and files
    /// that cannot be devices with the reason. Temp files are left out.
    /// What the block devices take of the disk, in MB.
    pub fn used_mb(&self) -> Result<u64, BlockError> {
        Ok(self
            .list()?
            .iter()
            .map(|l| match l {
                Listed::Device { size_mb, .. } => *size_mb,
                Listed::Invalid { .. } => 0,
            })
            .sum())
    }

    pub fn list(&self) -> Result<Vec<Listed>, BlockError> {
        let entries = match fs::read_dir(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            other => other.map_err(io_err(&self.dir))?,
        };
        let mut listed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&self.dir))?;
            listed.extend(self.inspect(&entry.file_name()));
        }
        listed.sort_by(|a, b| a.file_name().cmp(b.file_name()));
        Ok(listed)
    }

    fn inspect(&self, file_name: &OsStr) -> Option<Listed> {
        let invalid = |why: String| Listed::Invalid {
            file_name: file_name.to_string_lossy().into_owned(),
            why,
        };
        let Some(text) = file_name.to_str() else {
            return Some(invalid(
                "the name is not UTF-8, so it is not a block device name: rename it".to_owned(),
            ));
        };
        if text.starts_with(TEMP_PREFIX) {
            return None;
        }
        let name = match Label::new(text) {
            Ok(name) => name,
            Err(e) => return Some(invalid(format!("not a block device name: {e}"))),
        };
        match self.get(&name) {
            Ok(dev) => Some(Listed::Device {
                name,
                size_mb: dev.size_mb,
            }),
            // Removed while we were listing.
            Err(BlockError::NotFound(_)) => None,
            Err(e) => Some(invalid(e.to_string())),
        }
    }

    /// Creates an empty device of `size_mb` MiB, allocated on the disk.
    pub fn create(&self, name: &Label, size_mb: u64) -> Result<BlockFile, BlockError> {
        self.create_with_data(name, size_mb, io::empty(), &Check::NONE)
    }

    /// Creates a device of `size_mb` MiB holding `data` followed by zeros.
    /// Data longer than the device, data that fails `check`, or a failed
    /// read creates nothing.
    pub fn create_with_data(
        &self,
        name: &Label,
        size_mb: u64,
        mut data: impl Source,
        check: &Check,
    ) -> Result<BlockFile, BlockError> {
        let size = bytes(size_mb)?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err(&self.dir))?;
        let _claim = self.claim(name)?;
        let path = self.dir.join(name.as_str());
        // Refuse before receiving anything; the link below closes the race.
        if fs::symlink_metadata(&path).is_ok() {
            return Err(BlockError::Exists { name: name.clone() });
        }
        let too_large = |data_mb| match data_mb {
            Some(data_mb) => BlockError::DataTooLarge {
                name: name.clone(),
                size_mb,
                data_mb,
            },
            None => BlockError::StreamDataTooLarge {
                name: name.clone(),
                size_mb,
            },
        };
        let (temp, _) = self.write_temp(name, &mut data, size, check, too_large)?;
        // Unlike a rename, a hard link refuses to replace a file made meanwhile.
        fs::hard_link(&temp.path, &path).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => BlockError::Exists { name: name.clone() },
            _ => io_err(&path)(e),
        })?;
        drop(temp);
        sync_dir(&self.dir)?;
        Ok(BlockFile {
            name: name.clone(),
            size_mb,
            path,
        })
    }

    /// Makes a device bigger, allocated on the disk; the new tail reads as
    /// zeros. It never shrinks.
    pub fn grow(&self, name: &Label, new_size_mb: u64) -> Result<BlockFile, BlockError> {
        let _claim = self.claim(name)?;
        let dev = self.get(name)?;
        if new_size_mb <= dev.size_mb {
            return Err(BlockError::NeverShrinks {
                name: name.clone(),
                size_mb: dev.size_mb,
                asked_mb: new_size_mb,
            });
        }
        let size = bytes(new_size_mb)?;
        let file = OpenOptions::new()
            .write(true)
            .open(&dev.path)
            .map_err(io_err(&dev.path))?;
        if let Err(e) = reserve(&file, size) {
            // What a failed allocation took, it gives back; the device stays as it was.
            let _ = file.set_len(dev.size_mb * MIB);
            return Err(self.write_error(name, &dev.path, size, e));
        }
        file.set_len(size)
            .and_then(|()| file.sync_all())
            .map_err(io_err(&dev.path))?;
        Ok(BlockFile {
            size_mb: new_size_mb,
            ..dev
        })
    }

    /// Removes a device; whether it is attached is the caller's business.
    pub fn destroy(&self, name: &Label) -> Result<(), BlockError> {
        let _claim = self.claim(name)?;
        let dev = self.get(name)?;
        fs::remove_file(&dev.path).map_err(io_err(&dev.path))?;
        sync_dir(&self.dir)
    }

    /// Replaces a device's contents with `data` (zlib if `compressed`) followed
    /// by zeros; the device keeps its size. All or nothing: on any error, or
    /// data (decompressed) that fails `check`, the old contents stay.
    pub fn upload(
        &self,
        name: &Label,
        mut data: impl Source,
        compressed: bool,
        check: &Check,
    ) -> Result<Uploaded, BlockError> {
        let _claim = self.claim(name)?;
        let dev = self.get(name)?;
        let too_large = |upload_mb| match upload_mb {
            Some(upload_mb) => BlockError::TooLarge {
                name: name.clone(),
                size_mb: dev.size_mb,
                upload_mb,
            },
            None => BlockError::StreamTooLarge {
                name: name.clone(),
                size_mb: dev.size_mb,
            },
        };
        let size = dev.size_mb * MIB;
        let (temp, written) = if compressed {
            self.write_temp(name, &mut ZlibDecoder::new(data), size, check, too_large)
        } else {
            self.write_temp(name, &mut data, size, check, too_large)
        }?;
        // Held open, the old file is only unlinked by the rename; its blocks
        // and page cache are freed when the caller drops it.
        let old = File::open(&dev.path).ok();
        temp.rename_over(&dev.path)?;
        sync_dir(&self.dir)?;
        Ok(Uploaded {
            bytes: written,
            _old: old,
        })
    }

    /// Opens a device to be sent out whole; it stays claimed until the
    /// [`Download`] is dropped.
    pub fn open_download(&self, name: &Label) -> Result<Download, BlockError> {
        let claim = self.claim(name)?;
        let dev = self.get(name)?;
        let file = File::open(&dev.path).map_err(io_err(&dev.path))?;
        Ok(Download {
            _claim: claim,
            file: Arc::new(file),
            size: dev.size_mb * MIB,
            dev,
        })
    }

    /// Removes temp files a crash left behind; call at daemon start, before
    /// any transfer. Returns how many went.
    pub fn clean_stale(&self) -> usize {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| {
                e.file_name().to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX))
                    && e.file_type().is_ok_and(|t| t.is_file())
            })
            .filter(|e| match fs::remove_file(e.path()) {
                Ok(()) => {
                    tracing::info!(path = %e.path().display(), "removed an unfinished block transfer");
                    true
                }
                Err(err) => {
                    tracing::warn!(path = %e.path().display(), "cannot remove an unfinished block transfer: {err}");
                    false
                }
            })
            .count()
    }

    fn claim(&self, name: &Label) -> Result<Claim, BlockError> {
        if !lock(&self.busy).insert(name.clone()) {
            return Err(BlockError::Busy(name.clone()));
        }
        Ok(Claim {
            busy: Arc::clone(&self.busy),
            name: name.clone(),
        })
    }

    /// Writes `data` then zeros up to `size` into a new temp file, on disk and
    /// ready to be put in place. More than `size` bytes of data is refused with
    /// `too_large(data size in MiB, rounded up)` before any byte is written
    /// when the size is known, else `too_large(None)` as soon as the data
    /// passes `size`. Data that fails `check` is refused too, a stream longer
    /// than it should be as soon as it passes that.
    fn write_temp(
        &self,
        name: &Label,
        data: &mut dyn Source,
        size: u64,
        check: &Check,
        too_large: impl FnOnce(Option<u64>) -> BlockError,
    ) -> Result<(TempFile, u64), BlockError> {
        let receive = |source| BlockError::Receive {
            name: name.clone(),
            source,
        };
        if let Some(known) = data.size().or(check.size).filter(|&n| n > size) {
            return Err(too_large(Some(known.div_ceil(MIB))));
        }
        if let (Some(known), Some(expected)) = (data.size(), check.size) {
            check_size(name, known, expected)?;
        }
        let mut temp = TempFile::create(&self.dir, name)?;
        let path = temp.path.clone();
        let write_error = |e| self.write_error(name, &path, size, e);
        reserve(&temp.file, size).map_err(write_error)?;
        let mut buf = vec![0u8; CHUNK];
        // One byte past the size is enough to know the data does not fit.
        let limit = check.size.unwrap_or(size).min(size) + 1;
        let mut written = 0;
        while written < limit {
            let max = usize::try_from(limit - written).unwrap_or(usize::MAX);
            match data.move_into(&temp.file, max, &mut buf) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(MoveError::Read(e)) => return Err(receive(e)),
                Err(MoveError::Write(e)) => return Err(write_error(e)),
            }
            temp.write_back(written);
        }
        if written > size {
            return Err(too_large(None));
        }
        if let Some(expected) = check.size {
            check_size(name, written, expected)?;
        }
        if let Some(expected) = &check.sha256 {
            let got = sha256_of(&temp.file, written).map_err(io_err(&temp.path))?;
            if got != *expected {
                return Err(BlockError::Digest {
                    name: name.clone(),
                    got: hex::encode(got),
                    expected: hex::encode(expected),
                });
            }
        }
        temp.finish(size).map_err(write_error)?;
        Ok((temp, written))
    }

    /// `e` from writing `path`, a file of `need` bytes for device `name`.
    fn write_error(&self, name: &Label, path: &Path, need: u64, e: io::Error) -> BlockError {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            BlockError::NoSpace {
                name: name.clone(),
                dir: self.dir.clone(),
                need_mb: need.div_ceil(MIB),
                free_mb: free_mb(&self.dir),
            }
        } else {
            io_err(path)(e)
        }
    }
}

/// The MiB free for an unprivileged writer in `dir`'s filesystem (0 if it
/// cannot be told: only said in a message).
fn free_mb(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir).map_or(0, |stat| {
        // The field types differ between platforms; on some these casts are no-ops.
        #[allow(clippy::unnecessary_cast)]
        let bytes = (stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64);
        bytes / MIB
    })
}

/// Refuses `got` bytes of data where `expected` were said to come.
fn check_size(name: &Label, got: u64, expected: u64) -> Result<(), BlockError> {
    let name = name.clone();
    match got.cmp(&expected) {
        std::cmp::Ordering::Less => Err(BlockError::Shorter {
            name,
            got,
            expected,
        }),
        std::cmp::Ordering::Greater => Err(BlockError::Longer { name, expected }),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// The SHA-256 of the first `len` bytes of `file`, as they are stored.
fn sha256_of(file: &File, len: u64) -> io::Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::FileExt;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0;
    while done < len {
        let want = usize::try_from(len - done).map_or(buf.len(), |left| left.min(buf.len()));
        let n = match file.read_at(&mut buf[..want], done) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    Ok(hasher.finalize().into())
}

/// A finished upload. The replaced contents are freed when it is dropped,
/// which for a large device takes a while (a tenth of a second or more per
/// GiB, its page cache and its extents), so a caller that answers someone
/// drops it after answering.
#[must_use = "dropping it frees the old contents: drop it once the upload is answered"]
#[derive(Debug)]
pub struct Uploaded {
    /// The bytes of data written.
    pub bytes: u64,
    _old: Option<File>,
}

/// A device opened to be sent out whole. It stays claimed — no upload, grow
/// or destroy of it — until dropped.
pub struct Download {
    _claim: Claim,
    dev: BlockFile,
    file: Arc<File>,
    size: u64,
}

impl Download {
    /// The device's file, for a sender that moves its bytes itself.
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// The device's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Asks the kernel to read `len` bytes from `offset` into the page cache
    /// ahead of a sender that must not wait for the disk itself.
    pub fn read_ahead(&self, offset: u64, len: usize) {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len))
        else {
            return;
        };
        // SAFETY: takes no pointers. Only a hint: a sender that finds the
        // bytes not read yet reads them itself.
        unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                offset,
                len,
                libc::POSIX_FADV_WILLNEED,
            );
        }
    }

    /// Copies the whole device into `out` (a regular file open for writing)
    /// from offset 0, in the kernel where it can; `each` hears the bytes
    /// copied so far after every piece, and an error from it stops the copy.
    pub fn copy_into(
        self,
        out: &File,
        mut each: impl FnMut(u64) -> io::Result<()>,
    ) -> Result<u64, BlockError> {
        let send = |source| BlockError::Send {
            name: self.dev.name.clone(),
            source,
        };
        let mut done = 0;
        while done < self.size {
            let left = usize::try_from(self.size - done).unwrap_or(usize::MAX);
            let n = match copy_range(&self.file, done, out, done, left.min(LOCAL_STEP)) {
                Ok(0) => break,
                Ok(n) => n,
                Err(MoveError::Read(e)) => return Err(io_err(&self.dev.path)(e)),
                Err(MoveError::Write(e)) => return Err(send(e)),
            };
            done += n as u64;
            each(done).map_err(send)?;
        }
        Ok(done)
    }

    /// Streams the whole device, zlib-compressed, into `out`. Returns the
    /// device bytes read.
    pub fn compress_into(self, out: impl Write) -> Result<u64, BlockError> {
        let send = |source| BlockError::Send {
            name: self.dev.name.clone(),
            source,
        };
        let mut encoder = ZlibEncoder::new(out, Compression::fast());
        let sent = match pump(&mut &*self.file, &mut encoder) {
            Ok(n) => n,
            Err(MoveError::Read(e)) => return Err(io_err(&self.dev.path)(e)),
            Err(MoveError::Write(e)) => return Err(send(e)),
        };
        encoder
            .finish()
            .and_then(|mut out| out.flush())
            .map_err(send)?;
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::sync::mpsc;

    fn label(s: &str) -> Label {
        Label::new(s).unwrap()
    }

    #[test]
    fn creates_allocated_private_devices() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlockStore::new(tmp.path());
        let dev = store.create(&label("disk"), 3).unwrap();
        let meta = fs::metadata(&dev.path).unwrap();
        assert_eq!(meta.len(), 3 * MIB);
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(store.dir()).unwrap().mode() & 0o777, 0o700);
        // Backed by the disk (where the filesystem can allocate ahead).
        assert!(meta.blocks() * 512 >= 3 * MIB, "sparse");
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

    /// Bytes that differ from zeros and from each other's shifts.
    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    fn zlib(bytes: &[u8]) -> Vec<u8> {
        let mut enc = ZlibEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// What a device should hold after an upload of `data`.
    fn padded(data: &[u8], size_mb: u64) -> Vec<u8> {
        let mut want = data.to_vec();
        want.resize((size_mb * MIB) as usize, 0);
        want
    }

    fn temps(store: &BlockStore) -> Vec<String> {
        fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(TEMP_PREFIX))
            .collect()
    }

    /// Gives `good` bytes of pattern, then fails as a vanished client would.
    struct FailAfter {
        data: io::Cursor<Vec<u8>>,
    }

    impl Source for FailAfter {}

    impl Read for FailAfter {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.data.read(buf)? {
                0 => Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "client went away",
                )),
                n => Ok(n),
            }
        }
    }

    #[test]
    fn creates_with_data_and_refuses_too_much() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlockStore::new(tmp.path());
        let data = pattern(MIB as usize + 7, 1);
        let dev = store
            .create_with_data(&label("disk"), 2, data.as_slice(), &Check::NONE)
            .unwrap();
        assert_eq!(dev.size_mb, 2);
        assert_eq!(fs::metadata(&dev.path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(sha(&fs::read(&dev.path).unwrap()), sha(&padded(&data, 2)));

        let long = pattern(2 * MIB as usize + 1, 2);
        let err = store
            .create_with_data(&label("big"), 2, long.as_slice(), &Check::NONE)
            .unwrap_err();
        assert!(
            matches!(
                err,
                BlockError::DataTooLarge {
                    data_mb: 3,
                    size_mb: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("nothing was created"), "{err}");
        assert!(matches!(
            store.get(&label("big")),
            Err(BlockError::NotFound(_))
        ));
        let err = store
            .create_with_data(&label("disk"), 2, data.as_slice(), &Check::NONE)
            .unwrap_err();
        assert!(matches!(err, BlockError::Exists { .. }), "{err}");
        assert!(temps(&store).is_empty());
    }

    #[test]
    fn lists_devices_and_reports_the_rest_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlockStore::new(tmp.path());
        assert_eq!(store.list().unwrap(), []);
        store.create(&label("b-disk"), 2).unwrap();
        store.create(&label("a.disk"), 1).unwrap();
        fs::write(store.dir().join("odd"), b"12345").unwrap();
        fs::write(store.dir().join("bad_name"), b"").unwrap();
        fs::create_dir(store.dir().join("sub")).unwrap();
        fs::write(store.dir().join(format!("{TEMP_PREFIX}x_1_2")), b"t").unwrap();

        let listed = store.list().unwrap();
        let names: Vec<&str> = listed.iter().map(Listed::file_name).collect();
        assert_eq!(names, ["a.disk", "b-disk", "bad_name", "odd", "sub"]);
        assert_eq!(
            listed[..2],
            [
                Listed::Device {
                    name: label("a.disk"),
                    size_mb: 1
                },
                Listed::Device {
                    name: label("b-disk"),
                    size_mb: 2
                },
            ]
        );
        for (entry, says) in listed[2..]
            .iter()
            .zip(["'_'", "5 bytes", "not a regular file"])
        {
            match entry {
                Listed::Invalid { why, .. } => assert!(why.contains(says), "{why}"),
                other => panic!("{other:?} should be invalid"),
            }
        }
        assert_eq!(fs::read(store.dir().join("odd")).unwrap(), b"12345");
        assert!(store.dir().join("bad_name").is_file());
        assert!(store.dir().join("sub").is_dir());
    }

    #[test]
    fn grows_but_never_shrinks_and_destroys() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlockStore::new(tmp.path());
        let data = pattern(1000, 3);
        store
            .create_with_data(&label("disk"), 1, data.as_slice(), &Check::NONE)
            .unwrap();
        let dev = store.grow(&label("disk"), 3).unwrap();
        assert_eq!(dev.size_mb, 3);
        assert_eq!(store.get(&label("disk")).unwrap(), dev);
        assert_eq!(fs::read(&dev.path).unwrap(), padded(&data, 3));
        for smaller in [3, 2] {
            let err = store.grow(&label("disk"), smaller).unwrap_err();
            assert!(
                matches!(err, BlockError::NeverShrinks { size_mb: 3, .. }),
                "{err}"
            );
            assert!(err.to_string().contains("never shrinks"), "{err}");
        }
        assert_eq!(store.get(&label("disk")).unwrap().size_mb, 3);

        store.destroy(&label("disk")).unwrap();
        assert!(matches!(
            store.get(&label("disk")),
            Err(BlockError::NotFound(_))
        ));
        assert!(matches!(
            store.destroy(&label("disk")),
            Err(BlockError::NotFound(_))
        ));
    }

    #[test]
    fn uploads_and_downloads_plain_and_zlib() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlockStore::new(tmp.path());
        store.create(&label("disk"), 4).unwrap();
        for (seed, compressed) in [(4, false), (5, true)] {
            let data = pattern(3 * MIB as usize + 123, seed);
            let sent = if compressed {
                zlib(&data)
            } else {
                data.clone()
            };
            let uploaded = store
                .upload(&label("disk"), sent.as_slice(), compressed, &Check::NONE)
                .unwrap();
            assert_eq!(uploaded.bytes, data.len() as u64);
            drop(uploaded);
            let want = padded(&data, 4);
            let path = store.get(&label("disk")).unwrap().path;
            assert_eq!(sha(&fs::read(&path).unwrap()), sha(&want));
            assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);

            let device = store.open_download(&label("disk")).unwrap();
            assert_eq!(device.size(), 4 * MIB);
            let mut got = Vec::new();
            if compressed {
                let mut out = Vec::new();
                assert_eq!(device.compress_into(&mut out).unwrap(), 4 * MIB);
                ZlibDecoder::new(out.as_slice())
                    .read_to_end(&mut got)
                    .unwrap();
            } else {
                (&**device.file()).read_to_end(&mut got).unwrap();
            }
            assert_eq!(sha(&got), sha(&want));
        }
        assert!(temps(&store).is_empty());
    }

    #[test]
    fn failed_uploads_keep_the_old_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlockStore::new(tmp.path());
        let old = pattern(MIB as usize, 6);
        let dev = store
            .create_with_data(&label("disk"), 2, old.as_slice(), &Check::NONE)
            .unwrap();
        let before = fs::read(&dev.path).unwrap();

        let err = store
            .upload(
                &label("disk"),
                pattern(4 * MIB as usize + 1, 7).as_slice(),
                false,
                &Check::NONE,
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                BlockError::TooLarge {
                    size_mb: 2,
                    upload_mb: 5,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("contents are unchanged"), "{err}");

        let err = store
            .upload(
                &label("disk"),
                zlib(&pattern(3 * MIB as usize, 8)).as_slice(),
                true,
                &Check::NONE,
            )
            .unwrap_err();
        assert!(
            matches!(err, BlockError::StreamTooLarge { size_mb: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("larger than disk (2 MB)"), "{err}");

        let broken = FailAfter {
            data: io::Cursor::new(pattern(MIB as usize + 5, 9)),
        };
        let err = store
            .upload(&label("disk"), broken, false, &Check::NONE)
            .unwrap_err();
        assert!(matches!(err, BlockError::Receive { .. }), "{err}");

        let err = store
            .upload(&label("disk"), &b"not zlib"[..], true, &Check::NONE)
            .unwrap_err();
        assert!(matches!(err, BlockError::Receive { .. }), "{err}");

        assert_eq!(fs::read(&dev.path).unwrap(), before);
        assert!(temps(&store).is_empty());
    }

    /// A reader that announces its first read, then waits to be let go.
    struct Gate {
        started: mpsc::Sender<()>,
        go: mpsc::Receiver<()>,
    }

    impl Source for Gate {}

    impl Read for Gate {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            let _ = self.started.send(());
            let _ = self.go.recv();
            Ok(0)
        }
    }

    #[test]
    fn refuses_a_second_transfer_on_a_busy_device() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlockStore::new(tmp.path());
        store.create(&label("disk"), 1).unwrap();
        store.create(&label("other"), 1).unwrap();
        let (started_tx, started) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let uploader = store.clone();
        let upload = std::thread::spawn(move || {
            let gate = Gate {
                started: started_tx,
                go: go_rx,
            };
            uploader.upload(&label("disk"), gate, false, &Check::NONE)
        });
        started.recv().unwrap();
        assert!(store.busy(&label("disk")));
        assert!(!store.busy(&label("other")));
        let err = store.open_download(&label("disk")).err().unwrap();
        assert!(matches!(err, BlockError::Busy(_)), "{err}");
        assert!(matches!(
            store.grow(&label("disk"), 2),
            Err(BlockError::Busy(_))
        ));
        assert!(matches!(
            store.destroy(&label("disk")),
            Err(BlockError::Busy(_))
        ));
        // A download holds its device until it is dropped.
        let other = store.open_download(&label("other")).unwrap();
        assert!(store.busy(&label("other")));
        assert!(matches!(
            store.upload(&label("other"), &b"x"[..], false, &Check::NONE),
            Err(BlockError::Busy(_))
        ));
        drop(other);
        assert!(!store.busy(&label("other")));
        go.send(()).unwrap();
        assert_eq!(upload.join().unwrap().unwrap().bytes, 0);
        assert!(!store.busy(&label("disk")));
        store.open_download(&label("disk")).unwrap();
    }

    #[test]
    fn clean_stale_removes_only_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlockStore::new(tmp.path());
        assert_eq!(store.clean_stale(), 0);
        store.create(&label("disk"), 1).unwrap();
        fs::write(store.dir().join(format!("{TEMP_PREFIX}disk_1_0")), b"x").unwrap();
        fs::write(store.dir().join(format!("{TEMP_PREFIX}disk_1_1")), b"y").unwrap();
        fs::write(store.dir().join("partial_disk"), b"z").unwrap();
        fs::write(store.dir().join(".hidden"), b"h").unwrap();
        assert_eq!(store.clean_stale(), 2);
        assert!(temps(&store).is_empty());
        assert!(store.dir().join("partial_disk").exists());
        assert!(store.dir().join(".hidden").exists());
        assert_eq!(store.get(&label("disk")).unwrap().size_mb, 1);
    }

    #[test]
    fn a_full_disk_keeps_the_old_contents() {
        on_a_3_mib_tmpfs(|root| {
            let store = BlockStore::new(root);
            let old = pattern(MIB as usize, 10);
            let dev = store
                .create_with_data(&label("disk"), 2, old.as_slice(), &Check::NONE)
                .unwrap();
            let before = fs::read(&dev.path).unwrap();
            fill(&root.join("filler"));
            let err = store
                .upload(
                    &label("disk"),
                    pattern(2 * MIB as usize, 11).as_slice(),
                    false,
                    &Check::NONE,
                )
                .unwrap_err();
            assert!(matches!(err, BlockError::NoSpace { .. }), "{err}");
            assert_eq!(fs::read(&dev.path).unwrap(), before);
            assert!(temps(&store).is_empty());
        });
    }

    /// A device the disk cannot back is refused, not made a sparse file
    /// that a full disk could never fill; nothing is left, a grown device
    /// keeps its size. (The daemon's policy counts devices by size; this is
    /// what holds when the disk fills some other way.)
    #[test]
    fn devices_the_disk_cannot_back_are_refused() {
        on_a_3_mib_tmpfs(|root| {
            let store = BlockStore::new(root);
            let err = store.create(&label("big"), 4).unwrap_err();
            assert!(
                matches!(err, BlockError::NoSpace { need_mb: 4, .. }),
                "{err}"
            );
            assert!(err.to_string().contains("takes 4 MB and"), "{err}");
            assert!(matches!(
                store.get(&label("big")),
                Err(BlockError::NotFound(_))
            ));
            assert!(temps(&store).is_empty());

            let dev = store.create(&label("disk"), 1).unwrap();
            let err = store.grow(&label("disk"), 4).unwrap_err();
            assert!(
                matches!(err, BlockError::NoSpace { need_mb: 4, .. }),
                "{err}"
            );
            assert_eq!(fs::metadata(&dev.path).unwrap().len(), MIB);
        });
    }

    #[test]
    fn a_lent_file_too_big_for_the_disk_is_refused_before_any_byte_moves() {
        on_a_3_mib_tmpfs(|root| {
            let store = BlockStore::new(root);
            let dev = store.create(&label("disk"), 1).unwrap();
            // Room for a part of the data, not for all of it.
            fill(&root.join("filler"));
            let mut pieces = 0;
            let data = LocalFile::new(file_of(&pattern(MIB as usize, 12)), |_| {
                pieces += 1;
                Ok(())
            })
            .unwrap();
            let err = store
                .upload(&label("disk"), data, false, &Check::NONE)
                .unwrap_err();
            assert!(matches!(err, BlockError::NoSpace { .. }), "{err}");
            assert_eq!(pieces, 0, "no piece was copied");
            assert!(fs::read(&dev.path).unwrap().iter().all(|&b| b == 0));
            assert!(temps(&store).is_empty());
        });
    }

    /// Runs `test` on a tmpfs of 3 MiB of its own, mounted in a mount
    /// namespace of the test's thread (the shared namespace helper, which
    /// says why it skips without root), so the host never sees it.
    fn on_a_3_mib_tmpfs(test: impl FnOnce(&Path) + Send + 'static) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        crate::host::netns::run(move || {
            nix::mount::mount(
                Some("tmpfs"),
                &root,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some("size=3m,mode=0700"),
            )
            .expect("mount a tmpfs in the test's namespace");
            test(&root);
        });
    }

    /// Fills the file system until it refuses, then frees a little, so the
    /// next big write runs out of space part way.
    fn fill(path: &Path) {
        let mut file = File::create(path).unwrap();
        let chunk = vec![1u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling: {e}"),
            }
        }
        let full = file.metadata().unwrap().len();
        file.set_len(full.saturating_sub(256 * 1024)).unwrap();
    }

    fn file_of(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    #[test]
    fn local_files_are_copied_whole_and_heard_piece_by_piece() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlockStore::new(tmp.path());
        let name = label("disk");
        store.create(&name, 20).unwrap();
        // Several copy steps, the last one short.
        let data = pattern(2 * LOCAL_STEP + 4321, 7);
        let mut heard = Vec::new();
        let source = LocalFile::new(file_of(&data), |done| {
            heard.push(done);
            Ok(())
        })
        .unwrap();
        let uploaded = store.upload(&name, source, false, &Check::NONE).unwrap();
        assert_eq!(uploaded.bytes, data.len() as u64);
        let step = LOCAL_STEP as u64;
        assert_eq!(heard, [step, 2 * step, data.len() as u64]);
        let mut want = data.clone();
        want.resize(20 * MIB as usize, 0);
        let dev = store.get(&name).unwrap();
        assert_eq!(sha(&fs::read(&dev.path).unwrap()), sha(&want));
        assert!(temps(&store).is_empty());

        let out = tempfile::tempfile().unwrap();
        let mut heard = Vec::new();
        let copied = store
            .open_download(&name)
            .unwrap()
            .copy_into(&out, |done| {
                heard.push(done);
                Ok(())
            })
            .unwrap();
        assert_eq!(copied, 20 * MIB);
        assert_eq!(heard.last(), Some(&(20 * MIB)));
        let mut back = Vec::new();
        (&out).read_to_end(&mut back).unwrap();
        assert_eq!(sha(&back), sha(&want));
    }

    #[test]
    fn local_files_too_big_or_stopped_change_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlockStore::new(tmp.path());
        let name = label("disk");
        let old = pattern(MIB as usize, 8);
        store
            .create_with_data(&name, 1, &old[..], &Check::NONE)
            .unwrap();
        let path = store.get(&name).unwrap().path;

        let heard = std::cell::Cell::new(0);
        let big = LocalFile::new(file_of(&pattern(MIB as usize + 1, 9)), |_| {
            heard.set(heard.get() + 1);
            Ok(())
        })
        .unwrap();
        assert!(matches!(
            store.upload(&name, big, false, &Check::NONE),
            Err(BlockError::TooLarge { upload_mb: 2, .. })
        ));
        assert_eq!(heard.get(), 0, "refused only after copying");

        store.grow(&name, 40).unwrap();
        let old = fs::read(&path).unwrap();
        let data = pattern(3 * LOCAL_STEP, 10);
        let stopped = LocalFile::new(file_of(&data), |done| match done {
            0..LOCAL_STEP_U64 => Ok(()),
            _ => Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone")),
        })
        .unwrap();
        assert!(matches!(
            store.upload(&name, stopped, false, &Check::NONE),
            Err(BlockError::Receive { .. })
        ));
        assert_eq!(sha(&fs::read(&path).unwrap()), sha(&old));
        assert!(temps(&store).is_empty());
        assert!(!store.busy(&name));

        let out = tempfile::tempfile().unwrap();
        let download = store.open_download(&name).unwrap();
        let err = download.copy_into(&out, |_| Err(io::Error::other("gone")));
        assert!(matches!(err, Err(BlockError::Send { .. })), "{err:?}");
        assert!(!store.busy(&name));
    }

    const LOCAL_STEP_U64: u64 = LOCAL_STEP as u64;

    /// Across filesystems the kernel may refuse to copy (EXDEV): the bytes
    /// then go through a buffer, by offset all the same.
    #[test]
    fn copies_across_filesystems_too() {
        let Ok(mut from) = tempfile::tempfile_in("/dev/shm") else {
            println!("skipped: no /dev/shm to copy from");
            return;
        };
        let data = pattern(3 * CHUNK + 5, 11);
        from.write_all(&data).unwrap();
        let to = tempfile::tempfile().unwrap();
        let mut done = 0;
        while done < data.len() {
            let n = copy_range(&from, done as u64, &to, done as u64 + 3, data.len()).unwrap();
            assert!(n > 0);
            done += n;
        }
        let mut back = Vec::new();
        (&to).read_to_end(&mut back).unwrap();
        assert_eq!(back[..3], [0, 0, 0]);
        assert_eq!(sha(&back[3..]), sha(&data));
    }
}
