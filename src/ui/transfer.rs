//! Block device work for the link: creating, destroying, and moving data
//! between the operator's local files and the daemon's block devices.
//!
//! A transfer runs in a task of its own on a connection of its own, so the
//! operator keeps working while it runs, and cancelling it is dropping that
//! connection: the daemon then discards what it received, and an upload leaves
//! the old contents. Progress goes back to the app as [`Update::Transfer`],
//! a few times a second; the end as [`Update::TransferEnded`] and
//! [`Update::Done`]. A download writes into a temporary file beside its
//! target and renames it only once complete, so a failed or cancelled one
//! leaves the operator's file as it was.

use crate::api::label::Label;
use crate::api::protocol::{Reply, Request};
use crate::ui::link::{Connect, local_path};
use crate::ui::message::{Command, TransferKind, Update};
use crate::wire::client::{Client, ClientError, Progress};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How often a running transfer reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// What a transfer task does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// A new device filled from the local file `data`.
    Create {
        name: Label,
        size_mb: u64,
        data: PathBuf,
    },
    Upload {
        name: Label,
        path: PathBuf,
    },
    Download {
        name: Label,
        path: PathBuf,
        overwrite: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("cannot read {}: {source}; check the path", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}; check the path and that its directory is writable", .path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("{} is a directory: name a file", .0.display())]
    Directory(PathBuf),
    #[error("cannot reach the daemon: {0}")]
    Connect(String),
    #[error("{0}")]
    Daemon(#[from] ClientError),
    #[error(
        "the daemon answered {0}, which this fulmar did not expect: run the same fulmar version on both ends"
    )]
    Unexpected(String),
    #[error("another transfer of {0} is under way: wait for it, or cancel it first")]
    Busy(Label),
    #[error("cancelled; {0}")]
    Cancelled(String),
}

impl Job {
    /// The job a command asks for; `None` for commands that move no data.
    pub fn of(command: &Command) -> Option<Job> {
        Some(match command.clone() {
            Command::BlockCreate {
                name,
                size_mb,
                data: Some(data),
            } => Job::Create {
                name,
                size_mb,
                data,
            },
            Command::BlockUpload { name, path } => Job::Upload { name, path },
            Command::BlockDownload {
                name,
                path,
                overwrite,
            } => Job::Download {
                name,
                path,
                overwrite,
            },
            _ => return None,
        })
    }

    pub fn block(&self) -> &Label {
        match self {
            Job::Create { name, .. } | Job::Upload { name, .. } | Job::Download { name, .. } => {
                name
            }
        }
    }

    fn kind(&self) -> TransferKind {
        match self {
            Job::Create { .. } => TransferKind::Create,
            Job::Upload { .. } => TransferKind::Upload,
            Job::Download { .. } => TransferKind::Download,
        }
    }

    /// What the status line calls it: the same words as the command.
    fn describe(&self) -> String {
        let command = match self.clone() {
            Job::Create {
                name,
                size_mb,
                data,
            } => Command::BlockCreate {
                name,
                size_mb,
                data: Some(data),
            },
            Job::Upload { name, path } => Command::BlockUpload { name, path },
            Job::Download {
                name,
                path,
                overwrite,
            } => Command::BlockDownload {
                name,
                path,
                overwrite,
            },
        };
        command.describe()
    }

    /// What a cancel leaves behind, for the operator.
    fn cancelled(&self) -> String {
        match self {
            Job::Create { name, .. } => format!("block device {name} was not created"),
            Job::Upload { name, .. } => format!("{name} keeps its old contents"),
            Job::Download { path, .. } => format!("{} was left as it was", path.display()),
        }
    }
}

/// The transfers under way, each with the switch that cancels it.
#[derive(Default)]
pub struct Transfers {
    running: HashMap<Label, oneshot::Sender<()>>,
}

impl Transfers {
    /// Starts `job` in the background on a connection of its own; one
    /// transfer per block device at a time.
    pub fn start(&mut self, connect: &Arc<Connect>, job: Job, updates: &mpsc::Sender<Update>) {
        // A finished task has dropped its end of the switch.
        self.running.retain(|_, cancel| !cancel.is_closed());
        let updates = updates.clone();
        let block = job.block().clone();
        if self.running.contains_key(&block) {
            let what = job.describe();
            tokio::spawn(async move {
                let outcome = Err(TransferError::Busy(block).to_string());
                let _ = updates.send(Update::Done { what, outcome }).await;
            });
            return;
        }
        let (cancel, cancelled) = oneshot::channel();
        self.running.insert(block, cancel);
        tokio::spawn(run(job, connect.clone(), updates, cancelled));
    }

    /// Cancels the transfer of `block`; false when none is under way.
    pub fn cancel(&mut self, block: &Label) -> bool {
        self.running
            .remove(block)
            .is_some_and(|cancel| cancel.send(()).is_ok())
    }
}

