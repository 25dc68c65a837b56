//! The host policy and what is in use of it.

use crate::ui::keymap::{Action, Context};
use crate::ui::message::Command;
use crate::ui::model::Model;
use crate::ui::screens::{Cx, DrawCx, Effect, View};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::widgets::Paragraph;

#[derive(Default)]
pub struct PolicyView;

impl PolicyView {
    pub fn new() -> PolicyView {
        PolicyView
    }
}

impl View for PolicyView {
    fn context(&self) -> Context {
        Context::Global
    }

    fn title(&self, _model: &Model) -> String {
        "host policy".into()
    }

    fn on_action(&mut self, _action: Action, _cx: &mut Cx) -> bool {
        false
    }

    fn on_open(&mut self, cx: &mut Cx) {
        cx.effect(Effect::Send(Command::RefreshPolicy));
    }

    fn draw(&self, frame: &mut Frame, area: Rect, cx: &DrawCx) {
        let text = cx
            .model
            .policy
            .as_ref()
            .map_or(String::from("waiting for the daemon"), |p| {
                format!("memory {} of {} MB", p.used.memory_mb, p.policy.memory_mb)
            });
        frame.render_widget(Paragraph::new(text), area);
    }
}
