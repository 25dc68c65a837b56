//! What the daemon does for each request, and what it answers. The transport
//! (frames, the connection's writer) is the caller's; a handler only sees its
//! own request's outgoing messages and, for uploads, its incoming data.

use crate::api::console::ConsoleEvent;
use crate::api::label::Label;
use crate::api::protocol::{
    ApiError, DaemonMessage, ErrorKind, NamedStats, Reply, Request, StreamItem,
};
use crate::host::daemon::{Persist, blocks};
use crate::host::image::{self, Compression};
use crate::host::supervisor::{Supervisor, SupervisorError};
use crate::wire::{DEFAULT_WINDOW, Pieces, Pipe, ReceiveWindow};
use bytes::Bytes;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, mpsc};

/// One frame to send, for the connection's writer.
pub type Out = crate::wire::Outgoing<DaemonMessage>;

/// What a client sends on a request's id after the request itself.
#[derive(Debug)]
pub enum Inbound {
    Data(Bytes),
    /// A data frame whose first bytes wait in the request's pipe where
    /// `pieces` says, followed by those of `rest`.
    Piped {
        pieces: Pieces,
        rest: Bytes,
    },
    End,
}

/// A request's incoming data: its frames in order, and the pipe that the
/// connection splices their payloads into, when the request has one. `rx`
/// closes when the client cancels the request or goes away.
pub struct Inflow {
    pub rx: mpsc::Receiver<Inbound>,
    pub pipe: Option<Arc<Pipe>>,
    /// The client's own file for a block transfer, which came with the
    /// request's frame (see `lend` in the protocol); then no data frames come.
    pub local: Option<File>,
}

/// A request's way back to its client.
#[derive(Clone)]
pub struct Replies {
    id: u64,
    tx: mpsc::Sender<Out>,
}

impl Replies {
    pub fn new(id: u64, tx: mpsc::Sender<Out>) -> Replies {
        Replies { id, tx }
    }

    pub(super) fn id(&self) -> u64 {
        self.id
    }

    pub(super) fn tx(&self) -> &mpsc::Sender<Out> {
        &self.tx
    }

    /// False once the connection is gone.
    pub(super) async fn send(&self, message: DaemonMessage) -> bool {
        self.tx.send(Out::Message(self.id, message)).await.is_ok()
    }

    async fn item(&self, item: StreamItem) -> bool {
        self.send(DaemonMessage::Item(item)).await
    }
}

pub struct Context {
    pub sup: Supervisor,
    /// Where uploads land before they are checked and stored.
    pub uploads: PathBuf,
    /// Saved before a change is acknowledged, so a daemon killed right after
    /// never forgets a unikernel it said it runs.
    pub persist: Arc<Persist>,
    /// The largest image taken, in bytes uncompressed.
    pub max_image: u64,
    /// One permit for each image that may be received at once.
    pub image_uploads: Arc<tokio::sync::Semaphore>,
}

/// Serves one request to its end: one reply or error, or a stream then `End`.
pub async fn handle(ctx: &Context, request: Request, out: Replies, inbound: Inflow) {
    let answer = match request {
        Request::Console {
            name,
            since,
            follow,
        } => return console(ctx, &name, since, follow, out).await,
        Request::PutImage { compressed } => put_image(ctx, compressed, &out, inbound.rx).await,
        Request::BlockCreate {
            name,
            size_mb,
            with_data,
            check,
            ..
        } => blocks::create(ctx, name, size_mb, with_data, check, &out, inbound).await,
        Request::BlockUpload {
            name,
            compressed,
            check,
            ..
        } => {
            return blocks::upload(ctx, name, compressed, check, out, inbound).await;
        }
        other => {
            let changes = matches!(
                other,
                Request::Create { .. }
                    | Request::Reconfigure { .. }
                    | Request::Destroy { .. }
                    | Request::Restart { .. }
                    | Request::Remove { .. }
            );
            let answer = answer(ctx, other).await;
            match answer {
                Ok(reply) if changes => match ctx.persist.save(&ctx.sup).await {
                    Ok(()) => Ok(after_saving(ctx, reply).await),
                    Err(e) => Err(unsaved(&e)),
                },
                answer => answer,
            }
        }
    };
    out.send(match answer {
        Ok(reply) => DaemonMessage::Reply(reply),
        Err(e) => DaemonMessage::Error(e),
    })
    .await;
}

