//! The per-unikernel monitor: a small process between the daemon and one tender
//! that outlives the daemon, in the manner of conmon or containerd's shim, so a
//! restarted daemon re-adopts running unikernels and still learns how each ended.
//!
//! # The monitor process
//!
//! `fulmar monitor --status FILE --grace-ms N [--console FIFO] -- ARGV...` is a
//! hidden subcommand that only [`spawn`] starts. It is synchronous and small
//! (one thread, no runtime), since a host runs one per unikernel. It:
//!
//! 1. blocks the signals it waits for and leaves the daemon's session
//!    (`setsid`), so neither the daemon's death nor a terminal hangup reaches it;
//! 2. starts ARGV as its child, stdin `/dev/null`, stdout and stderr on the
//!    console FIFO (or `/dev/null` without one);
//! 3. writes the run file FILE ([`RunRecord`]: its own and the tender's pid and
//!    start time, and the boot id), so that any later daemon can find both and
//!    recognise them;
//! 4. confines itself with a seccomp filter to the calls it still needs (on
//!    Linux, x86_64 and aarch64; see `filter.rs`: the tender, already
//!    started, is not under it);
//! 5. answers `ready` (or `error REASON`) on stdout and lets go of its standard
//!    streams, which lead to the daemon;
//! 6. waits for signals: SIGTERM (the daemon's destroy) goes on to the tender,
//!    and SIGKILL to its process group follows after the grace period; when
//!    the tender ends, the monitor reaps it, adds how it ended to FILE and exits.
//!
//! Only the monitor signals the tender: it is its parent and reaps it, so the
//! pid names the tender whenever a signal is sent. The daemon signals only the
//! monitor, through a pidfd where the kernel has them, except when a monitor
//! has not ended a stopped run long after the grace period (it was stopped or
//! hangs): then [`Monitored::kill`] kills both, each checked by start time.
//!
//! Every write of FILE is atomic (temporary file, fsync, rename, fsync of the
//! directory), and the monitor writes it before it answers, so a daemon killed
//! at any point after that finds the run in FILE; it is the only record a daemon
//! needs to keep (where FILE is). The daemon removes FILE once it has recorded
//! the run's end; [`spawn`] removes a stale one before starting a monitor.
//!
//! # The console FIFO
//!
//! The tender's stdout and stderr are the FIFO's write end, opened
//! `O_WRONLY|O_APPEND` as albatross does. Before that the monitor opens a read
//! end (`O_RDONLY|O_NONBLOCK`) that it never reads, and keeps it while it lives:
//!
//! * with no daemon reading (killed, restarting), the pipe still has a reader,
//!   so the tender's console writes are buffered in the pipe (1 MiB once a
//!   daemon's reader has enlarged it, 64 KiB otherwise) instead of failing with
//!   `EPIPE` or killing the tender with `SIGPIPE`; when the pipe is full they
//!   wait until a daemon reads again;
//! * the pipe, and what it holds, lives as long as any descriptor of it: a
//!   restarted daemon opens the FIFO again and reads on from where the old one
//!   stopped;
//! * end-of-file counts writers only, and the keep-alive is not one: a reader
//!   still sees end-of-file exactly when the tender (and whatever it handed its
//!   descriptors to) has gone, as the console drain expects;
//! * the write end's open cannot block or fail for want of a reader.
//!
//! `O_RDWR` would also keep a reader, but as the keep-alive it would count as a
//! writer (end-of-file would wait for the monitor too), and as the tender's
//! stdout it is unspecified for FIFOs and makes the tender a reader of its own
//! console. What the keep-alive cannot save: output still in the pipe when both
//! the tender and the monitor have ended before any daemon reopens the FIFO goes
//! with the pipe. The exit status is not lost: it is in the run file.

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod filter;

use crate::api::unikernel::ExitStatus;
use crate::host::console::{self, ConsoleError};
use crate::host::privilege::{self, TenderUser};
use crate::host::rundir;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a monitor may take to start its tender and answer.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// How often a process is looked at where no pidfd tells when it ends.
const POLL: Duration = Duration::from_millis(250);

/// The most of a monitor's answer that is read.
const MAX_ANSWER: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The monitor could not start the tender; the reason is the monitor's.
    #[error("{reason}")]
    Start { reason: String },
    #[error(
        "cannot run the monitor {}: {source}; check that the fulmar binary is still in place",
        program.display()
    )]
    Spawn { program: PathBuf, source: io::Error },
    #[error("the monitor {} did not start the tender: {detail}", program.display())]
    Handshake { program: PathBuf, detail: String },
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "the run file {} is not one a monitor wrote: {source}; move it away to forget that run",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{0}")]
    Console(#[from] ConsoleError),
    #[error("cannot {what}: {source}")]
    Process { what: String, source: io::Error },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> MonitorError {
    let path = path.to_owned();
    move |source| MonitorError::Io { what, path, source }
}

fn process_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> MonitorError {
    let what = what.into();
    move |source| MonitorError::Process { what, source }
}

/// One process, told apart from any later one with the same pid by its start
/// time (clock ticks since boot on Linux, microseconds since the epoch on FreeBSD).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessRef {
    pub pid: u32,
    pub start: u64,
}

