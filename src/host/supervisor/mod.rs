//! The lifecycle of unikernels (DESIGN.md): validate -> prepare -> exec -> wait
//! -> restart or clean up, and destroy.
//!
//! All bookkeeping sits behind one mutex that is never held across an await;
//! each run has one task that owns the tender's `Child`, so signals are only
//! ever sent to a process that has not been reaped yet (no pid reuse races).

mod backoff;
mod launch;
mod saved;

pub use backoff::Backoff;
pub use launch::LaunchError;
pub use saved::{RestoreFailure, Saved, SavedRun, SavedUnikernel};

use crate::api::block::BlockDeviceInfo;
use crate::api::event::Event;
use crate::api::image::{Device, ImageInfo, Target, TenderReport};
use crate::api::label::Label;
use crate::api::policy::{Claim, Policy, PolicyReport, Usage};
use crate::api::time::now_ms;
use crate::api::unikernel::{
    ExitRecord, ExitStatus, RunState, TapInfo, UnikernelConfig, UnikernelInfo,
};
use crate::api::validate::{self, Facts, Problem};
use crate::host::block::{BlockError, BlockFile, BlockStore};
use crate::host::console::{Console, ConsoleLimits};
use crate::host::image::Image;
use crate::host::monitor;
use crate::host::paths::Dirs;
use crate::host::tender::ProbeCache;
use crate::host::{policy, stats};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, oneshot, watch};

/// How many exits a unikernel's history keeps.
const EXIT_HISTORY: usize = 100;

/// How the supervisor is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    pub dirs: Dirs,
    /// Where to look for tenders after the data directory (a `PATH` value).
    pub tender_path: Option<OsString>,
    /// How long a destroyed tender has between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// The fulmar binary that runs each unikernel's monitor; None: this
    /// program (tests running as another program name the fulmar binary).
    pub monitor: Option<PathBuf>,
    pub backoff: Backoff,
    pub console: ConsoleLimits,
}

