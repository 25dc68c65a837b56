//! The application: a stack of screens over the model, the overlays (dialog,
//! prompt) and the status line. It is synchronous and knows no terminal or
//! daemon: keys and [`Update`]s go in, [`Command`]s come out, and `draw` paints
//! a frame, so tests drive it headless on a `TestBackend`.

use crate::api::label::Label;
use crate::ui::config::Config;
use crate::ui::keymap::{Action, Context, Key, KeyMap};
use crate::ui::message::{Command, FormReply, Update};
use crate::ui::model::{Link, Model, Overwrite};
use crate::ui::screens::{
    Cx, DrawCx, Effect, Notice, Then, View, blocks, blocks::BlocksView, console::ConsoleView,
    details::DetailsView, help::HelpView, policy::PolicyView, unikernels,
};
use crate::ui::theme::Theme;
use crate::ui::widgets::confirm::{self, Dialog};
use crate::ui::widgets::prompt::{self, Prompt, Purpose};
use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use std::collections::HashMap;

/// Below this the app cannot even draw its header and status line.
const MIN_WIDTH: u16 = 20;
const MIN_HEIGHT: u16 = 3;

enum Overlay {
    Confirm(Dialog),
    Prompt(Box<Prompt>),
}

pub struct App {
    pub model: Model,
    /// Never empty: the unikernel list is at the bottom.
    stack: Vec<Box<dyn View>>,
    overlay: Option<Overlay>,
    /// The link's question the open dialog puts, if it is one: its
    /// cancellation is worth a notice, since the operator started a download.
    question: Option<Overwrite>,
    notice: Option<Notice>,
    /// How many open screens watch each console.
    watching: HashMap<Label, usize>,
    keys: KeyMap,
    theme: Theme,
    read_only: bool,
    quit: bool,
    dirty: bool,
}

impl App {
    pub fn new(config: Config, read_only: bool) -> App {
        App {
            model: Model::default(),
            stack: vec![Box::new(unikernels::UnikernelsView::default())],
            overlay: None,
            question: None,
            notice: None,
            watching: HashMap::new(),
            keys: config.keys,
            theme: Theme::new(config.theme),
            read_only,
            quit: false,
            dirty: true,
        }
    }

    pub fn quitting(&self) -> bool {
        self.quit
    }

    /// Whether anything changed since the last call: only then is a frame drawn.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The terminal was resized, or time moved what the screen shows: draw again.
    pub fn on_resize(&mut self) {
        self.dirty = true;
    }

    /// What the daemon link reported.
    pub fn on_update(&mut self, update: Update, now_ms: u64) -> Vec<Command> {
        if let Update::Form(reply) = update {
            return self.form_reply(reply, now_ms);
        }
        if let Update::Done { what, outcome } = &update {
            self.notice = Some(match outcome {
                Ok(()) => Notice {
                    text: format!("{what}: done"),
                    error: false,
                },
                Err(why) => Notice {
                    text: format!("{what} failed: {why}"),
                    error: true,
                },
            });
            self.dirty = true;
            return Vec::new();
        }
        if self.model.apply(update, now_ms) {
            for view in &mut self.stack {
                view.on_model(&self.model);
            }
            self.dirty = true;
        }
        self.put_question();
        Vec::new()
    }

    /// Puts the link's pending question (a download would replace a file) on
    /// whatever screen shows, as soon as no other dialog or prompt is open.
    fn put_question(&mut self) {
        if self.overlay.is_some() {
            return;
        }
        if let Some(question) = self.model.overwrite.take() {
            let dialog = Dialog::new(blocks::ask_overwrite(&question));
            self.overlay = Some(Overlay::Confirm(dialog));
            self.question = Some(question);
            self.dirty = true;
        }
    }

    /// A key from the terminal.
    pub fn on_key(&mut self, event: KeyEvent, now_ms: u64) -> Vec<Command> {
        let commands = self.key(event, now_ms);
        self.put_question();
        commands
    }

