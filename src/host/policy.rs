//! The root policy, measured from the host. Whether a new unikernel fits in
//! what is left of it is one of the launch rules in `api::validate`.

use crate::api::policy::Policy;
use crate::host::net::{self, NetError};
use std::path::Path;

const MIB: u64 = 1024 * 1024;

/// Where Linux lists the CPUs that are online, as ranges (`0-3,5`).
const ONLINE_CPUS: &str = "/sys/devices/system/cpu/online";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
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
    use crate::api::policy::format_cpus;

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
