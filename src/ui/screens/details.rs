//! One unikernel in full: its configuration, every manifest device and what
//! it is bound to, its state and command line, live counters while it runs,
//! and how its past runs ended.

use crate::api::console::visible;
use crate::api::image::DeviceKind;
use crate::api::label::Label;
use crate::api::unikernel::{DEFAULT_SECTOR_SIZE, RestartPolicy, RunState, UnikernelInfo};
use crate::ui::format;
use crate::ui::keymap::{Action, Context};
use crate::ui::model::Model;
use crate::ui::screens::{
    Cx, DrawCx, Effect, View, console::ConsoleView, unikernels::ask_lifecycle,
    unikernels::state_style,
};
use crate::ui::theme::Theme;
use crate::ui::widgets::scrolled::Scrolled;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

/// Field names take at least this many columns, values the rest.
const NAME_WIDTH: usize = 11;

pub struct DetailsView {
    name: Label,
    scroll: Scrolled,
}

impl DetailsView {
    pub fn new(name: Label) -> DetailsView {
        DetailsView {
            name,
            scroll: Scrolled::default(),
        }
    }
}

impl View for DetailsView {
    fn context(&self) -> Context {
        Context::Details
    }

    fn title(&self, _model: &Model) -> String {
        format!("details of {}", self.name)
    }

    fn on_action(&mut self, action: Action, cx: &mut Cx) -> bool {
        if self.scroll.on_action(action) {
            return true;
        }
        let Some(info) = cx.model.unikernel(&self.name) else {
            return false;
        };
        let effect = match action {
            Action::ShowConsole => {
                Effect::Push(Box::new(ConsoleView::new(vec![self.name.clone()])))
            }
            Action::Restart | Action::Destroy | Action::Remove => ask_lifecycle(action, info),
            Action::Edit => Effect::Push(Box::new(super::create::CreateView::edit(info))),
            _ => return false,
        };
        cx.effect(effect);
        true
    }

    fn draw(&self, frame: &mut Frame, area: Rect, cx: &DrawCx) {
        let Some(info) = cx.model.unikernel(&self.name) else {
            frame.render_widget(
                Paragraph::new(format!(
                    "{} is gone: it was removed. Esc goes back to the list.",
                    self.name
                ))
                .style(cx.theme.dim),
                area,
            );
            return;
        };
        let mut page = Page {
            lines: Vec::new(),
            width: Scrolled::text_width(area),
            theme: cx.theme,
        };
        page.state(info, cx.now_ms);
        page.live(info, cx.model);
        page.devices(info, cx.model);
        page.config(info);
        page.exits(info);
        self.scroll.draw(frame, area, page.lines, cx.theme);
    }

    fn min_size(&self) -> (u16, u16) {
        (30, 3)
    }

    fn next_change_ms(&self, cx: &DrawCx) -> Option<u64> {
        let now = cx.now_ms;
        match cx.model.unikernel(&self.name)?.state {
            RunState::Running { since_ms, .. } => {
                Some(now + format::duration_changes_in(now.saturating_sub(since_ms)))
            }
            RunState::Restarting { at_ms } | RunState::CrashLoop { at_ms, .. } if at_ms > now => {
                Some(now + ((at_ms - now) % 1000).max(1))
            }
            _ => None,
        }
    }
}

/// The lines of the page, built for a width so long values wrap under
/// their own column.
struct Page<'a> {
    lines: Vec<Line<'static>>,
    width: usize,
    theme: &'a Theme,
}

