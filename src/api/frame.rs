//! Frames on the daemon socket: the transport that requests, replies, events
//! and binary streams ride on (docs/protocol.md, "Framing").
//!
//! A frame is a 4-byte big-endian length, a kind byte, an 8-byte big-endian
//! id and a payload: one JSON value, or raw bytes of a binary stream. This
//! module knows nothing of what the JSON means (`api::protocol` defines the
//! messages); it also holds the handshake every connection starts with and
//! the credit window that keeps a binary stream inside the receiver's memory.

mod zerocopy;

pub use zerocopy::{Pieces, Pipe};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// The protocol this build speaks; both ends of a connection must agree.
pub const PROTOCOL_VERSION: u32 = 2;
/// Length prefix (4), kind (1) and id (8).
pub const HEADER_LEN: usize = 13;
/// The longest payload of a JSON frame.
pub const MAX_JSON_PAYLOAD: usize = 16 << 20;
/// The longest payload of a data frame.
pub const MAX_DATA_PAYLOAD: usize = 1 << 20;
/// What senders of binary streams put in one data frame: as much as one
/// may carry, so a stream costs as few frames (and system calls) as can be.
pub const CHUNK_SIZE: usize = MAX_DATA_PAYLOAD;
/// How many bytes of a binary stream a receiver lets be in flight.
pub const DEFAULT_WINDOW: u64 = 4 << 20;
/// How long either end waits for the other's Hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The bytes the length prefix counts besides the payload: kind and id.
const KIND_AND_ID: usize = 9;
const LEN_PREFIX: usize = 4;
/// Read size while no frame is pending after a JSON frame: room for a burst
/// of JSON frames (console lines, events) in one read.
const READ_AHEAD: usize = 64 << 10;
/// The writer sends its buffer once this much has gathered.
const WRITE_BUF: usize = 64 << 10;
/// Data payloads this large skip the write buffer (copying them would cost
/// more than the extra system call it saves).
const DIRECT_WRITE_MIN: usize = 16 << 10;
/// How much of a peer's bytes an error message quotes.
const QUOTE_LEN: usize = 64;

/// What a frame's payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// One UTF-8 JSON value, a message of `api::protocol`.
    Json = 1,
    /// Raw bytes of the binary stream `id`.
    Data = 2,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Json),
            2 => Some(Self::Data),
            _ => None,
        }
    }

    /// The longest payload a frame of this kind may carry.
    pub fn max_payload(self) -> usize {
        match self {
            Self::Json => MAX_JSON_PAYLOAD,
            Self::Data => MAX_DATA_PAYLOAD,
        }
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Json => "JSON",
            Self::Data => "data",
        })
    }
}

/// Why frames could not be read or written. After any error but `Io` or a
/// JSON error from [`Frame::json`], the connection is out of step with its
/// peer and must be closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(
        "a {}frame with a {len}-byte payload is over the protocol's limit of {max} bytes \
         (a peer that sends one is not speaking fulmar's protocol)",
        .kind.map_or(String::new(), |kind| format!("{kind} "))
    )]
    TooLong {
        /// None when the length alone is over every kind's limit.
        kind: Option<FrameKind>,
        len: u64,
        max: usize,
    },
    #[error(
        "a frame of {len} bytes is too short for its kind and id \
         (the peer is not speaking fulmar's protocol)"
    )]
    TooShort { len: u32 },
    #[error(
        "a frame of unknown kind {0:#04x} (the peer is not speaking fulmar's protocol, \
         or a newer version of it)"
    )]
    UnknownKind(u8),
    #[error(
        "the connection closed mid-frame, {received} bytes into it: the other end stopped or crashed"
    )]
    ClosedMidFrame { received: usize },
    #[error(
        "a frame stopped {received} bytes into it: nothing more came for {after:?}, so the \
         connection was closed (the other end is stuck, or not speaking fulmar's protocol)"
    )]
    Stalled { received: usize, after: Duration },
    #[error("this connection already failed to read a frame and cannot be used: reconnect")]
    Unusable,
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    #[error("frame {id} carries {kind} where a JSON message was expected: the peer is broken")]
    NotJson { id: u64, kind: FrameKind },
    #[error("the JSON message in frame {id} is not what was expected: {source}")]
    BadJson {
        id: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("could not encode a message as JSON: {0}")]
    Encode(#[source] serde_json::Error),
    #[error(
        "the peer sent more than {max} files that no request used (it is not speaking fulmar's protocol)"
    )]
    TooManyFiles { max: usize },
    #[error("only a Unix socket on Linux can carry a file to the daemon: send the data as frames")]
    CannotLend,
}

/// Refuses payloads longer than `kind` allows (any kind's limit when the
/// kind is not known yet).
fn check_len(kind: Option<FrameKind>, len: u64) -> Result<(), FrameError> {
    // MAX_JSON_PAYLOAD is the larger of the two limits.
    let max = kind.map_or(MAX_JSON_PAYLOAD, FrameKind::max_payload);
    if len > max as u64 {
        return Err(FrameError::TooLong { kind, len, max });
    }
    Ok(())
}

fn header(kind: FrameKind, id: u64, payload_len: usize) -> Result<[u8; HEADER_LEN], FrameError> {
    check_len(Some(kind), payload_len as u64)?;
    let mut header = [0; HEADER_LEN];
    let mut out = &mut header[..];
    // Cannot truncate: the payload is at most MAX_JSON_PAYLOAD.
    out.put_u32((payload_len + KIND_AND_ID) as u32);
    out.put_u8(kind as u8);
    out.put_u64(id);
    Ok(header)
}

/// One frame: what it carries, the request or stream it belongs to, and
/// its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub id: u64,
    pub payload: Bytes,
}

impl Frame {
    /// Appends the frame's wire form to `out`; refuses a payload over the
    /// kind's limit, which the peer would refuse too.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        out.extend_from_slice(&header(self.kind, self.id, self.payload.len())?);
        out.extend_from_slice(&self.payload);
        Ok(())
    }

    /// Decodes the payload of a JSON frame as `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, FrameError> {
        if self.kind != FrameKind::Json {
            return Err(FrameError::NotJson {
                id: self.id,
                kind: self.kind,
            });
        }
        serde_json::from_slice(&self.payload).map_err(|source| FrameError::BadJson {
            id: self.id,
            source,
        })
    }
}

/// Cuts frames out of a buffer that bytes arrive in, in pieces of any size.
///
/// A frame's header is checked as soon as its bytes are there, so a length
/// over the limit or an unknown kind fails at once, before any payload is
/// waited for or buffered. After an error every call fails: the stream is
/// out of step and no attempt is made to find the next frame.
#[derive(Debug, Default)]
pub struct Decoder {
    /// The total size of the frame begun at the front of the buffer, once
    /// its header is known and its payload is not all there.
    pending: Option<usize>,
    failed: bool,
}

/// A frame's header, once all of it has arrived.
#[cfg(target_os = "linux")]
#[derive(Clone, Copy, Debug)]
struct Head {
    kind: FrameKind,
    id: u64,
    len: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next whole frame at the front of `buf`, removed from it, or None
    /// until more bytes arrive. For a frame begun but not complete, reserves
    /// room in `buf` for the rest (never more than the longest frame).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if self.failed {
            return Err(FrameError::Unusable);
        }
        let decoded = self.cut(buf);
        self.failed = decoded.is_err();
        decoded
    }

    /// The header at the front of `buf`, checked, once all of it is there;
    /// `buf` is left as it is.
    #[cfg(target_os = "linux")]
    fn head(&mut self, buf: &[u8]) -> Result<Option<Head>, FrameError> {
        if self.failed {
            return Err(FrameError::Unusable);
        }
        let head = read_head(buf);
        self.failed = head.is_err();
        Ok(head?.and_then(|(kind, len)| {
            let id = buf.get(LEN_PREFIX + 1..HEADER_LEN)?.try_into().ok()?;
            Some(Head {
                kind,
                id: u64::from_be_bytes(id),
                len,
            })
        }))
    }

    fn cut(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        self.pending = None;
        let Some((kind, payload_len)) = read_head(buf)? else {
            return Ok(None);
        };
        let total = HEADER_LEN + payload_len;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            self.pending = Some(total);
            return Ok(None);
        }
        let mut frame = buf.split_to(total);
        frame.advance(LEN_PREFIX + 1);
        let id = frame.get_u64();
        Ok(Some(Frame {
            kind,
            id,
            payload: frame.freeze(),
        }))
    }
}

/// The kind and payload length at the front of `buf`, checked as soon as
/// their bytes are there: the length on its four bytes alone.
fn read_head(buf: &[u8]) -> Result<Option<(FrameKind, usize)>, FrameError> {
    let Some(mut prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(None);
    };
    let len = prefix.get_u32();
    let payload_len = (len as usize)
        .checked_sub(KIND_AND_ID)
        .ok_or(FrameError::TooShort { len })?;
    check_len(None, payload_len as u64)?;
    let Some(&kind_byte) = buf.get(LEN_PREFIX) else {
        return Ok(None);
    };
    let kind = FrameKind::from_byte(kind_byte).ok_or(FrameError::UnknownKind(kind_byte))?;
    check_len(Some(kind), payload_len as u64)?;
    Ok(Some((kind, payload_len)))
}

