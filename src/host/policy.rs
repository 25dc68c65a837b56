//! The root policy, measured from the host, and the check that a new unikernel or
//! block device fits in what is left of it.
//!
//! The supervisor keeps the claims of what runs; this module only measures the
//! host and judges one more claim against the sum of the others.

use crate::api::policy::{Claim, Policy, Usage, format_cpus};
use crate::host::net::{self, NetError};
use std::path::Path;

const MIB: u64 = 1024 * 1024;

/// Where Linux lists the CPUs that are online, as ranges (`0-3,5`).
const ONLINE_CPUS: &str = "/sys/devices/system/cpu/online";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("CPU {cpu} is not online here: use one of {}", format_cpus(.online))]
    Cpu { cpu: u32, online: Vec<u32> },
    #[error(
        "{asked} MB of memory asked, but only {free} MB of {total} MB are free: give less (--mem) or stop a unikernel"
    )]
    Memory { asked: u64, free: u64, total: u64 },
    #[error(
        "{asked} MB of disk asked, but only {free} MB of {total} MB are free: ask for less or destroy a block device you no longer need"
    )]
    Disk { asked: u64, free: u64, total: u64 },
    #[error("cannot tell how many CPUs the host has ({why})")]
    CpuCount { why: String },
    #[error("cannot tell how much memory the host has: sysconf does not say")]
    MemorySize,
    #[error(
        "cannot tell the size of the filesystem holding {path} ({why}): check that the block directory is reachable"
    )]
    DiskSize { path: String, why: String },
    #[error(transparent)]
    Net(#[from] NetError),
}

/// Measures the host: online CPUs, physical memory, the size of the filesystem
/// that holds (or will hold) `block_dir`, and the bridges.
pub fn host_policy(block_dir: &Path) -> Result<Policy, PolicyError> {
    Ok(Policy {
        cpus: online_cpus()?,
        memory_mb: memory_mb()?,
        disk_mb: disk_mb(block_dir)?,
        bridges: net::bridges()?,
    })
}

/// Whether `claim` fits beside `usage` in `policy`; the first limit it breaks
/// otherwise.
pub fn check(policy: &Policy, usage: &Usage, claim: &Claim) -> Result<(), PolicyError> {
    if let Some(cpu) = claim.cpu.filter(|cpu| !policy.cpus.contains(cpu)) {
        return Err(PolicyError::Cpu {
            cpu,
            online: policy.cpus.clone(),
        });
    }
    let memory_free = policy.memory_mb.saturating_sub(usage.memory_mb);
    if claim.memory_mb > memory_free {
        return Err(PolicyError::Memory {
            asked: claim.memory_mb,
            free: memory_free,
            total: policy.memory_mb,
        });
    }
    if let Some(bridge) = claim.bridges.iter().find(|b| !policy.bridges.contains(b)) {
        return Err(NetError::NoBridge {
            bridge: bridge.clone(),
            available: policy.bridges.clone(),
        }
        .into());
    }
    let disk_free = policy.disk_mb.saturating_sub(usage.disk_mb);
    if claim.disk_mb > disk_free {
        return Err(PolicyError::Disk {
            asked: claim.disk_mb,
            free: disk_free,
            total: policy.disk_mb,
        });
    }
    Ok(())
}

/// The kernel's list when there is one (Linux), else as many CPUs from 0 as
/// this process may use.
fn online_cpus() -> Result<Vec<u32>, PolicyError> {
    let listed = std::fs::read_to_string(ONLINE_CPUS)
        .ok()
        .and_then(|text| parse_cpus(&text));
    if let Some(cpus) = listed {
        return Ok(cpus);
    }
    let count = std::thread::available_parallelism()
        .map_err(|e| PolicyError::CpuCount { why: e.to_string() })?;
    Ok((0..).take(count.get()).collect())
}

