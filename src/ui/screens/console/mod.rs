//! Console panes: one unikernel's console, or several side by side (one pane
//! each, `tab` moves the focus) or merged into one pane by time, each line
//! prefixed with its source. Every pane follows, scrolls back, wraps, shows
//! timestamps, finds, saves and clears on its own.

mod clock;
mod feed;
mod find;
mod pane;
mod render;
#[cfg(test)]
mod tests;

use crate::api::label::Label;
use crate::api::unikernel::RunState;
use crate::ui::format;
use crate::ui::keymap::{Action, Context};
use crate::ui::message::Command;
use crate::ui::model::Model;
use crate::ui::screens::unikernels::state_style;
use crate::ui::screens::{Ask, Cx, DrawCx, Effect, Notice, Question, View};
use feed::Feed;
use find::Found;
use pane::Pane;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use render::Mark;
use std::path::PathBuf;

/// Narrower than this, a side-by-side pane shows too little to read.
const MIN_PANE_WIDTH: u16 = 12;

pub struct ConsoleView {
    /// Side by side, one console each.
    panes: Vec<Pane>,
    /// Every console in one pane, when merged; the side-by-side panes wait
    /// underneath as they were.
    merged: Option<Pane>,
    focus: usize,
}

impl ConsoleView {
    pub fn new(names: Vec<Label>) -> ConsoleView {
        ConsoleView {
            panes: names.into_iter().map(|n| Pane::new(vec![n])).collect(),
            merged: None,
            focus: 0,
        }
    }

    fn names(&self) -> Vec<Label> {
        self.panes.iter().flat_map(|p| p.names.clone()).collect()
    }

    fn focused(&self) -> Option<&Pane> {
        self.merged.as_ref().or(self.panes.get(self.focus))
    }

    fn focused_mut(&mut self) -> Option<&mut Pane> {
        match &mut self.merged {
            Some(pane) => Some(pane),
            None => self.panes.get_mut(self.focus),
        }
    }

    /// Keeps every pane's find up to date with the lines it shows.
    fn refresh(&mut self, model: &Model) {
        for pane in self.panes.iter_mut().chain(self.merged.as_mut()) {
            if pane.find.is_active() {
                pane.find.refresh(&Feed::new(model, &pane.names));
            }
        }
    }

    fn toggle_merge(&mut self, cx: &mut Cx) {
        if self.merged.take().is_some() {
            return;
        }
        let Some(focused) = self.panes.get(self.focus) else {
            return;
        };
        if self.panes.len() < 2 {
            cx.effect(Notice::error(
                "only one console is open here: open several to merge them, e.g. :console web db",
            ));
            return;
        }
        let mut merged = Pane::new(self.names());
        merged.wrap = focused.wrap;
        merged.timestamps = focused.timestamps;
        let query = focused.find.query().to_string();
        merged
            .find
            .set_query(&query, &Feed::new(cx.model, &merged.names));
        self.merged = Some(merged);
    }

    /// Closes the focused pane; the last one (or a merged one) closes the screen.
    fn close_pane(&mut self, cx: &mut Cx) {
        if self.merged.is_some() || self.panes.len() <= 1 {
            cx.effect(Effect::Pop);
            return;
        }
        let pane = self.panes.remove(self.focus.min(self.panes.len() - 1));
        for name in pane.names {
            cx.effect(Effect::Unwatch(name));
        }
        self.focus = self.focus.min(self.panes.len() - 1);
    }

    fn ask_save(&self, cx: &mut Cx) {
        let Some(pane) = self.focused() else {
            return;
        };
        if Feed::new(cx.model, &pane.names).is_empty() {
            cx.effect(Notice::error("nothing to save: the pane has no lines"));
            return;
        }
        let names: Vec<&str> = pane.names.iter().map(Label::as_str).collect();
        cx.effect(Effect::Ask(Ask {
            question: Question::SavePath,
            prompt: format!("save the console of {} to: ", names.join(", ")),
            initial: format!(
                "./{}-console-{}.log",
                names.join("+"),
                clock::file_stamp(cx.now_ms)
            ),
        }));
    }

    /// The focused pane's lines as plain text, as it shows them unwrapped.
    fn save_text(pane: &Pane, feed: &Feed) -> String {
        let names: Vec<&str> = pane.names.iter().map(Label::as_str).collect();
        let gutter = pane.gutter(&names, usize::MAX);
        let mut text = String::new();
        let mut entry = feed.first();
        while let Some(e) = entry {
            render::plain(feed, e, &gutter, &mut text);
            entry = feed.next(e);
        }
        text
    }

