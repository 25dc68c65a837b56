//! Console capture: the FIFO a tender writes its console to, the reader that
//! drains it into a bounded history, and the subscribers that follow it.
//!
//! # Wiring one run of a unikernel
//!
//! A FIFO's read end reports end-of-file once every writer has closed, and a
//! writer cannot open it until a reader has. So, in this order:
//!
//! 1. [`create_fifo`] in the runtime directory (an existing FIFO is reused, which
//!    is what a restarted daemon needs to re-adopt a running tender);
//! 2. [`open_reader`], before anything can write, so no early output is lost;
//! 3. [`open_writer`], and give it to the tender as stdout and stderr
//!    (`Stdio::from(writer.try_clone()?)`, `Stdio::from(writer)`);
//! 4. spawn the tender, then drop every copy of the writer the daemon still has.
//!    The reader sees end-of-file only when all writers are closed, so a copy
//!    kept here would keep the drain waiting after the tender is gone;
//! 5. `tokio::spawn(drain(reader, console.clone()))`, at any point after step 3:
//!    the pipe holds what was written meanwhile, and once it is full the tender
//!    waits rather than losing output. The drain returns at end-of-file, when
//!    the tender and every process it handed the descriptor to have exited;
//! 6. after reaping the tender, await the drain before [`Console::mark`]ing the
//!    exit, so the mark comes after the last line the tender wrote.
//!
//! A restarted daemon re-adopting a tender does steps 1, 2 and 5 only. If that
//! tender has already gone, no writer will ever connect, so no end-of-file
//! comes: abort the drain task once the process is known to be gone. While no
//! daemon has the FIFO open for reading, a tender's console write fails with
//! `EPIPE` (or kills it with `SIGPIPE`): the writer is `O_WRONLY`, as albatross
//! opens it.
//!
//! The drain never waits for subscribers: each has a bounded queue and, when it
//! falls behind, is told how many lines it missed ([`ConsoleEvent::Dropped`]).

use crate::api::console::{ConsoleEvent, ConsoleLine, LineSource, Since};
use crate::api::time::now_ms;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::stat::Mode;
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;
use tokio::sync::broadcast;

/// Lines up to this many bytes are kept whole; longer ones are split into
/// chunks of this size, each after the first marked `continued`.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Per read from the FIFO.
const READ_BYTES: usize = 64 * 1024;

/// What the FIFO may hold: Linux's limit for unprivileged users by default.
#[cfg(target_os = "linux")]
const PIPE_BYTES: i32 = 1024 * 1024;

/// The most a subscriber queue may hold; the queue is allocated up front.
pub const MAX_SUBSCRIBER_QUEUE: usize = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(
        "{path} exists and is not a FIFO, so it cannot be a console: fulmar leaves it alone; move it out of the runtime directory"
    )]
    NotAFifo { path: PathBuf },
    #[error(
        "cannot create the console FIFO {path}: {source}; check that the runtime directory exists and fulmar may write to it"
    )]
    Create {
        path: PathBuf,
        source: nix::errno::Errno,
    },
    #[error("cannot look at {path}: {source}; check the runtime directory's permissions")]
    Inspect { path: PathBuf, source: io::Error },
    #[error("cannot open the console FIFO {path} for reading: {source}")]
    OpenReader { path: PathBuf, source: io::Error },
    #[error(
        "cannot open the console FIFO {path} for writing: nothing has it open for reading (fulmar must open the reader first; this is a bug)"
    )]
    NoReader { path: PathBuf },
    #[error("cannot open the console FIFO {path} for writing: {source}")]
    OpenWriter { path: PathBuf, source: io::Error },
    #[error("cannot remove the console FIFO {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("reading a console failed: {0}; the lines read before are kept")]
    Read(#[source] io::Error),
}

