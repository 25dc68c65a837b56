//! The TUI end to end: the real `fulmar` binary in a pseudo-terminal,
//! read back through a vt100 parser, against a real daemon running the test
//! tender. Each test is one thing an operator does.

use crate::support;

use fulmar::api::image::Target;
use fulmar::ui::theme::{Theme, ThemeName};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use support::daemon::{Host, eventually};
use support::images::Spec;
use support::pty::{PATIENCE, Pty};

const WIDTH: u16 = 200;
const HEIGHT: u16 = 40;

fn image() -> String {
    Spec::new(Target::Hvt, &[]).path().display().to_string()
}

/// A daemon with `name` created running `script` on the test tender.
fn host_with(unikernels: &[(&str, &[&str])]) -> Host {
    let mut host = Host::new();
    host.start(&[]);
    for (name, script) in unikernels {
        let image = image();
        let mut args = vec!["create", name, image.as_str(), "--"];
        args.extend_from_slice(script);
        host.ok(&args);
    }
    host
}

/// The list row of `name` on the screen, as text ("" when not listed).
fn row_of(screen: &vt100::Screen, name: &str) -> String {
    screen
        .contents()
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_default()
        .to_string()
}

/// Waits until the list shows `name` in `state`.
fn wait_row(tui: &Pty, name: &str, state: &str) {
    tui.wait_until(&format!("{name} listed {state}"), PATIENCE, |screen| {
        row_of(screen, name).contains(state)
    });
}

/// The TUI on `host`, once its list shows `first` running.
fn tui_showing(host: &Host, args: &[&str], first: &str) -> Pty {
    let tui = Pty::fulmar(host, args, WIDTH, HEIGHT);
    wait_row(&tui, first, "running");
    tui
}

/// Unikernel pids that a test kills itself if it fails while no daemon
/// runs (Host cleans up only through a running daemon).
struct Reap(Vec<i32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = signal::kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
}

#[test]
fn a_running_unikernel_is_listed_and_its_console_arrives_live() {
    // A line every 200 ms for 20 s: more than any test waits.
    let ticks: Vec<String> = (1..=100)
        .flat_map(|i| [format!("print=tick {i:03}"), "sleep=200".to_string()])
        .collect();
    let mut script: Vec<&str> = ticks.iter().map(String::as_str).collect();
    script.push("sleep-forever");
    let host = host_with(&[("web", &script)]);
    let tui = tui_showing(&host, &[], "web");
    tui.send_keys(b"c");
    tui.wait_for("console of web", PATIENCE);
    tui.wait_until("a first tick", PATIENCE, |s| {
        last_tick(&s.contents()).is_some()
    });
    // With no key pressed, later lines keep arriving on the open console.
    let first = last_tick(&tui.screen_text()).unwrap_or_default();
    tui.wait_until("two more ticks", PATIENCE, |s| {
        last_tick(&s.contents()) >= Some(first + 2)
    });
}

/// The highest `tick NNN` the guest printed on the screen (the tender's
/// banner lists its arguments, `print=tick NNN`, before: those do not count).
fn last_tick(screen: &str) -> Option<u32> {
    screen
        .lines()
        .filter(|line| !line.contains("print="))
        .filter_map(|line| {
            let at = line.find("tick ")?;
            line.get(at + 5..at + 8)?.parse().ok()
        })
        .max()
}

#[test]
fn destroy_asks_first_and_enter_on_the_default_button_cancels() {
    let host = host_with(&[("web", &["sleep-forever"])]);
    let pid = host.pid_of("web");
    let tui = tui_showing(&host, &[], "web");
    tui.send_keys(b"x");
    tui.wait_for("Destroy web?", PATIENCE);
    tui.wait_for("[ Cancel ]", PATIENCE);
    // Enter at once: Cancel has the focus.
    tui.send_keys(b"\r");
    tui.wait_gone("Destroy web?", PATIENCE);
    // The dialog again, so the TUI has handled everything typed so far.
    tui.send_keys(b"x");
    tui.wait_for("Destroy web?", PATIENCE);
    assert_eq!(host.state_of("web"), "running");
    assert_eq!(host.pid_of("web"), pid);
    // Now to the destroy button, and Enter.
    tui.confirm("Destroy web");
    tui.wait_gone("Destroy web?", PATIENCE);
    wait_row(&tui, "web", "stopped");
    assert_eq!(host.state_of("web"), "stopped");
    tui.wait_for("destroy web: done", PATIENCE);
}

