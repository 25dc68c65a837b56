//! How the CLI prints what the daemon answers: tables for people, `--json` for
//! scripts (the api types, or flat rows with fixed field names scripts can rely on).

use crate::cli::remote::RemoteError;
use fulmar::api::image::Target;
use fulmar::api::policy::{PolicyReport, format_cpus};
use fulmar::api::protocol::NamedStats;
use fulmar::api::time::now_ms;
use fulmar::api::unikernel::{ExitStatus, RunState, UnikernelInfo};
use serde::Serialize;
use std::io::Write;

pub fn print(text: &str) -> Result<(), RemoteError> {
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(RemoteError::Output)
}

pub fn print_json<T: Serialize>(value: &T) -> Result<(), RemoteError> {
    let json = serde_json::to_string(value).map_err(|e| RemoteError::Output(e.into()))?;
    print(&(json + "\n"))
}

/// One unikernel as `list --json` prints it.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct ListRow {
    pub name: String,
    pub state: &'static str,
    pub pid: Option<u32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub restarts: u32,
    pub target: Target,
    pub memory_mb: u64,
    pub cpu: u32,
    /// When the current run started, in milliseconds since the Unix epoch.
    pub started: Option<u64>,
    pub digest: String,
}

impl ListRow {
    pub fn new(u: &UnikernelInfo) -> ListRow {
        let (pid, started) = match u.state {
            RunState::Running { pid, since_ms } => (Some(pid), Some(since_ms)),
            _ => (None, None),
        };
        let last = u.exits.last().map(|e| e.status);
        ListRow {
            name: u.config.name.to_string(),
            state: u.state.name(),
            pid,
            exit_code: last.and_then(|s| match s {
                ExitStatus::Code(c) => Some(c),
                ExitStatus::Signal(_) | ExitStatus::Lost => None,
            }),
            signal: last.and_then(|s| match s {
                ExitStatus::Signal(n) => Some(n),
                ExitStatus::Code(_) | ExitStatus::Lost => None,
            }),
            restarts: u.restarts,
            target: u.target,
            memory_mb: u.config.memory_mb,
            cpu: u.config.cpu,
            started,
            digest: u.digest.clone(),
        }
    }
}

/// `1d2h`, `3h4m`, `5m6s`, `7s`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m) = (s / 86400, s / 3600 % 24, s / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{}s", s % 60),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// What the STATE column says: the state, and for ended runs how they ended.
fn state_text(u: &UnikernelInfo, now: u64) -> String {
    match &u.state {
        RunState::Exited { exit } => exit_text(exit.status),
        RunState::Restarting { at_ms } => {
            format!("restarting in {}", duration(at_ms.saturating_sub(now)))
        }
        RunState::CrashLoop { failures, .. } => format!("crash loop ({failures} failures)"),
        other => other.name().into(),
    }
}

/// `fulmar info`: what an operator asks about one unikernel, its exits last.
pub fn info_text(u: &UnikernelInfo) -> String {
    let row = ListRow::new(u);
    let now = now_ms();
    let mut state = state_text(u, now);
    if let (Some(pid), Some(started)) = (row.pid, row.started) {
        state += &format!(", pid {pid}, up {}", duration(now.saturating_sub(started)));
    }
    let last = u
        .exits
        .last()
        .map_or("none yet".into(), |e| exit_text(e.status));
    let mut rows = vec![
        vec!["name".into(), row.name],
        vec!["state".into(), state],
        vec!["restart".into(), u.config.restart.to_string()],
        vec!["restarts".into(), row.restarts.to_string()],
        vec!["last exit".into(), last],
        vec!["target".into(), row.target.to_string()],
        vec!["memory".into(), format!("{} MB", row.memory_mb)],
        vec!["cpu".into(), row.cpu.to_string()],
        vec!["digest".into(), row.digest],
    ];
    rows.extend(u.exits.iter().rev().map(|e| {
        let ago = duration(now.saturating_sub(e.at_ms));
        let ran = duration(e.ran_ms);
        vec![
            "exit".into(),
            format!("{} {ago} ago, after running {ran}", exit_text(e.status)),
        ]
    }));
    let table = table(&["", ""], &rows);
    table.lines().skip(1).map(|l| format!("{l}\n")).collect()
}

