//! A unikernel as the operator configures it and as the supervisor reports it.

use crate::api::image::{Device, Target};
use crate::api::label::Label;
use crate::api::mac::Mac;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// The memory a unikernel gets when the operator names none (the tenders' own default).
pub const DEFAULT_MEMORY_MB: u64 = 512;
/// The sector size a block device gets when the operator names none.
pub const DEFAULT_SECTOR_SIZE: u32 = 512;

/// A manifest network device bound to a host bridge.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The device name in the image's manifest.
    pub interface: String,
    pub bridge: String,
    /// None: derived by albatross's rule from the interface and unikernel names.
    pub mac: Option<Mac>,
}

/// A manifest block device bound to a block device of the store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BlockConfig {
    /// The device name in the image's manifest.
    pub device: String,
    /// The block device in the store.
    pub block: Label,
    /// None: [`DEFAULT_SECTOR_SIZE`].
    pub sector_size: Option<u32>,
}

/// What happens when a unikernel's tender exits.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Never,
    /// After any exit but those that mean "do not retry" (see [`RestartPolicy::restarts_after`]).
    OnFailure,
    /// Only after these exit codes.
    OnExitCodes(BTreeSet<u8>),
}

impl RestartPolicy {
    /// albatross's rule, from SOLO5.md: never after exit 1 (a tender error),
    /// 60..=64 (MirageOS help, version and usage errors) or a signal; nor
    /// after an end nobody saw.
    pub fn restarts_after(&self, exit: ExitStatus) -> bool {
        let ExitStatus::Code(code) = exit else {
            return false;
        };
        if code == 1 || (60..=64).contains(&code) {
            return false;
        }
        match self {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => true,
            RestartPolicy::OnExitCodes(codes) => {
                u8::try_from(code).is_ok_and(|c| codes.contains(&c))
            }
        }
    }
}

/// Everything needed to (re)start a unikernel, apart from the image bytes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct UnikernelConfig {
    pub name: Label,
    pub memory_mb: u64,
    pub cpu: u32,
    pub nets: Vec<NetConfig>,
    pub blocks: Vec<BlockConfig>,
    /// Passed to the unikernel verbatim, after `--`.
    pub args: Vec<String>,
    pub restart: RestartPolicy,
    /// Higher starts first when the host comes up.
    pub startup_priority: i32,
}

impl UnikernelConfig {
    /// A configuration with the defaults an operator gets from a bare `fulmar create NAME IMAGE`.
    pub fn new(name: Label) -> UnikernelConfig {
        UnikernelConfig {
            name,
            memory_mb: DEFAULT_MEMORY_MB,
            cpu: 0,
            nets: Vec::new(),
            blocks: Vec::new(),
            args: Vec::new(),
            restart: RestartPolicy::Never,
            startup_priority: 0,
        }
    }

    /// The MAC the tender will be given for `net`.
    pub fn mac_of(&self, net: &NetConfig) -> Mac {
        net.mac
            .unwrap_or_else(|| Mac::derived(&net.interface, self.name.as_str()))
    }
}

/// How a tender ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    /// Nobody saw how it ended: its monitor was killed, or the host went down.
    Lost,
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exited {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
            ExitStatus::Lost => f.write_str("ended unseen (its monitor was killed)"),
        }
    }
}

/// One end of a run, kept in the unikernel's history.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ExitRecord {
    pub status: ExitStatus,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// How long the run lasted.
    pub ran_ms: u64,
}

/// Where a unikernel is in its life.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum RunState {
    /// Being launched: its tender is not running yet, but what it needs is
    /// already taken.
    Starting {
        since_ms: u64,
    },
    Running {
        pid: u32,
        since_ms: u64,
    },
    /// Ended and will not be restarted.
    Exited {
        exit: ExitRecord,
    },
    /// Waiting out its back-off before the next start.
    Restarting {
        at_ms: u64,
    },
    /// Failed so often in a row that fulmar only retries at the longest back-off.
    CrashLoop {
        at_ms: u64,
        failures: u32,
    },
    /// Destroyed by the operator.
    Stopped,
}

impl RunState {
    /// Whether a unikernel in this state holds its CPU, memory and block
    /// devices: while it starts, runs or waits to run again.
    pub fn holds_resources(&self) -> bool {
        matches!(
            self,
            RunState::Starting { .. }
                | RunState::Running { .. }
                | RunState::Restarting { .. }
                | RunState::CrashLoop { .. }
        )
    }

    /// The name `list` shows and `list --json` prints as `state`.
    pub fn name(&self) -> &'static str {
        match self {
            RunState::Starting { .. } => "starting",
            RunState::Running { .. } => "running",
            RunState::Exited { .. } => "exited",
            RunState::Restarting { .. } => "restarting",
            RunState::CrashLoop { .. } => "crash-loop",
            RunState::Stopped => "stopped",
        }
    }
}

/// A tap the supervisor made for one manifest network device.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TapInfo {
    pub interface: String,
    pub tap: String,
    pub bridge: String,
    pub mac: Mac,
}

/// What the supervisor reports about one unikernel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct UnikernelInfo {
    pub config: UnikernelConfig,
    pub target: Target,
    pub devices: Vec<Device>,
    pub digest: String,
    pub state: RunState,
    /// Taps of the current run; empty when not running.
    pub taps: Vec<TapInfo>,
    /// The tender's command line of the current (or last) run.
    pub argv: Vec<String>,
    pub restarts: u32,
    /// Most recent last.
    pub exits: Vec<ExitRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_rule_follows_albatross() {
        let on_fail = RestartPolicy::OnFailure;
        for code in [0, 2, 59, 65, 255] {
            assert!(
                on_fail.restarts_after(ExitStatus::Code(code)),
                "code {code}"
            );
        }
        for code in [1, 60, 61, 62, 63, 64] {
            assert!(
                !on_fail.restarts_after(ExitStatus::Code(code)),
                "code {code}"
            );
        }
        assert!(!on_fail.restarts_after(ExitStatus::Signal(9)));
        assert!(!RestartPolicy::Never.restarts_after(ExitStatus::Code(2)));
        let listed = RestartPolicy::OnExitCodes([2, 3].into());
        assert!(listed.restarts_after(ExitStatus::Code(2)));
        assert!(!listed.restarts_after(ExitStatus::Code(4)));
        assert!(!listed.restarts_after(ExitStatus::Signal(2)));
    }

    #[test]
    fn mac_is_derived_unless_given() {
        let mut config = UnikernelConfig::new(Label::new("hello").unwrap());
        let derived = NetConfig {
            interface: "service".into(),
            bridge: "br0".into(),
            mac: None,
        };
        assert_eq!(config.mac_of(&derived).to_string(), "00:80:41:cd:8a:eb");
        let given = Mac([2, 0, 0, 0, 0, 1]);
        config.nets.push(NetConfig {
            mac: Some(given),
            ..derived
        });
        assert_eq!(config.mac_of(&config.nets[0]), given);
    }
}