impl ProcessRef {
    /// The process that has `pid` now.
    pub fn of(pid: u32) -> io::Result<ProcessRef> {
        Ok(ProcessRef {
            pid,
            start: look(pid)?.start,
        })
    }

    /// Whether this very process still runs: the pid has the same start time
    /// and has not exited (a zombie has exited; it only waits to be reaped).
    pub fn is_running(&self) -> bool {
        look(self.pid).is_ok_and(|seen| seen.start == self.start && !seen.zombie)
    }
}

/// What the monitor writes into its run file before it answers: enough for any
/// later daemon to find the monitor and the tender and recognise them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RunRecord {
    pub monitor: ProcessRef,
    pub tender: ProcessRef,
    /// The kernel's boot id where it has one: after a reboot, pids and start
    /// times may repeat, so a record from another boot matches nothing.
    pub boot_id: Option<String>,
}

impl RunRecord {
    fn is_this_boot(&self) -> bool {
        self.boot_id == boot_id()
    }
}

/// The run file: the record, and once the tender has ended, how.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct RunFile {
    #[serde(flatten)]
    run: RunRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ended: Option<Ended>,
}

impl RunFile {
    /// A run of this boot whose end nobody recorded: its monitor may live.
    fn is_open(&self) -> bool {
        self.ended.is_none() && self.run.is_this_boot()
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
struct Ended {
    #[serde(flatten)]
    status: ExitStatus,
    /// Milliseconds since the Unix epoch.
    at_ms: u64,
}

/// How a run ended, as far as anyone can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The monitor saw the tender end and recorded it.
    Exited { status: ExitStatus, at_ms: u64 },
    /// Nobody recorded it: the monitor was killed, or the host restarted. A
    /// tender the monitor left behind is killed (SIGKILL), so that no
    /// unsupervised unikernel keeps running; `orphan_killed` says it was there.
    Unknown { orphan_killed: bool },
}

// ---------------------------------------------------------------------------
// The daemon's side.

/// What [`spawn`] starts.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The fulmar binary to run the monitor with; by default this program
    /// (on Linux `/proc/self/exe`, which still works after an upgrade has
    /// replaced the file).
    pub program: Option<PathBuf>,
    /// The run file.
    pub status: PathBuf,
    /// Between the SIGTERM the monitor forwards and its SIGKILL.
    pub grace: Duration,
    /// The console FIFO; it must exist. Without one the tender writes to `/dev/null`.
    pub console: Option<PathBuf>,
    /// The user the tender runs as (host::privilege); None: the monitor's own.
    pub tender_user: Option<String>,
    /// The tender's command line; `argv[0]` is looked up on PATH.
    pub argv: Vec<String>,
}

/// Starts a monitor that starts the tender, and waits (blocking, briefly) until
/// it has. A tender that cannot be started is [`MonitorError::Start`] with the
/// monitor's reason, e.g. `cannot start solo5-hvt: No such file or directory`.
pub fn spawn(spec: &Spec) -> Result<Monitored, MonitorError> {
    match fs::remove_file(&spec.status) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io_err("remove the old run file", &spec.status)(e));
        }
        _ => {}
    }
    let program = spec.program.clone().unwrap_or_else(this_program);
    let dir = spec.status.parent().unwrap_or(Path::new("."));
    let dir = File::open(dir).map_err(io_err("open the run directory", dir))?;
    let mut child =
        command(&program, spec, &dir)
            .spawn()
            .map_err(|source| MonitorError::Spawn {
                program: program.clone(),
                source,
            })?;
    if let Err(e) = handshake(&mut child, &program) {
        kill_orphan(&spec.status);
        return Err(e);
    }
    let record = match read_run_file(&spec.status) {
        Ok(Some(file)) if file.run.monitor.pid == child.id() => file.run,
        Ok(_) => {
            abandon(child);
            return Err(MonitorError::Handshake {
                program,
                detail: format!("{} does not name it", spec.status.display()),
            });
        }
        Err(e) => {
            abandon(child);
            return Err(e);
        }
    };
    Ok(Monitored {
        status: spec.status.clone(),
        monitor: Handle::new(record.monitor),
        record,
        child: Some(child),
    })
}

