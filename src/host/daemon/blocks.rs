//! Block device requests: the store's blocking file work on a blocking thread,
//! fed by (or feeding) the request's data frames with flow control.

use crate::api::block::BlockDeviceInfo;
use crate::api::frame::{CHUNK_SIZE, CreditWindow, DEFAULT_WINDOW, ReceiveWindow};
use crate::api::label::Label;
use crate::api::protocol::{ApiError, DaemonMessage, ErrorKind, InvalidBlock, Reply};
use crate::host::block::{BlockError, Listed};
use crate::host::daemon::session::{Context, Inbound, Out, Replies};
use bytes::Bytes;
use std::io::{self, Read, Write};
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

impl From<BlockError> for ApiError {
    fn from(e: BlockError) -> ApiError {
        let kind = match &e {
            BlockError::NotFound(_) => ErrorKind::NotFound,
            BlockError::Exists { .. } | BlockError::Busy(_) => ErrorKind::Conflict,
            BlockError::TooLarge { .. }
            | BlockError::DataTooLarge { .. }
            | BlockError::ZeroSize
            | BlockError::SizeTooBig(_)
            | BlockError::NeverShrinks { .. } => ErrorKind::Invalid,
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

pub async fn create(
    ctx: &Context,
    name: Label,
    size_mb: u64,
    with_data: bool,
    out: &Replies,
    inbound: mpsc::Receiver<Inbound>,
) -> Result<Reply, ApiError> {
    check_disk(ctx, size_mb)?;
    let store = ctx.sup.block_store().clone();
    let file = if with_data {
        let data = Incoming::open(out.clone(), inbound).await;
        blocking(move || Ok(store.create_with_data(&name, size_mb, data)?)).await?
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

pub async fn upload(
    ctx: &Context,
    name: Label,
    compressed: bool,
    out: &Replies,
    inbound: mpsc::Receiver<Inbound>,
) -> Result<Reply, ApiError> {
    attached(ctx, &name)?;
    let store = ctx.sup.block_store().clone();
    let data = Incoming::open(out.clone(), inbound).await;
    let bytes = blocking(move || Ok(store.upload(&name, data, compressed)?)).await?;
    Ok(Reply::Transferred { bytes })
}

/// Streams the device out as data frames, then `end`; an error instead ends it.
pub async fn download(
    ctx: &Context,
    name: Label,
    compressed: bool,
    out: Replies,
    credit: Arc<CreditWindow>,
) {
    let store = ctx.sup.block_store().clone();
    let sink = Outgoing {
        out: out.clone(),
        credit,
        handle: Handle::current(),
        buf: Vec::with_capacity(CHUNK_SIZE),
    };
    let sent = blocking(move || Ok(store.download(&name, sink, compressed)?)).await;
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

/// A request's data frames as a blocking `Read`, granting the client credit as
/// they are consumed; a client that goes away is a read error, so the store
/// keeps what it had.
struct Incoming {
    out: Replies,
    rx: mpsc::Receiver<Inbound>,
    window: ReceiveWindow,
    chunk: Bytes,
    ended: bool,
}

impl Incoming {
    async fn open(out: Replies, rx: mpsc::Receiver<Inbound>) -> Incoming {
        let mut window = ReceiveWindow::new(DEFAULT_WINDOW);
        if let Some(bytes) = window.grant() {
            out.send(DaemonMessage::Credit { bytes }).await;
        }
        Incoming {
            out,
            rx,
            window,
            chunk: Bytes::new(),
            ended: false,
        }
    }
}

impl Read for Incoming {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Inbound::Data(chunk)) => {
                    self.window
                        .received(chunk.len() as u64)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                    self.chunk = chunk;
                }
                Some(Inbound::End) => self.ended = true,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client went away before the end of the data",
                    ));
                }
            }
        }
        let n = dst.len().min(self.chunk.len());
        dst[..n].copy_from_slice(&self.chunk.split_to(n));
        self.window.consumed(n as u64);
        if let Some(bytes) = self.window.grant() {
            // Gone clients are noticed by the next read.
            let _ = self.out.blocking_send(DaemonMessage::Credit { bytes });
        }
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
    fn send_buffered(&mut self) -> io::Result<()> {
        let mut rest = Bytes::from(std::mem::take(&mut self.buf));
        while !rest.is_empty() {
            let n = self
                .handle
                .block_on(self.credit.reserve(rest.len()))
                .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()))?;
            if !self.out.blocking_data(rest.split_to(n)) {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the client went away",
                ));
            }
        }
        self.buf = Vec::with_capacity(CHUNK_SIZE);
        Ok(())
    }
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
