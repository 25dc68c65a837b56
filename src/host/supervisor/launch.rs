//! One run of a tender: prepare the host (image copy, console FIFO, taps),
//! exec the tender, and release all of it again when the run ends.

use crate::api::unikernel::{TapInfo, UnikernelConfig};
use crate::host::console::{self, Console};
use crate::host::durable;
use crate::host::monitor;
use crate::host::net;
use crate::host::privilege::{self, TenderUser};
use crate::host::rundir;
use serde::{Deserialize, Serialize};
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Console(#[from] console::ConsoleError),
    #[error("{0}")]
    Net(#[from] net::NetError),
    #[error("{0}")]
    Monitor(#[from] monitor::MonitorError),
    #[error(
        "a run of {name} is still going under its monitor, so a second one would share its disks and MAC: restart the daemon, which re-adopts or stops it"
    )]
    StillRunning { name: String },
    #[error("{0}")]
    Privilege(#[from] privilege::PrivilegeError),
    #[error("cannot record what the run changes in {} ({why}): check the runtime directory's disk", path.display())]
    Record { path: PathBuf, why: String },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LaunchError {
    let path = path.to_owned();
    move |source| LaunchError::Io { what, path, source }
}

/// What one run made on the host; [`Resources::release`] removes exactly that,
/// and nothing that was there before it.
#[derive(Debug, Default)]
pub struct Resources {
    dir: Option<PathBuf>,
    image: Option<PathBuf>,
    fifo: Option<PathBuf>,
    run_file: Option<PathBuf>,
    /// The record of what the run changed ([`MADE_FILE`]), removed only
    /// after what it names is undone.
    record_file: Option<PathBuf>,
    taps: Vec<TapInfo>,
    /// Block device files handed to the tender user, to be given back.
    lent: Vec<PathBuf>,
}

impl Resources {
    /// What a run of an earlier daemon left in `dir`: the files, and every tap
    /// and lent block file its record names, with the taps a state file of a
    /// fulmar before the record names, for the end of an adopted, finished or
    /// unwanted run.
    pub fn left_by(dir: &Path, saved_taps: &[TapInfo]) -> Resources {
        let Made { mut taps, lent } = recorded(dir);
        for tap in saved_taps {
            if !taps.iter().any(|t| t.tap == tap.tap) {
                taps.push(tap.clone());
            }
        }
        Resources {
            dir: Some(dir.to_owned()),
            image: Some(dir.join("image")),
            fifo: Some(dir.join("console")),
            run_file: Some(dir.join(RUN_FILE)),
            record_file: Some(dir.join(MADE_FILE)),
            taps,
            lent,
        }
    }

    /// Removes the taps, the files, the FIFO and the run directory. Clean-up
    /// goes on past a failure so that one stuck tap does not leak the rest.
    pub fn release(self) {
        for file in &self.lent {
            if let Err(e) = privilege::take_back(file) {
                tracing::warn!("clean-up: {e}");
            }
        }
        for tap in &self.taps {
            if let Err(e) = net::delete_tap(&tap.tap) {
                tracing::warn!("clean-up: {e}");
            }
        }
        // A crash between a durable write's temporary file and its rename
        // leaves the temporary file.
        let records = [&self.run_file, &self.record_file].into_iter().flatten();
        let temps: Vec<PathBuf> = records.map(|f| durable::temp_of(f)).collect();
        let files = [&self.image, &self.run_file, &self.record_file]
            .into_iter()
            .flatten();
        for file in files.chain(&temps) {
            match fs::remove_file(file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    tracing::warn!("clean-up: cannot remove {}: {e}", file.display());
                }
                _ => {}
            }
        }
        if let Some(fifo) = &self.fifo
            && let Err(e) = console::remove_fifo(fifo)
        {
            tracing::warn!("clean-up: {e}");
        }
        // Only when empty: anything else in it is not ours to delete.
        if let Some(dir) = &self.dir
            && let Err(e) = fs::remove_dir(dir)
        {
            tracing::warn!("clean-up: cannot remove {}: {e}", dir.display());
        }
    }
}

/// A tender that is running under its monitor, with its console being drained.
pub struct Launched {
    pub monitored: monitor::Monitored,
    /// The tender's.
    pub pid: u32,
    pub argv: Vec<String>,
    pub taps: Vec<TapInfo>,
    pub resources: Resources,
    pub drain: JoinHandle<()>,
}

/// Where the runs live: one directory per unikernel that runs.
pub fn runs_dir(runtime: &Path) -> PathBuf {
    runtime.join("unikernels")
}

/// Where a unikernel's run lives: `<runtime>/unikernels/<name>/{image,console}`.
pub fn run_dir(runtime: &Path, name: &str) -> PathBuf {
    runs_dir(runtime).join(name)
}

/// One of the configuration's block devices, paired with its file by name.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The device name in the image's manifest.
    pub device: String,
    pub sector_size: Option<u32>,
    pub path: PathBuf,
}

