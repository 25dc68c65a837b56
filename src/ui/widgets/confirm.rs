//! The confirmation dialog for destructive steps. It names exactly what will
//! happen, and Cancel has the focus until the operator moves it.

use crate::ui::keymap::Action;
use crate::ui::screens::{Confirm, Then};
use crate::ui::theme::Theme;
use crate::ui::widgets::centred;
use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph, Wrap};

pub struct Dialog {
    confirm: Confirm,
    yes_focused: bool,
}

/// What the dialog decided after a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Open,
    Cancelled,
    Confirmed(Then),
}

impl Dialog {
    pub fn new(confirm: Confirm) -> Dialog {
        Dialog {
            confirm,
            yes_focused: false,
        }
    }

    pub fn on_action(&mut self, action: Action) -> Outcome {
        match action {
            Action::Left | Action::Right | Action::NextPane => {
                self.yes_focused = !self.yes_focused;
                Outcome::Open
            }
            Action::Select if self.yes_focused => Outcome::Confirmed(self.confirm.then.clone()),
            Action::Select | Action::Back | Action::Quit => Outcome::Cancelled,
            _ => Outcome::Open,
        }
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect, theme: &Theme) {
        let width = area.width.saturating_sub(4).clamp(20, 64);
        let text: Vec<Line> = self
            .confirm
            .lines
            .iter()
            .map(|l| Line::styled(l.as_str(), theme.text))
            .collect();
        let inner_width = width.saturating_sub(2).max(1) as usize;
        let text_rows: usize = self
            .confirm
            .lines
            .iter()
            .map(|l| l.chars().count().div_ceil(inner_width).max(1))
            .sum();
        let height = u16::try_from(text_rows + 4).unwrap_or(u16::MAX);
        let popup = centred(area, width, height);
        frame.render_widget(Clear, popup);
        let block = Block::bordered()
            .border_type(BorderType::Rounded)
            .border_style(theme.bad)
            .title(Span::styled(format!(" {} ", self.confirm.title), theme.bad));
        let inner = block.inner(popup);
        frame.render_widget(block, popup);
        let [body, _, buttons] = Layout::vertical([
            Constraint::Fill(1),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .areas(inner);
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }), body);
        let (cancel_style, yes_style) = if self.yes_focused {
            (theme.button, theme.button_focused)
        } else {
            (theme.button_focused, theme.button)
        };
        let cancel = "[ Cancel ]".to_string();
        let yes = format!("[ {} ]", self.confirm.yes);
        let [left, right] = Layout::horizontal([
            Constraint::Length(cancel.len() as u16),
            Constraint::Length(yes.chars().count() as u16),
        ])
        .flex(Flex::SpaceAround)
        .areas(buttons);
        frame.render_widget(Span::styled(cancel, cancel_style), left);
        frame.render_widget(Span::styled(yes, yes_style), right);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::label::Label;
    use crate::ui::message::Command;

    fn dialog() -> Dialog {
        Dialog::new(Confirm {
            title: "Destroy web".into(),
            lines: vec!["web's tender gets SIGTERM".into()],
            yes: "Destroy web".into(),
            then: Then::Send(Command::Destroy(Label::new("web").unwrap())),
        })
    }

    #[test]
    fn enter_right_away_cancels() {
        assert_eq!(dialog().on_action(Action::Select), Outcome::Cancelled);
    }

    #[test]
    fn moving_to_the_button_and_enter_confirms() {
        let mut d = dialog();
        assert_eq!(d.on_action(Action::Right), Outcome::Open);
        assert_eq!(
            d.on_action(Action::Select),
            Outcome::Confirmed(Then::Send(Command::Destroy(Label::new("web").unwrap())))
        );
    }

    #[test]
    fn escape_cancels_even_on_the_button() {
        let mut d = dialog();
        d.on_action(Action::Right);
        assert_eq!(d.on_action(Action::Back), Outcome::Cancelled);
    }
}
