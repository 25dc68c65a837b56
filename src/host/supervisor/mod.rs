//! The lifecycle of unikernels: validate -> prepare -> exec -> wait -> restart
//! or clean up, and destroy.
//!
//! The bookkeeping sits behind one mutex that is **never held across I/O**:
//! work that touches the disk, runs a program or waits for one (storing an
//! image, copying it, making taps, the monitor's handshake) is planned under
//! the lock, done without it on the blocking pool, then committed or rolled
//! back under the lock again. What changes one unikernel's runs is serialized
//! by that unikernel's own lifecycle lock, so a slow start stalls nobody else.
//! Each run has one task that owns the tender's monitor, so signals only ever
//! reach a process that has not been reaped yet (no pid reuse races).

mod backoff;
mod images;
mod launch;
mod rules;
mod run;
mod saved;
mod unit;

pub use backoff::Backoff;
pub use launch::LaunchError;
pub use saved::{ImageFacts, RestoreFailure, Saved, SavedRun, SavedUnikernel};

use crate::api::event::Event;
use crate::api::image::{ImageInfo, Target, TenderReport};
use crate::api::label::Label;
use crate::api::policy::PolicyReport;
use crate::api::time::now_ms;
use crate::api::unikernel::{
    ExitRecord, ExitStatus, RunState, TapInfo, UnikernelConfig, UnikernelInfo,
};
use crate::api::validate::Problem;
use crate::host::block::{BlockError, BlockStore};
use crate::host::console::{Console, ConsoleLimits};
use crate::host::image::Image;
use crate::host::monitor;
use crate::host::paths::Dirs;
use crate::host::privilege::TenderUser;
use crate::host::rundir;
use crate::host::tender::ProbeCache;
use crate::host::{policy, stats};
use rules::{HostFacts, Resolved};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{OwnedMutexGuard, broadcast, oneshot, watch};
use unit::{Lifecycle, Run, StoredImage, Unit};

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
    /// Who tenders run as; None: as the daemon (host::privilege::choose).
    pub tender: Option<TenderUser>,
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
            tender: None,
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
    #[error(
        "a worker thread of the daemon failed ({0}): this is a bug; the daemon's log has the details, and the request can be sent again"
    )]
    Worker(String),
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

/// Runs `work` on the blocking pool, where it may take its time.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SupervisorError> + Send + 'static,
) -> Result<T, SupervisorError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SupervisorError::Worker(e.to_string()))?
}

/// Proof that the caller holds one unikernel's lifecycle lock.
struct Held {
    _guard: OwnedMutexGuard<()>,
}

