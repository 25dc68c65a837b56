//! Data frames whose payloads never pass through user memory: on Linux, over a
//! Unix socket, a sender puts a file's bytes on the socket with `sendfile` and
//! a receiver moves a payload from the socket into a [`Pipe`] with `splice`,
//! from which its consumer splices them into a file. Since Linux 6.5 a Unix
//! socket carries spliced pages by reference, so a transfer costs one copy,
//! into the destination's page cache, as `cp` does.
//!
//! Elsewhere (other systems, other byte streams) the framing code uses its
//! portable path: the same frames, read into and written from memory.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
#[cfg(target_os = "linux")]
use tokio::net::UnixStream;
#[cfg(target_os = "linux")]
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// One stream's payloads on their way from the connection's reader to the
/// stream's consumer, in kernel pipes ("lanes"): as many as it takes to hold
/// the stream's window, since a pipe holds at most `pipe-max-size` (1 MiB)
/// unless the process may raise it. The reader fills the lanes without ever
/// blocking (what does not fit is read into memory instead) and says which
/// lanes it used, in [`Pieces`]; the consumer drains exactly those, in order
/// with the payloads that came through memory. Pipes exist only where
/// payloads can be spliced: [`Pipe::new`] is `None` elsewhere.
#[derive(Debug)]
pub struct Pipe {
    #[cfg(target_os = "linux")]
    lanes: Vec<Lane>,
    /// The lane the reader filled last. It fills lanes in turn, so that it
    /// seldom contends with the consumer for the lane being drained.
    #[cfg(target_os = "linux")]
    filling: std::sync::atomic::AtomicUsize,
    #[cfg(not(target_os = "linux"))]
    never: std::convert::Infallible,
}

#[cfg(target_os = "linux")]
#[derive(Debug)]
struct Lane {
    read: OwnedFd,
    /// Non-blocking: the connection's reader must never wait on a consumer.
    write: OwnedFd,
}

/// Where a payload's bytes wait in a [`Pipe`], in order: so many bytes in
/// this lane, then so many in that one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pieces {
    /// (lane, bytes)
    queue: VecDeque<(usize, usize)>,
}

impl Pieces {
    /// The bytes still in the pipe.
    pub fn len(&self) -> usize {
        self.queue.iter().map(|&(_, n)| n).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    #[cfg(target_os = "linux")]
    fn push(&mut self, lane: usize, n: usize) {
        match self.queue.back_mut() {
            Some((last, len)) if *last == lane => *len += n,
            _ => self.queue.push_back((lane, n)),
        }
    }

    /// Counts `n` bytes of the first piece as gone.
    #[cfg(target_os = "linux")]
    fn took(&mut self, n: usize) {
        if let Some((_, len)) = self.queue.front_mut() {
            *len -= n;
            if *len == 0 {
                self.queue.pop_front();
            }
        }
    }
}

/// What one attempt to splice from a socket into a pipe did.
#[cfg(target_os = "linux")]
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Spliced {
    /// This many bytes moved.
    Moved(usize),
    /// Every lane is full while the socket has bytes: take them through memory.
    PipeFull,
    /// The peer closed the connection.
    End,
}

/// The most lanes a stream gets, whatever its window.
#[cfg(target_os = "linux")]
const MAX_LANES: usize = 8;

#[cfg(target_os = "linux")]
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

#[cfg(target_os = "linux")]
fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

#[cfg(target_os = "linux")]
impl Lane {
    /// A pipe as large as `want` bytes if the system allows, else as large as
    /// it allows; returns it and its size.
    fn new(want: usize) -> io::Result<(Lane, usize)> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into the two-element array.
        check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        // SAFETY: pipe2 succeeded, so both descriptors are open and only ours.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let fd = write.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own, with integer arguments only.
        unsafe {
            let flags = check(libc::fcntl(fd, libc::F_GETFL))?;
            check(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
            // pipe-max-size caps what a process without CAP_SYS_RESOURCE may
            // ask; a refusal leaves the pipe as it was.
            for size in [want, 1 << 20] {
                let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
                if libc::fcntl(fd, libc::F_SETPIPE_SZ, size) >= 0 {
                    break;
                }
            }
            let size = check(libc::fcntl(fd, libc::F_GETPIPE_SZ))?;
            Ok((Lane { read, write }, usize::try_from(size).unwrap_or(0)))
        }
    }

