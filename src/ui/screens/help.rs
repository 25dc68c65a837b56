//! `?`: every key of the screen it was opened from, then the global ones,
//! read from the live key map, so it is true after any rebinding.

use crate::ui::keymap::{Action, Context};
use crate::ui::model::Model;
use crate::ui::screens::{Cx, DrawCx, View};
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row, Table};
use std::cell::Cell as Shared;

pub struct HelpView {
    /// The screen whose keys are shown.
    of: Context,
    scroll: usize,
    page: Shared<usize>,
}

impl HelpView {
    pub fn new(of: Context) -> HelpView {
        HelpView {
            of,
            scroll: 0,
            page: Shared::new(1),
        }
    }

    /// (section, key names, action) rows: the screen's own, then the global ones.
    fn entries(&self, cx: &DrawCx) -> Vec<(Context, String, Action)> {
        let contexts = if self.of == Context::Global {
            vec![Context::Global]
        } else {
            vec![self.of, Context::Global]
        };
        let mut entries = Vec::new();
        for context in contexts {
            for action in Action::ALL {
                if cx.read_only && action.changes_host() {
                    continue;
                }
                let keys = cx.keys.keys_of(context, action);
                if !keys.is_empty() {
                    let names = keys
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ");
                    entries.push((context, names, action));
                }
            }
        }
        entries
    }
}

impl View for HelpView {
    fn context(&self) -> Context {
        Context::Global
    }

    fn title(&self, _model: &Model) -> String {
        format!(
            "help: keys of the {} screen (esc to go back)",
            self.of.name()
        )
    }

    fn on_action(&mut self, action: Action, _cx: &mut Cx) -> bool {
        let page = self.page.get().max(1);
        match action {
            Action::Up => self.scroll = self.scroll.saturating_sub(1),
            Action::Down => self.scroll = self.scroll.saturating_add(1),
            Action::PageUp => self.scroll = self.scroll.saturating_sub(page),
            Action::PageDown => self.scroll = self.scroll.saturating_add(page),
            Action::Top => self.scroll = 0,
            Action::Bottom => self.scroll = usize::MAX,
            // Help on help would be a loop.
            Action::Help => {}
            _ => return false,
        }
        true
    }

    fn draw(&self, frame: &mut Frame, area: Rect, cx: &DrawCx) {
        let entries = self.entries(cx);
        let visible = usize::from(area.height.saturating_sub(1)).max(1);
        self.page.set(visible);
        let first = self.scroll.min(entries.len().saturating_sub(visible));
        let rows = entries
            .iter()
            .skip(first)
            .take(visible)
            .map(|(context, keys, action)| {
                Row::new([
                    Cell::from(Span::styled(context.name(), cx.theme.dim)),
                    Cell::from(Span::styled(keys.as_str(), cx.theme.key)),
                    Cell::from(Span::styled(action.description(), cx.theme.text)),
                ])
            });
        let header = Row::new(["SCREEN", "KEYS", "DOES"]).style(cx.theme.header);
        let widths = [
            Constraint::Length(11),
            Constraint::Length(16),
            Constraint::Fill(1),
        ];
        frame.render_widget(Table::new(rows, widths).header(header), area);
    }
}