/// What [`FrameReader::next_into`] read.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Frame(Frame),
    /// A data frame of stream `id` that went to the stream's pipe: its first
    /// bytes are in the pipe where `pieces` says, the rest (what did not fit)
    /// in `rest`.
    Piped {
        id: u64,
        pieces: Pieces,
        rest: Bytes,
    },
}

/// Reads frames from a byte stream (a socket half, or stdin for the proxy).
///
/// Payloads are cut out of the read buffer without copying. After a data
/// frame the next header is read alone and a frame's rest straight into room
/// reserved for it, so a stream of large data frames costs two reads per
/// frame and no copy beyond the kernel's. With [`FrameReader::next_into`], a
/// data frame's payload can skip memory altogether.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    decoder: Decoder,
    /// The last frame was data, so the next one likely is: read only its
    /// header, leaving its payload in the socket for a splice.
    after_data: bool,
    /// Files the peer sent with its frames (over a Unix socket), oldest
    /// first, until [`FrameReader::take_lent`] takes them.
    lent: Vec<std::os::fd::OwnedFd>,
    /// Where a read between frames lands when it may bring files with it.
    #[cfg(target_os = "linux")]
    scratch: Vec<u8>,
    /// How long a frame that began may go without its next byte.
    stall: Option<Duration>,
}

/// Files the peer may send before the frames that use them are read; a peer
/// that sends more is not speaking fulmar's protocol. (Files travel only on
/// Linux.)
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const MAX_LENT: usize = 4;

impl<R: AsyncRead + Unpin + 'static> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            decoder: Decoder::new(),
            after_data: false,
            lent: Vec::new(),
            #[cfg(target_os = "linux")]
            scratch: Vec::new(),
            stall: None,
        }
    }

    /// Fails a frame that began and then brought nothing for `after`, so a
    /// peer cannot hold the reader (and its buffer) with half a frame.
    /// Progress keeps it going: a slow link is not a stuck peer.
    pub fn set_stall_timeout(&mut self, after: Duration) {
        self.stall = Some(after);
    }

    /// The stall timeout for the next read, when a frame has begun.
    fn mid_frame(&self, begun: bool) -> Option<Duration> {
        self.stall.filter(|_| begun)
    }

    /// The oldest file the peer sent and nothing has taken yet: the one that
    /// came with the frame just read, for a request that says it lends one.
    pub fn take_lent(&mut self) -> Option<std::os::fd::OwnedFd> {
        (!self.lent.is_empty()).then(|| self.lent.remove(0))
    }

    /// The next frame; None when the peer closed the connection between
    /// frames. Cancel-safe: a `select!` may drop the call without losing bytes.
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some(frame) = self.decoded()? {
                return Ok(Some(frame));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    fn decoded(&mut self) -> Result<Option<Frame>, FrameError> {
        let frame = self.decoder.decode(&mut self.buf)?;
        if let Some(frame) = &frame {
            self.after_data = frame.kind == FrameKind::Data;
        }
        Ok(frame)
    }

    /// Reads once; false at the peer's clean end between frames.
    async fn fill(&mut self) -> Result<bool, FrameError> {
        // Reading no further than a pending frame's end keeps its
        // successor out of its allocation, so the buffer is reused
        // whole once the frame is dropped instead of copied from.
        let want = match self.decoder.pending {
            Some(total) => total - self.buf.len(),
            None if self.after_data => HEADER_LEN.saturating_sub(self.buf.len()).max(1),
            None => READ_AHEAD,
        };
        let received = self.buf.len();
        let stall = self.mid_frame(received > 0);
        let read = if self.decoder.pending.is_none() {
            within(stall, received, self.read_between_frames(want)).await?
        } else {
            // Never past the pending frame's end, so never into the bytes a
            // file was sent with, which only a frame's first byte has.
            self.buf.reserve(want);
            let mut room = (&mut self.buf).limit(want);
            within(stall, received, self.inner.read_buf(&mut room)).await?
        };
        if read == 0 {
            return match self.buf.len() {
                0 => Ok(false),
                received => Err(FrameError::ClosedMidFrame { received }),
            };
        }
        Ok(true)
    }

    /// Reads up to `want` bytes where a frame may begin, and so where a peer
    /// on a Unix socket may have sent a file with it: a plain read would
    /// drop (close) the file, so this one receives it.
    async fn read_between_frames(&mut self, want: usize) -> Result<usize, FrameError> {
        #[cfg(target_os = "linux")]
        if let Some(socket) = zerocopy::unix_socket(&self.inner) {
            let want = want.min(READ_AHEAD);
            if self.scratch.len() < READ_AHEAD {
                self.scratch.resize(READ_AHEAD, 0);
            }
            let read =
                zerocopy::receive_with_files(socket, &mut self.scratch[..want], &mut self.lent)
                    .await;
            if self.lent.len() > MAX_LENT {
                self.lent.clear();
                return Err(FrameError::TooManyFiles { max: MAX_LENT });
            }
            let read = read?;
            self.buf.extend_from_slice(&self.scratch[..read]);
            return Ok(read);
        }
        self.buf.reserve(want);
        let mut room = (&mut self.buf).limit(want);
        Ok(self.inner.read_buf(&mut room).await?)
    }

    /// What was read and not yet decoded: the evidence when a peer sends
    /// something other than frames.
    fn buffered(&self) -> &[u8] {
        &self.buf
    }
}

