//! `fulmar block ...`: the block device store through the daemon.

use crate::cli::remote::{RemoteError, label};
use crate::cli::show;
use crate::cli::{BlockCommand, DataCheckArgs};
use fulmar::api::label::Label;
use fulmar::api::protocol::{DataCheck, Reply, Request};
use fulmar::ui::format;
use fulmar::wire::client::{Client, Progress};
use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tempfile::NamedTempFile;

pub async fn run(client: &Client, command: &BlockCommand) -> Result<(), RemoteError> {
    match command {
        BlockCommand::List { json } => list(client, *json).await,
        BlockCommand::Create {
            name,
            size_mb,
            data,
            check,
        } => {
            let request = Request::BlockCreate {
                name: label(name)?,
                size_mb: *size_mb,
                with_data: data.is_some(),
                lend: false,
                check: data_check(check),
            };
            let reply = match data {
                Some(path) => send_file(client, request, path).await?,
                None => client.call(request).await?,
            };
            let Reply::Block { block } = reply else {
                return Err(RemoteError::Unexpected(format!("{reply:?}")));
            };
            show::print(&format!("{}: {} MB\n", block.name, block.size_mb))
        }
        BlockCommand::Upload {
            name,
            file,
            compressed,
            check,
        } => {
            let request = Request::BlockUpload {
                name: label(name)?,
                compressed: *compressed,
                lend: false,
                check: data_check(check),
            };
            match send_file(client, request, file).await? {
                Reply::Transferred { bytes } => {
                    show::print(&format!("{name}: {bytes} bytes uploaded\n"))
                }
                other => Err(RemoteError::Unexpected(format!("{other:?}"))),
            }
        }
        BlockCommand::Download {
            name,
            file,
            compressed,
        } => {
            let name = label(name)?;
            // Compressed, the bytes received are fewer than the device's.
            let total = match compressed {
                false => device_size(client, &name).await?,
                true => None,
            };
            let request = Request::BlockDownload {
                name,
                compressed: *compressed,
                lend: false,
            };
            let out = Destination::open(file)?;
            let mut bar = Bar::new();
            client
                .receive_file(request, out.file()?, total, |p| bar.show(p))
                .await?;
            bar.done();
            out.finish()
        }
        BlockCommand::Grow { name, size_mb } => {
            let reply = client
                .call(Request::BlockGrow {
                    name: label(name)?,
                    size_mb: *size_mb,
                })
                .await?;
            let Reply::Block { block } = reply else {
                return Err(RemoteError::Unexpected(format!("{reply:?}")));
            };
            show::print(&format!("{}: {} MB\n", block.name, block.size_mb))
        }
        BlockCommand::Destroy { name } => {
            client
                .call(Request::BlockDestroy { name: label(name)? })
                .await?;
            Ok(())
        }
    }
}

fn data_check(args: &DataCheckArgs) -> DataCheck {
    DataCheck {
        size: args.size,
        sha256: args.sha256.clone(),
    }
}

async fn list(client: &Client, json: bool) -> Result<(), RemoteError> {
    let reply = client.call(Request::BlockList).await?;
    let Reply::Blocks { blocks, invalid } = reply else {
        return Err(RemoteError::Unexpected(format!("{reply:?}")));
    };
    for i in &invalid {
        eprintln!(
            "fulmar: {} is not a block device ({}); left alone",
            i.file, i.why
        );
    }
    if json {
        return show::print_json(&blocks);
    }
    let rows: Vec<Vec<String>> = blocks
        .iter()
        .map(|b| {
            vec![
                b.name.to_string(),
                b.size_mb.to_string(),
                b.attached_to.as_ref().map_or("-".into(), |a| a.to_string()),
            ]
        })
        .collect();
    show::print(&show::table(&["NAME", "SIZE_MB", "ATTACHED_TO"], &rows))
}

/// The size in bytes of block device `name`, for a download's progress; None
/// if it is not listed (the download itself then says what is wrong).
async fn device_size(client: &Client, name: &Label) -> Result<Option<u64>, RemoteError> {
    let reply = client.call(Request::BlockList).await?;
    let Reply::Blocks { blocks, .. } = reply else {
        return Err(RemoteError::Unexpected(format!("{reply:?}")));
    };
    Ok(blocks
        .iter()
        .find(|b| &b.name == name)
        .map(|b| b.size_mb << 20))
}

/// `path` opened with `open`, or for `-` the standard stream `std`.
fn open_or_std(
    path: &Path,
    std: BorrowedFd,
    open: impl FnOnce(&Path) -> std::io::Result<File>,
) -> Result<File, RemoteError> {
    let file = if path.as_os_str() == "-" {
        std.try_clone_to_owned().map(File::from)
    } else {
        open(path)
    };
    file.map_err(|source| RemoteError::File {
        path: path.to_owned(),
        source,
    })
}