#[test]
fn losing_the_daemon_shows_a_banner_keeps_the_list_and_recovers_by_itself() {
    let mut host = host_with(&[("web", &["sleep-forever"])]);
    let web = host.pid_of("web");
    let _reap = Reap(vec![web]);
    let tui = tui_showing(&host, &[], "web");
    host.signal_daemon(Signal::SIGKILL);
    tui.wait_for("disconnected — retrying", PATIENCE);
    // The last list stays on screen.
    let screen = tui.screen_text();
    assert!(
        row_of(tui.terminal().screen(), "web").contains("running"),
        "{screen}"
    );
    host.start(&[]);
    // No key pressed: the TUI reconnects, and the list is live again.
    tui.wait_gone("disconnected", PATIENCE);
    assert_eq!(host.pid_of("web"), web, "web was not re-adopted");
    host.ok(&["create", "late", &image(), "--", "sleep-forever"]);
    wait_row(&tui, "late", "running");
    wait_row(&tui, "web", "running");
}

/// What the test tender's `escape` step prints, as the TUI must show it.
const ESCAPED: &str = r"\x1b]0;fulmar test title\x07\x1b]52;c;ZnVsbWFy\x07\x1b[2J\x1b[H\x1b[31mred\x1b[0m \x1b[1;4;32mbold green\x1b[0m \x1b[38;5;208morange\x1b[0m\x1b[5;10Hmoved\x07\x1b[0m";

#[test]
fn fulmar_console_on_a_terminal_shows_escape_sequences_as_text() {
    let host = host_with(&[("loud", &["print=plain before", "escape", "exit=0"])]);
    eventually("loud exits", || host.state_of("loud") == "exited");
    let mut console = Pty::fulmar(&host, &["console", "loud"], 300, 10);
    assert!(console.wait_exit(PATIENCE).success());
    console.wait_for(ESCAPED, PATIENCE);
    let terminal = console.terminal();
    assert!(
        terminal.screen().contents().contains("plain before"),
        "nothing was cleared"
    );
    let asked = terminal.parser.callbacks();
    assert!(asked.titles.is_empty(), "{:?}", asked.titles);
    assert!(asked.clipboard.is_empty(), "{:?}", asked.clipboard);
    assert_eq!(asked.bells, 0);
    assert!(
        !terminal.raw.contains(&0x1b),
        "escape sequences written: {:?}",
        String::from_utf8_lossy(&terminal.raw)
    );
}

#[test]
fn a_unikernel_printing_escape_sequences_cannot_change_the_terminal() {
    let host = host_with(&[(
        "loud",
        &[
            "print=plain before",
            "escape",
            "print=plain after",
            "sleep-forever",
        ],
    )]);
    let tui = tui_showing(&host, &[], "loud");
    tui.send_keys(b"c");
    tui.wait_until("the guest's last line", PATIENCE, |s| {
        find(s, "plain after").is_some()
    });
    let terminal = tui.terminal();
    let screen = terminal.screen();
    let text = screen.contents();
    // Shown as visible escapes, in one piece.
    assert!(text.contains(ESCAPED), "{text}");
    // Nothing cleared the screen or moved the cursor: what came before is
    // still there, the header too, and the alternate screen still holds.
    assert!(find(screen, "plain before").is_some(), "{text}");
    assert!(
        text.lines()
            .next()
            .unwrap_or_default()
            .contains("console of loud"),
        "{text}"
    );
    assert!(screen.alternate_screen());
    // No title, clipboard or bell reached the terminal.
    let asked = terminal.parser.callbacks();
    assert!(asked.titles.is_empty(), "{:?}", asked.titles);
    assert!(asked.icon_names.is_empty(), "{:?}", asked.icon_names);
    assert!(asked.clipboard.is_empty(), "{:?}", asked.clipboard);
    assert_eq!(asked.bells, 0);
    for sequence in [
        &b"\x1b]0;"[..],
        b"\x1b]52;",
        b"\x1b[1;4;32m",
        b"\x1b[38;5;208m",
        b"\x07",
    ] {
        assert!(
            memchr::memmem::find(&terminal.raw, sequence).is_none(),
            "the TUI wrote {sequence:?}"
        );
    }
    // The escape text is drawn in the TUI's own colours: the words the
    // unikernel tried to colour look like its plain lines.
    let plain = style_at(screen, "plain before");
    let theme = theme_colours(ThemeName::Default);
    for word in ["fulmar test title", "red", "bold green", "orange", "moved"] {
        let (row, col) = find_in_line(screen, ESCAPED, word);
        for c in col..col + word.len() as u16 {
            let cell = screen.cell(row, c).unwrap();
            assert_eq!(style(cell), plain, "{word:?} at column {c}");
        }
    }
    let (row, _) = find(screen, ESCAPED).unwrap();
    for col in 0..screen.size().1 {
        let cell = screen.cell(row, col).unwrap();
        for colour in [cell.fgcolor(), cell.bgcolor()] {
            assert!(theme.contains(&colour), "{colour:?} at column {col}");
        }
    }
}

