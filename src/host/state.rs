//! The daemon's persisted state: one JSON file in the data directory, replaced
//! atomically on every save, with the previous save kept beside it.
//!
//! The store is generic: the daemon decides what `T` holds. On disk it is
//! `{"format": 1, "saved_ms": ..., "state": T}`, pretty-printed so that the
//! line and column of a parse error point somewhere an operator can look.
//!
//! # Files
//!
//! In the data directory (made 0700 if missing), for the default name:
//!
//! * `state.json`: the last complete save (0600);
//! * `state.json.bak`: the save before it;
//! * `state.json.tmp.PID`, `state.json.bak.tmp.PID`: the two temporary names
//!   a save uses; one left behind means a save was interrupted.
//!
//! # Loading and the lock
//!
//! [`StateFile::load`] takes an exclusive `flock(2)` on the data directory and
//! keeps it in the [`StateWriter`] it returns, so two daemons can never save
//! over each other; a second one gets [`StateError::Locked`]. Holding the lock,
//! it removes leftover temporary files (exactly the two patterns above, never
//! `state.json` or `state.json.bak`), then reads `state.json`:
//!
//! * missing, and no `state.json.bak`: first start, `state` is `None`;
//! * missing, but `state.json.bak` exists: [`StateError::OnlyBackup`]. A save
//!   never leaves that (see below), so someone moved files by hand, and which
//!   one is current is the operator's call, not ours;
//! * larger than [`MAX_SIZE`]: [`StateError::TooBig`], before reading it
//!   (no state fulmar writes comes near; reading one that large would only
//!   delay the start);
//! * not JSON, or not the shape of `T`: [`StateError::Corrupt`] with the line
//!   and column;
//! * written by a newer format: [`StateError::TooNew`].
//!
//! These errors say whether `state.json.bak` would load and how to restore it.
//! There is no way to save without a successful load, because only `load`
//! makes a [`StateWriter`]: a file fulmar could not read is never overwritten.
//!
//! # Saving, and what a crash leaves
//!
//! [`StateWriter::save`] encodes the whole state first (an encoding error
//! touches no file), then runs these steps ([`SaveStep`]); `S` is
//! `state.json`, `B` the backup, `T` and `BT` the temporary names:
//!
//! 1. write `T` (created exclusively, 0600) and fsync it;
//! 2. hard-link `S` as `BT` (skipped when there is no `S` yet);
//! 3. rename `BT` over `B`;
//! 4. rename `T` over `S`;
//! 5. fsync the directory.
//!
//! A hard link cannot replace a name, hence `BT` then a rename. Renames
//! replace atomically, so `S`, once it exists, always names a complete file:
//!
//! | crash during or after | files left                  | `load` returns            |
//! |-----------------------|-----------------------------|---------------------------|
//! | 1                     | `S` old, `B`, `T` (partial) | old state; `T` removed    |
//! | 2                     | `S` old = `BT`, `B`, `T`    | old state; `BT`, `T` gone |
//! | 3                     | `S` old = `B`, `T`          | old state; `T` removed    |
//! | 4, before 5           | `S` new, `B` old            | new state                 |
//! | first save, before 4  | `T` only                    | `None`; `T` removed       |
//!
//! A crash before step 4 loses the unfinished save, which never returned `Ok`.
//! `T` is never loaded even when it looks complete: without its fsync we
//! cannot know. A host crash before step 5 may forget any of the renames, but
//! each is atomic and `T` was synced before it, so the table still holds.
//! After step 5 the save is durable.

use crate::api::time::now_ms;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::num::NonZeroU32;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The file format this build writes, and the newest it reads.
pub const FORMAT: u32 = 1;

/// The state file's name unless [`StateFile::named`] says otherwise.
pub const DEFAULT_NAME: &str = "state.json";

