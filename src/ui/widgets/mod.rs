//! Pieces drawn over or beside any screen.

pub mod confirm;
pub mod field;
pub mod prompt;
pub mod scrolled;

use ratatui::layout::{Constraint, Flex, Layout, Rect};

/// A `width` x `height` rectangle centred in `area`, clipped to it.
pub fn centred(area: Rect, width: u16, height: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [cell] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    cell
}
