//! Moving bytes as a request's data: uploads from a stream or a file (sent
//! from the page cache, or lent to a daemon on this host), and downloads
//! into a file on a blocking thread, credit granted as they are written.

use super::routes::Delivery;
use super::{Client, ClientError, Outgoing, Pending, Progress, final_reply};
use crate::api::image::ImageInfo;
use crate::api::protocol::{ClientMessage, DaemonMessage, Reply, Request, StreamItem};
use crate::wire::{CHUNK_SIZE, CreditWindow, DEFAULT_WINDOW, Pieces, Pipe, ReceiveWindow};
use bytes::BytesMut;
use std::fs::File;
use std::io::{Seek, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};

/// How often a download's writer tells the caller its progress: often enough
/// for a progress bar, seldom enough not to wake the caller for every frame.
const PROGRESS_EVERY: Duration = Duration::from_millis(50);

impl Client {
    /// Sends an image for the daemon to check and keep; returns what it found.
    pub async fn put_image(
        &self,
        data: impl AsyncRead + Unpin,
        compressed: bool,
    ) -> Result<ImageInfo, ClientError> {
        let reply = self
            .send_data(Request::PutImage { compressed }, data, |_| {})
            .await?;
        match reply {
            Reply::Image { image, .. } => Ok(image),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Sends `request` and then `data` as its data frames, as fast as the
    /// daemon's credit allows; `progress` hears the bytes sent so far (the
    /// total is not known). Returns the reply (which may come early, when the
    /// daemon refuses).
    pub async fn send_data(
        &self,
        request: Request,
        data: impl AsyncRead + Unpin,
        progress: impl FnMut(Progress),
    ) -> Result<Reply, ClientError> {
        self.send_from(request, Source::Stream(data), None, progress)
            .await
    }

    /// Sends `request` and then the rest of `file` (from its position) as its
    /// data frames, as [`Client::send_data`] does; the connection's writer
    /// sends them from the page cache where it can. `progress` hears the
    /// bytes sent and the total.
    ///
    /// A block upload to a daemon on this host lends it `file` instead, when
    /// the daemon can take it, and the daemon copies it in the kernel; then
    /// `progress` hears the daemon's progress.
    pub async fn send_file(
        &self,
        mut request: Request,
        mut file: File,
        progress: impl FnMut(Progress),
    ) -> Result<Reply, ClientError> {
        let start = file.stream_position().map_err(ClientError::Source)?;
        let meta = file.metadata().map_err(ClientError::Source)?;
        let lent = self.lend(&mut request, &file, &meta, start);
        let end = meta.len();
        let source = Source::<tokio::io::Empty>::File {
            file: Arc::new(file),
            offset: start,
            end: end.max(start),
        };
        self.send_from(request, source, lent, progress).await
    }

    /// Marks `request` as lending `file` and gives the descriptor its frame
    /// is to carry, where the daemon could use it: the daemon is on this
    /// host, the request is a plain (not zlib) block transfer, and `file` is a
    /// regular file used from its start. FULMAR_NO_LOCAL_FD=1 in the
    /// environment never lends.
    fn lend(
        &self,
        request: &mut Request,
        file: &File,
        meta: &std::fs::Metadata,
        at: u64,
    ) -> Option<OwnedFd> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        // The daemon writes by offset, which a file opened to append (stdout
        // redirected with `>>`) refuses: such a file takes the socket path.
        let appends = fcntl(file, FcntlArg::F_GETFL).map_or(true, |flags| {
            OFlag::from_bits_retain(flags).contains(OFlag::O_APPEND)
        });
        if !self.local
            || !meta.is_file()
            || at != 0
            || appends
            || std::env::var_os("FULMAR_NO_LOCAL_FD").is_some_and(|v| v == "1")
        {
            return None;
        }
        let lends = request.lends()?;
        // The same open file description, for the writer to send.
        let copy = file.try_clone().ok()?;
        *lends = true;
        Some(copy.into())
    }

    async fn send_from<R: AsyncRead + Unpin>(
        &self,
        request: Request,
        mut source: Source<R>,
        lent: Option<OwnedFd>,
        mut progress: impl FnMut(Progress),
    ) -> Result<Reply, ClientError> {
        let window = Arc::new(CreditWindow::new());
        let lends = lent.is_some();
        let (id, mut rx) = self
            .open_with(request, Some(window.clone()), None, lent)
            .await?;
        if lends {
            // The daemon copies the file itself: no data frames.
            let first = rx.recv().await;
            return self.follow_copy(id, first, rx, progress).await;
        }
        let total = source.total();
        let mut sent = 0;
        loop {
            let room = tokio::select! {
                room = window.reserve(CHUNK_SIZE) => match room {
                    Ok(room) => room,
                    // The window closes when the answer arrives: that says why.
                    Err(_) => return final_reply(&mut rx).await,
                },
                // The daemon refused early (a bad first chunk, no space).
                early = final_reply(&mut rx) => return early,
            };
            let Some((frame, n)) = source.next(id, room).await? else {
                break;
            };
            self.send(frame).await?;
            sent += n as u64;
            progress(Progress { done: sent, total });
            if n < room {
                window.grant((room - n) as u64);
            }
        }
        self.send(Outgoing::Message(id, ClientMessage::End)).await?;
        final_reply(&mut rx).await
    }

    /// Follows a copy the daemon makes itself from a lent file, from its
    /// `first` word to its reply; the request is cancelled if this is dropped
    /// before that, so the daemon stops copying.
    async fn follow_copy(
        &self,
        id: u64,
        first: Option<Delivery>,
        mut rx: mpsc::Receiver<Delivery>,
        mut progress: impl FnMut(Progress),
    ) -> Result<Reply, ClientError> {
        let mut pending = Pending {
            id,
            tx: Some(self.tx.clone()),
        };
        let mut next = first;
        let answer = loop {
            match next {
                Some(Delivery::Message(DaemonMessage::Item(StreamItem::Progress {
                    done,
                    total,
                }))) => {
                    progress(Progress {
                        done,
                        total: Some(total),
                    });
                }
                Some(Delivery::Message(DaemonMessage::Reply(reply))) => break Ok(reply),
                Some(Delivery::Message(DaemonMessage::Error(e))) => break Err(e.into()),
                Some(Delivery::Message(DaemonMessage::Credit { .. })) => {}
                Some(Delivery::Message(other)) => {
                    break Err(ClientError::Unexpected(format!("{other:?}")));
                }
                Some(Delivery::Data(_) | Delivery::Piped { .. }) => {
                    break Err(ClientError::Unexpected("data".into()));
                }
                None => break Err(ClientError::Closed),
            }
            next = rx.recv().await;
        };
        pending.tx = None;
        answer
    }

    /// Sends `request` and writes the data frames it is answered with into
    /// `out` (a file, or stdout) on a blocking thread, granting the daemon
    /// credit as they are written, so memory stays flat whatever the size.
    /// Payloads are spliced from the socket into `out` where the system
    /// allows. `progress` hears the bytes received so far (every 50 ms and at
    /// the end) and `total`, which the caller knows if anyone does (a
    /// device's size, from `block-list`).
    ///
    /// A plain download from a daemon on this host into a regular file lends
    /// the daemon `out` instead, when it can take it, and the daemon copies
    /// into it in the kernel; `progress` then hears the daemon's progress.
    pub async fn receive_file(
        &self,
        mut request: Request,
        mut out: File,
        total: Option<u64>,
        mut progress: impl FnMut(Progress),
    ) -> Result<u64, ClientError> {
        let lent = match (out.metadata(), out.stream_position()) {
            (Ok(meta), Ok(at)) => self.lend(&mut request, &out, &meta, at),
            _ => None,
        };
        let pipe = match Pipe::new(DEFAULT_WINDOW) {
            Ok(pipe) => pipe.map(Arc::new),
            // Without one the payloads come through memory, only slower.
            Err(_) => None,
        };
        let (id, rx) = self.open_with(request, None, pipe.clone(), lent).await?;
        let (done_tx, mut done) = watch::channel(0);
        let sink = Sink {
            id,
            rx,
            pipe,
            out,
            tx: self.tx.clone(),
            done: done_tx,
        };
        let writing = tokio::task::spawn_blocking(move || sink.write_all());
        while done.changed().await.is_ok() {
            let done = *done.borrow_and_update();
            progress(Progress { done, total });
        }
        writing
            .await
            .map_err(|e| ClientError::Sink(std::io::Error::other(e.to_string())))?
    }
}

/// Where an upload's bytes come from.
enum Source<R> {
    /// A file's bytes from `offset` to `end`, which the writer sends itself.
    File {
        file: Arc<File>,
        offset: u64,
        end: u64,
    },
    Stream(R),
}

impl<R: AsyncRead + Unpin> Source<R> {
    fn total(&self) -> Option<u64> {
        match self {
            Source::File { offset, end, .. } => Some(end - offset),
            Source::Stream(_) => None,
        }
    }

