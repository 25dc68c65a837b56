//! One client connection: handshake, access check, then requests multiplexed
//! by id. A writer task owns the socket's write half; each request runs in its
//! own task, so a slow stream never holds up another request.

use crate::api::protocol::{ApiError, ClientMessage, DaemonMessage, ErrorKind, Request};
use crate::host::daemon::access::Access;
use crate::host::daemon::blocks;
use crate::host::daemon::gate::Gate;
use crate::host::daemon::session::{self, Context, Inbound, Inflow, Out, Replies};
use crate::wire::{
    CreditWindow, DEFAULT_WINDOW, FrameError, FrameKind, FrameReader, FrameWriter, Hello, Peer,
    Pipe, Received, SOFTWARE, handshake,
};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

/// Frames queued for the writer; a client that stops reading fills it, and
/// then its own requests wait, never the daemon's other work.
const OUTGOING: usize = 256;
/// Data chunks queued for an upload's handler (the credit window bounds it).
const INCOMING: usize = 64;
/// Requests of one connection being served at once. A client that does not
/// read its replies stalls its own requests at the full queue; past this many,
/// the daemon stops reading from it until some finish, so its requests wait
/// in its socket, not in the daemon's memory.
const IN_FLIGHT: usize = 64;

/// How a connection is held to its limits.
#[derive(Clone)]
pub struct Admission {
    pub access: Access,
    pub gate: Arc<Gate>,
    /// For the client's Hello, and for each part of a frame once it began.
    pub timeout: Duration,
}

/// Serves a client on the daemon's socket, refusing peers that `access` does
/// not allow and connections past the gate's caps.
pub async fn serve(stream: UnixStream, ctx: Arc<Context>, admission: Admission) {
    let Ok(peer) = stream.peer_cred() else {
        tracing::warn!("hung up on a client whose credentials the system would not say");
        return;
    };
    let (uid, gid) = (peer.uid(), peer.gid());
    if !admission.access.allows(uid, gid) {
        tracing::warn!(
            "refused uid {uid} gid {gid}: not root, the daemon's user or in the socket's group"
        );
        let why = format!(
            "uid {uid} gid {gid} may not use this fulmar daemon: ask its administrator to add you to the socket's group"
        );
        return turn_away(stream, &admission, ErrorKind::Denied, why).await;
    }
    let _place = match admission.gate.admit(uid) {
        Ok(ticket) => ticket,
        Err(full) => {
            tracing::warn!("refused a connection: {full}");
            return turn_away(stream, &admission, ErrorKind::Conflict, full.to_string()).await;
        }
    };
    let (read, write) = stream.into_split();
    let mut reader = FrameReader::new(read);
    let mut writer = FrameWriter::new(write);
    if let Err(e) = handshake(
        Peer::Client,
        &mut reader,
        &mut writer,
        &Hello::ours(SOFTWARE),
        admission.timeout,
    )
    .await
    {
        tracing::info!("a client failed the handshake: {e}");
        return;
    }
    reader.set_stall_timeout(admission.timeout);
    serve_requests(reader, writer, ctx).await;
}

/// Tells a client it may not connect, once it said Hello; past
/// [`crate::host::daemon::gate::REFUSING`] at once, it is only hung up on.
async fn turn_away(stream: UnixStream, admission: &Admission, kind: ErrorKind, why: String) {
    let Some(_telling) = admission.gate.refusing() else {
        return;
    };
    let (read, write) = stream.into_split();
    let mut reader = FrameReader::new(read);
    let mut writer = FrameWriter::new(write);
    if handshake(
        Peer::Client,
        &mut reader,
        &mut writer,
        &Hello::ours(SOFTWARE),
        admission.timeout,
    )
    .await
    .is_ok()
    {
        let refusal = DaemonMessage::Error(ApiError::new(kind, why));
        refuse(reader, writer, &refusal).await;
    }
}

/// How long a refused client may go on sending before the daemon hangs up.
const LINGER: Duration = Duration::from_secs(1);

/// Tells a client why it is refused, then reads and drops what it sends until
/// it hangs up (for at most [`LINGER`]). A client writes its request without
/// waiting for an answer; if the daemon closed at once, that write could fail
/// before the client ever read the refusal, and it would only learn that the
/// connection closed.
async fn refuse<R, W>(
    mut reader: FrameReader<R>,
    mut writer: FrameWriter<W>,
    refusal: &DaemonMessage,
) where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin,
{
    // The client may be gone already; it was refused either way.
    if writer.send_json(0, refusal).await.is_err() || writer.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(Some(_)) = reader.next().await {}
    })
    .await;
}

