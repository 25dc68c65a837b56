//! Console panes: one unikernel, or several side by side or merged.

use crate::api::label::Label;
use crate::ui::keymap::{Action, Context};
use crate::ui::model::Model;
use crate::ui::screens::{Cx, DrawCx, Effect, View};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

pub struct ConsoleView {
    names: Vec<Label>,
}

impl ConsoleView {
    pub fn new(names: Vec<Label>) -> ConsoleView {
        ConsoleView { names }
    }
}

impl View for ConsoleView {
    fn context(&self) -> Context {
        Context::Console
    }

    fn title(&self, _model: &Model) -> String {
        let names: Vec<&str> = self.names.iter().map(Label::as_str).collect();
        format!("console of {}", names.join(", "))
    }

    fn on_action(&mut self, _action: Action, _cx: &mut Cx) -> bool {
        false
    }

    fn on_open(&mut self, cx: &mut Cx) {
        for name in &self.names {
            cx.effect(Effect::Watch(name.clone()));
        }
    }

    fn on_close(&mut self, cx: &mut Cx) {
        for name in &self.names {
            cx.effect(Effect::Unwatch(name.clone()));
        }
    }

    fn draw(&self, frame: &mut Frame, area: Rect, cx: &DrawCx) {
        let Some(buffer) = self.names.first().and_then(|n| cx.model.consoles.get(n)) else {
            return;
        };
        let height = usize::from(area.height);
        let skip = buffer.lines().len().saturating_sub(height);
        let lines: Vec<Line> = buffer
            .lines()
            .iter()
            .skip(skip)
            .map(|l| Line::from(l.text.as_str()))
            .collect();
        frame.render_widget(Paragraph::new(lines), area);
    }
}
