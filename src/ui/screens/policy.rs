//! The host policy and what is in use of it: CPUs (and how many unikernels
//! each has pinned), memory, disk and bridges (and their taps), each as a bar
//! and in numbers.

use crate::api::policy::PolicyReport;
use crate::ui::keymap::{Action, Context};
use crate::ui::message::Command;
use crate::ui::model::Model;
use crate::ui::screens::{Cx, DrawCx, Effect, View};
use crate::ui::theme::Theme;
use crate::ui::widgets::scrolled::Scrolled;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use std::collections::BTreeSet;

/// From this share on, a resource is shown as nearly full.
const NEARLY_FULL: f64 = 0.9;
/// Resource names take this many columns.
const NAME_WIDTH: usize = 10;

#[derive(Default)]
pub struct PolicyView {
    scroll: Scrolled,
}

impl PolicyView {
    pub fn new() -> PolicyView {
        PolicyView::default()
    }
}

impl View for PolicyView {
    fn context(&self) -> Context {
        Context::Global
    }

    fn title(&self, _model: &Model) -> String {
        "host policy".into()
    }

    fn on_action(&mut self, action: Action, _cx: &mut Cx) -> bool {
        self.scroll.on_action(action)
    }

    fn on_open(&mut self, cx: &mut Cx) {
        cx.effect(Effect::Send(Command::RefreshPolicy));
    }

    fn draw(&self, frame: &mut Frame, area: Rect, cx: &DrawCx) {
        let Some(report) = &cx.model.policy else {
            frame.render_widget(
                Paragraph::new("waiting for the daemon to report the policy…").style(cx.theme.dim),
                area,
            );
            return;
        };
        // Bars grow with the screen, leaving room for the numbers.
        let bar = Scrolled::text_width(area)
            .saturating_sub(NAME_WIDTH + 45)
            .clamp(10, 50);
        let page = Page {
            lines: Vec::new(),
            bar,
            theme: cx.theme,
        };
        self.scroll.draw(frame, area, page.build(report), cx.theme);
    }
}

struct Page<'a> {
    lines: Vec<Line<'static>>,
    /// The width of a bar.
    bar: usize,
    theme: &'a Theme,
}

impl Page<'_> {
    fn build(mut self, report: &PolicyReport) -> Vec<Line<'static>> {
        self.cpus(report);
        self.lines.push(Line::default());
        let (policy, used) = (&report.policy, &report.used);
        self.amount("memory", used.memory_mb, policy.memory_mb);
        self.amount("disk", used.disk_mb, policy.disk_mb);
        self.lines.push(Line::default());
        self.bridges(report);
        self.lines
    }

    /// One resource as `name [bar] numbers`; one that runs out (memory,
    /// disk, unlike CPUs and bridges, which can be shared) is flagged as it fills.
    fn row(&mut self, name: &str, used: u64, total: u64, numbers: String, runs_out: bool) {
        let share = if total == 0 {
            1.0
        } else {
            used as f64 / total as f64
        };
        let (style, warning) = match share {
            _ if !runs_out => (self.theme.bar, ""),
            s if s >= 1.0 => (self.theme.bad, ", full"),
            s if s >= NEARLY_FULL => (self.theme.bad, ", nearly full"),
            _ => (self.theme.bar, ""),
        };
        let mut spans = vec![Span::styled(
            format!("{name:NAME_WIDTH$}"),
            self.theme.header,
        )];
        spans.extend(bar(share, self.bar, style, self.theme.dim));
        spans.push(Span::styled(
            format!("  {numbers}{warning}"),
            self.theme.text,
        ));
        self.lines.push(Line::from(spans));
    }

    /// An indented sub-row (a CPU, a bridge).
    fn item(&mut self, name: String, spans: Vec<Span<'static>>) {
        let width = NAME_WIDTH - 2;
        let mut line = vec![Span::styled(format!("  {name:<width$}"), self.theme.dim)];
        line.extend(spans);
        self.lines.push(Line::from(line));
    }

    fn amount(&mut self, name: &str, used: u64, total: u64) {
        let free = total.saturating_sub(used);
        let numbers = format!("{used} of {total} MB, {free} free");
        self.row(name, used, total, numbers, true);
    }

    /// CPUs in use are those with a unikernel pinned; each CPU shows how many.
    fn cpus(&mut self, report: &PolicyReport) {
        let (online, pinned) = (&report.policy.cpus, &report.used.cpus);
        let busy = online.iter().filter(|c| pinned.contains_key(c)).count() as u64;
        let total = online.len() as u64;
        self.row(
            "CPUs",
            busy,
            total,
            format!(
                "{busy} of {total} with unikernels pinned, {} free",
                total - busy
            ),
            false,
        );
        let most = pinned.values().copied().max().unwrap_or(1).max(1) as u64;
        let every: BTreeSet<u32> = online.iter().chain(pinned.keys()).copied().collect();
        for cpu in every {
            let count = pinned.get(&cpu).copied().unwrap_or(0);
            let mut spans = bar(
                count as f64 / most as f64,
                8,
                self.theme.bar,
                self.theme.dim,
            );
            spans.push(Span::styled(
                match count {
                    0 => "  free".to_string(),
                    1 => "  1 unikernel".to_string(),
                    n => format!("  {n} unikernels"),
                },
                self.theme.text,
            ));
            if !online.contains(&cpu) {
                spans.push(Span::styled(
                    " (offline: what is pinned here cannot start)",
                    self.theme.bad,
                ));
            }
            self.item(format!("cpu {cpu}"), spans);
        }
    }

    /// Bridges in use are those with taps on them; each shows how many.
    fn bridges(&mut self, report: &PolicyReport) {
        let (known, taps) = (&report.policy.bridges, &report.used.bridges);
        let busy = known.iter().filter(|b| taps.contains_key(*b)).count() as u64;
        let total = known.len() as u64;
        let tap_count: usize = taps.values().sum();
        if total == 0 {
            self.lines.push(Line::from(vec![
                Span::styled(format!("{:NAME_WIDTH$}", "bridges"), self.theme.header),
                Span::styled(
                    "none on this host: create one (ip link add NAME type bridge) for unikernels with network devices",
                    self.theme.dim,
                ),
            ]));
        } else {
            self.row(
                "bridges",
                busy,
                total,
                format!(
                    "{busy} of {total} with taps, {} free; {tap_count} taps in all",
                    total - busy
                ),
                false,
            );
        }
        let every: BTreeSet<&String> = known.iter().chain(taps.keys()).collect();
        for bridge in every {
            let text = match taps.get(bridge).copied().unwrap_or(0) {
                0 => "no taps".to_string(),
                1 => "1 tap".to_string(),
                n => format!("{n} taps"),
            };
            let mut spans = vec![Span::styled(text, self.theme.text)];
            if !known.contains(bridge) {
                spans.push(Span::styled(" (gone from the host)", self.theme.bad));
            }
            self.item(bridge.clone(), spans);
        }
    }
}

