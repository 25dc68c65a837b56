//! Block device requests: the store's blocking file work on a blocking thread,
//! fed by (or feeding) the request's data frames with flow control.

use crate::api::block::BlockDeviceInfo;
use crate::api::label::Label;
use crate::api::protocol::{
    ApiError, DaemonMessage, DataCheck, ErrorKind, InvalidBlock, Reply, StreamItem,
};
use crate::host::block::{
    BlockError, Check, Download, Listed, LocalFile, MoveError, Source, Uploaded,
};
use crate::host::daemon::session::{Context, Inbound, Inflow, Out, Replies};
use crate::wire::{CHUNK_SIZE, CreditWindow, DEFAULT_WINDOW, Pieces, Pipe, ReceiveWindow};
use bytes::{Buf, Bytes};
use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

/// How often a copy of a lent file tells the client its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(50);

impl From<BlockError> for ApiError {
    fn from(e: BlockError) -> ApiError {
        let kind = match &e {
            BlockError::NotFound(_) => ErrorKind::NotFound,
            BlockError::Exists { .. } | BlockError::Busy(_) => ErrorKind::Conflict,
            BlockError::TooLarge { .. }
            | BlockError::DataTooLarge { .. }
            | BlockError::StreamTooLarge { .. }
            | BlockError::StreamDataTooLarge { .. }
            | BlockError::ZeroSize
            | BlockError::SizeTooBig(_)
            | BlockError::NeverShrinks { .. }
            | BlockError::Shorter { .. }
            | BlockError::Longer { .. }
            | BlockError::Digest { .. } => ErrorKind::Invalid,
            _ => ErrorKind::Host,
        };
        ApiError::new(kind, e.to_string())
    }
}

fn attached(ctx: &Context, name: &Label) -> Result<(), ApiError> {
    match ctx.sup.block_holder(name) {
        Some(holder) => Err(ApiError::new(
            ErrorKind::Conflict,
            format!("block device {name} is attached to {holder}: destroy {holder} first"),
        )),
        None => Ok(()),
    }
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::new(ErrorKind::Host, format!("the transfer failed: {e}")))?
}

pub async fn list(ctx: &Context) -> Result<Reply, ApiError> {
    let store = ctx.sup.block_store().clone();
    let listed = blocking(move || Ok(store.list()?)).await?;
    let mut blocks = Vec::new();
    let mut invalid = Vec::new();
    for entry in listed {
        match entry {
            Listed::Device { name, size_mb } => blocks.push(BlockDeviceInfo {
                attached_to: ctx.sup.block_holder(&name),
                name,
                size_mb,
            }),
            Listed::Invalid { file_name, why } => invalid.push(InvalidBlock {
                file: file_name,
                why,
            }),
        }
    }
    Ok(Reply::Blocks { blocks, invalid })
}

/// Refuses a new device that would take the store past the host's disk.
fn check_disk(ctx: &Context, size_mb: u64) -> Result<(), ApiError> {
    let policy = ctx.sup.policy()?;
    let free = policy.policy.disk_mb.saturating_sub(policy.used.disk_mb);
    if size_mb > free {
        return Err(ApiError::new(
            ErrorKind::Invalid,
            format!(
                "{size_mb} MB asked but only {free} MB of {} MB of disk are free: ask for less or destroy a block device",
                policy.policy.disk_mb
            ),
        ));
    }
    Ok(())
}

/// The store's form of what a client says its data must be.
fn store_check(check: &DataCheck) -> Result<Check, ApiError> {
    let sha256 = match &check.sha256 {
        None => None,
        Some(text) => {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(text, &mut digest).map_err(|_| {
                ApiError::new(
                    ErrorKind::Invalid,
                    format!("{text:?} is not a SHA-256: give the 64 hex digits `sha256sum` prints"),
                )
            })?;
            Some(digest)
        }
    };
    Ok(Check {
        size: check.size,
        sha256,
    })
}

pub async fn create(
    ctx: &Context,
    name: Label,
    size_mb: u64,
    with_data: bool,
    check: DataCheck,
    out: &Replies,
    mut inbound: Inflow,
) -> Result<Reply, ApiError> {
    check_disk(ctx, size_mb)?;
    let check = store_check(&check)?;
    let store = ctx.sup.block_store().clone();
    let file = if let Some(lent) = inbound.local.take() {
        let data = Lent::source(lent, out.clone(), inbound.rx).await?;
        blocking(move || Ok(store.create_with_data(&name, size_mb, data, &check)?)).await?
    } else if with_data {
        let data = Incoming::open(out.clone(), inbound).await;
        blocking(move || Ok(store.create_with_data(&name, size_mb, data, &check)?)).await?
    } else {
        blocking(move || Ok(store.create(&name, size_mb)?)).await?
    };
    Ok(Reply::Block {
        block: BlockDeviceInfo {
            name: file.name,
            size_mb: file.size_mb,
            attached_to: None,
        },
    })
}