    fn key(&mut self, event: KeyEvent, now_ms: u64) -> Vec<Command> {
        if self.notice.take().is_some() {
            self.dirty = true;
        }
        match self.overlay.take() {
            Some(Overlay::Prompt(prompt)) => self.prompt_key(prompt, event, now_ms),
            Some(Overlay::Confirm(dialog)) => self.dialog_key(dialog, event, now_ms),
            None => {
                let key = Key::from_event(&event);
                let action = key.and_then(|key| self.keys.action(self.top().context(), key));
                let text = key.is_some_and(|k| k.types_text() || action.is_none());
                if text && self.top().takes_text() {
                    return self.type_text(event, now_ms);
                }
                match action {
                    Some(action) => self.act(action, now_ms),
                    None => Vec::new(),
                }
            }
        }
    }

    /// A key for the text field of the screen on top.
    fn type_text(&mut self, event: KeyEvent, now_ms: u64) -> Vec<Command> {
        self.dirty = true;
        let mut cx = Cx::new(&mut self.model, now_ms);
        if let Some(view) = self.stack.last_mut() {
            view.on_text(event, &mut cx);
        }
        let effects = cx.into_effects();
        self.apply(effects, now_ms)
    }

    /// A form's answer, for the screen on top: the form that is waiting for it.
    fn form_reply(&mut self, reply: FormReply, now_ms: u64) -> Vec<Command> {
        self.dirty = true;
        let mut cx = Cx::new(&mut self.model, now_ms);
        if let Some(view) = self.stack.last_mut() {
            view.on_form_reply(reply, &mut cx);
        }
        let effects = cx.into_effects();
        self.apply(effects, now_ms)
    }

    fn top(&self) -> &dyn View {
        self.stack
            .last()
            .map_or_else(|| unreachable!("the stack is never empty"), |v| v.as_ref())
    }

    /// Runs `action` on the current screen, or its global meaning.
    fn act(&mut self, action: Action, now_ms: u64) -> Vec<Command> {
        if self.read_only && action.changes_host() {
            self.notice = Some(Notice {
                text: format!(
                    "read-only: {} is turned off (started with --read-only)",
                    action.name()
                ),
                error: true,
            });
            self.dirty = true;
            return Vec::new();
        }
        self.dirty = true;
        let mut cx = Cx::new(&mut self.model, now_ms);
        let consumed = match self.stack.last_mut() {
            Some(view) => view.on_action(action, &mut cx),
            None => false,
        };
        let effects = cx.into_effects();
        let mut commands = self.apply(effects, now_ms);
        if !consumed {
            commands.extend(self.global(action, now_ms));
        }
        commands
    }

    fn global(&mut self, action: Action, now_ms: u64) -> Vec<Command> {
        match action {
            Action::Quit => self.quit = true,
            Action::Back => return self.pop(now_ms),
            Action::Help => {
                let (context, typing) = (self.top().context(), self.top().takes_text());
                return self.push(Box::new(HelpView::new(context, typing)), now_ms);
            }
            Action::CommandLine => {
                self.overlay = Some(Overlay::Prompt(Box::new(Prompt::new(
                    Purpose::Command,
                    ":",
                    "",
                ))))
            }
            Action::Search => self.start_search(now_ms),
            Action::ShowBlocks => return self.push(Box::new(BlocksView::new()), now_ms),
            Action::ShowPolicy => return self.push(Box::new(PolicyView::new()), now_ms),
            _ => {}
        }
        Vec::new()
    }

    fn start_search(&mut self, now_ms: u64) {
        let mut cx = Cx::new(&mut self.model, now_ms);
        let searchable = self
            .stack
            .last_mut()
            .is_some_and(|v| v.on_search("", &mut cx));
        if searchable {
            self.overlay = Some(Overlay::Prompt(Box::new(Prompt::new(
                Purpose::Search,
                "/",
                "",
            ))));
        } else {
            self.notice = Some(Notice {
                text: "there is nothing to search on this screen".into(),
                error: true,
            });
        }
    }