impl Settings {
    pub fn new(dirs: Dirs) -> Settings {
        Settings {
            dirs,
            tender_path: std::env::var_os("PATH"),
            grace: Duration::from_secs(10),
            monitor: None,
            backoff: Backoff::default(),
            console: ConsoleLimits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("{}", problems_line(.0))]
    Invalid(Vec<Problem>),
    #[error("no unikernel named {0}: `fulmar list` shows them")]
    NotFound(Label),
    #[error("{0} is running: destroy it first")]
    Running(Label),
    #[error("{0} is not running: `fulmar restart {0}` starts it")]
    NotRunning(Label),
    #[error("{0}")]
    Block(#[from] BlockError),
    #[error("no stored image with digest {0}: send the image again")]
    NoImage(String),
    #[error("the stored image {} no longer matches its digest: remove it and send the image again", .0.display())]
    ImageChanged(PathBuf),
    #[error("{0}")]
    Image(#[from] crate::host::image::ImageError),
    #[error("{0}")]
    Launch(#[from] LaunchError),
    #[error("{0}")]
    Policy(#[from] policy::PolicyError),
    #[error("{0}")]
    Stats(#[from] stats::StatsError),
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn problems_line(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The image facts a unikernel keeps; the bytes stay on disk, stored by digest.
#[derive(Debug, Clone)]
struct StoredImage {
    target: Target,
    abi_version: u32,
    devices: Vec<Device>,
    digest: String,
    path: PathBuf,
}

/// A running tender, as the bookkeeping sees it.
struct Run {
    pid: u32,
    taps: Vec<TapInfo>,
    stop: Option<oneshot::Sender<()>>,
    ended: watch::Receiver<bool>,
}

struct Unit {
    config: UnikernelConfig,
    image: StoredImage,
    state: RunState,
    run: Option<Run>,
    /// Bumped by every start and destroy, so a restart that was scheduled
    /// before them knows it is stale.
    generation: u64,
    /// The operator destroyed it: the current run's end is not a failure.
    stop_requested: bool,
    console: Console,
    restarts: u32,
    failures: u32,
    exits: Vec<ExitRecord>,
    argv: Vec<String>,
}

impl Unit {
    /// Whether the unikernel holds its CPU, memory and block devices: while it
    /// runs or waits to run again.
    fn holds_resources(&self) -> bool {
        matches!(
            self.state,
            RunState::Running { .. } | RunState::Restarting { .. } | RunState::CrashLoop { .. }
        ) || self.run.is_some()
    }

    /// What it takes from the root policy, while it holds anything.
    fn claim(&self) -> Option<Claim> {
        self.holds_resources().then(|| Claim {
            cpu: Some(self.config.cpu),
            memory_mb: self.config.memory_mb,
            disk_mb: 0,
            bridges: self.config.nets.iter().map(|n| n.bridge.clone()).collect(),
        })
    }

    fn info(&self) -> UnikernelInfo {
        UnikernelInfo {
            config: self.config.clone(),
            target: self.image.target,
            devices: self.image.devices.clone(),
            digest: self.image.digest.clone(),
            state: self.state.clone(),
            taps: self
                .run
                .as_ref()
                .map(|r| r.taps.clone())
                .unwrap_or_default(),
            argv: self.argv.clone(),
            restarts: self.restarts,
            exits: self.exits.clone(),
        }
    }
}

struct Inner {
    settings: Settings,
    tenders: ProbeCache,
    blocks: BlockStore,
    units: Mutex<BTreeMap<Label, Unit>>,
    events: broadcast::Sender<Event>,
}

/// The host backend's lifecycle manager. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl Supervisor {
    pub fn new(settings: Settings) -> Supervisor {
        let (events, _) = broadcast::channel(1024);
        Supervisor {
            inner: Arc::new(Inner {
                blocks: BlockStore::new(&settings.dirs.data),
                tenders: ProbeCache::default(),
                settings,
                units: Mutex::new(BTreeMap::new()),
                events,
            }),
        }
    }

    pub fn block_store(&self) -> &BlockStore {
        &self.inner.blocks
    }

    /// Announcements of what happens to unikernels from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    pub fn list(&self) -> Vec<UnikernelInfo> {
        self.inner.lock().values().map(Unit::info).collect()
    }

    pub fn info(&self, name: &Label) -> Result<UnikernelInfo, SupervisorError> {
        self.inner.with_unit(name, |u| u.info())
    }

    /// The unikernel's console; it outlives runs, so history survives restarts.
    pub fn console(&self, name: &Label) -> Result<Console, SupervisorError> {
        self.inner.with_unit(name, |u| u.console.clone())
    }

    /// CPU, memory and tap counters of a running unikernel.
    pub fn stats(&self, name: &Label) -> Result<crate::api::stats::Stats, SupervisorError> {
        let run = self.inner.with_unit(name, |u| {
            u.run.as_ref().map(|r| {
                (
                    r.pid,
                    r.taps.iter().map(|t| t.tap.clone()).collect::<Vec<_>>(),
                )
            })
        })?;
        let (pid, taps) = run.ok_or_else(|| SupervisorError::NotRunning(name.clone()))?;
        Ok(stats::stats(pid, &taps)?)
    }

    /// What a daemon restart must bring back.
    pub fn snapshot(&self) -> Saved {
        let units = self.inner.lock();
        Saved {
            unikernels: units
                .values()
                .map(|u| SavedUnikernel {
                    config: u.config.clone(),
                    image: u.image.digest.clone(),
                    state: u.state.clone(),
                    restarts: u.restarts,
                    failures: u.failures,
                    exits: u.exits.clone(),
                    run: u.run.as_ref().map(|r| SavedRun {
                        since_ms: match u.state {
                            RunState::Running { since_ms, .. } => since_ms,
                            _ => now_ms(),
                        },
                        taps: r.taps.clone(),
                        argv: u.argv.clone(),
                    }),
                })
                .collect(),
        }
    }

    /// Brings back what [`Supervisor::snapshot`] saved: every unikernel is
    /// listed again; a run whose monitor still runs is re-adopted (same
    /// process, console continues); one that ended while no daemon watched has
    /// its end booked as if seen; those that should run but have no run left
    /// (a host reboot) are started, higher startup priority first. One that
    /// cannot be brought back stays listed as stopped, with the reason in its
    /// console, and is reported.
    pub async fn restore(&self, saved: Saved) -> Vec<RestoreFailure> {
        let mut unikernels = saved.unikernels;
        unikernels.sort_by_key(|u| std::cmp::Reverse(u.config.startup_priority));
        let mut failures = Vec::new();
        for u in unikernels {
            let name = u.config.name.clone();
            if let Err(e) = self.restore_one(u).await {
                if let Ok(console) = self.console(&name) {
                    console.mark(&format!("not started with the daemon: {e}"));
                }
                failures.push(RestoreFailure {
                    name,
                    reason: e.to_string(),
                });
            }
        }
        failures
    }

    async fn restore_one(&self, saved: SavedUnikernel) -> Result<(), SupervisorError> {
        let image = self.stored_image(&saved.image)?;
        let name = saved.config.name.clone();
        let should_run = saved.should_run();
        let unit = Unit {
            config: saved.config,
            image: self.inner.store_image(&image)?,
            state: if should_run {
                RunState::Stopped
            } else {
                saved.state
            },
            run: None,
            generation: 0,
            stop_requested: false,
            console: Console::new(self.inner.settings.console),
            restarts: saved.restarts,
            failures: saved.failures,
            exits: saved.exits,
            argv: saved
                .run
                .as_ref()
                .map(|r| r.argv.clone())
                .unwrap_or_default(),
        };
        let console = unit.console.clone();
        self.inner.lock().insert(name.clone(), unit);
        self.inner.emit(Event::Created { name: name.clone() });
        if !should_run {
            return Ok(());
        }
        if let Some(run) = saved.run {
            let runtime = &self.inner.settings.dirs.runtime;
            let dir = launch::run_dir(runtime, name.as_str());
            let adoption = monitor::adopt(&dir.join(launch::RUN_FILE))
                .await
                .map_err(LaunchError::from)?;
            match adoption {
                monitor::Adoption::Running(monitored) => {
                    let launched =
                        launch::adopt(name.as_str(), runtime, monitored, &run.taps, &console)?;
                    console.mark(&format!("re-adopted by a new daemon, pid {}", launched.pid));
                    let mut units = self.inner.lock();
                    if let Some(unit) = units.get_mut(&name) {
                        self.inner.begin_run(unit, launched, run.since_ms);
                    }
                    return Ok(());
                }
                monitor::Adoption::Ended(monitor::Outcome::Exited { status, at_ms }) => {
                    launch::Resources::left_by(&dir, &run.taps).release();
                    let ran = Duration::from_millis(at_ms.saturating_sub(run.since_ms));
                    self.inner.ended(&name, status, ran);
                    return Ok(());
                }
                // Nothing of it is left (a reboot): start it afresh.
                monitor::Adoption::Ended(monitor::Outcome::Unknown { .. }) => {
                    launch::Resources::left_by(&dir, &run.taps).release();
                }
            }
        }
        let mut units = self.inner.lock();
        self.inner.start(&mut units, &name)
    }

    /// Keeps `image` by digest, for `create` to name later.
    pub fn store(&self, image: &Image) -> Result<(), SupervisorError> {
        self.inner.store_image(image).map(|_| ())
    }

    /// An image kept by [`Supervisor::store`], read back and checked again.
    pub fn stored_image(&self, digest: &str) -> Result<Image, SupervisorError> {
        let not_found = || SupervisorError::NoImage(digest.to_owned());
        if digest.len() != 64
            || !digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(not_found());
        }
        let path = self.inner.settings.dirs.data.join("images").join(digest);
        if !path.is_file() {
            return Err(not_found());
        }
        let image = crate::host::image::load(&path, crate::host::image::Compression::Detect)?;
        if image.info.sha256 != digest {
            return Err(SupervisorError::ImageChanged(path));
        }
        Ok(image)
    }

    /// The host's policy and what the unikernels and block devices take from it.
    pub fn policy(&self) -> Result<PolicyReport, SupervisorError> {
        let policy = policy::host_policy(self.inner.blocks.dir())?;
        let mut used = usage(&self.inner.lock());
        used.disk_mb = self.inner.blocks.used_mb()?;
        Ok(PolicyReport { policy, used })
    }

    /// The unikernel holding block device `name`, if one does.
    pub fn block_holder(&self, name: &Label) -> Option<Label> {
        holder(&self.inner.lock(), name)
    }

    /// Counters of every running unikernel; one that ends meanwhile is left out.
    pub fn all_stats(&self) -> Vec<(Label, crate::api::stats::Stats)> {
        let names: Vec<Label> = self.inner.lock().keys().cloned().collect();
        names
            .into_iter()
            .filter_map(|name| self.stats(&name).ok().map(|s| (name, s)))
            .collect()
    }

    /// Which tender would run an image of `target` and ABI `abi`, or why none would.
    pub fn tender_report(&self, target: Target, abi: u32) -> TenderReport {
        match self.inner.tenders.find(
            target,
            abi,
            &self.inner.settings.dirs.data,
            self.inner.settings.tender_path.clone(),
        ) {
            Ok(t) => TenderReport::Found {
                path: t.path.display().to_string(),
                abi_version: t.abi_version,
            },
            Err(e) => TenderReport::Missing {
                error: e.to_string(),
            },
        }
    }

    /// What the launch rules need to know about the host, gathered before the
    /// bookkeeping is locked (it runs the tender and reads the block store).
    fn host_facts(
        &self,
        config: &UnikernelConfig,
        image: &ImageInfo,
    ) -> Result<HostFacts, SupervisorError> {
        Ok(HostFacts {
            tender: self.tender_report(image.target, image.abi_version),
            policy: policy::host_policy(self.inner.blocks.dir())?,
            block_files: self.resolve_blocks(config)?,
        })
    }

    /// Validates `config` against `image` and the host, then starts it. Nothing
    /// on the host is touched unless every check passes.
    pub async fn create(
        &self,
        config: UnikernelConfig,
        image: Image,
    ) -> Result<UnikernelInfo, SupervisorError> {
        let host = self.host_facts(&config, &image.info)?;
        let name = config.name.clone();
        {
            let mut units = self.inner.lock();
            check(&units, &config, &image.info, &host, None)?;
            let stored = self.inner.store_image(&image)?;
            let unit = Unit {
                config,
                image: stored,
                state: RunState::Restarting { at_ms: now_ms() },
                run: None,
                generation: 0,
                stop_requested: false,
                console: Console::new(self.inner.settings.console),
                restarts: 0,
                failures: 0,
                exits: Vec::new(),
                argv: Vec::new(),
            };
            units.insert(name.clone(), unit);
            self.inner.emit(Event::Created { name: name.clone() });
            if let Err(e) = self.inner.start(&mut units, &name) {
                units.remove(&name);
                self.inner.emit(Event::Removed { name: name.clone() });
                return Err(e);
            }
        }
        self.info(&name)
    }

    /// Gives the unikernel `config.name` the settings `config` and starts it
    /// again (stopping it first if it runs) with the image it already has. The
    /// new settings pass every launch rule before anything stops, its own
    /// resources counting as free, so a refused change leaves it as it was.
    pub async fn reconfigure(
        &self,
        config: UnikernelConfig,
    ) -> Result<UnikernelInfo, SupervisorError> {
        let name = config.name.clone();
        let digest = self.inner.with_unit(&name, |u| u.image.digest.clone())?;
        let image = self.stored_image(&digest)?;
        let host = self.host_facts(&config, &image.info)?;
        check(&self.inner.lock(), &config, &image.info, &host, Some(&name))?;
        self.destroy(&name).await?;
        {
            let mut units = self.inner.lock();
            // While it stopped, another request may have taken what it held:
            // then it stays stopped, with its old settings, and says why.
            check(&units, &config, &image.info, &host, Some(&name))?;
            let unit = units
                .get_mut(&name)
                .ok_or_else(|| SupervisorError::NotFound(name.clone()))?;
            unit.config = config;
            self.inner.start(&mut units, &name)?;
        }
        self.info(&name)
    }

    /// Stops a unikernel: SIGTERM, then SIGKILL after the grace period. It stays
    /// listed as stopped, with its console, until removed.
    pub async fn destroy(&self, name: &Label) -> Result<UnikernelInfo, SupervisorError> {
        let ended = {
            let mut units = self.inner.lock();
            let unit = units
                .get_mut(name)
                .ok_or_else(|| SupervisorError::NotFound(name.clone()))?;
            unit.generation += 1;
            unit.stop_requested = true;
            match unit.run.as_mut() {
                Some(run) => {
                    if let Some(stop) = run.stop.take() {
                        // The run task may have just finished; then it is gone already.
                        let _ = stop.send(());
                    }
                    Some(run.ended.clone())
                }
                None => {
                    if !matches!(unit.state, RunState::Exited { .. }) {
                        unit.state = RunState::Stopped;
                        self.inner.emit(Event::Stopped { name: name.clone() });
                    }
                    None
                }
            }
        };
        if let Some(mut ended) = ended {
            // An error means the run task is gone, which is the same as ended.
            let _ = ended.wait_for(|done| *done).await;
        }
        self.info(name)
    }

    /// Stops a unikernel if it runs and starts it again with the same configuration.
    pub async fn restart(&self, name: &Label) -> Result<UnikernelInfo, SupervisorError> {
        self.destroy(name).await?;
        {
            let mut units = self.inner.lock();
            self.inner.start(&mut units, name)?;
        }
        self.info(name)
    }

    /// Forgets a unikernel that is not running, with its console history.
    pub fn remove(&self, name: &Label) -> Result<(), SupervisorError> {
        let mut units = self.inner.lock();
        let unit = units
            .get(name)
            .ok_or_else(|| SupervisorError::NotFound(name.clone()))?;
        if unit.holds_resources() {
            return Err(SupervisorError::Running(name.clone()));
        }
        units.remove(name);
        self.inner.emit(Event::Removed { name: name.clone() });
        Ok(())
    }

    fn resolve_blocks(
        &self,
        config: &UnikernelConfig,
    ) -> Result<Vec<Option<BlockFile>>, SupervisorError> {
        config
            .blocks
            .iter()
            .map(|b| match self.inner.blocks.get(&b.block) {
                Ok(file) => Ok(Some(file)),
                // Validation reports it with the device it was meant for.
                Err(BlockError::NotFound(_)) => Ok(None),
                Err(e) => Err(e.into()),
            })
            .collect()
    }
}

/// What the unikernels that hold resources take from the policy.
fn usage(units: &BTreeMap<Label, Unit>) -> Usage {
    let claims: Vec<Claim> = units.values().filter_map(Unit::claim).collect();
    claims.iter().collect()
}

/// The facts about the host a launch is checked against, apart from the
/// bookkeeping (see [`check`]).
struct HostFacts {
    tender: TenderReport,
    policy: Policy,
    block_files: Vec<Option<BlockFile>>,
}

/// Every launch rule for `config`, against the host and the unikernels in
/// `units` but `except` (one being reconfigured is not its own rival).
fn check(
    units: &BTreeMap<Label, Unit>,
    config: &UnikernelConfig,
    image: &ImageInfo,
    host: &HostFacts,
    except: Option<&Label>,
) -> Result<(), SupervisorError> {
    let others = || units.iter().filter(|(name, _)| Some(*name) != except);
    let names: Vec<Label> = others().map(|(name, _)| name.clone()).collect();
    let claims: Vec<Claim> = others().filter_map(|(_, u)| u.claim()).collect();
    let usage: Usage = claims.iter().collect();
    let blocks = block_infos(units, &host.block_files);
    let facts = Facts {
        image,
        tender: &host.tender,
        names_in_use: &names,
        blocks: &blocks,
        policy: &host.policy,
        usage: &usage,
    };
    let problems = validate::validate(config, &facts);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SupervisorError::Invalid(problems))
    }
}

/// The store's view of the block devices a configuration names.
fn block_infos(units: &BTreeMap<Label, Unit>, files: &[Option<BlockFile>]) -> Vec<BlockDeviceInfo> {
    files
        .iter()
        .flatten()
        .map(|f| BlockDeviceInfo {
            name: f.name.clone(),
            size_mb: f.size_mb,
            attached_to: holder(units, &f.name),
        })
        .collect()
}

/// The unikernel holding block device `block`: one that runs or will run again.
fn holder(units: &BTreeMap<Label, Unit>, block: &Label) -> Option<Label> {
    units
        .values()
        .find(|u| u.holds_resources() && u.config.blocks.iter().any(|b| b.block == *block))
        .map(|u| u.config.name.clone())
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<Label, Unit>> {
        // A panic elsewhere must not take the whole supervisor down with it:
        // the map is consistent between statements.
        self.units.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_unit<T>(&self, name: &Label, f: impl FnOnce(&Unit) -> T) -> Result<T, SupervisorError> {
        self.lock()
            .get(name)
            .map(f)
            .ok_or_else(|| SupervisorError::NotFound(name.clone()))
    }

    fn emit(&self, event: Event) {
        // No subscriber is not an error.
        let _ = self.events.send(event);
    }

    /// Keeps the uncompressed image as `<data>/images/<sha256>` (0600), written
    /// to a temporary file and renamed, so restarts never need the client again.
    fn store_image(&self, image: &Image) -> Result<StoredImage, SupervisorError> {
        let dir = self.settings.dirs.data.join("images");
        let path = dir.join(&image.info.sha256);
        let io = |what, path: &PathBuf| {
            let path = path.clone();
            move |source| SupervisorError::Io { what, path, source }
        };
        if !path.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io("create", &dir))?;
            let tmp = dir.join(format!(".{}.tmp", image.info.sha256));
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("create", &tmp))?;
            file.write_all(&image.elf)
                .and_then(|()| file.sync_all())
                .map_err(io("write", &tmp))?;
            fs::rename(&tmp, &path).map_err(io("store the image as", &path))?;
        }
        let ImageInfo {
            target,
            abi_version,
            devices,
            sha256,
            ..
        } = image.info.clone();
        Ok(StoredImage {
            target,
            abi_version,
            devices,
            digest: sha256,
            path,
        })
    }

    /// Launches one run of `name` and hands its tender to a supervising task.
    fn start(
        self: &Arc<Self>,
        units: &mut BTreeMap<Label, Unit>,
        name: &Label,
    ) -> Result<(), SupervisorError> {
        let unit = units
            .get_mut(name)
            .ok_or_else(|| SupervisorError::NotFound(name.clone()))?;
        let tender = self
            .tenders
            .find(
                unit.image.target,
                unit.image.abi_version,
                &self.settings.dirs.data,
                self.settings.tender_path.clone(),
            )
            .map_err(|e| SupervisorError::Invalid(vec![Problem::NoTender(e.to_string())]))?;
        let blocks = unit
            .config
            .blocks
            .iter()
            .map(|b| self.blocks.get(&b.block))
            .collect::<Result<Vec<_>, _>>()?;
        let launched = launch::launch(&launch::Plan {
            config: &unit.config,
            stored_image: &unit.image.path,
            tender: &tender.path,
            blocks: &blocks,
            runtime: &self.settings.dirs.runtime,
            console: &unit.console,
            monitor: &self.monitor_settings(),
        })?;
        unit.console.mark(&format!("started, pid {}", launched.pid));
        self.begin_run(unit, launched, now_ms());
        Ok(())
    }

    fn monitor_settings(&self) -> launch::MonitorSettings {
        launch::MonitorSettings {
            program: self.settings.monitor.clone(),
            grace: self.settings.grace,
        }
    }

    /// Books a run as running and hands it to the task that sees it end.
    fn begin_run(self: &Arc<Self>, unit: &mut Unit, launched: launch::Launched, since_ms: u64) {
        let name = unit.config.name.clone();
        unit.generation += 1;
        unit.stop_requested = false;
        let (stop, stop_rx) = oneshot::channel();
        let (ended_tx, ended) = watch::channel(false);
        unit.state = RunState::Running {
            pid: launched.pid,
            since_ms,
        };
        if !launched.argv.is_empty() {
            unit.argv = launched.argv;
        }
        unit.run = Some(Run {
            pid: launched.pid,
            taps: launched.taps,
            stop: Some(stop),
            ended,
        });
        self.emit(Event::Started {
            name: name.clone(),
            pid: launched.pid,
        });
        let run = RunTask {
            inner: self.clone(),
            name,
            monitored: launched.monitored,
            resources: launched.resources,
            drain: launched.drain,
            ended: ended_tx,
        };
        tokio::spawn(run.supervise(stop_rx));
    }

    /// Books the end of a run and decides what comes next.
    fn ended(self: &Arc<Self>, name: &Label, status: ExitStatus, ran: Duration) {
        let mut units = self.lock();
        let Some(unit) = units.get_mut(name) else {
            return;
        };
        let record = ExitRecord {
            status,
            at_ms: now_ms(),
            ran_ms: ran.as_millis() as u64,
        };
        unit.run = None;
        unit.console.mark(&status.to_string());
        if unit.exits.len() == EXIT_HISTORY {
            unit.exits.remove(0);
        }
        unit.exits.push(record.clone());
        self.emit(Event::Exited {
            name: name.clone(),
            status,
        });
        if unit.stop_requested {
            unit.state = RunState::Stopped;
            self.emit(Event::Stopped { name: name.clone() });
        } else if unit.config.restart.restarts_after(status) {
            unit.failures = self.settings.backoff.failures_after(unit.failures, ran);
            self.schedule_restart(unit);
        } else {
            unit.state = RunState::Exited { exit: record };
        }
    }

    /// Waits out the back-off, then starts the unikernel again unless the
    /// operator stopped or restarted it meanwhile.
    fn schedule_restart(self: &Arc<Self>, unit: &mut Unit) {
        let backoff = self.settings.backoff;
        let delay = backoff.delay(unit.failures);
        let at_ms = now_ms() + delay.as_millis() as u64;
        let crash_loop = backoff.is_crash_loop(unit.failures);
        unit.state = if crash_loop {
            RunState::CrashLoop {
                at_ms,
                failures: unit.failures,
            }
        } else {
            RunState::Restarting { at_ms }
        };
        unit.console.mark(&format!(
            "restarting in {} ms (failure {} in a row{})",
            delay.as_millis(),
            unit.failures,
            if crash_loop { ", crash loop" } else { "" }
        ));
        let name = unit.config.name.clone();
        self.emit(Event::Restarting {
            name: name.clone(),
            at_ms,
            crash_loop,
        });
        let generation = unit.generation;
        let inner = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            inner.restart_due(&name, generation);
        });
    }

    fn restart_due(self: &Arc<Self>, name: &Label, generation: u64) {
        let mut units = self.lock();
        match units.get_mut(name) {
            Some(unit) if unit.generation == generation => unit.restarts += 1,
            _ => return,
        }
        if let Err(e) = self.start(&mut units, name) {
            let reason = e.to_string();
            self.emit(Event::StartFailed {
                name: name.clone(),
                reason: reason.clone(),
            });
            if let Some(unit) = units.get_mut(name) {
                unit.console.mark(&format!("start failed: {reason}"));
                unit.failures = unit.failures.saturating_add(1);
                self.schedule_restart(unit);
            }
        }
    }
}

