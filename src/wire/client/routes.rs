//! The connection's reading side: each frame the daemon sends goes to the
//! request it answers, credit to the stream it opens, and the connection's
//! end or the daemon's refusal to every request still waiting.

use crate::api::protocol::{ApiError, DaemonMessage, ErrorKind};
use crate::wire::{CreditWindow, FrameKind, FrameReader, Pieces, Pipe, Received};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

/// What reaches a request: a message, or a chunk of the data it asked for.
pub(super) enum Delivery {
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
pub(super) struct Route {
    pub(super) tx: mpsc::Sender<Delivery>,
    pub(super) pipe: Option<Arc<Pipe>>,
}

/// Where each request's messages go; `None` once the connection is over, with
/// the daemon's last word (a refusal) if it had one.
#[derive(Default)]
pub(super) struct RouteTable {
    pub(super) open: Option<HashMap<u64, Route>>,
    pub(super) last_word: Option<ApiError>,
}

pub(super) type Routes = Arc<Mutex<RouteTable>>;
pub(super) type Credits = Arc<Mutex<HashMap<u64, Arc<CreditWindow>>>>;

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
pub(super) async fn read_loop<R: AsyncRead + Unpin + 'static>(
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
