//! Keys and what they do. Every binding lives here, so the help screen (built
//! from this table) is always true, and the config file can rebind any of it.
//!
//! Bindings are looked up in the current screen's context first, then in the
//! global one, so `n` can mean "next match" in a console and "new" elsewhere.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use std::collections::BTreeMap;
use std::fmt;

/// Where a binding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Context {
    Global,
    Unikernels,
    Details,
    Console,
    Blocks,
    /// The create and edit form, where typed characters go to its fields.
    Form,
}

impl Context {
    #[cfg(test)]
    pub const ALL: [Context; 6] = [
        Context::Global,
        Context::Unikernels,
        Context::Details,
        Context::Console,
        Context::Blocks,
        Context::Form,
    ];

    /// The section name in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Context::Global => "global",
            Context::Unikernels => "unikernels",
            Context::Details => "details",
            Context::Console => "console",
            Context::Blocks => "blocks",
            Context::Form => "form",
        }
    }
}

/// What the operator can ask for with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Quit,
    Help,
    Back,
    CommandLine,
    Search,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Left,
    Right,
    Select,
    NextPane,
    PreviousPane,
    ShowBlocks,
    ShowPolicy,
    ShowConsole,
    Restart,
    Destroy,
    Remove,
    Create,
    Edit,
    SortNext,
    SortReverse,
    Follow,
    Wrap,
    Timestamps,
    NextMatch,
    PreviousMatch,
    Save,
    Clear,
    Merge,
    ClosePane,
    BlockCreate,
    Upload,
    Download,
    BlockDestroy,
    CancelTransfer,
}

impl Action {
    /// Every action, in the order help lists them.
    pub const ALL: [Action; 40] = [
        Action::Quit,
        Action::Help,
        Action::Back,
        Action::CommandLine,
        Action::Search,
        Action::Up,
        Action::Down,
        Action::PageUp,
        Action::PageDown,
        Action::Top,
        Action::Bottom,
        Action::Left,
        Action::Right,
        Action::Select,
        Action::NextPane,
        Action::PreviousPane,
        Action::ShowBlocks,
        Action::ShowPolicy,
        Action::ShowConsole,
        Action::Restart,
        Action::Destroy,
        Action::Remove,
        Action::Create,
        Action::Edit,
        Action::SortNext,
        Action::SortReverse,
        Action::Follow,
        Action::Wrap,
        Action::Timestamps,
        Action::NextMatch,
        Action::PreviousMatch,
        Action::Save,
        Action::Clear,
        Action::Merge,
        Action::ClosePane,
        Action::BlockCreate,
        Action::Upload,
        Action::Download,
        Action::BlockDestroy,
        Action::CancelTransfer,
    ];

