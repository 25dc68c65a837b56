//! The per-unikernel monitor end to end: the real `fulmar monitor` process, the
//! test tender under Solo5's names, gcc-built images, and daemons that die.

use crate::support;

use fulmar::api::image::Target;
use fulmar::api::unikernel::ExitStatus;
use fulmar::host::monitor::{self, Adoption, MonitorError, Outcome, ProcessRef, Spec};
use fulmar::host::{console, rundir};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::images;
use support::tender::Tenders;
use tempfile::TempDir;

/// The test tender's last banner line: its signal handling is set up by then.
const GUEST_STARTS: &str = "fulmar-test-tender: guest starts";

/// Bounds every wait, so that a broken monitor fails a test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(30);

/// A temporary directory for the run file and the console FIFO, and the test
/// tender installed as `solo5-hvt` and `solo5-spt`.
struct Fixture {
    dir: TempDir,
    tenders: Tenders,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            tenders: Tenders::install(&["solo5-hvt", "solo5-spt"]),
        }
    }

    fn status(&self) -> PathBuf {
        self.dir.path().join("run.json")
    }

    fn fifo(&self) -> PathBuf {
        let fifo = self.dir.path().join("console");
        console::create_fifo(&fifo).unwrap();
        fifo
    }

    /// The tender's command line: an image for `target` running `script`.
    fn argv(&self, target: Target, script: &[&str]) -> Vec<String> {
        let tender = self.tenders.tender(&format!("solo5-{target}"));
        let image = images::Spec::new(target, &[]).path();
        let mut argv = vec![
            tender.display().to_string(),
            "--".into(),
            image.display().to_string(),
        ];
        argv.extend(script.iter().map(|s| s.to_string()));
        argv
    }

    fn spec(&self, argv: Vec<String>, console: Option<&Path>) -> Spec {
        spec(self.status(), argv, console.map(Path::to_owned))
    }
}

fn spec(status: PathBuf, argv: Vec<String>, console: Option<PathBuf>) -> Spec {
    Spec {
        program: Some(PathBuf::from(env!("CARGO_BIN_EXE_fulmar"))),
        status,
        grace: Duration::from_millis(300),
        console,
        tender_user: None,
        argv,
    }
}

/// Opens the FIFO's read end without waiting for a writer, as the daemon does.
fn read_end(fifo: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .unwrap()
}

/// A FIFO's non-blocking read end that waits as the daemon's epoll does: for
/// data, or for the hangup that follows a writer's close. A plain read would
/// take "no writer yet" for end-of-file.
struct Polled(File);

impl Read for Polled {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::NONE)?;
            match self.0.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                other => return other,
            }
        }
    }
}

/// A console reader, as the daemon's: lines arrive on a thread of their own,
/// `None` at end-of-file.
struct Reader {
    lines: mpsc::Receiver<Option<String>>,
}

impl Reader {
    fn open(fifo: &Path) -> Reader {
        let mut end = Polled(read_end(fifo));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(&mut end).lines() {
                if tx.send(Some(line.unwrap())).is_err() {
                    return;
                }
            }
            let _ = tx.send(None);
        });
        Reader { lines }
    }

    fn next(&self) -> Option<String> {
        self.lines
            .recv_timeout(PATIENCE)
            .expect("the console went quiet")
    }

    /// The lines up to and including the first that is `wanted`.
    fn until(&self, wanted: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let line = self
                .next()
                .unwrap_or_else(|| panic!("end of console before {wanted:?}; saw {seen:#?}"));
            let done = line == wanted;
            seen.push(line);
            if done {
                return seen;
            }
        }
    }

    /// The lines up to end-of-file, which must come.
    fn rest(&self) -> Vec<String> {
        std::iter::from_fn(|| self.next()).collect()
    }
}

async fn within<T>(what: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, what)
        .await
        .expect("no answer in time")
}