    fn clear(&mut self, cx: &mut Cx) {
        let Some(pane) = self.focused_mut() else {
            return;
        };
        pane.cleared();
        for name in &pane.names {
            if let Some(buffer) = cx.model.consoles.get_mut(name) {
                buffer.clear();
            }
        }
        self.refresh(cx.model);
    }

    /// An action on the focused pane alone.
    fn pane_action(&mut self, action: Action, cx: &mut Cx) -> bool {
        let Some(pane) = self.focused_mut() else {
            return false;
        };
        let feed = Feed::new(cx.model, &pane.names);
        match action {
            Action::Up => pane.up(&feed, 1),
            Action::Down => pane.down(&feed, 1),
            Action::PageUp => pane.up(&feed, pane.page()),
            Action::PageDown => pane.down(&feed, pane.page()),
            Action::Top => pane.go_top(),
            Action::Bottom => pane.go_bottom(),
            Action::Left => pane.sideways(false),
            Action::Right => pane.sideways(true),
            Action::Follow => pane.toggle_follow(&feed),
            Action::Wrap => pane.toggle_wrap(&feed),
            Action::Timestamps => pane.timestamps = !pane.timestamps,
            Action::NextMatch | Action::PreviousMatch => {
                if let Some(notice) = step_find(pane, &feed, action == Action::NextMatch) {
                    cx.effect(notice);
                }
            }
            _ => return false,
        }
        true
    }
}

/// `n` / `N`: the next or previous match, shown; a notice when there is
/// none or the search went round.
fn step_find(pane: &mut Pane, feed: &Feed, forward: bool) -> Option<Effect> {
    if !pane.find.is_active() {
        return Some(Notice::error("nothing to find yet: press / and type"));
    }
    if pane.find.count() == 0 {
        return Some(Notice::error(format!(
            "no match for /{}",
            pane.find.query()
        )));
    }
    let wrapped = match forward {
        true => pane.find.next(),
        false => pane.find.previous(),
    };
    if let Some(found) = pane.find.current() {
        pane.reveal(feed, found);
    }
    wrapped.then(|| match forward {
        true => Notice::info("the search went round to the first match"),
        false => Notice::info("the search went round to the last match"),
    })
}

impl View for ConsoleView {
    fn context(&self) -> Context {
        Context::Console
    }

    fn title(&self, _model: &Model) -> String {
        let names: Vec<&str> = self
            .panes
            .iter()
            .flat_map(|p| p.names.iter().map(Label::as_str))
            .collect();
        match (names.len(), self.merged.is_some()) {
            (1, _) => format!("console of {}", names.join(", ")),
            (_, false) => format!("consoles of {}", names.join(", ")),
            (_, true) => format!("consoles of {}, merged", names.join(", ")),
        }
    }

    fn on_action(&mut self, action: Action, cx: &mut Cx) -> bool {
        match action {
            Action::NextPane => {
                if self.merged.is_none() && !self.panes.is_empty() {
                    self.focus = (self.focus + 1) % self.panes.len();
                }
            }
            Action::Merge => self.toggle_merge(cx),
            Action::ClosePane => self.close_pane(cx),
            Action::Save => self.ask_save(cx),
            Action::Clear => self.clear(cx),
            // Esc first puts a find away, then leaves the screen.
            Action::Back => match self.focused_mut() {
                Some(pane) if pane.find.is_active() => pane.find.clear(),
                _ => return false,
            },
            _ => return self.pane_action(action, cx),
        }
        true
    }

    fn on_search(&mut self, text: &str, cx: &mut Cx) -> bool {
        let Some(pane) = self.focused_mut() else {
            return false;
        };
        let feed = Feed::new(cx.model, &pane.names);
        pane.find.set_query(text, &feed);
        let bottom = pane.bottom(&feed).map(|spot| feed.key(spot.entry));
        pane.find.pick_near(bottom);
        if let Some(found) = pane.find.current() {
            pane.reveal(&feed, found);
        }
        true
    }