    /// Moves `len` bytes (or fewer at the pipe's end) into `out` at its
    /// position; 0 if `out` cannot take a splice.
    fn splice_to(&self, out: &File, len: usize) -> io::Result<usize> {
        loop {
            // SAFETY: plain descriptors and null offsets (`out` at its position).
            let ret = unsafe {
                libc::splice(
                    self.read.as_raw_fd(),
                    std::ptr::null_mut(),
                    out.as_raw_fd(),
                    std::ptr::null_mut(),
                    len,
                    libc::SPLICE_F_MOVE,
                )
            };
            match check_size(ret) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A terminal, an append-only file: the caller copies.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(0),
                other => return other,
            }
        }
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: reads at most buf.len() bytes into a valid buffer.
            let ret =
                unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            match check_size(ret) {
                Ok(0) if !buf.is_empty() => return Err(io::ErrorKind::UnexpectedEof.into()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

#[cfg(target_os = "linux")]
impl Pipe {
    /// A pipe for a stream whose receiver grants at most `window` bytes.
    pub fn new(window: u64) -> io::Result<Option<Pipe>> {
        let window = usize::try_from(window).unwrap_or(usize::MAX);
        let mut lanes = Vec::new();
        let mut room = 0;
        // One lane more than the window needs: payloads that start or end
        // inside a page take a slot for less than a page.
        while lanes.len() < MAX_LANES {
            let (lane, size) = Lane::new(window)?;
            lanes.push(lane);
            if room >= window {
                break;
            }
            room += size;
        }
        Ok(Some(Pipe {
            lanes,
            filling: Default::default(),
        }))
    }

    /// Moves up to `len` bytes from `socket` into the lanes without
    /// blocking, noting where in `pieces`. `Err(WouldBlock)` means the socket
    /// has nothing yet.
    pub(super) fn splice_from(
        &self,
        socket: BorrowedFd<'_>,
        len: usize,
        pieces: &mut Pieces,
    ) -> io::Result<Spliced> {
        for (i, lane) in self.in_turn() {
            // SAFETY: plain descriptors and null offsets (both ends are streams).
            let ret = unsafe {
                libc::splice(
                    socket.as_raw_fd(),
                    std::ptr::null_mut(),
                    lane.write.as_raw_fd(),
                    std::ptr::null_mut(),
                    len,
                    libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
                )
            };
            match check_size(ret) {
                Ok(0) => return Ok(Spliced::End),
                Ok(n) => {
                    self.filled(i, n, pieces);
                    return Ok(Spliced::Moved(n));
                }
                // EAGAIN when the lane is full and when the socket is empty:
                // only the second is a reason to wait for the socket.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if queued(socket)? == 0 {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Spliced::PipeFull)
    }

    /// Copies as much of `bytes` into the lanes as fits, without blocking,
    /// noting where in `pieces`; returns how much.
    pub(super) fn fill_from(&self, bytes: &[u8], pieces: &mut Pieces) -> io::Result<usize> {
        let mut done = 0;
        for (i, lane) in self.in_turn() {
            let rest = &bytes[done..];
            if rest.is_empty() {
                break;
            }
            // SAFETY: writes at most rest.len() bytes from a valid slice.
            let ret =
                unsafe { libc::write(lane.write.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            match check_size(ret) {
                Ok(n) => {
                    self.filled(i, n, pieces);
                    done += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Moves the first `max` bytes of `pieces` (all of them if fewer) into
    /// `out` at its position: by splice, or through memory when `out` cannot
    /// take a splice (a terminal, an append-only file). Returns how many.
    pub fn drain_into(&self, pieces: &mut Pieces, out: &File, max: usize) -> io::Result<usize> {
        let mut done = 0;
        while let Some(&(lane, len)) = pieces.queue.front() {
            let want = len.min(max - done);
            if want == 0 {
                break;
            }
            let lane = self.lane(lane)?;
            let n = match lane.splice_to(out, want)? {
                0 => copy(lane, out, want)?,
                n => n,
            };
            pieces.took(n);
            done += n;
        }
        Ok(done)
    }

    /// Reads from the first of `pieces` into memory, for a consumer that
    /// needs the bytes themselves (to decompress them); 0 once none are left.
    pub fn read(&self, pieces: &mut Pieces, buf: &mut [u8]) -> io::Result<usize> {
        let Some(&(lane, len)) = pieces.queue.front() else {
            return Ok(0);
        };
        let want = len.min(buf.len());
        let n = self.lane(lane)?.read(&mut buf[..want])?;
        pieces.took(n);
        Ok(n)
    }

    /// The lanes, starting with the one being filled.
    fn in_turn(&self) -> impl Iterator<Item = (usize, &Lane)> {
        let first = self.filling.load(std::sync::atomic::Ordering::Relaxed);
        (0..self.lanes.len())
            .map(move |k| (first + k) % self.lanes.len())
            .filter_map(|i| Some((i, self.lanes.get(i)?)))
    }

    fn filled(&self, lane: usize, n: usize, pieces: &mut Pieces) {
        pieces.push(lane, n);
        self.filling
            .store(lane, std::sync::atomic::Ordering::Relaxed);
    }

    fn lane(&self, lane: usize) -> io::Result<&Lane> {
        self.lanes.get(lane).ok_or_else(|| {
            io::Error::other("a piece of a payload names a lane its pipe does not have")
        })
    }
}

/// Copies `len` bytes from `lane` into `out` through memory.
#[cfg(target_os = "linux")]
fn copy(lane: &Lane, mut out: &File, len: usize) -> io::Result<usize> {
    use std::io::Write;
    let mut buf = vec![0; len.min(64 << 10)];
    let n = lane.read(&mut buf)?;
    out.write_all(&buf[..n])?;
    Ok(n)
}

/// How many bytes wait in a socket's receive queue.
#[cfg(target_os = "linux")]
fn queued(socket: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the valid pointer.
    check(unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut n) })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Sends up to `len` bytes of `file` from `*offset` on the non-blocking
/// `socket`, advancing `*offset`; `Err(WouldBlock)` when the socket is full.
#[cfg(target_os = "linux")]
pub(super) fn send_file(
    socket: BorrowedFd<'_>,
    file: &File,
    offset: &mut u64,
    len: usize,
) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(*offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset past any file"))?;
    // SAFETY: sendfile reads and updates the off_t through the valid pointer.
    let ret = unsafe { libc::sendfile(socket.as_raw_fd(), file.as_raw_fd(), &mut off, len) };
    let n = check_size(ret)?;
    *offset += n as u64;
    Ok(n)
}

/// The Unix socket under a reader or writer, if that is what it is: the
/// zero-copy paths need its descriptor and its readiness.
#[cfg(target_os = "linux")]
pub(super) fn unix_socket<T: std::any::Any>(io: &T) -> Option<&UnixStream> {
    let io: &dyn std::any::Any = io;
    io.downcast_ref::<OwnedReadHalf>()
        .map(AsRef::as_ref)
        .or_else(|| io.downcast_ref::<OwnedWriteHalf>().map(AsRef::as_ref))
        .or_else(|| io.downcast_ref::<UnixStream>())
}

/// Splices up to `len` bytes from `socket` into `pipe`, waiting for the
/// socket to have some.
#[cfg(target_os = "linux")]
pub(super) async fn splice_from(
    socket: &UnixStream,
    pipe: &Pipe,
    len: usize,
    pieces: &mut Pieces,
) -> io::Result<Spliced> {
    loop {
        socket.readable().await?;
        match socket.try_io(tokio::io::Interest::READABLE, || {
            pipe.splice_from(socket.as_fd(), len, pieces)
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => return other,
        }
    }
}

/// How many files a peer may send with one read's worth of bytes; more is
/// not fulmar's protocol (a request lends one).
#[cfg(target_os = "linux")]
pub(super) const FILES_PER_READ: usize = 4;

/// Reads what `socket` has, up to `buf.len()` bytes, keeping the files the
/// peer sent with them (`SCM_RIGHTS`) in `files`. The kernel never joins the
/// bytes of a message that carries files with later ones, so the files come
/// with the read that reaches the first byte they were sent with.
#[cfg(target_os = "linux")]
pub(super) async fn receive_with_files(
    socket: &UnixStream,
    buf: &mut [u8],
    files: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut control = nix::cmsg_space!([RawFd; FILES_PER_READ]);
    loop {
        socket.readable().await?;
        let received = socket.try_io(tokio::io::Interest::READABLE, || {
            let mut iov = [io::IoSliceMut::new(buf)];
            let msg = recvmsg::<()>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut control),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )?;
            let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
            for cmsg in msg.cmsgs()? {
                if let ControlMessageOwned::ScmRights(fds) = cmsg {
                    // SAFETY: the kernel has just installed these descriptors
                    // in this process for this message; nothing else owns them.
                    files.extend(
                        fds.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            if truncated {
                return Err(io::Error::other(format!(
                    "the peer sent more than {FILES_PER_READ} files at once"
                )));
            }
            Ok(msg.bytes)
        });
        match received {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => return other,
        }
    }
}

/// Writes all of `bytes` to `socket`, the first of them in one message with
/// `file` (`SCM_RIGHTS`): the peer receives the open file itself, with the
/// access this process opened it with.
#[cfg(target_os = "linux")]
pub(super) async fn send_with_file(
    socket: &UnixStream,
    bytes: &[u8],
    file: BorrowedFd<'_>,
) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let fds = [file.as_raw_fd()];
    loop {
        socket.writable().await?;
        let sent = socket.try_io(tokio::io::Interest::WRITABLE, || {
            let iov = [io::IoSlice::new(bytes)];
            let rights = [ControlMessage::ScmRights(&fds)];
            Ok(sendmsg::<()>(
                socket.as_raw_fd(),
                &iov,
                &rights,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )?)
        });
        match sent {
            Ok(n) => return write_socket(socket, &bytes[n..]).await,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `bytes` to the socket under a writer.
#[cfg(target_os = "linux")]
pub(super) async fn write_socket(socket: &UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        socket.writable().await?;
        match socket.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Lets a socket that carries file frames hold `bytes` unread, so that a
/// frame goes out in a sendfile call or two instead of one per 200 KiB of
/// the default buffer. The system may grant less (`wmem_max`): only a speed-up.
#[cfg(target_os = "linux")]
pub(super) fn widen_send_buffer(socket: &UnixStream, bytes: usize) {
    use nix::sys::socket::{setsockopt, sockopt::SndBuf};
    let _ = setsockopt(socket, SndBuf, &bytes);
}

/// Sends `len` bytes of `file` from `offset` on the socket by sendfile.
#[cfg(target_os = "linux")]
pub(super) async fn send_file_range(
    socket: &UnixStream,
    file: &File,
    mut offset: u64,
    len: usize,
) -> io::Result<()> {
    let end = offset + len as u64;
    while offset < end {
        socket.writable().await?;
        let want = usize::try_from(end - offset).unwrap_or(usize::MAX);
        match socket.try_io(tokio::io::Interest::WRITABLE, || {
            send_file(socket.as_fd(), file, &mut offset, want)
        }) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended before the data frame sent from it",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
impl Pipe {
    /// No pipe here: payloads go through memory.
    pub fn new(_window: u64) -> io::Result<Option<Pipe>> {
        Ok(None)
    }

    pub fn drain_into(&self, _: &mut Pieces, _: &File, _: usize) -> io::Result<usize> {
        match self.never {}
    }

    pub fn read(&self, _: &mut Pieces, _: &mut [u8]) -> io::Result<usize> {
        match self.never {}
    }
}
