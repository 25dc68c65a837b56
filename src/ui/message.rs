//! What passes between the app and the daemon link: [`Update`]s flow in, as
//! the daemon reports them; [`Command`]s flow out, as the operator asks.
//!
//! The app never waits on the daemon: it sends a command and carries on, and
//! the outcome arrives later as an update. Tests drive the app with scripted
//! updates and read the commands it emits, with no daemon at all.

use crate::api::block::BlockDeviceInfo;
use crate::api::console::ConsoleEvent;
use crate::api::image::InspectReport;
use crate::api::label::Label;
use crate::api::policy::PolicyReport;
use crate::api::protocol::ApiError;
use crate::api::stats::Stats;
use crate::api::unikernel::{UnikernelConfig, UnikernelInfo};
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
    /// The answer to a form's command, for the form waiting for it.
    Form(FormReply),
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

/// What the link found out for the create and edit form.
#[derive(Debug, Clone, PartialEq)]
pub enum FormReply {
    /// The paths that complete `typed`, directories ending in `/`.
    Completions {
        typed: String,
        outcome: Result<Vec<String>, String>,
    },
    /// What the daemon made of the image at `path`.
    Image {
        path: String,
        outcome: Result<InspectReport, String>,
    },
    /// How creating or reconfiguring `name` ended; a refusal carries the
    /// daemon's problems, each tied to a field.
    Submitted {
        name: Label,
        outcome: Result<(), ApiError>,
    },
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
    /// List the operator's own directory for a path being typed; answered by
    /// [`FormReply::Completions`].
    CompletePath(String),
    /// Send the operator's image file to the daemon, which checks and keeps
    /// it; answered by [`FormReply::Image`].
    InspectImage(String),
    /// Start a unikernel from an image the daemon keeps, named by its digest;
    /// answered by [`FormReply::Submitted`].
    Create {
        config: Box<UnikernelConfig>,
        image: String,
    },
    /// Give a unikernel new settings and restart it with its image; answered
    /// by [`FormReply::Submitted`].
    Reconfigure(Box<UnikernelConfig>),
    /// Write a console's text into a new file of the operator's (never over
    /// an existing one); the link does it, as it does all I/O.
    SaveConsole {
        path: PathBuf,
        text: String,
    },
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
            Command::CompletePath(typed) => format!("complete {typed}"),
            Command::InspectImage(path) => format!("inspect the image {path}"),
            Command::Create { config, .. } => format!("create {}", config.name),
            Command::Reconfigure(config) => format!("change the settings of {}", config.name),
            Command::SaveConsole { path, text } => {
                format!("save {} lines to {}", text.lines().count(), path.display())
            }
        }
    }
}
