//! Crash consistency: the daemon killed with SIGKILL at
//! any moment leaves no tender nobody supervises, no second copy of a
//! unikernel, and no tap, run directory or temporary file behind; every block
//! device holds complete old or new contents.
//!
//! `FULMAR_CRASH_KILLS=500 cargo test --release --test it crash::` is the long run
//! (docs/reliability.md); `FULMAR_CRASH_SEED` replays one.

use crate::support;

use fulmar::api::image::{DeviceKind, Target};
use fulmar::api::protocol::{Reply, Request};
use fulmar::api::unikernel::{RunState, UnikernelInfo};
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::bytes::{pattern, sha, sha_of};
use support::daemon::{Cli, Host, eventually};
use support::images::Spec;
use support::netns;

const MIB: usize = 1 << 20;

/// Versions of each block device's contents; every device must hold one.
const VERSIONS: u64 = 3;

/// The processes of a host's runs: `fulmar monitor`s and tenders, by name.
#[derive(Debug, Default, PartialEq, Eq)]
struct Processes {
    monitors: BTreeMap<String, Vec<i32>>,
    tenders: BTreeMap<String, Vec<i32>>,
}

/// Every live process whose command line names a run directory of `runtime`:
/// the monitor names its run file, the tender its image copy.
fn processes(runtime: &Path) -> Processes {
    let runs = format!("{}/unikernels/", runtime.display());
    let mut found = Processes::default();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if !alive(pid) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        for arg in &args {
            let Some(rest) = arg.strip_prefix(&runs) else {
                continue;
            };
            let Some((name, file)) = rest.split_once('/') else {
                continue;
            };
            let kind = match file {
                "run.json" => &mut found.monitors,
                "image" => &mut found.tenders,
                _ => continue,
            };
            kind.entry(name.to_owned()).or_default().push(pid);
            break;
        }
    }
    found
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

fn unikernels(host: &Host) -> Vec<UnikernelInfo> {
    let reply = host.with_client(async |client| client.call(Request::List).await.unwrap());
    let Reply::Unikernels { unikernels } = reply else {
        panic!("{reply:?}");
    };
    unikernels
}

fn running(unikernels: &[UnikernelInfo]) -> BTreeMap<String, u32> {
    unikernels
        .iter()
        .filter_map(|u| match u.state {
            RunState::Running { pid, .. } => Some((u.config.name.to_string(), pid)),
            _ => None,
        })
        .collect()
}

/// The host's taps, as sysfs shows them (the test's own network namespace).
fn host_taps() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("vmmtap"))
                .collect()
        })
        .unwrap_or_default()
}

fn run_dirs(runtime: &Path) -> BTreeSet<String> {
    std::fs::read_dir(runtime.join("unikernels"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Files a write in progress makes, anywhere under `dir`.
fn temporary_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(temporary_files(&path));
        } else if name.starts_with(".upload-")
            || name.starts_with(".partial_")
            || name.contains(".tmp")
        {
            found.push(path);
        }
    }
    found
}

/// What a consistent host looks like: each running unikernel has exactly one
/// monitor and one tender, its run directory and its taps; nothing else has
/// any of those.
fn consistent(host: &Host, with_net: bool) -> Result<(), String> {
    let listed = unikernels(host);
    let running = running(&listed);
    let procs = processes(host.runtime.path());
    for (name, pids) in procs.tenders.iter().chain(&procs.monitors) {
        match running.get(name) {
            None => {
                let state = listed
                    .iter()
                    .find(|u| u.config.name.as_str() == name)
                    .map(|u| &u.state);
                let dir: Vec<_> =
                    std::fs::read_dir(host.runtime.path().join("unikernels").join(name))
                        .map(|d| d.flatten().map(|e| e.file_name()).collect())
                        .unwrap_or_default();
                return Err(format!(
                    "{name} is {state:?}, yet processes {pids:?} run it ({procs:?}; run directory {dir:?})"
                ));
            }
            Some(_) if pids.len() > 1 => {
                return Err(format!("{name} runs {} times: {pids:?}", pids.len()));
            }
            Some(_) => {}
        }
    }
    for (name, pid) in &running {
        if procs.tenders.get(name) != Some(&vec![*pid as i32]) {
            return Err(format!(
                "{name} is listed with tender {pid}, found {:?}",
                procs.tenders.get(name)
            ));
        }
    }
    let dirs = run_dirs(host.runtime.path());
    let names: BTreeSet<String> = running.keys().cloned().collect();
    if dirs != names {
        return Err(format!("run directories {dirs:?} for running {names:?}"));
    }
    if with_net {
        let held: BTreeSet<String> = listed
            .iter()
            .flat_map(|u| u.taps.iter().map(|t| t.tap.clone()))
            .collect();
        let taps = host_taps();
        if taps != held {
            return Err(format!("taps {taps:?}, held by unikernels {held:?}"));
        }
    }
    let temps: Vec<PathBuf> = [host.data.path(), host.runtime.path()]
        .iter()
        .flat_map(|d| temporary_files(d))
        .collect();
    if !temps.is_empty() {
        return Err(format!("temporary files left: {temps:?}"));
    }
    Ok(())
}