    fn prompt_key(
        &mut self,
        mut prompt: Box<Prompt>,
        event: KeyEvent,
        now_ms: u64,
    ) -> Vec<Command> {
        self.dirty = true;
        let purpose = prompt.purpose;
        let outcome = prompt.on_key(event);
        let mut cx = Cx::new(&mut self.model, now_ms);
        let view = self.stack.last_mut();
        match (outcome, view) {
            (prompt::Outcome::Edited(text), Some(view)) if purpose == Purpose::Search => {
                view.on_search(&text, &mut cx);
                self.overlay = Some(Overlay::Prompt(prompt));
            }
            (prompt::Outcome::Cancelled, Some(view)) if purpose == Purpose::Search => {
                view.on_search("", &mut cx);
            }
            (prompt::Outcome::Submitted(text), _) if purpose == Purpose::Command => {
                return self.run_command(&text, now_ms);
            }
            (prompt::Outcome::Submitted(text), Some(view)) => {
                if let Purpose::Answer(question) = purpose {
                    view.on_answer(question, text, &mut cx);
                }
            }
            (prompt::Outcome::Cancelled | prompt::Outcome::Submitted(_), _) => {}
            (prompt::Outcome::Edited(_) | prompt::Outcome::Unchanged, _) => {
                self.overlay = Some(Overlay::Prompt(prompt));
            }
        }
        let effects = cx.into_effects();
        self.apply(effects, now_ms)
    }

    fn dialog_key(&mut self, mut dialog: Dialog, event: KeyEvent, now_ms: u64) -> Vec<Command> {
        self.dirty = true;
        let Some(action) =
            Key::from_event(&event).and_then(|key| self.keys.action(Context::Global, key))
        else {
            self.overlay = Some(Overlay::Confirm(dialog));
            return Vec::new();
        };
        match dialog.on_action(action) {
            confirm::Outcome::Open => {
                self.overlay = Some(Overlay::Confirm(dialog));
                Vec::new()
            }
            confirm::Outcome::Cancelled => {
                if let Some(question) = self.question.take() {
                    self.notice = Some(Notice {
                        text: format!(
                            "download of {} not started: {} left as it was",
                            question.block,
                            question.path.display()
                        ),
                        error: false,
                    });
                }
                Vec::new()
            }
            confirm::Outcome::Confirmed(Then::Send(command)) => {
                self.question = None;
                vec![command]
            }
            confirm::Outcome::Confirmed(Then::Answer(question, answer)) => {
                let mut cx = Cx::new(&mut self.model, now_ms);
                if let Some(view) = self.stack.last_mut() {
                    view.on_answer(question, answer, &mut cx);
                }
                let effects = cx.into_effects();
                self.apply(effects, now_ms)
            }
        }
    }