/// Where a download goes. A regular file (or a new one) gets the device
/// through a temporary file beside it that takes its place only once the
/// whole device arrived, so a refused or failed download leaves it as it was.
/// Stdout for `-`, and files that are not regular (a FIFO, /dev/null), are
/// written as the data comes.
enum Destination {
    Direct(File),
    Beside { temp: NamedTempFile, path: PathBuf },
}

impl Destination {
    fn open(path: &Path) -> Result<Destination, RemoteError> {
        let file_err = |source| RemoteError::File {
            path: path.to_owned(),
            source,
        };
        if path.as_os_str() == "-" {
            let stdout = std::io::stdout().as_fd().try_clone_to_owned();
            return stdout.map(|fd| Self::Direct(fd.into())).map_err(file_err);
        }
        // The replacement keeps the mode of the file it replaces; a new one
        // gets what `File::create` would give it.
        let mode = match fs::metadata(path) {
            Ok(meta) if !meta.is_file() => {
                let file = OpenOptions::new().write(true).open(path);
                return file.map(Self::Direct).map_err(file_err);
            }
            Ok(meta) => meta.permissions().mode() & 0o777,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0o666,
            Err(e) => return Err(file_err(e)),
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp"))
            .permissions(fs::Permissions::from_mode(mode))
            .tempfile_in(dir)
            .map_err(file_err)?;
        Ok(Self::Beside {
            temp,
            path: path.to_owned(),
        })
    }

    /// The file the data is written into.
    fn file(&self) -> Result<File, RemoteError> {
        let (file, path) = match self {
            Self::Direct(file) => (file.try_clone(), None),
            Self::Beside { temp, path } => (temp.as_file().try_clone(), Some(path)),
        };
        file.map_err(|source| RemoteError::File {
            path: path.cloned().unwrap_or_else(|| "-".into()),
            source,
        })
    }

    /// Puts a complete download in place.
    fn finish(self) -> Result<(), RemoteError> {
        let Self::Beside { temp, path } = self else {
            return Ok(());
        };
        temp.persist(&path).map_err(|e| RemoteError::File {
            path,
            source: e.error,
        })?;
        Ok(())
    }
}

/// Sends a file (or stdin for `-`) as the request's data, with a progress bar.
/// A regular file (stdin too, when redirected from one) goes from the page
/// cache; a pipe through memory.
async fn send_file(client: &Client, request: Request, path: &Path) -> Result<Reply, RemoteError> {
    let file = open_or_std(path, std::io::stdin().as_fd(), |p| File::open(p))?;
    let file_err = |source| RemoteError::File {
        path: path.to_owned(),
        source,
    };
    let mut bar = Bar::new();
    let reply = if file.metadata().map_err(file_err)?.is_file() {
        client.send_file(request, file, |p| bar.show(p)).await?
    } else {
        let data = tokio::fs::File::from_std(file);
        client.send_data(request, data, |p| bar.show(p)).await?
    };
    bar.done();
    Ok(reply)
}

/// A progress line on stderr with bytes, rate and time left, when stderr is
/// a terminal; nothing otherwise (scripts, pipes).
struct Bar {
    start: Instant,
    shown: Option<Instant>,
    last: Option<Progress>,
    on_terminal: bool,
}

impl Bar {
    /// How often the line is redrawn at most.
    const EVERY: Duration = Duration::from_millis(100);

    fn new() -> Bar {
        Bar {
            start: Instant::now(),
            shown: None,
            last: None,
            on_terminal: std::io::stderr().is_terminal(),
        }
    }

    fn show(&mut self, progress: Progress) {
        self.last = Some(progress);
        if self.shown.is_none_or(|t| t.elapsed() >= Self::EVERY) {
            self.draw();
        }
    }

    /// Draws the last progress, so the line left on the terminal is the end.
    fn done(&mut self) {
        if self.shown.is_some() {
            self.draw();
            eprintln!();
        }
    }

    fn draw(&mut self) {
        let Some(Progress { done, total }) = self.last else {
            return;
        };
        if !self.on_terminal {
            return;
        }
        self.shown = Some(Instant::now());
        let elapsed_ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Back to the line's start, and clear what a longer line left.
        let line = format!("\r{}\x1b[K", format::transfer(done, total, elapsed_ms));
        let mut err = std::io::stderr();
        // A progress line that cannot be shown is no reason to stop a transfer.
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
    }
}