    /// The name the config file uses.
    pub fn name(self) -> &'static str {
        self.info().0
    }

    /// One line for the help screen.
    pub fn description(self) -> &'static str {
        self.info().1
    }

    /// Whether the action changes the host. `--read-only` takes away exactly these.
    pub fn changes_host(self) -> bool {
        matches!(
            self,
            Action::Restart
                | Action::Destroy
                | Action::Remove
                | Action::Create
                | Action::Edit
                | Action::BlockCreate
                | Action::Upload
                | Action::BlockDestroy
        )
    }

    fn info(self) -> (&'static str, &'static str) {
        match self {
            Action::Quit => ("quit", "quit fulmar"),
            Action::Help => ("help", "show this help"),
            Action::Back => ("back", "go back, close the dialog"),
            Action::CommandLine => ("command", "command line (:blocks, :console NAME, :q)"),
            Action::Search => ("search", "filter the list, find in a console"),
            Action::Up => ("up", "move up"),
            Action::Down => ("down", "move down"),
            Action::PageUp => ("page-up", "one page up"),
            Action::PageDown => ("page-down", "one page down"),
            Action::Top => ("top", "go to the top"),
            Action::Bottom => ("bottom", "go to the bottom"),
            Action::Left => ("left", "move left"),
            Action::Right => ("right", "move right"),
            Action::Select => ("select", "open, confirm"),
            Action::NextPane => ("next-pane", "focus the next pane or field"),
            Action::PreviousPane => ("previous-pane", "focus the previous pane or field"),
            Action::ShowBlocks => ("blocks", "block devices"),
            Action::ShowPolicy => ("policy", "host policy"),
            Action::ShowConsole => ("console", "open the console"),
            Action::Restart => ("restart", "restart the unikernel"),
            Action::Destroy => ("destroy", "stop the unikernel"),
            Action::Remove => ("remove", "forget a stopped unikernel"),
            Action::Create => ("create", "create a unikernel"),
            Action::Edit => ("edit", "restart with changed settings"),
            Action::SortNext => ("sort", "sort by the next column"),
            Action::SortReverse => ("sort-reverse", "reverse the sort order"),
            Action::Follow => ("follow", "follow new lines on or off"),
            Action::Wrap => ("wrap", "wrap long lines on or off"),
            Action::Timestamps => ("timestamps", "timestamps on or off"),
            Action::NextMatch => ("next-match", "next match"),
            Action::PreviousMatch => ("previous-match", "previous match"),
            Action::Save => ("save", "save the console to a file"),
            Action::Clear => ("clear", "clear the pane (the daemon keeps the history)"),
            Action::Merge => ("merge", "merge panes or put them side by side"),
            Action::ClosePane => ("close-pane", "close the focused pane"),
            Action::BlockCreate => ("create", "create a block device"),
            Action::Upload => ("upload", "upload a file into the device"),
            Action::Download => ("download", "download the device to a file"),
            Action::BlockDestroy => ("destroy", "destroy the block device"),
            Action::CancelTransfer => ("cancel", "cancel the transfer"),
        }
    }
}

/// A key with its modifiers, as the config file writes it: `q`, `X`,
/// `ctrl-c`, `enter`, `pgdn`, `f5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    code: KeyCodeOrd,
    ctrl: bool,
    alt: bool,
}

/// The subset of crossterm's key codes fulmar binds, in an ordered form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum KeyCodeOrd {
    Char(char),
    F(u8),
    Named(Named),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Named {
    Enter,
    Esc,
    Tab,
    BackTab,
    Backspace,
    Delete,
    Insert,
    Up,
    Down,
    Left,
    Right,
    Home,
    End,
    PageUp,
    PageDown,
}

const NAMED: [(Named, &str, KeyCode); 15] = [
    (Named::Enter, "enter", KeyCode::Enter),
    (Named::Esc, "esc", KeyCode::Esc),
    (Named::Tab, "tab", KeyCode::Tab),
    (Named::BackTab, "backtab", KeyCode::BackTab),
    (Named::Backspace, "backspace", KeyCode::Backspace),
    (Named::Delete, "delete", KeyCode::Delete),
    (Named::Insert, "insert", KeyCode::Insert),
    (Named::Up, "up", KeyCode::Up),
    (Named::Down, "down", KeyCode::Down),
    (Named::Left, "left", KeyCode::Left),
    (Named::Right, "right", KeyCode::Right),
    (Named::Home, "home", KeyCode::Home),
    (Named::End, "end", KeyCode::End),
    (Named::PageUp, "pgup", KeyCode::PageUp),
    (Named::PageDown, "pgdn", KeyCode::PageDown),
];

impl Key {
    /// The key a terminal event stands for; `None` for releases and keys
    /// fulmar never binds.
    pub fn from_event(event: &KeyEvent) -> Option<Key> {
        if event.kind == KeyEventKind::Release {
            return None;
        }
        let code = match event.code {
            KeyCode::Char(c) => KeyCodeOrd::Char(c),
            KeyCode::F(n) => KeyCodeOrd::F(n),
            other => KeyCodeOrd::Named(NAMED.iter().find(|(_, _, c)| *c == other)?.0),
        };
        Some(Key {
            code,
            ctrl: event.modifiers.contains(KeyModifiers::CONTROL),
            alt: event.modifiers.contains(KeyModifiers::ALT),
        })
    }

