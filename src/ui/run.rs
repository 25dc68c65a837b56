//! The TUI's main loop: terminal input, daemon updates and time in; frames
//! out, only when something changed, at most one per [`FRAME`], each inside a
//! synchronized update so a slow SSH link never shows half a frame.

use crate::api::time;
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

/// The wall clock as the loop reads it: the system's at start, then moved on
/// by tokio's monotonic clock, so a test with a paused clock controls it.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall_ms: u64,
    start: Instant,
}

impl Clock {
    pub fn system() -> Clock {
        Clock::starting_at(time::now_ms())
    }

    pub fn starting_at(wall_ms: u64) -> Clock {
        Clock {
            wall_ms,
            start: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.wall_ms.saturating_add(elapsed)
    }
}

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
        Clock::system(),
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
    clock: Clock,
    sync: bool,
) -> io::Result<()>
where
    B: Backend,
    B::Error: std::error::Error + Send + Sync + 'static,
    S: Stream<Item = io::Result<Event>> + Unpin,
{
    // An ssh session that drops sends SIGHUP: leave cleanly so the terminal is restored.
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut last_frame: Option<Instant> = None;
    let mut settle_until: Option<Instant> = None;
    let mut updates_open = true;
    while !app.quitting() {
        let wake = next_wake(app, &clock, last_frame, settle_until);
        tokio::select! {
            event = input.next() => match event {
                Some(Ok(Event::Key(key))) => send(commands, app.on_key(key, clock.now_ms())),
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
                    send(commands, app.on_update(update, clock.now_ms()));
                    // Take what else is waiting: one frame for the whole burst.
                    for _ in 1..UPDATE_BATCH {
                        match updates.try_recv() {
                            Ok(update) => send(commands, app.on_update(update, clock.now_ms())),
                            Err(_) => break,
                        }
                    }
                }
                None => updates_open = false,
            },
            () = sleep_until(wake) => {
                match settle_until {
                    Some(t) if t <= Instant::now() => settle_until = None,
                    Some(_) => {}
                    // Nothing changed, so this is the moment the screen changes with time.
                    None if !app.is_dirty() => app.on_resize(),
                    None => {}
                }
                if settle_until.is_none() && app.take_dirty() {
                    draw(terminal, app, clock.now_ms(), sync)?;
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
    clock: &Clock,
    last_frame: Option<Instant>,
    settle_until: Option<Instant>,
) -> Option<Instant> {
    if let Some(settle) = settle_until {
        return Some(settle);
    }
    if app.is_dirty() {
        return Some(last_frame.map_or_else(Instant::now, |t| t + FRAME));
    }
    let now = clock.now_ms();
    app.next_change_ms(now)
        .map(|at| Instant::now() + Duration::from_millis(at.saturating_sub(now)))
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

fn draw<B>(terminal: &mut Terminal<B>, app: &App, now: u64, sync: bool) -> io::Result<()>
where
    B: Backend,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if sync {
        crossterm::execute!(io::stdout(), crossterm::terminal::BeginSynchronizedUpdate)?;
    }
    terminal
        .draw(|frame| app.draw(frame, now))
        .map_err(io::Error::other)?;
    if sync {
        crossterm::execute!(io::stdout(), crossterm::terminal::EndSynchronizedUpdate)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::unikernel::{ExitStatus, UnikernelInfo};
    use crate::ui::config::Config;
    use crate::ui::fixtures::{NOW_MS, console_line, exited, label, running};
    use crate::ui::keymap::Key;
    use crossterm::event::{KeyCode, KeyEvent};
    use ratatui::backend::TestBackend;

    fn key(text: &str) -> io::Result<Event> {
        Ok(Event::Key(text.parse::<Key>().unwrap().event()))
    }

    fn typed(text: &str) -> Vec<io::Result<Event>> {
        text.chars()
            .map(|c| Ok(Event::Key(KeyEvent::from(KeyCode::Char(c)))))
            .collect()
    }

    /// What a run of the loop left behind.
    struct Ran {
        app: App,
        frames: usize,
        screen: String,
    }

    /// Runs the loop on a TestBackend: `script` feeds it updates and keys and
    /// ends by sending `q`.
    async fn run_loop<F, Fut>(script: F) -> Ran
    where
        F: FnOnce(mpsc::UnboundedSender<io::Result<Event>>, mpsc::Sender<Update>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (input, input_rx) = mpsc::unbounded_channel();
        let (updates, mut updates_rx) = mpsc::channel(UPDATE_BATCH);
        let (commands, _commands_rx) = mpsc::unbounded_channel();
        let feeder = tokio::spawn(script(input, updates));
        let mut app = App::new(Config::default(), false);
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        let stream = Box::pin(futures_util::stream::unfold(
            input_rx,
            |mut rx| async move { rx.recv().await.map(|event| (event, rx)) },
        ));
        drive(
            &mut terminal,
            &mut app,
            stream,
            &mut updates_rx,
            &commands,
            Clock::starting_at(NOW_MS),
            false,
        )
        .await
        .unwrap();
        feeder.await.unwrap();
        Ran {
            app,
            frames: terminal.get_frame().count(),
            screen: terminal.backend().to_string(),
        }
    }

    /// Waits until the loop has taken every update sent so far: keys and
    /// updates race in the loop, and a key must not overtake what it acts on.
    async fn drained(updates: &mpsc::Sender<Update>) {
        while updates.capacity() < updates.max_capacity() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn connect(updates: &mpsc::Sender<Update>, list: Vec<UnikernelInfo>) {
        let connected = Update::Connected {
            daemon: "test".into(),
        };
        updates.send(connected).await.unwrap();
        updates.send(Update::Unikernels(list)).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_screen_draws_no_frames() {
        let idle_for = |pause: Duration| {
            run_loop(move |input, updates| async move {
                connect(&updates, vec![exited("done", ExitStatus::Code(0))]).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                tokio::time::sleep(pause).await;
                input.send(key("q")).unwrap();
            })
        };
        let brief = idle_for(Duration::ZERO).await.frames;
        let long = idle_for(Duration::from_secs(10)).await.frames;
        assert_eq!(brief, long, "ten idle seconds drew frames");
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_unikernel_redraws_when_its_uptime_text_changes_and_only_then() {
        let ran = run_loop(|input, updates| async move {
            // Up 59.5 s: "59s", then "1m" half a second later, then nothing for 50 s.
            connect(&updates, vec![running("web", 59_500)]).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mid_minute = 50;
            tokio::time::sleep(Duration::from_secs(mid_minute)).await;
            input.send(key("q")).unwrap();
        })
        .await;
        assert!(ran.screen.contains(" 1m "), "{}", ran.screen);
        assert!(ran.frames <= 3, "{} frames in 51 s", ran.frames);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_console_lines_is_drawn_at_most_sixty_times_a_second() {
        const LINES: u64 = 20_000;
        let started = Instant::now();
        let ran = run_loop(|input, updates| async move {
            connect(&updates, vec![running("web", 0)]).await;
            drained(&updates).await;
            input.send(key(":")).unwrap();
            typed("console web")
                .into_iter()
                .for_each(|k| input.send(k).unwrap());
            input.send(key("enter")).unwrap();
            for seq in 1..=LINES {
                let line = console_line(seq, "a line of console output");
                updates.send(line).await.unwrap();
                if seq % 1_000 == 0 {
                    // The daemon streams in bursts; let a little time pass between them.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            drained(&updates).await;
            input.send(key("q")).unwrap();
        })
        .await;
        let elapsed = started.elapsed();
        let budget = 2 + (elapsed.as_secs_f64() / FRAME.as_secs_f64()).ceil() as usize;
        assert!(ran.frames <= budget, "{} frames in {elapsed:?}", ran.frames);
        let buffer = ran.app.model.consoles.get(&label("web"));
        let last = buffer.and_then(|b| b.lines().back().map(|l| l.seq));
        assert_eq!(last, Some(LINES), "every line arrived");
    }
}