/// What may only happen once the state no longer names what it undoes: a
/// removed unikernel's image is deleted only then, so a crash or a failed
/// save never leaves a listed unikernel without its image.
async fn after_saving(ctx: &Context, reply: Reply) -> Reply {
    match reply {
        Reply::Removed { name, kept_for, .. } => Reply::Removed {
            name,
            kept_for,
            freed_bytes: ctx.sup.collect_images().await,
        },
        reply => reply,
    }
}

async fn answer(ctx: &Context, request: Request) -> Result<Reply, ApiError> {
    let sup = &ctx.sup;
    let unikernel = |info| Reply::Unikernel {
        unikernel: Box::new(info),
    };
    Ok(match request {
        Request::List => Reply::Unikernels {
            unikernels: sup.list(),
        },
        Request::Info { name } => unikernel(sup.info(&name)?),
        Request::Create { config, image } => {
            let stored = ctx
                .sup
                .stored_image(&image)
                .await
                .map_err(|e| ApiError::new(ErrorKind::NotFound, e.to_string()))?;
            unikernel(sup.create(config, stored).await?)
        }
        Request::Reconfigure { config } => unikernel(sup.reconfigure(config).await?),
        Request::Destroy { name } => unikernel(sup.destroy(&name).await?),
        Request::Restart { name } => unikernel(sup.restart(&name).await?),
        Request::Remove { name } => Reply::Removed {
            kept_for: sup.remove(&name)?,
            name,
            freed_bytes: 0,
        },
        Request::Policy => Reply::Policy {
            policy: sup.policy()?,
        },
        Request::Stats { name: Some(name) } => Reply::Stats {
            stats: vec![NamedStats {
                stats: sup.stats(&name)?,
                name,
            }],
        },
        Request::Stats { name: None } => Reply::Stats {
            stats: sup
                .all_stats()
                .into_iter()
                .map(|(name, stats)| NamedStats { name, stats })
                .collect(),
        },
        Request::BlockList => blocks::list(ctx).await?,
        Request::BlockDestroy { name } => blocks::destroy(ctx, name).await?,
        Request::BlockGrow { name, size_mb } => blocks::grow(ctx, name, size_mb).await?,
        Request::Console { .. }
        | Request::Events
        | Request::PutImage { .. }
        | Request::BlockCreate { .. }
        | Request::BlockUpload { .. }
        | Request::BlockDownload { .. } => {
            return Err(ApiError::new(
                ErrorKind::Protocol,
                "a streaming request reached the wrong handler",
            ));
        }
    })
}

/// The answer to a change the daemon made but could not save: it holds now,
/// but a daemon restart would bring back what the state file still says.
fn unsaved(failure: &str) -> ApiError {
    ApiError::new(
        ErrorKind::Host,
        format!(
            "done, but not recorded: {failure}; the daemon carries it out now, but after a restart it would go back to the last saved state: free space in the data directory or make it writable, then repeat the request"
        ),
    )
}

impl From<SupervisorError> for ApiError {
    fn from(e: SupervisorError) -> ApiError {
        let kind = match &e {
            SupervisorError::Invalid(_) => ErrorKind::Invalid,
            SupervisorError::NotFound(_) => ErrorKind::NotFound,
            SupervisorError::Running(_) | SupervisorError::NotRunning(_) => ErrorKind::Conflict,
            _ => ErrorKind::Host,
        };
        let mut api = ApiError::new(kind, e.to_string());
        if let SupervisorError::Invalid(problems) = e {
            api.problems = problems;
        }
        api
    }
}

/// History, then live lines while `follow`, until the client cancels (the
/// connection drops this task) or the unikernel is removed.
async fn console(
    ctx: &Context,
    name: &Label,
    since: crate::api::console::Since,
    follow: bool,
    out: Replies,
) {
    let console = match ctx.sup.console(name) {
        Ok(c) => c,
        Err(e) => {
            out.send(DaemonMessage::Error(e.into())).await;
            return;
        }
    };
    let (history, mut live) = console.subscribe(since);
    drop(console);
    for line in history {
        if !out
            .item(StreamItem::Console {
                event: ConsoleEvent::Line(line),
            })
            .await
        {
            return;
        }
    }
    if follow {
        while let Some(event) = live.recv().await {
            if !out.item(StreamItem::Console { event }).await {
                return;
            }
        }
    }
    out.send(DaemonMessage::End).await;
}

