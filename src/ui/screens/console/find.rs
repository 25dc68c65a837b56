//! `/` find in a pane: every match of the text in the pane's lines, kept up
//! to date as lines come and go, so a frame never scans anything.
//!
//! A new search text scans the lines once; after that only new lines are
//! scanned (on each model change, not each frame), and matches in lines that
//! fell out of the buffer are dropped from the front. Matching is smart-case:
//! a text with no capital letter ignores (ASCII) case.

use super::feed::{Feed, Key};
use memchr::memmem::Finder;
use std::collections::VecDeque;

/// One match: bytes `start..end` of line `id`'s (escaped) text, in the entry
/// headed by line `head_id`, which sorts at `head_at` (see `Feed::sort_time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub id: u64,
    pub start: usize,
    pub end: usize,
    head_at: u64,
    head_id: u64,
}

/// A match and the source (of the pane) it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub src: usize,
    pub at: Match,
}

impl Found {
    /// Where the match sorts among every match of the pane.
    fn key(&self) -> (Key, u64, usize) {
        (
            (self.at.head_at, self.src, self.at.head_id),
            self.at.id,
            self.at.start,
        )
    }
}

/// The matches in one source, and how far its lines have been scanned.
#[derive(Debug, Default)]
struct Source {
    matches: VecDeque<Match>,
    /// The last line scanned, by id.
    scanned: Option<u64>,
    generation: Option<u64>,
    /// The head of the entry the last scanned line belongs to, for a
    /// continuation that comes next.
    head: (u64, u64),
}

#[derive(Default)]
pub struct Find {
    query: String,
    finder: Option<Finder<'static>>,
    /// Ignore ASCII case: the query has no capital letter.
    fold: bool,
    sources: Vec<Source>,
    current: Option<Found>,
    /// A line folded to lower case, reused from line to line.
    folded: Vec<u8>,
}

impl Find {
    pub fn query(&self) -> &str {
        &self.query
    }

    pub fn is_active(&self) -> bool {
        self.finder.is_some()
    }

    /// Puts the find away.
    pub fn clear(&mut self) {
        *self = Find::default();
    }

    /// Takes a new search text and scans every line for it.
    pub fn set_query(&mut self, query: &str, feed: &Feed) {
        self.query = query.to_string();
        self.fold = !query.chars().any(char::is_uppercase);
        self.finder = (!query.is_empty()).then(|| {
            let needle = match self.fold {
                true => query.to_ascii_lowercase(),
                false => query.to_string(),
            };
            Finder::new(needle.as_bytes()).into_owned()
        });
        self.sources = (0..feed.sources()).map(|_| Source::default()).collect();
        self.current = None;
        self.refresh(feed);
    }

    /// Scans the lines that arrived since the last call and forgets matches
    /// in lines that are gone; cheap when nothing changed.
    pub fn refresh(&mut self, feed: &Feed) {
        let Some(finder) = &self.finder else {
            return;
        };
        for (src, source) in self.sources.iter_mut().enumerate() {
            let generation = feed.buffer(src).map(|b| b.generation());
            if generation == source.generation {
                continue;
            }
            source.generation = generation;
            let lines = feed.lines(src);
            let oldest = lines.front().map_or(u64::MAX, |l| l.id);
            while source.matches.front().is_some_and(|m| m.id < oldest) {
                source.matches.pop_front();
            }
            let from = source
                .scanned
                .map_or(0, |s| lines.partition_point(|l| l.id <= s));
            for line in lines.range(from..) {
                if !line.continued || source.scanned.is_none() {
                    source.head = (feed.sort_time(line), line.id);
                }
                source.scanned = Some(line.id);
                let haystack = if self.fold {
                    self.folded.clear();
                    self.folded
                        .extend(line.text.bytes().map(|b| b.to_ascii_lowercase()));
                    self.folded.as_slice()
                } else {
                    line.text.as_bytes()
                };
                let (head_at, head_id) = source.head;
                source
                    .matches
                    .extend(finder.find_iter(haystack).map(|start| Match {
                        id: line.id,
                        start,
                        end: start + finder.needle().len(),
                        head_at,
                        head_id,
                    }));
            }
        }
        if self.current.is_some_and(|c| !self.exists(c)) {
            self.current = None;
        }
    }

