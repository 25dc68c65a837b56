//! Reading frames off a byte stream, with the files a Unix socket may carry
//! alongside them and the payloads that may skip memory into a pipe.

use super::codec::Decoder;
#[cfg(target_os = "linux")]
use super::codec::Head;
#[cfg(target_os = "linux")]
use super::zerocopy;
use super::zerocopy::{Pieces, Pipe};
use super::{Frame, FrameError, FrameKind, HEADER_LEN};
#[cfg(target_os = "linux")]
use bytes::Buf;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Read size while no frame is pending after a JSON frame: room for a burst
/// of JSON frames (console lines, events) in one read.
const READ_AHEAD: usize = 64 << 10;

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
    pub(super) fn buffered(&self) -> &[u8] {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::{encode, file_with, frame, pattern, samples};
    use crate::wire::{CHUNK_SIZE, DEFAULT_WINDOW, FrameWriter};
    use std::fs::File;
    use tokio::io::{AsyncWriteExt, duplex};
    #[cfg(target_os = "linux")]
    use tokio::net::UnixStream;

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