/// Every event from `events` on, until the client cancels.
pub async fn events(mut events: broadcast::Receiver<crate::api::event::Event>, out: Replies) {
    loop {
        match events.recv().await {
            Ok(event) => {
                if !out.item(StreamItem::Event { event }).await {
                    return;
                }
            }
            // A client that falls this far behind resynchronises from `list`.
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    out.send(DaemonMessage::End).await;
}

/// Receives an image into a private temporary file, then checks it and stores
/// it by digest.
async fn put_image(
    ctx: &Context,
    compressed: bool,
    out: &Replies,
    mut inbound: mpsc::Receiver<Inbound>,
) -> Result<Reply, ApiError> {
    let host = |what: &str, e: std::io::Error| {
        ApiError::new(ErrorKind::Host, format!("cannot {what} the upload: {e}"))
    };
    let _receiving = ctx.image_uploads.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            ErrorKind::Conflict,
            "the daemon is receiving as many images as it takes at once (--image-uploads): \
             retry when one is stored",
        )
    })?;
    let most = upload_limit(ctx.max_image);
    let mut received = 0u64;
    crate::host::paths::private_dir(&ctx.uploads).map_err(|e| host("store", e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".upload-")
        .tempfile_in(&ctx.uploads)
        .map_err(|e| host("store", e))?;
    // Written through tokio's file, whose writes run on the blocking pool: a
    // slow disk must not hold up the worker thread other clients are served on.
    let clone = tmp.as_file().try_clone().map_err(|e| host("store", e))?;
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(clone));
    let mut window = ReceiveWindow::new(DEFAULT_WINDOW);
    loop {
        if let Some(bytes) = window.grant() {
            out.send(DaemonMessage::Credit { bytes }).await;
        }
        match inbound.recv().await {
            Some(Inbound::Data(chunk)) => {
                let len = chunk.len() as u64;
                window
                    .received(len)
                    .map_err(|e| ApiError::new(ErrorKind::Protocol, e.to_string()))?;
                received += len;
                if received > most {
                    return Err(too_large(ctx.max_image));
                }
                file.write_all(&chunk).await.map_err(|e| host("write", e))?;
                window.consumed(len);
            }
            Some(Inbound::End) => break,
            // Only block uploads are given a pipe.
            Some(Inbound::Piped { .. }) => {
                return Err(ApiError::new(
                    ErrorKind::Host,
                    "an image upload was handed a pipe it does not have",
                ));
            }
            None => {
                return Err(ApiError::new(
                    ErrorKind::Protocol,
                    "the upload ended without its end marker",
                ));
            }
        }
    }
    file.flush().await.map_err(|e| host("write", e))?;
    drop(file);
    let compression = if compressed {
        Compression::Zlib
    } else {
        Compression::Detect
    };
    let path = tmp.path().to_owned();
    let max_image = ctx.max_image;
    let image =
        tokio::task::spawn_blocking(move || image::load_limited(&path, compression, max_image))
            .await
            .map_err(|e| ApiError::new(ErrorKind::Host, format!("checking the image failed: {e}")))?
            .map_err(|e| ApiError::new(ErrorKind::Invalid, e.to_string()))?;
    let info = ctx.sup.store(image).await?;
    let tender = ctx.sup.tender_report(info.target, info.abi_version).await;
    Ok(Reply::Image {
        image: info,
        tender,
    })
}

/// The most bytes an upload of an image of at most `max_image` bytes may
/// send: zlib's worst case (stored blocks, 5 bytes per 65,535, and its
/// header and check) stays under this.
fn upload_limit(max_image: u64) -> u64 {
    max_image.saturating_add(max_image / 8192 + 64)
}

fn too_large(max_image: u64) -> ApiError {
    ApiError::new(
        ErrorKind::Invalid,
        format!(
            "the upload is larger than any image of at most {max_image} bytes the daemon \
             takes (--max-image-mb): give a Solo5 unikernel image"
        ),
    )
}