    /// A line typed on the `:` command line.
    fn run_command(&mut self, line: &str, now_ms: u64) -> Vec<Command> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let names = |args: &[&str]| -> Result<Vec<Label>, String> {
            args.iter()
                .map(|a| Label::new(a).map_err(|e| format!("`{a}`: {e}")))
                .collect()
        };
        let result = match words.as_slice() {
            [] => Ok(Vec::new()),
            ["q" | "quit" | "q!" | "qa"] => {
                self.quit = true;
                Ok(Vec::new())
            }
            ["help"] => Ok(self.act(Action::Help, now_ms)),
            ["blocks"] => Ok(self.act(Action::ShowBlocks, now_ms)),
            ["policy"] => Ok(self.act(Action::ShowPolicy, now_ms)),
            ["unikernels" | "list" | "home"] => Ok(self.pop_to_root(now_ms)),
            ["console", rest @ ..] if !rest.is_empty() => {
                names(rest).and_then(|names| self.open_consoles(names, now_ms))
            }
            ["details", name] => {
                names(&[name]).and_then(|mut n| self.open_details(n.remove(0), now_ms))
            }
            [verb @ ("destroy" | "restart" | "remove"), name] => names(&[name]).map(|mut n| {
                let action = match *verb {
                    "destroy" => Action::Destroy,
                    "restart" => Action::Restart,
                    _ => Action::Remove,
                };
                self.lifecycle(action, n.remove(0), now_ms)
            }),
            [other, ..] => Err(format!(
                "unknown command `{other}`: try :console NAME, :details NAME, :blocks, :policy, :unikernels, :help or :q"
            )),
        };
        result.unwrap_or_else(|why| {
            self.notice = Some(Notice {
                text: why,
                error: true,
            });
            Vec::new()
        })
    }

    fn open_consoles(&mut self, names: Vec<Label>, now_ms: u64) -> Result<Vec<Command>, String> {
        self.known(&names)?;
        Ok(self.push(Box::new(ConsoleView::new(names)), now_ms))
    }

    fn open_details(&mut self, name: Label, now_ms: u64) -> Result<Vec<Command>, String> {
        self.known(std::slice::from_ref(&name))?;
        Ok(self.push(Box::new(DetailsView::new(name)), now_ms))
    }

    fn known(&self, names: &[Label]) -> Result<(), String> {
        match names.iter().find(|n| self.model.unikernel(n).is_none()) {
            Some(name) => Err(format!(
                "there is no unikernel named {name}: see the list (:unikernels)"
            )),
            None => Ok(()),
        }
    }

    /// Destroy, restart or remove from the command line: the same dialog as the keys.
    fn lifecycle(&mut self, action: Action, name: Label, now_ms: u64) -> Vec<Command> {
        if self.read_only {
            return self.act(action, now_ms);
        }
        let effect = match self.model.unikernel(&name) {
            Some(info) => unikernels::ask_lifecycle(action, info),
            None => Notice::error(format!("there is no unikernel named {name}")),
        };
        self.dirty = true;
        self.apply(vec![effect], now_ms)
    }

    fn push(&mut self, mut view: Box<dyn View>, now_ms: u64) -> Vec<Command> {
        let mut cx = Cx::new(&mut self.model, now_ms);
        view.on_model(cx.model);
        view.on_open(&mut cx);
        self.stack.push(view);
        self.dirty = true;
        let effects = cx.into_effects();
        self.apply(effects, now_ms)
    }

    fn pop(&mut self, now_ms: u64) -> Vec<Command> {
        if self.stack.len() < 2 {
            return Vec::new();
        }
        let mut commands = Vec::new();
        if let Some(mut view) = self.stack.pop() {
            let mut cx = Cx::new(&mut self.model, now_ms);
            view.on_close(&mut cx);
            let effects = cx.into_effects();
            commands = self.apply(effects, now_ms);
        }
        self.dirty = true;
        commands
    }

    fn pop_to_root(&mut self, now_ms: u64) -> Vec<Command> {
        let mut commands = Vec::new();
        while self.stack.len() > 1 {
            commands.extend(self.pop(now_ms));
        }
        commands
    }

    /// Carries out what a screen asked for; returns the commands for the link.
    fn apply(&mut self, effects: Vec<Effect>, now_ms: u64) -> Vec<Command> {
        let mut commands = Vec::new();
        for effect in effects {
            match effect {
                Effect::Send(command) => commands.push(command),
                Effect::Watch(name) => {
                    let count = self.watching.entry(name.clone()).or_default();
                    *count += 1;
                    if *count == 1 {
                        self.model.consoles.watch(&name);
                        commands.push(Command::Watch(name));
                    }
                }
                Effect::Unwatch(name) => {
                    if let Some(count) = self.watching.get_mut(&name) {
                        *count -= 1;
                        if *count == 0 {
                            self.watching.remove(&name);
                            self.model.consoles.unwatch(&name);
                            commands.push(Command::Unwatch(name));
                        }
                    }
                }
                Effect::Push(view) => commands.extend(self.push(view, now_ms)),
                Effect::Pop => commands.extend(self.pop(now_ms)),
                Effect::Confirm(confirm) => {
                    self.overlay = Some(Overlay::Confirm(Dialog::new(confirm)))
                }
                Effect::Ask(ask) => {
                    let prompt =
                        Prompt::new(Purpose::Answer(ask.question), ask.prompt, &ask.initial);
                    self.overlay = Some(Overlay::Prompt(Box::new(prompt)));
                }
                Effect::Notice(notice) => self.notice = Some(notice),
            }
        }
        self.dirty = true;
        commands
    }

    /// When the screen next changes with time alone, if it does.
    pub fn next_change_ms(&self, now_ms: u64) -> Option<u64> {
        self.top().next_change_ms(&self.draw_cx(now_ms))
    }

    fn draw_cx(&self, now_ms: u64) -> DrawCx<'_> {
        DrawCx {
            model: &self.model,
            theme: &self.theme,
            keys: &self.keys,
            now_ms,
            read_only: self.read_only,
        }
    }

    pub fn draw(&self, frame: &mut Frame, now_ms: u64) {
        let area = frame.area();
        if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
            frame.render_widget(Paragraph::new("too small"), area);
            return;
        }
        let cx = self.draw_cx(now_ms);
        let [header, body, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(area);
        self.draw_header(frame, header, &cx);
        let view = self.top();
        let (min_width, min_height) = view.min_size();
        if body.width < min_width || body.height < min_height {
            let text = format!(
                "The terminal is too small for this screen: it needs {min_width}x{}, this is {}x{}.",
                min_height + 2,
                area.width,
                area.height
            );
            frame.render_widget(
                Paragraph::new(text)
                    .style(self.theme.alert)
                    .wrap(ratatui::widgets::Wrap { trim: true }),
                body,
            );
        } else {
            view.draw(frame, body, &cx);
        }
        self.draw_footer(frame, footer, &cx);
        if let Some(Overlay::Confirm(dialog)) = &self.overlay {
            dialog.draw(frame, body, &self.theme);
        }
    }

    fn draw_header(&self, frame: &mut Frame, area: Rect, cx: &DrawCx) {
        let line = match &self.model.link {
            Link::Disconnected { reason } => Line::from(Span::styled(
                format!(" disconnected — retrying ({reason}); showing the last known state "),
                self.theme.alert,
            )),
            Link::Connecting => {
                Line::from(Span::styled(" connecting to the daemon… ", self.theme.busy))
            }
            Link::Connected { daemon } => {
                let mut spans = vec![
                    Span::styled(" fulmar ", self.theme.title),
                    Span::styled(self.top().title(cx.model), self.theme.text),
                ];
                if self.read_only {
                    spans.push(Span::styled("  [read-only]", self.theme.busy));
                }
                spans.push(Span::styled(format!("  {daemon}"), self.theme.dim));
                Line::from(spans)
            }
        };
        frame.render_widget(line, area);
    }

    fn draw_footer(&self, frame: &mut Frame, area: Rect, cx: &DrawCx) {
        if let Some(Overlay::Prompt(prompt)) = &self.overlay {
            prompt.draw(frame, area, &self.theme);
            return;
        }
        if let Some(notice) = &self.notice {
            let style = if notice.error {
                self.theme.bad
            } else {
                self.theme.good
            };
            frame.render_widget(Span::styled(notice.text.as_str(), style), area);
            return;
        }
        frame.render_widget(self.hints(cx), area);
    }

    /// The keys of the current screen, then the few global ones.
    fn hints(&self, cx: &DrawCx) -> Line<'static> {
        let context = self.top().context();
        let local = match context {
            Context::Global => Vec::new(),
            _ => self.keys.actions_of(context),
        };
        let global = [
            Action::Search,
            Action::CommandLine,
            Action::Help,
            Action::Back,
            Action::Quit,
        ];
        let text = self.top().takes_text();
        let mut spans = Vec::new();
        let global = global
            .into_iter()
            .filter(|a| !local.contains(a))
            .collect::<Vec<_>>();
        for action in local.into_iter().chain(global) {
            if cx.read_only && action.changes_host() {
                continue;
            }
            // On a form, a character key types itself: it means no action there.
            if let Some(key) = self
                .keys
                .hint(context, action)
                .filter(|k| !(text && k.types_text()))
            {
                spans.push(Span::styled(format!(" {key}"), self.theme.key));
                spans.push(Span::styled(format!(" {}", action.name()), self.theme.dim));
            }
        }
        Line::from(spans)
    }
}