fn exited(outcome: Outcome) -> ExitStatus {
    match outcome {
        Outcome::Exited { status, .. } => status,
        other => panic!("expected a recorded exit, got {other:?}"),
    }
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "{what} never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn proc_field(pid: u32, file: &str, key: &str) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/{file}"))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn exit_codes_and_signals_are_recorded() {
    let cases = [
        (Target::Hvt, "exit=7", ExitStatus::Code(7)),
        (Target::Hvt, "segv", ExitStatus::Code(255)),
        (Target::Spt, "segv", ExitStatus::Signal(11)),
        (Target::Spt, "raise=31", ExitStatus::Signal(31)),
    ];
    for (target, step, want) in cases {
        let f = Fixture::new();
        let before = now_ms();
        let mut run = monitor::spawn(&f.spec(f.argv(target, &[step]), None)).unwrap();
        let outcome = within(run.wait()).await.unwrap();
        let Outcome::Exited { status, at_ms } = outcome else {
            panic!("{target} {step}: {outcome:?}");
        };
        assert_eq!(status, want, "{target} {step}");
        assert!((before..=now_ms()).contains(&at_ms), "{target} {step}");
    }
}

#[tokio::test]
async fn stop_reaches_the_tender_as_sigterm() {
    for (target, want) in [
        (Target::Hvt, ExitStatus::Code(1)),
        (Target::Spt, ExitStatus::Signal(15)),
    ] {
        let f = Fixture::new();
        let fifo = f.fifo();
        let reader = Reader::open(&fifo);
        let mut run =
            monitor::spawn(&f.spec(f.argv(target, &["sleep-forever"]), Some(&fifo))).unwrap();
        reader.until(GUEST_STARTS);
        run.stop().unwrap();
        assert_eq!(exited(within(run.wait()).await.unwrap()), want, "{target}");
        let rest = reader.rest();
        let said = rest.iter().any(|l| l == "solo5-hvt: Exiting on signal 15");
        assert_eq!(said, target == Target::Hvt, "{target}: {rest:?}");
    }
}

#[tokio::test]
async fn a_tender_deaf_to_sigterm_is_killed_after_the_grace_period() {
    let f = Fixture::new();
    let fifo = f.fifo();
    let reader = Reader::open(&fifo);
    let mut run = monitor::spawn(&f.spec(f.argv(Target::Hvt, &["hang"]), Some(&fifo))).unwrap();
    reader.until("fulmar-test-tender: hung");
    run.stop().unwrap();
    assert_eq!(
        exited(within(run.wait()).await.unwrap()),
        ExitStatus::Signal(9)
    );
}

/// The monitor, root for a unikernel's whole life, runs under a seccomp
/// filter once its tender has started; the tender does not inherit it, and a
/// stop with a grace kill and the end's record still work under it.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[tokio::test]
async fn the_monitor_is_confined_by_seccomp_and_its_tender_is_not() {
    let f = Fixture::new();
    let fifo = f.fifo();
    let reader = Reader::open(&fifo);
    let mut run = monitor::spawn(&f.spec(f.argv(Target::Hvt, &["hang"]), Some(&fifo))).unwrap();
    reader.until("fulmar-test-tender: hung");
    let (monitor, tender) = (run.record().monitor.pid, run.record().tender.pid);
    // 2: filter mode; the tender starts with whatever the monitor had before.
    assert_eq!(proc_field(monitor, "status", "Seccomp:"), "2");
    assert_eq!(proc_field(tender, "status", "Seccomp:"), "0");
    run.stop().unwrap();
    assert_eq!(
        exited(within(run.wait()).await.unwrap()),
        ExitStatus::Signal(9)
    );
}

