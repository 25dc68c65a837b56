//! The create form (`n` on the unikernel list) and the same form filled in
//! from a unikernel's settings to change them (`e` on its details).
//!
//! Choosing an image has the daemon check it at once; its manifest then
//! makes one row per device, so none can be forgotten and none added. Every
//! launch rule runs as the operator types ([`form::Form::check`]), each reason
//! beside its field, and submit is refused until there are none. Files are
//! the link's business: the form asks for a completion or an inspection and
//! takes the answer as a [`FormReply`].

mod args;
mod draw;
mod form;
#[cfg(test)]
mod tests;

use crate::api::image::InspectReport;
use crate::api::label::Label;
use crate::api::protocol::ApiError;
use crate::api::unikernel::{RunState, UnikernelConfig, UnikernelInfo};
use crate::ui::keymap::{Action, Context};
use crate::ui::message::{Command, FormReply};
use crate::ui::model::Model;
use crate::ui::screens::{
    Confirm, Cx, DrawCx, Effect, Notice, Question, Then, View, console::ConsoleView,
};
use crossterm::event::KeyEvent;
use form::{Form, Image, Mode, Row};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui_textarea::CursorMove;
use std::cell::Cell;

pub struct CreateView {
    form: Form,
    focus: Row,
    /// The operator changed something: leaving asks first.
    touched: bool,
    /// The image path the last completion answered: Tab on it again moves on.
    completed: Option<String>,
    /// What the last completion found, listed under the image path.
    matches: Vec<String>,
    /// Why the last completion found nothing.
    completion_note: Option<String>,
    /// A create or reconfigure request is on its way.
    submitting: bool,
    /// The first line on screen, as of the last frame.
    offset: Cell<usize>,
}

impl CreateView {
    /// An empty form for a new unikernel.
    pub fn new() -> CreateView {
        CreateView::with(Form::create(), Row::Image)
    }

    /// The form filled in from `info`'s settings; its name and image stay.
    pub fn edit(info: &UnikernelInfo) -> CreateView {
        CreateView::with(Form::edit(info), Row::Memory)
    }

    fn with(form: Form, focus: Row) -> CreateView {
        CreateView {
            form,
            focus,
            touched: false,
            completed: None,
            matches: Vec::new(),
            completion_note: None,
            submitting: false,
            offset: Cell::new(0),
        }
    }

    fn move_focus(&mut self, step: isize, cx: &mut Cx) {
        let rows = self.form.rows();
        let at = rows.iter().position(|r| *r == self.focus).unwrap_or(0) as isize;
        let next = (at + step).rem_euclid(rows.len() as isize) as usize;
        self.focus_on(rows[next], cx);
    }

    fn focus_on(&mut self, row: Row, cx: &mut Cx) {
        if self.focus == Row::Image && row != Row::Image {
            self.choose_image(cx);
        }
        self.focus = row;
    }

    /// After the rows changed (a new manifest), the focus stays on one that exists.
    fn keep_focus(&mut self) {
        let rows = self.form.rows();
        if !rows.contains(&self.focus) {
            self.focus = rows[0];
        }
    }

    /// Has the daemon check the image path typed, unless it is the one
    /// checked (or being checked) already.
    fn choose_image(&mut self, cx: &mut Cx) {
        let path = self.form.image_path.text().trim().to_string();
        let known = match &self.form.image {
            Image::Inspecting { path: p } | Image::Failed { path: p, .. } => *p == path,
            Image::Ready { path: p, .. } => *p == path,
            Image::None | Image::Kept { .. } => false,
        };
        if path.is_empty() || known {
            return;
        }
        self.matches.clear();
        self.completion_note = None;
        self.form.image = Image::Inspecting { path: path.clone() };
        cx.effect(Effect::Send(Command::InspectImage(path)));
    }

    /// Tab on the image path: complete it, unless the last completion
    /// answered this very text (then Tab moves on).
    fn tab(&mut self, cx: &mut Cx) {
        let typed = self.form.image_path.text().to_string();
        if self.focus != Row::Image || typed.is_empty() || self.completed.as_ref() == Some(&typed) {
            self.move_focus(1, cx);
            return;
        }
        self.completed = Some(typed.clone());
        cx.effect(Effect::Send(Command::CompletePath(typed)));
    }

    fn completions(&mut self, typed: String, outcome: Result<Vec<String>, String>, cx: &mut Cx) {
        if typed != self.form.image_path.text() {
            return;
        }
        self.matches.clear();
        self.completion_note = None;
        match outcome {
            Err(why) => self.completion_note = Some(why),
            Ok(found) if found.is_empty() => {
                self.completion_note = Some(format!("nothing matches {typed}"))
            }
            Ok(found) => {
                let prefix = common_prefix(&found);
                if prefix.len() > typed.len() {
                    self.form.image_path.set(prefix);
                    self.touched = true;
                }
                if let [only] = found.as_slice()
                    && !only.ends_with('/')
                {
                    // A whole file name: nothing more to complete; that is the image.
                    self.completed = Some(only.clone());
                    self.choose_image(cx);
                } else if found.len() > 1 {
                    self.matches = found;
                }
            }
        }
    }

