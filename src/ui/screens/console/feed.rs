//! The lines one pane shows, walked in display order: one console in its own
//! order, or several merged by time. Nothing here copies or sorts the lines:
//! every step is a binary search at most, so a pane can walk from any point
//! of a 20,000-line history to its neighbours in no time.
//!
//! The walk is over *entries*: a line with the chunks that continue it (a
//! line too long for the daemon comes as several, each after the first marked
//! `continued`), so a split line always shows as one.

use crate::api::label::Label;
use crate::ui::consoles::{ConsoleBuffer, Line};
use crate::ui::model::Model;
use std::collections::VecDeque;

static NO_LINES: VecDeque<Line> = VecDeque::new();

/// One console line with its continuation chunks: lines `head..end` of
/// source `src`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub src: usize,
    pub head: usize,
    pub end: usize,
}

/// Where an entry sorts among those of every source: by time, then source,
/// then line id.
pub type Key = (u64, usize, u64);

pub struct Feed<'a> {
    buffers: Vec<Option<&'a ConsoleBuffer>>,
}

impl<'a> Feed<'a> {
    pub fn new(model: &'a Model, names: &[Label]) -> Feed<'a> {
        Feed {
            buffers: names.iter().map(|n| model.consoles.get(n)).collect(),
        }
    }

    pub fn sources(&self) -> usize {
        self.buffers.len()
    }

    pub fn lines(&self, src: usize) -> &'a VecDeque<Line> {
        self.buffer(src).map_or(&NO_LINES, ConsoleBuffer::lines)
    }