/// Answers `transferred` once the new contents are in place, and frees the
/// old ones only after that.
pub async fn upload(
    ctx: &Context,
    name: Label,
    compressed: bool,
    check: DataCheck,
    out: Replies,
    inbound: Inflow,
) {
    let uploaded = receive_upload(ctx, name, compressed, &check, &out, inbound).await;
    match uploaded {
        Ok(uploaded) => {
            let bytes = uploaded.bytes;
            out.send(DaemonMessage::Reply(Reply::Transferred { bytes }))
                .await;
            // Freeing a large file blocks for a while: not on the async threads.
            let _ = tokio::task::spawn_blocking(move || drop(uploaded)).await;
        }
        Err(e) => {
            out.send(DaemonMessage::Error(e)).await;
        }
    }
}

async fn receive_upload(
    ctx: &Context,
    name: Label,
    compressed: bool,
    check: &DataCheck,
    out: &Replies,
    mut inbound: Inflow,
) -> Result<Uploaded, ApiError> {
    attached(ctx, &name)?;
    let check = store_check(check)?;
    let store = ctx.sup.block_store().clone();
    if let Some(lent) = inbound.local.take() {
        let data = Lent::source(lent, out.clone(), inbound.rx).await?;
        return blocking(move || Ok(store.upload(&name, data, false, &check)?)).await;
    }
    let data = Incoming::open(out.clone(), inbound).await;
    blocking(move || Ok(store.upload(&name, data, compressed, &check)?)).await
}

/// Streams the device out as data frames, then `end`; an error instead ends it.
pub async fn download(
    ctx: &Context,
    name: Label,
    compressed: bool,
    out: Replies,
    credit: Arc<CreditWindow>,
    mut inbound: Inflow,
) {
    let store = ctx.sup.block_store().clone();
    if let Some(lent) = inbound.local.take() {
        let tracker = Lent::new(out.clone(), inbound.rx);
        let copied = blocking(move || {
            tracker.check(&lent, Direction::Write)?;
            let device = store.open_download(&name)?;
            let each = tracker.progress(device.size());
            Ok(device.copy_into(&lent, each)?)
        })
        .await;
        out.send(match copied {
            Ok(_) => DaemonMessage::End,
            Err(e) => DaemonMessage::Error(e),
        })
        .await;
        return;
    }
    let sink = Outgoing {
        out: out.clone(),
        credit,
        handle: Handle::current(),
        buf: Vec::new(),
    };
    let sent = blocking(move || {
        let device = store.open_download(&name)?;
        if compressed {
            device.compress_into(sink)?;
        } else {
            sink.send_file(&device)
                .map_err(|source| BlockError::Send { name, source })?;
        }
        Ok(())
    })
    .await;
    out.send(match sent {
        Ok(_) => DaemonMessage::End,
        Err(e) => DaemonMessage::Error(e),
    })
    .await;
}

pub async fn grow(ctx: &Context, name: Label, size_mb: u64) -> Result<Reply, ApiError> {
    attached(ctx, &name)?;
    let current = ctx.sup.block_store().get(&name)?.size_mb;
    check_disk(ctx, size_mb.saturating_sub(current))?;
    let store = ctx.sup.block_store().clone();
    let file = blocking(move || Ok(store.grow(&name, size_mb)?)).await?;
    Ok(Reply::Block {
        block: BlockDeviceInfo {
            name: file.name,
            size_mb: file.size_mb,
            attached_to: None,
        },
    })
}

pub async fn destroy(ctx: &Context, name: Label) -> Result<Reply, ApiError> {
    attached(ctx, &name)?;
    let store = ctx.sup.block_store().clone();
    blocking(move || Ok(store.destroy(&name)?)).await?;
    Ok(Reply::Done)
}

/// Which way a lent file is used.
#[derive(Clone, Copy)]
enum Direction {
    Read,
    Write,
}