/// The largest state file loaded, in bytes: hundreds of times what thousands
/// of unikernels with long histories take.
pub const MAX_SIZE: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[cfg(test)]
    #[error("{name:?} is not a state file name: give a plain file name, without '/'")]
    BadName { name: String },
    #[error(
        "cannot create the data directory {path}: {source}; create it (mode 0700) or choose another with --dir"
    )]
    CreateDir { path: PathBuf, source: io::Error },
    #[error(
        "cannot open the data directory {path}: {source}; check that it is a directory fulmar may read"
    )]
    OpenDir { path: PathBuf, source: io::Error },
    #[error(
        "the data directory {path} is in use by another process (another fulmar daemon?): stop it, or give this one another --dir"
    )]
    Locked { path: PathBuf },
    #[error(
        "cannot lock the data directory {path}: {source}; keep the data directory on a local file system that supports flock(2)"
    )]
    Lock { path: PathBuf, source: Errno },
    #[error("cannot read the state file {path}: {source}; check that it is a file fulmar may read")]
    Read { path: PathBuf, source: io::Error },
    #[error("the state file {path} is corrupt at line {line}, column {column} ({why}); fulmar will not use it or write over it: inspect it, {}, or move it aside to start with an empty state", recovery(.path, .backup))]
    Corrupt {
        path: PathBuf,
        line: usize,
        column: usize,
        why: String,
        backup: Backup,
    },
    #[error("the state file {path} is {size} bytes or more, larger than the {MAX_SIZE} bytes fulmar loads; it was left as it is: inspect it (a state file is JSON), {}, or move it aside to start with an empty state", recovery(.path, .backup))]
    TooBig {
        path: PathBuf,
        size: u64,
        backup: Backup,
    },
    #[error("the state file {path} was written by a newer fulmar (format {found}, this one reads up to {FORMAT}); it will not be written over: upgrade this fulmar, or {}", recovery(.path, .backup))]
    TooNew {
        path: PathBuf,
        found: u32,
        backup: Backup,
    },
    #[error(
        "the state file {path} is missing but its backup {backup} exists, which a save never leaves: to resume from the backup, `mv {backup} {path}`; to start with an empty state, move {backup} aside"
    )]
    OnlyBackup { path: PathBuf, backup: PathBuf },
    #[error(
        "cannot encode the state for {path}: {source}; nothing was written and {path} is unchanged"
    )]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "cannot save the state to {path}: cannot {step}: {source}; the previous state is still in {path}; check the space and permissions in its directory"
    )]
    Save {
        path: PathBuf,
        step: SaveStep,
        source: io::Error,
    },
    #[error(
        "cannot set aside {path}: {source}; the state file is unchanged and nothing was dropped from it; check the space and permissions in its directory"
    )]
    SetAside { path: PathBuf, source: io::Error },
    #[error(
        "saved the state to {path} but cannot flush its directory: {source}; a host crash now may bring back the previous save"
    )]
    Flush { path: PathBuf, source: io::Error },
}

/// What the previous save (`.bak`) offers when the state file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backup {
    /// There is none.
    Missing { path: PathBuf },
    /// It loads: restoring it loses only the last save.
    Usable { path: PathBuf },
    /// It exists but would not load either.
    Unusable { path: PathBuf },
}

/// The operator's way back, as a clause of an error message.
fn recovery(path: &Path, backup: &Backup) -> String {
    match backup {
        Backup::Usable { path: bak } => format!(
            "go back to the previous save with `mv {} {}`",
            bak.display(),
            path.display()
        ),
        Backup::Unusable { path: bak } => {
            format!("repair it ({} does not load either)", bak.display())
        }
        Backup::Missing { path: bak } => {
            format!("repair it (there is no {} to go back to)", bak.display())
        }
    }
}

/// One step of [`StateWriter::save`], as named in a [`StateError::Save`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveStep {
    WriteTemp,
    LinkBackup,
    RenameBackup,
    Replace,
    SyncDir,
}

/// The steps of a save, in order (see the module documentation).
const PLAN: [SaveStep; 5] = [
    SaveStep::WriteTemp,
    SaveStep::LinkBackup,
    SaveStep::RenameBackup,
    SaveStep::Replace,
    SaveStep::SyncDir,
];

impl fmt::Display for SaveStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SaveStep::WriteTemp => "write and sync the temporary file",
            SaveStep::LinkBackup => "link the current file as the next backup",
            SaveStep::RenameBackup => "move the next backup into place",
            SaveStep::Replace => "rename the temporary file over the state file",
            SaveStep::SyncDir => "flush the directory",
        })
    }
}

/// Where a state of type `T` lives; [`load`](StateFile::load) it to get
/// the state and the only handle that can save. There is no other:
///
/// ```compile_fail
/// use fulmar::host::state::StateFile;
/// let file = StateFile::<u32>::new("/nonexistent");
/// file.save(&1);
/// ```
#[derive(Debug)]
pub struct StateFile<T> {
    dir: PathBuf,
    name: String,
    state: PhantomData<fn() -> T>,
}

/// A successful load: the state, if any, and the writer for the next saves.
#[derive(Debug)]
pub struct Loaded<T> {
    /// `None` on first start.
    pub state: Option<T>,
    /// When the loaded state was saved (milliseconds since the epoch).
    pub saved_ms: Option<u64>,
    pub writer: StateWriter<T>,
}

/// Saves states of type `T`; holds the data directory's lock until dropped.
#[derive(Debug)]
pub struct StateWriter<T> {
    dir: Flock<File>,
    paths: Paths,
    state: PhantomData<fn(&T)>,
}

