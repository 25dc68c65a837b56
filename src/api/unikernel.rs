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

/// What happens when a unikernel's tender exits. Unlike albatross, a signal
/// (kill -9, the OOM killer) is a failure: operators expect a killed service
/// to come back, as under systemd's `Restart=on-failure` or Kubernetes.
/// An end nobody saw ([`ExitStatus::Lost`]) never restarts: the tender may
/// still be running unsupervised, and a second copy would share its disks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(from = "StoredPolicy", into = "StoredPolicy")]
pub enum RestartPolicy {
    Never,
    /// After any non-zero exit and after any signal.
    #[default]
    OnFailure,
    /// Only after these exit codes, and after a signal if `signals`.
    OnFailureOf {
        codes: BTreeSet<u8>,
        signals: bool,
    },
    /// After every end, exit 0 included.
    Always,
}

/// Exits albatross (and fulmar before its restart rule changed) never
/// restarts after: 1 (a tender error), 60..=64 (MirageOS usage exits).
fn albatross_refuses(code: u8) -> bool {
    code == 1 || (60..=64).contains(&code)
}

/// How state files and the protocol spell a [`RestartPolicy`]. `on-failure`
/// and `on-exit-codes` are how older fulmars wrote albatross's rule, so they
/// load with that meaning; current ones write the other names.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum StoredPolicy {
    Never,
    /// Older fulmars: after any exit code but 1 and 60..=64, never after a signal.
    OnFailure,
    /// Older fulmars: after these codes, never 1, 60..=64 or a signal.
    OnExitCodes(BTreeSet<u8>),
    OnAnyFailure,
    OnFailureOf {
        codes: BTreeSet<u8>,
        signals: bool,
    },
    Always,
}

impl From<StoredPolicy> for RestartPolicy {
    fn from(stored: StoredPolicy) -> RestartPolicy {
        let albatross = |codes: BTreeSet<u8>| RestartPolicy::OnFailureOf {
            codes: codes
                .into_iter()
                .filter(|&c| !albatross_refuses(c))
                .collect(),
            signals: false,
        };
        match stored {
            StoredPolicy::Never => RestartPolicy::Never,
            StoredPolicy::OnFailure => albatross((0..=u8::MAX).collect()),
            StoredPolicy::OnExitCodes(codes) => albatross(codes),
            StoredPolicy::OnAnyFailure => RestartPolicy::OnFailure,
            StoredPolicy::OnFailureOf { codes, signals } => {
                RestartPolicy::OnFailureOf { codes, signals }
            }
            StoredPolicy::Always => RestartPolicy::Always,
        }
    }
}

impl From<RestartPolicy> for StoredPolicy {
    fn from(policy: RestartPolicy) -> StoredPolicy {
        match policy {
            RestartPolicy::Never => StoredPolicy::Never,
            RestartPolicy::OnFailure => StoredPolicy::OnAnyFailure,
            RestartPolicy::OnFailureOf { codes, signals } => {
                StoredPolicy::OnFailureOf { codes, signals }
            }
            RestartPolicy::Always => StoredPolicy::Always,
        }
    }
}

/// Why `--restart` (or the create form's codes) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{why}: write never, on-failure, on-failure:CODES (e.g. on-failure:2,3, on-failure:signal,3, on-failure:2-59) or always"
)]
pub struct RestartPolicyError {
    pub why: String,
}

impl std::str::FromStr for RestartPolicy {
    type Err = RestartPolicyError;

    fn from_str(text: &str) -> Result<RestartPolicy, RestartPolicyError> {
        match text.trim() {
            "never" => Ok(RestartPolicy::Never),
            "on-failure" => Ok(RestartPolicy::OnFailure),
            "always" => Ok(RestartPolicy::Always),
            other => match other.strip_prefix("on-failure:") {
                Some(list) => failures_of(list),
                None => Err(RestartPolicyError {
                    why: format!("{other:?} is not a restart policy"),
                }),
            },
        }
    }
}

/// `signal,2,3,10-20` as the failures that restart.
fn failures_of(list: &str) -> Result<RestartPolicy, RestartPolicyError> {
    if list.trim().is_empty() {
        return Err(RestartPolicyError {
            why: format!("on-failure:{list} names no exit code"),
        });
    }
    let code = |c: &str| {
        c.parse::<u8>().map_err(|_| RestartPolicyError {
            why: format!("{c:?} is not an exit code (0 to 255) nor \"signal\""),
        })
    };
    let mut codes = BTreeSet::new();
    let mut signals = false;
    for item in list.split(',').map(str::trim) {
        if item == "signal" {
            signals = true;
        } else if let Some((from, to)) = item.split_once('-') {
            codes.extend(code(from)?..=code(to)?);
        } else {
            codes.insert(code(item)?);
        }
    }
    Ok(RestartPolicy::OnFailureOf { codes, signals })
}

impl fmt::Display for RestartPolicy {
    /// The `--restart` spelling, so what fulmar shows can be typed back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::Never => f.write_str("never"),
            RestartPolicy::OnFailure => f.write_str("on-failure"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::OnFailureOf { codes, signals } => {
                let mut items: Vec<String> =
                    signals.then(|| "signal".to_string()).into_iter().collect();
                items.extend(code_ranges(codes));
                write!(f, "on-failure:{}", items.join(","))
            }
        }
    }
}

