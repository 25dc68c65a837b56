//! The launch path end to end: the real supervisor, the test tender on
//! PATH, gcc-built images, and bridges and taps in a network namespace of the
//! test's own.

use crate::support;

use fulmar::api::console::{ConsoleEvent, ConsoleLine, LineSource, Since};
use fulmar::api::event::Event;
use fulmar::api::image::{DeviceKind, Target};
use fulmar::api::label::Label;
use fulmar::api::mac::Mac;
use fulmar::api::unikernel::{
    BlockConfig, ExitStatus, NetConfig, RestartPolicy, RunState, UnikernelConfig,
};
use fulmar::host::image::{self, Compression};
use fulmar::host::paths::Dirs;
use fulmar::host::supervisor::{Backoff, Settings, Supervisor, SupervisorError};
use nix::sys::signal::Signal;
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::images::Spec;
use support::netns;
use support::tender::Tenders;
use tempfile::TempDir;
use tokio::sync::broadcast;

/// The test tender's last banner line, before it runs its guest script.
const GUEST_STARTS: &str = "fulmar-test-tender: guest starts";

/// Bounds every wait so a broken supervisor fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(20);

/// A supervisor on temporary directories with the test tender on its PATH.
struct Host {
    sup: Supervisor,
    events: broadcast::Receiver<Event>,
    dirs: Dirs,
    _data: TempDir,
    _runtime: TempDir,
    _tenders: Tenders,
}

impl Host {
    fn new() -> Host {
        Host::with(|_| {})
    }

    fn with(tweak: impl FnOnce(&mut Settings)) -> Host {
        let data = tempfile::tempdir().unwrap();
        let runtime = tempfile::tempdir().unwrap();
        let tenders = Tenders::install(&["solo5-hvt", "solo5-spt"]);
        let dirs = Dirs {
            data: data.path().to_owned(),
            runtime: runtime.path().to_owned(),
        };
        let mut settings = Settings::new(dirs.clone());
        settings.tender_path = Some(tenders.path_var());
        settings.monitor = Some(support::daemon::fulmar().to_owned());
        settings.grace = Duration::from_secs(5);
        tweak(&mut settings);
        let sup = Supervisor::new(settings);
        Host {
            events: sup.events(),
            sup,
            dirs,
            _data: data,
            _runtime: runtime,
            _tenders: tenders,
        }
    }

    fn block(&self, name: &str, size_mb: u64) -> Label {
        let label = label(name);
        self.sup.block_store().create(&label, size_mb).unwrap();
        label
    }

    async fn create(&self, config: UnikernelConfig, spec: &Spec) -> Result<(), SupervisorError> {
        let image = image::load(&spec.path(), Compression::Detect).unwrap();
        self.sup.create(config, image).await.map(|_| ())
    }

    /// Waits for the next event that `want` accepts.
    async fn event(&mut self, want: impl Fn(&Event) -> bool) -> Event {
        let events = &mut self.events;
        tokio::time::timeout(PATIENCE, async {
            loop {
                let e = events.recv().await.unwrap();
                if want(&e) {
                    return e;
                }
            }
        })
        .await
        .expect("the awaited event never came")
    }

    async fn exit_of(&mut self, name: &str) -> ExitStatus {
        let name = label(name);
        match self
            .event(|e| matches!(e, Event::Exited { name: n, .. } if *n == name))
            .await
        {
            Event::Exited { status, .. } => status,
            _ => unreachable!(),
        }
    }

