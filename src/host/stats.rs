//! Per-unikernel counters: the tender's CPU time and memory from procfs, its
//! taps' traffic from netlink. Reading them costs a few small file reads, so they
//! can be taken as often as a view refreshes.

use crate::api::stats::{ProcessStats, Stats, TapStats};
use crate::host::net::{self, NetError};
use crate::host::policy::sysconf;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Linux reports process times in these ticks to user space whatever the
/// kernel's own tick rate (USER_HZ), should sysconf not say.
const USER_HZ: u64 = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    #[error("process {pid} is gone: the unikernel is no longer running")]
    ProcessGone { pid: u32 },
    #[error(
        "tap {name} is gone: it was deleted behind fulmar's back; restart the unikernel to get it back"
    )]
    TapGone { name: String },
    #[error("cannot read {path} ({why}): check that /proc is mounted")]
    Read { path: PathBuf, why: String },
    #[error(
        "{path} does not read as expected ({why}): this kernel's format is new to fulmar, please report it"
    )]
    Parse { path: PathBuf, why: String },
    #[error(transparent)]
    Net(#[from] NetError),
}

/// The counters of the unikernel whose tender is `pid` and whose taps are `taps`.
pub fn stats(
    pid: u32,
    taps: impl IntoIterator<Item = impl AsRef<str>>,
) -> Result<Stats, StatsError> {
    Ok(Stats {
        process: process_stats(pid)?,
        taps: taps
            .into_iter()
            .map(|tap| tap_stats(tap.as_ref()))
            .collect::<Result<_, _>>()?,
    })
}

pub fn process_stats(pid: u32) -> Result<ProcessStats, StatsError> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let gone = || StatsError::ProcessGone { pid };
    let stat_path = dir.join("stat");
    let stat = read(&stat_path).map_err(|e| e.unwrap_or_else(gone))?;
    let ticks = parse_stat(&stat).map_err(|why| parse_error(&stat_path, why))?;
    let statm_path = dir.join("statm");
    let statm = read(&statm_path).map_err(|e| e.unwrap_or_else(gone))?;
    let pages = parse_statm(&statm).map_err(|why| parse_error(&statm_path, why))?;
    let hz = sysconf(libc::_SC_CLK_TCK).unwrap_or(USER_HZ);
    let page_kb = sysconf(libc::_SC_PAGESIZE).map_or(4, |bytes| bytes / 1024);
    Ok(ProcessStats {
        pid,
        cpu_time_ms: ticks.saturating_mul(1000) / hz,
        rss_kb: pages.saturating_mul(page_kb),
    })
}

pub fn tap_stats(name: &str) -> Result<TapStats, StatsError> {
    net::traffic(name)?.ok_or_else(|| StatsError::TapGone {
        name: name.to_owned(),
    })
}

/// Reads a procfs file; `Err(None)` when what it describes is gone
/// (a process that exits while being read answers ESRCH rather than ENOENT).
fn read(path: &Path) -> Result<String, Option<StatsError>> {
    std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) {
            return None;
        }
        Some(StatsError::Read {
            path: path.to_owned(),
            why: e.to_string(),
        })
    })
}

fn parse_error(path: &Path, why: String) -> StatsError {
    StatsError::Parse {
        path: path.to_owned(),
        why,
    }
}

/// User plus system time in clock ticks from a `/proc/PID/stat` line. The
/// command name (field 2) is in parentheses and may itself hold spaces and
/// parentheses, so the fields are counted from the last `)`.
fn parse_stat(line: &str) -> Result<u64, String> {
    let (_, rest) = line
        .rsplit_once(')')
        .ok_or("no ')' closing the command name")?;
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let mut fields = rest.split_whitespace().skip(11);
    let mut ticks = |what: &str| -> Result<u64, String> {
        let field = fields.next().ok_or(format!("no {what} field"))?;
        field
            .parse::<u64>()
            .map_err(|e| format!("{what} {field:?}: {e}"))
    };
    let utime = ticks("utime")?;
    let stime = ticks("stime")?;
    Ok(utime.saturating_add(stime))
}