/// What a start is to do besides launching: for a create, store its image
/// first; where the block devices were resolved to check the start, use them.
#[derive(Default)]
struct StartWith {
    store: Option<Image>,
    blocks: Option<Resolved>,
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
                .filter(|u| !u.creating)
                .map(|u| SavedUnikernel {
                    config: u.config.clone(),
                    image: u.image.digest.clone(),
                    facts: Some(ImageFacts {
                        target: u.image.target,
                        abi_version: u.image.abi_version,
                        devices: u.image.devices.clone(),
                    }),
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
    ///
    /// The run directories are the record of what runs, whatever the state
    /// file says: a run no unikernel should have (a create or start the
    /// state never recorded, because the daemon was killed first) is stopped
    /// and its taps, files and directory reclaimed, so after any crash every
    /// tender is either supervised or gone.
    pub async fn restore(&self, saved: Saved) -> Vec<RestoreFailure> {
        let mut unikernels = saved.unikernels;
        self.reclaim_unwanted_runs(&unikernels).await;
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

    /// Stops and reclaims every run in the runtime directory that belongs to
    /// no unikernel that should run.
    async fn reclaim_unwanted_runs(&self, saved: &[SavedUnikernel]) {
        let root = launch::runs_dir(&self.inner.settings.dirs.runtime);
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::error!(
                    "cannot list {} ({e}): runs left there are not reclaimed",
                    root.display()
                );
                return;
            }
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name();
            let known = saved.iter().find(|u| name == u.config.name.as_str());
            if known.is_some_and(SavedUnikernel::should_run) {
                continue;
            }
            let taps = known.map(SavedUnikernel::taps).unwrap_or_default();
            self.reclaim(&entry.path(), &taps).await;
        }
    }

    /// Stops the run in `dir`, if one still goes, and removes what it made.
    async fn reclaim(&self, dir: &Path, saved_taps: &[TapInfo]) {
        let what = dir.display().to_string();
        let (adoption, _dir_lock) = match self.look_into(dir).await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!("{what}: {e}; left in place");
                return;
            }
        };
        if let monitor::Adoption::Running(mut monitored) = adoption {
            tracing::warn!(
                "{what}: a run the state does not record (its start was never acknowledged): stopping it"
            );
            let patience = self.inner.settings.grace + run::STOP_MARGIN;
            if let Err(e) = run::stop(&mut monitored, patience, &what).await {
                tracing::error!("{what}: {e}; its files and taps are left in place");
                return;
            }
        }
        tracing::info!("{what}: reclaimed a run nothing should have");
        launch::Resources::left_by(dir, saved_taps).release();
    }

    /// What a run directory left by an earlier daemon holds. When no monitor
    /// lives there, its lock comes along, to hold until its contents are
    /// removed: a monitor its daemon started just before being killed then
    /// finds the directory taken or gone, and starts no tender.
    async fn look_into(
        &self,
        dir: &Path,
    ) -> Result<(monitor::Adoption, Option<rundir::Held>), SupervisorError> {
        let run_file = dir.join(launch::RUN_FILE);
        let held = match rundir::claim(dir) {
            Ok(rundir::Claim::Free(held)) => Some(held),
            Ok(rundir::Claim::Taken) => {
                monitor::recorded(&run_file).await;
                None
            }
            Err(source) => {
                return Err(SupervisorError::Io {
                    what: "lock the run directory",
                    path: dir.to_owned(),
                    source,
                });
            }
        };
        let adoption = monitor::adopt(&run_file).await.map_err(LaunchError::from)?;
        Ok((adoption, held))
    }

    /// A unikernel whose image is gone is still listed and kept in the state;
    /// a run of it is still re-adopted (the tender runs from its run
    /// directory's copy); it only cannot be started.
    async fn restore_one(&self, saved: SavedUnikernel) -> Result<(), SupervisorError> {
        let (stored, unreadable) = match self.restore_image(&saved.image).await {
            Ok(stored) => (stored, None),
            Err(e) => {
                let data = &self.inner.settings.dirs.data;
                let recorded = images::recorded(data, &saved.image, saved.facts.as_ref());
                (recorded, Some(e))
            }
        };
        let name = saved.config.name.clone();
        let should_run = saved.should_run();
        let saved_taps = saved.taps();
        let (lifecycle, held) = Inner::new_lifecycle().await;
        let state = if should_run {
            RunState::Stopped
        } else {
            saved.state
        };
        let mut unit = Unit::new(saved.config, stored, state, lifecycle, self.new_console());
        unit.restarts = saved.restarts;
        unit.failures = saved.failures;
        unit.exits = saved.exits;
        unit.argv = saved
            .run
            .as_ref()
            .map(|r| r.argv.clone())
            .unwrap_or_default();
        let console = unit.console.clone();
        self.inner.lock().insert(name.clone(), unit);
        self.inner.emit(Event::Created { name: name.clone() });
        if !should_run {
            return unreadable.map_or(Ok(()), Err);
        }
        let runtime = &self.inner.settings.dirs.runtime;
        let dir = launch::run_dir(runtime, name.as_str());
        // A run the state file did not record yet (a restart, a start just
        // before the daemon was killed) is found by its directory all the same.
        if dir.exists() {
            let since_ms = saved.run.as_ref().map_or_else(now_ms, |r| r.since_ms);
            let (adoption, dir_lock) = self.look_into(&dir).await?;
            match adoption {
                monitor::Adoption::Running(monitored) => {
                    let launched =
                        launch::adopt(name.as_str(), runtime, monitored, &saved_taps, &console)?;
                    console.mark(&format!("re-adopted by a new daemon, pid {}", launched.pid));
                    let mut units = self.inner.lock();
                    if let Some(unit) = units.get_mut(&name) {
                        self.inner.begin_run(unit, launched, since_ms);
                    }
                    return Ok(());
                }
                monitor::Adoption::Ended(monitor::Outcome::Exited { status, at_ms }) => {
                    launch::Resources::left_by(&dir, &saved_taps).release();
                    let ran = Duration::from_millis(at_ms.saturating_sub(since_ms));
                    self.inner.ended(&name, status, ran);
                    return Ok(());
                }
                // Nothing of it is left (a reboot, a start that never got
                // its tender going): start it afresh.
                monitor::Adoption::Ended(monitor::Outcome::Unknown { .. }) => {
                    launch::Resources::left_by(&dir, &saved_taps).release();
                    // Before the new run claims a directory of the same name.
                    drop(dir_lock);
                }
            }
        }
        if let Some(e) = unreadable {
            return Err(e);
        }
        self.inner.start(&held, &name, StartWith::default()).await
    }

    /// The stored image `digest`, checked and kept again.
    async fn restore_image(&self, digest: &str) -> Result<StoredImage, SupervisorError> {
        let image = self.stored_image(digest).await?;
        let data = self.inner.settings.dirs.data.clone();
        blocking(move || images::store(&data, &image)).await
    }

    fn new_console(&self) -> Console {
        Console::new(self.inner.settings.console)
    }

    /// Removes the unfinished images and uploads a killed daemon left; for
    /// start-up only. Returns how many there were.
    pub fn clean_stale_images(&self) -> usize {
        images::clean_stale(&self.inner.settings.dirs.data)
    }

    /// Keeps `image` by digest, for `create` to name later.
    pub async fn store(&self, image: Image) -> Result<ImageInfo, SupervisorError> {
        let data = self.inner.settings.dirs.data.clone();
        blocking(move || images::store(&data, &image).map(|_| image.info)).await
    }

    /// An image kept by [`Supervisor::store`], read back and checked again.
    pub async fn stored_image(&self, digest: &str) -> Result<Image, SupervisorError> {
        let data = self.inner.settings.dirs.data.clone();
        let digest = digest.to_owned();
        blocking(move || images::load(&data, &digest)).await
    }

    /// The host's policy and what the unikernels and block devices take from it.
    pub fn policy(&self) -> Result<PolicyReport, SupervisorError> {
        let policy = policy::host_policy(self.inner.blocks.dir())?;
        let mut used = rules::usage(&self.inner.lock());
        used.disk_mb = self.inner.blocks.used_mb()?;
        Ok(PolicyReport { policy, used })
    }

    /// The unikernel holding block device `name`, if one does.
    pub fn block_holder(&self, name: &Label) -> Option<Label> {
        rules::holder(&self.inner.lock(), name)
    }

    /// Counters of every running unikernel; one that ends meanwhile is left out.
    pub fn all_stats(&self) -> Vec<(Label, crate::api::stats::Stats)> {
        let names: Vec<Label> = self.inner.lock().keys().cloned().collect();
        names
            .into_iter()
            .filter_map(|name| self.stats(&name).ok().map(|s| (name, s)))
            .collect()
    }

    /// Which tender would run an image of `target` and ABI `abi`, or why none
    /// would. The first ask for a tender runs it, so this is blocking work.
    pub async fn tender_report(&self, target: Target, abi: u32) -> TenderReport {
        let inner = self.inner.clone();
        let report = blocking(move || Ok(inner.tender_report(target, abi))).await;
        report.unwrap_or_else(|e| TenderReport::Missing {
            error: e.to_string(),
        })
    }

    /// What the launch rules need to know about the host, gathered off the
    /// lock (it runs the tender and reads the block store).
    async fn host_facts(
        &self,
        config: &UnikernelConfig,
        image: &ImageInfo,
    ) -> Result<HostFacts, SupervisorError> {
        let inner = self.inner.clone();
        let (config, target, abi) = (config.clone(), image.target, image.abi_version);
        blocking(move || {
            Ok(HostFacts {
                tender: inner.tender_report(target, abi),
                policy: policy::host_policy(inner.blocks.dir())?,
                blocks: rules::resolve(&inner.blocks, &config)?,
            })
        })
        .await
    }

    /// Validates `config` against `image` and the host, then starts it. Nothing
    /// on the host is touched unless every check passes; a start that fails
    /// leaves no trace of it.
    pub async fn create(
        &self,
        config: UnikernelConfig,
        image: Image,
    ) -> Result<UnikernelInfo, SupervisorError> {
        let host = self.host_facts(&config, &image.info).await?;
        let name = config.name.clone();
        let (lifecycle, held) = Inner::new_lifecycle().await;
        {
            let mut units = self.inner.lock();
            rules::check(&units, &config, &image.info, &host, None)?;
            // Starting holds its resources and its name from here on, so no
            // other create can take them while this one works off the lock.
            let stored = images::stored(&self.inner.settings.dirs.data, &image);
            let starting = RunState::Starting { since_ms: now_ms() };
            let mut unit = Unit::new(config, stored, starting, lifecycle, self.new_console());
            unit.creating = true;
            units.insert(name.clone(), unit);
        }
        self.inner.emit(Event::Created { name: name.clone() });
        let with = StartWith {
            store: Some(image),
            blocks: Some(host.blocks),
        };
        if let Err(e) = self.inner.start(&held, &name, with).await {
            self.inner.lock().remove(&name);
            self.inner.emit(Event::Removed { name: name.clone() });
            return Err(e);
        }
        if let Some(unit) = self.inner.lock().get_mut(&name) {
            unit.creating = false;
        }
        drop(held);
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
        let held = self.inner.hold(&name).await?;
        let digest = self.inner.with_unit(&name, |u| u.image.digest.clone())?;
        let image = self.stored_image(&digest).await?;
        let host = self.host_facts(&config, &image.info).await?;
        rules::check(&self.inner.lock(), &config, &image.info, &host, Some(&name))?;
        self.inner.stop(&held, &name).await?;
        {
            let mut units = self.inner.lock();
            // While it stopped, another request may have taken what it held:
            // then it stays stopped, with its old settings, and says why.
            rules::check(&units, &config, &image.info, &host, Some(&name))?;
            let unit = units
                .get_mut(&name)
                .ok_or_else(|| SupervisorError::NotFound(name.clone()))?;
            unit.config = config;
        }
        let with = StartWith {
            store: None,
            blocks: Some(host.blocks),
        };
        self.inner.start(&held, &name, with).await?;
        drop(held);
        self.info(&name)
    }

    /// Stops a unikernel: SIGTERM, then SIGKILL after the grace period. It stays
    /// listed as stopped, with its console, until removed.
    pub async fn destroy(&self, name: &Label) -> Result<UnikernelInfo, SupervisorError> {
        let held = self.inner.hold(name).await?;
        self.inner.stop(&held, name).await?;
        drop(held);
        self.info(name)
    }

    /// Stops a unikernel if it runs and starts it again with the same configuration.
    pub async fn restart(&self, name: &Label) -> Result<UnikernelInfo, SupervisorError> {
        let held = self.inner.hold(name).await?;
        self.inner.stop(&held, name).await?;
        self.inner.start(&held, name, StartWith::default()).await?;
        drop(held);
        self.info(name)
    }

    /// Forgets a unikernel that is not running, with its console history.
    /// Returns the others that use its image, so it stays stored for them;
    /// [`Supervisor::collect_images`] deletes it otherwise, once the state
    /// no longer names it.
    pub fn remove(&self, name: &Label) -> Result<Vec<Label>, SupervisorError> {
        let mut units = self.inner.lock();
        let unit = units
            .get(name)
            .ok_or_else(|| SupervisorError::NotFound(name.clone()))?;
        if unit.holds_resources() {
            return Err(SupervisorError::Running(name.clone()));
        }
        let digest = unit.image.digest.clone();
        units.remove(name);
        self.inner.emit(Event::Removed { name: name.clone() });
        Ok(units
            .values()
            .filter(|u| u.image.digest == digest)
            .map(|u| u.config.name.clone())
            .collect())
    }

    /// Deletes the stored images no unikernel uses (those sent within the
    /// last 15 minutes excepted: a create may be about to name them);
    /// returns the bytes freed.
    pub async fn collect_images(&self) -> u64 {
        let used: std::collections::BTreeSet<String> = self
            .inner
            .lock()
            .values()
            .map(|u| u.image.digest.clone())
            .collect();
        let data = self.inner.settings.dirs.data.clone();
        blocking(move || Ok(images::collect(&data, &used)))
            .await
            .unwrap_or_else(|e| {
                tracing::error!("{e}");
                0
            })
    }
}