/// The request loop, over any byte stream; over the daemon's Unix socket a
/// client may lend the daemon its files with its requests.
pub async fn serve_requests<R, W>(
    mut reader: FrameReader<R>,
    writer: FrameWriter<W>,
    ctx: Arc<Context>,
) where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(OUTGOING);
    let writing = tokio::spawn(write_frames(writer, rx));
    let mut requests = Requests {
        running: HashMap::new(),
        in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
    };
    loop {
        let frame = match reader.next_into(|id| requests.pipe(id)).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::info!("dropping a client: {e}");
                break;
            }
        };
        // Files come with the first byte of the frame that uses them, so
        // the one this frame brought is the oldest not yet taken.
        let lent = reader.take_lent();
        if let Err(e) = requests.dispatch(frame, lent, &ctx, &tx).await {
            tracing::info!("dropping a client that broke the protocol: {e}");
            let _ = tx
                .send(Out::Message(
                    0,
                    DaemonMessage::Error(ApiError::new(ErrorKind::Protocol, e)),
                ))
                .await;
            break;
        }
    }
    requests.abort_all();
    drop(tx);
    // The writer ends once every handler's sender is gone.
    let _ = writing.await;
}

async fn write_frames<W: AsyncWrite + Unpin + 'static>(
    writer: FrameWriter<W>,
    rx: mpsc::Receiver<Out>,
) {
    if let Err(e) = crate::wire::write_frames(writer, rx).await {
        tracing::info!("cannot write to a client: {e}");
    }
}

struct Running {
    task: JoinHandle<()>,
    inbound: mpsc::Sender<Inbound>,
    /// The client's credit, for a request that sends it data.
    credit: Option<Arc<CreditWindow>>,
    /// Where the payloads of the client's data frames go, for a request
    /// that takes them that way.
    pipe: Option<Arc<Pipe>>,
}

struct Requests {
    running: HashMap<u64, Running>,
    /// One permit for each request that may be served at once.
    in_flight: Arc<Semaphore>,
}

/// A request that says it lends a file whose frame brought none.
const NO_FILE: &str = "a block transfer said it lends a file, but no file came with it over the socket (only a client on the daemon's own Unix socket can lend one)";

impl Requests {
    /// The pipe of request `id`, if it takes its data that way.
    fn pipe(&self, id: u64) -> Option<Arc<Pipe>> {
        self.running.get(&id)?.pipe.clone()
    }

