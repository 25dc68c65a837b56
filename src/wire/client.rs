//! The client side of the protocol, for the CLI and the TUI: one connection,
//! any number of requests and streams on it at once.

mod routes;
mod transfer;

use crate::api::protocol::{ApiError, ClientMessage, DaemonMessage, Reply, Request, StreamItem};
use crate::wire::{
    CreditWindow, FrameError, FrameReader, FrameWriter, HANDSHAKE_TIMEOUT, HandshakeError, Hello,
    Peer, Pipe, SOFTWARE, handshake,
};
use routes::{Delivery, Route, RouteTable, lock, read_loop};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// Messages a request's receiver may hold before the connection waits for it.
const PER_REQUEST: usize = 1024;
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

/// A connection to the daemon. Cheap to share: requests take `&self`.
pub struct Client {
    daemon: Hello,
    /// Whether the daemon is on this host, at the other end of a Unix
    /// socket, so that the client may lend it files (see [`lend`]).
    local: bool,
    tx: mpsc::Sender<Outgoing>,
    routes: routes::Routes,
    credits: routes::Credits,
    next_id: AtomicU64,
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
        let credits = routes::Credits::default();
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