/// What [`adopt`] found.
#[derive(Debug)]
pub enum Adoption {
    /// The monitor still runs: wait for it or stop it as if spawned.
    Running(Monitored),
    /// The run is over; no process of it is left.
    Ended(Outcome),
}

/// Takes up the run whose run file is `status`, as a restarted daemon does.
/// A missing run file means nothing of that run can be left (a reboot emptied
/// the runtime directory): [`Outcome::Unknown`].
pub async fn adopt(status: &Path) -> Result<Adoption, MonitorError> {
    if let Some(file) = read_run_file(status)?
        && file.is_open()
        && let Some(monitor) = Handle::adopt(file.run.monitor)
    {
        return Ok(Adoption::Running(Monitored {
            status: status.to_owned(),
            record: file.run,
            monitor,
            child: None,
        }));
    }
    // Read again: the monitor may have finished between the two looks.
    Ok(Adoption::Ended(outcome(status).await?))
}

/// Whether a monitor still runs the run that `status` records: a second run
/// must never start beside it (two guests on one disk).
pub fn still_running(status: &Path) -> bool {
    read_run_file(status)
        .ok()
        .flatten()
        .is_some_and(|file| file.is_open() && file.run.monitor.is_running())
}

/// Waits (briefly) for a monitor that holds its run directory but has not
/// written its run file yet: it is starting its tender.
pub async fn recorded(status: &Path) {
    let deadline = Instant::now() + HANDSHAKE;
    while !status.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running monitor, spawned or adopted. Dropping it leaves the monitor and
/// its tender running (a spawned one becomes a zombie when it exits unless
/// [`Monitored::wait`] reaps it).
#[derive(Debug)]
pub struct Monitored {
    status: PathBuf,
    record: RunRecord,
    monitor: Handle,
    /// Set when this process spawned the monitor and so must reap it.
    child: Option<Child>,
}

impl Monitored {
    pub fn record(&self) -> &RunRecord {
        &self.record
    }

    /// Asks the monitor to stop the tender: SIGTERM, then SIGKILL after the
    /// grace period. [`Monitored::wait`] tells when it is done. A monitor that
    /// has already gone is no error.
    pub fn stop(&self) -> Result<(), MonitorError> {
        self.monitor
            .signal(Signal::SIGTERM)
            .map_err(process_err(format!(
                "signal the monitor (pid {})",
                self.record.monitor.pid
            )))
    }

    /// Kills the tender and the monitor with SIGKILL, for a monitor that did
    /// not end the run in time (stopped, hung). Each is signalled through a
    /// handle that checked its start time, so no later process with its pid is
    /// hit; one that has gone is no error.
    pub fn kill(&self) -> Result<(), MonitorError> {
        if let Some(tender) = Handle::adopt(self.record.tender) {
            tender.signal(Signal::SIGKILL).map_err(process_err(format!(
                "kill the tender (pid {})",
                self.record.tender.pid
            )))?;
        }
        self.monitor
            .signal(Signal::SIGKILL)
            .map_err(process_err(format!(
                "kill the monitor (pid {})",
                self.record.monitor.pid
            )))
    }

    /// Waits until the monitor has gone, then says how the run ended. It may be
    /// cancelled and called again.
    pub async fn wait(&mut self) -> Result<Outcome, MonitorError> {
        let pid = self.record.monitor.pid;
        self.monitor
            .exited()
            .await
            .map_err(process_err(format!("watch the monitor (pid {pid})")))?;
        if let Some(child) = &mut self.child {
            // It has exited, so this reaps it without waiting.
            child
                .wait()
                .map_err(process_err(format!("reap the monitor (pid {pid})")))?;
        }
        outcome(&self.status).await
    }
}

/// How the run in `status` ended, once its monitor is gone.
async fn outcome(status: &Path) -> Result<Outcome, MonitorError> {
    let Some(file) = read_run_file(status)? else {
        return Ok(Outcome::Unknown {
            orphan_killed: false,
        });
    };
    if let Some(ended) = file.ended {
        return Ok(Outcome::Exited {
            status: ended.status,
            at_ms: ended.at_ms,
        });
    }
    let Some(tender) = orphan(&file.run) else {
        return Ok(Outcome::Unknown {
            orphan_killed: false,
        });
    };
    let pid = file.run.tender.pid;
    tender
        .signal(Signal::SIGKILL)
        .map_err(process_err(format!("kill the orphaned tender (pid {pid})")))?;
    tender.exited().await.map_err(process_err(format!(
        "watch the orphaned tender (pid {pid})"
    )))?;
    Ok(Outcome::Unknown {
        orphan_killed: true,
    })
}

#[cfg(target_os = "linux")]
fn this_program() -> PathBuf {
    PathBuf::from("/proc/self/exe")
}

#[cfg(not(target_os = "linux"))]
fn this_program() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("fulmar"))
}