impl Page<'_> {
    fn heading(&mut self, text: String) {
        if !self.lines.is_empty() {
            self.lines.push(Line::default());
        }
        self.lines.push(Line::styled(text, self.theme.header));
    }

    /// `name` in its column, then `value`.
    fn field(&mut self, name: &str, value: &str, style: Style) {
        let prefix = Span::styled(format!("  {name:<NAME_WIDTH$} "), self.theme.dim);
        self.wrapped(prefix, value, style);
    }

    /// `prefix`, then `value` wrapped to the width left and indented under itself.
    fn wrapped(&mut self, prefix: Span<'static>, value: &str, style: Style) {
        let indent = prefix.width();
        let mut rows = wrap(value, self.width.saturating_sub(indent)).into_iter();
        let first = rows.next().unwrap_or_default();
        self.lines
            .push(Line::from(vec![prefix, Span::styled(first, style)]));
        for row in rows {
            self.lines.push(Line::from(vec![
                Span::raw(" ".repeat(indent)),
                Span::styled(row, style),
            ]));
        }
    }

    fn state(&mut self, info: &UnikernelInfo, now_ms: u64) {
        let text = match &info.state {
            RunState::Running { pid, since_ms } => format!(
                "running, pid {pid}, up {} (since {})",
                format::duration(now_ms.saturating_sub(*since_ms)),
                format::utc(*since_ms)
            ),
            RunState::Exited { exit } => format!(
                "{} at {}, after running {}",
                format::exit(exit.status),
                format::utc(exit.at_ms),
                format::duration(exit.ran_ms)
            ),
            RunState::CrashLoop { failures, .. } => format!(
                "{} ({failures} failures in a row: fulmar now waits its longest back-off between tries)",
                format::state(&info.state, now_ms)
            ),
            RunState::Stopped => "stopped: destroyed by the operator".into(),
            RunState::Starting { since_ms } => format!(
                "starting for {}: its tender is being launched",
                format::duration(now_ms.saturating_sub(*since_ms))
            ),
            RunState::Restarting { .. } => format::state(&info.state, now_ms),
        };
        let name = Span::styled(format!("{} ", info.config.name), self.theme.title);
        self.wrapped(name, &text, state_style(&info.state, self.theme));
    }

    fn config(&mut self, info: &UnikernelInfo) {
        let config = &info.config;
        let text = self.theme.text;
        self.heading("CONFIGURATION".into());
        self.field("target", info.target.as_str(), text);
        self.field("memory", &format!("{} MB", config.memory_mb), text);
        self.field("CPU pin", &config.cpu.to_string(), text);
        self.field("restart", &restart(&config.restart), text);
        self.field("priority", &config.startup_priority.to_string(), text);
        let args = match config.args.as_slice() {
            [] => "none".to_string(),
            args => words(args),
        };
        self.field("arguments", &args, text);
        self.field("digest", &info.digest, text);
        let argv = match info.argv.as_slice() {
            [] => "not started yet".to_string(),
            argv => words(argv),
        };
        self.field("command", &argv, text);
    }

    /// Every manifest device with what the configuration binds it to, then
    /// anything the configuration binds that the manifest does not declare.
    fn devices(&mut self, info: &UnikernelInfo, model: &Model) {
        let config = &info.config;
        self.heading(format!("DEVICES ({} in the manifest)", info.devices.len()));
        if info.devices.is_empty() {
            self.note("none: the image uses no network or block device");
        }
        for device in &info.devices {
            let bound =
                match device.kind {
                    DeviceKind::Net => {
                        config
                            .nets
                            .iter()
                            .find(|n| n.interface == device.name)
                            .map(|net| {
                                let tap = info
                                    .taps
                                    .iter()
                                    .find(|t| t.interface == net.interface)
                                    .map_or("no tap (not running)".to_string(), |t| {
                                        format!("tap {}", t.tap)
                                    });
                                format!(
                                    "net → bridge {}, {tap}, MAC {}",
                                    net.bridge,
                                    config.mac_of(net)
                                )
                            })
                    }
                    DeviceKind::Block => config
                        .blocks
                        .iter()
                        .find(|b| b.device == device.name)
                        .map(|b| {
                            let size = match &model.blocks {
                                None => "size not known yet".to_string(),
                                Some(blocks) => blocks
                                    .iter()
                                    .find(|i| i.name == b.block)
                                    .map_or("not in the block store".to_string(), |i| {
                                        format!("{} MB", i.size_mb)
                                    }),
                            };
                            let sector = b.sector_size.unwrap_or(DEFAULT_SECTOR_SIZE);
                            format!("block → {}, {size}, {sector}-byte sectors", b.block)
                        }),
                };
            match bound {
                Some(text) => self.field(&device.name, &text, self.theme.text),
                None => self.field(
                    &device.name,
                    &format!(
                        "{} → not bound: the configuration gives it nothing, so it cannot start",
                        device.kind
                    ),
                    self.theme.bad,
                ),
            }
        }
        let declared = |name: &str| info.devices.iter().any(|d| d.name == name);
        let extra = config
            .nets
            .iter()
            .map(|n| (&n.interface, DeviceKind::Net))
            .chain(config.blocks.iter().map(|b| (&b.device, DeviceKind::Block)))
            .filter(|(name, _)| !declared(name));
        for (name, kind) in extra.collect::<Vec<_>>() {
            self.field(
                name,
                &format!("{kind} → configured, but the image's manifest has no such device"),
                self.theme.bad,
            );
        }
    }

    fn live(&mut self, info: &UnikernelInfo, model: &Model) {
        if !matches!(info.state, RunState::Running { .. }) {
            return;
        }
        let name = &info.config.name;
        self.heading("LIVE".into());
        let cpu = model
            .cpu
            .get(name)
            .map_or("measuring (needs two readings)".to_string(), |c| {
                format!("{:.0}%", c.percent)
            });
        self.field("CPU use", &cpu, self.theme.text);
        let Some(stats) = model.stats.get(name) else {
            self.field("memory", "waiting for the first reading", self.theme.dim);
            return;
        };
        let rss = format!("{} resident", format::bytes(stats.process.rss_kb * 1024));
        self.field("memory", &rss, self.theme.text);
        // The host counts a tap's rx as what the unikernel sent.
        for tap in &stats.taps {
            let traffic = format!(
                "sent {} in {} packets, received {} in {} packets",
                format::bytes(tap.rx_bytes),
                tap.rx_packets,
                format::bytes(tap.tx_bytes),
                tap.tx_packets
            );
            self.field(&tap.name, &traffic, self.theme.text);
        }
    }

    fn exits(&mut self, info: &UnikernelInfo) {
        self.heading(format!("EXITS (restarted {} times)", info.restarts));
        if info.exits.is_empty() {
            self.note("none yet");
        }
        for exit in info.exits.iter().rev() {
            let style = if exit.status == crate::api::unikernel::ExitStatus::Code(0) {
                self.theme.text
            } else {
                self.theme.bad
            };
            let text = format!(
                "{}, after running {}",
                format::exit(exit.status),
                format::duration(exit.ran_ms)
            );
            self.lines.push(Line::from(vec![
                Span::styled(format!("  {}  ", format::utc(exit.at_ms)), self.theme.dim),
                Span::styled(text, style),
            ]));
        }
    }
}

