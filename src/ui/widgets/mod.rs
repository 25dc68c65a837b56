//! Pieces drawn over or beside any screen.

pub mod confirm;
pub mod field;
pub mod prompt;
pub mod scrolled;
pub mod selection;

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

/// The first row to show of `len` rows, `visible` at a time, so that row
/// `index` is on screen, moving as little as possible from `offset`.
pub fn keep_in_view(offset: usize, index: usize, visible: usize, len: usize) -> usize {
    let offset = offset.min(len.saturating_sub(visible));
    if index < offset {
        index
    } else if index >= offset + visible {
        index + 1 - visible
    } else {
        offset
    }
}

#[cfg(test)]
mod tests {
    use super::keep_in_view;

    #[test]
    fn the_selected_row_stays_on_screen_with_the_least_scrolling() {
        assert_eq!(keep_in_view(0, 3, 10, 100), 0);
        assert_eq!(keep_in_view(0, 12, 10, 100), 3);
        assert_eq!(keep_in_view(20, 5, 10, 100), 5);
        assert_eq!(keep_in_view(95, 99, 10, 100), 90, "never past the end");
        assert_eq!(keep_in_view(7, 0, 10, 3), 0, "short lists start at the top");
    }
}