type Style = (vt100::Color, vt100::Color, bool, bool, bool, bool);

fn style(cell: &vt100::Cell) -> Style {
    (
        cell.fgcolor(),
        cell.bgcolor(),
        cell.bold(),
        cell.italic(),
        cell.underline(),
        cell.inverse(),
    )
}

fn style_at(screen: &vt100::Screen, text: &str) -> Style {
    let (row, col) = find(screen, text).unwrap_or_else(|| panic!("{text:?} not on screen"));
    style(screen.cell(row, col).unwrap())
}

/// Row and column where `text` starts on the screen, in a line the guest
/// printed (the tender's banner lists its arguments, `print=TEXT`, before).
fn find(screen: &vt100::Screen, text: &str) -> Option<(u16, u16)> {
    let width = screen.size().1;
    screen.rows(0, width).enumerate().find_map(|(row, line)| {
        if line.contains("print=") {
            return None;
        }
        let at = line.find(text)?;
        Some((row as u16, line[..at].chars().count() as u16))
    })
}

/// Where `word` is inside the line that shows `line`.
fn find_in_line(screen: &vt100::Screen, line: &str, word: &str) -> (u16, u16) {
    let (row, col) = find(screen, line).unwrap();
    let offset = line.find(word).unwrap();
    (row, col + line[..offset].chars().count() as u16)
}

/// Every colour a theme draws with, as a terminal receives it from
/// crossterm (named colours are sent as 256-colour indexes).
fn theme_colours(name: ThemeName) -> Vec<vt100::Color> {
    use ratatui::style::Color;
    let theme = Theme::new(name);
    let styles = [
        theme.text,
        theme.dim,
        theme.title,
        theme.border,
        theme.header,
        theme.selected,
        theme.key,
        theme.good,
        theme.busy,
        theme.bad,
        theme.matched,
        theme.fulmar,
        theme.alert,
        theme.bar,
        theme.button,
        theme.button_focused,
    ];
    let mut colours = vec![vt100::Color::Default];
    for colour in styles.iter().flat_map(|s| [s.fg, s.bg]).flatten() {
        colours.push(match colour {
            Color::Reset => vt100::Color::Default,
            Color::Black => vt100::Color::Idx(0),
            Color::Red => vt100::Color::Idx(1),
            Color::Green => vt100::Color::Idx(2),
            Color::Yellow => vt100::Color::Idx(3),
            Color::Blue => vt100::Color::Idx(4),
            Color::Magenta => vt100::Color::Idx(5),
            Color::Cyan => vt100::Color::Idx(6),
            Color::Gray => vt100::Color::Idx(7),
            Color::DarkGray => vt100::Color::Idx(8),
            Color::LightRed => vt100::Color::Idx(9),
            Color::LightGreen => vt100::Color::Idx(10),
            Color::LightYellow => vt100::Color::Idx(11),
            Color::LightBlue => vt100::Color::Idx(12),
            Color::LightMagenta => vt100::Color::Idx(13),
            Color::LightCyan => vt100::Color::Idx(14),
            Color::White => vt100::Color::Idx(15),
            Color::Indexed(i) => vt100::Color::Idx(i),
            Color::Rgb(r, g, b) => vt100::Color::Rgb(r, g, b),
        });
    }
    colours
}