/// What one start takes from the bookkeeping, so that the launch can run
/// without it.
struct StartPlan {
    config: UnikernelConfig,
    image: StoredImage,
    console: Console,
    /// Put back if the start fails.
    previous: RunState,
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

    /// A lifecycle lock for a unikernel about to be listed, already held.
    async fn new_lifecycle() -> (Lifecycle, Held) {
        let lifecycle = Lifecycle::default();
        let guard = lifecycle.clone().lock_owned().await;
        (lifecycle, Held { _guard: guard })
    }

    /// Waits for `name`'s lifecycle lock. One removed (or removed and made
    /// anew) while we waited is not the one asked for.
    async fn hold(&self, name: &Label) -> Result<Held, SupervisorError> {
        let lifecycle = self.with_unit(name, |u| u.lifecycle.clone())?;
        let guard = lifecycle.clone().lock_owned().await;
        let same = self.with_unit(name, |u| Arc::ptr_eq(&u.lifecycle, &lifecycle))?;
        if !same {
            return Err(SupervisorError::NotFound(name.clone()));
        }
        Ok(Held { _guard: guard })
    }

    fn tender_report(&self, target: Target, abi: u32) -> TenderReport {
        match self.find_tender(target, abi) {
            Ok(t) => TenderReport::Found {
                path: t.path.display().to_string(),
                abi_version: t.abi_version,
            },
            Err(e) => TenderReport::Missing {
                error: e.to_string(),
            },
        }
    }

