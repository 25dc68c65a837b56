//! The client side of the protocol, for the CLI and the TUI: one connection,
//! any number of requests and streams on it at once.

use crate::api::image::ImageInfo;
use crate::api::protocol::{
    ApiError, ClientMessage, DaemonMessage, ErrorKind, Reply, Request, StreamItem,
};
use crate::wire::{
    CHUNK_SIZE, CreditWindow, DEFAULT_WINDOW, FrameError, FrameKind, FrameReader, FrameWriter,
    HANDSHAKE_TIMEOUT, HandshakeError, Hello, Peer, Pieces, Pipe, ReceiveWindow, Received,
    SOFTWARE, handshake,
};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, Write};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{mpsc, watch};

/// Messages a request's receiver may hold before the connection waits for it.
const PER_REQUEST: usize = 1024;
/// How often a download's writer tells the caller its progress: often enough
/// for a progress bar, seldom enough not to wake the caller for every frame.
const PROGRESS_EVERY: Duration = Duration::from_millis(50);
const OUTGOING: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Handshake(#[from] HandshakeError),
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The daemon's own answer: its message is for the operator as it is.
    #[error("{0}")]
    Daemon(#[from] ApiError),
    #[error("the daemon closed the connection: it stopped or restarted; try again")]
    Closed,
    #[error(
        "the daemon answered {0}, which this fulmar did not expect: run the same fulmar version on both ends"
    )]
    Unexpected(String),
    #[error("cannot read the data to send: {0}")]
    Source(std::io::Error),
    #[error("cannot write the data received: {0}")]
    Sink(std::io::Error),
}

/// How far a transfer is: the bytes sent or received so far, and how many
/// there are in all when that is known (a file's size; a device's size for a
/// download, which the caller knows from `block-list`). What a progress
/// callback hears after each data frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: Option<u64>,
}

type Outgoing = crate::wire::Outgoing<ClientMessage>;

/// What reaches a request: a message, or a chunk of the data it asked for.
enum Delivery {
    Message(DaemonMessage),
    Data(Bytes),
    /// A data frame whose first bytes wait in the request's pipe where
    /// `pieces` says, followed by those of `rest`.
    Piped {
        pieces: Pieces,
        rest: Bytes,
    },
}

/// Where a request's messages go, and the pipe its data frames' payloads are
/// spliced into, for a download that takes them that way.
struct Route {
    tx: mpsc::Sender<Delivery>,
    pipe: Option<Arc<Pipe>>,
}

/// Where each request's messages go; `None` once the connection is over, with
/// the daemon's last word (a refusal) if it had one.
#[derive(Default)]
struct RouteTable {
    open: Option<HashMap<u64, Route>>,
    last_word: Option<ApiError>,
}

type Routes = Arc<Mutex<RouteTable>>;
type Credits = Arc<Mutex<HashMap<u64, Arc<CreditWindow>>>>;

/// A connection to the daemon. Cheap to share: requests take `&self`.
pub struct Client {
    daemon: Hello,
    /// Whether the daemon is on this host, at the other end of a Unix
    /// socket, so that the client may lend it files (see [`lend`]).
    local: bool,
    tx: mpsc::Sender<Outgoing>,
    routes: Routes,
    credits: Credits,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Client {
    /// Speaks the protocol over `read`/`write`: a Unix socket, or the stdio of
    /// `ssh HOST fulmar proxy`.
    pub async fn over<R, W>(read: R, write: W) -> Result<Client, ClientError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        // Only the daemon's own socket reaches a process that can take this
        // one's files; `ssh HOST fulmar proxy`'s stdio never does.
        let local = cfg!(target_os = "linux")
            && (&read as &dyn std::any::Any)
                .downcast_ref::<tokio::net::unix::OwnedReadHalf>()
                .is_some();
        let mut reader = FrameReader::new(read);
        let mut writer = FrameWriter::new(write);
        let daemon = handshake(
            Peer::Daemon,
            &mut reader,
            &mut writer,
            &Hello::ours(SOFTWARE),
            HANDSHAKE_TIMEOUT,
        )
        .await?;
        let (tx, rx) = mpsc::channel(OUTGOING);
        let routes = Arc::new(Mutex::new(RouteTable {
            open: Some(HashMap::new()),
            last_word: None,
        }));
        let credits = Credits::default();
        // A failed write ends the connection; the reader reports it to the requests.
        tokio::spawn(async move { crate::wire::write_frames(writer, rx).await.ok() });
        tokio::spawn(read_loop(reader, routes.clone(), credits.clone()));
        Ok(Client {
            daemon,
            local,
            tx,
            routes,
            credits,
            // Id 0 is the connection's own (hello, refusals).
            next_id: AtomicU64::new(1),
        })
    }