/// A block transfer through a file the client lent (sent with its request's
/// frame, so the daemon holds only what the client itself opened): no data frames, but the
/// daemon tells the client its progress, and stops once the client cancels
/// or goes away (its request's inbound channel closes).
struct Lent {
    out: Replies,
    rx: mpsc::Receiver<Inbound>,
}

impl Lent {
    fn new(out: Replies, rx: mpsc::Receiver<Inbound>) -> Lent {
        Lent { out, rx }
    }

    /// An upload's source in `file`, checked; the client hears the first
    /// progress, which tells it to send no data frames.
    async fn source(
        file: File,
        out: Replies,
        rx: mpsc::Receiver<Inbound>,
    ) -> Result<LocalFile<impl FnMut(u64) -> io::Result<()>>, ApiError> {
        let lent = Lent::new(out.clone(), rx);
        let total = lent.check(&file, Direction::Read)?;
        out.send(DaemonMessage::Item(StreamItem::Progress { done: 0, total }))
            .await;
        LocalFile::new(file, lent.progress(total)).map_err(lent_err)
    }

    /// Refuses a file the daemon cannot use this way: not a regular file, or
    /// not open for `direction`. Since the daemon holds the client's own open
    /// file, a wrong access mode is the client's to fix; it is never reopened.
    /// Says the file's size.
    fn check(&self, file: &File, direction: Direction) -> Result<u64, ApiError> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let meta = file.metadata().map_err(lent_err)?;
        if !meta.is_file() {
            return Err(ApiError::new(
                ErrorKind::Invalid,
                "the file lent for this transfer is not a regular file: send its data as frames instead",
            ));
        }
        let flags = fcntl(file, FcntlArg::F_GETFL).map_err(|e| lent_err(e.into()))?;
        let flags = OFlag::from_bits_retain(flags);
        let mode = flags & OFlag::O_ACCMODE;
        let (ok, what) = match direction {
            Direction::Read => (mode != OFlag::O_WRONLY, "reading"),
            Direction::Write => (
                mode != OFlag::O_RDONLY && !flags.contains(OFlag::O_APPEND),
                "writing (and not for appending)",
            ),
        };
        if !ok {
            return Err(ApiError::new(
                ErrorKind::Invalid,
                format!(
                    "the file lent for this transfer is not open for {what}: open it for {what} and try again"
                ),
            ));
        }
        Ok(meta.len())
    }

    /// What hears each piece of a copy of `total` bytes: a progress item to
    /// the client every [`PROGRESS_EVERY`] and at the end, and an error once
    /// the client cancelled or went away, which stops the copy.
    fn progress(mut self, total: u64) -> impl FnMut(u64) -> io::Result<()> {
        let mut told = Instant::now();
        move |done| {
            if let Err(TryRecvError::Disconnected) = self.rx.try_recv() {
                return Err(gone());
            }
            if done >= total || told.elapsed() >= PROGRESS_EVERY {
                told = Instant::now();
                self.out
                    .blocking_send(DaemonMessage::Item(StreamItem::Progress { done, total }));
            }
            Ok(())
        }
    }
}

fn lent_err(e: io::Error) -> ApiError {
    ApiError::new(
        ErrorKind::Host,
        format!("cannot use the file lent for this transfer: {e}"),
    )
}

/// A request's data frames as the store's [`Source`], granting the client
/// credit as they are consumed; a client that goes away is a read error, so
/// the store keeps what it had. Payloads that came through the request's pipe
/// are spliced from it into the store's file.
struct Incoming {
    out: Replies,
    rx: mpsc::Receiver<Inbound>,
    pipe: Option<Arc<Pipe>>,
    window: ReceiveWindow,
    /// Where the current frame's bytes still in the pipe are; they come
    /// before `chunk`.
    pieces: Pieces,
    chunk: Bytes,
    ended: bool,
}

impl Incoming {
    async fn open(out: Replies, inflow: Inflow) -> Incoming {
        let mut window = ReceiveWindow::new(DEFAULT_WINDOW);
        if let Some(bytes) = window.grant() {
            out.send(DaemonMessage::Credit { bytes }).await;
        }
        Incoming {
            out,
            rx: inflow.rx,
            pipe: inflow.pipe,
            window,
            pieces: Pieces::default(),
            chunk: Bytes::new(),
            ended: false,
        }
    }