    fn inspected(&mut self, path: String, outcome: Result<InspectReport, String>) {
        let waiting = matches!(&self.form.image, Image::Inspecting { path: p } if *p == path);
        if !waiting {
            return;
        }
        match outcome {
            Ok(report) => self.form.set_image(path, report),
            Err(why) => self.form.image = Image::Failed { path, why },
        }
        self.keep_focus();
    }

    fn changed(&mut self, row: Row) {
        self.touched = true;
        self.form.refused = None;
        if row == Row::Image {
            self.matches.clear();
            self.completion_note = None;
        }
    }

    /// Left/Right: the cursor of a text field, or the choice of a choice row.
    fn sideways(&mut self, step: isize, cx: &mut Cx) {
        match self.focus {
            Row::Restart => self.form.restart = self.form.restart.cycle(step),
            Row::Device(i) => self.form.cycle_device(i, step, cx.model),
            row => {
                let to = if step < 0 {
                    CursorMove::Back
                } else {
                    CursorMove::Forward
                };
                if let Some(field) = self.form.field_mut(row) {
                    field.move_cursor(to);
                }
                return;
            }
        }
        self.changed(self.focus);
    }

    fn submit(&mut self, cx: &mut Cx) {
        if self.submitting {
            cx.effect(Notice::info("waiting for the daemon's answer…"));
            return;
        }
        let check = self.form.check(cx.model);
        let config = match check.config.clone() {
            Some(config) if check.ready() => config,
            _ => {
                let why = match (&check.waiting, check.reasons.len()) {
                    (Some(waiting), 0) => format!("not yet: {waiting}"),
                    (_, n) => format!(
                        "not yet: {n} thing{} to fix, each marked ✗ beside its field",
                        if n == 1 { "" } else { "s" }
                    ),
                };
                cx.effect(Notice::error(why));
                self.focus_first_reason(&check.reasons);
                return;
            }
        };
        match (&self.form.mode, &self.form.image) {
            (Mode::Create, Image::Ready { report, .. }) => {
                let image = report.image.sha256.clone();
                self.submitting = true;
                cx.effect(Effect::Send(Command::Create {
                    config: Box::new(config),
                    image,
                }));
            }
            (Mode::Edit(name), _) => {
                let info = cx.model.unikernel(name);
                cx.effect(Effect::Confirm(confirm_reconfigure(info, &config)));
            }
            (Mode::Create, _) => cx.effect(Notice::error("choose an image first")),
        }
    }

    fn focus_first_reason(&mut self, reasons: &[(Row, String)]) {
        let rows = self.form.rows();
        if let Some((row, _)) = reasons.iter().find(|(r, _)| rows.contains(r)) {
            self.focus = *row;
        }
    }

    fn leave(&mut self, cx: &mut Cx) {
        if !self.touched {
            cx.effect(Effect::Pop);
            return;
        }
        let lost = match &self.form.mode {
            Mode::Create => "What you typed is lost; nothing is created.".to_string(),
            Mode::Edit(name) => format!("What you changed is lost; {name} stays as it is."),
        };
        cx.effect(Effect::Confirm(Confirm {
            title: "Leave the form?".into(),
            lines: vec![lost],
            yes: "Leave".into(),
            then: Then::Answer(Question::Discard, String::new()),
        }));
    }

    fn submitted(&mut self, name: Label, outcome: Result<(), ApiError>, cx: &mut Cx) {
        if !self.submitting {
            return;
        }
        self.submitting = false;
        match outcome {
            Ok(()) => {
                let done = match self.form.mode {
                    Mode::Create => format!("{name} created"),
                    Mode::Edit(_) => format!("{name} restarted with its new settings"),
                };
                cx.effect(Effect::Pop);
                cx.effect(Effect::Push(Box::new(ConsoleView::new(vec![name]))));
                cx.effect(Notice::info(done));
            }
            Err(refused) => {
                cx.effect(Notice::error(format!(
                    "the daemon refused: {}",
                    refused.message
                )));
                self.form.refused = Some(refused);
                let check = self.form.check(cx.model);
                self.focus_first_reason(&check.reasons);
            }
        }
    }
}

impl Default for CreateView {
    fn default() -> CreateView {
        CreateView::new()
    }
}

impl View for CreateView {
    fn context(&self) -> Context {
        Context::Form
    }

    fn title(&self, _model: &Model) -> String {
        match &self.form.mode {
            Mode::Create => "create a unikernel".into(),
            Mode::Edit(name) => format!("change the settings of {name} (it restarts)"),
        }
    }

