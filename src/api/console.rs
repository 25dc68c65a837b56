//! Console lines of a unikernel, as the daemon keeps them and streams them to
//! clients.
//!
//! Console output is whatever the unikernel wrote: untrusted bytes, possibly
//! invalid UTF-8 or full of escape sequences. These types carry it untouched;
//! making it safe to show is the display's job.

use serde::{Deserialize, Serialize};

/// Who wrote a line.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum LineSource {
    /// The unikernel or its tender, through the console FIFO.
    Unikernel,
    /// fulmar itself, e.g. "--- exited with code 2 ---" between runs.
    Fulmar,
}

/// One line of a unikernel's console.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ConsoleLine {
    /// Increases by one per line of this unikernel's console, across its runs
    /// and restarts, so a client can tell a gap. The count lives in the
    /// daemon: a restarted daemon starts again from 0 (with later `at_ms`).
    pub seq: u64,
    /// When the line was complete, in wall-clock milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The line as written, without its trailing `'\n'` (a `'\r'` stays).
    pub bytes: Vec<u8>,
    /// This line continues the previous one: a line longer than the longest
    /// kept whole is split into chunks, and every chunk after the first says so.
    pub continued: bool,
    pub source: LineSource,
}

/// `bytes` as text that is safe to put on an operator's terminal: printable
/// characters as they are, tabs kept, and every control byte, escape sequence
/// introducer and invalid UTF-8 byte written out visibly (`\x1b`, `\x07`,
/// `\xff`), so nothing a unikernel prints can move the cursor, change colours
/// or set the window title. Invisible format characters are written out too
/// (`\u{202e}`): a right-to-left override or a zero-width space would make the
/// operator read something other than what the unikernel printed.
pub fn visible(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\t' || !(c.is_control() || is_format(c)) {
                out.push(c);
            } else {
                push_escaped(&mut out, c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Unicode's format characters (general category Cf) and the line and
/// paragraph separators: each changes how the text around it is shown, or
/// hides, without being seen itself. Among them the bidirectional controls
/// (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069) and the zero-width
/// ones (U+200B..U+200D, U+2060, U+FEFF).
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    )
}

fn push_escaped(out: &mut String, c: char) {
    let code = c as u32;
    if code <= 0xff {
        out.push_str(&format!("\\x{code:02x}"));
    } else {
        out.push_str(&format!("\\u{{{code:x}}}"));
    }
}

/// What a console subscriber receives next.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleEvent {
    Line(ConsoleLine),
    /// The subscriber fell behind and `count` lines were skipped for it; the
    /// console itself kept them (as far as its history reaches).
    Dropped {
        count: u64,
    },
}

/// Which part of the history a client wants before the live lines.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Since {
    /// All the history the console still holds.
    Everything,
    /// No history: live lines only.
    Nothing,
    /// The last N lines.
    LastLines(u64),
    /// Lines completed at or after this wall-clock time, in milliseconds since the Unix epoch.
    TimeMs(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_and_zero_width_characters_are_shown() {
        let hostile = "ok \u{202e}gnp.exe\u{202c} a\u{200b}b\u{2066}c\u{2069}\u{200e}\u{200f}\u{61c}\u{2060}\u{feff}\u{200d}";
        assert_eq!(
            visible(hostile.as_bytes()),
            "ok \\u{202e}gnp.exe\\u{202c} a\\u{200b}b\\u{2066}c\\u{2069}\\u{200e}\\u{200f}\\u{61c}\\u{2060}\\u{feff}\\u{200d}"
        );
        // Visible text from other scripts is left alone.
        assert_eq!(visible("שלום é 日本".as_bytes()), "שלום é 日本");
    }

    #[test]
    fn escapes_cannot_reach_the_terminal() {
        let hostile =
            b"\x1b]0;pwned\x07\x1b[2J\x1b[31mred\rback\x08\xc2\x9b2J\tok \xff caf\xc3\xa9";
        let shown = visible(hostile);
        assert_eq!(
            shown,
            "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred\\x0dback\\x08\\x9b2J\tok \\xff caf\u{e9}"
        );
        assert!(!shown.chars().any(|c| c != '\t' && c.is_control()));
    }

    #[test]
    fn events_round_trip_through_json_with_their_bytes_intact() {
        let events = [
            ConsoleEvent::Line(ConsoleLine {
                seq: 7,
                at_ms: 1_700_000_000_123,
                bytes: vec![b'o', b'k', 0xff, 0xfe, b'\r', 0x1b],
                continued: true,
                source: LineSource::Unikernel,
            }),
            ConsoleEvent::Dropped { count: 42 },
        ];
        for event in events {
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(serde_json::from_str::<ConsoleEvent>(&json).unwrap(), event);
        }
    }

    #[test]
    fn since_has_readable_names_on_the_wire() {
        assert_eq!(
            serde_json::to_string(&Since::LastLines(5)).unwrap(),
            r#"{"last_lines":5}"#
        );
        assert_eq!(
            serde_json::to_string(&Since::Everything).unwrap(),
            r#""everything""#
        );
    }
}
