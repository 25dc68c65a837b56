//! Laying out and painting console entries, cell by cell, straight into the
//! frame's buffer: only the entries on screen are touched, and no widget
//! holding every line is ever built.
//!
//! The text drawn is only ever `Line::text` (escaped on arrival) and strings
//! fulmar makes itself (timestamps, names, `---`), so no byte a unikernel
//! wrote reaches the terminal as a control sequence.

use super::clock::Clock;
use super::feed::{Entry, Feed};
use crate::api::console::LineSource;
use crate::ui::theme::Theme;
use ratatui::buffer::{Buffer, CellWidth};
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::Span;
use std::ops::ControlFlow;

/// Tab stops, every 8 cells as terminals have them.
const TAB: usize = 8;
/// What fulmar's own lines ("--- exited 2 ---") are wrapped in.
const FULMAR_OPEN: &str = "--- ";
const FULMAR_CLOSE: &str = " ---";
/// Between a source's name and its line in a merged pane.
const SEPARATOR: &str = " │ ";

/// How an entry's text runs into rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// Cells per row for the text (beside the gutter).
    pub width: usize,
    pub wrap: bool,
    /// Without wrap, the cells scrolled off to the left.
    pub shift: usize,
}

/// A highlighted span of one line's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub id: u64,
    pub start: usize,
    pub end: usize,
    pub current: bool,
}

/// A grapheme, as it is to be drawn.
#[derive(Clone, Copy)]
struct Grapheme<'s> {
    symbol: &'s str,
    width: usize,
    style: Style,
    /// Which byte of which line it shows; `None` for fulmar's own `---`.
    at: Option<(u64, usize)>,
}

/// A grapheme's place: `row` of the entry, `col` of the text area.
struct Placed<'s> {
    row: usize,
    col: usize,
    grapheme: Grapheme<'s>,
}

/// Where the next grapheme goes.
struct Cursor {
    flow: Flow,
    row: usize,
    col: usize,
    /// Cells since the entry's start, as if unwrapped (for tabs and shift).
    abs: usize,
}

impl Cursor {
    fn new(flow: Flow) -> Cursor {
        Cursor {
            flow: Flow {
                width: flow.width.max(1),
                ..flow
            },
            row: 0,
            col: 0,
            abs: 0,
        }
    }

    fn put(
        &mut self,
        grapheme: Grapheme,
        visit: &mut impl FnMut(Placed) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let width = grapheme.width;
        let abs = self.abs;
        self.abs += width;
        if self.flow.wrap {
            if self.col + width > self.flow.width && self.col > 0 {
                self.row += 1;
                self.col = 0;
            }
            let col = self.col;
            self.col += width;
            return visit(Placed {
                row: self.row,
                col,
                grapheme,
            });
        }
        let Some(col) = abs.checked_sub(self.flow.shift) else {
            return ControlFlow::Continue(());
        };
        if col + width > self.flow.width {
            return ControlFlow::Break(());
        }
        visit(Placed {
            row: 0,
            col,
            grapheme,
        })
    }
}

/// The styles an entry is painted with.
pub struct Paint {
    text: Style,
    fulmar: Style,
    matched: Style,
    current: Style,
}

impl Paint {
    pub fn new(theme: &Theme) -> Paint {
        Paint {
            text: theme.text,
            fulmar: theme.fulmar,
            matched: theme.text.patch(theme.matched),
            current: theme.text.patch(theme.selected),
        }
    }

    /// For laying out without drawing.
    const PLAIN: Paint = Paint {
        text: Style::new(),
        fulmar: Style::new(),
        matched: Style::new(),
        current: Style::new(),
    };
}

/// Runs `entry` through `flow`, calling `visit` for each grapheme until it
/// says stop; returns the rows it took (when it ran to the end).
fn lay_out(
    feed: &Feed,
    entry: Entry,
    flow: Flow,
    paint: &Paint,
    marks: &[Mark],
    mut visit: impl FnMut(Placed) -> ControlFlow<()>,
) -> usize {
    let mut cursor = Cursor::new(flow);
    let fulmar = feed.head(entry).source == LineSource::Fulmar;
    let style = if fulmar { paint.fulmar } else { paint.text };
    let mut put =
        |text: &str, id, marks| piece(text, id, style, marks, paint, &mut cursor, &mut visit);
    let mut run = || -> ControlFlow<()> {
        if fulmar {
            put(FULMAR_OPEN, None, &[])?;
        }
        for chunk in feed.chunks(entry) {
            let from = marks.partition_point(|m| m.id < chunk.id);
            let to = marks.partition_point(|m| m.id <= chunk.id);
            put(
                &chunk.text,
                Some(chunk.id),
                marks.get(from..to).unwrap_or_default(),
            )?;
        }
        if fulmar {
            put(FULMAR_CLOSE, None, &[])?;
        }
        ControlFlow::Continue(())
    };
    let _ = run();
    cursor.row + 1
}

