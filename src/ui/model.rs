//! What the TUI knows of the host: the last state the daemon reported. It
//! survives a lost connection, so the operator keeps the last view while the
//! link retries.

use crate::api::block::BlockDeviceInfo;
use crate::api::label::Label;
use crate::api::policy::PolicyReport;
use crate::api::stats::Stats;
use crate::api::unikernel::UnikernelInfo;
use crate::ui::consoles::Consoles;
use crate::ui::message::{TransferKind, Update};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// How the link to the daemon stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Connected {
        daemon: String,
    },
    /// Lost; the link retries by itself.
    Disconnected {
        reason: String,
    },
}

/// CPU use of a running unikernel, from two readings of its counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUse {
    pub percent: f64,
}

/// A block transfer under way, as its progress updates told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub kind: TransferKind,
    pub done: u64,
    pub total: Option<u64>,
    /// When the first update arrived (the transfer started) and the last one.
    pub started_ms: u64,
    pub at_ms: u64,
}

/// A download that waits for the operator's word before replacing a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overwrite {
    pub block: Label,
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub link: Link,
    pub unikernels: Vec<UnikernelInfo>,
    pub stats: HashMap<Label, Stats>,
    pub cpu: HashMap<Label, CpuUse>,
    /// `None` until the daemon answered once.
    pub blocks: Option<Vec<BlockDeviceInfo>>,
    pub policy: Option<PolicyReport>,
    pub consoles: Consoles,
    /// Block transfers under way, by device.
    pub transfers: BTreeMap<Label, Transfer>,
    /// The link found the download's file already there; the app takes it
    /// when it puts the question, on whatever screen shows.
    pub overwrite: Option<Overwrite>,
    /// When the last stats arrived, for CPU use between readings.
    stats_at_ms: u64,
}

impl Default for Model {
    fn default() -> Model {
        Model {
            link: Link::Connecting,
            unikernels: Vec::new(),
            stats: HashMap::new(),
            cpu: HashMap::new(),
            blocks: None,
            policy: None,
            consoles: Consoles::default(),
            transfers: BTreeMap::new(),
            overwrite: None,
            stats_at_ms: 0,
        }
    }
}

impl Model {
    /// Takes an update that arrived at `now_ms`; false when nothing on
    /// screen could have changed (so no frame is drawn for it).
    pub fn apply(&mut self, update: Update, now_ms: u64) -> bool {
        match update {
            Update::Connected { daemon } => replace(&mut self.link, Link::Connected { daemon }),
            Update::Disconnected { reason } => {
                replace(&mut self.link, Link::Disconnected { reason })
            }
            Update::Unikernels(list) => replace(&mut self.unikernels, list),
            Update::Stats(stats) => self.take_stats(stats, now_ms),
            Update::Blocks(blocks) => replace(&mut self.blocks, Some(blocks)),
            Update::Policy(policy) => replace(&mut self.policy, Some(policy)),
            Update::Console { name, event } => self.consoles.push(&name, event),
            // Outcomes are the app's to show, answers the form's to take.
            Update::Done { .. } | Update::Form(_) => false,
            Update::Transfer {
                block,
                kind,
                done,
                total,
            } => {
                let started_ms = self
                    .transfers
                    .get(&block)
                    .filter(|t| t.kind == kind)
                    .map_or(now_ms, |t| t.started_ms);
                let transfer = Transfer {
                    kind,
                    done,
                    total,
                    started_ms,
                    at_ms: now_ms,
                };
                self.transfers.insert(block, transfer) != Some(transfer)
            }
            Update::TransferEnded { block } => self.transfers.remove(&block).is_some(),
            Update::WouldOverwrite { block, path } => {
                replace(&mut self.overwrite, Some(Overwrite { block, path }))
            }
        }
    }

    pub fn unikernel(&self, name: &Label) -> Option<&UnikernelInfo> {
        self.unikernels.iter().find(|u| &u.config.name == name)
    }

    fn take_stats(&mut self, stats: HashMap<Label, Stats>, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.stats_at_ms);
        let cpu = stats
            .iter()
            .filter_map(|(name, now)| {
                let before = self.stats.get(name)?;
                let same_run = before.process.pid == now.process.pid;
                (same_run && elapsed > 0).then(|| {
                    let used = now
                        .process
                        .cpu_time_ms
                        .saturating_sub(before.process.cpu_time_ms);
                    (
                        name.clone(),
                        CpuUse {
                            percent: used as f64 * 100.0 / elapsed as f64,
                        },
                    )
                })
            })
            .collect();
        self.stats_at_ms = now_ms;
        let changed = stats != self.stats || cpu != self.cpu;
        self.stats = stats;
        self.cpu = cpu;
        changed
    }
}

/// Sets `slot` to `value`; true when that changed it.
fn replace<T: PartialEq>(slot: &mut T, value: T) -> bool {
    if *slot == value {
        return false;
    }
    *slot = value;
    true
}
