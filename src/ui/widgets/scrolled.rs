//! Lines that may not fit their area, scrolled with the movement keys, with a
//! scroll bar whenever some are out of view.

use crate::ui::keymap::Action;
use crate::ui::theme::Theme;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Scrollbar, ScrollbarOrientation, ScrollbarState};
use std::cell::Cell;

#[derive(Debug, Default)]
pub struct Scrolled {
    offset: usize,
    /// As of the last frame: how many lines fit, and how many there were.
    page: Cell<usize>,
    len: Cell<usize>,
}

impl Scrolled {
    /// The width lines may take in `area`: one column stays for the bar.
    pub fn text_width(area: Rect) -> usize {
        usize::from(area.width.saturating_sub(1))
    }

    /// Scrolls for a movement action; false for any other action.
    pub fn on_action(&mut self, action: Action) -> bool {
        let page = self.page.get().max(1);
        let last = self.len.get().saturating_sub(page);
        self.offset = match action {
            Action::Up => self.offset.saturating_sub(1),
            Action::Down => self.offset.saturating_add(1),
            Action::PageUp => self.offset.saturating_sub(page),
            Action::PageDown => self.offset.saturating_add(page),
            Action::Top => 0,
            Action::Bottom => last,
            _ => return false,
        }
        .min(last);
        true
    }

    /// Draws the lines in view; only those are kept.
    pub fn draw(&self, frame: &mut Frame, area: Rect, lines: Vec<Line<'_>>, theme: &Theme) {
        let height = usize::from(area.height);
        let len = lines.len();
        self.page.set(height);
        self.len.set(len);
        let offset = self.offset.min(len.saturating_sub(height));
        let visible: Vec<Line> = lines.into_iter().skip(offset).take(height).collect();
        let text = Rect {
            width: area.width.saturating_sub(1),
            ..area
        };
        frame.render_widget(Paragraph::new(visible), text);
        if len > height {
            let mut state = ScrollbarState::new(len - height).position(offset);
            let bar = Scrollbar::new(ScrollbarOrientation::VerticalRight).style(theme.dim);
            frame.render_stateful_widget(bar, area, &mut state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn drawn(scroll: &Scrolled, count: usize) -> String {
        let mut terminal = Terminal::new(TestBackend::new(12, 3)).unwrap();
        let lines: Vec<Line> = (0..count)
            .map(|i| Line::from(format!("line {i}")))
            .collect();
        let theme = Theme::new(crate::ui::theme::ThemeName::Default);
        terminal
            .draw(|f| scroll.draw(f, f.area(), lines, &theme))
            .unwrap();
        terminal.backend().to_string()
    }

    #[test]
    fn scrolls_within_the_lines_and_no_further() {
        let mut scroll = Scrolled::default();
        assert!(drawn(&scroll, 10).contains("line 0"));
        assert!(scroll.on_action(Action::PageDown));
        let screen = drawn(&scroll, 10);
        assert!(
            screen.contains("line 3") && !screen.contains("line 2"),
            "{screen}"
        );
        scroll.on_action(Action::Bottom);
        scroll.on_action(Action::Down);
        let screen = drawn(&scroll, 10);
        assert!(
            screen.contains("line 9") && screen.contains("line 7"),
            "{screen}"
        );
        scroll.on_action(Action::Top);
        assert!(drawn(&scroll, 10).contains("line 0"));
        assert!(!scroll.on_action(Action::Select));
    }

    #[test]
    fn no_bar_when_everything_fits() {
        let scroll = Scrolled::default();
        let screen = drawn(&scroll, 3);
        assert!(!screen.contains('▲') && !screen.contains('▼'), "{screen}");
        assert!(
            drawn(&scroll, 4).contains('▼'),
            "a bar once one line is out of view"
        );
    }
}