    /// Who answered the handshake.
    pub fn daemon(&self) -> &Hello {
        &self.daemon
    }

    /// Sends `request` and waits for its reply.
    pub async fn call(&self, request: Request) -> Result<Reply, ClientError> {
        let (_, mut rx) = self.open(request).await?;
        final_reply(&mut rx).await
    }

    /// Sends a streaming request; the items come from [`Stream::next`].
    pub async fn stream(&self, request: Request) -> Result<Stream, ClientError> {
        let (id, rx) = self.open(request).await?;
        Ok(Stream {
            rx,
            pending: Pending {
                id,
                tx: Some(self.tx.clone()),
            },
        })
    }

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

    async fn open(&self, request: Request) -> Result<(u64, mpsc::Receiver<Delivery>), ClientError> {
        self.open_with(request, None, None, None).await
    }

    async fn open_with(
        &self,
        request: Request,
        window: Option<Arc<CreditWindow>>,
        pipe: Option<Arc<Pipe>>,
        lent: Option<OwnedFd>,
    ) -> Result<(u64, mpsc::Receiver<Delivery>), ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(PER_REQUEST);
        {
            let mut table = lock(&self.routes);
            let Some(open) = table.open.as_mut() else {
                return Err(table
                    .last_word
                    .clone()
                    .map_or(ClientError::Closed, ClientError::Daemon));
            };
            open.insert(id, Route { tx, pipe });
        }
        if let Some(w) = window {
            lock(&self.credits).insert(id, w);
        }
        let message = ClientMessage::Request(request);
        self.send(match lent {
            Some(file) => Outgoing::Lending { id, message, file },
            None => Outgoing::Message(id, message),
        })
        .await?;
        Ok((id, rx))
    }

    async fn send(&self, out: Outgoing) -> Result<(), ClientError> {
        self.tx.send(out).await.map_err(|_| ClientError::Closed)
    }
}

/// Waits for the reply (or error) that ends a request, skipping flow control.
async fn final_reply(rx: &mut mpsc::Receiver<Delivery>) -> Result<Reply, ClientError> {
    loop {
        match rx.recv().await {
            Some(Delivery::Message(DaemonMessage::Reply(reply))) => return Ok(reply),
            Some(Delivery::Message(DaemonMessage::Error(e))) => return Err(e.into()),
            Some(Delivery::Message(DaemonMessage::Credit { .. })) => {}
            Some(Delivery::Message(other)) => {
                return Err(ClientError::Unexpected(format!("{other:?}")));
            }
            Some(Delivery::Data(_) | Delivery::Piped { .. }) => {
                return Err(ClientError::Unexpected("data".into()));
            }
            None => return Err(ClientError::Closed),
        }
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

/// A request or stream still under way; dropped before its end (`tx` still
/// set), it cancels it.
struct Pending {
    id: u64,
    tx: Option<mpsc::Sender<Outgoing>>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            // The connection may be gone; then there is nothing to cancel.
            let _ = tx.try_send(Outgoing::Message(self.id, ClientMessage::Cancel));
        }
    }
}

/// A streaming request's items; dropping it cancels the stream.
pub struct Stream {
    rx: mpsc::Receiver<Delivery>,
    /// Done (no cancel on drop) once it ended or failed.
    pending: Pending,
}