    fn on_answer(&mut self, question: Question, answer: String, cx: &mut Cx) {
        if question != Question::SavePath {
            return;
        }
        if answer.trim().is_empty() {
            cx.effect(Notice::error("no file name given: nothing was saved"));
            return;
        }
        let Some(pane) = self.focused() else {
            return;
        };
        let text = ConsoleView::save_text(pane, &Feed::new(cx.model, &pane.names));
        cx.effect(Effect::Send(Command::SaveConsole {
            path: PathBuf::from(answer),
            text,
        }));
    }

    fn on_open(&mut self, cx: &mut Cx) {
        for name in self.names() {
            cx.effect(Effect::Watch(name));
        }
    }

    fn on_model(&mut self, model: &Model) {
        self.refresh(model);
    }

    fn on_close(&mut self, cx: &mut Cx) {
        for name in self.names() {
            cx.effect(Effect::Unwatch(name));
        }
        self.panes.clear();
        self.merged = None;
    }

    fn draw(&self, frame: &mut Frame, area: Rect, cx: &DrawCx) {
        if let Some(merged) = &self.merged {
            draw_pane(frame, area, merged, true, cx);
            return;
        }
        let areas = Layout::horizontal(self.panes.iter().map(|_| Constraint::Fill(1))).split(area);
        for (i, (pane, area)) in self.panes.iter().zip(areas.iter()).enumerate() {
            draw_pane(frame, *area, pane, i == self.focus, cx);
        }
    }

    fn min_size(&self) -> (u16, u16) {
        let panes = u16::try_from(self.panes.len()).unwrap_or(u16::MAX);
        (MIN_PANE_WIDTH.saturating_mul(panes).max(40), 5)
    }

    fn next_change_ms(&self, cx: &DrawCx) -> Option<u64> {
        self.panes
            .iter()
            .flat_map(|p| &p.names)
            .filter_map(|name| cx.model.unikernel(name))
            .filter_map(|info| match info.state {
                RunState::Restarting { at_ms } | RunState::CrashLoop { at_ms, .. }
                    if at_ms > cx.now_ms =>
                {
                    Some(cx.now_ms + ((at_ms - cx.now_ms) % 1000).max(1))
                }
                _ => None,
            })
            .min()
    }
}

fn draw_pane(frame: &mut Frame, area: Rect, pane: &Pane, focused: bool, cx: &DrawCx) {
    let feed = Feed::new(cx.model, &pane.names);
    let border = if focused {
        cx.theme.title
    } else {
        cx.theme.border
    };
    let room = usize::from(area.width.saturating_sub(2));
    let mut title = title(pane, focused, cx);
    // Lines the daemon dropped are never left out: in the title when they
    // fit there, else on a row of their own.
    let mut banner = None;
    if let Some(dropped) = dropped(&feed) {
        let span = Span::styled(format!("· {dropped} "), cx.theme.bad);
        match title.width() + span.width() <= room {
            true => title.push_span(span),
            false => banner = Some(dropped),
        }
    }
    let flags = flags(pane, cx);
    let flags_fit = title.width() + flags.width() <= room;
    let mut block = Block::bordered()
        .border_style(border)
        .title(title)
        .title_bottom(find_status(pane, cx));
    if flags_fit {
        block = block.title_top(flags.right_aligned());
    }
    let mut inner = block.inner(area);
    frame.render_widget(block, area);
    if let Some(banner) = banner {
        let rows = banner.len().div_ceil(usize::from(inner.width).max(1));
        let rows = u16::try_from(rows).unwrap_or(u16::MAX).min(inner.height);
        let [top, rest] =
            Layout::vertical([Constraint::Length(rows), Constraint::Fill(1)]).areas(inner);
        frame.render_widget(
            Paragraph::new(banner)
                .style(cx.theme.bad)
                .wrap(Wrap { trim: true }),
            top,
        );
        inner = rest;
    }
    let names: Vec<&str> = pane.names.iter().map(Label::as_str).collect();
    let gutter = pane.gutter(&names, usize::from(inner.width));
    let text_width = usize::from(inner.width).saturating_sub(gutter.width());
    pane.drawn(text_width, usize::from(inner.height));
    if feed.is_empty() {
        frame.render_widget(
            Paragraph::new(empty_text(pane, cx))
                .style(cx.theme.dim)
                .wrap(Wrap { trim: true }),
            inner,
        );
        return;
    }
    let Some(bottom) = pane.bottom(&feed) else {
        return;
    };
    let placements = pane.placements(&feed, bottom);
    let find = &pane.find;
    let current = find.current();
    let marks_of = |entry, marks: &mut Vec<Mark>| {
        for chunk in feed.chunks(entry) {
            marks.extend(find.in_line(entry.src, chunk.id).map(|m| Mark {
                id: m.id,
                start: m.start,
                end: m.end,
                current: current
                    == Some(Found {
                        src: entry.src,
                        at: *m,
                    }),
            }));
        }
    };
    let look = render::Look {
        gutter,
        flow: pane.flow(),
        theme: cx.theme,
    };
    render::draw(
        frame.buffer_mut(),
        inner,
        &feed,
        &placements,
        &look,
        marks_of,
    );
}

