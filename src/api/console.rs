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
    /// On the wire `{"text": …}` when it is UTF-8, else `{"base64": …}`.
    #[serde(with = "line_bytes")]
    pub bytes: Vec<u8>,
    /// This line continues the previous one: a line longer than the longest
    /// kept whole is split into chunks, and every chunk after the first says so.
    pub continued: bool,
    pub source: LineSource,
}

/// How a line's bytes cross the wire (docs/protocol.md, "Console lines"): as
/// a JSON string when they are UTF-8, which console output nearly always is,
/// else in base64. A JSON array of numbers would cost up to four bytes a byte.
mod line_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Encoded<T> {
        Text(T),
        Base64(T),
    }

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        let base64;
        let encoded = match std::str::from_utf8(bytes) {
            Ok(text) => Encoded::Text(text),
            Err(_) => {
                base64 = STANDARD.encode(bytes);
                Encoded::Base64(base64.as_str())
            }
        };
        encoded.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        match Encoded::<String>::deserialize(deserializer)? {
            Encoded::Text(text) => Ok(text.into_bytes()),
            Encoded::Base64(base64) => STANDARD.decode(base64).map_err(|e| {
                D::Error::custom(format!(
                    "a console line's base64 bytes do not decode ({e}): the peer is broken"
                ))
            }),
        }
    }
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

    fn line(bytes: &[u8]) -> ConsoleLine {
        ConsoleLine {
            seq: 1,
            at_ms: 2,
            bytes: bytes.to_vec(),
            continued: false,
            source: LineSource::Fulmar,
        }
    }

    /// The line's `bytes` as they are on the wire, and the line read back.
    fn on_the_wire(bytes: &[u8]) -> (serde_json::Value, ConsoleLine) {
        let json = serde_json::to_string(&line(bytes)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        (value["bytes"].clone(), serde_json::from_str(&json).unwrap())
    }

    #[test]
    fn utf8_lines_travel_as_text() {
        let (wire, back) = on_the_wire("caf\u{e9} \x1b[31mred\r".as_bytes());
        assert_eq!(wire, serde_json::json!({"text": "caf\u{e9} \x1b[31mred\r"}));
        assert_eq!(back, line("caf\u{e9} \x1b[31mred\r".as_bytes()));
    }

    #[test]
    fn other_lines_travel_in_base64() {
        let bytes = b"ok \xff\xfe caf\xc3";
        let (wire, back) = on_the_wire(bytes);
        assert_eq!(wire, serde_json::json!({"base64": "b2sg//4gY2Fmww=="}));
        assert_eq!(back, line(bytes));
    }

    #[test]
    fn an_empty_line_is_empty_text() {
        let (wire, back) = on_the_wire(b"");
        assert_eq!(wire, serde_json::json!({"text": ""}));
        assert_eq!(back, line(b""));
    }

    #[test]
    fn bytes_in_bad_base64_or_as_numbers_are_refused() {
        let json = |bytes: &str| {
            format!(r#"{{"seq":1,"at_ms":2,"bytes":{bytes},"continued":false,"source":"fulmar"}}"#)
        };
        let bad = serde_json::from_str::<ConsoleLine>(&json(r#"{"base64":"!!"}"#)).unwrap_err();
        assert!(bad.to_string().contains("do not decode"), "{bad}");
        // The encoding of protocol 2, which the handshake keeps from ever arriving.
        assert!(serde_json::from_str::<ConsoleLine>(&json("[104,105]")).is_err());
        let fine = serde_json::from_str::<ConsoleLine>(&json(r#"{"text":"hi"}"#)).unwrap();
        assert_eq!(fine.bytes, b"hi");
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