impl Stream {
    /// The next item; `None` when the stream has ended.
    pub async fn next(&mut self) -> Option<Result<StreamItem, ClientError>> {
        self.pending.tx.as_ref()?;
        let item = match self.rx.recv().await {
            Some(Delivery::Message(DaemonMessage::Item(item))) => Ok(item),
            Some(Delivery::Message(DaemonMessage::End)) => {
                self.pending.tx = None;
                return None;
            }
            Some(Delivery::Message(DaemonMessage::Error(e))) => Err(e.into()),
            Some(Delivery::Message(other)) => Err(ClientError::Unexpected(format!("{other:?}"))),
            Some(Delivery::Data(_) | Delivery::Piped { .. }) => {
                Err(ClientError::Unexpected("data".into()))
            }
            None => Err(ClientError::Closed),
        };
        if item.is_err() {
            self.pending.tx = None;
        }
        Some(item)
    }
}

/// Sends `message` to every request still waiting, and keeps an error for
/// the requests still to come.
async fn tell_everyone(routes: &Routes, message: DaemonMessage) {
    let waiting: Vec<_> = {
        let mut table = lock(routes);
        if let DaemonMessage::Error(e) = &message {
            table.last_word = Some(e.clone());
        }
        table
            .open
            .iter_mut()
            .flat_map(|o| o.drain())
            .map(|(_, r)| r.tx)
            .collect()
    };
    for r in waiting {
        let _ = r.send(Delivery::Message(message.clone())).await;
    }
}

/// Routes each message to its request; on a connection error every request
/// learns it (its receiver closes).
async fn read_loop<R: AsyncRead + Unpin + 'static>(
    mut reader: FrameReader<R>,
    routes: Routes,
    credits: Credits,
) {
    let pipe_for = |id| lock(&routes).open.as_ref()?.get(&id)?.pipe.clone();
    while let Ok(Some(received)) = reader.next_into(pipe_for).await {
        let frame = match received {
            Received::Piped { id, pieces, rest } => {
                deliver(&routes, id, Delivery::Piped { pieces, rest }).await;
                continue;
            }
            Received::Frame(frame) => frame,
        };
        if frame.kind == FrameKind::Data {
            deliver(&routes, frame.id, Delivery::Data(frame.payload)).await;
            continue;
        }
        let message = match frame.json::<DaemonMessage>() {
            Ok(message) => message,
            Err(e) => {
                // Every waiting request learns why, rather than "closed".
                let why = ApiError::new(
                    ErrorKind::Protocol,
                    format!(
                        "cannot read the daemon's answer ({e}): run the same fulmar version on both ends"
                    ),
                );
                tell_everyone(&routes, DaemonMessage::Error(why)).await;
                break;
            }
        };
        let id = frame.id;
        if let DaemonMessage::Credit { bytes } = message {
            if let Some(w) = lock(&credits).get(&id) {
                w.grant(bytes);
            }
            continue;
        }
        if id == 0 {
            // The connection's own id: a refusal concerns every request.
            tell_everyone(&routes, message).await;
            continue;
        }
        let ends = matches!(
            message,
            DaemonMessage::Reply(_) | DaemonMessage::Error(_) | DaemonMessage::End
        );
        let route = {
            let mut table = lock(&routes);
            let open = table.open.as_mut();
            if ends {
                lock(&credits).remove(&id).inspect(|w| w.close());
                open.and_then(|o| o.remove(&id)).map(|r| r.tx)
            } else {
                open.and_then(|o| o.get(&id)).map(|r| r.tx.clone())
            }
        };
        if let Some(r) = route {
            // A request that gave up waiting has dropped its receiver.
            let _ = r.send(Delivery::Message(message)).await;
        }
    }
    for (_, w) in lock(&credits).drain() {
        w.close();
    }
    // Every request still waiting learns the connection is over.
    lock(&routes).open = None;
}

/// Hands data to the request it belongs to, if it still waits for it.
async fn deliver(routes: &Routes, id: u64, data: Delivery) {
    let route = lock(routes)
        .open
        .as_ref()
        .and_then(|o| o.get(&id))
        .map(|r| r.tx.clone());
    if let Some(r) = route {
        let _ = r.send(data).await;
    }
}
