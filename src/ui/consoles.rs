//! The console lines the TUI holds: one bounded buffer per watched
//! unikernel. Lines are made safe for the terminal ([`visible`]) once, as they
//! arrive, so drawing never has to think about hostile bytes.

use crate::api::console::{ConsoleEvent, LineSource, visible};
use crate::api::label::Label;
use std::collections::{HashMap, VecDeque};

/// Lines kept per console; older ones fall off (the daemon keeps its own history).
pub const KEPT_LINES: usize = 20_000;

/// One console line, ready to draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// This buffer's own number for the line: one more than the line before
    /// it, never reused. Unlike `seq` (which a restarted daemon starts again)
    /// it only grows, so a view can hold on to a line by it.
    pub id: u64,
    pub seq: u64,
    pub at_ms: u64,
    /// The line with every control byte written out visibly.
    pub text: String,
    pub source: LineSource,
    /// Continues the previous line (a very long line split by the daemon).
    pub continued: bool,
}

/// The lines of one unikernel's console.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsoleBuffer {
    lines: VecDeque<Line>,
    /// Lines the daemon skipped for us because we fell behind.
    dropped: u64,
    /// The last line (seq, time) cleared from view by the operator; later ones show.
    cleared_through: Option<(u64, u64)>,
    /// Bumped on every change, so views can tell cheaply whether to redo work.
    generation: u64,
    /// The id the next line gets.
    next_id: u64,
}

impl ConsoleBuffer {
    /// Takes one event; false when it changed nothing (a line seen before a
    /// reconnect, sent again with the history).
    pub fn push(&mut self, event: ConsoleEvent) -> bool {
        match event {
            ConsoleEvent::Line(line) => {
                if self.seen(line.seq, line.at_ms) {
                    return false;
                }
                if self.lines.len() == KEPT_LINES {
                    self.lines.pop_front();
                }
                self.lines.push_back(Line {
                    id: self.next_id,
                    seq: line.seq,
                    at_ms: line.at_ms,
                    text: visible(&line.bytes),
                    source: line.source,
                    continued: line.continued,
                });
                self.next_id += 1;
            }
            ConsoleEvent::Dropped { count } => self.dropped = self.dropped.saturating_add(count),
        }
        self.generation = self.generation.wrapping_add(1);
        true
    }

    /// Whether a line was had before: the history sent again after a
    /// reconnect repeats both its number and its time. A daemon that was
    /// restarted numbers its lines from 0 again, but they are later.
    fn seen(&self, seq: u64, at_ms: u64) -> bool {
        let before = |(s, at): (u64, u64)| seq <= s && at_ms <= at;
        self.lines
            .back()
            .is_some_and(|last| before((last.seq, last.at_ms)))
            || self.cleared_through.is_some_and(before)
    }

    /// Hides every line so far; the daemon's history is untouched.
    pub fn clear(&mut self) {
        if let Some(last) = self.lines.back() {
            self.cleared_through = Some((last.seq, last.at_ms));
        }
        self.lines.clear();
        self.generation = self.generation.wrapping_add(1);
    }

    pub fn lines(&self) -> &VecDeque<Line> {
        &self.lines
    }

    /// Where the line with `id` is in [`ConsoleBuffer::lines`], if still kept:
    /// the ids of kept lines run without a gap.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        let first = self.lines.front()?.id;
        let index = usize::try_from(id.checked_sub(first)?).ok()?;
        (index < self.lines.len()).then_some(index)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// The buffers of every console the TUI watches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consoles {
    buffers: HashMap<Label, ConsoleBuffer>,
}

impl Consoles {
    /// Starts keeping `name`'s lines (a no-op when it already does).
    pub fn watch(&mut self, name: &Label) {
        self.buffers.entry(name.clone()).or_default();
    }

    pub fn unwatch(&mut self, name: &Label) {
        self.buffers.remove(name);
    }

    /// Takes an event for `name`; false when nothing changed (not watched,
    /// or a line seen already).
    pub fn push(&mut self, name: &Label, event: ConsoleEvent) -> bool {
        self.buffers.get_mut(name).is_some_and(|b| b.push(event))
    }