impl<R: AsyncRead + Unpin + 'static> FrameReader<R> {
    /// As [`FrameReader::next`], but the payload of a data frame of a stream
    /// that `pipe_for` gives a pipe goes into that pipe, as much of it as
    /// fits, when the connection is a Unix socket on Linux; elsewhere every
    /// frame comes whole, as from `next`. Not cancel-safe.
    pub async fn next_into(
        &mut self,
        pipe_for: impl Fn(u64) -> Option<Arc<Pipe>>,
    ) -> Result<Option<Received>, FrameError> {
        loop {
            #[cfg(target_os = "linux")]
            if let Some(head) = self.decoder.head(&self.buf)?
                && head.kind == FrameKind::Data
                && zerocopy::unix_socket(&self.inner).is_some()
                && let Some(pipe) = pipe_for(head.id)
            {
                let piped = self.splice_payload(head, &pipe).await;
                // Half a payload consumed: the stream is out of step.
                self.decoder.failed |= piped.is_err();
                return piped.map(Some);
            }
            #[cfg(not(target_os = "linux"))]
            let _ = &pipe_for;
            if let Some(frame) = self.decoded()? {
                return Ok(Some(Received::Frame(frame)));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Moves the payload of the data frame whose header `head` is at the
    /// front of the buffer into `pipe`: what was read with the header, then
    /// straight from the socket, then (once the pipe is full) into memory.
    #[cfg(target_os = "linux")]
    async fn splice_payload(&mut self, head: Head, pipe: &Pipe) -> Result<Received, FrameError> {
        self.buf.advance(HEADER_LEN);
        self.after_data = true;
        let mut pieces = Pieces::default();
        let held = self.buf.len().min(head.len);
        let mut piped = pipe.fill_from(&self.buf[..held], &mut pieces)?;
        self.buf.advance(piped);
        if piped == held {
            while piped < head.len {
                let Some(socket) = zerocopy::unix_socket(&self.inner) else {
                    break;
                };
                let stall = self.stall;
                let splice = zerocopy::splice_from(socket, pipe, head.len - piped, &mut pieces);
                match within(stall, HEADER_LEN + piped, splice).await? {
                    zerocopy::Spliced::Moved(n) => piped += n,
                    zerocopy::Spliced::PipeFull => break,
                    zerocopy::Spliced::End => {
                        return Err(FrameError::ClosedMidFrame {
                            received: HEADER_LEN + piped,
                        });
                    }
                }
            }
        }
        let rest = self
            .read_exact(head.len - piped, HEADER_LEN + piped)
            .await?;
        Ok(Received::Piped {
            id: head.id,
            pieces,
            rest,
        })
    }

    /// The next `len` bytes, which end a frame of which `before` bytes came before.
    #[cfg(target_os = "linux")]
    async fn read_exact(&mut self, len: usize, before: usize) -> Result<Bytes, FrameError> {
        while self.buf.len() < len {
            let want = len - self.buf.len();
            let (stall, received) = (self.stall, before + self.buf.len());
            self.buf.reserve(want);
            let mut room = (&mut self.buf).limit(want);
            if within(stall, received, self.inner.read_buf(&mut room)).await? == 0 {
                return Err(FrameError::ClosedMidFrame {
                    received: before + self.buf.len(),
                });
            }
        }
        Ok(self.buf.split_to(len).freeze())
    }
}

/// Awaits a read of a frame `received` bytes into it, for at most `stall`.
async fn within<T, E: Into<FrameError>>(
    stall: Option<Duration>,
    received: usize,
    read: impl Future<Output = Result<T, E>>,
) -> Result<T, FrameError> {
    let Some(after) = stall else {
        return read.await.map_err(Into::into);
    };
    match tokio::time::timeout(after, read).await {
        Ok(read) => read.map_err(Into::into),
        Err(_elapsed) => Err(FrameError::Stalled { received, after }),
    }
}

/// Writes frames to a byte stream, buffered: call [`FrameWriter::flush`]
/// when the peer should see what was sent. Not cancel-safe: a send dropped
/// half way leaves a partial frame and the connection must be closed.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    buf: Vec<u8>,
    /// Where [`FrameWriter::send_file`] reads a payload when it cannot send
    /// it from the page cache; empty until then.
    file_buf: Vec<u8>,
    /// Whether the socket's send buffer was widened for file frames.
    #[cfg(target_os = "linux")]
    widened: bool,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(WRITE_BUF),
            file_buf: Vec::new(),
            #[cfg(target_os = "linux")]
            widened: false,
        }
    }

    /// Sends `value` as a JSON frame. On an error nothing was sent.
    pub async fn send_json<T: Serialize + ?Sized>(
        &mut self,
        id: u64,
        value: &T,
    ) -> Result<(), FrameError> {
        self.encode_json(id, value)?;
        self.write_if_full().await
    }

    /// Appends `value` as a JSON frame to the buffer; on an error nothing was added.
    fn encode_json<T: Serialize + ?Sized>(&mut self, id: u64, value: &T) -> Result<(), FrameError> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; HEADER_LEN]);
        let header = serde_json::to_writer(&mut self.buf, value)
            .map_err(FrameError::Encode)
            .and_then(|()| header(FrameKind::Json, id, self.buf.len() - start - HEADER_LEN));
        match header {
            Ok(header) => self.buf[start..start + HEADER_LEN].copy_from_slice(&header),
            Err(error) => {
                self.buf.truncate(start);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Sends `data` as a data frame of stream `id`. On an error from the
    /// length check nothing was sent.
    pub async fn send_data(&mut self, id: u64, data: &[u8]) -> Result<(), FrameError> {
        self.buf
            .extend_from_slice(&header(FrameKind::Data, id, data.len())?);
        if data.len() < DIRECT_WRITE_MIN {
            self.buf.extend_from_slice(data);
            return self.write_if_full().await;
        }
        // What is buffered, this header and the caller's bytes in one writev.
        let mut slices = [IoSlice::new(&self.buf), IoSlice::new(data)];
        write_all_vectored(&mut self.inner, &mut slices).await?;
        self.buf.clear();
        Ok(())
    }

    /// Sends everything buffered.
    pub async fn flush(&mut self) -> Result<(), FrameError> {
        self.write_buffered().await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// Sends everything buffered, then tells the peer nothing more will come.
    pub async fn shutdown(&mut self) -> Result<(), FrameError> {
        self.write_buffered().await?;
        self.inner.shutdown().await?;
        Ok(())
    }

    async fn write_if_full(&mut self) -> Result<(), FrameError> {
        if self.buf.len() >= WRITE_BUF {
            self.write_buffered().await?;
        }
        Ok(())
    }

    async fn write_buffered(&mut self) -> io::Result<()> {
        self.inner.write_all(&self.buf).await?;
        self.buf.clear();
        // Do not keep the room a rare large JSON message needed.
        self.buf.shrink_to(WRITE_BUF);
        Ok(())
    }
}

impl<W: AsyncWrite + Unpin + 'static> FrameWriter<W> {
    /// Sends `value` as a JSON frame that carries `file` to the peer
    /// (`SCM_RIGHTS`), after everything buffered: the peer gets the open file
    /// itself, with the access this process opened it with, and nothing more.
    /// Only over a Unix socket on Linux; elsewhere nothing is sent.
    pub async fn send_json_with_file<T: Serialize + ?Sized>(
        &mut self,
        id: u64,
        value: &T,
        file: std::os::fd::BorrowedFd<'_>,
    ) -> Result<(), FrameError> {
        #[cfg(target_os = "linux")]
        if zerocopy::unix_socket(&self.inner).is_some() {
            self.write_buffered().await?;
            self.encode_json(id, value)?;
            let sent = match zerocopy::unix_socket(&self.inner) {
                Some(socket) => zerocopy::send_with_file(socket, &self.buf, file).await,
                None => Err(io::Error::from(io::ErrorKind::Unsupported)),
            };
            self.buf.clear();
            return Ok(sent?);
        }
        let _ = (id, value, file);
        Err(FrameError::CannotLend)
    }

    /// Sends `len` bytes of `file` from `offset` as a data frame of stream
    /// `id`. Over a Unix socket on Linux they go from the page cache to the
    /// socket without a copy (sendfile); otherwise they are read into memory
    /// first, and a file too short to fill the frame sends nothing. A file
    /// that ends early during a sendfile leaves half a frame: an error after
    /// which the connection must be closed.
    pub async fn send_file(
        &mut self,
        id: u64,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Result<(), FrameError> {
        let header = header(FrameKind::Data, id, len)?;
        #[cfg(target_os = "linux")]
        if let Some(socket) = zerocopy::unix_socket(&self.inner) {
            if !self.widened {
                zerocopy::widen_send_buffer(socket, DEFAULT_WINDOW as usize);
                self.widened = true;
            }
            self.buf.extend_from_slice(&header);
            zerocopy::write_socket(socket, &self.buf).await?;
            self.buf.clear();
            return Ok(zerocopy::send_file_range(socket, file, offset, len).await?);
        }
        let mut data = std::mem::take(&mut self.file_buf);
        data.resize(len, 0);
        if let Err(e) = file.read_exact_at(&mut data, offset) {
            self.file_buf = data;
            return Err(e.into());
        }
        self.buf.extend_from_slice(&header);
        let mut slices = [IoSlice::new(&self.buf), IoSlice::new(&data)];
        let sent = write_all_vectored(&mut self.inner, &mut slices).await;
        self.buf.clear();
        self.file_buf = data;
        Ok(sent?)
    }
}

async fn write_all_vectored<W: AsyncWrite + Unpin>(
    inner: &mut W,
    mut slices: &mut [IoSlice<'_>],
) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match inner.write_vectored(slices).await? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            written => IoSlice::advance_slices(&mut slices, written),
        }
    }
    Ok(())
}

/// The first frame each way: a JSON frame with id 0. Its shape never
/// changes between protocol versions, so any two fulmars can tell that
/// they disagree.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub protocol: u32,
    /// Who is talking, for messages: e.g. "fulmar 0.1.0".
    #[serde(default)]
    pub software: String,
}

impl Hello {
    /// This build's Hello.
    fn ours(software: &str) -> Hello {
        Hello {
            protocol: PROTOCOL_VERSION,
            software: software.to_owned(),
        }
    }
}

/// The other end of a connection, as error messages name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Daemon,
    Client,
}

impl Peer {
    /// How this end calls itself when talking to `self`.
    fn us(self) -> &'static str {
        match self {
            Self::Daemon => "this fulmar",
            Self::Client => "this daemon",
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Daemon => "the daemon",
            Self::Client => "the client",
        })
    }
}

/// Why a connection did not get past its Hellos.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{}", mismatch(*.peer, .hello, *.ours))]
    VersionMismatch { peer: Peer, hello: Hello, ours: u32 },
    #[error("{peer} did not start with a fulmar Hello but sent {received}: {}", not_fulmar_hint(*.peer))]
    NotFulmar {
        peer: Peer,
        /// The start of what it sent, quoted and escaped.
        received: String,
    },
    #[error(
        "{peer} closed the connection before its Hello: check that the other end is \
         a fulmar daemon or `fulmar proxy` and that it runs"
    )]
    Closed { peer: Peer },
    #[error(
        "{peer} sent no Hello within {after:?} (received so far: {received}): check that the other \
         end is a fulmar daemon or `fulmar proxy` and that it is not stuck"
    )]
    Timeout {
        peer: Peer,
        after: Duration,
        received: String,
    },
    #[error("the connection failed during the handshake: {0}")]
    Connection(#[source] FrameError),
}

fn mismatch(peer: Peer, hello: &Hello, ours: u32) -> String {
    let older = if hello.protocol < ours {
        peer.to_string()
    } else {
        peer.us().to_owned()
    };
    format!(
        "{peer} ({}) speaks protocol {} and {} speaks {ours}: run the same fulmar version \
         on both ends (upgrade {older}, the older one)",
        quote(hello.software.as_bytes()),
        hello.protocol,
        peer.us(),
    )
}

fn not_fulmar_hint(peer: Peer) -> &'static str {
    match peer {
        Peer::Daemon => {
            "check that the socket is a fulmar daemon's and, through ssh, that the remote \
             login prints nothing on stdout (no banner or echo in shell start-up files)"
        }
        Peer::Client => "it is not a fulmar client",
    }
}

/// The start of a peer's bytes, safe to print: quoted, control characters escaped.
fn quote(bytes: &[u8]) -> String {
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTE_LEN)]);
    let more = if bytes.len() > QUOTE_LEN { "..." } else { "" };
    format!("{shown:?}{more}")
}

/// Opens a connection from the client side: sends our Hello, then waits at
/// most `timeout` for the daemon's. Returns the daemon's Hello.
pub async fn client_handshake<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    software: &str,
    timeout: Duration,
) -> Result<Hello, HandshakeError>
where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin,
{
    handshake(
        Peer::Daemon,
        reader,
        writer,
        &Hello::ours(software),
        timeout,
    )
    .await
}