    pub fn buffer(&self, src: usize) -> Option<&'a ConsoleBuffer> {
        self.buffers.get(src).copied().flatten()
    }

    pub fn is_empty(&self) -> bool {
        (0..self.sources()).all(|s| self.lines(s).is_empty())
    }

    /// The entry's first line: its time and source stand for the whole entry.
    pub fn head(&self, entry: Entry) -> &'a Line {
        &self.lines(entry.src)[entry.head]
    }

    /// The entry's lines: the head, then its continuations.
    pub fn chunks(&self, entry: Entry) -> impl Iterator<Item = &'a Line> + 'a {
        self.lines(entry.src).range(entry.head..entry.end)
    }

    pub fn key(&self, entry: Entry) -> Key {
        let head = self.head(entry);
        (self.sort_time(head), entry.src, head.id)
    }

    /// The time a line sorts by. With one source, none: its lines keep the
    /// order they came in, whatever its clock did.
    pub fn sort_time(&self, line: &Line) -> u64 {
        match self.sources() {
            1 => 0,
            _ => line.at_ms,
        }
    }

    /// The entry holding line `index` of `src` (which must exist). A
    /// continuation whose head has gone from the buffer starts its own entry.
    pub fn entry_at(&self, src: usize, index: usize) -> Entry {
        let lines = self.lines(src);
        let mut head = index;
        while head > 0 && lines[head].continued {
            head -= 1;
        }
        let mut end = index + 1;
        while end < lines.len() && lines[end].continued {
            end += 1;
        }
        Entry { src, head, end }
    }

    /// The entry holding line `id` of `src`, if it is still kept.
    pub fn find(&self, src: usize, id: u64) -> Option<Entry> {
        let index = self.buffer(src)?.index_of(id)?;
        Some(self.entry_at(src, index))
    }

    pub fn first(&self) -> Option<Entry> {
        (0..self.sources())
            .filter(|&s| !self.lines(s).is_empty())
            .map(|s| self.entry_at(s, 0))
            .min_by_key(|e| self.key(*e))
    }

    pub fn last(&self) -> Option<Entry> {
        (0..self.sources())
            .filter_map(|s| self.lines(s).len().checked_sub(1).map(|i| (s, i)))
            .map(|(s, i)| self.entry_at(s, i))
            .max_by_key(|e| self.key(*e))
    }

    /// The entry shown just above `entry`.
    pub fn prev(&self, entry: Entry) -> Option<Entry> {
        let key = self.key(entry);
        (0..self.sources())
            .filter_map(|s| {
                if s == entry.src {
                    // A console's own lines keep their order, whatever its clock did.
                    return entry.head.checked_sub(1).map(|i| self.entry_at(s, i));
                }
                let i = self
                    .lines(s)
                    .partition_point(|l| (l.at_ms, s) < (key.0, key.1));
                let candidate = self.entry_at(s, i.checked_sub(1)?);
                (self.key(candidate) < key).then_some(candidate)
            })
            .max_by_key(|e| self.key(*e))
    }

    /// The entry shown just below `entry`.
    pub fn next(&self, entry: Entry) -> Option<Entry> {
        let key = self.key(entry);
        (0..self.sources())
            .filter_map(|s| {
                let lines = self.lines(s);
                if s == entry.src {
                    return (entry.end < lines.len()).then(|| self.entry_at(s, entry.end));
                }
                let mut i = lines.partition_point(|l| (l.at_ms, s) < (key.0, key.1));
                // Continuations here belong to an entry that sorts before `entry`.
                while i > 0 && i < lines.len() && lines[i].continued {
                    i += 1;
                }
                let candidate = (i < lines.len()).then(|| self.entry_at(s, i))?;
                (self.key(candidate) > key).then_some(candidate)
            })
            .min_by_key(|e| self.key(*e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::fixtures::{label, piece};

    fn push(model: &mut Model, name: &str, seq: u64, at_ms: u64, continued: bool) {
        let name = label(name);
        model.consoles.watch(&name);
        model
            .consoles
            .push(&name, piece(seq, at_ms, format!("{name}{seq}"), continued));
    }

    fn texts(feed: &Feed, mut entry: Option<Entry>, forward: bool) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(e) = entry {
            out.push(feed.chunks(e).map(|l| l.text.as_str()).collect());
            entry = if forward { feed.next(e) } else { feed.prev(e) };
        }
        out
    }

    #[test]
    fn merged_consoles_interleave_by_time_both_ways() {
        let mut model = Model::default();
        push(&mut model, "a", 1, 10, false);
        push(&mut model, "a", 2, 30, false);
        push(&mut model, "a", 3, 31, true);
        push(&mut model, "a", 4, 50, false);
        push(&mut model, "b", 1, 20, false);
        push(&mut model, "b", 2, 30, false);
        push(&mut model, "b", 3, 40, false);
        let feed = Feed::new(&model, &[label("a"), label("b")]);
        let down = texts(&feed, feed.first(), true);
        assert_eq!(down, ["a1", "b1", "a2a3", "b2", "b3", "a4"]);
        let mut up = texts(&feed, feed.last(), false);
        up.reverse();
        assert_eq!(up, down);
    }

    #[test]
    fn one_console_keeps_its_order_even_when_its_clock_goes_back() {
        let mut model = Model::default();
        push(&mut model, "a", 1, 50, false);
        push(&mut model, "a", 2, 10, false);
        push(&mut model, "a", 3, 11, true);
        let feed = Feed::new(&model, &[label("a")]);
        assert_eq!(texts(&feed, feed.first(), true), ["a1", "a2a3"]);
        assert_eq!(texts(&feed, feed.last(), false), ["a2a3", "a1"]);
        assert_eq!(feed.find(0, 2), feed.find(0, 1));
        assert_eq!(feed.find(0, 9), None);
    }

    #[test]
    fn a_continuation_without_its_head_stands_alone() {
        let mut model = Model::default();
        push(&mut model, "a", 7, 10, true);
        push(&mut model, "a", 8, 10, true);
        push(&mut model, "a", 9, 11, false);
        let feed = Feed::new(&model, &[label("a")]);
        assert_eq!(texts(&feed, feed.first(), true), ["a7a8", "a9"]);
    }
}
