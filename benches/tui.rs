//! The TUI's benchmarks, each against a baseline in the same run:
//!
//! * frame time: one frame of the real `App` at 200x60 on ratatui's
//!   `TestBackend`, of the list with 1,000 unikernels and of a console pane
//!   holding 10,000 lines, against ratatui drawing the same visible text as a
//!   plain `Table` / `Paragraph` built beforehand (the floor for any ratatui
//!   program showing that screen);
//! * idle: frames the real binary draws in a pseudo-terminal in 10 s with only
//!   exited and stopped unikernels (target 0), against the same with one
//!   running unikernel, whose uptime ticks each second;
//! * a burst of 100,000 console lines in about a second with the console
//!   open: frames per second, key latency (`?` until the help title is on
//!   screen, Esc until the console is back) against the same keys when idle,
//!   the TUI's peak resident memory against its peak before the burst, and
//!   the bytes it sent to the terminal against `cat` of the same lines.
//!
//! `cargo bench --bench tui`

#[path = "../tests/it/support/mod.rs"]
mod support;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use fulmar::api::console::{ConsoleEvent, ConsoleLine, LineSource};
use fulmar::api::image::Target;
use fulmar::api::label::Label;
use fulmar::api::mac::Mac;
use fulmar::api::time::now_ms;
use fulmar::api::unikernel::{RunState, TapInfo, UnikernelConfig, UnikernelInfo};
use fulmar::ui::app::App;
use fulmar::ui::config::Config;
use fulmar::ui::message::Update;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::Constraint;
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Row, Table};
use std::process::Command;
use std::time::{Duration, Instant};
use support::daemon::Host;
use support::images::Spec;
use support::pty::{PATIENCE, Pty};

const WIDTH: u16 = 200;
const HEIGHT: u16 = 60;
const UNIKERNELS: usize = 1_000;
const CONSOLE_LINES: u64 = 10_000;
/// The burst: this many steps of `burst=STEP_LINES` with a pause between,
/// 100,000 lines in about a second.
const STEPS: usize = 10;
const STEP_LINES: usize = 10_000;
const STEP_PAUSE_MS: u64 = 100;

fn main() {
    frames();
    let image = Spec::new(Target::Hvt, &[]).path().display().to_string();
    idle(&image);
    burst(&image);
}

// ---- one frame ----

fn frames() {
    let now = now_ms();
    let mut app = App::new(Config::default(), false);
    app.on_update(
        Update::Connected {
            daemon: "fulmar bench".into(),
        },
        now,
    );
    app.on_update(Update::Unikernels(unikernels(now)), now);
    let list = median_frame(|frame| app.draw(frame, now));
    let table = visible_table();
    let list_floor = median_frame(|frame| frame.render_widget(&table, frame.area()));

    for key in ":console svc0000"
        .chars()
        .map(KeyCode::Char)
        .chain([KeyCode::Enter])
    {
        app.on_key(KeyEvent::new(key, KeyModifiers::NONE), now);
    }
    let name = Label::new("svc0000").unwrap();
    for seq in 1..=CONSOLE_LINES {
        app.on_update(
            Update::Console {
                name: name.clone(),
                event: ConsoleEvent::Line(ConsoleLine {
                    seq,
                    at_ms: now - CONSOLE_LINES + seq,
                    bytes: console_line(seq).into_bytes(),
                    continued: false,
                    source: LineSource::Unikernel,
                }),
            },
            now,
        );
    }
    let console = median_frame(|frame| app.draw(frame, now));
    let shown = screen_of(|frame| app.draw(frame, now));
    assert!(
        shown.contains(&console_line(CONSOLE_LINES)),
        "the console pane does not show its last line:\n{shown}"
    );
    let lines: Vec<Line> = (CONSOLE_LINES - u64::from(HEIGHT) + 3..=CONSOLE_LINES)
        .map(|seq| Line::from(console_line(seq)))
        .collect();
    let paragraph = Paragraph::new(lines);
    let console_floor = median_frame(|frame| frame.render_widget(&paragraph, frame.area()));

    println!("one frame at {WIDTH}x{HEIGHT} on TestBackend, median of {FRAMES}:");
    let row = |what: &str, took: Duration, floor: Duration| {
        println!(
            "  {what:<34} {:>8.3} ms   floor {:>7.3} ms   {:>5.1}x",
            ms(took),
            ms(floor),
            took.as_secs_f64() / floor.as_secs_f64()
        )
    };
    row("list of 1,000 unikernels", list, list_floor);
    row("console pane of 10,000 lines", console, console_floor);
    println!(
        "  sum                                {:>8.3} ms   (target at most 2 ms)",
        ms(list + console)
    );
}