/// Accepts a connection on the daemon side: waits at most `timeout` for the
/// client's Hello, then answers with ours, also when the versions differ so
/// that the client can say so. Returns the client's Hello.
pub async fn server_handshake<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    software: &str,
    timeout: Duration,
) -> Result<Hello, HandshakeError>
where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin,
{
    handshake(
        Peer::Client,
        reader,
        writer,
        &Hello::ours(software),
        timeout,
    )
    .await
}

/// The client speaks first; the daemon answers any well-formed Hello.
async fn handshake<R, W>(
    peer: Peer,
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    ours: &Hello,
    timeout: Duration,
) -> Result<Hello, HandshakeError>
where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin,
{
    let exchange = async {
        if peer == Peer::Daemon {
            send_hello(writer, ours).await?;
        }
        let theirs = read_hello(peer, reader).await?;
        if peer == Peer::Client {
            send_hello(writer, ours).await?;
        }
        if theirs.protocol != ours.protocol {
            return Err(HandshakeError::VersionMismatch {
                peer,
                hello: theirs,
                ours: ours.protocol,
            });
        }
        Ok(theirs)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(outcome) => outcome,
        Err(_elapsed) => Err(HandshakeError::Timeout {
            peer,
            after: timeout,
            received: match reader.buffered() {
                [] => "nothing".to_owned(),
                bytes => quote(bytes),
            },
        }),
    }
}

async fn send_hello<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    hello: &Hello,
) -> Result<(), HandshakeError> {
    writer
        .send_json(0, hello)
        .await
        .map_err(HandshakeError::Connection)?;
    writer.flush().await.map_err(HandshakeError::Connection)
}

async fn read_hello<R: AsyncRead + Unpin + 'static>(
    peer: Peer,
    reader: &mut FrameReader<R>,
) -> Result<Hello, HandshakeError> {
    let frame = match reader.next().await {
        Ok(Some(frame)) => frame,
        Ok(None) => return Err(HandshakeError::Closed { peer }),
        Err(error @ FrameError::Io(_)) => return Err(HandshakeError::Connection(error)),
        // Text is never a frame: its first byte makes a length over the limit.
        Err(_) => {
            return Err(HandshakeError::NotFulmar {
                peer,
                received: quote(reader.buffered()),
            });
        }
    };
    frame.json().map_err(|_| HandshakeError::NotFulmar {
        peer,
        received: quote(&frame.payload),
    })
}

/// Why a binary stream cannot go on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlowError {
    #[error("the stream was closed before all its data was sent")]
    Closed,
    #[error(
        "the peer sent {received} bytes on a stream it was granted only {granted} bytes of: \
         it ignores flow control"
    )]
    Overrun { granted: u64, received: u64 },
}

/// The sending side of a binary stream's flow control: how many bytes the
/// receiver has granted and how many were sent. A sender takes credit with
/// [`CreditWindow::reserve`] before each data frame; whatever reads the
/// receiver's `Credit` messages calls [`CreditWindow::grant`]. Each stream
/// has its own window, so a receiver that stops reading one stream stops
/// only that stream's sender. Shared between tasks behind an `Arc`.
#[derive(Debug, Default)]
pub struct CreditWindow {
    credit: Mutex<Credit>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct Credit {
    granted: u64,
    sent: u64,
    closed: bool,
}

impl CreditWindow {
    /// A window with no credit: the receiver's first grant opens it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes up to `max` bytes of credit, waiting while there is none, and
    /// returns how many were taken (0 only when `max` is 0). The sender may
    /// then send that many bytes.
    pub async fn reserve(&self, max: usize) -> Result<usize, FlowError> {
        loop {
            // Registered before looking, so a grant in between still wakes us.
            let changed = self.changed.notified();
            {
                let mut credit = self.lock();
                if credit.closed {
                    return Err(FlowError::Closed);
                }
                let available = credit.granted - credit.sent;
                if available > 0 || max == 0 {
                    let taken = max.min(usize::try_from(available).unwrap_or(usize::MAX));
                    credit.sent += taken as u64;
                    return Ok(taken);
                }
            }
            changed.await;
        }
    }

    /// Adds the receiver's grant of `bytes` more.
    pub fn grant(&self, bytes: u64) {
        let mut credit = self.lock();
        // A peer granting absurd amounts only lifts its own limit.
        credit.granted = credit.granted.saturating_add(bytes);
        drop(credit);
        self.changed.notify_waiters();
    }

    /// Ends the stream: a sender waiting for credit, and any later reserve,
    /// gets [`FlowError::Closed`]. For a cancelled stream or a lost connection.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_waiters();
    }

    fn lock(&self) -> MutexGuard<'_, Credit> {
        // The critical sections above cannot panic, so a poisoned lock's
        // state is still sound.
        self.credit.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The receiving side of a binary stream's flow control: decides when to
/// grant more, and catches a sender that overruns what it was granted.
///
/// Grants keep up to `window` bytes outstanding (granted and not consumed):
/// the first grant is the whole window, then whenever the outstanding bytes
/// fall to half the window it is topped up again. So the receiver never
/// holds more than `window` bytes of the stream, and a sender whose frames
/// are at most half the window never waits for a grant while the receiver
/// keeps up.
#[derive(Debug)]
pub struct ReceiveWindow {
    window: u64,
    granted: u64,
    received: u64,
    consumed: u64,
}

impl ReceiveWindow {
    pub fn new(window: u64) -> Self {
        Self {
            window,
            granted: 0,
            received: 0,
            consumed: 0,
        }
    }

    /// Counts `bytes` arriving on the stream.
    pub fn received(&mut self, bytes: u64) -> Result<(), FlowError> {
        self.received = self.received.saturating_add(bytes);
        if self.received > self.granted {
            return Err(FlowError::Overrun {
                granted: self.granted,
                received: self.received,
            });
        }
        Ok(())
    }

    /// Counts `bytes` the consumer is done with (written to disk, shown).
    pub fn consumed(&mut self, bytes: u64) {
        self.consumed = self.consumed.saturating_add(bytes);
    }