    pub fn get(&self, name: &Label) -> Option<&ConsoleBuffer> {
        self.buffers.get(name)
    }

    pub fn get_mut(&mut self, name: &Label) -> Option<&mut ConsoleBuffer> {
        self.buffers.get_mut(name)
    }

    #[cfg(test)]
    pub fn watched(&self) -> impl Iterator<Item = &Label> {
        self.buffers.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::fixtures::line as line_at;

    fn line(seq: u64, bytes: &[u8]) -> ConsoleEvent {
        line_at(seq, 1000 + seq, bytes)
    }

    #[test]
    fn lines_are_escaped_on_arrival() {
        let mut buffer = ConsoleBuffer::default();
        assert!(buffer.push(line(1, b"\x1b[2Jhi\x07")));
        assert_eq!(buffer.lines()[0].text, "\\x1b[2Jhi\\x07");
    }

    #[test]
    fn history_sent_again_after_a_reconnect_is_not_doubled() {
        let mut buffer = ConsoleBuffer::default();
        for seq in 1..=3 {
            buffer.push(line(seq, b"x"));
        }
        let generation = buffer.generation();
        for seq in 1..=3 {
            assert!(!buffer.push(line(seq, b"x")));
        }
        assert!(buffer.push(line(4, b"y")));
        let seqs: Vec<u64> = buffer.lines().iter().map(|l| l.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        assert_ne!(buffer.generation(), generation);
    }

    #[test]
    fn a_restarted_daemon_numbering_from_zero_again_is_not_mistaken_for_history() {
        let mut buffer = ConsoleBuffer::default();
        for seq in 1..=3 {
            buffer.push(line(seq, b"x"));
        }
        assert!(buffer.push(line_at(0, 5_000, b"re-adopted")));
        assert!(buffer.push(line_at(1, 5_001, b"y")));
        assert_eq!(buffer.lines().len(), 5);
    }

    #[test]
    fn ids_only_grow_and_find_kept_lines() {
        let mut buffer = ConsoleBuffer::default();
        for seq in 1..=3 {
            buffer.push(line(seq, b"x"));
        }
        buffer.push(line_at(0, 5_000, b"after a daemon restart"));
        let ids: Vec<u64> = buffer.lines().iter().map(|l| l.id).collect();
        assert_eq!(ids, [0, 1, 2, 3]);
        assert_eq!(buffer.index_of(3), Some(3));
        buffer.clear();
        buffer.push(line_at(1, 5_001, b"y"));
        assert_eq!(buffer.lines()[0].id, 4);
        assert_eq!(buffer.index_of(4), Some(0));
        assert_eq!(buffer.index_of(3), None);
        assert_eq!(buffer.index_of(5), None);
    }

    #[test]
    fn the_buffer_is_bounded_and_counts_drops() {
        let mut buffer = ConsoleBuffer::default();
        for seq in 0..(KEPT_LINES as u64 + 10) {
            buffer.push(line(seq, b"x"));
        }
        assert_eq!(buffer.lines().len(), KEPT_LINES);
        assert_eq!(buffer.lines()[0].seq, 10);
        buffer.push(ConsoleEvent::Dropped { count: 7 });
        buffer.push(ConsoleEvent::Dropped { count: 3 });
        assert_eq!(buffer.dropped(), 10);
    }

    #[test]
    fn clear_hides_lines_until_new_ones_come() {
        let mut buffer = ConsoleBuffer::default();
        buffer.push(line(1, b"a"));
        buffer.push(line(2, b"b"));
        buffer.clear();
        assert!(buffer.lines().is_empty());
        assert!(!buffer.push(line(2, b"b")), "a resent line stays cleared");
        assert!(buffer.push(line(3, b"c")));
        assert_eq!(buffer.lines().len(), 1);
    }

    #[test]
    fn unwatched_consoles_take_nothing() {
        let mut consoles = Consoles::default();
        let web = Label::new("web").unwrap();
        assert!(!consoles.push(&web, line(1, b"a")));
        consoles.watch(&web);
        assert!(consoles.push(&web, line(1, b"a")));
        consoles.unwatch(&web);
        assert!(consoles.get(&web).is_none());
    }
}
