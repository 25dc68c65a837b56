//! One console pane's state: what it follows, where it is scrolled to, how it
//! wraps, and its find. Scrolling is kept as an anchor (the entry at the
//! bottom row, by line id), so lines that arrive or fall out of the
//! buffer never move what the operator is reading.

use super::feed::{Entry, Feed};
use super::find::{Find, Found};
use super::render::{self, Flow, Gutter, Placement};
use crate::api::label::Label;
use std::cell::Cell;

/// Wrapped rows of a long line stay beside the gutter unless it leaves the
/// text less than this.
const MIN_TEXT_WIDTH: usize = 10;

/// The bottom row of a pane: row `below` rows up from the last row of `entry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spot {
    pub entry: Entry,
    pub below: usize,
}

/// A [`Spot`] that survives changes to the buffer: by source and line id,
/// not by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Anchor {
    src: usize,
    id: u64,
    below: usize,
}

pub struct Pane {
    /// Its consoles: one, or all of the view's when merged.
    pub names: Vec<Label>,
    pub follow: bool,
    pub wrap: bool,
    pub timestamps: bool,
    /// Without wrap, the cells scrolled off to the left.
    shift: usize,
    /// The bottom row when not following; `None` is the very top.
    anchor: Option<Anchor>,
    pub find: Find,
    /// Text width and rows at the last frame, for scrolling by pages.
    size: Cell<(usize, usize)>,
}

impl Pane {
    pub fn new(names: Vec<Label>) -> Pane {
        Pane {
            names,
            follow: true,
            wrap: true,
            timestamps: false,
            shift: 0,
            anchor: None,
            find: Find::default(),
            size: Cell::new((80, 20)),
        }
    }

    pub fn merged(&self) -> bool {
        self.names.len() > 1
    }

    pub fn shift(&self) -> usize {
        self.shift
    }

    fn rows(&self) -> usize {
        self.size.get().1.max(1)
    }

    pub fn flow(&self) -> Flow {
        Flow {
            width: self.size.get().0.max(1),
            wrap: self.wrap,
            shift: if self.wrap { 0 } else { self.shift },
        }
    }