/// Everything one run needs.
pub struct Plan<'a> {
    pub config: &'a UnikernelConfig,
    /// The image as the data directory keeps it.
    pub stored_image: &'a Path,
    pub tender: &'a Path,
    pub blocks: &'a [Attachment],
    pub runtime: &'a Path,
    pub console: &'a Console,
    pub monitor: &'a MonitorSettings,
}

/// Prepares the host and starts the tender. Each step that fails undoes the
/// ones before it, so a failed launch leaves nothing behind.
pub fn launch(plan: &Plan) -> Result<Launched, LaunchError> {
    let mut made = Resources::default();
    match prepare_and_exec(plan, &mut made) {
        Ok(launched) => Ok(Launched {
            resources: made,
            ..launched
        }),
        Err(e) => {
            made.release();
            Err(e)
        }
    }
}

fn prepare_and_exec(plan: &Plan, made: &mut Resources) -> Result<Launched, LaunchError> {
    let Plan {
        config,
        stored_image,
        tender,
        blocks,
        runtime,
        console,
        monitor,
    } = plan;
    let dir = &run_dir(runtime, config.name.as_str());
    // Monitors lock their directory; those of older fulmars only record it.
    let locked = matches!(rundir::claim(dir), Ok(rundir::Claim::Taken));
    if locked || monitor::still_running(&dir.join(RUN_FILE)) {
        return Err(LaunchError::StillRunning {
            name: config.name.to_string(),
        });
    }
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("create the run directory", dir))?;
        made.dir = Some(dir.to_owned());
    }
    let image = dir.join("image");
    fs::copy(stored_image, &image).map_err(io_err("copy the image to", &image))?;
    made.image = Some(image.clone());
    fs::set_permissions(&image, fs::Permissions::from_mode(0o600))
        .map_err(io_err("restrict", &image))?;
    let record_file = dir.join(MADE_FILE);
    made.record_file = Some(record_file.clone());
    let mut record = Made::default();
    if let Some(user) = &monitor.tender {
        lend(user, dir, &image, blocks, &record_file, &mut record, made)?;
    }

    let owner = monitor.tender.as_ref().map(|u| u.uid);
    for net in &config.nets {
        let info = |tap: &str| TapInfo {
            interface: net.interface.clone(),
            tap: tap.to_owned(),
            bridge: net.bridge.clone(),
            mac: config.mac_of(net),
        };
        // Recorded before the tap exists: a daemon killed at any moment
        // leaves a record of every tap its successor must reclaim.
        let mut note = |tap: &str| {
            let mut next = record.clone();
            next.taps.push(info(tap));
            write_record(&record_file, &next)
        };
        let tap = net::create_tap(&net.bridge, owner, &mut note)?;
        made.taps.push(info(&tap.name));
        record.taps.push(info(&tap.name));
    }
    let taps = record.taps;

    // The reader is open before the tender starts, so no early output is lost.
    let fifo = dir.join("console");
    console::create_fifo(&fifo)?;
    made.fifo = Some(fifo.clone());
    let reader = console::open_reader(&fifo)?;

    let argv = argv(config, tender, &image, &taps, blocks);
    let run_file = dir.join(RUN_FILE);
    let monitored = monitor::spawn(&monitor::Spec {
        program: monitor.program.clone(),
        status: run_file.clone(),
        grace: monitor.grace,
        console: Some(fifo),
        tender_user: monitor.tender.as_ref().map(|u| u.name.clone()),
        argv: argv.clone(),
    })?;
    made.run_file = Some(run_file);
    let pid = monitored.record().tender.pid;
    // Before the drain starts, so the mark precedes the guest's first line.
    console.mark(&format!("started, pid {pid}"));
    let drain = tokio::spawn(drain(reader, (*console).clone(), config.name.to_string()));
    Ok(Launched {
        pid,
        monitored,
        argv,
        taps,
        resources: Resources::default(),
        drain,
    })
}

/// Lets the tender user reach what its run needs (host::privilege): the run
/// directory, the image copy read-only, the block device files while attached.
fn lend(
    user: &TenderUser,
    dir: &Path,
    image: &Path,
    blocks: &[Attachment],
    record_file: &Path,
    record: &mut Made,
    made: &mut Resources,
) -> Result<(), LaunchError> {
    user.may_search(dir)?;
    user.hand_over(image, 0o400)?;
    for block in blocks {
        // Booked first, and durably: a hand-over that fails half-way, or
        // that a killed daemon leaves, is given back too.
        record.lent.push(block.path.clone());
        write_record(record_file, record).map_err(|why| LaunchError::Record {
            path: record_file.to_owned(),
            why,
        })?;
        made.lent.push(block.path.clone());
        user.hand_over(&block.path, 0o600)?;
    }
    Ok(())
}