/// Runs `job` to its end or until cancelled, and reports how it went.
async fn run(
    job: Job,
    connect: Arc<Connect>,
    updates: mpsc::Sender<Update>,
    cancelled: oneshot::Receiver<()>,
) {
    let progress = AtomicU64::new(0);
    // Cancelling drops the work, and with it the job's connection (so the
    // daemon drops its side) and a download's partial file.
    let outcome = tokio::select! {
        outcome = carry_out(&job, &connect, &progress, &updates) => outcome,
        // A dropped switch means the link is gone: stop as well.
        _ = cancelled => Err(TransferError::Cancelled(job.cancelled())),
    };
    let block = job.block().clone();
    let _ = updates.send(Update::TransferEnded { block }).await;
    let end = match outcome {
        Ok(Finished::Done) => Update::Done {
            what: job.describe(),
            outcome: Ok(()),
        },
        Ok(Finished::WouldOverwrite(path)) => Update::WouldOverwrite {
            block: job.block().clone(),
            path,
        },
        Err(e) => Update::Done {
            what: job.describe(),
            outcome: Err(e.to_string()),
        },
    };
    let _ = updates.send(end).await;
}

/// How a job that did not fail ended.
enum Finished {
    Done,
    /// A download found its file already there and did nothing.
    WouldOverwrite(PathBuf),
}

async fn carry_out(
    job: &Job,
    connect: &Connect,
    progress: &AtomicU64,
    updates: &mpsc::Sender<Update>,
) -> Result<Finished, TransferError> {
    let reporter = Reporter {
        block: job.block().clone(),
        kind: job.kind(),
        progress,
        updates,
    };
    let client = match job {
        Job::Create {
            name,
            size_mb,
            data,
        } => {
            let request = Request::BlockCreate {
                name: name.clone(),
                size_mb: *size_mb,
                with_data: true,
                lend: false,
                check: Default::default(),
            };
            send_file(connect, request, data, &reporter).await?
        }
        Job::Upload { name, path } => {
            let request = Request::BlockUpload {
                name: name.clone(),
                compressed: false,
                lend: false,
                check: Default::default(),
            };
            send_file(connect, request, path, &reporter).await?
        }
        Job::Download {
            name,
            path,
            overwrite,
        } => {
            let path = local_path(path);
            if !overwrite && exists(&path).await? {
                return Ok(Finished::WouldOverwrite(path));
            }
            download(connect, name, &path, &reporter).await?
        }
    };
    refresh(&client, updates).await;
    Ok(Finished::Done)
}

/// Sends a local file as the data of `request`; returns the connection for
/// the refresh that follows.
async fn send_file(
    connect: &Connect,
    request: Request,
    path: &Path,
    reporter: &Reporter<'_>,
) -> Result<Client, TransferError> {
    let path = local_path(path);
    let read_err = |source| TransferError::Read {
        path: path.clone(),
        source,
    };
    let file = tokio::fs::File::open(&path).await.map_err(read_err)?;
    let meta = file.metadata().await.map_err(read_err)?;
    if meta.is_dir() {
        return Err(TransferError::Directory(path));
    }
    let client = connect().await.map_err(TransferError::Connect)?;
    let record = |p: Progress| reporter.progress.store(p.done, Ordering::Relaxed);
    let reply = if meta.is_file() {
        // A regular file goes from the page cache where the system allows.
        let send = client.send_file(request, file.into_std().await, record);
        reporter.around(send, Some(meta.len())).await?
    } else {
        // A pipe or a device has no size to show progress against.
        let send = client.send_data(request, file, record);
        reporter.around(send, None).await?
    };
    match reply {
        Reply::Block { .. } | Reply::Transferred { .. } => Ok(client),
        other => Err(TransferError::Unexpected(format!("{other:?}"))),
    }
}

/// Receives block device `name` into a partial file beside `path`, then
/// puts it in place.
async fn download(
    connect: &Connect,
    name: &Label,
    path: &Path,
    reporter: &Reporter<'_>,
) -> Result<Client, TransferError> {
    let write_err = |source| TransferError::Write {
        path: path.to_owned(),
        source,
    };
    let client = connect().await.map_err(TransferError::Connect)?;
    let total = match client.call(Request::BlockList).await? {
        Reply::Blocks { blocks, .. } => blocks
            .iter()
            .find(|b| &b.name == name)
            .map(|b| b.size_mb << 20),
        other => return Err(TransferError::Unexpected(format!("{other:?}"))),
    };
    let mut partial = Partial::beside(path);
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        // Disk images are nobody else's business.
        .mode(0o600)
        .open(&partial.path)
        .await
        .map_err(write_err)?;
    let request = Request::BlockDownload {
        name: name.clone(),
        compressed: false,
        lend: false,
    };
    let record = |p: Progress| reporter.progress.store(p.done, Ordering::Relaxed);
    let receive = client.receive_file(request, file.into_std().await, total, record);
    reporter.around(receive, total).await?;
    // Durable before it takes the place of whatever `path` was.
    let written = tokio::fs::File::open(&partial.path)
        .await
        .map_err(write_err)?;
    written.sync_all().await.map_err(write_err)?;
    tokio::fs::rename(&partial.path, path)
        .await
        .map_err(write_err)?;
    partial.kept = true;
    Ok(client)
}