    fn exists(&self, found: Found) -> bool {
        self.sources.get(found.src).is_some_and(|s| {
            s.matches
                .binary_search_by_key(&key_in(&found.at), key_in)
                .is_ok()
        })
    }

    pub fn count(&self) -> usize {
        self.sources.iter().map(|s| s.matches.len()).sum()
    }

    pub fn current(&self) -> Option<Found> {
        self.current
    }

    /// The current match's place among all, from 1.
    pub fn position(&self) -> Option<usize> {
        let current = self.current?;
        let before: usize = self
            .sources
            .iter()
            .enumerate()
            .map(|(src, s)| {
                s.matches
                    .partition_point(|m| Found { src, at: *m }.key() < current.key())
            })
            .sum();
        Some(before + 1)
    }

    /// The matches in line `id` of source `src`, by position.
    pub fn in_line(&self, src: usize, id: u64) -> impl Iterator<Item = &Match> {
        let matches = self.sources.get(src).map(|s| &s.matches);
        let from = matches.map_or(0, |m| m.partition_point(|m| m.id < id));
        matches
            .into_iter()
            .flat_map(move |m| m.range(from..))
            .take_while(move |m| m.id == id)
    }

    /// Makes the match after the current one current (wrapping to the first);
    /// true when it wrapped.
    pub fn next(&mut self) -> bool {
        self.step(true)
    }

    /// Makes the match before the current one current (wrapping to the last);
    /// true when it wrapped.
    pub fn previous(&mut self) -> bool {
        self.step(false)
    }

    fn step(&mut self, forward: bool) -> bool {
        let step = self.current.and_then(|c| self.beside(c, forward));
        let wrapped = self.current.is_some() && step.is_none();
        self.current = step.or_else(|| self.end(!forward));
        wrapped
    }

    /// The nearest match after (or before) `current`, if any.
    fn beside(&self, current: Found, forward: bool) -> Option<Found> {
        let key = current.key();
        let candidates = self.sources.iter().enumerate().filter_map(|(src, s)| {
            let i = s
                .matches
                .partition_point(|m| Found { src, at: *m }.key() <= key);
            let i = match forward {
                true => i,
                false => s
                    .matches
                    .partition_point(|m| Found { src, at: *m }.key() < key)
                    .checked_sub(1)?,
            };
            s.matches.get(i).map(|m| Found { src, at: *m })
        });
        match forward {
            true => candidates.min_by_key(Found::key),
            false => candidates.max_by_key(Found::key),
        }
    }

    /// The first (or last) match of all.
    fn end(&self, last: bool) -> Option<Found> {
        let ends = self.sources.iter().enumerate().filter_map(|(src, s)| {
            let m = if last {
                s.matches.back()
            } else {
                s.matches.front()
            };
            m.map(|m| Found { src, at: *m })
        });
        match last {
            true => ends.max_by_key(Found::key),
            false => ends.min_by_key(Found::key),
        }
    }

    /// Picks the match an operator most likely wants after typing: the last
    /// one in or above the entry keyed `bottom` (what the pane shows at its
    /// bottom row), else the first one below it.
    pub fn pick_near(&mut self, bottom: Option<Key>) {
        let Some(bottom) = bottom else {
            self.current = self.end(true);
            return;
        };
        let fence = Found {
            src: bottom.1,
            at: Match {
                id: u64::MAX,
                start: usize::MAX,
                end: usize::MAX,
                head_at: bottom.0,
                head_id: bottom.2,
            },
        };
        self.current = self
            .beside(fence, false)
            .or_else(|| self.beside(fence, true));
    }
}