    /// Whether the key types a character into a text field (no Ctrl or Alt):
    /// on a screen that takes text it goes there, whatever it is bound to.
    pub fn types_text(&self) -> bool {
        matches!(self.code, KeyCodeOrd::Char(_)) && !self.ctrl && !self.alt
    }

    /// The crossterm event this key makes, for tests that type keys.
    #[cfg(test)]
    pub fn event(self) -> KeyEvent {
        let code = match self.code {
            KeyCodeOrd::Char(c) => KeyCode::Char(c),
            KeyCodeOrd::F(n) => KeyCode::F(n),
            KeyCodeOrd::Named(n) => NAMED
                .iter()
                .find(|(named, _, _)| *named == n)
                .map_or(KeyCode::Null, |(_, _, code)| *code),
        };
        let mut modifiers = KeyModifiers::NONE;
        modifiers.set(KeyModifiers::CONTROL, self.ctrl);
        modifiers.set(KeyModifiers::ALT, self.alt);
        if let KeyCodeOrd::Char(c) = self.code
            && c.is_uppercase()
        {
            modifiers.insert(KeyModifiers::SHIFT);
        }
        KeyEvent::new(code, modifiers)
    }
}

impl std::str::FromStr for Key {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Key, KeyError> {
        let bad = || KeyError(text.to_string());
        let mut key = Key {
            code: KeyCodeOrd::Char(' '),
            ctrl: false,
            alt: false,
        };
        let mut rest = text;
        loop {
            if let Some(r) = rest.strip_prefix("ctrl-") {
                key.ctrl = true;
                rest = r;
            } else if let Some(r) = rest.strip_prefix("alt-") {
                key.alt = true;
                rest = r;
            } else {
                break;
            }
        }
        let mut chars = rest.chars();
        key.code = match (chars.next(), chars.next()) {
            (Some(c), None) if !c.is_control() => KeyCodeOrd::Char(c),
            _ if rest == "space" => KeyCodeOrd::Char(' '),
            _ => {
                if let Some(n) = rest.strip_prefix('f').and_then(|n| n.parse::<u8>().ok()) {
                    KeyCodeOrd::F(n)
                } else {
                    let (named, _, _) = NAMED
                        .iter()
                        .find(|(_, name, _)| *name == rest)
                        .ok_or_else(bad)?;
                    KeyCodeOrd::Named(*named)
                }
            }
        };
        Ok(key)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ctrl {
            f.write_str("ctrl-")?;
        }
        if self.alt {
            f.write_str("alt-")?;
        }
        match self.code {
            KeyCodeOrd::Char(' ') => f.write_str("space"),
            KeyCodeOrd::Char(c) => write!(f, "{c}"),
            KeyCodeOrd::F(n) => write!(f, "f{n}"),
            KeyCodeOrd::Named(n) => {
                let name = NAMED
                    .iter()
                    .find(|(named, _, _)| *named == n)
                    .map_or("?", |(_, name, _)| *name);
                f.write_str(name)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a key: write a character (`q`, `X`), `ctrl-` or `alt-` and a key, or one of enter, esc, tab, backtab, backspace, delete, insert, up, down, left, right, home, end, pgup, pgdn, space, f1..f12"
)]
pub struct KeyError(pub String);

/// Which action each key stands for, per context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMap {
    bindings: BTreeMap<(Context, Key), Action>,
}

/// The bindings fulmar ships with: vim keys and arrows, nothing destructive on
/// a bare Ctrl chord (tmux and ssh users keep theirs).
const DEFAULTS: &[(Context, &str, Action)] = &[
    (Context::Global, "q", Action::Quit),
    (Context::Global, "ctrl-c", Action::Quit),
    (Context::Global, "?", Action::Help),
    (Context::Global, "esc", Action::Back),
    (Context::Global, ":", Action::CommandLine),
    (Context::Global, "/", Action::Search),
    (Context::Global, "k", Action::Up),
    (Context::Global, "up", Action::Up),
    (Context::Global, "j", Action::Down),
    (Context::Global, "down", Action::Down),
    (Context::Global, "pgup", Action::PageUp),
    (Context::Global, "pgdn", Action::PageDown),
    (Context::Global, "g", Action::Top),
    (Context::Global, "home", Action::Top),
    (Context::Global, "G", Action::Bottom),
    (Context::Global, "end", Action::Bottom),
    (Context::Global, "h", Action::Left),
    (Context::Global, "left", Action::Left),
    (Context::Global, "l", Action::Right),
    (Context::Global, "right", Action::Right),
    (Context::Global, "enter", Action::Select),
    (Context::Global, "tab", Action::NextPane),
    (Context::Global, "b", Action::ShowBlocks),
    (Context::Global, "p", Action::ShowPolicy),
    (Context::Unikernels, "c", Action::ShowConsole),
    (Context::Unikernels, "r", Action::Restart),
    (Context::Unikernels, "x", Action::Destroy),
    (Context::Unikernels, "X", Action::Remove),
    (Context::Unikernels, "n", Action::Create),
    (Context::Unikernels, "s", Action::SortNext),
    (Context::Unikernels, "S", Action::SortReverse),
    (Context::Details, "c", Action::ShowConsole),
    (Context::Details, "r", Action::Restart),
    (Context::Details, "x", Action::Destroy),
    (Context::Details, "X", Action::Remove),
    (Context::Details, "e", Action::Edit),
    (Context::Console, "f", Action::Follow),
    (Context::Console, "w", Action::Wrap),
    (Context::Console, "t", Action::Timestamps),
    (Context::Console, "n", Action::NextMatch),
    (Context::Console, "N", Action::PreviousMatch),
    (Context::Console, "s", Action::Save),
    (Context::Console, "C", Action::Clear),
    (Context::Console, "m", Action::Merge),
    (Context::Console, "x", Action::ClosePane),
    (Context::Blocks, "n", Action::BlockCreate),
    (Context::Blocks, "u", Action::Upload),
    (Context::Blocks, "d", Action::Download),
    (Context::Blocks, "x", Action::BlockDestroy),
    (Context::Blocks, "c", Action::CancelTransfer),
    (Context::Form, "tab", Action::NextPane),
    (Context::Form, "backtab", Action::PreviousPane),
    (Context::Form, "enter", Action::Select),
    // `?` types itself into a field.
    (Context::Form, "f1", Action::Help),
];

/// Why a key binding from the config file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("[keys.{context}]: there is no action `{action}` there; the actions are: {known}")]
    UnknownAction {
        context: &'static str,
        action: String,
        known: String,
    },
    #[error("[keys.{context}] {action}: {source}")]
    BadKey {
        context: &'static str,
        action: String,
        source: KeyError,
    },
}