/// `width` cells, the `share` of them filled: `███░░░`, so the bar reads
/// without colour too.
fn bar(share: f64, width: usize, filled: Style, empty: Style) -> Vec<Span<'static>> {
    let cells = ((share.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    // Anything in use shows at least one cell.
    let cells = if share > 0.0 { cells.max(1) } else { cells };
    vec![
        Span::styled("█".repeat(cells), filled),
        Span::styled("░".repeat(width - cells), empty),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::fixtures::*;
    use crate::ui::message::Update;

    fn at_both_sizes(name: &str, setup: impl Fn(&mut Harness)) {
        for (width, height) in [(80, 24), (200, 60)] {
            let mut harness = Harness::new(width, height);
            setup(&mut harness);
            harness.press(&["p"]);
            insta::assert_snapshot!(format!("{name}_{width}x{height}"), harness.screen());
        }
    }

    fn nearly_full() -> PolicyReport {
        let mut report = policy();
        report.used.memory_mb = 15_900;
        report.used.disk_mb = 102_400;
        for cpu in 0..4 {
            report.used.cpus.insert(cpu, cpu as usize + 1);
        }
        report.used.cpus.insert(7, 1);
        report.used.bridges.insert("br1".into(), 1);
        report.used.bridges.insert("old".into(), 3);
        report
    }

    #[test]
    fn bars_are_readable_without_colour() {
        let text = |share| {
            bar(share, 10, Style::new(), Style::new())
                .iter()
                .map(|s| s.content.to_string())
                .collect::<String>()
        };
        assert_eq!(text(0.0), "░░░░░░░░░░");
        assert_eq!(text(0.001), "█░░░░░░░░░", "in use shows");
        assert_eq!(text(0.5), "█████░░░░░");
        assert_eq!(text(1.5), "██████████");
    }

    #[test]
    fn policy_normal() {
        at_both_sizes("policy_normal", |h| h.update(Update::Policy(policy())));
    }

    #[test]
    fn policy_nearly_full() {
        at_both_sizes("policy_nearly_full", |h| {
            h.update(Update::Policy(nearly_full()))
        });
    }

    #[test]
    fn policy_waiting() {
        at_both_sizes("policy_waiting", |_| {});
    }

    #[test]
    fn opening_asks_for_a_fresh_report_and_says_the_numbers() {
        let mut h = Harness::new(80, 24);
        h.press(&[":"]);
        h.type_text("policy");
        h.press(&["enter"]);
        assert_eq!(h.sent, [Command::RefreshPolicy]);
        assert!(h.screen().contains("waiting for the daemon"));
        h.update(Update::Policy(policy()));
        let screen = h.screen();
        for expected in [
            "768 of 16384 MB, 15616 free",
            "2048 of 102400 MB, 100352 free",
            "1 of 4 with unikernels pinned, 3 free",
            "cpu 1",
            "2 unikernels",
            "1 of 2 with taps, 1 free",
        ] {
            assert!(screen.contains(expected), "{expected}: {screen}");
        }
    }

    #[test]
    fn many_cpus_scroll() {
        let mut report = policy();
        report.policy.cpus = (0..64).collect();
        let mut h = Harness::new(80, 24);
        h.update(Update::Policy(report));
        h.press(&["p"]);
        assert!(!h.screen().contains("cpu 63"));
        h.press(&["G"]);
        let bottom = h.screen();
        assert!(
            bottom.contains("cpu 63") && bottom.contains("br1"),
            "{bottom}"
        );
    }
}