/// Takes up a run that a previous daemon started and that is still going: its
/// console again, and what it holds for the clean-up at its end.
pub fn adopt(
    name: &str,
    runtime: &Path,
    monitored: monitor::Monitored,
    saved_taps: &[TapInfo],
    console: &Console,
) -> Result<Launched, LaunchError> {
    let dir = run_dir(runtime, name);
    let resources = Resources::left_by(&dir, saved_taps);
    let fifo = dir.join("console");
    let reader = console::open_reader(&fifo)?;
    let drain = tokio::spawn(drain(reader, console.clone(), name.to_owned()));
    Ok(Launched {
        pid: monitored.record().tender.pid,
        monitored,
        argv: Vec::new(),
        taps: resources.taps.clone(),
        resources,
        drain,
    })
}

/// Where the monitor records a run, inside its run directory.
pub const RUN_FILE: &str = "run.json";

/// Where a run records what it changes on the host, each change before it
/// is made.
pub const MADE_FILE: &str = "made.json";

/// What a run changed on the host besides its directory: its taps, and the
/// block device files handed to the tender user.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Made {
    pub taps: Vec<TapInfo>,
    #[serde(default)]
    pub lent: Vec<PathBuf>,
}

fn write_record(file: &Path, made: &Made) -> Result<(), String> {
    let json = serde_json::to_vec(made).map_err(|e| e.to_string())?;
    // Whole against a crash of the daemon; a reboot takes the taps and the
    // runtime directory with it, so no fsync.
    durable::replace_atomically(file, &json).map_err(|e| format!("{}: {e}", file.display()))
}

/// What a run in `dir` recorded; nothing if it recorded nothing (or a fulmar
/// before the record made it; the state file names its taps).
pub fn recorded(dir: &Path) -> Made {
    let file = dir.join(MADE_FILE);
    let unreadable = |why: String| {
        tracing::warn!(
            "cannot read {} ({why}): what it names is not reclaimed",
            file.display()
        );
        Made::default()
    };
    match fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| unreadable(e.to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Made::default(),
        Err(e) => unreadable(e.to_string()),
    }
}

/// How runs are monitored.
#[derive(Debug, Clone)]
pub struct MonitorSettings {
    /// The fulmar binary that runs `fulmar monitor`; None: this program.
    pub program: Option<PathBuf>,
    /// Between SIGTERM and SIGKILL when a unikernel is destroyed.
    pub grace: std::time::Duration,
    /// Who the tender runs as; None: as the daemon.
    pub tender: Option<TenderUser>,
}

/// Reads the console until the tender is gone; a read error ends the run's
/// console, not the run.
async fn drain(reader: tokio::net::unix::pipe::Receiver, console: Console, name: String) {
    if let Err(e) = console::drain(reader, console).await {
        tracing::warn!("{name}: console: {e}");
    }
}

/// The tender's command line as albatross builds it (memory, then each
/// device by manifest name, `--`, the image and its arguments), pinned to the
/// configured CPU.
pub fn argv(
    config: &UnikernelConfig,
    tender: &Path,
    image: &Path,
    taps: &[TapInfo],
    blocks: &[Attachment],
) -> Vec<String> {
    let mut argv = pin(config.cpu);
    argv.push(tender.display().to_string());
    argv.push(format!("--mem={}", config.memory_mb));
    for t in taps {
        argv.push(format!("--net:{}={}", t.interface, t.tap));
    }
    for t in taps {
        argv.push(format!("--net-mac:{}={}", t.interface, t.mac));
    }
    for b in blocks {
        argv.push(format!("--block:{}={}", b.device, b.path.display()));
    }
    // Only given sizes: the tender's default is the same 512.
    for b in blocks {
        if let Some(size) = b.sector_size {
            argv.push(format!("--block-sector-size:{}={size}", b.device));
        }
    }
    argv.push("--".into());
    argv.push(image.display().to_string());
    argv.extend(config.args.iter().cloned());
    argv
}

#[cfg(not(target_os = "freebsd"))]
fn pin(cpu: u32) -> Vec<String> {
    vec!["taskset".into(), "-c".into(), cpu.to_string()]
}

#[cfg(target_os = "freebsd")]
fn pin(cpu: u32) -> Vec<String> {
    vec!["cpuset".into(), "-l".into(), cpu.to_string()]
}
