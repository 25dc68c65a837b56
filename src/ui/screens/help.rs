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
    /// That screen takes text: a key that types a character only types there.
    typing: bool,
    scroll: usize,
    page: Shared<usize>,
}

impl HelpView {
    pub fn new(of: Context, typing: bool) -> HelpView {
        HelpView {
            of,
            typing,
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
                let mut keys = cx.keys.keys_of(context, action);
                keys.retain(|k| !(self.typing && k.types_text()));
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

#[cfg(test)]
mod tests {
    use crate::ui::fixtures::*;

    #[test]
    fn help_on_a_form_leaves_out_the_keys_that_type_there() {
        let mut h = Harness::showing(every_state(), 200, 60);
        h.press(&["n", "f1"]);
        let help = h.screen();
        // A row's keys and description, its section left out.
        let row = |does: &str| {
            help.lines()
                .map(|l| l.trim().trim_matches('"'))
                .find(|l| l.contains(does))
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        // On the form `q`, `?`, `k` and `b` type themselves: help must not
        // offer them; the keys that still act there stay.
        assert_eq!(row("quit fulmar"), "ctrl-c quit fulmar", "{help}");
        assert_eq!(row("show this help"), "f1 show this help", "{help}");
        assert_eq!(row("move up"), "up move up", "{help}");
        assert_eq!(row("block devices"), "", "{help}");
        // Elsewhere they act, and help lists them.
        let mut h = Harness::showing(every_state(), 200, 60);
        h.press(&["?"]);
        let help = h.screen();
        assert!(help.contains("ctrl-c, q"), "{help}");
    }
}