/// What a source is doing, as the list says it; "removed" once it is gone.
fn state(name: &Label, cx: &DrawCx) -> (String, Style) {
    match cx.model.unikernel(name) {
        Some(info) => (
            format::state(&info.state, cx.now_ms),
            state_style(&info.state, cx.theme),
        ),
        None => ("removed".into(), cx.theme.bad),
    }
}

/// The pane's top-left title: each console with its state.
fn title<'a>(pane: &Pane, focused: bool, cx: &DrawCx) -> Line<'a> {
    let name_style = if focused {
        cx.theme.title
    } else {
        cx.theme.text
    };
    let mut spans = Vec::new();
    for (i, name) in pane.names.iter().enumerate() {
        let (state, style) = state(name, cx);
        spans.push(Span::styled(
            format!("{}{name} ", if i == 0 { " " } else { ", " }),
            name_style,
        ));
        spans.push(Span::styled(state, style));
    }
    spans.push(Span::raw(" "));
    Line::from(spans)
}

/// "N lines dropped", when the daemon had to skip lines for us.
fn dropped(feed: &Feed) -> Option<String> {
    let dropped: u64 = (0..feed.sources())
        .filter_map(|s| feed.buffer(s))
        .map(|b| b.dropped())
        .sum();
    let lines = if dropped == 1 { "line" } else { "lines" };
    (dropped > 0).then(|| format!("{dropped} {lines} dropped"))
}

/// The pane's top-right title: following, wrapping, timestamps.
fn flags<'a>(pane: &Pane, cx: &DrawCx) -> Line<'a> {
    let (follow, follow_style) = match pane.follow {
        true => ("following", cx.theme.good),
        false => ("paused", cx.theme.busy),
    };
    let wrap = match (pane.wrap, pane.shift()) {
        (true, _) => "wrap".to_string(),
        (false, 0) => "no wrap".to_string(),
        (false, shift) => format!("no wrap, +{shift}"),
    };
    let mut spans = vec![
        Span::raw(" "),
        Span::styled(follow, follow_style),
        Span::styled(format!(" · {wrap}"), cx.theme.dim),
    ];
    if pane.timestamps {
        spans.push(Span::styled(" · UTC", cx.theme.dim));
    }
    spans.push(Span::raw(" "));
    Line::from(spans)
}

/// The pane's bottom title: the find and where it stands.
fn find_status<'a>(pane: &Pane, cx: &DrawCx) -> Line<'a> {
    let find = &pane.find;
    if !find.is_active() {
        return Line::default();
    }
    let count = find.count();
    let (status, style) = match (count, find.position()) {
        (0, _) => ("no match".to_string(), cx.theme.bad),
        (n, Some(i)) => (format!("match {i} of {n}"), cx.theme.text),
        (1, None) => ("1 match".to_string(), cx.theme.text),
        (n, None) => (format!("{n} matches"), cx.theme.text),
    };
    Line::from(vec![
        Span::styled(format!(" /{} ", find.query()), cx.theme.key),
        Span::styled(status, style),
        Span::raw(" "),
    ])
}

fn empty_text(pane: &Pane, cx: &DrawCx) -> String {
    let removed: Vec<&str> = pane
        .names
        .iter()
        .filter(|n| cx.model.unikernel(n).is_none())
        .map(Label::as_str)
        .collect();
    match removed.as_slice() {
        [] => "No console lines yet; they show here as they come.".into(),
        [one] if pane.names.len() == 1 => {
            format!("{one} was removed, and its console with it.")
        }
        several => format!(
            "Removed, and their consoles with them: {}.",
            several.join(", ")
        ),
    }
}