/// Lays out one piece of text (of line `id`, if it is one); `marks` are
/// byte ranges of it, in order.
fn piece(
    text: &str,
    id: Option<u64>,
    style: Style,
    marks: &[Mark],
    paint: &Paint,
    cursor: &mut Cursor,
    visit: &mut impl FnMut(Placed) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let mut next_mark = 0;
    let mut style_at = |at: usize| {
        while marks.get(next_mark).is_some_and(|m| m.end <= at) {
            next_mark += 1;
        }
        match marks.get(next_mark) {
            Some(m) if m.start <= at && m.current => paint.current,
            Some(m) if m.start <= at => paint.matched,
            _ => style,
        }
    };
    let mut offset = 0;
    for (i, segment) in text.split('\t').enumerate() {
        if i > 0 {
            let tab = Grapheme {
                symbol: " ",
                width: 1,
                style: style_at(offset - 1),
                at: id.map(|i| (i, offset - 1)),
            };
            for _ in 0..TAB - cursor.abs % TAB {
                cursor.put(tab, visit)?;
            }
        }
        each_grapheme(segment, |start, symbol| {
            let width = usize::from(symbol.cell_width());
            if width == 0 {
                return ControlFlow::Continue(());
            }
            let at = offset + start;
            let grapheme = Grapheme {
                symbol,
                width,
                style: style_at(at),
                at: id.map(|i| (i, at)),
            };
            cursor.put(grapheme, visit)
        })?;
        offset += segment.len() + 1;
    }
    ControlFlow::Continue(())
}

/// Calls `f` with each grapheme of `text` (escaped: no control characters)
/// and the byte it starts at. ASCII, the usual console line, is one byte a
/// grapheme and skips the Unicode segmentation.
fn each_grapheme(text: &str, mut f: impl FnMut(usize, &str) -> ControlFlow<()>) -> ControlFlow<()> {
    if text.is_ascii() {
        for start in 0..text.len() {
            f(start, text.get(start..start + 1).unwrap_or_default())?;
        }
        return ControlFlow::Continue(());
    }
    let span = Span::raw(text);
    for grapheme in span.styled_graphemes(Style::default()) {
        // The symbol is a slice of `text`: its address says where.
        f(
            grapheme.symbol.as_ptr() as usize - text.as_ptr() as usize,
            grapheme.symbol,
        )?;
    }
    ControlFlow::Continue(())
}

/// The rows `entry` takes. Printable ASCII (the usual console line) is
/// counted without walking its characters.
pub fn height(feed: &Feed, entry: Entry, flow: Flow) -> usize {
    if !flow.wrap {
        return 1;
    }
    let fulmar = feed.head(entry).source == LineSource::Fulmar;
    let mut cells = if fulmar {
        FULMAR_OPEN.len() + FULMAR_CLOSE.len()
    } else {
        0
    };
    for chunk in feed.chunks(entry) {
        if !chunk.text.is_ascii() || chunk.text.contains('\t') {
            return lay_out(feed, entry, flow, &Paint::PLAIN, &[], |_| {
                ControlFlow::Continue(())
            });
        }
        cells += chunk.text.len();
    }
    cells.div_ceil(flow.width.max(1)).max(1)
}

