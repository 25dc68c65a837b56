//! Counters of a running unikernel, as `fulmar stats` shows them.

use serde::{Deserialize, Serialize};

/// A unikernel's tender process and its taps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    #[serde(flatten)]
    pub process: ProcessStats,
    pub taps: Vec<TapStats>,
}

/// The tender process: the unikernel's CPU time and memory are the tender's.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessStats {
    pub pid: u32,
    /// User and system time together.
    pub cpu_time_ms: u64,
    /// Resident memory.
    pub rss_kb: u64,
}

/// Traffic through one tap as the host counts it, so `rx` is what the unikernel
/// sent and `tx` what it was sent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TapStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}