    /// Waits until the unikernel itself (not fulmar's marks) has printed the
    /// line `text` `count` times.
    async fn console_shows(&self, name: &str, text: &str, count: usize) {
        let console = self.sup.console(&label(name)).unwrap();
        let (history, mut live) = console.subscribe(Since::Everything);
        let hit = |line: &ConsoleLine| {
            line.source == LineSource::Unikernel && line.bytes == text.as_bytes()
        };
        let mut seen = history.iter().filter(|l| hit(l)).count();
        if seen >= count {
            return;
        }
        tokio::time::timeout(PATIENCE, async {
            loop {
                match live.recv().await {
                    Some(ConsoleEvent::Line(line)) if hit(&line) => {
                        seen += 1;
                        if seen >= count {
                            return;
                        }
                    }
                    Some(_) => {}
                    None => panic!("console closed before {text:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{text:?} never reached the console"));
    }

    /// The unikernel's own console lines so far.
    fn console(&self, name: &str) -> Vec<String> {
        let console = self.sup.console(&label(name)).unwrap();
        console
            .history(Since::Everything)
            .iter()
            .filter(|l| l.source == LineSource::Unikernel)
            .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
            .collect()
    }

    /// fulmar's own marks in the console so far.
    fn marks(&self, name: &str) -> Vec<String> {
        let console = self.sup.console(&label(name)).unwrap();
        console
            .history(Since::Everything)
            .iter()
            .filter(|l| l.source == LineSource::Fulmar)
            .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
            .collect()
    }

    /// The arguments the tender printed as `argv[I]=ARG`, in order.
    fn tender_argv(&self, name: &str) -> Vec<String> {
        self.console(name)
            .iter()
            .filter(|l| l.starts_with("argv["))
            .filter_map(|l| l.split_once('=').map(|(_, a)| a.to_owned()))
            .collect()
    }

    fn state(&self, name: &str) -> RunState {
        self.sup.info(&label(name)).unwrap().state
    }

    /// What runs leave on the host: interfaces, and run directories (image
    /// copies and console FIFOs).
    fn footprint(&self) -> (Vec<String>, Vec<PathBuf>) {
        (
            netns::interfaces(),
            files_under(&self.dirs.runtime.join("unikernels")),
        )
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten() {
            let path = e.unwrap().path();
            if path.is_dir() {
                todo.push(path.clone());
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

fn label(s: &str) -> Label {
    Label::new(s).unwrap()
}

fn net(interface: &str, bridge: &str) -> NetConfig {
    NetConfig {
        interface: interface.into(),
        bridge: bridge.into(),
        mac: None,
    }
}

fn block(device: &str, block: &Label) -> BlockConfig {
    BlockConfig {
        device: device.into(),
        block: block.clone(),
        sector_size: None,
    }
}

fn config(name: &str, args: &[&str]) -> UnikernelConfig {
    let mut c = UnikernelConfig::new(label(name));
    // Most tests watch one run end; those about restarts say so.
    c.restart = RestartPolicy::Never;
    c.args = args.iter().map(|a| a.to_string()).collect();
    c
}

/// Runs `body` in a network namespace of its own (see `support::netns`), on a
/// runtime that keeps every task, and so every process it spawns, there.
fn in_netns<F: Future<Output = ()>>(body: impl FnOnce() -> F + Send + 'static) {
    netns::run(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(body())
    });
}

const BLOCK: DeviceKind = DeviceKind::Block;
const NET: DeviceKind = DeviceKind::Net;

#[test]
fn devices_reach_the_tender_and_leave_nothing_behind() {
    in_netns(|| async {
        netns::bridge("br0");
        netns::bridge("br1");
        let host = Host::new();
        let disk0 = host.block("disk0", 1);
        let disk1 = host.block("disk1", 2);
        let before = host.footprint();
        let given_mac: Mac = "02:00:00:00:00:2a".parse().unwrap();
        let disk_path = |name: &str| {
            host.dirs
                .data
                .join("block")
                .join(name)
                .display()
                .to_string()
        };
        let cases: Vec<(Spec, UnikernelConfig, Vec<String>, ExitStatus)> = vec![
            (
                Spec::new(Target::Hvt, &[]),
                config("none", &["sleep-forever"]),
                vec!["--mem=512".into()],
                ExitStatus::Code(1),
            ),
            (
                Spec::new(Target::Hvt, &[("storage", BLOCK), ("service0", NET)]),
                UnikernelConfig {
                    nets: vec![net("service0", "br0")],
                    blocks: vec![block("storage", &disk0)],
                    memory_mb: 64,
                    ..config("one", &["sleep-forever"])
                },
                vec![
                    "--mem=64".into(),
                    "--net:service0=vmmtap0".into(),
                    format!("--net-mac:service0={}", Mac::derived("service0", "one")),
                    format!("--block:storage={}", disk_path("disk0")),
                ],
                ExitStatus::Code(1),
            ),
            (
                Spec::new(
                    Target::Spt,
                    &[("a", NET), ("b", NET), ("x", BLOCK), ("y", BLOCK)],
                ),
                UnikernelConfig {
                    nets: vec![
                        net("a", "br0"),
                        NetConfig {
                            mac: Some(given_mac),
                            ..net("b", "br1")
                        },
                    ],
                    blocks: vec![
                        block("x", &disk0),
                        BlockConfig {
                            sector_size: Some(4096),
                            ..block("y", &disk1)
                        },
                    ],
                    ..config("two", &["sleep-forever"])
                },
                vec![
                    "--net:a=vmmtap0".into(),
                    "--net:b=vmmtap1".into(),
                    format!("--net-mac:a={}", Mac::derived("a", "two")),
                    "--net-mac:b=02:00:00:00:00:2a".into(),
                    format!("--block:x={}", disk_path("disk0")),
                    format!("--block:y={}", disk_path("disk1")),
                    "--block-sector-size:y=4096".into(),
                ],
                // spt dies by SIGTERM where hvt exits 1.
                ExitStatus::Signal(15),
            ),
        ];
        for (spec, config, want, on_destroy) in cases {
            let name = config.name.to_string();
            let taps = config.nets.len();
            host.create(config, &spec).await.unwrap();
            host.console_shows(&name, GUEST_STARTS, 1).await;
            let argv = host.tender_argv(&name);
            for arg in &want {
                assert!(argv.contains(arg), "{name}: {arg} not in {argv:?}");
            }
            let info = host.sup.info(&label(&name)).unwrap();
            assert_eq!(info.taps.len(), taps);
            let run_dir = host.dirs.runtime.join("unikernels").join(&name);
            let mode =
                |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode(&run_dir), 0o700);
            assert_eq!(mode(&run_dir.join("image")), 0o600);
            assert!(
                std::fs::symlink_metadata(run_dir.join("console"))
                    .unwrap()
                    .file_type()
                    .is_fifo()
            );
            for tap in &info.taps {
                let master =
                    std::fs::read_link(format!("/sys/class/net/{}/master", tap.tap)).unwrap();
                assert!(
                    master.ends_with(&tap.bridge),
                    "{} is not on {}",
                    tap.tap,
                    tap.bridge
                );
            }
            let info = host.sup.destroy(&label(&name)).await.unwrap();
            assert_eq!(info.state, RunState::Stopped);
            assert_eq!(info.exits.last().map(|e| e.status), Some(on_destroy));
            assert_eq!(host.footprint(), before, "{name} left something behind");
            host.sup.remove(&label(&name)).unwrap();
        }
    });
}

#[test]
fn arguments_reach_the_unikernel_verbatim() {
    in_netns(|| async {
        let mut host = Host::new();
        let marker = host.dirs.data.join("pwned");
        let tricky = vec![
            "two words".to_string(),
            "\"quoted\" 'single'".into(),
            "a;b && c | d > e".into(),
            format!("$(touch {})", marker.display()),
            "`touch /tmp/fulmar-pwned`".into(),
            "".into(),
        ];
        let mut c = config("args", &[]);
        c.args = tricky.clone();
        host.create(c, &Spec::new(Target::Hvt, &[])).await.unwrap();
        assert_eq!(host.exit_of("args").await, ExitStatus::Code(0));
        let argv = host.tender_argv("args");
        assert_eq!(argv[argv.len() - tricky.len()..], tricky[..]);
        assert!(!marker.exists(), "a shell ran an argument");
    });
}

#[test]
fn the_tender_is_pinned_to_its_cpu() {
    in_netns(|| async {
        let host = Host::new();
        let cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32 - 1;
        let mut c = config("pinned", &["sleep-forever"]);
        c.cpu = cpu;
        host.create(c, &Spec::new(Target::Hvt, &[])).await.unwrap();
        // taskset has pinned itself and exec'd the tender once the banner is out.
        host.console_shows("pinned", GUEST_STARTS, 1).await;
        let RunState::Running { pid, .. } = host.state("pinned") else {
            panic!("not running: {:?}", host.state("pinned"));
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim();
        assert_eq!(allowed, cpu.to_string());
        host.sup.destroy(&label("pinned")).await.unwrap();
    });
}

/// Back-off short enough for tests; the doubling and the crash-loop threshold
/// are the real rule's.
fn quick_backoff(s: &mut Settings) {
    s.backoff = Backoff {
        first: Duration::from_millis(20),
        max: Duration::from_millis(160),
        reset_after: Duration::from_secs(300),
        crash_loop_after: 5,
    };
}

#[test]
fn exits_restart_or_not_by_policy() {
    in_netns(|| async {
        let mut host = Host::with(quick_backoff);
        let policy = |text: &str| text.parse::<RestartPolicy>().unwrap();
        let cases = [
            ("zero-never", "exit=0", "never", ExitStatus::Code(0), false),
            ("two-never", "exit=2", "never", ExitStatus::Code(2), false),
            (
                "signal-never",
                "raise=6",
                "never",
                ExitStatus::Signal(6),
                false,
            ),
            (
                "two-onfail",
                "exit=2",
                "on-failure",
                ExitStatus::Code(2),
                true,
            ),
            (
                "abort-onfail",
                "abort",
                "on-failure",
                ExitStatus::Code(255),
                true,
            ),
            (
                "zero-onfail",
                "exit=0",
                "on-failure",
                ExitStatus::Code(0),
                false,
            ),
            (
                "one-onfail",
                "exit=1",
                "on-failure",
                ExitStatus::Code(1),
                true,
            ),
            (
                "usage-onfail",
                "exit=64",
                "on-failure",
                ExitStatus::Code(64),
                true,
            ),
            (
                "signal-onfail",
                "raise=6",
                "on-failure",
                ExitStatus::Signal(6),
                true,
            ),
            ("zero-always", "exit=0", "always", ExitStatus::Code(0), true),
            (
                "listed",
                "exit=3",
                "on-failure:3",
                ExitStatus::Code(3),
                true,
            ),
            (
                "not-listed",
                "exit=2",
                "on-failure:3",
                ExitStatus::Code(2),
                false,
            ),
            (
                "signal-unlisted",
                "raise=6",
                "on-failure:3",
                ExitStatus::Signal(6),
                false,
            ),
            (
                "signal-listed",
                "raise=6",
                "on-failure:signal",
                ExitStatus::Signal(6),
                true,
            ),
        ];
        for (name, step, restart, status, restarts) in cases {
            let mut c = config(name, &[step]);
            c.restart = policy(restart);
            host.create(c, &Spec::new(Target::Hvt, &[])).await.unwrap();
            assert_eq!(host.exit_of(name).await, status, "{name}");
            let state = host.state(name);
            if restarts {
                let who = label(name);
                host.event(|e| matches!(e, Event::Started { name: n, .. } if *n == who))
                    .await;
                assert_eq!(host.exit_of(name).await, status, "{name}, second run");
                host.sup.destroy(&who).await.unwrap();
            } else {
                assert!(
                    matches!(&state, RunState::Exited { exit } if exit.status == status),
                    "{name}: {state:?}"
                );
            }
        }
    });
}

#[test]
fn failing_unikernels_back_off_into_a_crash_loop() {
    in_netns(|| async {
        let mut host = Host::with(quick_backoff);
        let mut c = config("crashy", &["exit=2"]);
        c.restart = RestartPolicy::OnFailure;
        host.create(c, &Spec::new(Target::Hvt, &[])).await.unwrap();
        let mut loops = Vec::new();
        for _ in 0..7 {
            match host.event(|e| matches!(e, Event::Restarting { .. })).await {
                Event::Restarting { crash_loop, .. } => loops.push(crash_loop),
                _ => unreachable!(),
            }
        }
        assert_eq!(loops, [false, false, false, false, true, true, true]);
        let info = host.sup.destroy(&label("crashy")).await.unwrap();
        assert_eq!(info.state, RunState::Stopped);
        assert!(info.restarts >= 6, "{} restarts", info.restarts);
        // The scheduled delays double up to the ceiling.
        let delays: Vec<String> = host
            .marks("crashy")
            .iter()
            .filter_map(|m| m.strip_prefix("restarting in "))
            .filter_map(|m| m.split(' ').next().map(str::to_owned))
            .take(7)
            .collect();
        assert_eq!(delays, ["20", "40", "80", "160", "160", "160", "160"]);
        // A stopped unikernel is not started again by a restart that was pending.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(host.state("crashy"), RunState::Stopped);
    });
}

#[test]
fn a_killed_tender_is_cleaned_up() {
    in_netns(|| async {
        netns::bridge("br0");
        let mut host = Host::new();
        let disk = host.block("disk", 1);
        let before = host.footprint();
        let c = UnikernelConfig {
            nets: vec![net("service0", "br0")],
            blocks: vec![block("storage", &disk)],
            ..config("victim", &["sleep-forever"])
        };
        let spec = Spec::new(Target::Hvt, &[("storage", BLOCK), ("service0", NET)]);
        host.create(c, &spec).await.unwrap();
        let RunState::Running { pid, .. } = host.state("victim") else {
            panic!("not running");
        };
        assert_ne!(host.footprint(), before);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        assert_eq!(host.exit_of("victim").await, ExitStatus::Signal(9));
        assert!(matches!(host.state("victim"), RunState::Exited { .. }));
        assert_eq!(host.footprint(), before);
        // Its block device is free again.
        let again = UnikernelConfig {
            nets: vec![net("service0", "br0")],
            blocks: vec![block("storage", &disk)],
            ..config("next", &[])
        };
        host.create(again, &spec).await.unwrap();
    });
}

#[test]
fn console_history_survives_restarts() {
    in_netns(|| async {
        let host = Host::new();
        let c = config("chatty", &["print=hello from a run", "sleep-forever"]);
        host.create(c, &Spec::new(Target::Hvt, &[])).await.unwrap();
        host.console_shows("chatty", "hello from a run", 1).await;
        host.sup.restart(&label("chatty")).await.unwrap();
        host.console_shows("chatty", "hello from a run", 2).await;
        host.sup.destroy(&label("chatty")).await.unwrap();
        let marks = host.marks("chatty");
        assert_eq!(
            marks.iter().filter(|m| m.starts_with("started")).count(),
            2,
            "{marks:?}"
        );
        assert_eq!(
            host.console("chatty")
                .iter()
                .filter(|l| l.as_str() == GUEST_STARTS)
                .count(),
            2
        );
    });
}

#[test]
fn running_unikernels_have_stats() {
    in_netns(|| async {
        netns::bridge("br0");
        let host = Host::new();
        let c = UnikernelConfig {
            nets: vec![net("service0", "br0")],
            ..config("counted", &["burst=1000", "sleep-forever"])
        };
        host.create(c, &Spec::new(Target::Hvt, &[("service0", NET)]))
            .await
            .unwrap();
        host.console_shows("counted", "burst 1000", 1).await;
        let stats = host.sup.stats(&label("counted")).unwrap();
        let RunState::Running { pid, .. } = host.state("counted") else {
            panic!("not running");
        };
        assert_eq!(stats.process.pid, pid);
        assert!(stats.process.rss_kb > 0);
        assert_eq!(stats.taps.len(), 1);
        assert_eq!(stats.taps[0].name, "vmmtap0");
        host.sup.destroy(&label("counted")).await.unwrap();
        assert!(matches!(
            host.sup.stats(&label("counted")),
            Err(SupervisorError::NotRunning(_))
        ));
    });
}

#[test]
fn refused_launches_leave_the_host_unchanged() {
    in_netns(|| async {
        netns::bridge("br0");
        let host = Host::new();
        let disk = host.block("disk", 1);
        let spec = Spec::new(Target::Hvt, &[("storage", BLOCK), ("service0", NET)]);
        let good = || UnikernelConfig {
            nets: vec![net("service0", "br0")],
            blocks: vec![block("storage", &disk)],
            ..config("holder", &["sleep-forever"])
        };
        host.create(good(), &spec).await.unwrap();
        let before = (
            host.footprint(),
            files_under(&host.dirs.data),
            host.sup.list(),
        );
        let cases: Vec<(&str, UnikernelConfig, Spec)> = vec![
            ("name taken", good(), spec.clone()),
            (
                "device unbound",
                UnikernelConfig {
                    nets: vec![],
                    ..good()
                },
                spec.clone(),
            ),
            (
                "unknown bridge",
                UnikernelConfig {
                    nets: vec![net("service0", "br9")],
                    ..good()
                },
                spec.clone(),
            ),
            (
                "block missing",
                UnikernelConfig {
                    blocks: vec![block("storage", &label("nope"))],
                    ..good()
                },
                spec.clone(),
            ),
            (
                "block attached",
                UnikernelConfig {
                    name: label("other"),
                    ..good()
                },
                spec.clone(),
            ),
            (
                "cpu offline",
                UnikernelConfig {
                    cpu: 4096,
                    ..config("c", &[])
                },
                Spec::new(Target::Hvt, &[]),
            ),
            (
                "too much memory",
                UnikernelConfig {
                    memory_mb: u64::MAX / 2,
                    ..config("m", &[])
                },
                Spec::new(Target::Spt, &[]),
            ),
            (
                "no tender",
                config("t", &[]),
                Spec::new(Target::Hvt, &[]).with_abi(3),
            ),
            (
                "device not in the manifest",
                UnikernelConfig {
                    nets: vec![net("service0", "br0"), net("extra", "br0")],
                    ..good()
                },
                spec.clone(),
            ),
            (
                "wrong kind",
                UnikernelConfig {
                    nets: vec![net("storage", "br0")],
                    blocks: vec![block("service0", &disk)],
                    ..good()
                },
                spec.clone(),
            ),
            (
                "bad sector size",
                UnikernelConfig {
                    blocks: vec![BlockConfig {
                        sector_size: Some(1000),
                        ..block("storage", &disk)
                    }],
                    ..good()
                },
                spec.clone(),
            ),
            (
                "hvt memory limit",
                UnikernelConfig {
                    memory_mb: 4097,
                    ..config("big", &[])
                },
                Spec::new(Target::Hvt, &[]),
            ),
        ];
        for (why, config, spec) in cases {
            let err = host.create(config, &spec).await.unwrap_err();
            assert!(matches!(err, SupervisorError::Invalid(_)), "{why}: {err}");
            let after = (
                host.footprint(),
                files_under(&host.dirs.data),
                host.sup.list(),
            );
            assert_eq!(after, before, "{why} changed the host");
        }
        host.sup.destroy(&label("holder")).await.unwrap();
    });
}

#[test]
fn a_failed_prepare_undoes_itself_and_keeps_what_was_there() {
    in_netns(|| async {
        netns::bridge("br0");
        let host = Host::new();
        // Something that is not a FIFO where the console FIFO would go.
        let run_dir = host.dirs.runtime.join("unikernels/blocked");
        std::fs::create_dir_all(&run_dir).unwrap();
        std::fs::write(run_dir.join("console"), "operator's notes").unwrap();
        let before = host.footprint();
        let c = UnikernelConfig {
            nets: vec![net("service0", "br0")],
            ..config("blocked", &[])
        };
        let err = host
            .create(c, &Spec::new(Target::Hvt, &[("service0", NET)]))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a FIFO"), "{err}");
        assert_eq!(host.footprint(), before, "the tap or image copy was left");
        assert_eq!(
            std::fs::read_to_string(run_dir.join("console")).unwrap(),
            "operator's notes"
        );
        assert!(host.sup.list().is_empty());
    });
}

#[test]
fn a_tender_deaf_to_sigterm_is_killed_after_the_grace_period() {
    in_netns(|| async {
        let host = Host::with(|s| s.grace = Duration::from_millis(300));
        for (spec, name) in [
            (Spec::new(Target::Hvt, &[]), "deaf-hvt"),
            (Spec::new(Target::Spt, &[]), "deaf-spt"),
        ] {
            host.create(config(name, &["hang"]), &spec).await.unwrap();
            host.console_shows(name, "fulmar-test-tender: hung", 1)
                .await;
            let info = host.sup.destroy(&label(name)).await.unwrap();
            assert_eq!(info.state, RunState::Stopped);
            assert_eq!(
                info.exits.last().map(|e| e.status),
                Some(ExitStatus::Signal(9)),
                "{name}"
            );
        }
        assert_eq!(host.footprint().1, Vec::<PathBuf>::new());
    });
}

/// A monitor stand-in that holds up the start of the unikernel `stuck` until
/// `release` exists, then runs the real monitor; every other start goes
/// straight through.
fn slow_monitor(dir: &Path, release: &Path) -> PathBuf {
    let script = dir.join("slow-monitor");
    let body = format!(
        "#!/bin/sh\ncase \"$*\" in\n*/unikernels/stuck/*) while [ ! -e '{}' ]; do sleep 0.05; done ;;\nesac\nexec '{}' \"$@\"\n",
        release.display(),
        support::daemon::fulmar().display()
    );
    std::fs::write(&script, body).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn a_hung_start_stalls_no_other_unikernel() {
    in_netns(|| async {
        let work = tempfile::tempdir().unwrap();
        let release = work.path().join("release");
        let monitor = slow_monitor(work.path(), &release);
        let host = Host::with(|s| s.monitor = Some(monitor));
        let spec = Spec::new(Target::Hvt, &[]);
        host.create(config("other", &["sleep-forever"]), &spec)
            .await
            .unwrap();

        let sup = host.sup.clone();
        let image = image::load(&spec.path(), Compression::Detect).unwrap();
        let stuck =
            tokio::spawn(
                async move { sup.create(config("stuck", &["sleep-forever"]), image).await },
            );
        tokio::time::timeout(PATIENCE, async {
            while !host
                .sup
                .list()
                .iter()
                .any(|u| u.config.name.as_str() == "stuck")
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the stuck create never listed its unikernel");
        assert!(matches!(host.state("stuck"), RunState::Starting { .. }));

        // While its start hangs, everything about the others still answers.
        let started = std::time::Instant::now();
        assert_eq!(host.sup.list().len(), 2);
        assert!(host.sup.console(&label("other")).is_ok());
        host.create(config("third", &["sleep-forever"]), &spec)
            .await
            .unwrap();
        host.sup.destroy(&label("other")).await.unwrap();
        assert_eq!(host.state("other"), RunState::Stopped);
        host.sup.destroy(&label("third")).await.unwrap();
        let took = started.elapsed();
        assert!(
            !stuck.is_finished(),
            "the other requests waited for the hung start ({took:?})"
        );
        eprintln!("list, console, create and two destroys during a hung start: {took:?}");

        // The starting one keeps its name and refuses to be forgotten.
        let again = host.create(config("stuck", &[]), &spec).await;
        assert!(
            matches!(again, Err(SupervisorError::Invalid(_))),
            "{again:?}"
        );
        assert!(matches!(
            host.sup.remove(&label("stuck")),
            Err(SupervisorError::Running(_))
        ));

        std::fs::write(&release, b"").unwrap();
        let info = tokio::time::timeout(PATIENCE, stuck)
            .await
            .expect("the released start never finished")
            .unwrap()
            .unwrap();
        assert!(
            matches!(info.state, RunState::Running { .. }),
            "{:?}",
            info.state
        );
        host.sup.destroy(&label("stuck")).await.unwrap();
    });
}

#[test]
fn destroy_ends_a_run_whose_monitor_is_stopped() {
    in_netns(|| async {
        let host = Host::with(|s| s.grace = Duration::from_millis(300));
        host.create(
            config("frozen", &["sleep-forever"]),
            &Spec::new(Target::Hvt, &[]),
        )
        .await
        .unwrap();
        let run = host.dirs.runtime.join("unikernels/frozen/run.json");
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run).unwrap()).unwrap();
        let pids: Vec<i32> = ["monitor", "tender"]
            .iter()
            .map(|p| record[p]["pid"].as_i64().unwrap() as i32)
            .collect();
        for pid in &pids {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGSTOP).unwrap();
        }
        let info = tokio::time::timeout(PATIENCE, host.sup.destroy(&label("frozen")))
            .await
            .expect("destroy hung on a stopped monitor")
            .unwrap();
        assert_eq!(info.state, RunState::Stopped);
        for pid in pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
            assert!(
                !stat.is_ok_and(|s| !s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z')),
                "pid {pid} still runs"
            );
        }
    });
}
