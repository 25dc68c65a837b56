//! What the supervisor keeps across daemon restarts and host reboots: each
//! unikernel's configuration, image digest and history. The daemon stores it
//! with `host::state`; the supervisor makes and takes it.

use crate::api::image::{Device, Target};
use crate::api::label::Label;
use crate::api::unikernel::{ExitRecord, RunState, TapInfo, UnikernelConfig};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Saved {
    pub unikernels: Vec<SavedUnikernel>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SavedUnikernel {
    pub config: UnikernelConfig,
    /// The SHA-256 of the image kept in the data directory.
    pub image: String,
    /// What the image says of itself, so that the unikernel can still be
    /// listed when the image is gone (absent in state files of older fulmars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<ImageFacts>,
    /// The state when saved; whether it should be running decides what a new
    /// daemon does with it.
    pub state: RunState,
    pub restarts: u32,
    pub failures: u32,
    pub exits: Vec<ExitRecord>,
    /// The run going on when saved; its monitor may still be running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<SavedRun>,
}

/// The image facts a listing shows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ImageFacts {
    pub target: Target,
    pub abi_version: u32,
    pub devices: Vec<Device>,
}

/// What the run file does not say about a run: what fulmar made for it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SavedRun {
    pub since_ms: u64,
    pub taps: Vec<TapInfo>,
    pub argv: Vec<String>,
}

impl Saved {
    /// Keeps the first unikernel listed under each name and takes out the
    /// others, which the supervisor, keyed by name, could not hold.
    pub fn take_duplicates(&mut self) -> Vec<SavedUnikernel> {
        let mut seen = std::collections::BTreeSet::new();
        let (kept, duplicates) = std::mem::take(&mut self.unikernels)
            .into_iter()
            .partition(|u| seen.insert(u.config.name.clone()));
        self.unikernels = kept;
        duplicates
    }
}

impl SavedUnikernel {
    /// Whether the operator wants it running: it was running or about to run
    /// again, rather than exited for good or stopped.
    pub fn should_run(&self) -> bool {
        self.state.holds_resources()
    }

    /// The taps of the run going on when saved (the run record names them
    /// too, except for runs of fulmars before it).
    pub fn taps(&self) -> Vec<TapInfo> {
        self.run
            .as_ref()
            .map(|r| r.taps.clone())
            .unwrap_or_default()
    }
}

/// Why one unikernel could not be brought back; the others still are.
#[derive(Debug)]
pub struct RestoreFailure {
    pub name: Label,
    pub reason: String,
}