const FRAMES: usize = 201;

/// The median time of one `terminal.draw` of `draw`, on a terminal of its own.
fn median_frame(mut draw: impl FnMut(&mut ratatui::Frame)) -> Duration {
    let mut terminal = Terminal::new(TestBackend::new(WIDTH, HEIGHT)).unwrap();
    for _ in 0..10 {
        terminal.draw(&mut draw).unwrap();
    }
    let mut times: Vec<Duration> = (0..FRAMES)
        .map(|_| {
            let start = Instant::now();
            terminal.draw(&mut draw).unwrap();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[FRAMES / 2]
}

fn screen_of(draw: impl FnOnce(&mut ratatui::Frame)) -> String {
    let mut terminal = Terminal::new(TestBackend::new(WIDTH, HEIGHT)).unwrap();
    terminal.draw(draw).unwrap();
    terminal.backend().to_string()
}

fn unikernels(now: u64) -> Vec<UnikernelInfo> {
    (0..UNIKERNELS)
        .map(|i| {
            let name = format!("svc{i:04}");
            let mut config = UnikernelConfig::new(Label::new(&name).unwrap());
            config.memory_mb = 64;
            config.cpu = (i % 2) as u32;
            UnikernelInfo {
                target: Target::Hvt,
                devices: Vec::new(),
                digest: format!("{:064x}", i * 7919),
                state: RunState::Running {
                    pid: 10_000 + i as u32,
                    since_ms: now - (i as u64 + 1) * 61_000,
                },
                taps: vec![TapInfo {
                    interface: "service".into(),
                    tap: format!("tap{i}"),
                    bridge: "br0".into(),
                    mac: Mac::derived("service", &name),
                }],
                argv: vec!["solo5-hvt".into(), "--mem=64".into()],
                restarts: (i % 3) as u32,
                exits: Vec::new(),
                config,
            }
        })
        .collect()
}

/// What a screenful of the list shows, as a plain ratatui table.
fn visible_table() -> Table<'static> {
    let rows = (0..usize::from(HEIGHT) - 3).map(|i| {
        Row::new([
            format!("svc{i:04}"),
            "running".into(),
            "hvt".into(),
            (i % 2).to_string(),
            "64 MB".into(),
            "-".into(),
            format!("{}m", i + 1),
            (i % 3).to_string(),
            format!("tap{i}"),
            format!("{:012x}", i * 7919),
        ])
    });
    let widths = [8, 8, 7, 4, 7, 5, 7, 9, 6, 13].map(Constraint::Length);
    Table::new(rows, widths)
        .header(Row::new([
            "NAME", "STATE", "TARGET", "PIN", "MEM", "CPU%", "UPTIME", "RESTARTS", "TAPS", "DIGEST",
        ]))
        .column_spacing(1)
}

fn console_line(seq: u64) -> String {
    format!(
        "[{seq:>6}] http: GET /api/v1/items/{} 200 {} bytes in {}.{:02} ms from 10.0.{}.{}",
        seq * 31 % 9973,
        seq * 17 % 4096,
        seq % 9,
        seq % 100,
        seq % 256,
        seq * 7 % 256
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---- idle ----

const IDLE: Duration = Duration::from_secs(10);

fn idle(image: &str) {
    let mut host = Host::new();
    host.start(&[]);
    // Without a restart: one that restarts changes state, so the screen should change.
    let once = ["--restart", "never", "--"];
    host.ok(&[&["create", "done", image][..], &once, &["exit=0"]].concat());
    host.ok(&[&["create", "failed", image][..], &once, &["exit=3"]].concat());
    host.ok(&["create", "halted", image, "--", "sleep-forever"]);
    host.ok(&["destroy", "halted"]);
    support::daemon::eventually("done and failed exit", || {
        host.list().iter().all(|u| u["state"] != "running")
    });
    let quiet = idle_frames(&host, "halted");
    host.ok(&["create", "web", image, "--", "sleep-forever"]);
    let ticking = idle_frames(&host, "web");
    println!(
        "frames drawn in {} s idle, real binary in a pty:",
        IDLE.as_secs()
    );
    println!(
        "  exited and stopped unikernels     {:>4} frames, {:>4} ms CPU  (target 0 frames)",
        quiet.0,
        quiet.1.as_millis()
    );
    println!(
        "  the same and one running          {:>4} frames, {:>4} ms CPU  (its uptime changes each second)",
        ticking.0,
        ticking.1.as_millis()
    );
    host.ok(&["destroy", "web"]);
}

/// Frames and CPU time of a TUI over [`IDLE`], once it shows `name` and has
/// settled (the first statistics have come and gone).
fn idle_frames(host: &Host, name: &str) -> (usize, Duration) {
    let tui = Pty::fulmar(host, &[], WIDTH, HEIGHT);
    tui.wait_until(&format!("{name} listed"), PATIENCE, |s| {
        s.contents()
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name))
    });
    std::thread::sleep(Duration::from_secs(3));
    let (frames, cpu) = (tui.terminal().frames.len(), cpu_time(tui.pid()));
    std::thread::sleep(IDLE);
    let frames = tui.terminal().frames.len() - frames;
    (frames, cpu_time(tui.pid()) - cpu)
}

/// User and system CPU time of `pid` so far.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat(5); fields[0] is field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

// ---- burst ----

const HELP_TITLE: &str = "help: keys of the console screen";
const KEY_GAP: Duration = Duration::from_millis(50);

fn burst(image: &str) {
    let mut host = Host::new();
    host.start(&[]);
    // The guest waits until the console is open and the idle keys are timed.
    let mut script = vec!["print=ready".to_string(), "sleep=8000".to_string()];
    for _ in 0..STEPS {
        script.push(format!("burst={STEP_LINES}"));
        script.push(format!("sleep={STEP_PAUSE_MS}"));
    }
    script.extend(["print=flood over".to_string(), "sleep-forever".to_string()]);
    let mut args = vec!["create", "flood", image, "--"];
    args.extend(script.iter().map(String::as_str));
    host.ok(&args);
    let tui = Pty::fulmar(&host, &[], WIDTH, HEIGHT);
    tui.wait_until("flood listed", PATIENCE, |s| s.contents().contains("flood"));
    tui.send_keys(b"c");
    tui.wait_until("the guest's first line", PATIENCE, |s| {
        guest_line(s, "ready")
    });
    let idle_keys: Vec<(Duration, Duration)> = (0..5).map(|_| key_round(&tui)).collect();
    let before = vm_hwm_kib(tui.pid());
    tui.wait_until("the burst", PATIENCE, |s| guest_line(s, "burst 1"));
    let start = Instant::now();
    let (frames_at, bytes_at) = {
        let t = tui.terminal();
        (t.frames.len(), t.raw.len())
    };
    let mut busy_keys = Vec::new();
    while start.elapsed() < Duration::from_millis(1_000) {
        busy_keys.push(key_round(&tui));
    }
    let took = start.elapsed()
        + tui.time_until("the end of the burst", PATIENCE, |s| {
            guest_line(s, "flood over")
        });
    let after = vm_hwm_kib(tui.pid());
    let (frames, bytes, dropped) = {
        let t = tui.terminal();
        let dropped = t.screen().contents().contains("dropped");
        (
            t.frames[frames_at..].to_vec(),
            t.raw.len() - bytes_at,
            dropped,
        )
    };
    let peak_fps = frames
        .iter()
        .map(|t0| {
            frames
                .iter()
                .filter(|t| **t >= *t0 && **t < *t0 + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    let cat = cat_bytes();
    println!(
        "a burst of {} console lines ({STEPS} x {STEP_LINES}, {STEP_PAUSE_MS} ms apart), console open, {WIDTH}x{HEIGHT} pty:",
        STEPS * STEP_LINES
    );
    println!(
        "  first burst line on screen to the last      {:>7.0} ms",
        ms(took)
    );
    println!(
        "  frames                                      {:>7} ({:.0} a second on average, peak {peak_fps} in one second; target at most 60)",
        frames.len(),
        frames.len() as f64 / took.as_secs_f64()
    );
    report_keys("keys when idle", &idle_keys);
    report_keys("keys during the burst", &busy_keys);
    println!(
        "  peak resident memory (VmHWM)                {:>7.1} MiB (before the burst {:.1} MiB; target at most 60 MiB)",
        after as f64 / 1024.0,
        before as f64 / 1024.0
    );
    println!(
        "  bytes sent to the terminal                  {:>7.0} KiB (cat of the same lines: {:.0} KiB, {:.3}x)",
        bytes as f64 / 1024.0,
        cat as f64 / 1024.0,
        bytes as f64 / cat as f64
    );
    println!("  \"lines dropped\" shown                       {dropped:>7}");
}

/// `?` until the help title shows, then Esc until the console is back; each
/// key a while after the last frame it caused, as an operator types (a key
/// right after a frame would also measure the 60-a-second frame limit).
fn key_round(tui: &Pty) -> (Duration, Duration) {
    std::thread::sleep(KEY_GAP);
    tui.send_keys(b"?");
    let help = tui.time_until("the help title", PATIENCE, |s| {
        s.contents().contains(HELP_TITLE)
    });
    std::thread::sleep(KEY_GAP);
    tui.send_keys(b"\x1b");
    let back = tui.time_until("the console again", PATIENCE, |s| {
        s.contents().contains("console of flood")
    });
    (help, back)
}

fn report_keys(what: &str, rounds: &[(Duration, Duration)]) {
    for (key, pick) in [
        (
            "?",
            (|r: &(Duration, Duration)| r.0) as fn(&(Duration, Duration)) -> Duration,
        ),
        ("esc", |r| r.1),
    ] {
        let mut all: Vec<Duration> = rounds.iter().map(pick).collect();
        all.sort();
        println!(
            "  {:<43} median {:>5.1} ms, max {:>5.1} ms over {} keys (target at most 50 ms)",
            format!("{what}, {key}"),
            ms(all[all.len() / 2]),
            ms(all[all.len() - 1]),
            all.len()
        );
    }
}

/// A line the guest printed (the tender's banner lists its arguments,
/// `print=TEXT`, first: those do not count).
fn guest_line(screen: &vt100::Screen, text: &str) -> bool {
    screen
        .contents()
        .lines()
        .any(|l| l.contains(text) && !l.contains('='))
}

/// The bytes `cat` sends a terminal for the same lines.
fn cat_bytes() -> usize {
    let mut text = String::new();
    for _ in 0..STEPS {
        for i in 1..=STEP_LINES {
            text.push_str(&format!("burst {i}\n"));
        }
    }
    text.push_str("flood over\n");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let mut command = Command::new("cat");
    command.arg(file.path());
    let mut cat = Pty::spawn(command, WIDTH, HEIGHT);
    assert!(cat.wait_exit(PATIENCE).success());
    cat.terminal().raw.len()
}

fn vm_hwm_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