fn command(program: &Path, spec: &Spec, dir: &File) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg0("fulmar")
        .arg("monitor")
        .arg("--status")
        .arg(&spec.status)
        .arg("--grace-ms")
        .arg(spec.grace.as_millis().to_string());
    if let Some(console) = &spec.console {
        cmd.arg("--console").arg(console);
    }
    hand_over(&mut cmd, dir);
    if let Some(user) = &spec.tender_user {
        cmd.arg("--tender-user").arg(user);
    }
    cmd.arg("--")
        .args(&spec.argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Reads the monitor's answer; on anything but `ready` the monitor is (or is
/// made) gone and reaped, and the error says why.
fn handshake(child: &mut Child, program: &Path) -> Result<(), MonitorError> {
    let failed = |detail: String| MonitorError::Handshake {
        program: program.to_owned(),
        detail,
    };
    let Some(stdout) = child.stdout.take() else {
        return Err(failed("its stdout is not a pipe".into()));
    };
    let answer = match read_answer(stdout, Instant::now() + HANDSHAKE) {
        Ok(answer) => answer,
        Err(e) => {
            // Our unreaped child: the pid is still its own.
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(e));
        }
    };
    if answer == "ready" {
        // It has let go of its end; ours would only hold a descriptor.
        drop(child.stderr.take());
        return Ok(());
    }
    let exit = child.wait();
    if let Some(reason) = answer.strip_prefix("error ") {
        return Err(MonitorError::Start {
            reason: reason.to_owned(),
        });
    }
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let exit = exit.map_or_else(|e| e.to_string(), |s| s.to_string());
    let said = stderr.lines().last().unwrap_or("nothing");
    Err(failed(format!("it ended ({exit}) and said: {said}")))
}

/// The first line the monitor writes, waiting for it until `deadline`.
fn read_answer(mut out: ChildStdout, deadline: Instant) -> Result<String, String> {
    let mut answer = Vec::new();
    let mut chunk = [0; 256];
    while !answer.contains(&b'\n') && answer.len() < MAX_ANSWER {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => return Err(format!("no answer within {} s", HANDSHAKE.as_secs())),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("cannot wait for its answer: {e}")),
        }
        match out.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read its answer: {e}")),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    Ok(answer.lines().next().unwrap_or_default().to_owned())
}

/// Gives the monitor the run directory as an open descriptor
/// (`host::rundir`): the one descriptor it inherits besides its stdio.
#[cfg(target_os = "linux")]
fn hand_over(cmd: &mut Command, dir: &File) {
    use std::os::fd::AsRawFd;
    let fd = dir.as_raw_fd();
    cmd.arg("--run-dir-fd").arg(fd.to_string());
    // SAFETY: the hook runs in the forked child before exec and only calls
    // fcntl on a descriptor the child has (the parent keeps `dir` open until
    // spawn returns); fcntl is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

#[cfg(not(target_os = "linux"))]
fn hand_over(_cmd: &mut Command, _dir: &File) {}

/// A monitor stopped before it answered may have started its tender and
/// recorded it: that tender must not run on unsupervised.
fn kill_orphan(status: &Path) {
    if let Ok(Some(file)) = read_run_file(status)
        && let Some(tender) = orphan(&file.run)
    {
        let _ = tender.signal(Signal::SIGKILL);
    }
}

/// The run's tender if it still runs (its monitor being gone, nobody else
/// will ever stop it).
fn orphan(run: &RunRecord) -> Option<Handle> {
    run.is_this_boot()
        .then(|| Handle::adopt(run.tender))
        .flatten()
}

/// A monitor that answered but left no usable run file: stop it and its tender.
fn abandon(mut child: Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // Unreaped, so the pid is still the monitor's.
        let _ = signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let _ = child.wait();
}

/// A process that is not necessarily our child: signalled and watched through
/// a pidfd where the kernel has them (Linux 5.3), otherwise by its pid after
/// checking its start time, which leaves a small pid-reuse window.
#[derive(Debug)]
struct Handle {
    process: ProcessRef,
    #[cfg(target_os = "linux")]
    pidfd: Option<std::os::fd::OwnedFd>,
}

impl Handle {
    fn new(process: ProcessRef) -> Handle {
        Handle {
            process,
            #[cfg(target_os = "linux")]
            pidfd: pidfd::open(process.pid).ok(),
        }
    }

    /// A handle on `process` if it still runs. The pidfd is opened first and
    /// the process checked after, so the pidfd cannot name a later process.
    fn adopt(process: ProcessRef) -> Option<Handle> {
        let handle = Handle::new(process);
        process.is_running().then_some(handle)
    }

    fn signal(&self, sig: Signal) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.pidfd {
            return gone_is_fine(pidfd::send(fd.as_fd(), sig));
        }
        if !self.process.is_running() {
            return Ok(());
        }
        let pid = i32::try_from(self.process.pid).map_err(io::Error::other)?;
        gone_is_fine(signal::kill(Pid::from_raw(pid), sig).map_err(io::Error::from))
    }

    async fn exited(&self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.pidfd {
            return pidfd::exited(fd.as_fd()).await;
        }
        while self.process.is_running() {
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }
}

fn gone_is_fine(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        other => other,
    }
}

