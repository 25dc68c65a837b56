//! The root policy: what the host offers unikernels, and how much of it is taken.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The host's resources, as fulmar measured them when it started or last looked.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Online CPU ids, ascending.
    pub cpus: Vec<u32>,
    /// Physical memory.
    pub memory_mb: u64,
    /// Size of the filesystem that holds the block devices.
    pub disk_mb: u64,
    /// Bridges taps can join, sorted.
    pub bridges: Vec<String>,
}

/// What one unikernel or block device takes from the policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Claim {
    /// The CPU a unikernel is pinned to; a block device has none.
    pub cpu: Option<u32>,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// One entry per tap, so two devices on one bridge name it twice.
    pub bridges: Vec<String>,
}

/// The sum of the claims of everything fulmar runs and stores.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// How many unikernels are pinned to each CPU (CPUs with none are left out).
    pub cpus: BTreeMap<u32, usize>,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// How many taps each bridge has (bridges with none are left out).
    pub bridges: BTreeMap<String, usize>,
}

impl Usage {
    pub fn add(&mut self, claim: &Claim) {
        if let Some(cpu) = claim.cpu {
            *self.cpus.entry(cpu).or_default() += 1;
        }
        self.memory_mb = self.memory_mb.saturating_add(claim.memory_mb);
        self.disk_mb = self.disk_mb.saturating_add(claim.disk_mb);
        for bridge in &claim.bridges {
            *self.bridges.entry(bridge.clone()).or_default() += 1;
        }
    }
}

impl<'a> FromIterator<&'a Claim> for Usage {
    fn from_iter<I: IntoIterator<Item = &'a Claim>>(claims: I) -> Usage {
        let mut usage = Usage::default();
        claims.into_iter().for_each(|claim| usage.add(claim));
        usage
    }
}

/// What `fulmar policy --json` prints: the policy's fields, and beside them the
/// amounts `used`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PolicyReport {
    #[serde(flatten)]
    pub policy: Policy,
    pub used: Usage,
}

/// Writes CPU ids the way the kernel and taskset do: `0-3,5,7-8`.
pub fn format_cpus(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for cpu in sorted {
        match runs.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(cpu) => *last = cpu,
            _ => runs.push((cpu, cpu)),
        }
    }
    runs.iter()
        .map(|&(first, last)| match last - first {
            0 => first.to_string(),
            _ => format!("{first}-{last}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_are_written_as_ranges() {
        assert_eq!(format_cpus(&[]), "");
        assert_eq!(format_cpus(&[0]), "0");
        assert_eq!(format_cpus(&[0, 1]), "0-1");
        assert_eq!(format_cpus(&[8, 7, 5, 0, 1, 2, 3, 3]), "0-3,5,7-8");
        assert_eq!(
            format_cpus(&[u32::MAX - 1, u32::MAX]),
            "4294967294-4294967295"
        );
    }

    #[test]
    fn usage_sums_claims() {
        let unikernel = |cpu, memory_mb, bridges: &[&str]| Claim {
            cpu: Some(cpu),
            memory_mb,
            bridges: bridges.iter().map(|b| b.to_string()).collect(),
            ..Claim::default()
        };
        let block = Claim {
            disk_mb: 100,
            ..Claim::default()
        };
        let claims = [
            unikernel(0, 64, &["br0", "br1"]),
            unikernel(0, 32, &["br0"]),
            unikernel(1, 512, &[]),
            block.clone(),
            block,
        ];
        let usage: Usage = claims.iter().collect();
        assert_eq!(usage.cpus, BTreeMap::from([(0, 2), (1, 1)]));
        assert_eq!(usage.memory_mb, 608);
        assert_eq!(usage.disk_mb, 200);
        assert_eq!(
            usage.bridges,
            BTreeMap::from([("br0".to_string(), 2), ("br1".to_string(), 1)])
        );
    }

    #[test]
    fn the_report_puts_used_beside_the_policy() {
        let report = PolicyReport {
            policy: Policy {
                cpus: vec![0, 1],
                memory_mb: 2048,
                disk_mb: 10240,
                bridges: vec!["br0".into()],
            },
            used: [&Claim {
                cpu: Some(1),
                memory_mb: 64,
                disk_mb: 0,
                bridges: vec!["br0".into()],
            }]
            .into_iter()
            .collect(),
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "cpus": [0, 1],
                "memory_mb": 2048,
                "disk_mb": 10240,
                "bridges": ["br0"],
                "used": {"cpus": {"1": 1}, "memory_mb": 64, "disk_mb": 0, "bridges": {"br0": 1}},
            })
        );
        let back: PolicyReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }
}