/// Reads `0-3,5,7-8`; `None` for anything else, so a surprise falls back
/// rather than pins unikernels to CPUs that are not there.
fn parse_cpus(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',') {
        let (first, last): (u32, u32) = match part.split_once('-') {
            Some((first, last)) => (first.parse().ok()?, last.parse().ok()?),
            None => {
                let cpu = part.parse().ok()?;
                (cpu, cpu)
            }
        };
        if first > last {
            return None;
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

fn memory_mb() -> Result<u64, PolicyError> {
    let pages = sysconf(libc::_SC_PHYS_PAGES).ok_or(PolicyError::MemorySize)?;
    let page_size = sysconf(libc::_SC_PAGESIZE).ok_or(PolicyError::MemorySize)?;
    Ok(pages.saturating_mul(page_size) / MIB)
}

/// The block directory may not exist yet (the first `block create` makes it), so
/// the nearest ancestor that does stands in for it.
fn disk_mb(block_dir: &Path) -> Result<u64, PolicyError> {
    let existing = block_dir
        .ancestors()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let stat = nix::sys::statvfs::statvfs(existing).map_err(|e| PolicyError::DiskSize {
        path: existing.display().to_string(),
        why: e.to_string(),
    })?;
    // The field types differ between platforms; on some these casts are no-ops.
    #[allow(clippy::unnecessary_cast)]
    let bytes = (stat.blocks() as u64).saturating_mul(stat.fragment_size() as u64);
    Ok(bytes / MIB)
}

/// A positive `sysconf(3)` value, or `None` when the system does not say.
pub(crate) fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf takes a plain integer and touches no memory of ours.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok().filter(|v| *v > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            cpus: vec![0, 1],
            memory_mb: 1024,
            disk_mb: 4096,
            bridges: vec!["br0".into(), "br1".into()],
        }
    }

    fn usage() -> Usage {
        let running = Claim {
            cpu: Some(0),
            memory_mb: 512,
            disk_mb: 0,
            bridges: vec!["br0".into()],
        };
        let block = Claim {
            disk_mb: 4000,
            ..Claim::default()
        };
        [&running, &block].into_iter().collect()
    }

    fn claim(cpu: u32, memory_mb: u64, bridges: &[&str]) -> Claim {
        Claim {
            cpu: Some(cpu),
            memory_mb,
            disk_mb: 0,
            bridges: bridges.iter().map(|b| b.to_string()).collect(),
        }
    }

    #[test]
    fn a_claim_that_fits_passes() {
        check(&policy(), &usage(), &claim(1, 512, &["br0", "br1", "br0"])).unwrap();
        check(&policy(), &usage(), &claim(0, 0, &[])).unwrap();
        let block = Claim {
            disk_mb: 96,
            ..Claim::default()
        };
        check(&policy(), &usage(), &block).unwrap();
    }

    #[test]
    fn a_cpu_that_is_not_online_is_refused() {
        let error = check(&policy(), &usage(), &claim(7, 64, &[])).unwrap_err();
        assert_eq!(
            error,
            PolicyError::Cpu {
                cpu: 7,
                online: vec![0, 1]
            }
        );
        assert_eq!(
            error.to_string(),
            "CPU 7 is not online here: use one of 0-1"
        );
    }

    #[test]
    fn more_memory_than_is_free_is_refused() {
        let error = check(&policy(), &usage(), &claim(1, 513, &[])).unwrap_err();
        assert_eq!(
            error,
            PolicyError::Memory {
                asked: 513,
                free: 512,
                total: 1024
            }
        );
        assert!(
            error
                .to_string()
                .starts_with("513 MB of memory asked, but only 512 MB of 1024 MB are free")
        );
    }

    #[test]
    fn an_unknown_bridge_is_refused_with_the_known_ones() {
        let error = check(&policy(), &usage(), &claim(1, 64, &["br0", "br9"])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "bridge br9 does not exist: create it (ip link add br9 type bridge) or use one of: br0, br1"
        );
    }

    #[test]
    fn more_disk_than_is_free_is_refused() {
        let block = Claim {
            disk_mb: 97,
            ..Claim::default()
        };
        let error = check(&policy(), &usage(), &block).unwrap_err();
        assert_eq!(
            error,
            PolicyError::Disk {
                asked: 97,
                free: 96,
                total: 4096
            }
        );
    }

    #[test]
    fn usage_beyond_the_policy_leaves_nothing_free() {
        // The host may shrink under running unikernels (a CPU offlined, a smaller
        // disk mounted); nothing then fits, and nothing overflows.
        let mut over = usage();
        over.memory_mb = u64::MAX;
        let error = check(&policy(), &over, &claim(1, 1, &[])).unwrap_err();
        assert_eq!(
            error,
            PolicyError::Memory {
                asked: 1,
                free: 0,
                total: 1024
            }
        );
    }

    #[test]
    fn parses_the_kernels_cpu_lists() {
        assert_eq!(parse_cpus("0\n"), Some(vec![0]));
        assert_eq!(parse_cpus("0-3,5,7-8\n"), Some(vec![0, 1, 2, 3, 5, 7, 8]));
        assert_eq!(parse_cpus("4,0-1"), Some(vec![0, 1, 4]));
        for bad in ["", "x", "3-1", "0-", "0,,1", "-1"] {
            assert_eq!(parse_cpus(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn measures_this_host() {
        let dir = tempfile::tempdir().unwrap();
        let policy = host_policy(&dir.path().join("not/yet/made")).unwrap();
        let online = std::fs::read_to_string(ONLINE_CPUS).unwrap();
        assert_eq!(format_cpus(&policy.cpus), online.trim());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let total_kb: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap();
        assert_eq!(policy.memory_mb, total_kb / 1024);
        assert!(policy.disk_mb > 0);
        assert_eq!(policy.disk_mb, disk_mb(dir.path()).unwrap());
        assert_eq!(policy.bridges, net::bridges().unwrap());
    }
}