impl Page<'_> {
    fn note(&mut self, text: &str) {
        self.wrapped(Span::raw("  "), text, self.theme.dim);
    }
}

/// `text` in rows of at most `room` characters, broken at spaces where it
/// can be, inside a word (a digest) where it cannot.
fn wrap(text: &str, room: usize) -> Vec<String> {
    let room = room.max(8);
    let mut rows = Vec::new();
    let mut row = String::new();
    for word in text.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        let used = row.chars().count();
        if used > 0 && used + 1 + word.len() > room {
            rows.push(std::mem::take(&mut row));
        }
        if !row.is_empty() {
            row.push(' ');
        }
        while row.chars().count() + word.len() > room {
            let split = room - row.chars().count();
            row.extend(word.drain(..split));
            rows.push(std::mem::take(&mut row));
        }
        row.extend(word);
    }
    rows.push(row);
    rows
}

fn restart(policy: &RestartPolicy) -> String {
    let means = match policy {
        RestartPolicy::Never => "stays down when it exits",
        RestartPolicy::OnFailure => "after a non-zero exit or a signal",
        RestartPolicy::OnFailureOf { signals: true, .. } => "after these exit codes or a signal",
        RestartPolicy::OnFailureOf { signals: false, .. } => "after these exit codes only",
        RestartPolicy::Always => "after every exit",
    };
    format!("{policy} ({means})")
}

