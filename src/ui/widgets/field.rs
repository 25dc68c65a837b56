//! A one-line text field of a form, on ratatui-textarea (typing, the cursor,
//! Emacs editing keys), drawn in the theme's styles with a cursor only while
//! it has the focus.

use crate::ui::theme::Theme;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::Span;
use ratatui_textarea::{CursorMove, TextArea};

#[derive(Clone)]
pub struct Field {
    input: TextArea<'static>,
    /// Shown dimmed while the field is empty.
    placeholder: String,
}

impl Field {
    pub fn new(initial: &str) -> Field {
        let mut field = Field {
            input: TextArea::default(),
            placeholder: String::new(),
        };
        field.set(initial);
        field
    }

    pub fn with_placeholder(mut self, placeholder: impl Into<String>) -> Field {
        self.placeholder = placeholder.into();
        self
    }

    pub fn text(&self) -> &str {
        self.input.lines().first().map_or("", String::as_str)
    }

    /// Replaces the text; the cursor goes to its end.
    pub fn set(&mut self, text: &str) {
        self.input = TextArea::new(vec![text.to_string()]);
        self.input.move_cursor(CursorMove::End);
    }

    /// A key typed into the field; true when it changed the text. Nothing
    /// makes a second line.
    pub fn input(&mut self, key: KeyEvent) -> bool {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let newline = match key.code {
            KeyCode::Enter | KeyCode::Tab | KeyCode::BackTab => true,
            KeyCode::Char('\n' | '\r') => true,
            KeyCode::Char('m') => ctrl,
            _ => false,
        };
        !newline && self.input.input(key)
    }

    pub fn move_cursor(&mut self, to: CursorMove) {
        self.input.move_cursor(to);
    }

    /// Draws the field in `area` (one line), with the cursor when `focused`.
    pub fn draw(&self, frame: &mut Frame, area: Rect, theme: &Theme, focused: bool) {
        if !focused {
            let span = if self.text().is_empty() {
                Span::styled(self.placeholder.as_str(), theme.dim)
            } else {
                Span::styled(self.text(), theme.text)
            };
            frame.render_widget(span, area);
            return;
        }
        // The theme is only known while drawing; a one-line copy is cheap.
        let mut input = self.input.clone();
        input.set_style(theme.text);
        input.set_cursor_style(theme.selected);
        input.set_cursor_line_style(Style::default());
        input.set_placeholder_text(self.placeholder.as_str());
        input.set_placeholder_style(theme.dim);
        frame.render_widget(&input, area);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn typing_edits_one_line() {
        let mut field = Field::new("we");
        assert!(field.input(key(KeyCode::Char('b'))));
        assert_eq!(field.text(), "web");
        assert!(!field.input(key(KeyCode::Enter)));
        assert!(!field.input(KeyEvent::new(KeyCode::Char('m'), KeyModifiers::CONTROL)));
        assert_eq!(field.text(), "web");
        field.move_cursor(CursorMove::Head);
        assert!(field.input(key(KeyCode::Delete)));
        assert_eq!(field.text(), "eb");
        field.set("db");
        assert!(field.input(key(KeyCode::Backspace)));
        assert_eq!(field.text(), "d");
    }
}