    /// The gutter as it fits in `width` cells: timestamps go first when
    /// space is short, names (which tell merged lines apart) last.
    pub fn gutter<'n>(&self, names: &'n [&'n str], width: usize) -> Gutter<'n> {
        let mut gutter = Gutter {
            timestamps: self.timestamps,
            names: self.merged().then_some(names),
            name_width: names.iter().map(|n| n.len()).max().unwrap_or(0),
        };
        if gutter.width() + MIN_TEXT_WIDTH > width {
            gutter.timestamps = false;
        }
        if gutter.width() + MIN_TEXT_WIDTH > width {
            gutter.names = None;
        }
        gutter
    }

    /// Remembers the text area a frame drew, for the next scroll.
    pub fn drawn(&self, text_width: usize, rows: usize) {
        self.size.set((text_width, rows));
    }

    fn height(&self, feed: &Feed, entry: Entry) -> usize {
        render::height(feed, entry, self.flow())
    }

    /// The pane's bottom row now.
    pub fn bottom(&self, feed: &Feed) -> Option<Spot> {
        if self.follow {
            return feed.last().map(|entry| Spot { entry, below: 0 });
        }
        let Some(anchor) = self.anchor else {
            return self.top(feed);
        };
        match feed.find(anchor.src, anchor.id) {
            Some(entry) => {
                let below = anchor.below.min(self.height(feed, entry) - 1);
                Some(self.clamp_top(feed, Spot { entry, below }))
            }
            // What it showed fell out of the buffer: the oldest is nearest.
            None => self.top(feed),
        }
    }

    /// The bottom row when the first line is on the top row.
    fn top(&self, feed: &Feed) -> Option<Spot> {
        let mut entry = feed.first()?;
        let mut left = self.rows();
        loop {
            let height = self.height(feed, entry);
            if height >= left {
                return Some(Spot {
                    entry,
                    below: height - left,
                });
            }
            left -= height;
            match feed.next(entry) {
                Some(next) => entry = next,
                None => return Some(Spot { entry, below: 0 }),
            }
        }
    }

    /// `spot`, or lower if it would leave the pane's top rows empty.
    fn clamp_top(&self, feed: &Feed, spot: Spot) -> Spot {
        let mut rows = self.height(feed, spot.entry) - spot.below;
        let mut entry = spot.entry;
        while rows < self.rows() {
            match feed.prev(entry) {
                Some(prev) => {
                    rows += self.height(feed, prev);
                    entry = prev;
                }
                None => return self.top(feed).unwrap_or(spot),
            }
        }
        spot
    }

    fn hold(&mut self, feed: &Feed, spot: Spot) {
        self.follow = false;
        self.anchor = Some(Anchor {
            src: spot.entry.src,
            id: feed.head(spot.entry).id,
            below: spot.below,
        });
    }

    /// The entries on screen, top to bottom, for a pane whose bottom row is
    /// `spot`: found by walking up from it only as far as the pane is high.
    pub fn placements(&self, feed: &Feed, spot: Spot) -> Vec<Placement> {
        let rows = self.rows();
        let mut above = vec![(spot.entry, self.height(feed, spot.entry))];
        let mut filled = above[0].1 - spot.below;
        let mut entry = spot.entry;
        while filled < rows {
            let Some(prev) = feed.prev(entry) else { break };
            let height = self.height(feed, prev);
            filled += height;
            above.push((prev, height));
            entry = prev;
        }
        let mut skip = filled.saturating_sub(rows);
        let mut placements = Vec::with_capacity(above.len());
        let mut y = 0;
        let mut place = |entry: Entry, height: usize, skip: usize| {
            let count = (height - skip).min(rows - y);
            placements.push(Placement {
                entry,
                skip,
                rows: count,
                y,
            });
            y += count;
            y < rows
        };
        for &(entry, height) in above.iter().rev() {
            if !place(entry, height, skip) {
                return placements;
            }
            skip = 0;
        }
        // The top is reached and rows are left: what comes below fills them.
        let mut entry = spot.entry;
        while let Some(next) = feed.next(entry) {
            if !place(next, self.height(feed, next), 0) {
                break;
            }
            entry = next;
        }
        placements
    }

    /// Up by `n` rows; that stops following.
    pub fn up(&mut self, feed: &Feed, mut n: usize) {
        let Some(mut spot) = self.bottom(feed) else {
            self.follow = false;
            return;
        };
        loop {
            let height = self.height(feed, spot.entry);
            let above = height - 1 - spot.below;
            if above >= n {
                spot.below += n;
                break;
            }
            n -= above + 1;
            match feed.prev(spot.entry) {
                Some(entry) => spot = Spot { entry, below: 0 },
                None => {
                    spot.below = height - 1;
                    break;
                }
            }
        }
        let spot = self.clamp_top(feed, spot);
        self.hold(feed, spot);
    }

    /// Down by `n` rows, stopping at the last one (following stays as it was).
    pub fn down(&mut self, feed: &Feed, n: usize) {
        if self.follow {
            return;
        }
        if let Some(spot) = self.bottom(feed) {
            let spot = self.lower(feed, spot, n);
            self.hold(feed, spot);
        }
    }

    fn lower(&self, feed: &Feed, mut spot: Spot, mut n: usize) -> Spot {
        loop {
            if spot.below >= n {
                spot.below -= n;
                return spot;
            }
            n -= spot.below + 1;
            match feed.next(spot.entry) {
                Some(entry) => {
                    let below = self.height(feed, entry) - 1;
                    spot = Spot { entry, below };
                }
                None => return Spot { below: 0, ..spot },
            }
        }
    }

    pub fn page(&self) -> usize {
        self.rows().saturating_sub(1).max(1)
    }

    pub fn go_top(&mut self) {
        self.follow = false;
        self.anchor = None;
    }

    pub fn go_bottom(&mut self) {
        self.follow = true;
        self.anchor = None;
    }

    /// Following on or off; off keeps the view where it is.
    pub fn toggle_follow(&mut self, feed: &Feed) {
        if self.follow {
            match self.bottom(feed) {
                Some(spot) => self.hold(feed, spot),
                None => self.go_top(),
            }
        } else {
            self.go_bottom();
        }
    }

    /// Wrap on or off, keeping the same entry at the bottom.
    pub fn toggle_wrap(&mut self, feed: &Feed) {
        let spot = (!self.follow).then(|| self.bottom(feed)).flatten();
        self.wrap = !self.wrap;
        self.shift = 0;
        if let Some(spot) = spot {
            self.hold(feed, Spot { below: 0, ..spot });
        }
    }

    /// Without wrap, moves the text sideways by half the pane.
    pub fn sideways(&mut self, right: bool) {
        if self.wrap {
            return;
        }
        let step = (self.flow().width / 2).max(1);
        self.shift = match right {
            true => self.shift.saturating_add(step),
            false => self.shift.saturating_sub(step),
        };
    }

    /// Shows the current match: scrolls (and without wrap, shifts) only
    /// when it is not on screen already, then puts it mid-pane.
    pub fn reveal(&mut self, feed: &Feed, found: Found) {
        let Some(entry) = feed.find(found.src, found.at.id) else {
            return;
        };
        let flow = self.flow();
        let (row, col) = render::locate(feed, entry, flow, found.at.id, found.at.start);
        let length = found.at.end - found.at.start;
        if !self.wrap && (col < self.shift || col + length > self.shift + flow.width) {
            self.shift = col.saturating_sub(flow.width / 3);
        }
        let on_screen = self.bottom(feed).is_some_and(|bottom| {
            self.placements(feed, bottom)
                .iter()
                .any(|p| p.entry == entry && (p.skip..p.skip + p.rows).contains(&row))
        });
        if on_screen {
            return;
        }
        let height = self.height(feed, entry);
        let at = Spot {
            entry,
            below: height - 1 - row.min(height - 1),
        };
        let spot = self.lower(feed, at, self.rows() / 2);
        let spot = self.clamp_top(feed, spot);
        self.hold(feed, spot);
    }

    /// After Clear: nothing is left to hold on to.
    pub fn cleared(&mut self) {
        self.go_bottom();
        self.shift = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::fixtures::{label, line};
    use crate::ui::model::Model;

    fn model(lines: &[&str]) -> Model {
        let mut model = Model::default();
        let name = label("a");
        model.consoles.watch(&name);
        for (i, text) in lines.iter().enumerate() {
            model.consoles.push(&name, line(i as u64 + 1, 0, text));
        }
        model
    }

    /// The texts on screen, a row each.
    fn screen(pane: &Pane, feed: &Feed) -> Vec<String> {
        let Some(bottom) = pane.bottom(feed) else {
            return Vec::new();
        };
        pane.placements(feed, bottom)
            .iter()
            .flat_map(|p| {
                let text = &feed.head(p.entry).text;
                (p.skip..p.skip + p.rows).map(move |r| {
                    let width = pane.flow().width;
                    text.chars().skip(r * width).take(width).collect::<String>()
                })
            })
            .collect()
    }

    #[test]
    fn scrolling_counts_wrapped_rows_and_stops_at_both_ends() {
        let model = model(&["a", "bbbbbb", "c", "d"]);
        let feed = Feed::new(&model, &[label("a")]);
        let mut pane = Pane::new(vec![label("a")]);
        pane.drawn(3, 3);
        assert_eq!(screen(&pane, &feed), ["bbb", "c", "d"]);
        pane.up(&feed, 1);
        assert!(!pane.follow);
        assert_eq!(screen(&pane, &feed), ["bbb", "bbb", "c"]);
        pane.up(&feed, 10);
        assert_eq!(screen(&pane, &feed), ["a", "bbb", "bbb"]);
        pane.down(&feed, 1);
        assert_eq!(screen(&pane, &feed), ["bbb", "bbb", "c"]);
        pane.down(&feed, 10);
        assert_eq!(screen(&pane, &feed), ["bbb", "c", "d"]);
        assert!(!pane.follow, "only Bottom turns following back on");
        pane.go_top();
        assert_eq!(screen(&pane, &feed), ["a", "bbb", "bbb"]);
    }

    #[test]
    fn a_short_console_starts_at_the_top() {
        let model = model(&["a", "b"]);
        let feed = Feed::new(&model, &[label("a")]);
        let mut pane = Pane::new(vec![label("a")]);
        pane.drawn(10, 5);
        assert_eq!(screen(&pane, &feed), ["a", "b"]);
        pane.up(&feed, 3);
        assert_eq!(screen(&pane, &feed), ["a", "b"]);
    }

    #[test]
    fn a_held_view_stays_put_as_lines_arrive() {
        let mut model = model(&["1", "2", "3", "4"]);
        let mut pane = Pane::new(vec![label("a")]);
        pane.drawn(10, 2);
        pane.toggle_follow(&Feed::new(&model, &[label("a")]));
        model.consoles.push(&label("a"), line(5, 0, "5"));
        let feed = Feed::new(&model, &[label("a")]);
        assert_eq!(screen(&pane, &feed), ["3", "4"]);
        pane.toggle_follow(&feed);
        assert_eq!(screen(&pane, &feed), ["4", "5"]);
    }
}