/// On disk: the format first, so that a newer one is recognised before the
/// state is parsed.
#[derive(Serialize, Deserialize)]
struct Envelope<S> {
    format: u32,
    saved_ms: u64,
    state: S,
}

/// Read before the envelope; a format of 0 was never written.
#[derive(Deserialize)]
struct Header {
    format: NonZeroU32,
}

#[derive(Debug)]
struct Paths {
    dir: PathBuf,
    file: PathBuf,
    backup: PathBuf,
    temp: PathBuf,
    backup_temp: PathBuf,
    /// Leftovers are `{file name}{one of these}{digits}`.
    leftover_prefixes: [String; 2],
}

impl Paths {
    fn new(dir: PathBuf, name: &str) -> Paths {
        let pid = std::process::id();
        let leftover_prefixes = [format!("{name}.tmp."), format!("{name}.bak.tmp.")];
        Paths {
            file: dir.join(name),
            backup: dir.join(format!("{name}.bak")),
            temp: dir.join(format!("{}{pid}", leftover_prefixes[0])),
            backup_temp: dir.join(format!("{}{pid}", leftover_prefixes[1])),
            leftover_prefixes,
            dir,
        }
    }

    fn is_leftover(&self, name: &str) -> bool {
        self.leftover_prefixes.iter().any(|prefix| {
            name.strip_prefix(prefix.as_str())
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        })
    }
}

impl<T: Serialize + DeserializeOwned> StateFile<T> {
    /// `state.json` in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> StateFile<T> {
        StateFile {
            dir: dir.into(),
            name: DEFAULT_NAME.to_owned(),
            state: PhantomData,
        }
    }

    /// `name` in `dir`; `name` must be a plain file name.
    #[cfg(test)]
    pub fn named(dir: impl Into<PathBuf>, name: &str) -> Result<StateFile<T>, StateError> {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(StateError::BadName { name: name.into() });
        }
        Ok(StateFile {
            dir: dir.into(),
            name: name.into(),
            state: PhantomData,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// Locks the directory, clears leftovers of interrupted saves and reads the
    /// state (module documentation). On error nothing was written, and the
    /// only way to save is gone with `self`.
    pub fn load(self) -> Result<Loaded<T>, StateError> {
        let paths = Paths::new(self.dir, &self.name);
        let dir = lock_dir(&paths.dir)?;
        remove_leftovers(&paths);
        let bytes = read(&paths.file).map_err(|problem| problem.into_error::<T>(&paths))?;
        let (state, saved_ms) = match bytes {
            None if paths.backup.symlink_metadata().is_ok() => {
                return Err(StateError::OnlyBackup {
                    path: paths.file,
                    backup: paths.backup,
                });
            }
            None => (None, None),
            Some(bytes) => {
                let envelope =
                    decode::<T>(&bytes).map_err(|problem| problem.into_error::<T>(&paths))?;
                (Some(envelope.state), Some(envelope.saved_ms))
            }
        };
        Ok(Loaded {
            state,
            saved_ms,
            writer: StateWriter {
                dir,
                paths,
                state: PhantomData,
            },
        })
    }
}

impl<T: Serialize> StateWriter<T> {
    /// Replaces the state file with `state`, keeping the previous one as
    /// `.bak`; returns once it is durable. On error the previous state file is
    /// untouched (except [`StateError::Flush`]: the new one is in place but
    /// may not survive a host crash) and no temporary file is left.
    pub fn save(&mut self, state: &T) -> Result<(), StateError> {
        self.save_steps(state, &PLAN)
    }

    pub fn path(&self) -> &Path {
        &self.paths.file
    }

    /// Writes `state` durably beside the state file, as
    /// `{state file}.{what}-{milliseconds}`, in the state file's format, so
    /// that what the daemon will not keep is still the operator's to recover.
    pub fn set_aside(&self, what: &str, state: &T) -> Result<PathBuf, StateError> {
        let mut name = self.paths.file.clone().into_os_string();
        name.push(format!(".{what}-{}", now_ms()));
        let path = PathBuf::from(name);
        let failed = |source| StateError::SetAside {
            path: path.clone(),
            source,
        };
        let bytes = encode(state).map_err(|e| failed(io::Error::other(e)))?;
        create_synced(&path, &bytes)
            .and_then(|()| self.dir.sync_all())
            .map_err(failed)?;
        Ok(path)
    }

    /// Runs `steps` of the plan; tests stop early to leave what a crash would.
    fn save_steps(&mut self, state: &T, steps: &[SaveStep]) -> Result<(), StateError> {
        let bytes = encode(state).map_err(|source| StateError::Encode {
            path: self.paths.file.clone(),
            source,
        })?;
        let result = steps.iter().try_for_each(|&step| self.run(step, &bytes));
        if result.is_err() {
            // We hold the lock, so these names are ours; a failure to remove
            // them is mended by the next load.
            let _ = remove_if_present(&self.paths.temp);
            let _ = remove_if_present(&self.paths.backup_temp);
        }
        result
    }

    fn run(&self, step: SaveStep, bytes: &[u8]) -> Result<(), StateError> {
        let p = &self.paths;
        let done = match step {
            SaveStep::WriteTemp => write_synced(&p.temp, bytes),
            // NotFound: no state file yet (first save), so no backup to make.
            SaveStep::LinkBackup => remove_if_present(&p.backup_temp)
                .and_then(|()| fs::hard_link(&p.file, &p.backup_temp))
                .or_else(not_found_is_ok),
            SaveStep::RenameBackup => {
                fs::rename(&p.backup_temp, &p.backup).or_else(not_found_is_ok)
            }
            SaveStep::Replace => fs::rename(&p.temp, &p.file),
            SaveStep::SyncDir => {
                return self.dir.sync_all().map_err(|source| StateError::Flush {
                    path: p.file.clone(),
                    source,
                });
            }
        };
        done.map_err(|source| StateError::Save {
            path: p.file.clone(),
            step,
            source,
        })
    }
}

fn not_found_is_ok(e: io::Error) -> io::Result<()> {
    match e.kind() {
        io::ErrorKind::NotFound => Ok(()),
        _ => Err(e),
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    fs::remove_file(path).or_else(not_found_is_ok)
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // A leftover under our own pid can only be from a failed save of ours.
    remove_if_present(path)?;
    create_synced(path, bytes)
}

fn create_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn lock_dir(dir: &Path) -> Result<Flock<File>, StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StateError::CreateDir {
            path: dir.into(),
            source,
        })?;
    let open_err = |source| StateError::OpenDir {
        path: dir.into(),
        source,
    };
    let file = File::open(dir).map_err(open_err)?;
    if !file.metadata().map_err(open_err)?.is_dir() {
        return Err(open_err(io::Error::from(io::ErrorKind::NotADirectory)));
    }
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| match errno {
        Errno::EWOULDBLOCK => StateError::Locked { path: dir.into() },
        source => StateError::Lock {
            path: dir.into(),
            source,
        },
    })
}