/// `{2,3,4,9}` as `2-4`, `9`.
fn code_ranges(codes: &BTreeSet<u8>) -> Vec<String> {
    let mut ranges: Vec<(u8, u8)> = Vec::new();
    for &c in codes {
        match ranges.last_mut() {
            Some((_, to)) if to.checked_add(1) == Some(c) => *to = c,
            _ => ranges.push((c, c)),
        }
    }
    ranges
        .into_iter()
        .map(|(from, to)| match from == to {
            true => from.to_string(),
            false => format!("{from}-{to}"),
        })
        .collect()
}

impl RestartPolicy {
    pub fn restarts_after(&self, exit: ExitStatus) -> bool {
        match (self, exit) {
            (_, ExitStatus::Lost) | (RestartPolicy::Never, _) => false,
            (RestartPolicy::Always, _) => true,
            (RestartPolicy::OnFailure, ExitStatus::Code(code)) => code != 0,
            (RestartPolicy::OnFailure, ExitStatus::Signal(_)) => true,
            (RestartPolicy::OnFailureOf { codes, .. }, ExitStatus::Code(code)) => {
                u8::try_from(code).is_ok_and(|c| codes.contains(&c))
            }
            (RestartPolicy::OnFailureOf { signals, .. }, ExitStatus::Signal(_)) => *signals,
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
            restart: RestartPolicy::default(),
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
    fn on_failure_restarts_after_failures_and_signals_not_exit_0() {
        let on_fail = RestartPolicy::OnFailure;
        for code in [1, 2, 60, 64, 255] {
            assert!(
                on_fail.restarts_after(ExitStatus::Code(code)),
                "code {code}"
            );
        }
        assert!(!on_fail.restarts_after(ExitStatus::Code(0)));
        assert!(on_fail.restarts_after(ExitStatus::Signal(9)));
        assert!(RestartPolicy::Always.restarts_after(ExitStatus::Code(0)));
        assert!(!RestartPolicy::Never.restarts_after(ExitStatus::Signal(9)));
        for policy in [RestartPolicy::OnFailure, RestartPolicy::Always] {
            assert!(!policy.restarts_after(ExitStatus::Lost), "{policy}");
        }
    }

    #[test]
    fn listed_failures_restart_and_signals_only_when_listed() {
        let listed: RestartPolicy = "on-failure:2,3".parse().unwrap();
        assert!(listed.restarts_after(ExitStatus::Code(2)));
        assert!(!listed.restarts_after(ExitStatus::Code(4)));
        assert!(!listed.restarts_after(ExitStatus::Signal(9)));
        let with_signal: RestartPolicy = "on-failure:signal,3".parse().unwrap();
        assert!(with_signal.restarts_after(ExitStatus::Signal(9)));
        assert!(!with_signal.restarts_after(ExitStatus::Code(2)));
    }

    #[test]
    fn policies_parse_and_print_as_typed() {
        for text in [
            "never",
            "on-failure",
            "always",
            "on-failure:2-4,9",
            "on-failure:signal,3",
            "on-failure:signal",
        ] {
            let policy: RestartPolicy = text.parse().unwrap();
            assert_eq!(policy.to_string(), text);
        }
        assert_eq!(
            "on-failure:3,2,4"
                .parse::<RestartPolicy>()
                .unwrap()
                .to_string(),
            "on-failure:2-4"
        );
        for (bad, says) in [
            ("sometimes", "\"sometimes\" is not a restart policy"),
            ("on-failure:2,x", "\"x\" is not an exit code"),
            ("on-failure:256", "\"256\" is not an exit code"),
            ("on-failure:", "names no exit code"),
        ] {
            let err = bad.parse::<RestartPolicy>().unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(
                err.contains("write never, on-failure, on-failure:CODES"),
                "{err}"
            );
        }
    }

    #[test]
    fn older_state_files_keep_albatrosss_rule() {
        let old = |json: &str| serde_json::from_str::<RestartPolicy>(json).unwrap();
        for policy in [
            old("\"on-failure\""),
            old("{\"on-exit-codes\":[0,1,2,63,65]}"),
        ] {
            for code in [0, 2, 65] {
                assert!(
                    policy.restarts_after(ExitStatus::Code(code)),
                    "{policy} {code}"
                );
            }
            for code in [1, 60, 63, 64] {
                assert!(
                    !policy.restarts_after(ExitStatus::Code(code)),
                    "{policy} {code}"
                );
            }
            assert!(!policy.restarts_after(ExitStatus::Signal(9)), "{policy}");
        }
        assert_eq!(
            old("\"on-failure\"").to_string(),
            "on-failure:0,2-59,65-255"
        );
        assert_eq!(old("\"never\""), RestartPolicy::Never);
    }

    #[test]
    fn policies_survive_a_round_trip() {
        for text in ["never", "on-failure", "always", "on-failure:signal,2-4"] {
            let policy: RestartPolicy = text.parse().unwrap();
            let json = serde_json::to_string(&policy).unwrap();
            assert_eq!(
                serde_json::from_str::<RestartPolicy>(&json).unwrap(),
                policy,
                "{json}"
            );
        }
        let json = serde_json::to_string(&RestartPolicy::OnFailure).unwrap();
        assert_eq!(json, "\"on-any-failure\"");
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
