//! The real `fulmar` TUI in a pseudo-terminal, its output read on a thread
//! into a `vt100` parser: the screen as an operator's terminal would show it.
//!
//! Timeouts here are failure limits only: a test waits for what it expects to
//! see and fails, with the screen in the message, if it never comes.

use crate::support::daemon::Host;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::pty::PtyMaster;
use nix::sys::termios::{LocalFlags, Termios};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a test waits for what it expects before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A synchronized update begins: the TUI draws one frame.
pub const FRAME_BEGIN: &[u8] = b"\x1b[?2026h";

/// What the program asked of the terminal beyond the screen: a terminal
/// acting on these would change the operator's window or clipboard.
#[derive(Debug, Default)]
pub struct Requests {
    pub titles: Vec<Vec<u8>>,
    pub icon_names: Vec<Vec<u8>>,
    pub clipboard: Vec<Vec<u8>>,
    pub bells: usize,
}

impl vt100::Callbacks for Requests {
    fn audible_bell(&mut self, _: &mut vt100::Screen) {
        self.bells += 1;
    }

    fn set_window_title(&mut self, _: &mut vt100::Screen, title: &[u8]) {
        self.titles.push(title.to_vec());
    }

    fn set_window_icon_name(&mut self, _: &mut vt100::Screen, name: &[u8]) {
        self.icon_names.push(name.to_vec());
    }

    fn copy_to_clipboard(&mut self, _: &mut vt100::Screen, _ty: &[u8], data: &[u8]) {
        self.clipboard.push(data.to_vec());
    }
}

/// Everything the program wrote, as parsed and as bytes.
pub struct Terminal {
    pub parser: vt100::Parser<Requests>,
    pub raw: Vec<u8>,
    /// When each frame began (each [`FRAME_BEGIN`] was read).
    pub frames: Vec<Instant>,
    /// Where the search for the next [`FRAME_BEGIN`] starts in `raw`.
    scanned: usize,
}

impl Terminal {
    fn take(&mut self, bytes: &[u8]) {
        self.parser.process(bytes);
        self.raw.extend_from_slice(bytes);
        let now = Instant::now();
        let end = self.raw.len().saturating_sub(FRAME_BEGIN.len() - 1);
        let mut at = self.scanned;
        while at < end {
            match memchr::memmem::find(&self.raw[at..], FRAME_BEGIN) {
                Some(i) => {
                    self.frames.push(now);
                    at += i + FRAME_BEGIN.len();
                }
                None => {
                    at = end;
                }
            }
        }
        self.scanned = at.max(end);
    }

    pub fn screen(&self) -> &vt100::Screen {
        self.parser.screen()
    }
}

/// A program running in a pseudo-terminal of its own.
pub struct Pty {
    child: Child,
    master: Arc<PtyMaster>,
    /// Our own handle on the terminal side, to read its modes (termios).
    slave: OwnedFd,
    terminal: Arc<Mutex<Terminal>>,
    reader: Option<JoinHandle<()>>,
    shared: Arc<Reader>,
    status: Option<ExitStatus>,
}

impl Pty {
    /// Runs `fulmar ARGS` against `host` (never starting a daemon of its
    /// own) in a `width` x `height` xterm-256color terminal, with the default
    /// config.
    pub fn fulmar(host: &Host, args: &[&str], width: u16, height: u16) -> Pty {
        let mut command = host.command(&["--no-start"]);
        command
            .args(args)
            .env("TERM", "xterm-256color")
            .env("FULMAR_CONFIG", host.data.path().join("no-config.toml"))
            .env_remove("NO_COLOR")
            .env_remove("COLORTERM");
        Pty::spawn(command, width, height)
    }

    /// Runs `command` with the terminal as its controlling terminal and its
    /// standard streams.
    pub fn spawn(command: Command, width: u16, height: u16) -> Pty {
        Pty::spawn_with_stdout(command, width, height, None)
    }