#[cfg(target_os = "linux")]
mod pidfd {
    use nix::sys::signal::Signal;
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    pub fn open(pid: u32) -> io::Result<OwnedFd> {
        let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
        // SAFETY: pidfd_open takes a pid and flags (none) and returns a new
        // descriptor or -1; no memory of ours is involved.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = RawFd::try_from(fd).map_err(io::Error::other)?;
        // SAFETY: the kernel just created this descriptor for us; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub fn send(fd: BorrowedFd<'_>, sig: Signal) -> io::Result<()> {
        // SAFETY: a live pidfd, a signal number, a null siginfo (the kernel
        // fills one in as kill(2) would) and no flags.
        let done = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                sig as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if done < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// A pidfd becomes readable when its process has exited.
    pub async fn exited(fd: BorrowedFd<'_>) -> io::Result<()> {
        // SAFETY: the descriptor is borrowed, so it stays open and the same
        // for as long as `watched`, which lives only in this function.
        let watched = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        watched.readable().await?.retain_ready();
        Ok(())
    }
}

/// What the kernel says about a process: enough to recognise it.
struct Seen {
    start: u64,
    zombie: bool,
}

#[cfg(target_os = "linux")]
fn look(pid: u32) -> io::Result<Seen> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path)?;
    parse_stat(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path} is not as expected"),
        )
    })
}

/// The state (field 3) and start time (field 22) of a `/proc/PID/stat` line.
#[cfg(target_os = "linux")]
fn parse_stat(stat: &str) -> Option<Seen> {
    // The command name (field 2) may hold spaces and parentheses: fields are
    // counted from after its last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some(Seen {
        start,
        zombie: matches!(state, "Z" | "X" | "x"),
    })
}

#[cfg(target_os = "freebsd")]
fn look(pid: u32) -> io::Result<Seen> {
    let pid = libc::c_int::try_from(pid).map_err(io::Error::other)?;
    let name = [libc::CTL_KERN, libc::KERN_PROC, libc::KERN_PROC_PID, pid];
    let mut info = std::mem::MaybeUninit::<libc::kinfo_proc>::zeroed();
    let mut len = std::mem::size_of::<libc::kinfo_proc>();
    // SAFETY: `name` holds 4 valid integers; `info` has `len` writable bytes,
    // and the kernel writes at most that many and says how many in `len`.
    let done = unsafe {
        libc::sysctl(
            name.as_ptr(),
            4,
            info.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null(),
            0,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    if len != std::mem::size_of::<libc::kinfo_proc>() {
        return Err(io::Error::from(io::ErrorKind::NotFound));
    }
    // SAFETY: zeroed is a valid kinfo_proc (integers, arrays and raw pointers),
    // and the kernel filled it in.
    let info = unsafe { info.assume_init() };
    let start = u64::try_from(info.ki_start.tv_sec).unwrap_or_default() * 1_000_000
        + u64::try_from(info.ki_start.tv_usec).unwrap_or_default();
    Ok(Seen {
        start,
        zombie: info.ki_stat == libc::SZOMB,
    })
}

#[cfg(target_os = "linux")]
fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_owned())
}

/// FreeBSD's start times are wall-clock times, which do not repeat across boots.
#[cfg(not(target_os = "linux"))]
fn boot_id() -> Option<String> {
    None
}

fn read_run_file(path: &Path) -> Result<Option<RunFile>, MonitorError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read the run file", path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| MonitorError::Corrupt {
            path: path.to_owned(),
            source,
        })
}