/// Where in its entry (row, and cell of the text area as if unshifted) byte
/// `at` of line `id` lands.
pub fn locate(feed: &Feed, entry: Entry, flow: Flow, id: u64, at: usize) -> (usize, usize) {
    let unshifted = Flow { shift: 0, ..flow };
    let mut found = (0, 0);
    lay_out(feed, entry, unshifted, &Paint::PLAIN, &[], |placed| {
        if placed.grapheme.at.is_some_and(|place| place >= (id, at)) {
            found = (placed.row, placed.col);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    found
}

/// How the rows of a pane look beside the text: timestamp, source name.
pub struct Gutter<'n> {
    pub timestamps: bool,
    /// The sources' names, when the pane merges several.
    pub names: Option<&'n [&'n str]>,
    pub name_width: usize,
}

impl Gutter<'_> {
    pub fn width(&self) -> usize {
        let clock = if self.timestamps { Clock::WIDTH + 1 } else { 0 };
        let name = match self.names {
            Some(_) => self.name_width + SEPARATOR.chars().count(),
            None => 0,
        };
        clock + name
    }

    /// Draws the gutter of one row: in full on an entry's first row, and on
    /// the rows that continue it only the separator, so they read as one.
    fn draw(
        &self,
        buf: &mut Buffer,
        x: u16,
        y: u16,
        first: Option<&crate::ui::consoles::Line>,
        src: usize,
        theme: &Theme,
    ) {
        let mut x = x;
        if self.timestamps {
            if let Some(line) = first {
                buf.set_string(x, y, Clock::of(line.at_ms).as_str(), theme.dim);
            }
            x = x.saturating_add((Clock::WIDTH + 1) as u16);
        }
        if let Some(names) = self.names {
            if first.is_some() {
                let name = names.get(src).copied().unwrap_or_default();
                buf.set_string(x, y, name, theme.key);
            }
            let at = x.saturating_add(self.name_width as u16);
            buf.set_string(at, y, SEPARATOR, theme.border);
        }
    }
}

/// An entry on screen: its rows from `skip` on, `rows` of them, from screen row `y`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub entry: Entry,
    pub skip: usize,
    pub rows: usize,
    pub y: usize,
}

/// How a pane draws its entries in one frame.
pub struct Look<'a> {
    pub gutter: Gutter<'a>,
    pub flow: Flow,
    pub theme: &'a Theme,
}

/// Paints `placements` into `area` of the buffer; `marks_of` gives each
/// entry's highlights (into a buffer reused from entry to entry).
pub fn draw(
    buf: &mut Buffer,
    area: Rect,
    feed: &Feed,
    placements: &[Placement],
    look: &Look,
    mut marks_of: impl FnMut(Entry, &mut Vec<Mark>),
) {
    let Look {
        gutter,
        flow,
        theme,
    } = look;
    let flow = *flow;
    let paint = Paint::new(theme);
    let text_x = area.x.saturating_add(gutter.width() as u16);
    let mut marks = Vec::new();
    for placement in placements {
        let Placement {
            entry,
            skip,
            rows,
            y,
        } = *placement;
        let top = area.y.saturating_add(y as u16);
        for row in 0..rows {
            let first = (skip + row == 0).then(|| feed.head(entry));
            gutter.draw(
                buf,
                area.x,
                top.saturating_add(row as u16),
                first,
                entry.src,
                theme,
            );
        }
        marks.clear();
        marks_of(entry, &mut marks);
        lay_out(feed, entry, flow, &paint, &marks, |placed| {
            if placed.row < skip {
                return ControlFlow::Continue(());
            }
            let row = placed.row - skip;
            if row >= rows {
                return ControlFlow::Break(());
            }
            let Placed { col, grapheme, .. } = placed;
            if col + grapheme.width > flow.width {
                return ControlFlow::Continue(());
            }
            let x = text_x.saturating_add(col as u16);
            let y = top.saturating_add(row as u16);
            if let Some(cell) = buf.cell_mut((x, y)) {
                cell.set_symbol(grapheme.symbol).set_style(grapheme.style);
            }
            // A wide grapheme covers the cells after it.
            for hidden in 1..grapheme.width {
                if let Some(cell) = buf.cell_mut((x.saturating_add(hidden as u16), y)) {
                    cell.reset();
                }
            }
            ControlFlow::Continue(())
        });
    }
}

/// Appends `entry` to `out` as one line of plain text, as the pane shows it
/// unwrapped: for saving to a file.
pub fn plain(feed: &Feed, entry: Entry, gutter: &Gutter, out: &mut String) {
    let head = feed.head(entry);
    if gutter.timestamps {
        out.push_str(Clock::of(head.at_ms).as_str());
        out.push(' ');
    }
    if let Some(names) = gutter.names {
        let name = names.get(entry.src).copied().unwrap_or_default();
        out.push_str(name);
        out.extend(std::iter::repeat_n(
            ' ',
            gutter.name_width.saturating_sub(name.len()),
        ));
        out.push_str(SEPARATOR);
    }
    let fulmar = head.source == LineSource::Fulmar;
    if fulmar {
        out.push_str(FULMAR_OPEN);
    }
    for chunk in feed.chunks(entry) {
        out.push_str(&chunk.text);
    }
    if fulmar {
        out.push_str(FULMAR_CLOSE);
    }
    out.push('\n');
}