    /// Waits until some of the data is at hand; false at its end.
    fn wait(&mut self) -> io::Result<bool> {
        while self.pieces.is_empty() && self.chunk.is_empty() {
            if self.ended {
                return Ok(false);
            }
            let (pieces, chunk) = match self.rx.blocking_recv() {
                Some(Inbound::Data(chunk)) => (Pieces::default(), chunk),
                Some(Inbound::Piped { pieces, rest }) => (pieces, rest),
                Some(Inbound::End) => {
                    self.ended = true;
                    continue;
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client went away before the end of the data",
                    ));
                }
            };
            self.window
                .received((pieces.len() + chunk.len()) as u64)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            (self.pieces, self.chunk) = (pieces, chunk);
        }
        Ok(true)
    }

    /// The store is done with `n` bytes: grants more credit when due.
    fn consumed(&mut self, n: usize) {
        self.window.consumed(n as u64);
        if let Some(bytes) = self.window.grant() {
            // Gone clients are noticed by the next wait.
            let _ = self.out.blocking_send(DaemonMessage::Credit { bytes });
        }
    }
}

impl Read for Incoming {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        if !self.wait()? {
            return Ok(0);
        }
        let n = if !self.pieces.is_empty() {
            let pipe = self.pipe.as_deref().ok_or_else(no_pipe)?;
            pipe.read(&mut self.pieces, dst)?
        } else {
            let n = dst.len().min(self.chunk.len());
            dst[..n].copy_from_slice(&self.chunk.split_to(n));
            n
        };
        self.consumed(n);
        Ok(n)
    }
}

impl Source for Incoming {
    fn move_into(&mut self, file: &File, max: usize, _: &mut [u8]) -> Result<usize, MoveError> {
        if !self.wait().map_err(MoveError::Read)? {
            return Ok(0);
        }
        let n = if !self.pieces.is_empty() {
            let pipe = self.pipe.as_deref().ok_or_else(no_pipe);
            pipe.map_err(MoveError::Read)?
                .drain_into(&mut self.pieces, file, max)
                .map_err(MoveError::Write)?
        } else {
            let n = max.min(self.chunk.len());
            let mut file = file;
            file.write_all(&self.chunk[..n]).map_err(MoveError::Write)?;
            self.chunk.advance(n);
            n
        };
        self.consumed(n);
        Ok(n)
    }
}

/// The request's outgoing data frames as a blocking `Write`, each sent only
/// with the client's credit.
struct Outgoing {
    out: Replies,
    credit: Arc<CreditWindow>,
    handle: Handle,
    buf: Vec<u8>,
}

impl Outgoing {
    /// Sends the whole device as data frames that the connection's writer
    /// fills from the device's file, each only with the client's credit.
    fn send_file(&self, device: &Download) -> io::Result<()> {
        let mut offset = 0;
        while offset < device.size() {
            let left = usize::try_from(device.size() - offset).unwrap_or(usize::MAX);
            let len = self.reserve(left.min(CHUNK_SIZE))?;
            // The writer is async: spare it the wait for the disk.
            device.read_ahead(offset, len);
            let file = Out::File {
                id: self.out.id(),
                file: device.file().clone(),
                offset,
                len,
            };
            if self.out.tx().blocking_send(file).is_err() {
                return Err(gone());
            }
            offset += len as u64;
        }
        Ok(())
    }

    /// Takes up to `max` bytes of the client's credit, waiting for some.
    fn reserve(&self, max: usize) -> io::Result<usize> {
        self.handle
            .block_on(self.credit.reserve(max))
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()))
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        let mut rest = Bytes::from(std::mem::take(&mut self.buf));
        while !rest.is_empty() {
            let n = self.reserve(rest.len())?;
            if !self.out.blocking_data(rest.split_to(n)) {
                return Err(gone());
            }
        }
        self.buf = Vec::with_capacity(CHUNK_SIZE);
        Ok(())
    }
}

fn no_pipe() -> io::Error {
    io::Error::other("data arrived in a pipe this upload does not have")
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the client went away")
}

impl Write for Outgoing {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK_SIZE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK_SIZE {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send_buffered()
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        // What the store wrote last; a failure here was already an error there.
        let _ = self.flush();
    }
}

/// Sends on behalf of a blocking thread.
impl Replies {
    fn blocking_send(&self, message: DaemonMessage) -> bool {
        self.tx()
            .blocking_send(Out::Message(self.id(), message))
            .is_ok()
    }

    fn blocking_data(&self, data: Bytes) -> bool {
        self.tx().blocking_send(Out::Data(self.id(), data)).is_ok()
    }
}