    fn find_tender(
        &self,
        target: Target,
        abi: u32,
    ) -> Result<crate::host::tender::Tender, crate::host::tender::TenderError> {
        self.tenders.find(
            target,
            abi,
            &self.settings.dirs.data,
            self.settings.tender_path.clone(),
        )
    }

    /// Launches one run of `name` and hands its tender to a supervising task:
    /// planned under the lock, launched off it, committed or rolled back.
    async fn start(
        self: &Arc<Self>,
        _held: &Held,
        name: &Label,
        with: StartWith,
    ) -> Result<(), SupervisorError> {
        let plan = self.plan_start(name)?;
        let inner = self.clone();
        let launch = blocking(move || {
            let launched = inner.launch(&plan, with);
            Ok((plan, launched))
        });
        let (plan, launched) = launch.await?;
        let mut units = self.lock();
        // Removing refuses a unikernel that is starting, so it is still here.
        let unit = units
            .get_mut(name)
            .ok_or_else(|| SupervisorError::NotFound(name.clone()))?;
        match launched {
            Ok(launched) => {
                self.begin_run(unit, launched, now_ms());
                Ok(())
            }
            Err(e) => {
                unit.state = plan.previous;
                Err(e)
            }
        }
    }

    /// Marks `name` as starting and takes what its launch needs.
    fn plan_start(&self, name: &Label) -> Result<StartPlan, SupervisorError> {
        let mut units = self.lock();
        let unit = units
            .get_mut(name)
            .ok_or_else(|| SupervisorError::NotFound(name.clone()))?;
        let starting = RunState::Starting { since_ms: now_ms() };
        Ok(StartPlan {
            config: unit.config.clone(),
            image: unit.image.clone(),
            console: unit.console.clone(),
            previous: std::mem::replace(&mut unit.state, starting),
        })
    }