/// Resident pages, the second field of `/proc/PID/statm`.
fn parse_statm(line: &str) -> Result<u64, String> {
    let field = line.split_whitespace().nth(1).ok_or("no resident field")?;
    field
        .parse()
        .map_err(|e| format!("resident {field:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn parses_a_command_name_with_spaces_and_parentheses() {
        // Fields 3 to 13 are filler here; utime = 70, stime = 30.
        let line = "4242 (evil) (name x)) S 1 2 3 4 5 6 7 8 9 10 70 30 0 0 20 0 1 0 99 0 0\n";
        assert_eq!(parse_stat(line), Ok(100));
        let line = "4242 (plain) R 1 2 3 4 5 6 7 8 9 10 1 2 0";
        assert_eq!(parse_stat(line), Ok(3));
    }

    #[test]
    fn refuses_stat_lines_it_cannot_read() {
        assert!(parse_stat("4242 (no close S 1 2").is_err());
        assert!(parse_stat("4242 (short) S 1 2 3").is_err());
        assert!(parse_stat("4242 (neg) S 1 2 3 4 5 6 7 8 9 10 -1 2").is_err());
        assert!(parse_statm("12").is_err());
        assert_eq!(parse_statm("1000 250 30 1 0 40 0\n"), Ok(250));
    }

    fn busy_work(rounds: u64) -> u64 {
        (0..rounds).fold(0u64, |acc, i| {
            std::hint::black_box(acc.wrapping_mul(31).wrapping_add(i))
        })
    }

    #[test]
    fn own_cpu_time_grows_with_work() {
        let pid = std::process::id();
        let before = process_stats(pid).unwrap();
        assert_eq!(before.pid, pid);
        assert!(before.rss_kb > 0);
        // Work until the counter moves; the bound only keeps a broken counter
        // from hanging the suite.
        let mut after = before;
        for _ in 0..10_000 {
            busy_work(1_000_000);
            after = process_stats(pid).unwrap();
            if after.cpu_time_ms > before.cpu_time_ms {
                break;
            }
        }
        assert!(
            after.cpu_time_ms > before.cpu_time_ms,
            "{before:?} then {after:?}"
        );
    }

    #[test]
    fn reads_a_child_and_reports_it_gone_once_reaped() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let stats = process_stats(pid);
        child.kill().unwrap();
        child.wait().unwrap();
        let stats = stats.unwrap();
        assert_eq!(stats.pid, pid);
        assert!(stats.rss_kb > 0);
        assert_eq!(process_stats(pid), Err(StatsError::ProcessGone { pid }));
    }

    #[test]
    fn a_missing_tap_is_gone() {
        let name = "vmmtap-nothere";
        assert_eq!(
            tap_stats(name),
            Err(StatsError::TapGone { name: name.into() })
        );
        assert!(matches!(
            tap_stats("../lo"),
            Err(StatsError::Net(NetError::BadName { .. }))
        ));
    }

    #[test]
    fn counts_loopback_traffic() {
        crate::host::netns::run(|| {
            let before = tap_stats("lo").unwrap();
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let payload = [7u8; 1000];
            socket
                .send_to(&payload, socket.local_addr().unwrap())
                .unwrap();
            let after = tap_stats("lo").unwrap();
            assert_eq!(after.name, "lo");
            assert_eq!(after.tx_packets, before.tx_packets + 1);
            assert_eq!(after.rx_packets, before.rx_packets + 1);
            assert!(after.tx_bytes >= before.tx_bytes + payload.len() as u64);
            assert_eq!(
                after.rx_bytes - before.rx_bytes,
                after.tx_bytes - before.tx_bytes
            );
            let all = stats(std::process::id(), ["lo"]).unwrap();
            assert_eq!(all.taps.len(), 1);
            assert!(all.taps[0].tx_packets >= after.tx_packets);
        });
    }
}