/// Makes the console FIFO at `path`, readable and writable by fulmar only.
/// A FIFO already there is reused; anything else there is an error and is
/// left exactly as it is.
pub fn create_fifo(path: &Path) -> Result<(), ConsoleError> {
    match nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EEXIST) => require_fifo(path),
        Err(source) => Err(ConsoleError::Create {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Removes the console FIFO at `path` after a run; something that is not a
/// FIFO is an error and stays, and a FIFO already gone is fine.
pub fn remove_fifo(path: &Path) -> Result<(), ConsoleError> {
    match require_fifo(path) {
        Err(ConsoleError::Inspect { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(())
        }
        Err(e) => Err(e),
        Ok(()) => std::fs::remove_file(path).map_err(|source| ConsoleError::Remove {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Does not follow a symbolic link: a link is not a FIFO of ours.
fn require_fifo(path: &Path) -> Result<(), ConsoleError> {
    let meta = std::fs::symlink_metadata(path).map_err(|source| ConsoleError::Inspect {
        path: path.to_owned(),
        source,
    })?;
    if meta.file_type().is_fifo() {
        Ok(())
    } else {
        Err(ConsoleError::NotAFifo {
            path: path.to_owned(),
        })
    }
}

/// Opens the read end of the console FIFO, without waiting for a writer. Call
/// it inside the tokio runtime, before [`open_writer`] (see the module docs).
pub fn open_reader(path: &Path) -> Result<pipe::Receiver, ConsoleError> {
    let reader = pipe::OpenOptions::new()
        .open_receiver(path)
        .map_err(|source| match source.kind() {
            io::ErrorKind::InvalidInput => ConsoleError::NotAFifo {
                path: path.to_owned(),
            },
            _ => ConsoleError::OpenReader {
                path: path.to_owned(),
                source,
            },
        })?;
    enlarge(&reader, path);
    Ok(reader)
}

/// A larger pipe lets a burst wait there instead of stalling the tender, and
/// wakes the reader less often. The default still works, so a refusal (an
/// unprivileged user over its pipe quota) is no error.
#[cfg(target_os = "linux")]
fn enlarge(reader: &pipe::Receiver, path: &Path) {
    if let Err(e) = fcntl(reader, FcntlArg::F_SETPIPE_SZ(PIPE_BYTES)) {
        tracing::debug!(
            "console FIFO {} keeps its default size: {e}",
            path.display()
        );
    }
}

/// Pipes have a fixed size elsewhere.
#[cfg(not(target_os = "linux"))]
fn enlarge(_reader: &pipe::Receiver, _path: &Path) {}

/// Opens the write end of the console FIFO (`O_WRONLY|O_APPEND`), blocking, for
/// the tender's stdout and stderr. Fails with [`ConsoleError::NoReader`] rather
/// than hanging when no reader is open.
pub fn open_writer(path: &Path) -> Result<File, ConsoleError> {
    let open_error = |source: io::Error| ConsoleError::OpenWriter {
        path: path.to_owned(),
        source,
    };
    // O_NONBLOCK makes a missing reader an error (ENXIO) instead of a hang.
    let file = std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ENXIO) => ConsoleError::NoReader {
                path: path.to_owned(),
            },
            _ => open_error(source),
        })?;
    if !file.metadata().map_err(open_error)?.file_type().is_fifo() {
        return Err(ConsoleError::NotAFifo {
            path: path.to_owned(),
        });
    }
    // The tender shares this open file and expects a blocking stdout: with
    // O_NONBLOCK a full pipe would make its writes fail instead of wait.
    let flags = fcntl(&file, FcntlArg::F_GETFL).map_err(|e| open_error(e.into()))?;
    let blocking = OFlag::from_bits_retain(flags) - OFlag::O_NONBLOCK;
    fcntl(&file, FcntlArg::F_SETFL(blocking)).map_err(|e| open_error(e.into()))?;
    Ok(file)
}

/// Reads `input` (the FIFO's read end) until end-of-file into `console`, one
/// line per `'\n'`; a last line without one is kept too. Returns at end-of-file,
/// or at a read error after keeping what it had read.
pub async fn drain(
    mut input: impl AsyncRead + Unpin,
    console: Console,
) -> Result<(), ConsoleError> {
    let mut buf = vec![0; READ_BYTES];
    let mut splitter = LineSplitter::default();
    let result = loop {
        match input.read(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => {
                let mut lines = Lines::with_capacity(splitter.pending() + n);
                splitter.feed(&buf[..n], &mut lines);
                console.append(LineSource::Unikernel, lines);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(ConsoleError::Read(e)),
        }
    };
    let mut last = Lines::with_capacity(splitter.pending());
    splitter.finish(&mut last);
    console.append(LineSource::Unikernel, last);
    result
}

/// How much history a console keeps, and how far a subscriber may fall behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleLimits {
    /// The most lines kept; the oldest go first.
    pub max_lines: usize,
    /// The most bytes of line content kept; the oldest lines go first. The
    /// newest line is always kept, even when it alone is larger.
    pub max_bytes: usize,
    /// How many batches of lines a subscriber may fall behind before it
    /// misses some; a batch is what one read brought (at most 128 KiB with
    /// a line carried over from the read before) or one mark. A stalled
    /// subscriber holds on to this many batches, so a console's memory is
    /// bounded by `max_bytes` plus this many reads, however many subscribers
    /// stall (64: at most 8 MiB). Taken as 1 to [`MAX_SUBSCRIBER_QUEUE`].
    pub subscriber_queue: usize,
}

impl Default for ConsoleLimits {
    fn default() -> ConsoleLimits {
        ConsoleLimits {
            max_lines: 10_000,
            max_bytes: 4 * 1024 * 1024,
            subscriber_queue: 64,
        }
    }
}

/// The console of one unikernel: its recent lines and its subscribers. It
/// outlives runs, so history survives exits and restarts. Clones share it.
#[derive(Clone)]
pub struct Console {
    ring: Arc<Mutex<Ring>>,
}

/// The history and the live channel sit under one lock: a batch enters both
/// at once, and a subscriber takes its history and its place in the channel
/// at once, so it sees every line exactly once.
///
/// Lines are stored and sent a batch at a time, not one by one: ingest then
/// costs a few allocations per read however short the lines are, and making
/// [`ConsoleLine`]s is left to whoever reads them.
struct Ring {
    limits: ConsoleLimits,
    batches: VecDeque<Arc<Batch>>,
    /// Lines at the start of the oldest batch that were already evicted.
    evicted: usize,
    lines: usize,
    bytes: usize,
    next_seq: u64,
    live: broadcast::Sender<Arc<Batch>>,
}

impl Console {
    pub fn new(limits: ConsoleLimits) -> Console {
        let queue = limits.subscriber_queue.clamp(1, MAX_SUBSCRIBER_QUEUE);
        let (live, _) = broadcast::channel(queue);
        Console {
            ring: Arc::new(Mutex::new(Ring {
                limits,
                batches: VecDeque::new(),
                evicted: 0,
                lines: 0,
                bytes: 0,
                next_seq: 0,
                live,
            })),
        }
    }

    /// Adds a line of fulmar's own, e.g. `--- exited with code 2 ---`.
    pub fn mark(&self, text: &str) {
        let mut lines = Lines::with_capacity(text.len());
        lines.copy_line(text.as_bytes(), false);
        self.append(LineSource::Fulmar, lines);
    }

    /// The part of the history `since` asks for, oldest first.
    pub fn history(&self, since: Since) -> Vec<ConsoleLine> {
        let window = self.lock().select(since);
        materialize(&window)
    }

    /// The part of the history `since` asks for, and every line after it as it
    /// comes: no line is missing between the two and none is in both. The
    /// subscription does not keep the console alive; dropping it unsubscribes.
    pub fn subscribe(&self, since: Since) -> (Vec<ConsoleLine>, Subscription) {
        let (window, subscription) = {
            let ring = self.lock();
            let subscription = Subscription {
                live: ring.live.subscribe(),
                current: None,
                next_seq: ring.next_seq,
            };
            (ring.select(since), subscription)
        };
        (materialize(&window), subscription)
    }

    /// Takes the lock once for the whole batch.
    fn append(&self, source: LineSource, mut lines: Lines) {
        if lines.spans.is_empty() {
            return;
        }
        // The buffer was sized for a whole read; the history keeps only lines.
        lines.data.shrink_to_fit();
        lines.spans.shrink_to_fit();
        let at_ms = now_ms();
        self.lock().push(source, at_ms, lines);
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // A panic elsewhere cannot leave the ring half-updated in a way that
        // matters more than losing the console, so keep going.
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Console {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ring = self.lock();
        f.debug_struct("Console")
            .field("limits", &ring.limits)
            .field("lines", &ring.lines)
            .field("bytes", &ring.bytes)
            .field("next_seq", &ring.next_seq)
            .field("subscribers", &ring.live.receiver_count())
            .finish()
    }
}

/// Some lines of a batch: `(batch, first index, end index)`.
type Window = Vec<(Arc<Batch>, usize, usize)>;

impl Ring {
    fn push(&mut self, source: LineSource, at_ms: u64, lines: Lines) {
        let count = lines.spans.len();
        let batch = Arc::new(Batch {
            first_seq: self.next_seq,
            at_ms,
            source,
            lines,
        });
        self.next_seq += count as u64;
        self.lines += count;
        self.bytes += batch.lines.content;
        self.batches.push_back(Arc::clone(&batch));
        self.evict();
        // Sending fails only when nobody subscribes; the lines are in the history.
        let _ = self.live.send(batch);
    }

    /// Drops the oldest lines while over a limit, always keeping the newest.
    fn evict(&mut self) {
        let max_lines = self.limits.max_lines.max(1);
        while self.lines > 1 && (self.lines > max_lines || self.bytes > self.limits.max_bytes) {
            let Some(oldest) = self.batches.front() else {
                return;
            };
            let span = oldest.lines.spans[self.evicted];
            self.bytes -= span.end - span.start;
            self.lines -= 1;
            self.evicted += 1;
            if self.evicted == oldest.lines.spans.len() {
                self.batches.pop_front();
                self.evicted = 0;
            }
        }
    }

    /// Cheap enough to run under the lock: it only picks batches.
    fn select(&self, since: Since) -> Window {
        let all = self.batches.iter().enumerate().map(|(i, batch)| {
            let from = if i == 0 { self.evicted } else { 0 };
            (Arc::clone(batch), from, batch.lines.spans.len())
        });
        match since {
            Since::Everything => all.collect(),
            Since::Nothing => Vec::new(),
            Since::TimeMs(t) => all.filter(|(batch, ..)| batch.at_ms >= t).collect(),
            Since::LastLines(n) => {
                let mut wanted = usize::try_from(n).unwrap_or(usize::MAX);
                let mut window: Window = Vec::new();
                for (batch, from, to) in all.rev() {
                    if wanted == 0 {
                        break;
                    }
                    let take = wanted.min(to - from);
                    wanted -= take;
                    window.push((batch, to - take, to));
                }
                window.reverse();
                window
            }
        }
    }
}

fn materialize(window: &Window) -> Vec<ConsoleLine> {
    window
        .iter()
        .flat_map(|(batch, from, to)| (*from..*to).map(|i| batch.line(i)))
        .collect()
}

/// The live lines of a console, from [`Console::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    live: broadcast::Receiver<Arc<Batch>>,
    /// The batch being handed out, and the index of its next line.
    current: Option<(Arc<Batch>, usize)>,
    /// The next line this subscriber should see if it missed none.
    next_seq: u64,
}

impl Subscription {
    /// The next line, or how many lines this subscriber missed by falling
    /// behind; `None` once the console is gone and every line before that was
    /// received. Cancel-safe, so it may sit in a `select!`.
    pub async fn recv(&mut self) -> Option<ConsoleEvent> {
        loop {
            if let Some((batch, index)) = &mut self.current {
                if *index < batch.lines.spans.len() {
                    let line = batch.line(*index);
                    *index += 1;
                    self.next_seq = line.seq + 1;
                    return Some(ConsoleEvent::Line(line));
                }
                self.current = None;
            }
            match self.live.recv().await {
                Ok(batch) => {
                    let missed = batch.first_seq.saturating_sub(self.next_seq);
                    self.next_seq = batch.first_seq;
                    self.current = Some((batch, 0));
                    if missed > 0 {
                        return Some(ConsoleEvent::Dropped { count: missed });
                    }
                }
                // Batches vary in size, so the count of lines comes from the
                // gap in sequence numbers at the next batch instead.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Lines that arrived together: one read of the FIFO, or one mark.
#[derive(Debug)]
struct Batch {
    first_seq: u64,
    at_ms: u64,
    source: LineSource,
    lines: Lines,
}

impl Batch {
    fn line(&self, index: usize) -> ConsoleLine {
        let (bytes, continued) = self.lines.get(index);
        ConsoleLine {
            seq: self.first_seq + index as u64,
            at_ms: self.at_ms,
            bytes: bytes.to_vec(),
            continued,
            source: self.source,
        }
    }
}

/// Lines cut from one buffer: what one read brought, or one mark.
#[derive(Debug, Default)]
struct Lines {
    /// The bytes the lines were cut from, newlines included.
    data: Vec<u8>,
    spans: Vec<Span>,
    /// The bytes in lines, newlines not counted.
    content: usize,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    continued: bool,
}

impl Lines {
    fn with_capacity(bytes: usize) -> Lines {
        Lines {
            data: Vec::with_capacity(bytes),
            ..Lines::default()
        }
    }

    fn copy_line(&mut self, bytes: &[u8], continued: bool) {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.add(start, self.data.len(), continued);
    }

    /// Copies `text`, whole lines each ending in `'\n'`, in one go rather
    /// than line by line.
    fn copy_lines(&mut self, text: &[u8]) {
        let base = self.data.len();
        self.data.extend_from_slice(text);
        let mut start = base;
        for newline in memchr::memchr_iter(b'\n', text) {
            self.add(start, base + newline, false);
            start = base + newline + 1;
        }
    }

    /// Records `data[start..end]` as a line, in chunks of at most
    /// [`MAX_LINE_BYTES`], each after the first marked `continued`.
    fn add(&mut self, mut start: usize, end: usize, mut continued: bool) {
        self.content += end - start;
        while end - start > MAX_LINE_BYTES {
            self.spans.push(Span {
                start,
                end: start + MAX_LINE_BYTES,
                continued,
            });
            start += MAX_LINE_BYTES;
            continued = true;
        }
        self.spans.push(Span {
            start,
            end,
            continued,
        });
    }

    fn get(&self, index: usize) -> (&[u8], bool) {
        let span = self.spans[index];
        (&self.data[span.start..span.end], span.continued)
    }
}

/// Cuts a byte stream into lines, carrying an unfinished line from one read to
/// the next.
#[derive(Default)]
struct LineSplitter {
    /// The unfinished line, at most [`MAX_LINE_BYTES`] between reads; never
    /// empty while `continuing`.
    partial: Vec<u8>,
    /// A chunk of the unfinished line was already emitted.
    continuing: bool,
}

impl LineSplitter {
    /// Bytes carried over from earlier reads.
    fn pending(&self) -> usize {
        self.partial.len()
    }

    fn feed(&mut self, data: &[u8], out: &mut Lines) {
        let mut rest = data;
        if !self.partial.is_empty() {
            let Some(end) = memchr::memchr(b'\n', rest) else {
                self.carry(rest, out);
                return;
            };
            self.partial.extend_from_slice(&rest[..end]);
            self.end_line(out);
            rest = &rest[end + 1..];
        }
        let whole = memchr::memrchr(b'\n', rest).map_or(0, |last| last + 1);
        out.copy_lines(&rest[..whole]);
        self.carry(&rest[whole..], out);
    }

    /// At end-of-file: a last line without `'\n'` still counts.
    fn finish(&mut self, out: &mut Lines) {
        if !self.partial.is_empty() {
            self.end_line(out);
        }
    }

    /// Keeps the start of a line whose end has not come yet. Full chunks of a
    /// long one go out at once, but 1 to [`MAX_LINE_BYTES`] bytes stay behind:
    /// a line of exactly that length is kept whole if `'\n'` comes next.
    fn carry(&mut self, data: &[u8], out: &mut Lines) {
        self.partial.extend_from_slice(data);
        if self.partial.len() > MAX_LINE_BYTES {
            let ready = (self.partial.len() - 1) / MAX_LINE_BYTES * MAX_LINE_BYTES;
            out.copy_line(&self.partial[..ready], self.continuing);
            self.partial.drain(..ready);
            self.continuing = true;
        }
    }

    fn end_line(&mut self, out: &mut Lines) {
        out.copy_line(&self.partial, self.continuing);
        self.partial.clear();
        self.continuing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::process::{Command, Stdio};

    fn limits(max_lines: usize, max_bytes: usize) -> ConsoleLimits {
        ConsoleLimits {
            max_lines,
            max_bytes,
            ..ConsoleLimits::default()
        }
    }

    fn contents(lines: &[ConsoleLine]) -> Vec<(Vec<u8>, bool)> {
        lines
            .iter()
            .map(|l| (l.bytes.clone(), l.continued))
            .collect()
    }

    fn seqs(lines: &[ConsoleLine]) -> Vec<u64> {
        lines.iter().map(|l| l.seq).collect()
    }

    async fn capture(console: &Console, input: &[u8]) {
        drain(input, console.clone()).await.unwrap();
    }

    async fn captured(input: &[u8]) -> Vec<ConsoleLine> {
        let console = Console::new(ConsoleLimits::default());
        capture(&console, input).await;
        console.history(Since::Everything)
    }

    fn whole(text: &[u8]) -> (Vec<u8>, bool) {
        (text.to_vec(), false)
    }

    /// Bytes that tell their positions apart, so a misplaced chunk shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| b'a' + (i % 26) as u8).collect()
    }

    #[tokio::test]
    async fn empty_lines_carriage_returns_and_invalid_utf8_are_kept_as_written() {
        let lines = captured(b"one\r\n\n\nfour \xff\xfe\x80\n\x1b[31mred\r\n\r\n").await;
        assert_eq!(
            contents(&lines),
            [
                whole(b"one\r"),
                whole(b""),
                whole(b""),
                whole(b"four \xff\xfe\x80"),
                whole(b"\x1b[31mred\r"),
                whole(b"\r"),
            ]
        );
        assert!(lines.iter().all(|l| l.source == LineSource::Unikernel));
    }

    #[tokio::test]
    async fn a_last_line_without_newline_is_kept_at_end_of_file() {
        assert_eq!(
            contents(&captured(b"first\nno newline").await),
            [whole(b"first"), whole(b"no newline")]
        );
        assert_eq!(contents(&captured(b"first\n").await), [whole(b"first")]);
        assert!(captured(b"").await.is_empty());
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_limit_is_kept_whole() {
        let line = pattern(MAX_LINE_BYTES);
        let input = [&line[..], b"\n", &line[..]].concat();
        assert_eq!(
            contents(&captured(&input).await),
            [(line.clone(), false), (line, false)]
        );
    }

    #[tokio::test]
    async fn a_longer_line_is_split_into_marked_chunks_that_reassemble() {
        for len in [
            MAX_LINE_BYTES + 1,
            2 * MAX_LINE_BYTES,
            3 * MAX_LINE_BYTES + 5,
        ] {
            let line = pattern(len);
            let input = [&line[..], b"\nnext\n"].concat();
            let lines = captured(&input).await;
            let (chunks, rest) = lines.split_at(len.div_ceil(MAX_LINE_BYTES));
            assert_eq!(contents(rest), [whole(b"next")], "after a {len}-byte line");
            assert!(!chunks[0].continued);
            assert!(chunks[1..].iter().all(|c| c.continued));
            assert!(chunks.iter().all(|c| c.bytes.len() <= MAX_LINE_BYTES));
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.bytes.clone()).collect();
            assert_eq!(joined, line, "a {len}-byte line does not reassemble");
        }
    }

    /// What the lines of `input` are, worked out in one go rather than streamed.
    fn reference_lines(input: &[u8]) -> Vec<(Vec<u8>, bool)> {
        let mut pieces: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        if pieces.last().is_some_and(|last| last.is_empty()) {
            pieces.pop();
        }
        let mut lines = Vec::new();
        for piece in pieces {
            if piece.is_empty() {
                lines.push(whole(b""));
            }
            for (i, chunk) in piece.chunks(MAX_LINE_BYTES).enumerate() {
                lines.push((chunk.to_vec(), i > 0));
            }
        }
        lines
    }

    #[test]
    fn splitting_does_not_depend_on_where_reads_end() {
        // Short, empty and long lines in a deterministic jumble, ending mid-line.
        let mut input = Vec::new();
        let mut state = 12345u32;
        for _ in 0..200 {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let len = match state % 5 {
                0 => 0,
                1 => MAX_LINE_BYTES + (state as usize >> 8) % 3 - 1,
                2 => (state as usize >> 8) % (3 * MAX_LINE_BYTES),
                _ => (state as usize >> 8) % 100,
            };
            input.extend(pattern(len));
            input.push(b'\n');
        }
        input.extend(pattern(MAX_LINE_BYTES + 3));
        let expected = reference_lines(&input);

        for read in [
            1,
            7,
            4096,
            MAX_LINE_BYTES - 1,
            MAX_LINE_BYTES,
            MAX_LINE_BYTES + 1,
            input.len(),
        ] {
            let mut splitter = LineSplitter::default();
            let mut out = Lines::default();
            for piece in input.chunks(read) {
                splitter.feed(piece, &mut out);
            }
            splitter.finish(&mut out);
            let got: Vec<(Vec<u8>, bool)> = (0..out.spans.len())
                .map(|i| {
                    let (bytes, continued) = out.get(i);
                    (bytes.to_vec(), continued)
                })
                .collect();
            assert!(got == expected, "lines differ when reads are {read} bytes");
        }
    }

    #[tokio::test]
    async fn the_oldest_lines_go_beyond_the_line_limit() {
        let console = Console::new(limits(3, usize::MAX));
        capture(&console, b"0\n1\n2\n").await;
        capture(&console, b"3\n4\n").await;
        let lines = console.history(Since::Everything);
        assert_eq!(contents(&lines), [whole(b"2"), whole(b"3"), whole(b"4")]);
        assert_eq!(seqs(&lines), [2, 3, 4]);
        capture(&console, b"5\n").await;
        assert_eq!(seqs(&console.history(Since::Everything)), [3, 4, 5]);
    }

    #[tokio::test]
    async fn the_oldest_lines_go_beyond_the_byte_limit() {
        let console = Console::new(limits(usize::MAX, 10));
        capture(&console, b"aaaa\nbbbb\ncccc\n").await;
        assert_eq!(
            contents(&console.history(Since::Everything)),
            [whole(b"bbbb"), whole(b"cccc")]
        );
        // A line larger than the whole limit pushes out everything else but stays.
        capture(&console, b"this line is longer than ten bytes\n").await;
        assert_eq!(
            contents(&console.history(Since::Everything)),
            [whole(b"this line is longer than ten bytes")]
        );
    }

    #[test]
    fn eviction_matches_a_line_by_line_model() {
        let cases = [
            (0, 0),
            (1, usize::MAX),
            (5, usize::MAX),
            (usize::MAX, 1),
            (usize::MAX, 50),
            (7, 40),
        ];
        for (max_lines, max_bytes) in cases {
            let console = Console::new(limits(max_lines, max_bytes));
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            let mut state = 99u32;
            let mut random = |below: u32| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((state >> 8) % below) as usize
            };
            for _ in 0..300 {
                let mut lines = Lines::default();
                for _ in 0..random(6) {
                    let line = pattern(random(20));
                    lines.copy_line(&line, false);
                    model.push_back(line);
                    while model.len() > 1
                        && (model.len() > max_lines
                            || model.iter().map(Vec::len).sum::<usize>() > max_bytes)
                    {
                        model.pop_front();
                    }
                }
                console.append(LineSource::Unikernel, lines);
                let kept: Vec<Vec<u8>> = console
                    .history(Since::Everything)
                    .iter()
                    .map(|l| l.bytes.clone())
                    .collect();
                assert!(
                    kept.iter().eq(model.iter()),
                    "limits {max_lines} lines, {max_bytes} bytes: kept {kept:?}, expected {model:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn sequence_numbers_run_on_across_runs_marks_and_evictions() {
        let console = Console::new(limits(4, usize::MAX));
        capture(&console, b"a\nb\n").await;
        console.mark("--- exited with code 2 ---");
        capture(&console, b"c\nd\n").await;
        let lines = console.history(Since::Everything);
        assert_eq!(seqs(&lines), [1, 2, 3, 4]);
        assert_eq!(
            contents(&lines),
            [
                whole(b"b"),
                whole(b"--- exited with code 2 ---"),
                whole(b"c"),
                whole(b"d")
            ]
        );
        let sources: Vec<_> = lines.iter().map(|l| l.source).collect();
        assert_eq!(
            sources,
            [
                LineSource::Unikernel,
                LineSource::Fulmar,
                LineSource::Unikernel,
                LineSource::Unikernel
            ]
        );
    }

    #[tokio::test]
    async fn since_picks_the_history() {
        let console = Console::new(ConsoleLimits::default());
        capture(&console, b"a\nb\n").await;
        console.mark("m");
        capture(&console, b"c\n").await;
        let all = console.history(Since::Everything);
        assert_eq!(
            contents(&all),
            [whole(b"a"), whole(b"b"), whole(b"m"), whole(b"c")]
        );
        assert_eq!(seqs(&all), [0, 1, 2, 3]);
        assert!(console.history(Since::Nothing).is_empty());
        assert_eq!(seqs(&console.history(Since::LastLines(1))), [3]);
        assert_eq!(seqs(&console.history(Since::LastLines(3))), [1, 2, 3]);
        assert!(console.history(Since::LastLines(0)).is_empty());
        assert_eq!(
            seqs(&console.history(Since::LastLines(u64::MAX))),
            [0, 1, 2, 3]
        );
        assert_eq!(seqs(&console.history(Since::TimeMs(0))), [0, 1, 2, 3]);
        assert!(console.history(Since::TimeMs(u64::MAX)).is_empty());
        // The clock is not ours to set: check against the stamps the lines got.
        for line in &all {
            let expected: Vec<u64> = all
                .iter()
                .filter(|l| l.at_ms >= line.at_ms)
                .map(|l| l.seq)
                .collect();
            assert_eq!(seqs(&console.history(Since::TimeMs(line.at_ms))), expected);
        }
        assert!(
            all.iter().all(|l| l.at_ms > 1_600_000_000_000),
            "stamps are milliseconds since the epoch"
        );
    }

    #[test]
    fn create_fifo_makes_a_private_fifo_and_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.fifo");
        create_fifo(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_fifo());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        create_fifo(&path).unwrap();
        assert_eq!(std::fs::symlink_metadata(&path).unwrap().ino(), meta.ino());
        remove_fifo(&path).unwrap();
        assert!(!path.exists());
        remove_fifo(&path).unwrap();
    }

    #[test]
    fn create_fifo_refuses_and_keeps_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "keep me").unwrap();
        let fifo = dir.path().join("fifo");
        create_fifo(&fifo).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        let subdir = dir.path().join("dir");
        std::fs::create_dir(&subdir).unwrap();

        for path in [&file, &link, &subdir] {
            assert!(matches!(
                create_fifo(path),
                Err(ConsoleError::NotAFifo { .. })
            ));
            assert!(matches!(
                remove_fifo(path),
                Err(ConsoleError::NotAFifo { .. })
            ));
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(subdir.is_dir());
        assert!(matches!(
            open_writer(&file),
            Err(ConsoleError::NotAFifo { .. })
        ));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }

    #[tokio::test]
    async fn the_reader_refuses_a_regular_file_and_the_writer_needs_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "keep me").unwrap();
        assert!(matches!(
            open_reader(&file),
            Err(ConsoleError::NotAFifo { .. })
        ));
        let fifo = dir.path().join("fifo");
        create_fifo(&fifo).unwrap();
        assert!(matches!(
            open_writer(&fifo),
            Err(ConsoleError::NoReader { .. })
        ));
    }

    #[tokio::test]
    async fn the_reader_enlarges_the_pipe() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: only root is sure to get a larger pipe");
            return;
        }
        let (_dir, _path, reader) = fifo();
        assert_eq!(fcntl(&reader, FcntlArg::F_GETPIPE_SZ).unwrap(), PIPE_BYTES);
    }

    /// A FIFO with its reader open, in a fresh temporary directory.
    fn fifo() -> (tempfile::TempDir, PathBuf, pipe::Receiver) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console");
        create_fifo(&path).unwrap();
        let reader = open_reader(&path).unwrap();
        (dir, path, reader)
    }

    #[tokio::test]
    async fn the_writer_is_blocking_and_appends() {
        let (_dir, path, _reader) = fifo();
        let writer = open_writer(&path).unwrap();
        let flags = OFlag::from_bits_retain(fcntl(&writer, FcntlArg::F_GETFL).unwrap());
        assert!(!flags.contains(OFlag::O_NONBLOCK));
        assert!(flags.contains(OFlag::O_APPEND));
        assert_eq!(flags & OFlag::O_ACCMODE, OFlag::O_WRONLY);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fifo_carries_more_than_a_pipe_holds_and_ends_when_the_writer_closes() {
        let (_dir, path, reader) = fifo();
        let mut writer = open_writer(&path).unwrap();
        let console = Console::new(limits(usize::MAX, usize::MAX));
        let drained = tokio::spawn(drain(reader, console.clone()));
        let count = 50_000;
        std::thread::spawn(move || {
            for i in 0..count {
                writeln!(writer, "line {i}").unwrap();
            }
            writer.write_all(b"partial").unwrap();
        })
        .join()
        .unwrap();
        drained.await.unwrap().unwrap();
        let lines = console.history(Since::Everything);
        let expected: Vec<Vec<u8>> = (0..count)
            .map(|i| format!("line {i}").into_bytes())
            .chain([b"partial".to_vec()])
            .collect();
        let got: Vec<Vec<u8>> = lines.iter().map(|l| l.bytes.clone()).collect();
        assert!(
            got == expected,
            "lines lost or changed on the way through the FIFO"
        );
    }

    #[tokio::test]
    async fn a_child_that_wrote_and_exited_before_the_drain_started_loses_nothing() {
        let (_dir, path, reader) = fifo();
        let writer = open_writer(&path).unwrap();
        let missing = "/nonexistent/fulmar-console-test";
        let mut child = Command::new("ls")
            .arg(missing)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer.try_clone().unwrap()))
            .stderr(Stdio::from(writer))
            .spawn()
            .unwrap();
        assert!(!child.wait().unwrap().success());
        let mut echo = Command::new("echo")
            .arg("early output")
            .stdout(Stdio::from(open_writer(&path).unwrap()))
            .spawn()
            .unwrap();
        assert!(echo.wait().unwrap().success());

        // Both children are gone and every writer closed: the drain reads what
        // they left in the pipe and then sees end-of-file.
        let console = Console::new(ConsoleLimits::default());
        drain(reader, console.clone()).await.unwrap();
        let lines = console.history(Since::Everything);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let stderr = &lines[0].bytes;
        assert!(
            stderr
                .windows(missing.len())
                .any(|w| w == missing.as_bytes()),
            "ls's complaint on stderr was not captured: {lines:?}"
        );
        assert_eq!(lines[1].bytes, b"early output");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_child_writing_more_than_a_pipe_holds_is_captured_whole() {
        let (_dir, path, reader) = fifo();
        let writer = open_writer(&path).unwrap();
        let console = Console::new(limits(usize::MAX, usize::MAX));
        let drained = tokio::spawn(drain(reader, console.clone()));
        let mut child = tokio::process::Command::new("seq")
            .args(["1", "100000"])
            .stdout(Stdio::from(writer))
            .spawn()
            .unwrap();
        assert!(child.wait().await.unwrap().success());
        drained.await.unwrap().unwrap();
        let got: Vec<Vec<u8>> = console
            .history(Since::Everything)
            .iter()
            .map(|l| l.bytes.clone())
            .collect();
        let expected: Vec<Vec<u8>> = (1..=100_000)
            .map(|i: u32| i.to_string().into_bytes())
            .collect();
        assert!(
            got == expected,
            "seq's output was not captured line for line"
        );
    }

    async fn next_line(sub: &mut Subscription) -> ConsoleLine {
        match sub.recv().await {
            Some(ConsoleEvent::Line(line)) => line,
            other => panic!("expected a line, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscribing_while_lines_arrive_gives_no_gap_and_no_duplicate() {
        let count: u64 = 20_000;
        let console = Console::new(ConsoleLimits {
            max_lines: usize::MAX,
            max_bytes: usize::MAX,
            subscriber_queue: MAX_SUBSCRIBER_QUEUE,
        });
        let (_dir, path, reader) = fifo();
        let mut writer = open_writer(&path).unwrap();
        let drained = tokio::spawn(drain(reader, console.clone()));
        let writing = std::thread::spawn(move || {
            for i in 0..count {
                writeln!(writer, "line {i}").unwrap();
            }
        });

        // Subscribe at ten points while the lines pour in.
        let mut subscribers = Vec::new();
        for step in 0..10 {
            let seen = |c: &Console| {
                c.history(Since::LastLines(1))
                    .first()
                    .map_or(0, |l| l.seq + 1)
            };
            while seen(&console) < step * count / 10 {
                tokio::task::yield_now().await;
            }
            subscribers.push(console.subscribe(Since::Everything));
        }
        writing.join().unwrap();
        drained.await.unwrap().unwrap();
        console.mark("end");

        for (history, mut live) in subscribers {
            let mut lines = history;
            loop {
                let line = next_line(&mut live).await;
                if line.source == LineSource::Fulmar {
                    assert_eq!(line.bytes, b"end");
                    break;
                }
                lines.push(line);
            }
            assert_eq!(seqs(&lines), (0..count).collect::<Vec<_>>());
            assert!(
                lines
                    .iter()
                    .all(|l| l.bytes == format!("line {}", l.seq).into_bytes())
            );
        }
    }

    #[tokio::test]
    async fn a_stalled_subscriber_is_told_exactly_how_many_lines_it_missed() {
        let console = Console::new(ConsoleLimits {
            subscriber_queue: 16,
            ..ConsoleLimits::default()
        });
        let (_, mut stalled) = console.subscribe(Since::Nothing);
        let (_, mut steady) = console.subscribe(Since::Nothing);
        let (_dir, path, reader) = fifo();
        let mut writer = open_writer(&path).unwrap();
        let drained = tokio::spawn(drain(reader, console.clone()));

        // The steady subscriber keeps up, ten lines at a time; the stalled one
        // never reads, and neither the drain nor the steady one waits for it.
        let (rounds, per_round) = (100, 10);
        for round in 0..rounds {
            for i in 0..per_round {
                writeln!(writer, "line {}", round * per_round + i).unwrap();
            }
            for i in 0..per_round {
                let line = next_line(&mut steady).await;
                assert_eq!(line.seq, round * per_round + i);
            }
        }
        drop(writer);
        drained.await.unwrap().unwrap();
        let total = rounds * per_round;
        assert_eq!(
            seqs(&console.history(Since::Everything)),
            (0..total).collect::<Vec<_>>(),
            "the history did not get every line"
        );
        console.mark("end");

        let Some(ConsoleEvent::Dropped { count }) = stalled.recv().await else {
            panic!("the stalled subscriber was not told it missed lines");
        };
        assert!(count > 0 && count < total);
        let mut received = Vec::new();
        loop {
            let line = next_line(&mut stalled).await;
            if line.source == LineSource::Fulmar {
                break;
            }
            received.push(line.seq);
        }
        // It missed exactly the first `count` lines and got every one after.
        assert_eq!(received, (count..total).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn subscribers_do_not_keep_the_console_alive_or_linger() {
        let console = Console::new(ConsoleLimits::default());
        let receivers = |c: &Console| c.lock().live.receiver_count();
        let (_, first) = console.subscribe(Since::Nothing);
        let (_, mut second) = console.subscribe(Since::Nothing);
        assert_eq!(receivers(&console), 2);
        drop(first);
        assert_eq!(receivers(&console), 1);

        console.mark("last words");
        let alive = Arc::downgrade(&console.ring);
        drop(console);
        assert!(
            alive.upgrade().is_none(),
            "a subscription kept the console alive"
        );
        assert_eq!(next_line(&mut second).await.bytes, b"last words");
        assert!(second.recv().await.is_none());
    }
}