/// The task that watches one run until its monitor reports the end.
struct RunTask {
    inner: Arc<Inner>,
    name: Label,
    monitored: monitor::Monitored,
    resources: launch::Resources,
    drain: tokio::task::JoinHandle<()>,
    ended: watch::Sender<bool>,
}

/// How long the console may take to reach end-of-file after the tender has
/// ended (a process the tender started could hold the FIFO open).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

impl RunTask {
    async fn supervise(mut self, stop: oneshot::Receiver<()>) {
        let started = Instant::now();
        let status = self.wait_or_stop(stop).await;
        if tokio::time::timeout(DRAIN_GRACE, &mut self.drain)
            .await
            .is_err()
        {
            self.drain.abort();
        }
        self.resources.release();
        self.inner.ended(&self.name, status, started.elapsed());
        // Destroy waits for this; nobody waiting is fine.
        let _ = self.ended.send(true);
    }

    /// Waits for the run to end; when asked to stop, has the monitor send
    /// SIGTERM and, after the grace period, SIGKILL. Only the monitor signals
    /// the tender, its child, so no signal can reach a recycled pid.
    async fn wait_or_stop(&mut self, stop: oneshot::Receiver<()>) -> ExitStatus {
        let stop_requested = async {
            if stop.await.is_err() {
                // The sender went away without asking: never stop.
                std::future::pending::<()>().await;
            }
        };
        let outcome = tokio::select! {
            outcome = self.monitored.wait() => outcome,
            () = stop_requested => {
                if let Err(e) = self.monitored.stop() {
                    tracing::warn!("{}: {e}", self.name);
                }
                self.monitored.wait().await
            }
        };
        match outcome {
            Ok(monitor::Outcome::Exited { status, .. }) => status,
            Ok(monitor::Outcome::Unknown { .. }) => ExitStatus::Lost,
            Err(e) => {
                tracing::error!("{}: {e}", self.name);
                ExitStatus::Lost
            }
        }
    }
}
