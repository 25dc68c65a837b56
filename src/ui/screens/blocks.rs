//! Block devices: name, size, the unikernel holding each.

use crate::ui::keymap::{Action, Context};
use crate::ui::message::Command;
use crate::ui::model::Model;
use crate::ui::screens::{Cx, DrawCx, Effect, View};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

#[derive(Default)]
pub struct BlocksView;

impl BlocksView {
    pub fn new() -> BlocksView {
        BlocksView
    }
}

impl View for BlocksView {
    fn context(&self) -> Context {
        Context::Blocks
    }

    fn title(&self, _model: &Model) -> String {
        "block devices".into()
    }

    fn on_action(&mut self, _action: Action, _cx: &mut Cx) -> bool {
        false
    }

    fn on_open(&mut self, cx: &mut Cx) {
        cx.effect(Effect::Send(Command::RefreshBlocks));
    }

    fn draw(&self, frame: &mut Frame, area: Rect, cx: &DrawCx) {
        let lines: Vec<Line> = cx
            .model
            .blocks
            .iter()
            .flatten()
            .map(|b| Line::from(format!("{} {} MB", b.name, b.size_mb)))
            .collect();
        frame.render_widget(Paragraph::new(lines), area);
    }
}