/// A monitor whose run directory is held (a new daemon reclaiming what a
/// killed one left) starts no tender there and records nothing.
#[tokio::test]
async fn a_monitor_starts_no_tender_in_a_run_directory_someone_holds() {
    let f = Fixture::new();
    let rundir::Claim::Free(held) = rundir::claim(f.dir.path()).unwrap() else {
        panic!("a fresh directory is taken");
    };
    let sleeper = || f.spec(vec!["sleep".into(), "600".into()], None);
    match monitor::spawn(&sleeper()) {
        Err(MonitorError::Start { reason }) => {
            assert!(
                reason.contains("another monitor holds the run directory"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(!f.status().exists());
    drop(held);
    let mut run = monitor::spawn(&sleeper()).unwrap();
    assert!(matches!(
        rundir::claim(f.dir.path()).unwrap(),
        rundir::Claim::Taken
    ));
    run.stop().unwrap();
    within(run.wait()).await.unwrap();
    assert!(matches!(
        rundir::claim(f.dir.path()).unwrap(),
        rundir::Claim::Free(_)
    ));
}

/// SIGKILL after the grace period goes to the tender's whole process group, so
/// nothing it started outlives it unsupervised.
#[tokio::test]
async fn what_a_tender_started_is_killed_with_it() {
    let f = Fixture::new();
    let child_pid = f.dir.path().join("child.pid");
    // Deaf to SIGTERM, with a child that is too.
    let script = format!(
        "trap '' TERM; sleep 600 & echo $! > {}; wait",
        child_pid.display()
    );
    let argv = vec!["sh".into(), "-c".into(), script];
    let mut run = monitor::spawn(&f.spec(argv, None)).unwrap();
    wait_until("the tender started its child", || {
        fs::read_to_string(&child_pid).is_ok_and(|p| p.ends_with('\n'))
    });
    let child: u32 = fs::read_to_string(&child_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let child = ProcessRef::of(child).unwrap();
    run.stop().unwrap();
    assert_eq!(
        exited(within(run.wait()).await.unwrap()),
        ExitStatus::Signal(9)
    );
    wait_until("the tender's child is gone", || !child.is_running());
}

/// The monitor's blocked signals must not reach the tender (or SIGTERM would
/// never end a tender that relies on its default action), nor descriptors the
/// daemon let through (the monitor holds its run directory, locked, and
/// nothing else); and the monitor leads a session of its own.
#[tokio::test]
async fn the_tender_starts_clean_and_the_monitor_in_its_own_session() {
    let f = Fixture::new();
    let leaked = File::create(f.dir.path().join("leaked")).unwrap();
    fcntl(&leaked, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
    let mut run = monitor::spawn(&f.spec(vec!["sleep".into(), "600".into()], None)).unwrap();
    drop(leaked);
    let tender = run.record().tender.pid;
    let monitor = run.record().monitor.pid;
    let run_dir = f.dir.path().canonicalize().unwrap();
    let beyond_stdio = |pid: u32| -> Vec<PathBuf> {
        fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter(|e| !["0", "1", "2"].contains(&e.file_name().to_str().unwrap()))
            .filter_map(|e| fs::read_link(e.path()).ok())
            .collect()
    };
    for (pid, own) in [(monitor, Some(run_dir)), (tender, None)] {
        let own = Vec::from_iter(own);
        // Right after its answer the monitor briefly holds /dev/null, to
        // put over the pipes to the daemon.
        wait_until("the monitor lets go of its pipes", || {
            beyond_stdio(pid) == own
        });
    }
    assert_eq!(proc_field(tender, "status", "SigBlk:"), "0000000000000000");
    let ignored = u64::from_str_radix(&proc_field(tender, "status", "SigIgn:"), 16).unwrap();
    assert_eq!(
        ignored & (1 << (libc::SIGTERM - 1)),
        0,
        "SIGTERM is ignored"
    );
    let stat = fs::read_to_string(format!("/proc/{monitor}/stat")).unwrap();
    let session: u32 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(session, monitor, "the monitor leads a session of its own");
    run.stop().unwrap();
    assert_eq!(
        exited(within(run.wait()).await.unwrap()),
        ExitStatus::Signal(15)
    );
}

/// What `daemon_stand_in` is asked to start.
#[derive(Serialize, Deserialize)]
struct Job {
    status: PathBuf,
    console: PathBuf,
    argv: Vec<String>,
}

const JOB_ENV: &str = "FULMAR_TEST_MONITOR_JOB";
const STARTED: &str = "monitor-started:";

/// Not a test of its own: the short-lived daemon that
/// `survives_the_death_of_its_daemon` runs in a process of its own and kills.
#[test]
#[ignore = "a helper process for survives_the_death_of_its_daemon"]
fn daemon_stand_in() {
    let job: Job = serde_json::from_str(
        &std::env::var(JOB_ENV).expect("run by survives_the_death_of_its_daemon"),
    )
    .unwrap();
    // As the daemon does, the console's read end is open before the tender
    // starts; this one is never read.
    let _read_end = read_end(&job.console);
    let run = monitor::spawn(&spec(job.status, job.argv, Some(job.console))).unwrap();
    println!("{STARTED}{}", run.record().monitor.pid);
    loop {
        std::thread::park();
    }
}

/// The daemon is SIGKILLed with its console reader open and never read; the
/// tender keeps running and writing, and the next "daemon" adopts the monitor,
/// reads the console from the start, stops it and gets its exit.
#[tokio::test]
async fn survives_the_death_of_its_daemon() {
    let f = Fixture::new();
    let fifo = f.fifo();
    let job = Job {
        status: f.status(),
        console: fifo.clone(),
        argv: f.argv(
            Target::Hvt,
            &["sleep=300", "print=while no daemon reads", "sleep-forever"],
        ),
    };
    let mut daemon = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "monitor::daemon_stand_in",
            "--nocapture",
        ])
        .env(JOB_ENV, serde_json::to_string(&job).unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(daemon.stdout.take().unwrap());
    let monitor_pid: u32 = out
        .lines()
        .find_map(|l| Some(l.unwrap().split_once(STARTED)?.1.trim().parse().unwrap()))
        .expect("the stand-in daemon did not start a monitor");
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    let Adoption::Running(mut run) = within(monitor::adopt(&f.status())).await.unwrap() else {
        panic!("the monitor did not survive its daemon");
    };
    assert_eq!(run.record().monitor.pid, monitor_pid);
    // Time for the tender's print to land while no daemon has the FIFO open:
    // without the monitor's keep-alive it would die by SIGPIPE. No assertion
    // rests on the timing; a slow machine merely tests less.
    std::thread::sleep(Duration::from_millis(600));
    let reader = Reader::open(&fifo);
    let lines = reader.until("while no daemon reads");
    assert!(lines.iter().any(|l| l == GUEST_STARTS), "{lines:?}");
    run.stop().unwrap();
    assert_eq!(
        exited(within(run.wait()).await.unwrap()),
        ExitStatus::Code(1)
    );
    let rest = reader.rest();
    assert!(
        rest.iter().any(|l| l == "solo5-hvt: Exiting on signal 15"),
        "{rest:?}"
    );
}

#[tokio::test]
async fn adopt_reads_an_end_recorded_while_no_daemon_watched() {
    let f = Fixture::new();
    let run = monitor::spawn(&f.spec(f.argv(Target::Hvt, &["exit=9"]), None)).unwrap();
    let monitor = run.record().monitor;
    // The daemon lost its handle; the monitor ends on its own.
    drop(run);
    wait_until("the monitor's exit", || !monitor.is_running());
    match within(monitor::adopt(&f.status())).await.unwrap() {
        Adoption::Ended(outcome) => assert_eq!(exited(outcome), ExitStatus::Code(9)),
        Adoption::Running(_) => panic!("adopted a monitor that had exited"),
    }
}

#[tokio::test]
async fn adopt_does_not_take_a_process_that_reused_a_pid() {
    let f = Fixture::new();
    let mut bystander = Command::new("sleep").arg("600").spawn().unwrap();
    let me = ProcessRef::of(std::process::id()).unwrap();
    let other = ProcessRef::of(bystander.id()).unwrap();
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let status = f.status();
    let adopt_with = |monitor: ProcessRef, tender: ProcessRef, boot: &str| {
        let record = serde_json::json!({
            "monitor": monitor, "tender": tender, "boot_id": boot.trim(),
        });
        fs::write(&status, record.to_string()).unwrap();
        monitor::adopt(&status)
    };
    let later = |p: ProcessRef| ProcessRef {
        start: p.start + 1,
        ..p
    };
    let unknown = |orphan_killed| Outcome::Unknown { orphan_killed };

    // The pids now belong to processes that started at other times.
    let adopted = within(adopt_with(later(me), later(other), &boot)).await;
    assert!(matches!(adopted, Ok(Adoption::Ended(o)) if o == unknown(false)));
    // The same pids and start times, but from another boot.
    let adopted = within(adopt_with(me, other, "another-boot")).await;
    assert!(matches!(adopted, Ok(Adoption::Ended(o)) if o == unknown(false)));
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "a bystander was hurt"
    );

    // What the checks above protected it from: a matching tender whose monitor is gone.
    let adopted = within(adopt_with(later(me), other, &boot)).await;
    assert!(matches!(adopted, Ok(Adoption::Ended(o)) if o == unknown(true)));
    let status = bystander.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}

#[tokio::test]
async fn a_killed_monitor_is_an_unknown_end_and_leaves_no_orphan() {
    let f = Fixture::new();
    let mut run = monitor::spawn(&f.spec(f.argv(Target::Hvt, &["sleep-forever"]), None)).unwrap();
    let tender = run.record().tender;
    let pid = i32::try_from(run.record().monitor.pid).unwrap();
    // Our unreaped child: the pid is still the monitor's.
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    assert_eq!(
        within(run.wait()).await.unwrap(),
        Outcome::Unknown {
            orphan_killed: true
        }
    );
    assert!(!tender.is_running());
}

/// The tender writes while nothing but the monitor's keep-alive has the FIFO
/// open; a reader that comes later gets it all, and end-of-file when it exits.
#[tokio::test]
async fn console_output_waits_for_a_reader() {
    let f = Fixture::new();
    let fifo = f.fifo();
    let mut run = monitor::spawn(&f.spec(
        f.argv(Target::Hvt, &["print=early", "sleep-forever"]),
        Some(&fifo),
    ))
    .unwrap();
    // Time for the tender to write with no reader (no assertion rests on it).
    std::thread::sleep(Duration::from_millis(200));
    let reader = Reader::open(&fifo);
    let lines = reader.until("early");
    assert!(lines.iter().any(|l| l == GUEST_STARTS), "{lines:?}");
    run.stop().unwrap();
    assert_eq!(
        exited(within(run.wait()).await.unwrap()),
        ExitStatus::Code(1)
    );
    assert_eq!(reader.rest(), ["solo5-hvt: Exiting on signal 15"]);
}

#[test]
fn a_tender_that_cannot_start_is_a_clear_error() {
    let f = Fixture::new();
    fs::write(f.status(), r#"{"stale": true}"#).unwrap();
    let argv = vec!["/nonexistent/solo5-hvt".to_owned(), "--".into(), "x".into()];
    let err = monitor::spawn(&f.spec(argv, None)).unwrap_err();
    assert!(matches!(err, MonitorError::Start { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("cannot start /nonexistent/solo5-hvt: No such file or directory"),
        "{message}"
    );
    assert!(!f.status().exists(), "a run file for a run that never was");

    let not_a_fifo = f.dir.path().join("console");
    File::create(&not_a_fifo).unwrap();
    let argv = vec!["sleep".to_owned(), "600".into()];
    let err = monitor::spawn(&f.spec(argv, Some(&not_a_fifo))).unwrap_err();
    assert!(err.to_string().contains("is not a FIFO"), "{err}");
    assert!(!f.status().exists());
}