    /// The grant to send now, if one is due: call it when the stream opens
    /// and after each [`ReceiveWindow::consumed`].
    pub fn grant(&mut self) -> Option<u64> {
        let outstanding = self.granted.saturating_sub(self.consumed);
        if outstanding > self.window / 2 {
            return None;
        }
        let grant = self.window - outstanding;
        self.granted += grant;
        Some(grant)
    }
}

/// One frame for a connection's writer task: a message (`M` is what this
/// end speaks), a chunk of data, or data to send from a file.
#[derive(Debug)]
pub enum Outgoing<M> {
    Message(u64, M),
    /// A message whose frame carries one of this process's open files.
    Lending {
        id: u64,
        message: M,
        file: std::os::fd::OwnedFd,
    },
    Data(u64, Bytes),
    /// A data frame of `len` bytes of `file` from `offset`, sent by the
    /// writer from the page cache where it can.
    File {
        id: u64,
        file: Arc<File>,
        offset: u64,
        len: usize,
    },
}

/// A connection's writer: sends what `rx` brings until every sender is gone
/// (`Ok`) or the connection fails. It flushes once the queue is drained, so
/// bursts go out in few writes.
pub async fn write_frames<W, M>(
    mut writer: FrameWriter<W>,
    mut rx: tokio::sync::mpsc::Receiver<Outgoing<M>>,
) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin + 'static,
    M: Serialize,
{
    while let Some(out) = rx.recv().await {
        let sent = match out {
            Outgoing::Message(id, message) => writer.send_json(id, &message).await,
            Outgoing::Lending { id, message, file } => {
                use std::os::fd::AsFd;
                writer.send_json_with_file(id, &message, file.as_fd()).await
            }
            Outgoing::Data(id, bytes) => writer.send_data(id, &bytes).await,
            Outgoing::File {
                id,
                file,
                offset,
                len,
            } => writer.send_file(id, &file, offset, len).await,
        };
        match sent {
            Ok(()) if rx.is_empty() => writer.flush().await?,
            other => other?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};
    use tokio::io::{AsyncWriteExt, duplex};
    use tokio::sync::mpsc;

    fn frame(kind: FrameKind, id: u64, payload: &[u8]) -> Frame {
        Frame {
            kind,
            id,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn encode(frames: &[Frame]) -> Vec<u8> {
        let mut wire = Vec::new();
        for frame in frames {
            frame.encode_into(&mut wire).unwrap();
        }
        wire
    }

    /// Every kind, an empty payload of each, and ids at both ends of the range.
    fn samples() -> Vec<Frame> {
        let bytes: Vec<u8> = (0..=255).collect();
        vec![
            frame(FrameKind::Json, 0, br#"{"protocol":1,"software":"x"}"#),
            frame(FrameKind::Data, u64::MAX, &bytes),
            frame(FrameKind::Data, 7, b""),
            frame(FrameKind::Json, 1 << 40, b""),
            frame(FrameKind::Json, 3, "\"\u{e9}t\u{e9}\"".as_bytes()),
        ]
    }

    /// Feeds `parts` one after the other, decoding all it can after each.
    fn decode_parts(parts: &[&[u8]]) -> (Vec<Frame>, BytesMut) {
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for part in parts {
            buf.extend_from_slice(part);
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                frames.push(frame);
            }
        }
        (frames, buf)
    }

    /// A header as a peer might send it, unchecked.
    fn raw_header(len: u32, kind: u8, id: u64) -> Vec<u8> {
        let mut header = len.to_be_bytes().to_vec();
        header.push(kind);
        header.extend_from_slice(&id.to_be_bytes());
        header
    }

    #[test]
    fn the_wire_form_is_length_kind_id_payload() {
        let wire = encode(&[frame(FrameKind::Data, 0x0102_0304_0506_0708, b"xy")]);
        assert_eq!(
            wire,
            [0, 0, 0, 11, 2, 1, 2, 3, 4, 5, 6, 7, 8, b'x', b'y'],
            "docs/protocol.md describes this layout"
        );
        let wire = encode(&[frame(FrameKind::Json, 1, b"{}")]);
        assert_eq!(wire, [0, 0, 0, 11, 1, 0, 0, 0, 0, 0, 0, 0, 1, b'{', b'}']);
    }

    #[test]
    fn frames_split_at_every_byte_boundary_decode_the_same() {
        let frames = samples();
        let wire = encode(&frames);
        for split in 0..=wire.len() {
            let (decoded, rest) = decode_parts(&[&wire[..split], &wire[split..]]);
            assert_eq!(decoded, frames, "split at byte {split}");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn frames_fed_one_byte_at_a_time_decode_the_same() {
        let frames = samples();
        let wire = encode(&frames);
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        let (decoded, rest) = decode_parts(&bytes);
        assert_eq!(decoded, frames);
        assert!(rest.is_empty());
    }

    #[test]
    fn a_partial_frame_stays_in_the_buffer() {
        let wire = encode(&samples());
        let (decoded, rest) = decode_parts(&[&wire[..wire.len() - 1]]);
        assert_eq!(decoded, samples()[..samples().len() - 1]);
        assert_eq!(rest.len(), HEADER_LEN + "\"\u{e9}t\u{e9}\"".len() - 1);
    }

    #[test]
    fn the_longest_frames_pass_and_one_byte_more_is_refused() {
        for kind in [FrameKind::Json, FrameKind::Data] {
            let max = kind.max_payload();
            let longest = Frame {
                kind,
                id: 9,
                payload: Bytes::from(vec![b' '; max]),
            };
            let (decoded, _) = decode_parts(&[&encode(std::slice::from_ref(&longest))]);
            assert_eq!(decoded, [longest]);

            let over = Frame {
                kind,
                id: 9,
                payload: Bytes::from(vec![b' '; max + 1]),
            };
            let mut out = Vec::new();
            let refused = over.encode_into(&mut out);
            assert!(
                matches!(refused, Err(FrameError::TooLong { kind: Some(k), len, max: m })
                    if k == kind && len == max as u64 + 1 && m == max),
                "{refused:?}"
            );
            assert!(out.is_empty(), "nothing of a refused frame is written");

            // The decoder refuses the header alone, without waiting for the payload.
            // (Over the JSON limit is over every limit, known from the length alone.)
            let mut buf = BytesMut::from(&raw_header((max + 1 + 9) as u32, kind as u8, 9)[..]);
            let refused = Decoder::new().decode(&mut buf);
            assert!(
                matches!(refused, Err(FrameError::TooLong { len, .. }) if len == max as u64 + 1),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn a_length_over_every_limit_fails_on_its_four_bytes() {
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::from(&b"GET "[..]);
        let refused = decoder.decode(&mut buf);
        assert!(
            matches!(refused, Err(FrameError::TooLong { kind: None, len, .. }) if len == 0x4745_5420 - 9),
            "{refused:?}"
        );
        assert_eq!(buf.capacity(), 4, "nothing is reserved for a refused frame");
        // The connection is dead: no attempt to find a next frame.
        buf.extend_from_slice(&encode(&samples()));
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(FrameError::Unusable)
        ));
    }

    #[test]
    fn a_length_shorter_than_kind_and_id_is_refused() {
        let mut buf = BytesMut::from(&[0, 0, 0, 8, 1, 0, 0, 0, 0, 0, 0, 0][..]);
        let refused = Decoder::new().decode(&mut buf);
        assert!(
            matches!(refused, Err(FrameError::TooShort { len: 8 })),
            "{refused:?}"
        );
    }

    #[test]
    fn an_unknown_kind_is_refused_on_its_byte() {
        for kind in [0, 3, 0x7f, 0xff] {
            let mut decoder = Decoder::new();
            let mut buf = BytesMut::from(&[0, 0, 0, 9, kind][..]);
            let refused = decoder.decode(&mut buf);
            assert!(
                matches!(refused, Err(FrameError::UnknownKind(k)) if k == kind),
                "{refused:?}"
            );
            assert!(refused.unwrap_err().to_string().contains("unknown kind"));
            assert!(matches!(
                decoder.decode(&mut buf),
                Err(FrameError::Unusable)
            ));
        }
    }

    #[test]
    fn json_frames_decode_into_their_type() {
        let hello = Hello {
            protocol: 4,
            software: "fulmar 9".into(),
        };
        let frame = frame(FrameKind::Json, 5, &serde_json::to_vec(&hello).unwrap()[..]);
        assert_eq!(frame.json::<Hello>().unwrap(), hello);

        let data = Frame {
            kind: FrameKind::Data,
            ..frame.clone()
        };
        assert!(matches!(
            data.json::<Hello>(),
            Err(FrameError::NotJson {
                id: 5,
                kind: FrameKind::Data
            })
        ));
        let wrong = Frame {
            payload: Bytes::from_static(b"[1, 2]"),
            ..frame
        };
        assert!(matches!(
            wrong.json::<Hello>(),
            Err(FrameError::BadJson { id: 5, .. })
        ));
    }

    #[tokio::test]
    async fn the_reader_returns_none_only_at_a_clean_end() {
        let wire = encode(&samples());
        let mut reader = FrameReader::new(std::io::Cursor::new(wire.clone()));
        for expected in samples() {
            assert_eq!(reader.next().await.unwrap(), Some(expected));
        }
        assert_eq!(reader.next().await.unwrap(), None);

        let mut reader = FrameReader::new(&b""[..]);
        assert_eq!(reader.next().await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_end_inside_a_frame_is_an_error() {
        let wire = encode(&samples());
        // Inside the payload of the last frame, then inside a header.
        for cut in [wire.len() - 1, 2] {
            let mut reader = FrameReader::new(std::io::Cursor::new(wire[..cut].to_vec()));
            let outcome = loop {
                match reader.next().await {
                    Ok(Some(_)) => continue,
                    other => break other,
                }
            };
            assert!(
                matches!(outcome, Err(FrameError::ClosedMidFrame { .. })),
                "cut at {cut}: {outcome:?}"
            );
            assert!(
                outcome
                    .unwrap_err()
                    .to_string()
                    .contains("connection closed mid-frame")
            );
        }
    }

    /// Payload sizes that take every path of the writer: buffered, written
    /// directly, a whole chunk, and the longest a data frame may be.
    fn pipelined_sizes() -> impl Iterator<Item = (u64, usize)> {
        let sizes = [
            0,
            1,
            100,
            DIRECT_WRITE_MIN - 1,
            DIRECT_WRITE_MIN,
            CHUNK_SIZE,
            MAX_DATA_PAYLOAD,
        ];
        (0..600u64).map(move |id| (id, sizes[id as usize % sizes.len()]))
    }

    #[tokio::test]
    async fn many_frames_pipelined_arrive_whole_and_in_order() {
        let (near, far) = duplex(8 << 10);
        let writer = tokio::spawn(async move {
            let mut writer = FrameWriter::new(near);
            for (id, size) in pipelined_sizes() {
                writer
                    .send_json(id, &serde_json::json!({ "n": id }))
                    .await?;
                writer.send_data(id, &vec![id as u8; size]).await?;
            }
            writer.flush().await
        });
        let mut reader = FrameReader::new(far);
        for (id, size) in pipelined_sizes() {
            let json = reader.next().await.unwrap().unwrap();
            assert_eq!((json.kind, json.id), (FrameKind::Json, id));
            assert_eq!(
                json.json::<serde_json::Value>().unwrap(),
                serde_json::json!({ "n": id })
            );
            let data = reader.next().await.unwrap().unwrap();
            assert_eq!((data.kind, data.id), (FrameKind::Data, id));
            assert_eq!(data.payload, vec![id as u8; size]);
        }
        writer.await.unwrap().unwrap();
        assert_eq!(reader.next().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_refused_send_leaves_the_stream_intact() {
        let (near, far) = duplex(1 << 20);
        let mut writer = FrameWriter::new(near);
        let too_long = writer.send_data(1, &vec![0; MAX_DATA_PAYLOAD + 1]).await;
        assert!(matches!(too_long, Err(FrameError::TooLong { .. })));
        // JSON cannot have a map with non-string keys.
        let unencodable = std::collections::HashMap::from([((1, 2), 3)]);
        let refused = writer.send_json(2, &unencodable).await;
        assert!(matches!(refused, Err(FrameError::Encode(_))), "{refused:?}");
        writer.send_json(3, "fine").await.unwrap();
        writer.flush().await.unwrap();
        drop(writer);

        let mut reader = FrameReader::new(far);
        assert_eq!(
            reader.next().await.unwrap(),
            Some(frame(FrameKind::Json, 3, b"\"fine\""))
        );
        assert_eq!(reader.next().await.unwrap(), None);
    }

    /// Bytes that differ from their neighbours, so a misplaced piece shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    /// A file holding `bytes`.
    fn file_with(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, bytes).unwrap();
        file
    }

    /// Sends `bytes` (from a file) as data frames of stream 1 in chunks of
    /// at most CHUNK_SIZE, a JSON frame after each, and reads them back with
    /// a plain reader; returns the data and the JSON values received.
    async fn through<W, R>(mut writer: FrameWriter<W>, mut reader: FrameReader<R>, bytes: &[u8])
    where
        W: AsyncWrite + Unpin + Send + 'static,
        R: AsyncRead + Unpin + 'static,
    {
        let file = file_with(bytes);
        let len = bytes.len();
        let sender = tokio::spawn(async move {
            let mut offset = 0;
            while offset < len {
                let n = (len - offset).min(CHUNK_SIZE);
                writer.send_file(1, &file, offset as u64, n).await.unwrap();
                writer.send_json(2, &offset).await.unwrap();
                offset += n;
            }
            writer.flush().await.unwrap();
        });
        let (mut data, mut offsets) = (Vec::new(), Vec::new());
        while let Some(frame) = reader.next().await.unwrap() {
            match frame.kind {
                FrameKind::Data => data.extend_from_slice(&frame.payload),
                FrameKind::Json => offsets.push(frame.json::<usize>().unwrap()),
            }
        }
        sender.await.unwrap();
        assert!(data == bytes, "the data differs");
        let want: Vec<usize> = (0..len).step_by(CHUNK_SIZE).collect();
        assert_eq!(offsets, want, "the JSON frames kept their places");
    }

    #[tokio::test]
    async fn file_frames_arrive_the_same_from_the_page_cache_and_from_memory() {
        let bytes = pattern(3 * CHUNK_SIZE + 4321);
        // sendfile over a Unix socket (on Linux) ...
        let (near, far) = UnixStream::pair().unwrap();
        let (far_read, _far_write) = far.into_split();
        let (_near_read, near_write) = near.into_split();
        through(
            FrameWriter::new(near_write),
            FrameReader::new(far_read),
            &bytes,
        )
        .await;
        // ... and pread and write on any other byte stream.
        let (near, far) = duplex(64 << 10);
        through(FrameWriter::new(near), FrameReader::new(far), &bytes).await;
    }

    #[tokio::test]
    async fn a_file_too_short_for_its_frame_sends_nothing_through_memory() {
        let (near, far) = duplex(64 << 10);
        let mut writer = FrameWriter::new(near);
        let short = writer.send_file(1, &file_with(b"abc"), 0, 4).await;
        assert!(matches!(short, Err(FrameError::Io(_))), "{short:?}");
        writer.send_json(2, "still in step").await.unwrap();
        writer.flush().await.unwrap();
        drop(writer);
        let frame = FrameReader::new(far).next().await.unwrap().unwrap();
        assert_eq!(frame.json::<String>().unwrap(), "still in step");
    }

    /// A file sent with a frame arrives with that frame, the same open file
    /// (reading through one moves the other), after frames sent before it;
    /// a peer that piles up unused files is cut off.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_file_travels_with_its_frame_over_a_unix_socket() {
        use std::io::{Read, Seek};
        use std::os::fd::AsFd;
        let (near, far) = tokio::net::UnixStream::pair().unwrap();
        let (_r, w) = near.into_split();
        let (r, _w) = far.into_split();
        let mut writer = FrameWriter::new(w);
        let mut reader = FrameReader::new(r);
        let mut lent = file_with(b"lent bytes");
        lent.rewind().unwrap();
        writer.send_json(1, "before").await.unwrap();
        writer
            .send_json_with_file(2, "with a file", lent.as_fd())
            .await
            .unwrap();
        writer.flush().await.unwrap();
        let first = reader.next().await.unwrap().unwrap();
        assert_eq!(first.json::<String>().unwrap(), "before");
        let second = reader.next().await.unwrap().unwrap();
        assert_eq!(second.json::<String>().unwrap(), "with a file");
        let mut got = File::from(reader.take_lent().expect("the file"));
        assert!(reader.take_lent().is_none());
        let mut text = String::new();
        got.read_to_string(&mut text).unwrap();
        assert_eq!(text, "lent bytes");
        assert_eq!(lent.stream_position().unwrap(), 10);

        for i in 0..=MAX_LENT as u64 {
            writer
                .send_json_with_file(3 + i, "unused", lent.as_fd())
                .await
                .unwrap();
        }
        writer.flush().await.unwrap();
        let mut outcome = Ok(None);
        for _ in 0..=MAX_LENT {
            outcome = reader.next().await;
            if outcome.is_err() {
                break;
            }
        }
        assert!(
            matches!(outcome, Err(FrameError::TooManyFiles { .. })),
            "{outcome:?}"
        );
    }

    /// Only a Unix socket carries files: elsewhere nothing is sent.
    #[tokio::test]
    async fn a_file_cannot_travel_over_other_streams() {
        use std::os::fd::AsFd;
        let (near, _far) = duplex(1024);
        let mut writer = FrameWriter::new(near);
        let lent = file_with(b"x");
        let sent = writer.send_json_with_file(1, "x", lent.as_fd()).await;
        assert!(matches!(sent, Err(FrameError::CannotLend)), "{sent:?}");
    }

    /// Reads everything `pieces` holds out of `pipe`.
    #[cfg(target_os = "linux")]
    fn drain(pipe: &Pipe, mut pieces: Pieces) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0; 100_000];
        while !pieces.is_empty() {
            let n = pipe.read(&mut pieces, &mut buf).unwrap();
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    /// The frames of a Unix socket pair's far end, with `pipe` for stream 1:
    /// stream 1's bytes, taken out of the pipe as they come, or, while
    /// `stall`, only once all have come (so the pipe fills), stream 2's, and
    /// the most stream 1 ever had in the pipe at once.
    #[cfg(target_os = "linux")]
    async fn receive_piped(
        mut reader: FrameReader<tokio::net::unix::OwnedReadHalf>,
        pipe: Arc<Pipe>,
        stall: bool,
    ) -> (Vec<u8>, Vec<u8>, usize) {
        let (mut frames, mut two, mut most) = (Vec::new(), Vec::new(), 0);
        let mut in_pipe = 0;
        while let Some(received) = reader
            .next_into(|id| (id == 1).then(|| pipe.clone()))
            .await
            .unwrap()
        {
            match received {
                Received::Piped { id, pieces, rest } => {
                    assert_eq!(id, 1);
                    in_pipe = if stall { in_pipe } else { 0 } + pieces.len();
                    most = most.max(in_pipe);
                    let piped = if stall {
                        Either::Pieces(pieces)
                    } else {
                        Either::Bytes(drain(&pipe, pieces))
                    };
                    frames.push((piped, rest));
                }
                Received::Frame(frame) if frame.kind == FrameKind::Data => {
                    assert_eq!(frame.id, 2, "stream 1 goes to its pipe");
                    two.extend_from_slice(&frame.payload);
                }
                Received::Frame(frame) => assert_eq!(frame.json::<u64>().unwrap(), frame.id),
            }
        }
        // Each frame's piped bytes come before its rest.
        let mut one = Vec::new();
        for (piped, rest) in frames {
            match piped {
                Either::Pieces(pieces) => one.extend_from_slice(&drain(&pipe, pieces)),
                Either::Bytes(bytes) => one.extend_from_slice(&bytes),
            }
            one.extend_from_slice(&rest);
        }
        (one, two, most)
    }

    #[cfg(target_os = "linux")]
    enum Either {
        Pieces(Pieces),
        Bytes(Vec<u8>),
    }

    /// Sends stream 1 from a file, stream 2 from memory and JSON frames,
    /// interleaved, on the near end of a Unix socket pair.
    #[cfg(target_os = "linux")]
    fn send_streams(near: UnixStream, one: &[u8], two: &[u8]) -> tokio::task::JoinHandle<()> {
        let file = file_with(one);
        let (one_len, two) = (one.len(), two.to_vec());
        tokio::spawn(async move {
            let (_read, write) = near.into_split();
            let mut writer = FrameWriter::new(write);
            let (mut a, mut b) = (0, 0);
            while a < one_len || b < two.len() {
                writer.send_json(1, &1).await.unwrap();
                let n = (one_len - a).min(CHUNK_SIZE - 1000);
                if n > 0 {
                    writer.send_file(1, &file, a as u64, n).await.unwrap();
                    a += n;
                }
                let m = (two.len() - b).min(77_777);
                writer.send_data(2, &two[b..b + m]).await.unwrap();
                b += m;
                writer.send_json(2, &2).await.unwrap();
            }
            writer.flush().await.unwrap();
        })
    }

    #[cfg(target_os = "linux")]
    use tokio::net::UnixStream;

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn payloads_spliced_into_a_pipe_arrive_whole_and_in_order() {
        let (one, two) = (pattern(5 * CHUNK_SIZE + 99), pattern(400_000));
        let (near, far) = UnixStream::pair().unwrap();
        let sender = send_streams(near, &one, &two);
        let pipe = Arc::new(Pipe::new(DEFAULT_WINDOW).unwrap().unwrap());
        let reader = FrameReader::new(far.into_split().0);
        let (got_one, got_two, most) = receive_piped(reader, pipe, false).await;
        sender.await.unwrap();
        assert!(got_one == one, "stream 1 differs");
        assert!(got_two == two, "stream 2 differs");
        assert!(most > 0, "nothing went through the pipe");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_full_pipe_sends_the_rest_through_memory() {
        let (one, two) = (pattern(3 * CHUNK_SIZE), pattern(1000));
        let (near, far) = UnixStream::pair().unwrap();
        let sender = send_streams(near, &one, &two);
        // Two lanes of one page each, and no consumer draining them.
        let pipe = Arc::new(Pipe::new(4096).unwrap().unwrap());
        let reader = FrameReader::new(far.into_split().0);
        let (got_one, got_two, most) = receive_piped(reader, pipe, true).await;
        sender.await.unwrap();
        assert!(got_one == one, "stream 1 differs");
        assert!(got_two == two, "stream 2 differs");
        assert!(most > 0, "nothing went through the pipe");
        assert!(most <= 8192, "two one-page lanes held {most} bytes");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn spliced_payloads_drain_into_a_file() {
        let bytes = pattern(2 * CHUNK_SIZE + 5);
        let (near, far) = UnixStream::pair().unwrap();
        let sender = send_streams(near, &bytes, &[]);
        let pipe = Arc::new(Pipe::new(DEFAULT_WINDOW).unwrap().unwrap());
        let mut reader = FrameReader::new(far.into_split().0);
        let mut out = tempfile::tempfile().unwrap();
        while let Some(received) = reader.next_into(|_| Some(pipe.clone())).await.unwrap() {
            if let Received::Piped {
                mut pieces, rest, ..
            } = received
            {
                let len = pieces.len();
                assert_eq!(pipe.drain_into(&mut pieces, &out, usize::MAX).unwrap(), len);
                std::io::Write::write_all(&mut out, &rest).unwrap();
            }
        }
        sender.await.unwrap();
        let mut got = Vec::new();
        std::io::Seek::rewind(&mut out).unwrap();
        std::io::Read::read_to_end(&mut out, &mut got).unwrap();
        assert!(got == bytes, "the file differs");
    }

    type Ends = (
        FrameReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
        FrameWriter<tokio::io::WriteHalf<tokio::io::DuplexStream>>,
    );

    fn connected() -> (Ends, Ends) {
        let (a, b) = duplex(64 << 10);
        let ends = |stream| {
            let (read, write) = tokio::io::split(stream);
            (FrameReader::new(read), FrameWriter::new(write))
        };
        (ends(a), ends(b))
    }

    fn hello(protocol: u32, software: &str) -> Hello {
        Hello {
            protocol,
            software: software.into(),
        }
    }

    #[tokio::test]
    async fn a_handshake_gives_each_end_the_others_hello() {
        let ((mut cr, mut cw), (mut sr, mut sw)) = connected();
        let (client, server) = tokio::join!(
            client_handshake(&mut cr, &mut cw, "fulmar client", HANDSHAKE_TIMEOUT),
            server_handshake(&mut sr, &mut sw, "fulmar daemon", HANDSHAKE_TIMEOUT),
        );
        assert_eq!(client.unwrap(), hello(PROTOCOL_VERSION, "fulmar daemon"));
        assert_eq!(server.unwrap(), hello(PROTOCOL_VERSION, "fulmar client"));

        // The connection carries frames afterwards.
        cw.send_json(1, "list").await.unwrap();
        cw.flush().await.unwrap();
        assert_eq!(
            sr.next().await.unwrap().unwrap().json::<String>().unwrap(),
            "list"
        );
    }

    /// Runs a handshake between a client speaking `client` and a daemon
    /// speaking `daemon`, with the real code on both ends.
    async fn mismatched(
        client: u32,
        daemon: u32,
    ) -> (Result<Hello, HandshakeError>, Result<Hello, HandshakeError>) {
        let ((mut cr, mut cw), (mut sr, mut sw)) = connected();
        let (client, daemon) = (hello(client, "fulmar x"), hello(daemon, "fulmar x"));
        tokio::join!(
            handshake(Peer::Daemon, &mut cr, &mut cw, &client, HANDSHAKE_TIMEOUT),
            handshake(Peer::Client, &mut sr, &mut sw, &daemon, HANDSHAKE_TIMEOUT),
        )
    }

    #[tokio::test]
    async fn a_newer_daemon_is_reported_on_both_ends() {
        let (client, server) = mismatched(1, 2).await;
        let client = client.unwrap_err();
        assert!(
            matches!(&client, HandshakeError::VersionMismatch { peer: Peer::Daemon, hello, ours: 1 } if hello.protocol == 2)
        );
        assert_eq!(
            client.to_string(),
            "the daemon (\"fulmar x\") speaks protocol 2 and this fulmar speaks 1: run the same \
             fulmar version on both ends (upgrade this fulmar, the older one)"
        );
        let server = server.unwrap_err();
        assert!(
            matches!(&server, HandshakeError::VersionMismatch { peer: Peer::Client, hello, ours: 2 } if hello.protocol == 1)
        );
        assert_eq!(
            server.to_string(),
            "the client (\"fulmar x\") speaks protocol 1 and this daemon speaks 2: run the same \
             fulmar version on both ends (upgrade the client, the older one)"
        );
    }

    #[tokio::test]
    async fn a_newer_client_is_reported_on_both_ends() {
        let (client, server) = mismatched(3, 1).await;
        assert!(
            client
                .unwrap_err()
                .to_string()
                .ends_with("(upgrade the daemon, the older one)")
        );
        assert!(
            server.unwrap_err().to_string().starts_with(
                "the client (\"fulmar x\") speaks protocol 3 and this daemon speaks 1"
            )
        );
    }

    /// Framed ends for the side under test, and its peer as a raw stream.
    fn against_raw() -> (Ends, tokio::io::DuplexStream) {
        let (framed, raw) = duplex(64 << 10);
        let (read, write) = tokio::io::split(framed);
        ((FrameReader::new(read), FrameWriter::new(write)), raw)
    }

    #[tokio::test]
    async fn a_daemon_told_garbage_says_so_at_once() {
        let ((mut sr, mut sw), mut http) = against_raw();
        // The HTTP client stays connected: only its bytes can end the wait.
        http.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let refused = server_handshake(&mut sr, &mut sw, "fulmar", HANDSHAKE_TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, HandshakeError::NotFulmar { peer: Peer::Client, received }
                if received.starts_with("\"GET / HTTP/1.1\\r\\nHost")),
            "{refused:?}"
        );
        drop(http);
    }

    #[tokio::test]
    async fn a_client_reading_a_login_banner_says_so_at_once() {
        let ((mut cr, mut cw), mut proxy) = against_raw();
        // What a chatty .bashrc puts in front of `fulmar proxy`'s output.
        proxy.write_all(b"Welcome to host7\n").await.unwrap();
        let refused = client_handshake(&mut cr, &mut cw, "fulmar", HANDSHAKE_TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(
                &refused,
                HandshakeError::NotFulmar {
                    peer: Peer::Daemon,
                    ..
                }
            ),
            "{refused:?}"
        );
        let message = refused.to_string();
        assert!(message.contains("\"Welcome to host7\\n\""), "{message}");
        assert!(message.contains("prints nothing on stdout"), "{message}");
        drop(proxy);
    }

    #[tokio::test]
    async fn a_frame_that_is_not_a_hello_is_refused_without_an_answer() {
        let ((mut sr, mut sw), client) = against_raw();
        let (client_read, client_write) = tokio::io::split(client);
        let mut cw = FrameWriter::new(client_write);
        cw.send_json(0, &serde_json::json!({ "list": {} }))
            .await
            .unwrap();
        cw.flush().await.unwrap();
        let refused = server_handshake(&mut sr, &mut sw, "fulmar", HANDSHAKE_TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, HandshakeError::NotFulmar { received, .. } if received.contains("list")),
            "{refused:?}"
        );
        drop((sr, sw));
        assert_eq!(FrameReader::new(client_read).next().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_silent_peer_times_out_with_what_it_sent() {
        let ((mut cr, mut cw), mut daemon) = against_raw();
        daemon.write_all(b"hi").await.unwrap();
        let timeout = Duration::from_millis(50);
        let refused = client_handshake(&mut cr, &mut cw, "fulmar", timeout)
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, HandshakeError::Timeout { peer: Peer::Daemon, after, received }
                if *after == timeout && received == "\"hi\""),
            "{refused:?}"
        );
        drop(daemon);
    }

    #[tokio::test]
    async fn a_peer_that_hangs_up_before_hello_is_reported() {
        // The daemon reads before it writes, so it sees the end, not a failed write.
        let ((mut sr, mut sw), client) = against_raw();
        drop(client);
        let refused = server_handshake(&mut sr, &mut sw, "fulmar", HANDSHAKE_TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(refused, HandshakeError::Closed { peer: Peer::Client }),
            "{refused:?}"
        );
    }

    /// Polls once, without a runtime: is `future` ready right now?
    fn poll_now<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn reserve_takes_at_most_the_credit_and_waits_at_none() {
        let window = CreditWindow::new();
        let mut waiting = pin!(window.reserve(10));
        assert!(poll_now(waiting.as_mut()).is_pending(), "no credit yet");
        window.grant(4);
        assert_eq!(poll_now(waiting.as_mut()), Poll::Ready(Ok(4)));

        window.grant(25);
        assert_eq!(poll_now(pin!(window.reserve(10))), Poll::Ready(Ok(10)));
        assert_eq!(poll_now(pin!(window.reserve(100))), Poll::Ready(Ok(15)));
        assert!(poll_now(pin!(window.reserve(1))).is_pending());
        assert_eq!(poll_now(pin!(window.reserve(0))), Poll::Ready(Ok(0)));
    }

    #[test]
    fn closing_a_window_wakes_its_sender_with_an_error() {
        let window = CreditWindow::new();
        let mut waiting = pin!(window.reserve(10));
        assert!(poll_now(waiting.as_mut()).is_pending());
        window.close();
        assert_eq!(
            poll_now(waiting.as_mut()),
            Poll::Ready(Err(FlowError::Closed))
        );
        window.grant(10);
        assert_eq!(
            poll_now(pin!(window.reserve(1))),
            Poll::Ready(Err(FlowError::Closed))
        );
    }

    #[test]
    fn a_receiver_grants_the_window_then_tops_it_up_at_half() {
        let mut window = ReceiveWindow::new(100);
        assert_eq!(window.grant(), Some(100));
        assert_eq!(window.grant(), None, "granted once");
        window.received(100).unwrap();
        window.consumed(49);
        assert_eq!(window.grant(), None, "51 outstanding: more than half");
        window.consumed(1);
        assert_eq!(window.grant(), Some(50), "back to the whole window");
        window.received(50).unwrap();
        window.consumed(100);
        assert_eq!(window.grant(), Some(100));
    }

    #[test]
    fn a_sender_beyond_its_grant_is_caught() {
        let mut window = ReceiveWindow::new(100);
        window.grant();
        window.received(60).unwrap();
        assert_eq!(
            window.received(41),
            Err(FlowError::Overrun {
                granted: 100,
                received: 101
            })
        );
    }

    /// The tests' stand-in for the protocol's `Credit { bytes }` message.
    #[derive(Serialize, Deserialize)]
    struct Credit {
        bytes: u64,
    }

    const WINDOW: u64 = 64 << 10;
    const CHUNK: usize = 8 << 10;
    const STREAM_LEN: usize = 8 * WINDOW as usize;

    /// Sends stream `id` (STREAM_LEN bytes of `id`) chunk by chunk, taking
    /// credit before each.
    async fn send_stream<W: AsyncWrite + Unpin>(
        id: u64,
        window: Arc<CreditWindow>,
        writer: Arc<tokio::sync::Mutex<FrameWriter<W>>>,
    ) {
        let data = vec![id as u8; STREAM_LEN];
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = window.reserve(rest.len().min(CHUNK)).await.unwrap();
            let mut writer = writer.lock().await;
            writer.send_data(id, &rest[..n]).await.unwrap();
            writer.flush().await.unwrap();
            rest = &rest[n..];
        }
    }

    /// The receiver is done with `bytes` of stream `id`: grants more if due.
    fn release(
        id: u64,
        bytes: usize,
        window: &Mutex<ReceiveWindow>,
        grants: &mpsc::UnboundedSender<(u64, u64)>,
    ) {
        let grant = {
            let mut window = window.lock().unwrap();
            window.consumed(bytes as u64);
            window.grant()
        };
        if let Some(grant) = grant {
            grants.send((id, grant)).unwrap();
        }
    }

    /// Consumes stream `id` until `until` bytes have arrived in all, `got`
    /// included; returns the bytes.
    async fn consume(
        id: u64,
        queue: &mut mpsc::UnboundedReceiver<Bytes>,
        window: &Mutex<ReceiveWindow>,
        grants: &mpsc::UnboundedSender<(u64, u64)>,
        mut got: Vec<u8>,
        until: usize,
    ) -> Vec<u8> {
        while got.len() < until {
            let chunk = queue.recv().await.unwrap();
            got.extend_from_slice(&chunk);
            release(id, chunk.len(), window, grants);
        }
        got
    }

    #[tokio::test]
    async fn a_stalled_receiver_stalls_only_its_own_stream() {
        let ((mut sender_reader, sender_writer), (mut receiver_reader, mut receiver_writer)) =
            connected();

        // Sender end: two streams over one writer, credit messages in.
        let windows = [Arc::new(CreditWindow::new()), Arc::new(CreditWindow::new())];
        let credit_in = tokio::spawn({
            let windows = windows.clone();
            async move {
                while let Some(frame) = sender_reader.next().await.unwrap() {
                    windows[frame.id as usize].grant(frame.json::<Credit>().unwrap().bytes);
                }
            }
        });
        let writer = Arc::new(tokio::sync::Mutex::new(sender_writer));
        let senders = [0, 1].map(|id| {
            tokio::spawn(send_stream(
                id,
                windows[id as usize].clone(),
                writer.clone(),
            ))
        });
        drop(writer);

        // Receiver end: a dispatcher that checks every frame against its
        // stream's grants and queues it for the stream's consumer.
        let receive_windows = Arc::new([
            Mutex::new(ReceiveWindow::new(WINDOW)),
            Mutex::new(ReceiveWindow::new(WINDOW)),
        ]);
        let (grants, mut to_grant) = mpsc::unbounded_channel::<(u64, u64)>();
        let credit_out = tokio::spawn(async move {
            while let Some((id, bytes)) = to_grant.recv().await {
                receiver_writer
                    .send_json(id, &Credit { bytes })
                    .await
                    .unwrap();
                receiver_writer.flush().await.unwrap();
            }
        });
        let (queue_in, mut queues): (Vec<_>, Vec<_>) =
            (0..2).map(|_| mpsc::unbounded_channel::<Bytes>()).unzip();
        let dispatcher = tokio::spawn({
            let receive_windows = receive_windows.clone();
            async move {
                while let Some(frame) = receiver_reader.next().await.unwrap() {
                    let id = frame.id as usize;
                    receive_windows[id]
                        .lock()
                        .unwrap()
                        .received(frame.payload.len() as u64)
                        .unwrap();
                    queue_in[id].send(frame.payload).unwrap();
                }
            }
        });
        for (id, window) in receive_windows.iter().enumerate() {
            let grant = window.lock().unwrap().grant().unwrap();
            grants.send((id as u64, grant)).unwrap();
        }

        // Stream 0's consumer stalls; stream 1 runs to its end regardless.
        let stream1 = consume(
            1,
            &mut queues[1],
            &receive_windows[1],
            &grants,
            vec![],
            STREAM_LEN,
        );
        assert_eq!(stream1.await, vec![1; STREAM_LEN]);
        let mut held = Vec::new();
        while let Ok(chunk) = queues[0].try_recv() {
            held.extend_from_slice(&chunk);
        }
        assert!(
            held.len() as u64 <= WINDOW,
            "stream 0 sent {} bytes",
            held.len()
        );
        assert!(!senders[0].is_finished(), "stream 0 waits for credit");

        // Once its consumer resumes, stream 0 completes too.
        release(0, held.len(), &receive_windows[0], &grants);
        let stream0 = consume(
            0,
            &mut queues[0],
            &receive_windows[0],
            &grants,
            held,
            STREAM_LEN,
        );
        assert_eq!(stream0.await, vec![0; STREAM_LEN]);
        for sender in senders {
            sender.await.unwrap();
        }
        // Every byte passed the dispatcher's overrun check.
        assert!(!dispatcher.is_finished(), "the dispatcher is still reading");
        for task in [dispatcher, credit_in, credit_out] {
            task.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_that_stops_half_way_fails_and_one_that_trickles_does_not() {
        const STALL: Duration = Duration::from_secs(5);
        let wire = encode(&[frame(FrameKind::Json, 1, b"\"a request\"")]);
        let (mut client, daemon) = duplex(1024);
        let mut reader = FrameReader::new(daemon);
        reader.set_stall_timeout(STALL);
        let reading = tokio::spawn(async move { reader.next().await });
        for byte in &wire[..wire.len() - 1] {
            client.write_all(&[*byte]).await.unwrap();
            tokio::time::sleep(STALL / 2).await;
        }
        // The last byte never comes; the connection stays open.
        let stalled = reading.await.unwrap();
        assert!(
            matches!(stalled, Err(FrameError::Stalled { received, .. }) if received == wire.len() - 1),
            "{stalled:?}"
        );
        // Between frames a connection may stay quiet for as long as it likes.
        let (_client, daemon) = duplex(1024);
        let mut reader = FrameReader::new(daemon);
        reader.set_stall_timeout(STALL);
        let idle = tokio::time::timeout(STALL * 10, reader.next()).await;
        assert!(idle.is_err(), "{idle:?}");
        drop(client);
    }
}
