//! One unikernel in full.

use crate::api::label::Label;
use crate::ui::format;
use crate::ui::keymap::{Action, Context};
use crate::ui::model::Model;
use crate::ui::screens::{
    Cx, DrawCx, Effect, View, console::ConsoleView, unikernels::ask_lifecycle,
};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

pub struct DetailsView {
    name: Label,
}

impl DetailsView {
    pub fn new(name: Label) -> DetailsView {
        DetailsView { name }
    }
}

impl View for DetailsView {
    fn context(&self) -> Context {
        Context::Details
    }

    fn title(&self, _model: &Model) -> String {
        format!("details of {}", self.name)
    }

    fn on_action(&mut self, action: Action, cx: &mut Cx) -> bool {
        let Some(info) = cx.model.unikernel(&self.name) else {
            return false;
        };
        let effect = match action {
            Action::ShowConsole => {
                Effect::Push(Box::new(ConsoleView::new(vec![self.name.clone()])))
            }
            Action::Restart | Action::Destroy | Action::Remove => ask_lifecycle(action, info),
            Action::Edit => Effect::Push(Box::new(super::create::CreateView::edit(info))),
            _ => return false,
        };
        cx.effect(effect);
        true
    }

    fn draw(&self, frame: &mut Frame, area: Rect, cx: &DrawCx) {
        let Some(info) = cx.model.unikernel(&self.name) else {
            frame.render_widget(
                Paragraph::new(format!("{} is gone.", self.name)).style(cx.theme.dim),
                area,
            );
            return;
        };
        let lines = vec![
            Line::from(format!(
                "state     {}",
                format::state(&info.state, cx.now_ms)
            )),
            Line::from(format!("target    {}", info.target.as_str())),
            Line::from(format!("memory    {} MB", info.config.memory_mb)),
        ];
        frame.render_widget(Paragraph::new(lines), area);
    }
}