/// How a run ended, in the words of the STATE and LAST EXIT columns.
fn exit_text(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(c) => format!("exited {c}"),
        ExitStatus::Signal(s) => format!("killed by {}", signal_name(s)),
        ExitStatus::Lost => "ended unseen".into(),
    }
}

pub fn signal_name(n: i32) -> String {
    nix::sys::signal::Signal::try_from(n)
        .map_or_else(|_| format!("signal {n}"), |s| s.as_str().to_owned())
}

pub fn list_table(unikernels: &[UnikernelInfo]) -> String {
    let now = now_ms();
    let header = [
        "NAME",
        "STATE",
        "TARGET",
        "CPU",
        "MEM",
        "PID",
        "UPTIME",
        "RESTARTS",
        "LAST EXIT",
        "DIGEST",
    ];
    let rows: Vec<Vec<String>> = unikernels
        .iter()
        .map(|u| {
            let row = ListRow::new(u);
            vec![
                row.name,
                state_text(u, now),
                row.target.to_string(),
                row.cpu.to_string(),
                format!("{}M", row.memory_mb),
                row.pid.map_or("-".into(), |p| p.to_string()),
                row.started
                    .map_or("-".into(), |s| duration(now.saturating_sub(s))),
                row.restarts.to_string(),
                u.exits.last().map_or("-".into(), |e| exit_text(e.status)),
                row.digest.chars().take(12).collect(),
            ]
        })
        .collect();
    table(&header, &rows)
}

/// Left-aligned columns two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:w$}  "));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

fn used_free(used: u64, total: u64) -> String {
    format!("{used} MB used, {} MB free", total.saturating_sub(used))
}

pub fn policy_text(p: &PolicyReport) -> String {
    let pinned: usize = p.used.cpus.values().sum();
    let rows = vec![
        vec![
            "cpus".into(),
            format_cpus(&p.policy.cpus),
            format!("{pinned} unikernels pinned"),
        ],
        vec![
            "memory".into(),
            format!("{} MB", p.policy.memory_mb),
            used_free(p.used.memory_mb, p.policy.memory_mb),
        ],
        vec![
            "disk".into(),
            format!("{} MB", p.policy.disk_mb),
            used_free(p.used.disk_mb, p.policy.disk_mb),
        ],
        vec![
            "bridges".into(),
            if p.policy.bridges.is_empty() {
                "none".into()
            } else {
                p.policy.bridges.join(", ")
            },
            p.used
                .bridges
                .iter()
                .map(|(b, n)| format!("{b}: {n} taps"))
                .collect::<Vec<_>>()
                .join(", "),
        ],
    ];
    table(&["RESOURCE", "HOST", "USED"], &rows)
}

pub fn stats_table(stats: &[NamedStats]) -> String {
    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|s| {
            let taps = s
                .stats
                .taps
                .iter()
                .map(|t| {
                    format!(
                        "{} rx {}B/{}p tx {}B/{}p",
                        t.name, t.rx_bytes, t.rx_packets, t.tx_bytes, t.tx_packets
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            vec![
                s.name.to_string(),
                s.stats.process.pid.to_string(),
                format!("{:.2}s", s.stats.process.cpu_time_ms as f64 / 1000.0),
                format!("{} KiB", s.stats.process.rss_kb),
                taps,
            ]
        })
        .collect();
    table(&["NAME", "PID", "CPU TIME", "RSS", "TAPS"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_uptime() {
        assert_eq!(duration(7_000), "7s");
        assert_eq!(duration(306_000), "5m6s");
        assert_eq!(duration(3 * 3_600_000 + 240_000), "3h4m");
        assert_eq!(duration(26 * 3_600_000), "1d2h");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "LONGER"], &[vec!["wide cell".into(), "x".into()]]);
        assert_eq!(t, "A          LONGER\nwide cell  x\n");
    }

    #[test]
    fn signals_have_names() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(99), "signal 99");
    }
}
