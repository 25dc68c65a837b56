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
        }
    }
}