impl Default for KeyMap {
    fn default() -> KeyMap {
        let bindings = DEFAULTS
            .iter()
            .filter_map(|(ctx, key, action)| Some(((*ctx, key.parse().ok()?), *action)))
            .collect();
        KeyMap { bindings }
    }
}

impl KeyMap {
    /// The action `key` stands for on a screen of `context`.
    pub fn action(&self, context: Context, key: Key) -> Option<Action> {
        self.bindings
            .get(&(context, key))
            .or_else(|| self.bindings.get(&(Context::Global, key)))
            .copied()
    }

    /// Binds `action` in `context` to `keys` instead of its default keys.
    pub fn rebind(
        &mut self,
        context: Context,
        action: &str,
        keys: &[String],
    ) -> Result<(), BindError> {
        let Some(action) = self
            .actions_of(context)
            .into_iter()
            .find(|a| a.name() == action)
        else {
            let known = self
                .actions_of(context)
                .iter()
                .map(|a| a.name())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(BindError::UnknownAction {
                context: context.name(),
                action: action.to_string(),
                known,
            });
        };
        let parsed = keys
            .iter()
            .map(|k| k.parse::<Key>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| BindError::BadKey {
                context: context.name(),
                action: action.name().to_string(),
                source,
            })?;
        self.bindings
            .retain(|(ctx, _), a| !(*ctx == context && *a == action));
        for key in parsed {
            self.bindings.insert((context, key), action);
        }
        Ok(())
    }