/// A download's file until it is complete: removed when the download ends
/// any other way, cancelled ones included (their future is simply dropped).
struct Partial {
    path: PathBuf,
    kept: bool,
}

impl Partial {
    /// A hidden name beside `path`, so the final rename stays on one filesystem.
    fn beside(path: &Path) -> Partial {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = path
            .file_name()
            .map_or_else(|| "download".into(), |n| n.to_string_lossy().into_owned());
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let file = format!(".{name}.fulmar-{}-{unique}.partial", std::process::id());
        Partial {
            path: path.with_file_name(file),
            kept: false,
        }
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.kept {
            // One unlink: quick enough for an async context, and nothing
            // to report if it was never created.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Tells the app where a transfer stands while its work runs.
struct Reporter<'a> {
    block: Label,
    kind: TransferKind,
    progress: &'a AtomicU64,
    updates: &'a mpsc::Sender<Update>,
}

impl Reporter<'_> {
    /// Runs `work`, reporting the progress it records every
    /// [`PROGRESS_EVERY`], the first time at once (the transfer started).
    async fn around<T>(
        &self,
        work: impl Future<Output = Result<T, ClientError>>,
        total: Option<u64>,
    ) -> Result<T, ClientError> {
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut work = std::pin::pin!(work);
        let mut reported = None;
        loop {
            tokio::select! {
                outcome = &mut work => return outcome,
                _ = tick.tick() => {
                    let done = self.progress.load(Ordering::Relaxed);
                    if reported != Some(done) {
                        reported = Some(done);
                        // Progress is worth nothing late: a full queue skips a report.
                        let _ = self.updates.try_send(Update::Transfer {
                            block: self.block.clone(),
                            kind: self.kind,
                            done,
                            total,
                        });
                    }
                }
            }
        }
    }
}

/// Block devices and the disk they take changed: show it.
async fn refresh(client: &Client, updates: &mpsc::Sender<Update>) {
    for request in [Request::BlockList, Request::Policy] {
        let update = match client.call(request).await {
            Ok(Reply::Blocks { blocks, .. }) => Update::Blocks(blocks),
            Ok(Reply::Policy { policy }) => Update::Policy(policy),
            // The link's own refreshes will catch up.
            _ => continue,
        };
        let _ = updates.send(update).await;
    }
}

/// A create or destroy without data, on the link's connection; its outcome
/// comes back as `Done`, then the block list and policy as they now are.
pub fn change(client: &Arc<Client>, command: &Command, updates: &mpsc::Sender<Update>) {
    let request = match command.clone() {
        Command::BlockCreate { name, size_mb, .. } => Request::BlockCreate {
            name,
            size_mb,
            with_data: false,
            lend: false,
            check: Default::default(),
        },
        Command::BlockDestroy(name) => Request::BlockDestroy { name },
        _ => return,
    };
    let what = command.describe();
    let (client, updates) = (client.clone(), updates.clone());
    tokio::spawn(async move {
        let outcome = client.call(request).await.map(|_| ());
        if outcome.is_ok() {
            refresh(&client, &updates).await;
        }
        let outcome = outcome.map_err(|e| e.to_string());
        let _ = updates.send(Update::Done { what, outcome }).await;
    });
}

async fn exists(path: &Path) -> Result<bool, TransferError> {
    match tokio::fs::metadata(path).await {
        Ok(meta) if meta.is_dir() => Err(TransferError::Directory(path.to_owned())),
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(TransferError::Write {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_download_sits_beside_its_file_hidden() {
        let partial = Partial::beside(Path::new("/tmp/x/disk.img"));
        assert_eq!(partial.path.parent(), Some(Path::new("/tmp/x")));
        let name = partial.path.file_name().unwrap().to_string_lossy();
        assert!(name.starts_with(".disk.img.fulmar-"), "{name}");
        assert_ne!(
            Partial::beside(Path::new("/tmp/x/disk.img")).path,
            partial.path
        );
    }

    #[test]
    fn a_partial_file_goes_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("disk.img");
        let dropped = Partial::beside(&target);
        std::fs::write(&dropped.path, b"half").unwrap();
        let path = dropped.path.clone();
        drop(dropped);
        assert!(!path.exists());
        let mut kept = Partial::beside(&target);
        std::fs::write(&kept.path, b"all").unwrap();
        kept.kept = true;
        let path = kept.path.clone();
        drop(kept);
        assert!(path.exists());
    }

    #[test]
    fn only_data_moving_commands_are_jobs() {
        let name = Label::new("disk").unwrap();
        let with_data = Command::BlockCreate {
            name: name.clone(),
            size_mb: 1,
            data: Some("/d".into()),
        };
        assert_eq!(
            Job::of(&with_data).unwrap().describe(),
            with_data.describe()
        );
        let empty = Command::BlockCreate {
            name: name.clone(),
            size_mb: 1,
            data: None,
        };
        assert_eq!(Job::of(&empty), None);
        assert_eq!(Job::of(&Command::BlockDestroy(name)), None);
    }
}