    /// The blocking part of a start: store the image if asked, find the
    /// tender, attach the block devices, prepare the host and exec.
    fn launch(
        &self,
        plan: &StartPlan,
        with: StartWith,
    ) -> Result<launch::Launched, SupervisorError> {
        if let Some(image) = with.store {
            images::store(&self.settings.dirs.data, &image)?;
        }
        let tender = self
            .find_tender(plan.image.target, plan.image.abi_version)
            .map_err(|e| SupervisorError::Invalid(vec![Problem::NoTender(e.to_string())]))?;
        let resolved = match with.blocks {
            Some(resolved) => resolved,
            None => rules::resolve(&self.blocks, &plan.config)?,
        };
        let blocks = rules::attach(&plan.config, &resolved)?;
        Ok(launch::launch(&launch::Plan {
            config: &plan.config,
            stored_image: &plan.image.path,
            tender: &tender.path,
            blocks: &blocks,
            runtime: &self.settings.dirs.runtime,
            console: &plan.console,
            monitor: &self.monitor_settings(),
        })?)
    }

    /// Stops `name`'s run, if it has one, and waits until it ended.
    async fn stop(&self, _held: &Held, name: &Label) -> Result<(), SupervisorError> {
        let ended = {
            let mut units = self.lock();
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
                        self.emit(Event::Stopped { name: name.clone() });
                    }
                    None
                }
            }
        };
        if let Some(mut ended) = ended {
            // An error means the run task is gone, which is the same as ended.
            let _ = ended.wait_for(|done| *done).await;
        }
        Ok(())
    }

    fn monitor_settings(&self) -> launch::MonitorSettings {
        launch::MonitorSettings {
            program: self.settings.monitor.clone(),
            grace: self.settings.grace,
            tender: self.settings.tender.clone(),
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
        let run = run::RunTask {
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
            inner.restart_due(&name, generation).await;
        });
    }

    async fn restart_due(self: &Arc<Self>, name: &Label, generation: u64) {
        let Ok(held) = self.hold(name).await else {
            return;
        };
        match self.lock().get_mut(name) {
            Some(unit) if unit.generation == generation => unit.restarts += 1,
            _ => return,
        }
        if let Err(e) = self.start(&held, name, StartWith::default()).await {
            let reason = e.to_string();
            self.emit(Event::StartFailed {
                name: name.clone(),
                reason: reason.clone(),
            });
            if let Some(unit) = self.lock().get_mut(name) {
                unit.console.mark(&format!("start failed: {reason}"));
                unit.failures = unit.failures.saturating_add(1);
                self.schedule_restart(unit);
            }
        }
    }
}
