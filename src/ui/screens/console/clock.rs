//! Wall-clock milliseconds as the console shows them: always UTC, so a pane
//! reads the same whatever the operator's or the host's time zone.

const DAY_MS: u64 = 86_400_000;

/// `HH:MM:SS.mmm`, written into a fixed array so drawing a timestamp
/// allocates nothing.
pub struct Clock([u8; Clock::WIDTH]);

impl Clock {
    pub const WIDTH: usize = 12;

    pub fn of(at_ms: u64) -> Clock {
        let ms = at_ms % DAY_MS;
        let fields = [
            (ms / 3_600_000, 2),
            (ms / 60_000 % 60, 2),
            (ms / 1000 % 60, 2),
            (ms % 1000, 3),
        ];
        let mut out = *b"00:00:00.000";
        let mut end = 0;
        for (value, digits) in fields {
            end += digits;
            write_digits(&mut out[end - digits..end], value);
            end += 1;
        }
        Clock(out)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

fn write_digits(slot: &mut [u8], mut value: u64) {
    for byte in slot.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// `2027-01-15T08-00-00Z`: a UTC time fit for a file name (no colons, which
/// some file systems and tools dislike).
pub fn file_stamp(at_ms: u64) -> String {
    let days = at_ms / DAY_MS;
    let (year, month, day) = crate::ui::format::civil(days);
    let clock = Clock::of(at_ms);
    let hms = clock
        .as_str()
        .get(..8)
        .unwrap_or_default()
        .replace(':', "-");
    format!("{year:04}-{month:02}-{day:02}T{hms}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_are_utc_with_milliseconds() {
        assert_eq!(Clock::of(0).as_str(), "00:00:00.000");
        // 2027-01-15 08:00:00.000 UTC, plus 1 h 2 min 3.045 s.
        let at = 1_800_000_000_000 + 3_723_045;
        assert_eq!(Clock::of(at).as_str(), "09:02:03.045");
        assert_eq!(Clock::of(DAY_MS - 1).as_str(), "23:59:59.999");
    }

    #[test]
    fn file_stamps_carry_the_utc_date() {
        assert_eq!(file_stamp(0), "1970-01-01T00-00-00Z");
        assert_eq!(file_stamp(1_800_000_000_000), "2027-01-15T08-00-00Z");
        // A leap day and the last second of a year.
        assert_eq!(file_stamp(1_709_208_000_000), "2024-02-29T12-00-00Z");
        assert_eq!(file_stamp(1_735_689_599_000), "2024-12-31T23-59-59Z");
    }
}
