//! The TUI's main loop: terminal input, daemon updates and time in; frames
//! out, only when something changed, at most one per [`FRAME`], each inside a
//! synchronized update so a slow SSH link never shows half a frame.

use crate::api::time::now_ms;
use crate::ui::app::App;
use crate::ui::config::{Config, ConfigError};
use crate::ui::link::{self, Connect};
use crate::ui::message::{Command, Update};
use crate::ui::theme::ThemeName;
use crossterm::event::{Event, EventStream};
use futures_util::{Stream, StreamExt};
use ratatui::Terminal;
use ratatui::backend::Backend;
use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The shortest time between two frames: 60 a second at most, however fast
/// console lines arrive.
pub const FRAME: Duration = Duration::from_micros(16_667);
/// A drag of the window edge sends a storm of resizes; draw once it settles.
const RESIZE_SETTLE: Duration = Duration::from_millis(40);
/// Updates taken in one go before input gets a turn, so keys stay answered
/// during a flood of console lines.
const UPDATE_BATCH: usize = 4096;

/// How `fulmar` (no subcommand) runs the TUI.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub read_only: bool,
    /// Overrides the config file's theme.
    pub theme: Option<ThemeName>,
    /// Overrides where the config file is looked for.
    pub config: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error(
        "the TUI needs a terminal, and standard input or output is not one: run `fulmar` in a terminal, or use the subcommands (`fulmar list`, `fulmar console NAME`, ...) from scripts"
    )]
    NoTerminal,
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("the terminal failed: {0}")]
    Terminal(#[from] io::Error),
}

/// Loads the config, checks for a terminal: what can fail before the screen changes.
pub fn prepare(options: &Options) -> Result<Config, UiError> {
    let mut config = match options.config.clone().or_else(Config::default_path) {
        Some(path) => Config::load(&path)?,
        None => Config::default(),
    };
    if let Some(theme) = options.theme {
        config.theme = theme;
    }
    // crossterm's event stream panics without a terminal: refuse first.
    if !io::stdin().is_terminal() || !io::stdout().is_terminal() {
        return Err(UiError::NoTerminal);
    }
    Ok(config)
}

/// Runs the TUI until the operator quits. The terminal is restored on every
/// way out, panics included (ratatui's hook).
pub async fn run(options: Options, config: Config, connect: Connect) -> Result<(), UiError> {
    let (updates_tx, mut updates) = mpsc::channel(UPDATE_BATCH);
    let commands = link::spawn(connect, updates_tx);
    let mut app = App::new(config, options.read_only);
    let mut terminal = ratatui::try_init()?;
    let outcome = drive(
        &mut terminal,
        &mut app,
        EventStream::new(),
        &mut updates,
        &commands,
        true,
    )
    .await;
    ratatui::try_restore()?;
    Ok(outcome?)
}

/// The loop itself, over any backend and input stream, so tests can drive
/// it; `sync` wraps frames in synchronized updates (real terminals only).
pub async fn drive<B, S>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    mut input: S,
    updates: &mut mpsc::Receiver<Update>,
    commands: &mpsc::UnboundedSender<Command>,
    sync: bool,
) -> io::Result<()>
where
    B: Backend,
    B::Error: Into<io::Error>,
    S: Stream<Item = io::Result<Event>> + Unpin,
{
    // An ssh session that drops sends SIGHUP: leave cleanly so the terminal is restored.
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut last_frame: Option<Instant> = None;
    let mut settle_until: Option<Instant> = None;
    let mut updates_open = true;
    while !app.quitting() {
        // Asked before the sleep: asked after it, the next change is always
        // still ahead, and the screen would never catch up with the clock.
        let change_at = app.next_change_ms(now_ms());
        let wake = next_wake(app, last_frame, settle_until, change_at);
        tokio::select! {
            event = input.next() => match event {
                Some(Ok(Event::Key(key))) => send(commands, app.on_key(key, now_ms())),
                Some(Ok(Event::Resize(..))) => {
                    app.on_resize();
                    settle_until = Some(Instant::now() + RESIZE_SETTLE);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
            update = updates.recv(), if updates_open => match update {
                Some(update) => {
                    send(commands, app.on_update(update, now_ms()));
                    // Take what else is waiting: one frame for the whole burst.
                    for _ in 1..UPDATE_BATCH {
                        match updates.try_recv() {
                            Ok(update) => send(commands, app.on_update(update, now_ms())),
                            Err(_) => break,
                        }
                    }
                }
                None => updates_open = false,
            },
            () = sleep_until(wake) => {
                if settle_until.is_some_and(|t| t <= Instant::now()) {
                    settle_until = None;
                }
                if change_at.is_some_and(|at| at <= now_ms()) {
                    app.on_resize();
                }
                if settle_until.is_none() && app.take_dirty() {
                    draw(terminal, app, sync)?;
                    last_frame = Some(Instant::now());
                }
            }
            _ = hangup.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        }
    }
    Ok(())
}

/// When the loop should next look at drawing: as soon as the frame budget
/// allows if something changed, else when the screen changes with time.
fn next_wake(
    app: &App,
    last_frame: Option<Instant>,
    settle_until: Option<Instant>,
    change_at: Option<u64>,
) -> Option<Instant> {
    if let Some(settle) = settle_until {
        return Some(settle);
    }
    if app.is_dirty() {
        return Some(last_frame.map_or_else(Instant::now, |t| t + FRAME));
    }
    let now = now_ms();
    change_at.map(|at| Instant::now() + Duration::from_millis(at.saturating_sub(now)))
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn send(link: &mpsc::UnboundedSender<Command>, commands: Vec<Command>) {
    for command in commands {
        // A link that has stopped takes nothing; the banner already says so.
        let _ = link.send(command);
    }
}

fn draw<B>(terminal: &mut Terminal<B>, app: &App, sync: bool) -> io::Result<()>
where
    B: Backend,
    B::Error: Into<io::Error>,
{
    if sync {
        crossterm::execute!(io::stdout(), crossterm::terminal::BeginSynchronizedUpdate)?;
    }
    let now = now_ms();
    terminal
        .draw(|frame| app.draw(frame, now))
        .map_err(Into::into)?;
    if sync {
        crossterm::execute!(io::stdout(), crossterm::terminal::EndSynchronizedUpdate)?;
    }
    Ok(())
}