    /// Acts on one frame; an error means the client broke the protocol.
    /// `lent` is the file the client sent with it, if any.
    async fn dispatch(
        &mut self,
        received: Received,
        lent: Option<OwnedFd>,
        ctx: &Arc<Context>,
        tx: &mpsc::Sender<Out>,
    ) -> Result<(), String> {
        self.running.retain(|_, r| !r.task.is_finished());
        let frame = match received {
            Received::Frame(frame) => frame,
            Received::Piped { id, pieces, rest } => {
                self.inbound(id, Inbound::Piped { pieces, rest }).await;
                return Ok(());
            }
        };
        let id = frame.id;
        if frame.kind == FrameKind::Data {
            self.inbound(id, Inbound::Data(frame.payload)).await;
            return Ok(());
        }
        let message: ClientMessage = frame.json().map_err(|e: FrameError| e.to_string())?;
        match message {
            ClientMessage::Request(mut request) => {
                if self.running.contains_key(&id) {
                    return Err(format!("request id {id} is already in use"));
                }
                let local = match request.lends() {
                    Some(true) => Some(lent.ok_or(NO_FILE)?),
                    _ => None,
                };
                // Waiting here is the backpressure: no frame is read meanwhile.
                let permit = self
                    .in_flight
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| e.to_string())?;
                let (inbound, rx) = mpsc::channel(INCOMING);
                let pipe = block_data(&request).then(new_pipe).flatten();
                let incoming = Inflow {
                    rx,
                    pipe: pipe.clone(),
                    local: local.map(std::fs::File::from),
                };
                let ctx = ctx.clone();
                let replies = Replies::new(id, tx.clone());
                let mut credit = None;
                let task = match request {
                    // Subscribed here, before the next frame is read, so that
                    // whatever the client asks next is seen by the stream.
                    Request::Events => {
                        spawn_holding(permit, session::events(ctx.sup.events(), replies))
                    }
                    Request::BlockDownload {
                        name, compressed, ..
                    } => {
                        let window = Arc::new(CreditWindow::new());
                        credit = Some(window.clone());
                        spawn_holding(permit, async move {
                            blocks::download(&ctx, name, compressed, replies, window, incoming)
                                .await
                        })
                    }
                    request => spawn_holding(permit, async move {
                        session::handle(&ctx, request, replies, incoming).await
                    }),
                };
                self.running.insert(
                    id,
                    Running {
                        task,
                        inbound,
                        credit,
                        pipe,
                    },
                );
            }
            ClientMessage::End => self.inbound(id, Inbound::End).await,
            ClientMessage::Cancel => {
                if let Some(r) = self.running.remove(&id) {
                    r.task.abort();
                    if let Some(w) = r.credit {
                        w.close();
                    }
                    let _ = tx.send(Out::Message(id, DaemonMessage::End)).await;
                }
            }
            ClientMessage::Credit { bytes } => {
                if let Some(w) = self.running.get(&id).and_then(|r| r.credit.as_ref()) {
                    w.grant(bytes);
                }
            }
        }
        Ok(())
    }

    /// Data for a request that has already answered (e.g. refused an upload
    /// while its data was on the way) is dropped; the client has its answer.
    async fn inbound(&self, id: u64, item: Inbound) {
        if let Some(running) = self.running.get(&id) {
            let _ = running.inbound.send(item).await;
        }
    }

    fn abort_all(&mut self) {
        for (_, r) in self.running.drain() {
            r.task.abort();
            if let Some(w) = r.credit {
                w.close();
            }
        }
    }
}

/// Runs a request's handler, which holds its place among the connection's
/// requests in flight until it ends.
fn spawn_holding(
    permit: OwnedSemaphorePermit,
    handler: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        handler.await;
        drop(permit);
    })
}

/// Whether `request` sends block device contents, which are spliced from the
/// socket into the device's new file where the system allows.
fn block_data(request: &Request) -> bool {
    matches!(
        request,
        Request::BlockUpload { .. }
            | Request::BlockCreate {
                with_data: true,
                ..
            }
    )
}

/// A pipe for a request's data; without one (not Linux, or no descriptors
/// left) its payloads come through memory, which works as well, only slower.
fn new_pipe() -> Option<Arc<Pipe>> {
    match Pipe::new(DEFAULT_WINDOW) {
        Ok(pipe) => pipe.map(Arc::new),
        Err(e) => {
            tracing::debug!("no pipe for an upload, its data comes through memory: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal() -> DaemonMessage {
        DaemonMessage::Error(ApiError::new(ErrorKind::Denied, "not you"))
    }

    #[tokio::test]
    async fn a_refused_client_that_writes_late_still_reads_why() {
        let (client, daemon) = UnixStream::pair().unwrap();
        let (read, write) = daemon.into_split();
        let refusing = tokio::spawn(async move {
            refuse(FrameReader::new(read), FrameWriter::new(write), &refusal()).await;
        });
        // The refusal is on its way before the client sends its request.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (read, write) = client.into_split();
        let mut writer = FrameWriter::new(write);
        writer.send_json(1, &"a request").await.unwrap();
        writer
            .flush()
            .await
            .expect("the daemon still reads what a refused client sends");
        let mut reader = FrameReader::new(read);
        let frame = reader.next().await.unwrap().expect("the refusal");
        assert_eq!(frame.json::<DaemonMessage>().unwrap(), refusal());
        assert!(
            reader.next().await.unwrap().is_none(),
            "then the daemon hangs up"
        );
        drop(writer);
        refusing.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_client_cannot_hold_the_connection() {
        let (client, daemon) = UnixStream::pair().unwrap();
        let (read, write) = daemon.into_split();
        let refusing = tokio::spawn(async move {
            refuse(FrameReader::new(read), FrameWriter::new(write), &refusal()).await;
        });
        // The client never hangs up; the daemon does, after LINGER.
        tokio::time::timeout(LINGER * 2, refusing)
            .await
            .unwrap()
            .unwrap();
        drop(client);
    }
}