#[test]
fn without_a_terminal_it_says_so_and_exits_non_zero() {
    let host = Host::new();
    // Neither stream a terminal (a script).
    let out = host.run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the TUI needs a terminal"), "{err}");
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    // Typed in a terminal with the output to a file: the terminal is left alone.
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut command = host.command(&["--no-start"]);
    command.env("TERM", "xterm-256color");
    let mut tui =
        Pty::spawn_with_stdout(command, WIDTH, HEIGHT, Some(file.reopen().unwrap().into()));
    assert!(!tui.wait_exit(PATIENCE).success());
    tui.wait_for("the TUI needs a terminal", PATIENCE);
    assert!(tui.cooked(), "the terminal was left in raw mode");
    let terminal = tui.terminal();
    assert!(!terminal.screen().alternate_screen());
    assert!(
        !terminal.raw.contains(&0x1b),
        "escape sequences written: {:?}",
        String::from_utf8_lossy(&terminal.raw)
    );
    assert!(std::fs::read(file.path()).unwrap().is_empty());
}

#[test]
fn quitting_restores_the_terminal() {
    let host = host_with(&[("web", &["sleep-forever"])]);
    let mut tui = tui_showing(&host, &[], "web");
    // While it runs: raw mode, the alternate screen, no cursor.
    assert!(!tui.cooked());
    assert!(tui.terminal().screen().alternate_screen());
    tui.send_keys(b"q");
    assert!(tui.wait_exit(PATIENCE).success());
    assert!(tui.cooked(), "the terminal was left in raw mode");
    let terminal = tui.terminal();
    assert!(!terminal.screen().alternate_screen());
    assert!(!terminal.screen().hide_cursor());
    // Quitting the TUI never stops a unikernel.
    assert_eq!(host.state_of("web"), "running");
}

#[test]
fn sigterm_and_hangup_restore_the_terminal_too() {
    let host = host_with(&[("web", &["sleep-forever"])]);
    for sig in [Signal::SIGTERM, Signal::SIGHUP] {
        let mut tui = tui_showing(&host, &[], "web");
        assert!(!tui.cooked());
        signal::kill(Pid::from_raw(tui.pid()), sig).unwrap();
        tui.wait_exit(PATIENCE);
        assert!(tui.cooked(), "{sig}: the terminal was left in raw mode");
        let terminal = tui.terminal();
        assert!(!terminal.screen().alternate_screen(), "{sig}");
        assert!(!terminal.screen().hide_cursor(), "{sig}");
    }
}

#[test]
fn read_only_offers_no_destroy() {
    let host = host_with(&[("web", &["sleep-forever"])]);
    let tui = tui_showing(&host, &["--read-only"], "web");
    tui.wait_for("[read-only]", PATIENCE);
    tui.send_keys(b"x");
    tui.wait_for("read-only: destroy is turned off", PATIENCE);
    assert!(!tui.screen_text().contains("Destroy web?"));
    assert_eq!(host.state_of("web"), "running");
}

#[test]
fn a_resize_redraws_at_the_new_size_and_too_small_says_so() {
    let host = host_with(&[("web", &["sleep-forever"])]);
    let tui = tui_showing(&host, &[], "web");
    tui.resize(24, 6);
    tui.wait_until("too small said", PATIENCE, |screen| {
        let words: Vec<String> = screen
            .contents()
            .split_whitespace()
            .map(String::from)
            .collect();
        words.join(" ").contains("is too small for this screen")
    });
    tui.resize(100, 20);
    wait_row(&tui, "web", "running");
    assert!(!tui.screen_text().contains("too small"));
}

#[test]
fn the_uptime_of_a_running_unikernel_advances_with_no_key_pressed() {
    let host = host_with(&[("web", &["sleep-forever"])]);
    let tui = tui_showing(&host, &[], "web");
    // Under a minute the uptime counts seconds: the row changes on its own,
    // every second, not only when the statistics (every 2 s) change.
    tui.wait_until("web's uptime at 5s or more", PATIENCE, |screen| {
        row_of(screen, "web")
            .split_whitespace()
            .filter_map(|word| word.strip_suffix('s')?.parse::<u32>().ok())
            .any(|seconds| seconds >= 5)
    });
}