/// Every write of the run file is atomic and durable (module docs).
fn write_run_file(path: &Path, file: &RunFile) -> Result<(), MonitorError> {
    let json = serde_json::to_vec(file).map_err(|e| io_err("encode", path)(e.into()))?;
    crate::host::durable::replace(path, &json).map_err(io_err("write the run file", path))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The monitor process.

/// The monitor's command line.
#[derive(Clone, Debug)]
pub struct Options {
    pub status: PathBuf,
    pub grace: Duration,
    pub console: Option<PathBuf>,
    /// The run directory, open as this descriptor (Linux; see `host::rundir`).
    pub run_dir_fd: Option<i32>,
    pub tender_user: Option<String>,
    pub argv: Vec<String>,
}

/// The monitor process's whole life (see the module docs). Returns once the
/// tender's end is recorded.
pub fn run(opts: &Options) -> Result<(), MonitorError> {
    match start(opts) {
        Ok(mut started) => {
            // The daemon may be gone already; the run file tells the next one.
            let _ = answer("ready");
            let _ = detach_stdio();
            let status = supervise(&mut started.tender, &started.signals, opts.grace)?;
            let ended = Ended {
                status,
                at_ms: now_ms(),
            };
            write_run_file(
                &started.run_dir.status,
                &RunFile {
                    run: started.record,
                    ended: Some(ended),
                },
            )
        }
        Err(e) => {
            let _ = answer(&format!("error {}", e.to_string().replace('\n', " ")));
            Err(e)
        }
    }
}

struct Started {
    tender: Child,
    record: RunRecord,
    signals: SigSet,
    /// The console's keep-alive read end (module docs); held, never read.
    _console: Option<File>,
    run_dir: RunDir,
}

/// The monitor's hold on its run directory, and its files' paths.
struct RunDir {
    /// Held while the monitor lives (`host::rundir`).
    _lock: Option<rundir::Held>,
    status: PathBuf,
    console: Option<PathBuf>,
}

impl RunDir {
    /// Locks the directory the daemon handed over and anchors the paths to it;
    /// refuses one that another monitor holds or that was removed meanwhile
    /// (the daemon that started us was killed and a new one reclaimed it).
    #[cfg(target_os = "linux")]
    fn take(opts: &Options) -> Result<RunDir, MonitorError> {
        use std::os::fd::{FromRawFd, OwnedFd};
        let Some(fd) = opts.run_dir_fd else {
            return Ok(RunDir::unanchored(opts));
        };
        // SAFETY: F_GETFD only reads the flags of a descriptor number; an
        // invalid one is an error, not undefined behaviour.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            return Err(process_err(format!("use run directory descriptor {fd}"))(
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: the descriptor is open (checked above) and was handed to
        // this process for this purpose only: nothing else here owns it.
        let dir = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        // Not for the tender: it holds only its console, taps and disks.
        nix::fcntl::fcntl(
            &dir,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| process_err("keep the run directory from the tender")(e.into()))?;
        let gone = |reason: &str| MonitorError::Start {
            reason: format!("{}: {reason}", opts.status.display()),
        };
        if rundir::is_removed(&dir).map_err(process_err("look at the run directory"))? {
            return Err(gone(
                "the run directory was removed before the monitor started",
            ));
        }
        let lock = rundir::lock(dir)
            .map_err(process_err("lock the run directory"))?
            .ok_or_else(|| gone("another monitor holds the run directory"))?;
        Ok(RunDir {
            _lock: Some(lock),
            status: rundir::anchored(fd, &opts.status),
            console: opts.console.as_deref().map(|c| rundir::anchored(fd, c)),
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn take(opts: &Options) -> Result<RunDir, MonitorError> {
        Ok(RunDir::unanchored(opts))
    }

    fn unanchored(opts: &Options) -> RunDir {
        RunDir {
            _lock: None,
            status: opts.status.clone(),
            console: opts.console.clone(),
        }
    }
}

fn start(opts: &Options) -> Result<Started, MonitorError> {
    close_inherited(opts.run_dir_fd);
    let run_dir = RunDir::take(opts)?;
    let signals = take_signals()?;
    leave_session();
    let Some((program, args)) = opts.argv.split_first() else {
        return Err(MonitorError::Start {
            reason: "the monitor was given nothing to run".into(),
        });
    };
    // Looked up here: the forked child may not allocate or read files.
    let user = opts
        .tender_user
        .as_deref()
        .map(TenderUser::lookup)
        .transpose()
        .map_err(|e| MonitorError::Start {
            reason: e.to_string(),
        })?;
    let (stdout, stderr, keep_alive) = console_streams(run_dir.console.as_deref())?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // A group of its own, so that whatever it forks can be killed with it.
        .process_group(0);
    // SAFETY: the hook runs in the forked child before exec and only makes
    // system calls (sigprocmask, setgroups, setresgid, setresuid, prctl), which
    // are async-signal-safe; `user` was resolved before the fork, so nothing
    // is allocated or looked up.
    unsafe { command.pre_exec(move || drop_privileges(user.as_ref())) };
    let mut tender = command
        .spawn()
        .map_err(process_err(format!("start {program}")))?;
    match record(&tender)
        .and_then(|run| {
            let file = RunFile { run, ended: None };
            write_run_file(&run_dir.status, &file).map(|()| file.run)
        })
        .and_then(|record| confine(tender.id()).map(|()| record))
    {
        Ok(record) => Ok(Started {
            tender,
            record,
            signals,
            _console: keep_alive,
            run_dir,
        }),
        Err(e) => {
            // Nobody could find this tender again: it must not outlive us.
            let _ = tender.kill();
            let _ = tender.wait();
            Err(e)
        }
    }
}

/// The monitor keeps only the system calls it needs from here on.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn confine(tender: u32) -> Result<(), MonitorError> {
    filter::confine(tender).map_err(process_err("confine the monitor with seccomp"))
}

/// seccompiler has no filter for this system or architecture.
#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
fn confine(_tender: u32) -> Result<(), MonitorError> {
    Ok(())
}

fn record(tender: &Child) -> Result<RunRecord, MonitorError> {
    let me = std::process::id();
    let of = |pid| ProcessRef::of(pid).map_err(process_err(format!("look up process {pid}")));
    Ok(RunRecord {
        monitor: of(me)?,
        tender: of(tender.id())?,
        boot_id: boot_id(),
    })
}

/// Descriptors that reached us without close-on-exec (from whatever started
/// the daemon, or a socket-activation socket) would be held by the monitor and
/// the tender for as long as the unikernel runs: a leaked pipe would keep its
/// reader waiting, a leaked socket its peer. Only 0, 1 and 2 are ours, and
/// the run directory's descriptor `keep`; nothing in this process has opened
/// another yet.
#[cfg(target_os = "linux")]
fn close_inherited(keep: Option<std::os::fd::RawFd>) {
    let Ok(listing) = fs::read_dir("/proc/self/fd") else {
        return;
    };
    let inherited: Vec<std::os::fd::RawFd> = listing
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2 && Some(fd) != keep)
        .collect();
    // The listing's own descriptor is among them, closed already: EBADF.
    for fd in inherited {
        let _ = nix::unistd::close(fd);
    }
}

/// The daemon hands over no run directory descriptor here (`host::rundir`).
#[cfg(target_os = "freebsd")]
fn close_inherited(_keep: Option<std::os::fd::RawFd>) {
    // SAFETY: nothing in this process has opened a descriptor above 2 yet, so
    // none that Rust code owns is closed under it.
    unsafe { libc::closefrom(3) }
}

/// The signals the monitor waits for, blocked so that they queue for
/// `sigwait`. Their actions go back to the defaults first: the tender inherits
/// ignored signals, and an ignored SIGCHLD would have the kernel reap the
/// tender unseen. The monitor has one thread, so its mask is the process's.
fn take_signals() -> Result<SigSet, MonitorError> {
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        set.add(sig);
    }
    // Blocked before the actions change, so none can end the monitor meanwhile.
    set.thread_block()
        .map_err(|e| process_err("block signals")(e.into()))?;
    for sig in set.iter() {
        // SAFETY: SIG_DFL runs no code of ours in signal context.
        unsafe { signal::signal(sig, SigHandler::SigDfl) }
            .map_err(|e| process_err(format!("reset {sig}"))(e.into()))?;
    }
    Ok(set)
}

/// What the tender runs with: no signal blocked, the tender user's ids
/// (where one is given) and no way to gain privileges by exec.
fn drop_privileges(user: Option<&TenderUser>) -> io::Result<()> {
    unblock_signals()?;
    if let Some(user) = user {
        user.become_it()?;
    }
    privilege::no_new_privileges()
}

/// The tender starts with no signal blocked. std does not promise that (the
/// toolchain this was written with hands the parent's mask on, as the tests
/// showed), and ours blocks what the monitor waits for: a tender relying on
/// SIGTERM's default action would never see it.
fn unblock_signals() -> io::Result<()> {
    signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(io::Error::from)
}

/// A session of its own: the daemon's death, its terminal's hangup or a ^C
/// there reach neither the monitor nor the tender. A process group leader
/// (started by hand from a shell) cannot, and keeps its group.
fn leave_session() {
    let _ = nix::unistd::setsid();
}

/// The tender's stdout and stderr, and the keep-alive read end of the FIFO.
fn console_streams(fifo: Option<&Path>) -> Result<(Stdio, Stdio, Option<File>), MonitorError> {
    let Some(fifo) = fifo else {
        return Ok((Stdio::null(), Stdio::null(), None));
    };
    // Opened first, so the writer's open finds a reader.
    let keep_alive = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .map_err(|source| ConsoleError::OpenReader {
            path: fifo.to_owned(),
            source,
        })?;
    let writer = console::open_writer(fifo)?;
    let stderr = writer
        .try_clone()
        .map_err(|source| ConsoleError::OpenWriter {
            path: fifo.to_owned(),
            source,
        })?;
    Ok((writer.into(), stderr.into(), Some(keep_alive)))
}

fn answer(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Lets go of the pipes to the daemon: it sees the answer end, and a dead
/// daemon's pipes cannot fail later writes.
fn detach_stdio() -> io::Result<()> {
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)?;
    nix::unistd::dup2_stderr(&null)?;
    Ok(())
}

/// Waits for the tender to end. SIGTERM or SIGINT stops it: SIGTERM now,
/// SIGKILL once `grace` has passed. SIGHUP is ignored.
fn supervise(
    tender: &mut Child,
    signals: &SigSet,
    grace: Duration,
) -> Result<ExitStatus, MonitorError> {
    let mut kill_at = None;
    loop {
        match next_signal(signals, kill_at)? {
            Some(Signal::SIGCHLD) => {
                if let Some(status) = tender
                    .try_wait()
                    .map_err(process_err("wait for the tender"))?
                {
                    return Ok(exit_status(status));
                }
            }
            Some(Signal::SIGTERM | Signal::SIGINT) => {
                if let Ok(pid) = i32::try_from(tender.id()) {
                    // Not reaped yet, so the pid is still the tender's.
                    let _ = signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
                }
                kill_at.get_or_insert_with(|| Instant::now() + grace);
            }
            Some(_) => {}
            None => {
                // Its whole process group, so that nothing it started lives on
                // unsupervised. Not reaped yet, so the group is still its own.
                // An error means it has just exited; its SIGCHLD is queued.
                if let Ok(pid) = i32::try_from(tender.id()) {
                    let _ = signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
                kill_at = None;
            }
        }
    }
}

/// The next of `signals`, or `None` once `deadline` has passed.
fn next_signal(
    signals: &SigSet,
    deadline: Option<Instant>,
) -> Result<Option<Signal>, MonitorError> {
    let wait_err = |e: Errno| process_err("wait for signals")(e.into());
    let Some(deadline) = deadline else {
        return signals.wait().map(Some).map_err(wait_err);
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = libc::timespec {
            tv_sec: libc::time_t::try_from(left.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: left.subsec_nanos().into(),
        };
        // SAFETY: a valid signal set, no siginfo wanted (null is allowed), and
        // a timespec that outlives the call.
        let sig = unsafe { libc::sigtimedwait(signals.as_ref(), std::ptr::null_mut(), &timeout) };
        match Errno::result(sig) {
            Ok(sig) => return Signal::try_from(sig).map(Some).map_err(wait_err),
            Err(Errno::EAGAIN) => return Ok(None),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(wait_err(e)),
        }
    }
}

fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(signal)) => ExitStatus::Signal(signal),
        // Neither is only possible for stopped/continued children, which wait() does not report.
        (None, None) => ExitStatus::Code(-1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_file_format() {
        let file = RunFile {
            run: RunRecord {
                monitor: ProcessRef { pid: 10, start: 20 },
                tender: ProcessRef { pid: 11, start: 21 },
                boot_id: Some("b".into()),
            },
            ended: Some(Ended {
                status: ExitStatus::Signal(9),
                at_ms: 5,
            }),
        };
        let json = serde_json::to_string(&file).unwrap();
        assert_eq!(
            json,
            r#"{"monitor":{"pid":10,"start":20},"tender":{"pid":11,"start":21},"boot_id":"b","ended":{"signal":9,"at_ms":5}}"#
        );
        assert_eq!(serde_json::from_str::<RunFile>(&json).unwrap(), file);
        let running = RunFile {
            ended: None,
            ..file
        };
        let json = serde_json::to_string(&running).unwrap();
        assert!(!json.contains("ended"), "{json}");
        assert_eq!(serde_json::from_str::<RunFile>(&json).unwrap(), running);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stat_with_awkward_command_name() {
        let mut fields = vec!["S"];
        fields.extend(std::iter::repeat_n("0", 18));
        fields.push("4242");
        fields.push("99");
        let stat = format!("17 (a) b ) c) {}\n", fields.join(" "));
        let seen = parse_stat(&stat).unwrap();
        assert_eq!(seen.start, 4242);
        assert!(!seen.zombie);
        let zombie = stat.replacen(") S ", ") Z ", 1);
        assert!(parse_stat(&zombie).unwrap().zombie);
        assert!(parse_stat("17 (no end").is_none());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_running_and_a_changed_start_is_not() {
        let me = ProcessRef::of(std::process::id()).unwrap();
        assert!(me.is_running());
        let other = ProcessRef {
            start: me.start + 1,
            ..me
        };
        assert!(!other.is_running());
    }
}
