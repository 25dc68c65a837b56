//! One unikernel as the bookkeeping keeps it, between and during its runs.

use crate::api::image::{Device, ImageInfo, Target};
use crate::api::policy::Claim;
use crate::api::unikernel::{ExitRecord, RunState, TapInfo, UnikernelConfig, UnikernelInfo};
use crate::host::console::Console;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{oneshot, watch};

/// The image facts a unikernel keeps; the bytes stay on disk, stored by digest.
#[derive(Debug, Clone)]
pub(super) struct StoredImage {
    pub target: Target,
    pub abi_version: u32,
    pub devices: Vec<Device>,
    pub digest: String,
    pub path: PathBuf,
}

impl StoredImage {
    pub fn new(info: &ImageInfo, path: PathBuf) -> StoredImage {
        StoredImage {
            target: info.target,
            abi_version: info.abi_version,
            devices: info.devices.clone(),
            digest: info.sha256.clone(),
            path,
        }
    }
}

/// A running tender, as the bookkeeping sees it.
pub(super) struct Run {
    pub pid: u32,
    pub taps: Vec<TapInfo>,
    pub stop: Option<oneshot::Sender<()>>,
    pub ended: watch::Receiver<bool>,
}

/// Serializes what changes one unikernel's runs (create, start, destroy,
/// reconfigure, a due restart) without holding the bookkeeping's lock: whoever
/// holds it may take its time, and only this unikernel waits.
pub(super) type Lifecycle = Arc<tokio::sync::Mutex<()>>;

pub(super) struct Unit {
    pub config: UnikernelConfig,
    pub image: StoredImage,
    pub state: RunState,
    pub run: Option<Run>,
    pub lifecycle: Lifecycle,
    /// Bumped by every start and destroy, so a restart that was scheduled
    /// before them knows it is stale.
    pub generation: u64,
    /// The operator destroyed it: the current run's end is not a failure.
    pub stop_requested: bool,
    pub console: Console,
    pub restarts: u32,
    pub failures: u32,
    pub exits: Vec<ExitRecord>,
    pub argv: Vec<String>,
    /// Its create has not answered yet: the state file must not keep it, so
    /// a daemon killed meanwhile leaves no unikernel nobody was told of.
    pub creating: bool,
}

impl Unit {
    /// A unikernel that has not run yet under this daemon.
    pub fn new(
        config: UnikernelConfig,
        image: StoredImage,
        state: RunState,
        lifecycle: Lifecycle,
        console: Console,
    ) -> Unit {
        Unit {
            config,
            image,
            state,
            run: None,
            lifecycle,
            generation: 0,
            stop_requested: false,
            console,
            restarts: 0,
            failures: 0,
            exits: Vec::new(),
            argv: Vec::new(),
            creating: false,
        }
    }

    /// Whether the unikernel holds its CPU, memory and block devices: while it
    /// starts, runs or waits to run again.
    pub fn holds_resources(&self) -> bool {
        self.state.holds_resources() || self.run.is_some()
    }

    /// What it takes from the root policy, while it holds anything.
    pub fn claim(&self) -> Option<Claim> {
        self.holds_resources().then(|| Claim {
            cpu: Some(self.config.cpu),
            memory_mb: self.config.memory_mb,
            disk_mb: 0,
            bridges: self.config.nets.iter().map(|n| n.bridge.clone()).collect(),
        })
    }

    pub fn info(&self) -> UnikernelInfo {
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