    /// The next data frame of stream `id`, of at most `room` bytes, and its
    /// length; None at the end.
    async fn next(
        &mut self,
        id: u64,
        room: usize,
    ) -> Result<Option<(Outgoing, usize)>, ClientError> {
        let n = match self {
            Source::File { file, offset, end } => {
                let len = room.min(usize::try_from(*end - *offset).unwrap_or(usize::MAX));
                let frame = Outgoing::File {
                    id,
                    file: file.clone(),
                    offset: *offset,
                    len,
                };
                *offset += len as u64;
                (frame, len)
            }
            Source::Stream(data) => {
                let mut buf = BytesMut::with_capacity(room);
                let n = data.read_buf(&mut buf).await.map_err(ClientError::Source)?;
                (Outgoing::Data(id, buf.freeze()), n)
            }
        };
        Ok((n.1 > 0).then_some(n))
    }
}

/// A download's consumer, on a blocking thread: writes its data frames into
/// `out` and grants the daemon credit for more as it goes.
struct Sink {
    id: u64,
    rx: mpsc::Receiver<Delivery>,
    pipe: Option<Arc<Pipe>>,
    out: File,
    tx: mpsc::Sender<Outgoing>,
    /// The bytes written so far, for the caller's progress: at most every
    /// [`PROGRESS_EVERY`], and at the end.
    done: watch::Sender<u64>,
}

impl Sink {
    fn write_all(mut self) -> Result<u64, ClientError> {
        let mut window = ReceiveWindow::new(DEFAULT_WINDOW);
        let mut received = 0;
        let mut told = Instant::now();
        loop {
            if let Some(bytes) = window.grant() {
                self.tx
                    .blocking_send(Outgoing::Message(self.id, ClientMessage::Credit { bytes }))
                    .map_err(|_| ClientError::Closed)?;
            }
            let (mut pieces, rest) = match self.rx.blocking_recv() {
                Some(Delivery::Data(chunk)) => (Pieces::default(), chunk),
                Some(Delivery::Piped { pieces, rest }) => (pieces, rest),
                Some(Delivery::Message(DaemonMessage::End)) => break,
                Some(Delivery::Message(DaemonMessage::Error(e))) => return Err(e.into()),
                // The daemon copies into `out` itself (a lent file).
                Some(Delivery::Message(DaemonMessage::Item(StreamItem::Progress {
                    done, ..
                }))) => {
                    received = done;
                    self.done.send_replace(done);
                    continue;
                }
                Some(Delivery::Message(other)) => {
                    return Err(ClientError::Unexpected(format!("{other:?}")));
                }
                None => return Err(ClientError::Closed),
            };
            let len = (pieces.len() + rest.len()) as u64;
            window
                .received(len)
                .map_err(|e| ClientError::Unexpected(e.to_string()))?;
            if !pieces.is_empty() {
                let pipe = self.pipe.as_deref().ok_or_else(|| {
                    ClientError::Unexpected("data in a pipe this download does not have".into())
                })?;
                pipe.drain_into(&mut pieces, &self.out, usize::MAX)
                    .map_err(ClientError::Sink)?;
            }
            self.out.write_all(&rest).map_err(ClientError::Sink)?;
            window.consumed(len);
            received += len;
            if told.elapsed() >= PROGRESS_EVERY {
                self.done.send_replace(received);
                told = Instant::now();
            }
        }
        self.done.send_replace(received);
        Ok(received)
    }
}