    /// [`Pty::spawn`], with standard output elsewhere when `stdout` says so
    /// (`fulmar > file` typed in a terminal).
    pub fn spawn_with_stdout(
        mut command: Command,
        width: u16,
        height: u16,
        stdout: Option<Stdio>,
    ) -> Pty {
        // Opened close-on-exec, so no other test's child inherits either side
        // (a stray holder of the terminal side would keep the reader waiting).
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .expect("posix_openpt");
        nix::pty::grantpt(&master).unwrap();
        nix::pty::unlockpt(&master).unwrap();
        let path = nix::pty::ptsname_r(&master).unwrap();
        let slave = nix::fcntl::open(
            path.as_str(),
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        set_size(&master, width, height);
        command
            .stdin(slave.try_clone().unwrap())
            .stdout(stdout.unwrap_or_else(|| slave.try_clone().unwrap().into()))
            .stderr(slave.try_clone().unwrap());
        // SAFETY: between fork and exec only setsid and ioctl run, both
        // async-signal-safe: the child leads a new session whose controlling
        // terminal is the pty (on its stdin), as a login shell's would be, so
        // it gets SIGWINCH and /dev/tty works.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        let master = Arc::new(master);
        let terminal = Arc::new(Mutex::new(Terminal {
            parser: vt100::Parser::new_with_callbacks(height, width, 0, Requests::default()),
            raw: Vec::new(),
            frames: Vec::new(),
            scanned: 0,
        }));
        let shared = Arc::new(Reader::default());
        let reader = {
            let (master, terminal, shared) = (master.clone(), terminal.clone(), shared.clone());
            std::thread::spawn(move || read_all(&master, &terminal, &shared))
        };
        Pty {
            child,
            master,
            slave,
            terminal,
            reader: Some(reader),
            shared,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Types `keys` as the terminal would send them (`\r` is Enter).
    pub fn send_keys(&self, keys: &[u8]) {
        (&*self.master).write_all(keys).unwrap();
    }

    /// What the program wrote so far, parsed, and its requests.
    pub fn terminal(&self) -> MutexGuard<'_, Terminal> {
        lock(&self.terminal)
    }

    /// The screen as text, row by row.
    pub fn screen_text(&self) -> String {
        self.terminal().screen().contents()
    }

    /// Waits until `text` is on the screen.
    pub fn wait_for(&self, text: &str, timeout: Duration) {
        self.wait_until(&format!("{text:?} on screen"), timeout, |screen| {
            screen.contents().contains(text)
        });
    }

    /// Waits until `text` is no longer on the screen.
    pub fn wait_gone(&self, text: &str, timeout: Duration) {
        self.wait_until(&format!("{text:?} gone"), timeout, |screen| {
            !screen.contents().contains(text)
        });
    }

    /// Moves a dialog's focus from Cancel to the button `yes` and presses it.
    pub fn confirm(&self, yes: &str) {
        self.send_keys(b"\x1b[C");
        self.wait_until(&format!("the {yes:?} button focused"), PATIENCE, |screen| {
            focused_button(screen).contains(yes)
        });
        self.send_keys(b"\r");
    }

    /// Waits until `check` holds for the screen; fails with the screen if it never does.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        check: impl FnMut(&vt100::Screen) -> bool,
    ) {
        self.poll_until(what, timeout, Duration::from_millis(10), check);
    }

    /// [`Pty::wait_until`], looking every millisecond: how long it took,
    /// for benchmarks.
    pub fn time_until(
        &self,
        what: &str,
        timeout: Duration,
        check: impl FnMut(&vt100::Screen) -> bool,
    ) -> Duration {
        self.poll_until(what, timeout, Duration::from_millis(1), check)
    }

    fn poll_until(
        &self,
        what: &str,
        timeout: Duration,
        every: Duration,
        mut check: impl FnMut(&vt100::Screen) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if check(self.terminal().screen()) {
                return start.elapsed();
            }
            if start.elapsed() >= timeout {
                panic!("never: {what}; the screen:\n{}", self.screen_text());
            }
            std::thread::sleep(every);
        }
    }

    /// Resizes the terminal; the program gets SIGWINCH.
    pub fn resize(&self, width: u16, height: u16) {
        // The parser first, so output drawn for the new size parses at it.
        self.terminal().parser.screen_mut().set_size(height, width);
        set_size(&self.master, width, height);
    }

    /// The terminal's modes as the program left them.
    pub fn termios(&self) -> Termios {
        nix::sys::termios::tcgetattr(self.slave.as_fd()).unwrap()
    }

    /// Whether the terminal is in the cooked mode a shell expects: lines
    /// edited by the terminal and echoed.
    pub fn cooked(&self) -> bool {
        self.termios()
            .local_flags
            .contains(LocalFlags::ICANON | LocalFlags::ECHO)
    }

    /// Waits for the program to exit, and for all it wrote to be parsed.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                self.drain(deadline);
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the program did not exit; the screen:\n{}",
                    self.screen_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the reader has found the terminal empty in a wait that
    /// began after this call: everything written before is parsed.
    fn drain(&self, deadline: Instant) {
        let seen = self.shared.idle.load(Ordering::Acquire);
        while self.shared.idle.load(Ordering::Acquire) < seen + 2 {
            assert!(
                Instant::now() < deadline,
                "the program's output never ended"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status
    }
}

/// What the reader thread and the test share.
#[derive(Default)]
struct Reader {
    stop: AtomicBool,
    /// Waits that found nothing to read: each means all before it is parsed.
    idle: AtomicU64,
}

/// A test that fails while it looks at the screen poisons the lock; the
/// reader and the clean-up go on regardless.
fn lock(terminal: &Mutex<Terminal>) -> MutexGuard<'_, Terminal> {
    terminal.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Feeds the program's output to the parser until told to stop or the
/// terminal closes. It polls, so a stop never waits on a read.
fn read_all(master: &PtyMaster, terminal: &Mutex<Terminal>, shared: &Reader) {
    let mut buf = vec![0; 1 << 16];
    while !shared.stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::from(20u16)) {
            Ok(0) => {
                shared.idle.fetch_add(1, Ordering::Release);
                continue;
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => panic!("poll on the pty: {e}"),
        }
        match (&*master).read(&mut buf) {
            Ok(0) => return,
            Ok(n) => lock(terminal).take(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // EIO: every holder of the terminal side has closed it.
            Err(_) => return,
        }
    }
}

fn set_size(master: &PtyMaster, width: u16, height: u16) {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which lives
    // across the call; the fd is the open master.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
}

impl Drop for Pty {
    /// The program is killed if it still runs, and the reader stops.
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The text of the dialog button drawn with the focused style (inverse
/// colours: a background where the rest has none).
pub fn focused_button(screen: &vt100::Screen) -> String {
    let (rows, cols) = screen.size();
    let mut text = String::new();
    for row in 0..rows {
        let line: String = (0..cols)
            .filter_map(|col| screen.cell(row, col))
            .filter(|cell| cell.bgcolor() != vt100::Color::Default)
            .map(|cell| cell.contents().to_string())
            .collect();
        if line.contains("[ ") {
            text.push_str(&line);
        }
    }
    text
}