/// Removes what interrupted saves left. A failure only costs a warning: a
/// save removes a leftover under its own name before using that name.
fn remove_leftovers(paths: &Paths) {
    let entries = match fs::read_dir(&paths.dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!("cannot list {} for leftovers: {e}", paths.dir.display());
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_str().is_some_and(|name| paths.is_leftover(name)) {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => tracing::info!("removed {}, left by an interrupted save", path.display()),
                Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
            }
        }
    }
}

/// The file's bytes, if it exists and is at most [`MAX_SIZE`]: its size is
/// checked before reading, and again while reading in case it grows.
fn read(path: &Path) -> Result<Option<Vec<u8>>, Problem> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Problem::Read(e)),
    };
    let size = file.metadata().map_err(Problem::Read)?.len();
    if size > MAX_SIZE {
        return Err(Problem::TooBig(size));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(Problem::Read)?;
    let read = bytes.len() as u64;
    if read > MAX_SIZE {
        return Err(Problem::TooBig(read));
    }
    Ok(Some(bytes))
}

fn encode<T: Serialize>(state: &T) -> serde_json::Result<Vec<u8>> {
    let saved_ms = now_ms();
    let mut bytes = serde_json::to_vec_pretty(&Envelope {
        format: FORMAT,
        saved_ms,
        state,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Why a file is not a state this build can use.
enum Problem {
    Read(io::Error),
    TooBig(u64),
    Syntax(serde_json::Error),
    TooNew(u32),
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<Envelope<T>, Problem> {
    // The header first: a newer format may not parse as today's `T`.
    let header: Header = serde_json::from_slice(bytes).map_err(Problem::Syntax)?;
    if header.format.get() > FORMAT {
        return Err(Problem::TooNew(header.format.get()));
    }
    serde_json::from_slice(bytes).map_err(Problem::Syntax)
}

impl Problem {
    fn into_error<T: DeserializeOwned>(self, paths: &Paths) -> StateError {
        let path = paths.file.clone();
        let backup = || backup_status::<T>(&paths.backup);
        match self {
            Problem::Read(source) => StateError::Read { path, source },
            Problem::TooBig(size) => StateError::TooBig {
                path,
                size,
                backup: backup(),
            },
            Problem::TooNew(found) => StateError::TooNew {
                path,
                found,
                backup: backup(),
            },
            Problem::Syntax(e) => {
                let (line, column) = (e.line(), e.column());
                // serde_json appends the position to its message; we give it apart.
                let full = e.to_string();
                let why = full
                    .strip_suffix(&format!(" at line {line} column {column}"))
                    .unwrap_or(&full)
                    .to_owned();
                StateError::Corrupt {
                    path,
                    line,
                    column,
                    why,
                    backup: backup(),
                }
            }
        }
    }
}

fn backup_status<T: DeserializeOwned>(path: &Path) -> Backup {
    let path = path.to_path_buf();
    match read(&path) {
        Ok(None) => Backup::Missing { path },
        Ok(Some(bytes)) if decode::<T>(&bytes).is_ok() => Backup::Usable { path },
        _ => Backup::Unusable { path },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    /// Stands in for the daemon's state.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
    struct Fleet {
        unikernels: BTreeMap<String, u64>,
        /// Makes the encoder fail, as a broken Serialize impl would.
        #[serde(serialize_with = "refuse_if_poisoned")]
        poisoned: bool,
    }

    fn refuse_if_poisoned<S: serde::Serializer>(poisoned: &bool, s: S) -> Result<S::Ok, S::Error> {
        if *poisoned {
            Err(serde::ser::Error::custom("poisoned on purpose"))
        } else {
            s.serialize_bool(false)
        }
    }

    fn fleet(generation: u64) -> Fleet {
        Fleet {
            unikernels: (0..3).map(|i| (format!("uk{i}"), generation)).collect(),
            poisoned: false,
        }
    }

    fn load(dir: &Path) -> Result<Loaded<Fleet>, StateError> {
        StateFile::<Fleet>::new(dir).load()
    }

    /// Loads and asserts the state file held `expected`.
    fn load_ok(dir: &Path, expected: Option<&Fleet>) -> StateWriter<Fleet> {
        let loaded = load(dir).unwrap();
        assert_eq!(loaded.state.as_ref(), expected);
        assert_eq!(loaded.saved_ms.is_some(), expected.is_some());
        loaded.writer
    }

    /// What the backup holds, parsed directly.
    fn backup_of(dir: &Path) -> Option<Fleet> {
        let bytes = fs::read(dir.join("state.json.bak")).ok()?;
        Some(
            serde_json::from_slice::<Envelope<Fleet>>(&bytes)
                .unwrap()
                .state,
        )
    }

    /// Every name in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// A state file saved as generation 1, then 2: `.bak` holds 1.
    fn two_saves(dir: &Path) {
        let mut writer = load_ok(dir, None);
        writer.save(&fleet(1)).unwrap();
        writer.save(&fleet(2)).unwrap();
    }

    #[test]
    fn first_start_has_no_state_and_makes_the_directory_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data/fulmar");
        load_ok(&dir, None);
        assert_eq!(mode(&dir), 0o700);
        assert!(names(&dir).is_empty());
    }

    #[test]
    fn a_saved_state_comes_back() {
        let tmp = tempfile::tempdir().unwrap();
        let mut writer = load_ok(tmp.path(), None);
        writer.save(&fleet(7)).unwrap();
        drop(writer);
        let loaded = load(tmp.path()).unwrap();
        assert_eq!(loaded.state, Some(fleet(7)));
        assert!(loaded.saved_ms.unwrap() > 0);
        let text = fs::read_to_string(tmp.path().join("state.json")).unwrap();
        assert!(
            text.starts_with("{\n  \"format\": 1,\n  \"saved_ms\": "),
            "{text}"
        );
    }

    #[test]
    fn files_are_0600() {
        let tmp = tempfile::tempdir().unwrap();
        two_saves(tmp.path());
        assert_eq!(mode(&tmp.path().join("state.json")), 0o600);
        assert_eq!(mode(&tmp.path().join("state.json.bak")), 0o600);
    }

    #[test]
    fn the_backup_holds_the_previous_save() {
        let tmp = tempfile::tempdir().unwrap();
        let mut writer = load_ok(tmp.path(), None);
        writer.save(&fleet(1)).unwrap();
        assert_eq!(backup_of(tmp.path()), None);
        writer.save(&fleet(2)).unwrap();
        assert_eq!(backup_of(tmp.path()), Some(fleet(1)));
        writer.save(&fleet(3)).unwrap();
        assert_eq!(backup_of(tmp.path()), Some(fleet(2)));
        assert_eq!(names(tmp.path()), ["state.json", "state.json.bak"]);
        drop(writer);
        load_ok(tmp.path(), Some(&fleet(3)));
    }

    #[test]
    fn a_configured_name_is_used_and_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let file = StateFile::<Fleet>::named(tmp.path(), "fleet.json").unwrap();
        assert_eq!(file.path(), tmp.path().join("fleet.json"));
        let mut writer = file.load().unwrap().writer;
        writer.save(&fleet(1)).unwrap();
        writer.save(&fleet(2)).unwrap();
        assert_eq!(names(tmp.path()), ["fleet.json", "fleet.json.bak"]);
        for bad in ["", ".", "..", "a/b"] {
            let err = StateFile::<Fleet>::named(tmp.path(), bad).unwrap_err();
            assert!(matches!(err, StateError::BadName { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_second_loader_is_locked_out_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = load_ok(tmp.path(), None);
        let err = load(tmp.path()).unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("another fulmar daemon"), "{err}");
        drop(writer);
        load_ok(tmp.path(), None);
    }

    /// Asserts the files in `dir` still hold exactly `before`.
    fn assert_untouched(dir: &Path, before: &[(String, Vec<u8>)]) {
        let now: Vec<(String, Vec<u8>)> = names(dir)
            .into_iter()
            .map(|n| (n.clone(), fs::read(dir.join(&n)).unwrap()))
            .collect();
        assert_eq!(now, before);
    }

    fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
        names(dir)
            .into_iter()
            .map(|n| (n.clone(), fs::read(dir.join(&n)).unwrap()))
            .collect()
    }

    #[test]
    fn a_corrupt_file_is_reported_where_it_breaks_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        two_saves(tmp.path());
        let file = tmp.path().join("state.json");
        let text = fs::read_to_string(&file).unwrap();
        // Cut the file inside the first unikernel, as a bad edit would.
        let cut = text.find("\"uk1\"").unwrap();
        let broken = format!("{}}}", &text[..cut]);
        fs::write(&file, &broken).unwrap();
        let before = snapshot(tmp.path());

        for _ in 0..2 {
            let err = load(tmp.path()).unwrap_err();
            let StateError::Corrupt {
                path,
                line,
                column,
                why,
                backup,
            } = &err
            else {
                panic!("not Corrupt: {err}");
            };
            assert_eq!(path, &file);
            let last_line = broken.lines().count();
            assert_eq!(
                (*line, *column),
                (last_line, broken.lines().last().unwrap().len())
            );
            assert!(why.starts_with("key must be a string"), "{why}");
            assert_eq!(
                backup,
                &Backup::Usable {
                    path: tmp.path().join("state.json.bak")
                }
            );
            let message = err.to_string();
            assert!(
                message.contains(&format!(
                    "{} is corrupt at line {line}, column {column}",
                    file.display()
                )),
                "{message}"
            );
            assert!(
                message.contains(&format!("`mv {}.bak {}`", file.display(), file.display())),
                "{message}"
            );
            assert!(!message.contains('\n'));
            assert_untouched(tmp.path(), &before);
        }
    }

    #[test]
    fn a_file_of_the_wrong_shape_is_corrupt_with_its_position() {
        let tmp = tempfile::tempdir().unwrap();
        let text = "{\"format\": 1, \"saved_ms\": 5,\n \"state\": {\"unikernels\": [1]}}";
        fs::write(tmp.path().join("state.json"), text).unwrap();
        let err = load(tmp.path()).unwrap_err();
        let StateError::Corrupt {
            line,
            column,
            why,
            backup,
            ..
        } = &err
        else {
            panic!("not Corrupt: {err}");
        };
        // serde_json points at the character before the offending `[`.
        let second = text.lines().nth(1).unwrap();
        assert_eq!((*line, *column), (2, second.find('[').unwrap()));
        assert!(why.starts_with("invalid type: sequence"), "{why}");
        assert!(matches!(backup, Backup::Missing { .. }));
        assert!(err.to_string().contains("there is no"), "{err}");
    }

    #[test]
    fn format_zero_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(
            tmp.path().join("state.json"),
            r#"{"format": 0, "saved_ms": 5, "state": {}}"#,
        )
        .unwrap();
        let err = load(tmp.path()).unwrap_err();
        assert!(matches!(err, StateError::Corrupt { line: 1, .. }), "{err}");
    }

    #[test]
    fn a_corrupt_backup_is_not_offered() {
        let tmp = tempfile::tempdir().unwrap();
        two_saves(tmp.path());
        fs::write(tmp.path().join("state.json"), "{").unwrap();
        fs::write(tmp.path().join("state.json.bak"), "").unwrap();
        let err = load(tmp.path()).unwrap_err();
        assert!(
            matches!(
                &err,
                StateError::Corrupt {
                    backup: Backup::Unusable { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.to_string().contains("mv "), "{err}");
    }

    #[test]
    fn a_newer_format_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        two_saves(tmp.path());
        // A future fulmar may reshape the state entirely.
        fs::write(
            tmp.path().join("state.json"),
            r#"{"format": 2, "saved_ms": 5, "state": ["something", "else"]}"#,
        )
        .unwrap();
        let before = snapshot(tmp.path());
        let err = load(tmp.path()).unwrap_err();
        assert!(
            matches!(
                &err,
                StateError::TooNew {
                    found: 2,
                    backup: Backup::Usable { .. },
                    ..
                }
            ),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("written by a newer fulmar (format 2, this one reads up to 1)"),
            "{message}"
        );
        assert!(message.contains("upgrade this fulmar"), "{message}");
        assert_untouched(tmp.path(), &before);
    }

    #[test]
    fn a_backup_without_a_state_file_is_the_operators_call() {
        let tmp = tempfile::tempdir().unwrap();
        two_saves(tmp.path());
        fs::remove_file(tmp.path().join("state.json")).unwrap();
        let before = snapshot(tmp.path());
        let err = load(tmp.path()).unwrap_err();
        assert!(matches!(err, StateError::OnlyBackup { .. }), "{err}");
        let bak = tmp.path().join("state.json.bak");
        let file = tmp.path().join("state.json");
        assert!(
            err.to_string()
                .contains(&format!("`mv {} {}`", bak.display(), file.display())),
            "{err}"
        );
        assert_untouched(tmp.path(), &before);
    }

    /// A crash after each prefix of the plan, with generations 1 and 2
    /// saved before and 3 being saved.
    #[test]
    fn a_crash_at_any_step_leaves_a_loadable_state() {
        for done in 0..=PLAN.len() {
            let tmp = tempfile::tempdir().unwrap();
            two_saves(tmp.path());
            let mut writer = load_ok(tmp.path(), Some(&fleet(2)));
            writer.save_steps(&fleet(3), &PLAN[..done]).unwrap();
            // The state file is complete at every step, not only after load.
            let bytes = fs::read(tmp.path().join("state.json")).unwrap();
            assert!(decode::<Fleet>(&bytes).is_ok(), "after {done} steps");
            drop(writer);

            let replaced = done > PLAN.iter().position(|&s| s == SaveStep::Replace).unwrap();
            let backed_up = done
                > PLAN
                    .iter()
                    .position(|&s| s == SaveStep::RenameBackup)
                    .unwrap();
            load_ok(tmp.path(), Some(&fleet(if replaced { 3 } else { 2 })));
            assert_eq!(
                backup_of(tmp.path()),
                Some(fleet(if backed_up { 2 } else { 1 })),
                "after {done} steps"
            );
            assert_eq!(
                names(tmp.path()),
                ["state.json", "state.json.bak"],
                "after {done} steps"
            );
        }
    }

    #[test]
    fn a_crash_during_the_first_save_is_a_first_start() {
        let replace = PLAN.iter().position(|&s| s == SaveStep::Replace).unwrap();
        for done in 0..=replace {
            let tmp = tempfile::tempdir().unwrap();
            let mut writer = load_ok(tmp.path(), None);
            writer.save_steps(&fleet(1), &PLAN[..done]).unwrap();
            drop(writer);
            load_ok(tmp.path(), None);
            assert!(names(tmp.path()).is_empty(), "after {done} steps");
        }
    }

    #[test]
    fn a_half_written_temporary_from_another_process_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        two_saves(tmp.path());
        let keep = [
            "state.json.tmp.keep",
            "state.json.tmp.",
            "other.json.tmp.12",
        ];
        for name in keep {
            fs::write(tmp.path().join(name), "not ours").unwrap();
        }
        fs::write(
            tmp.path().join("state.json.tmp.4242"),
            "{\"format\": 1, \"sav",
        )
        .unwrap();
        fs::hard_link(
            tmp.path().join("state.json"),
            tmp.path().join("state.json.bak.tmp.4242"),
        )
        .unwrap();
        load_ok(tmp.path(), Some(&fleet(2)));
        let mut expected: Vec<&str> = ["state.json", "state.json.bak"]
            .into_iter()
            .chain(keep)
            .collect();
        expected.sort();
        assert_eq!(names(tmp.path()), expected);
        assert_eq!(backup_of(tmp.path()), Some(fleet(1)));
    }

    #[test]
    fn an_encoding_failure_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        two_saves(tmp.path());
        let before = snapshot(tmp.path());
        let mut writer = load_ok(tmp.path(), Some(&fleet(2)));
        let poisoned = Fleet {
            poisoned: true,
            ..fleet(3)
        };
        let err = writer.save(&poisoned).unwrap_err();
        assert!(matches!(err, StateError::Encode { .. }), "{err}");
        assert!(err.to_string().contains("poisoned on purpose"), "{err}");
        assert_untouched(tmp.path(), &before);
        // The writer is still good for the next save.
        writer.save(&fleet(4)).unwrap();
        drop(writer);
        load_ok(tmp.path(), Some(&fleet(4)));
    }

    #[test]
    fn a_step_failing_after_the_write_leaves_no_temporary_file() {
        let tmp = tempfile::tempdir().unwrap();
        two_saves(tmp.path());
        let mut writer = load_ok(tmp.path(), Some(&fleet(2)));
        // A directory cannot be hard-linked, so the backup step fails once
        // the temporary file is written and synced.
        let file = tmp.path().join("state.json");
        fs::rename(&file, tmp.path().join("aside")).unwrap();
        fs::create_dir(&file).unwrap();
        let err = writer.save(&fleet(3)).unwrap_err();
        assert!(
            matches!(
                err,
                StateError::Save {
                    step: SaveStep::LinkBackup,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(names(tmp.path()), ["aside", "state.json", "state.json.bak"]);
        assert_eq!(backup_of(tmp.path()), Some(fleet(1)));
    }

    #[test]
    fn a_read_only_directory_fails_the_save_and_keeps_the_state() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        two_saves(&dir);
        let before = snapshot(&dir);
        let mut writer = load_ok(&dir, Some(&fleet(2)));
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
        let err = std::thread::scope(|s| {
            s.spawn(|| {
                give_up_root_for_files();
                writer.save(&fleet(3))
            })
            .join()
            .unwrap()
        })
        .unwrap_err();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let StateError::Save { step, source, .. } = &err else {
            panic!("not Save: {err}");
        };
        assert_eq!(*step, SaveStep::WriteTemp);
        assert_eq!(source.kind(), io::ErrorKind::PermissionDenied);
        let message = err.to_string();
        assert!(
            message.contains("the previous state is still in"),
            "{message}"
        );
        assert!(
            message.contains(&dir.join("state.json").display().to_string()),
            "{message}"
        );
        assert_untouched(&dir, &before);
        drop(writer);
        load_ok(&dir, Some(&fleet(2)));
    }

    #[test]
    fn an_oversized_file_is_refused_unread_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        two_saves(tmp.path());
        let file = tmp.path().join("state.json");
        // Sparse: as large as the limit says, without the disk or the time.
        OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(MAX_SIZE + 1)
            .unwrap();
        let err = load(tmp.path()).unwrap_err();
        let StateError::TooBig { size, backup, .. } = &err else {
            panic!("not TooBig: {err}");
        };
        assert_eq!(*size, MAX_SIZE + 1);
        assert!(matches!(backup, Backup::Usable { .. }), "{backup:?}");
        let message = err.to_string();
        assert!(message.contains(&format!("{}", MAX_SIZE + 1)), "{message}");
        assert!(message.contains(&format!("{MAX_SIZE} bytes")), "{message}");
        assert!(message.contains("mv "), "{message}");
        assert_eq!(fs::metadata(&file).unwrap().len(), MAX_SIZE + 1);
    }

    #[test]
    fn a_state_set_aside_loads_as_a_state_file_and_touches_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        two_saves(tmp.path());
        let before = snapshot(tmp.path());
        let writer = load_ok(tmp.path(), Some(&fleet(2)));
        let aside = writer.set_aside("duplicates", &fleet(9)).unwrap();
        let name = aside.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.starts_with("state.json.duplicates-"), "{name}");
        assert_eq!(mode(&aside), 0o600);
        drop(writer);
        let set_aside = StateFile::<Fleet>::named(tmp.path(), &name).unwrap();
        assert_eq!(set_aside.load().unwrap().state, Some(fleet(9)));
        fs::remove_file(&aside).unwrap();
        assert_untouched(tmp.path(), &before);
    }

    /// Root writes anywhere; a thread that accesses files as `nobody` meets
    /// permissions as an ordinary daemon would.
    fn give_up_root_for_files() {
        #[cfg(target_os = "linux")]
        if nix::unistd::geteuid().is_root() {
            // SAFETY: setfsuid changes only this thread's file-system uid (the
            // raw syscall, not the all-threads setuid); it takes no pointers.
            unsafe { libc::setfsuid(65534) };
            // SAFETY: as above; an invalid uid only reads back the current one.
            let now = unsafe { libc::setfsuid(u32::MAX) };
            assert_eq!(now, 65534, "setfsuid did not take");
        }
    }
}
