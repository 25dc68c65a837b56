//! How the screens write times, states and sizes, so every screen says them
//! the same way.

use crate::api::unikernel::{ExitStatus, RunState};

const SECOND: u64 = 1000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// A duration as `42s`, `17m`, `3h05m`, `2d04h`: coarse enough to change
/// rarely, which keeps an idle screen idle.
pub fn duration(ms: u64) -> String {
    match ms {
        ms if ms < MINUTE => format!("{}s", ms / SECOND),
        ms if ms < HOUR => format!("{}m", ms / MINUTE),
        ms if ms < DAY => format!("{}h{:02}m", ms / HOUR, (ms % HOUR) / MINUTE),
        ms => format!("{}d{:02}h", ms / DAY, (ms % DAY) / HOUR),
    }
}

/// How long until [`duration`] of something `ms` old shows another text.
pub fn duration_changes_in(ms: u64) -> u64 {
    let step = match ms {
        ms if ms < MINUTE => SECOND,
        ms if ms < DAY => MINUTE,
        _ => HOUR,
    };
    step - ms % step
}

/// A signal by name where the platform knows it (`SIGKILL`), else its number.
pub fn signal(number: i32) -> String {
    nix::sys::signal::Signal::try_from(number)
        .map_or_else(|_| format!("signal {number}"), |s| s.as_str().to_string())
}

/// How a run ended, as the list's state column says it.
pub fn exit(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(code) => format!("exited {code}"),
        ExitStatus::Signal(number) => format!("killed by {}", signal(number)),
        ExitStatus::Lost => "lost (monitor killed)".into(),
    }
}

/// The state column: what it is doing, with the numbers that matter.
pub fn state(state: &RunState, now_ms: u64) -> String {
    let until = |at_ms: u64| duration(at_ms.saturating_sub(now_ms) + SECOND - 1);
    match state {
        RunState::Starting { .. } => "starting".into(),
        RunState::Running { .. } => "running".into(),
        RunState::Exited { exit: record } => exit(record.status),
        RunState::Restarting { at_ms } => format!("restarting in {}", until(*at_ms)),
        // The failures show in the restarts column.
        RunState::CrashLoop { at_ms, .. } => format!("crash loop, retry in {}", until(*at_ms)),
        RunState::Stopped => "stopped".into(),
    }
}

/// Bytes as `512 B`, `3.2 KiB`, `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A transfer as `38%: 24.0 MiB of 64.0 MiB, 6.0 MiB/s, 6s left`, saying
/// only what is known: no total without one, no rate before bytes moved.
pub fn transfer(done: u64, total: Option<u64>, elapsed_ms: u64) -> String {
    let mut text = match (total, share(done, total)) {
        (Some(total), Some(share)) => {
            format!("{:.0}%: {} of {}", share * 100.0, bytes(done), bytes(total))
        }
        _ => format!("{} so far", bytes(done)),
    };
    let rate = done as f64 * 1000.0 / elapsed_ms.max(1) as f64;
    if elapsed_ms > 0 && done > 0 {
        text.push_str(&format!(", {}/s", bytes(rate as u64)));
        if let Some(total) = total {
            let left_ms = total.saturating_sub(done) as f64 * 1000.0 / rate;
            text.push_str(&format!(", {} left", duration(left_ms as u64)));
        }
    }
    text
}

/// How much of `total` is `done`, from 0 to 1; None without a total.
pub fn share(done: u64, total: Option<u64>) -> Option<f64> {
    let total = total.filter(|&n| n > 0)?;
    Some((done as f64 / total as f64).clamp(0.0, 1.0))
}

/// A wall-clock time as `2027-01-15 08:00:00 UTC`.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// days-to-civil method, counted in 400-year eras from 0000-03-01).
pub fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::unikernel::ExitRecord;

    #[test]
    fn durations_are_coarse_and_say_when_they_change() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(59_999), "59s");
        assert_eq!(duration(60_000), "1m");
        assert_eq!(duration(3 * HOUR + 5 * MINUTE + 7 * SECOND), "3h05m");
        assert_eq!(duration(2 * DAY + 4 * HOUR), "2d04h");
        assert_eq!(duration_changes_in(1_500), 500);
        assert_eq!(duration_changes_in(90_000), 30_000);
        for ms in [0, 999, 59_999, 61_000, HOUR + 1, DAY + 5] {
            assert_ne!(duration(ms), duration(ms + duration_changes_in(ms)), "{ms}");
            assert_eq!(
                duration(ms),
                duration(ms + duration_changes_in(ms) - 1),
                "{ms}"
            );
        }
    }

    #[test]
    fn states_say_what_happened() {
        let exited = |status| RunState::Exited {
            exit: ExitRecord {
                status,
                at_ms: 0,
                ran_ms: 0,
            },
        };
        assert_eq!(state(&exited(ExitStatus::Code(2)), 0), "exited 2");
        assert_eq!(
            state(&exited(ExitStatus::Signal(9)), 0),
            "killed by SIGKILL"
        );
        assert_eq!(
            state(&RunState::Restarting { at_ms: 4_200 }, 1_000),
            "restarting in 4s"
        );
        assert_eq!(
            state(
                &RunState::CrashLoop {
                    at_ms: 61_000,
                    failures: 7
                },
                1_000
            ),
            "crash loop, retry in 1m"
        );
    }

    #[test]
    fn bytes_pick_a_unit() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn times_are_written_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(crate::ui::fixtures::NOW_MS), "2027-01-15 08:00:00 UTC");
        assert_eq!(utc(951_825_599_000), "2000-02-29 11:59:59 UTC");
        assert_eq!(utc(4_107_542_400_000), "2100-03-01 00:00:00 UTC");
    }
}
