//! The screens, one module each, and the contract between them and the app.
//!
//! A screen is a [`View`]: it turns actions into [`Effect`]s (commands for the
//! daemon, navigation, dialogs) and draws itself from the model. Drawing takes
//! `&self`, so a frame cannot change state; only actions and updates do.

pub mod blocks;
pub mod console;
pub mod create;
pub mod details;
pub mod help;
pub mod policy;
pub mod unikernels;

use crate::api::label::Label;
use crate::ui::keymap::{Action, Context, KeyMap};
use crate::ui::message::{Command, FormReply};
use crate::ui::model::Model;
use crate::ui::theme::Theme;
use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::Rect;

/// What a screen may read while it draws.
pub struct DrawCx<'a> {
    pub model: &'a Model,
    pub theme: &'a Theme,
    pub keys: &'a KeyMap,
    pub now_ms: u64,
    pub read_only: bool,
}

/// What a screen may do while it handles an action: change the model (a
/// console's lines, say) and ask for effects, which the app carries out.
pub struct Cx<'a> {
    pub model: &'a mut Model,
    pub now_ms: u64,
    effects: Vec<Effect>,
}

impl<'a> Cx<'a> {
    pub fn new(model: &'a mut Model, now_ms: u64) -> Cx<'a> {
        Cx {
            model,
            now_ms,
            effects: Vec::new(),
        }
    }

    pub fn effect(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    pub fn into_effects(self) -> Vec<Effect> {
        self.effects
    }
}

/// Something a screen asks the app to do.
pub enum Effect {
    Send(Command),
    /// Start streaming this console into the model (counted: the link is
    /// asked once, however many panes show it).
    Watch(Label),
    Unwatch(Label),
    Push(Box<dyn View>),
    /// Close the current screen.
    Pop,
    Confirm(Confirm),
    Ask(Ask),
    Notice(Notice),
}

/// A dangerous step, put to the operator first. Cancel is the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    pub title: String,
    /// What exactly will happen, one sentence a line.
    pub lines: Vec<String>,
    /// The label of the button that goes ahead, e.g. "Destroy web".
    pub yes: String,
    pub then: Then,
}

/// What a confirmed dialog does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    Send(Command),
    /// Hand the answer back to the screen that asked.
    Answer(Question, String),
}

/// A line of text to ask the operator for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub question: Question,
    pub prompt: String,
    pub initial: String,
}

/// Which question an answer belongs to, so the asking screen can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    /// Where to save the focused console.
    SavePath,
    /// A new block device: its name, then its size, then an optional file.
    BlockName,
    BlockSize,
    BlockData,
    /// The local file to upload into the selected block device.
    UploadPath,
    /// The local file to download the selected block device to.
    DownloadPath,
    /// Whether to leave a form and lose what was typed.
    Discard,
    /// Whether to restart a unikernel with the settings of the edit form.
    Reconfigure,
}

/// A message on the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub text: String,
    pub error: bool,
}

impl Notice {
    pub fn info(text: impl Into<String>) -> Effect {
        Effect::Notice(Notice {
            text: text.into(),
            error: false,
        })
    }

    pub fn error(text: impl Into<String>) -> Effect {
        Effect::Notice(Notice {
            text: text.into(),
            error: true,
        })
    }
}

/// One screen of the TUI.
pub trait View {
    /// Which key bindings apply here.
    fn context(&self) -> Context;

    /// The title in the header.
    fn title(&self, model: &Model) -> String;

    /// Handles an action; false when it means nothing here (the app then
    /// tries its global meaning).
    fn on_action(&mut self, action: Action, cx: &mut Cx) -> bool;

    /// `/` text as the operator types it; false when the screen has no search.
    fn on_search(&mut self, _text: &str, _cx: &mut Cx) -> bool {
        false
    }

    /// The answer to a question this screen asked.
    fn on_answer(&mut self, _question: Question, _answer: String, _cx: &mut Cx) {}

    /// Whether the screen has text fields: then every key that types a
    /// character, and every key the map leaves unbound (backspace, delete),
    /// goes to [`View::on_text`] instead of meaning an action.
    fn takes_text(&self) -> bool {
        false
    }

    /// A key for the focused text field (see [`View::takes_text`]).
    fn on_text(&mut self, _key: KeyEvent, _cx: &mut Cx) {}

    /// The daemon's or the link's answer to a command a form sent; it goes
    /// to the screen on top, the form that is waiting for it.
    fn on_form_reply(&mut self, _reply: FormReply, _cx: &mut Cx) {}

    /// The screen opens: take what it needs (console subscriptions).
    fn on_open(&mut self, _cx: &mut Cx) {}

    /// The model changed; keep selections and scroll positions valid.
    fn on_model(&mut self, _model: &Model) {}

    /// The screen is closing: release what it holds (console subscriptions).
    fn on_close(&mut self, _cx: &mut Cx) {}

    fn draw(&self, frame: &mut Frame, area: Rect, cx: &DrawCx);

    /// The smallest area this screen can draw in; below it the app says
    /// "too small" instead.
    fn min_size(&self) -> (u16, u16) {
        (40, 5)
    }

    /// When what this screen shows changes with time alone (an uptime, a
    /// countdown), the wall-clock millisecond of the next change.
    fn next_change_ms(&self, _cx: &DrawCx) -> Option<u64> {
        None
    }
}
