//! Writing frames to a byte stream: buffered, with large payloads written
//! straight from the caller's memory or a file's page cache, and the writer
//! task that sends a connection's queue of frames.

use super::codec::header;
#[cfg(target_os = "linux")]
use super::{DEFAULT_WINDOW, zerocopy};
use super::{FrameError, FrameKind, HEADER_LEN};
use bytes::Bytes;
use serde::Serialize;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// The writer sends its buffer once this much has gathered.
const WRITE_BUF: usize = 64 << 10;
/// Data payloads this large skip the write buffer (copying them would cost
/// more than the extra system call it saves).
const DIRECT_WRITE_MIN: usize = 16 << 10;

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
    use crate::wire::testing::{file_with, frame, pattern};
    use crate::wire::{CHUNK_SIZE, FrameReader, MAX_DATA_PAYLOAD};
    use tokio::io::{AsyncRead, duplex};
    use tokio::net::UnixStream;

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
}