/// Arguments as an operator would type them: quoted where a space or quote
/// would otherwise hide where one ends, control characters made visible.
fn words(args: &[String]) -> String {
    args.iter()
        .map(|arg| {
            let shown = visible(arg.as_bytes());
            let plain = !shown.is_empty()
                && !shown.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"');
            if plain {
                shown
            } else {
                format!("'{}'", shown.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::image::Device;
    use crate::api::stats::{ProcessStats, Stats, TapStats};
    use crate::api::unikernel::{ExitRecord, ExitStatus};
    use crate::ui::fixtures::*;
    use crate::ui::message::{Command, Update};
    use std::collections::HashMap;

    fn at_both_sizes(name: &str, infos: Vec<UnikernelInfo>, setup: impl Fn(&mut Harness)) {
        for (width, height) in [(80, 24), (200, 60)] {
            let mut harness = Harness::showing(infos.clone(), width, height);
            setup(&mut harness);
            harness.press(&[":"]);
            harness.type_text(&format!("details {}", infos[0].config.name));
            harness.press(&["enter"]);
            insta::assert_snapshot!(format!("{name}_{width}x{height}"), harness.screen());
        }
    }

    fn stats(cpu_time_ms: u64) -> Update {
        Update::Stats(HashMap::from([(
            label("web"),
            Stats {
                process: ProcessStats {
                    pid: 4242,
                    cpu_time_ms,
                    rss_kb: 31_744,
                },
                taps: vec![TapStats {
                    name: "tap-web".into(),
                    rx_bytes: 1_234_567,
                    rx_packets: 1_024,
                    tx_bytes: 800,
                    tx_packets: 8,
                }],
            },
        )]))
    }

    #[test]
    fn long_values_wrap_at_spaces_and_split_long_words() {
        assert_eq!(wrap("", 10), [""]);
        assert_eq!(wrap("a bb ccc dddd", 8), ["a bb ccc", "dddd"]);
        assert_eq!(wrap("x 0123456789abcdef", 8), ["x", "01234567", "89abcdef"]);
        assert_eq!(wrap("0123456789ab", 8), ["01234567", "89ab"]);
    }

    #[test]
    fn arguments_read_as_typed() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            words(&args(&["--ipv4=10.0.0.2/24", "-l"])),
            "--ipv4=10.0.0.2/24 -l"
        );
        assert_eq!(words(&args(&["hello world", ""])), "'hello world' ''");
        assert_eq!(words(&args(&["it's"])), r"'it'\''s'");
        assert_eq!(words(&args(&["\x1b[2J"])), r"\x1b[2J");
    }

    #[test]
    fn details_running_with_stats() {
        at_both_sizes(
            "details_running",
            vec![running("web", 3 * 3_600_000)],
            |h| {
                // Two readings 2 s apart, 500 ms of CPU between them: 25%.
                h.app.on_update(stats(1_000), NOW_MS - 2_000);
                h.update(stats(1_500));
            },
        );
    }

    #[test]
    fn details_exited_with_history() {
        let mut info = exited("batch", ExitStatus::Code(2));
        info.restarts = 2;
        info.config.restart = "on-failure:signal,2,3".parse().unwrap();
        info.exits = vec![
            ExitRecord {
                status: ExitStatus::Code(2),
                at_ms: NOW_MS - 3_600_000,
                ran_ms: 42_000,
            },
            ExitRecord {
                status: ExitStatus::Signal(9),
                at_ms: NOW_MS - 600_000,
                ran_ms: 2 * 3_600_000,
            },
            ExitRecord {
                status: ExitStatus::Code(0),
                at_ms: NOW_MS - 60_000,
                ran_ms: 5_000,
            },
        ];
        at_both_sizes("details_exited", vec![info], |_| {});
    }

    #[test]
    fn details_crash_loop() {
        let mut info = crash_loop("flaky");
        info.config.restart = RestartPolicy::OnFailure;
        info.exits = (0..5)
            .map(|i| ExitRecord {
                status: ExitStatus::Code(3),
                at_ms: NOW_MS - 300_000 + i * 60_000,
                ran_ms: 800,
            })
            .collect();
        at_both_sizes("details_crash_loop", vec![info], |_| {});
    }

    #[test]
    fn details_unbound_device() {
        let mut info = unikernel("web", RunState::Stopped);
        info.config.blocks.clear();
        info.config.nets[0].mac = Some("02:00:00:00:00:01".parse().unwrap());
        info.devices.push(Device {
            name: "backup".into(),
            kind: DeviceKind::Block,
        });
        info.config.args = vec!["--hello=big world".into(), "\x1b]0;pwned\x07".into()];
        at_both_sizes("details_unbound", vec![info], |_| {});
    }

    #[test]
    fn a_long_page_scrolls() {
        let mut info = crash_loop("flaky");
        info.exits = (0..30)
            .map(|i| ExitRecord {
                status: ExitStatus::Code(i),
                at_ms: NOW_MS - 3_000_000 + u64::from(i as u32) * 60_000,
                ran_ms: 800,
            })
            .collect();
        let mut h = Harness::showing(vec![info], 80, 24);
        h.press(&["enter"]);
        let top = h.screen();
        assert!(
            top.contains("flaky crash loop") && !top.contains("exited 0,"),
            "{top}"
        );
        h.press(&["G"]);
        let bottom = h.screen();
        assert!(
            bottom.contains("exited 0,") && !bottom.contains("flaky crash loop"),
            "{bottom}"
        );
        h.press(&["g"]);
        assert_eq!(h.screen(), top);
    }

    #[test]
    fn lifecycle_keys_open_their_dialogs() {
        let mut h = Harness::showing(vec![running("web", 1_000)], 80, 24);
        h.press(&["enter", "x", "right", "enter"]);
        h.press(&["r", "right", "enter"]);
        h.press(&["X"]);
        assert!(h.screen().contains("web is running: destroy it first"));
        h.press(&["c"]);
        assert_eq!(
            h.sent,
            [
                Command::Destroy(label("web")),
                Command::Restart(label("web")),
                Command::Watch(label("web")),
            ]
        );
    }

    #[test]
    fn the_uptime_ticks() {
        let mut h = Harness::showing(vec![running("web", 1_500)], 80, 24);
        h.press(&["enter"]);
        assert_eq!(h.app.next_change_ms(NOW_MS), Some(NOW_MS + 500));
        h.update(Update::Unikernels(vec![exited("web", ExitStatus::Code(0))]));
        assert_eq!(h.app.next_change_ms(NOW_MS), None);
    }

    #[test]
    fn a_removed_unikernel_says_so() {
        let mut h = Harness::showing(vec![exited("web", ExitStatus::Code(0))], 80, 24);
        h.press(&["enter"]);
        h.update(Update::Unikernels(Vec::new()));
        assert!(h.screen().contains("web is gone"));
    }
}
