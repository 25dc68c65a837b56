//! The one-line input at the bottom of the screen: the `:` command line, `/`
//! search (live, as the operator types) and questions such as a file name.

use crate::ui::screens::Question;
use crate::ui::theme::Theme;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::Span;
use ratatui_textarea::TextArea;

/// What the typed line is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Command,
    Search,
    Answer(Question),
}

pub struct Prompt {
    pub purpose: Purpose,
    label: String,
    input: TextArea<'static>,
}

/// What a key did to the prompt.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The text changed (live search follows it).
    Edited(String),
    /// Nothing to report (cursor moved).
    Unchanged,
    Submitted(String),
    Cancelled,
}

impl Prompt {
    pub fn new(purpose: Purpose, label: impl Into<String>, initial: &str) -> Prompt {
        let mut input = TextArea::new(vec![initial.to_string()]);
        input.set_cursor_line_style(Style::default());
        input.move_cursor(ratatui_textarea::CursorMove::End);
        Prompt {
            purpose,
            label: label.into(),
            input,
        }
    }

    pub fn text(&self) -> &str {
        self.input.lines().first().map_or("", String::as_str)
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Outcome {
        match key.code {
            KeyCode::Esc => Outcome::Cancelled,
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                Outcome::Cancelled
            }
            KeyCode::Enter => Outcome::Submitted(self.text().to_string()),
            // One line only: no newlines from Ctrl-M/J or a paste.
            KeyCode::Char('m' | 'j') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                Outcome::Unchanged
            }
            _ if self.input.input(key) => Outcome::Edited(self.text().to_string()),
            _ => Outcome::Unchanged,
        }
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect, theme: &Theme) {
        let label_width = u16::try_from(self.label.chars().count()).unwrap_or(u16::MAX);
        let [label, field] =
            Layout::horizontal([Constraint::Length(label_width), Constraint::Fill(1)]).areas(area);
        frame.render_widget(Span::styled(self.label.as_str(), theme.key), label);
        frame.render_widget(&self.input, field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(prompt: &mut Prompt, code: KeyCode) -> Outcome {
        prompt.on_key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    #[test]
    fn typing_edits_and_enter_submits() {
        let mut prompt = Prompt::new(Purpose::Search, "/", "");
        assert_eq!(
            press(&mut prompt, KeyCode::Char('w')),
            Outcome::Edited("w".into())
        );
        assert_eq!(
            press(&mut prompt, KeyCode::Char('e')),
            Outcome::Edited("we".into())
        );
        assert_eq!(
            press(&mut prompt, KeyCode::Backspace),
            Outcome::Edited("w".into())
        );
        assert_eq!(
            press(&mut prompt, KeyCode::Enter),
            Outcome::Submitted("w".into())
        );
    }

    #[test]
    fn the_initial_text_is_kept_and_escape_cancels() {
        let mut prompt = Prompt::new(
            Purpose::Answer(Question::SavePath),
            "save to: ",
            "/tmp/web.log",
        );
        assert_eq!(
            press(&mut prompt, KeyCode::Char('x')),
            Outcome::Edited("/tmp/web.logx".into())
        );
        assert_eq!(press(&mut prompt, KeyCode::Esc), Outcome::Cancelled);
    }
}
