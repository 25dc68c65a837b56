//! What passes between the app and the daemon link: [`Update`]s flow in, as
//! the daemon reports them; [`Command`]s flow out, as the operator asks.
//!
//! The app never waits on the daemon: it sends a command and carries on, and
//! the outcome arrives later as an update. Tests drive the app with scripted
//! updates and read the commands it emits, with no daemon at all.

use crate::api::block::BlockDeviceInfo;
use crate::api::console::ConsoleEvent;
use crate::api::label::Label;
use crate::api::policy::PolicyReport;
use crate::api::stats::Stats;
use crate::api::unikernel::UnikernelInfo;
use std::collections::HashMap;
use std::path::PathBuf;

/// Something the daemon told the link, or the link found out about it.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The link reached the daemon (first time or again).
    Connected {
        daemon: String,
    },
    /// The link lost the daemon; it keeps retrying on its own.
    Disconnected {
        reason: String,
    },
    /// Every unikernel, as `List` answered.
    Unikernels(Vec<UnikernelInfo>),
    /// Counters of every running unikernel.
    Stats(HashMap<Label, Stats>),
    Blocks(Vec<BlockDeviceInfo>),
    Policy(PolicyReport),
    /// Lines (or a gap) of a console the app watches.
    Console {
        name: Label,
        event: ConsoleEvent,
    },
    /// How an operator's command ended.
    Done {
        what: String,
        outcome: Result<(), String>,
    },
    /// How far a block transfer has got; the first one says it started.
    Transfer {
        block: Label,
        kind: TransferKind,
        done: u64,
        /// `None` when the size is not known beforehand (a pipe).
        total: Option<u64>,
    },
    /// The transfer of `block` is over (its outcome follows as `Done`).
    TransferEnded {
        block: Label,
    },
    /// A download would replace an existing local file: the operator decides
    /// (the command again with `overwrite`) or lets it be.
    WouldOverwrite {
        block: Label,
        path: PathBuf,
    },
}

/// Which way a block transfer moves data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    /// A new device filled from a local file.
    Create,
    Upload,
    Download,
}

impl TransferKind {
    pub fn name(self) -> &'static str {
        match self {
            TransferKind::Create => "create",
            TransferKind::Upload => "upload",
            TransferKind::Download => "download",
        }
    }
}

/// Something the operator asked of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Destroy(Label),
    Restart(Label),
    Remove(Label),
    /// Stream this unikernel's console (its history, then live lines) until
    /// [`Command::Unwatch`]; the link resubscribes after a reconnect.
    Watch(Label),
    Unwatch(Label),
    RefreshBlocks,
    RefreshPolicy,
    /// A new block device, filled from the operator's local file `data` if given.
    BlockCreate {
        name: Label,
        size_mb: u64,
        data: Option<PathBuf>,
    },
    /// Replaces the device's contents with the local file `path`.
    BlockUpload {
        name: Label,
        path: PathBuf,
    },
    /// Copies the device to the local file `path`; an existing file is only
    /// replaced with `overwrite` (else the link answers `WouldOverwrite`).
    BlockDownload {
        name: Label,
        path: PathBuf,
        overwrite: bool,
    },
    BlockDestroy(Label),
    /// Stops the transfer of this device; an upload leaves the old contents.
    CancelTransfer(Label),
}

impl Command {
    /// What the command does, for the status line and `Update::Done`.
    pub fn describe(&self) -> String {
        match self {
            Command::Destroy(name) => format!("destroy {name}"),
            Command::Restart(name) => format!("restart {name}"),
            Command::Remove(name) => format!("remove {name}"),
            Command::Watch(name) => format!("watch the console of {name}"),
            Command::Unwatch(name) => format!("stop watching the console of {name}"),
            Command::RefreshBlocks => "list block devices".into(),
            Command::RefreshPolicy => "read the host policy".into(),
            Command::BlockCreate { name, .. } => format!("create block device {name}"),
            Command::BlockUpload { name, path } => {
                format!("upload {} to {name}", path.display())
            }
            Command::BlockDownload { name, path, .. } => {
                format!("download {name} to {}", path.display())
            }
            Command::BlockDestroy(name) => format!("destroy block device {name}"),
            Command::CancelTransfer(name) => format!("cancel the transfer of {name}"),
        }
    }
}