    fn on_action(&mut self, action: Action, cx: &mut Cx) -> bool {
        match action {
            Action::NextPane => self.tab(cx),
            Action::Down => self.move_focus(1, cx),
            Action::PreviousPane | Action::Up => self.move_focus(-1, cx),
            Action::Select => match self.focus {
                Row::Submit => self.submit(cx),
                Row::Image => {
                    // Enter tries a path that failed again (the daemon was away, the
                    // file was fixed); merely leaving the field does not.
                    if matches!(self.form.image, Image::Failed { .. }) {
                        self.form.image = Image::None;
                    }
                    self.move_focus(1, cx);
                }
                _ => self.move_focus(1, cx),
            },
            Action::Left => self.sideways(-1, cx),
            Action::Right => self.sideways(1, cx),
            Action::Top | Action::Bottom => {
                let to = if action == Action::Top {
                    CursorMove::Head
                } else {
                    CursorMove::End
                };
                if let Some(field) = self.form.field_mut(self.focus) {
                    field.move_cursor(to);
                }
            }
            Action::Back => self.leave(cx),
            _ => return false,
        }
        true
    }

    fn on_answer(&mut self, question: Question, _answer: String, cx: &mut Cx) {
        match question {
            Question::Discard => cx.effect(Effect::Pop),
            Question::Reconfigure => {
                let check = self.form.check(cx.model);
                match check.config {
                    Some(config) if check.ready() && !self.submitting => {
                        self.submitting = true;
                        cx.effect(Effect::Send(Command::Reconfigure(Box::new(config))));
                    }
                    _ => cx.effect(Notice::error(
                        "the host changed meanwhile: see the marked fields",
                    )),
                }
            }
            // The form asks nothing else.
            _ => {}
        }
    }

    fn takes_text(&self) -> bool {
        true
    }

    fn on_text(&mut self, key: KeyEvent, _cx: &mut Cx) {
        let row = self.focus;
        if let Some(field) = self.form.field_mut(row)
            && field.input(key)
        {
            self.changed(row);
        }
    }

    fn on_form_reply(&mut self, reply: FormReply, cx: &mut Cx) {
        match reply {
            FormReply::Completions { typed, outcome } => self.completions(typed, outcome, cx),
            FormReply::Image { path, outcome } => self.inspected(path, outcome),
            FormReply::Submitted { name, outcome } => self.submitted(name, outcome, cx),
        }
    }

    fn draw(&self, frame: &mut Frame, area: Rect, cx: &DrawCx) {
        self.draw_form(frame, area, cx);
    }

    fn min_size(&self) -> (u16, u16) {
        (50, 8)
    }
}

/// The dialog before a unikernel restarts with new settings: what stops,
/// and what changes.
fn confirm_reconfigure(info: Option<&UnikernelInfo>, config: &UnikernelConfig) -> Confirm {
    let name = &config.name;
    let running = info.is_some_and(|i| matches!(i.state, RunState::Running { .. }));
    let mut lines = vec![if running {
        format!(
            "{name}'s tender is stopped (SIGTERM, then SIGKILL) and started again with the same image."
        )
    } else {
        format!("{name} is started with the same image.")
    }];
    let changed = info.map(|i| changes(&i.config, config)).unwrap_or_default();
    lines.push(if changed.is_empty() {
        "Nothing changed: it starts with the settings it had.".into()
    } else {
        format!("Changed: {}.", changed.join("; "))
    });
    Confirm {
        title: format!("Restart {name} with these settings?"),
        lines,
        yes: format!("Restart {name}"),
        then: Then::Answer(Question::Reconfigure, String::new()),
    }
}

/// What differs between two settings of one unikernel, in words.
fn changes(old: &UnikernelConfig, new: &UnikernelConfig) -> Vec<String> {
    let mut changed = Vec::new();
    if old.memory_mb != new.memory_mb {
        changed.push(format!("memory {} → {} MB", old.memory_mb, new.memory_mb));
    }
    if old.cpu != new.cpu {
        changed.push(format!("CPU {} → {}", old.cpu, new.cpu));
    }
    if old.args != new.args {
        changed.push(format!("arguments → {}", args::join(&new.args)));
    }
    if old.restart != new.restart {
        changed.push("restart policy".into());
    }
    if old.startup_priority != new.startup_priority {
        changed.push(format!(
            "startup priority {} → {}",
            old.startup_priority, new.startup_priority
        ));
    }
    if old.nets != new.nets || old.blocks != new.blocks {
        changed.push("devices".into());
    }
    changed
}

/// The longest start all of `texts` share, cut at a character boundary.
fn common_prefix(texts: &[String]) -> &str {
    let Some(first) = texts.first() else {
        return "";
    };
    let mut end = first.len();
    for text in &texts[1..] {
        end = first
            .char_indices()
            .zip(text.chars())
            .take_while(|((_, a), b)| a == b)
            .last()
            .map_or(0, |((i, a), _)| i + a.len_utf8())
            .min(end);
    }
    &first[..end]
}
