//! What happens to unikernels, as the supervisor announces it.

use crate::api::label::Label;
use crate::api::unikernel::ExitStatus;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    Created {
        name: Label,
    },
    Started {
        name: Label,
        pid: u32,
    },
    Exited {
        name: Label,
        status: ExitStatus,
    },
    /// A start failed before the tender ran (a tap, the image copy, ...).
    StartFailed {
        name: Label,
        reason: String,
    },
    Restarting {
        name: Label,
        at_ms: u64,
        crash_loop: bool,
    },
    Stopped {
        name: Label,
    },
    Removed {
        name: Label,
    },
}