    /// The actions bound in `context` (not counting global ones), in help order.
    pub fn actions_of(&self, context: Context) -> Vec<Action> {
        let mut actions: Vec<Action> = DEFAULTS
            .iter()
            .filter(|(ctx, _, _)| *ctx == context)
            .map(|(_, _, a)| *a)
            .collect();
        actions.sort();
        actions.dedup();
        actions
    }

    /// The keys bound to `action` in `context`, for help and hints.
    pub fn keys_of(&self, context: Context, action: Action) -> Vec<Key> {
        self.bindings
            .iter()
            .filter(|((ctx, _), a)| *ctx == context && **a == action)
            .map(|((_, key), _)| *key)
            .collect()
    }

    /// A key for `action` as the screen in `context` sees it, for
    /// hints like "x destroy"; `None` when it has been unbound.
    pub fn hint(&self, context: Context, action: Action) -> Option<Key> {
        let local = self.keys_of(context, action);
        let keys = if local.is_empty() {
            self.keys_of(Context::Global, action)
        } else {
            local
        };
        // A plain key reads better in a hint than a chord.
        keys.iter()
            .find(|k| !k.ctrl && !k.alt)
            .or(keys.first())
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> Key {
        text.parse().unwrap()
    }

    #[test]
    fn every_default_key_parses() {
        for (_, text, _) in DEFAULTS {
            let parsed: Key = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed.to_string(), *text);
        }
    }

    #[test]
    fn keys_round_trip_through_crossterm_events() {
        for text in [
            "q", "X", "ctrl-c", "alt-x", "enter", "pgdn", "f5", "space", "?",
        ] {
            let k = key(text);
            assert_eq!(Key::from_event(&k.event()), Some(k), "{text}");
        }
    }

    #[test]
    fn bad_keys_are_refused_with_the_text() {
        for text in ["", "ctrl-", "qq", "hyper-q", "pageup"] {
            let err = text.parse::<Key>().unwrap_err();
            assert_eq!(err.0, text);
        }
    }

    #[test]
    fn screen_bindings_win_over_global_ones() {
        let map = KeyMap::default();
        assert_eq!(
            map.action(Context::Console, key("n")),
            Some(Action::NextMatch)
        );
        assert_eq!(
            map.action(Context::Unikernels, key("n")),
            Some(Action::Create)
        );
        assert_eq!(map.action(Context::Console, key("q")), Some(Action::Quit));
        assert_eq!(map.action(Context::Console, key("r")), None);
    }

    #[test]
    fn nothing_destructive_sits_on_a_ctrl_chord() {
        let map = KeyMap::default();
        for ((_, key), action) in &map.bindings {
            if action.changes_host() {
                assert!(!key.ctrl && !key.alt, "{action:?} on {key}");
            }
        }
    }

    #[test]
    fn rebinding_replaces_the_default_keys() {
        let mut map = KeyMap::default();
        map.rebind(
            Context::Unikernels,
            "destroy",
            &["D".into(), "delete".into()],
        )
        .unwrap();
        assert_eq!(map.action(Context::Unikernels, key("x")), None);
        assert_eq!(
            map.action(Context::Unikernels, key("D")),
            Some(Action::Destroy)
        );
        assert_eq!(
            map.action(Context::Unikernels, key("delete")),
            Some(Action::Destroy)
        );
        assert_eq!(
            map.action(Context::Details, key("x")),
            Some(Action::Destroy)
        );
    }

    #[test]
    fn bad_bindings_are_refused_and_change_nothing() {
        let mut map = KeyMap::default();
        let before = map.clone();
        let err = map
            .rebind(Context::Console, "explode", &["e".into()])
            .unwrap_err();
        assert!(err.to_string().contains("follow"), "{err}");
        let err = map
            .rebind(Context::Console, "follow", &["F".into(), "nope".into()])
            .unwrap_err();
        assert!(err.to_string().contains("`nope` is not a key"), "{err}");
        assert_eq!(map, before);
    }
}