fn assert_consistent(host: &Host, with_net: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match consistent(host, with_net) {
            Ok(()) => return,
            Err(why) if Instant::now() > deadline => panic!("after the kills: {why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A small deterministic generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::env::var("FULMAR_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("FULMAR_CRASH_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn version_file(dir: &Path, v: u64) -> String {
    let path = dir.join(format!("v{v}"));
    if !path.exists() {
        std::fs::write(&path, pattern(2 * MIB, v)).unwrap();
    }
    path.display().to_string()
}

/// What the load threads share: the CLI, when to stop, and how much of what
/// they asked for the daemon did (so a run that did nothing fails).
struct Load {
    cli: Cli,
    image: String,
    with_net: bool,
    versions: PathBuf,
    stop: AtomicBool,
    created: AtomicUsize,
    uploaded: AtomicUsize,
}

impl Load {
    fn going(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    /// Creates, destroys and removes `names` at random, each on its own block
    /// device (and tap), whatever the daemon answers.
    fn lifecycles(&self, names: &[String], seed: u64) {
        let mut rng = Rng(seed | 1);
        while self.going() {
            let name = &names[rng.below(names.len() as u64) as usize];
            let disk = format!("storage:k{name}");
            match rng.below(3) {
                0 => {
                    let mut args = vec!["create", name, &self.image, "--block", &disk];
                    if self.with_net {
                        args.extend(["--net", "service:br0"]);
                    }
                    args.extend(["--", "sleep-forever"]);
                    if self.cli.run(&args).status.success() {
                        self.created.fetch_add(1, Ordering::Relaxed);
                    }
                }
                1 => {
                    self.cli.run(&["destroy", name]);
                }
                _ => {
                    self.cli.run(&["destroy", name]);
                    self.cli.run(&["remove", name]);
                }
            }
        }
    }

    /// Uploads whole versions to the free devices, through a lent file and
    /// through a stream.
    fn uploads(&self, seed: u64) {
        let mut rng = Rng(seed | 1);
        while self.going() {
            let device = format!("x{}", rng.below(2));
            let file = version_file(&self.versions, rng.below(VERSIONS));
            let out = if rng.below(2) == 0 {
                self.cli.run(&["block", "upload", &device, &file])
            } else {
                let mut c = self
                    .cli
                    .command(&["--no-start", "block", "upload", &device, "-"]);
                c.stdin(std::fs::File::open(&file).unwrap());
                c.output().unwrap()
            };
            if out.status.success() {
                self.uploaded.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn kills() -> usize {
    std::env::var("FULMAR_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

fn harness(with_net: bool) {
    if with_net {
        netns::bridge("br0");
    }
    let mut rng = Rng::seeded();
    let mut host = Host::new();
    host.start(&[]);
    let versions = tempfile::tempdir().unwrap();
    let known: BTreeSet<String> = (0..VERSIONS).map(|v| sha(&pattern(2 * MIB, v))).collect();
    let names: Vec<String> = (0..4).map(|i| format!("u{i}")).collect();
    let devices: Vec<String> = names
        .iter()
        .map(|n| format!("k{n}"))
        .chain(["x0".into(), "x1".into()])
        .collect();
    for device in &devices {
        let v0 = version_file(versions.path(), 0);
        host.ok(&["block", "create", device, "2", "--data", &v0]);
    }
    let mut devices_spec = vec![("storage", DeviceKind::Block)];
    if with_net {
        devices_spec.push(("service", DeviceKind::Net));
    }
    let image = Spec::new(Target::Hvt, &devices_spec)
        .path()
        .display()
        .to_string();
    let load = Load {
        cli: host.cli(),
        image,
        with_net,
        versions: versions.path().to_owned(),
        stop: AtomicBool::new(false),
        created: AtomicUsize::new(0),
        uploaded: AtomicUsize::new(0),
    };
    std::thread::scope(|scope| {
        for pair in names.chunks(2) {
            let (load, seed) = (&load, rng.below(u64::MAX));
            scope.spawn(move || load.lifecycles(pair, seed));
        }
        let (load, seed) = (&load, rng.below(u64::MAX));
        scope.spawn(move || load.uploads(seed));
        for _ in 0..kills() {
            std::thread::sleep(Duration::from_millis(20 + rng.below(400)));
            // Shown only if the test fails.
            eprintln!(
                "--- a killed daemon's log:\n{}",
                host.signal_daemon(Signal::SIGKILL)
            );
            host.start(&[]);
        }
        load.stop.store(true, Ordering::Relaxed);
    });
    let (created, uploaded) = (load.created.into_inner(), load.uploaded.into_inner());
    eprintln!(
        "{} kills under {created} creates and {uploaded} uploads",
        kills()
    );
    assert!(
        created > 0 && uploaded > 0,
        "the load did nothing: {created} creates, {uploaded} uploads"
    );
    assert_consistent(&host, with_net);
    for device in &devices {
        let digest = sha_of(&host.block_file(device));
        assert!(
            known.contains(&digest),
            "{device} holds neither old nor new contents"
        );
    }
    // And everything still goes away when asked.
    for u in unikernels(&host) {
        host.ok(&["destroy", u.config.name.as_str()]);
        host.ok(&["remove", u.config.name.as_str()]);
    }
    assert_consistent(&host, with_net);
    assert_eq!(processes(host.runtime.path()), Processes::default());
}

#[test]
fn sigkill_at_random_moments_leaves_nothing_unsupervised() {
    if netns::run(|| harness(true)).is_none() {
        harness(false);
    }
}

/// A create the daemon never recorded (it was killed between starting the
/// tender and saving the state) is undone by the next daemon.
#[test]
fn a_run_the_state_never_recorded_is_stopped_and_reclaimed() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&["block", "create", "disk", "1"]);
    let state = host.data.path().join("state.json");
    let before = std::fs::read(&state).unwrap();
    let image = Spec::new(Target::Hvt, &[("storage", DeviceKind::Block)]).path();
    host.ok(&[
        "create",
        "web",
        image.to_str().unwrap(),
        "--block",
        "storage:disk",
        "--",
        "sleep-forever",
    ]);
    let pid = host.pid_of("web");
    host.signal_daemon(Signal::SIGKILL);
    // As the state file was before the create was saved.
    std::fs::write(&state, before).unwrap();
    host.start(&[]);
    assert!(host.list().is_empty());
    eventually("the unrecorded tender is stopped", || !alive(pid));
    assert_eq!(processes(host.runtime.path()), Processes::default());
    assert!(run_dirs(host.runtime.path()).is_empty());
    // Its disk is free again.
    host.ok(&[
        "create",
        "db",
        image.to_str().unwrap(),
        "--block",
        "storage:disk",
        "--",
        "sleep-forever",
    ]);
}

/// A restart the state file has not caught up with (it says "restarting",
/// with no run) is re-adopted, not started a second time beside itself.
#[test]
fn a_run_the_state_has_not_caught_up_with_is_adopted_not_doubled() {
    let mut host = Host::new();
    host.start(&[]);
    let image = Spec::new(Target::Hvt, &[]).path();
    host.ok(&[
        "create",
        "web",
        image.to_str().unwrap(),
        "--",
        "sleep-forever",
    ]);
    let pid = host.pid_of("web");
    host.signal_daemon(Signal::SIGKILL);
    let state = host.data.path().join("state.json");
    let mut saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let web = saved
        .pointer_mut("/state/unikernels/0")
        .expect("the state file's layout changed: update this test");
    web.as_object_mut().unwrap().remove("run");
    web["state"] = serde_json::json!({"state": "restarting", "at_ms": 0});
    std::fs::write(&state, serde_json::to_vec(&saved).unwrap()).unwrap();
    host.start(&[]);
    assert_eq!(host.pid_of("web"), pid);
    let procs = processes(host.runtime.path());
    assert_eq!(procs.tenders.get("web"), Some(&vec![pid]), "{procs:?}");
}