fn key_in(m: &Match) -> (u64, usize) {
    (m.id, m.start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::label::Label;
    use crate::ui::fixtures::{label, line};
    use crate::ui::model::Model;

    fn push(model: &mut Model, name: &str, seq: u64, at_ms: u64, text: &str) {
        let name = label(name);
        model.consoles.watch(&name);
        model.consoles.push(&name, line(seq, at_ms, text));
    }

    fn names(list: &[&str]) -> Vec<Label> {
        list.iter().map(|n| label(n)).collect()
    }

    fn walk(find: &mut Find, forward: bool, steps: usize) -> Vec<(usize, u64, usize)> {
        (0..steps)
            .map(|_| {
                match forward {
                    true => find.next(),
                    false => find.previous(),
                };
                let c = find.current().unwrap();
                (c.src, c.at.id, c.at.start)
            })
            .collect()
    }

    #[test]
    fn smart_case_finds_every_match_once() {
        let mut model = Model::default();
        push(&mut model, "a", 1, 10, "Error error ERROR");
        push(&mut model, "a", 2, 20, "errorerror");
        let names = names(&["a"]);
        let mut find = Find::default();
        find.set_query("error", &Feed::new(&model, &names));
        assert_eq!(find.count(), 5);
        find.set_query("Error", &Feed::new(&model, &names));
        assert_eq!(find.count(), 1);
        let spans: Vec<(usize, usize)> = find.in_line(0, 0).map(|m| (m.start, m.end)).collect();
        assert_eq!(spans, [(0, 5)]);
    }

    #[test]
    fn next_and_previous_wrap_around_in_merged_order() {
        let mut model = Model::default();
        push(&mut model, "a", 1, 10, "x");
        push(&mut model, "b", 1, 15, "x x");
        push(&mut model, "a", 2, 20, "x");
        let names = names(&["a", "b"]);
        let mut find = Find::default();
        find.set_query("x", &Feed::new(&model, &names));
        assert_eq!(find.position(), None);
        let forward = walk(&mut find, true, 5);
        assert_eq!(
            forward,
            [(0, 0, 0), (1, 0, 0), (1, 0, 2), (0, 1, 0), (0, 0, 0)]
        );
        assert_eq!(find.position(), Some(1));
        assert!(find.previous(), "going back from the first wraps");
        assert_eq!(find.position(), Some(4));
        assert_eq!(walk(&mut find, false, 2), [(1, 0, 2), (1, 0, 0)]);
        assert_eq!(find.position(), Some(2));
    }

    #[test]
    fn new_lines_are_scanned_and_gone_ones_forgotten() {
        let mut model = Model::default();
        push(&mut model, "a", 1, 10, "x");
        let names = names(&["a"]);
        let mut find = Find::default();
        find.set_query("x", &Feed::new(&model, &names));
        find.next();
        push(&mut model, "a", 2, 20, "xx");
        find.refresh(&Feed::new(&model, &names));
        assert_eq!(find.count(), 3);
        assert_eq!(find.position(), Some(1));
        model.consoles.get_mut(&label("a")).unwrap().clear();
        find.refresh(&Feed::new(&model, &names));
        assert_eq!(find.count(), 0);
        assert_eq!(find.current(), None);
        push(&mut model, "a", 3, 30, "x");
        find.refresh(&Feed::new(&model, &names));
        assert_eq!(find.count(), 1);
    }

    #[test]
    fn the_pick_after_typing_is_the_nearest_match_above_the_bottom() {
        let mut model = Model::default();
        for seq in 1..=5 {
            push(
                &mut model,
                "a",
                seq,
                seq * 10,
                if seq % 2 == 1 { "x" } else { "-" },
            );
        }
        let names = names(&["a"]);
        let mut find = Find::default();
        find.set_query("x", &Feed::new(&model, &names));
        // One console sorts by line id alone; line `seq` has id `seq - 1`.
        find.pick_near(Some((0, 0, 3)));
        assert_eq!(find.current().map(|c| c.at.id), Some(2));
        find.pick_near(Some((0, 0, 0)));
        assert_eq!(find.current().map(|c| c.at.id), Some(0));
        find.pick_near(None);
        assert_eq!(find.current().map(|c| c.at.id), Some(4));
    }
}
