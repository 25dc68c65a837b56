//! The home screen: one row per unikernel, sortable and filterable, with the
//! lifecycle actions on the selected row.

use crate::api::unikernel::{RunState, UnikernelInfo};
use crate::ui::format;
use crate::ui::keymap::{Action, Context};
use crate::ui::message::Command;
use crate::ui::model::Model;
use crate::ui::screens::{
    Confirm, Cx, DrawCx, Effect, Notice, Then, View, console::ConsoleView, details::DetailsView,
};
use crate::ui::theme::Theme;
use crate::ui::widgets::selection::Selection;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::Span;
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use std::cmp::Ordering;

/// The columns, in the order they are shown and sorted through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Column {
    #[default]
    Name,
    State,
    Target,
    Cpu,
    Memory,
    CpuUse,
    Uptime,
    Restarts,
    LastExit,
    Taps,
    Digest,
}

impl Column {
    const ALL: [Column; 11] = [
        Column::Name,
        Column::State,
        Column::Target,
        Column::Cpu,
        Column::Memory,
        Column::CpuUse,
        Column::Uptime,
        Column::Restarts,
        Column::LastExit,
        Column::Taps,
        Column::Digest,
    ];

    fn heading(self) -> &'static str {
        match self {
            Column::Name => "NAME",
            Column::State => "STATE",
            Column::Target => "TARGET",
            Column::Cpu => "PIN",
            Column::Memory => "MEM",
            Column::CpuUse => "CPU%",
            Column::Uptime => "UPTIME",
            Column::Restarts => "RESTARTS",
            Column::LastExit => "LAST EXIT",
            Column::Taps => "TAPS",
            Column::Digest => "DIGEST",
        }
    }

    fn next(self) -> Column {
        let i = Column::ALL.iter().position(|c| *c == self).unwrap_or(0);
        Column::ALL[(i + 1) % Column::ALL.len()]
    }
}

#[derive(Default)]
pub struct UnikernelsView {
    filter: String,
    sort: Column,
    descending: bool,
    /// Names in display order (filtered and sorted), one selected.
    rows: Selection,
}

impl UnikernelsView {
    fn refresh(&mut self, model: &Model) {
        let filter = self.filter.to_lowercase();
        let mut infos: Vec<&UnikernelInfo> = model
            .unikernels
            .iter()
            .filter(|u| filter.is_empty() || matches_filter(u, &filter))
            .collect();
        infos.sort_by(|a, b| {
            let order =
                compare(self.sort, a, b, model).then_with(|| a.config.name.cmp(&b.config.name));
            if self.descending {
                order.reverse()
            } else {
                order
            }
        });
        self.rows
            .set_rows(infos.iter().map(|u| u.config.name.clone()).collect());
    }
}

fn matches_filter(info: &UnikernelInfo, filter: &str) -> bool {
    info.config.name.as_str().to_lowercase().contains(filter) || info.state.name().contains(filter)
}

fn uptime_ms(info: &UnikernelInfo, now_ms: u64) -> Option<u64> {
    match info.state {
        RunState::Running { since_ms, .. } => Some(now_ms.saturating_sub(since_ms)),
        _ => None,
    }
}

/// How the last run ended, so a restarted unikernel still says why it restarted.
fn last_exit(info: &UnikernelInfo) -> String {
    info.exits
        .last()
        .map_or_else(|| "-".to_string(), |e| format::exit(e.status))
}

fn compare(column: Column, a: &UnikernelInfo, b: &UnikernelInfo, model: &Model) -> Ordering {
    let cpu_use = |u: &UnikernelInfo| model.cpu.get(&u.config.name).map_or(-1.0, |c| c.percent);
    let started = |u: &UnikernelInfo| match u.state {
        RunState::Running { since_ms, .. } => since_ms,
        _ => u64::MAX,
    };
    match column {
        Column::Name => a.config.name.cmp(&b.config.name),
        Column::State => a.state.name().cmp(b.state.name()),
        Column::Target => a.target.as_str().cmp(b.target.as_str()),
        Column::Cpu => a.config.cpu.cmp(&b.config.cpu),
        Column::Memory => a.config.memory_mb.cmp(&b.config.memory_mb),
        Column::CpuUse => cpu_use(a).total_cmp(&cpu_use(b)),
        // The longest-running first when ascending reads oddly; oldest start first does not.
        Column::Uptime => started(a).cmp(&started(b)),
        Column::Restarts => a.restarts.cmp(&b.restarts),
        Column::LastExit => last_exit(a).cmp(&last_exit(b)),
        Column::Taps => a.taps.len().cmp(&b.taps.len()),
        Column::Digest => a.digest.cmp(&b.digest),
    }
}

/// The style of a state: colour backs up the words, never replaces them.
pub fn state_style(state: &RunState, theme: &Theme) -> Style {
    match state {
        RunState::Running { .. } => theme.good,
        RunState::Starting { .. } | RunState::Restarting { .. } => theme.busy,
        RunState::CrashLoop { .. } => theme.bad,
        RunState::Exited { exit } if exit.status != crate::api::unikernel::ExitStatus::Code(0) => {
            theme.bad
        }
        RunState::Exited { .. } | RunState::Stopped => theme.dim,
    }
}

/// The dialog for a lifecycle action on `info`, naming what will happen.
pub fn ask_lifecycle(action: Action, info: &UnikernelInfo) -> Effect {
    let name = &info.config.name;
    let running = matches!(info.state, RunState::Running { .. });
    let (verb, lines, command) = match action {
        Action::Destroy => (
            "Destroy",
            vec![
                format!("{name}'s tender gets SIGTERM, then SIGKILL if it does not stop in time."),
                format!(
                    "{name} will not be restarted. Its settings and console history are kept until you remove it."
                ),
            ],
            Command::Destroy(name.clone()),
        ),
        Action::Restart => (
            "Restart",
            vec![if running {
                format!(
                    "{name}'s tender is stopped (SIGTERM, then SIGKILL) and started again with the same image and settings."
                )
            } else {
                format!("{name} is started again with the same image and settings.")
            }],
            Command::Restart(name.clone()),
        ),
        Action::Remove if running => {
            return Notice::error(format!(
                "{name} is running: destroy it first, then remove it"
            ));
        }
        Action::Remove => (
            "Remove",
            vec![
                format!(
                    "fulmar forgets {name}: its settings, image copy and console history are deleted."
                ),
                "Its block devices stay in the store.".to_string(),
            ],
            Command::Remove(name.clone()),
        ),
        _ => return Notice::error(format!("{} does not apply to a unikernel", action.name())),
    };
    Effect::Confirm(Confirm {
        title: format!("{verb} {name}?"),
        lines,
        yes: format!("{verb} {name}"),
        then: Then::Send(command),
    })
}

impl View for UnikernelsView {
    fn context(&self) -> Context {
        Context::Unikernels
    }

    fn title(&self, model: &Model) -> String {
        let shown = self.rows.rows().len();
        let total = model.unikernels.len();
        let sort = format!(
            "sorted by {}{}",
            self.sort.heading().to_lowercase(),
            if self.descending { " ↓" } else { "" }
        );
        if self.filter.is_empty() {
            format!("unikernels ({total}), {sort}")
        } else {
            format!(
                "unikernels ({shown} of {total} match /{}), {sort}",
                self.filter
            )
        }
    }

    fn on_action(&mut self, action: Action, cx: &mut Cx) -> bool {
        if self.rows.navigate(action) {
            return true;
        }
        match action {
            Action::SortNext => {
                self.sort = self.sort.next();
                self.refresh(cx.model);
            }
            Action::SortReverse => {
                self.descending = !self.descending;
                self.refresh(cx.model);
            }
            Action::Create => cx.effect(Effect::Push(Box::new(super::create::CreateView::new()))),
            Action::Select
            | Action::ShowConsole
            | Action::Restart
            | Action::Destroy
            | Action::Remove => {
                let Some(info) = self.rows.selected().and_then(|s| cx.model.unikernel(s)) else {
                    cx.effect(Notice::error("no unikernel is selected"));
                    return true;
                };
                let name = info.config.name.clone();
                let effect = match action {
                    Action::Select => Effect::Push(Box::new(DetailsView::new(name))),
                    Action::ShowConsole => Effect::Push(Box::new(ConsoleView::new(vec![name]))),
                    _ => ask_lifecycle(action, info),
                };
                cx.effect(effect);
            }
            _ => return false,
        }
        true
    }

    fn on_search(&mut self, text: &str, cx: &mut Cx) -> bool {
        self.filter = text.to_string();
        self.refresh(cx.model);
        true
    }

    fn on_model(&mut self, model: &Model) {
        self.refresh(model);
    }

    fn draw(&self, frame: &mut Frame, area: Rect, cx: &DrawCx) {
        if cx.model.unikernels.is_empty() {
            let hint = cx
                .keys
                .hint(Context::Unikernels, Action::Create)
                .map_or(String::new(), |k| {
                    format!(" Press {k} to create one, or run `fulmar create NAME IMAGE`.")
                });
            let text = format!("No unikernels yet.{hint}");
            frame.render_widget(Paragraph::new(text).style(cx.theme.dim), area);
            return;
        }
        let visible = usize::from(area.height.saturating_sub(1)).max(1);
        // Only the rows on screen are built: 1,000 unikernels cost what 50 do.
        let cells: Vec<(bool, [String; 11], &RunState)> = self
            .rows
            .in_view(visible)
            .iter()
            .filter_map(|name| {
                let info = cx.model.unikernel(name)?;
                Some((self.rows.is_selected(name), cells(info, cx), &info.state))
            })
            .collect();
        let columns = fit(area.width, &cells);
        let rows = cells.iter().map(|(selected, texts, state)| {
            let row = Row::new(columns.iter().map(|(column, _)| {
                let text = texts[*column as usize].clone();
                match column {
                    Column::State => Cell::from(Span::styled(text, state_style(state, cx.theme))),
                    _ => Cell::from(text),
                }
            }));
            row.style(if *selected {
                cx.theme.selected
            } else {
                cx.theme.text
            })
        });
        let header = Row::new(columns.iter().map(|(c, _)| {
            let marker = match (*c == self.sort, self.descending) {
                (false, _) => "",
                (true, false) => "↑",
                (true, true) => "↓",
            };
            Cell::from(format!("{}{marker}", c.heading()))
        }))
        .style(cx.theme.header);
        let widths = columns.iter().map(|(_, width)| Constraint::Length(*width));
        let table = Table::new(rows, widths).header(header).column_spacing(1);
        frame.render_widget(table, area);
    }

    fn min_size(&self) -> (u16, u16) {
        (30, 3)
    }

    fn next_change_ms(&self, cx: &DrawCx) -> Option<u64> {
        self.rows
            .last_shown()
            .filter_map(|name| cx.model.unikernel(name))
            .filter_map(|info| match info.state {
                RunState::Running { since_ms, .. } => {
                    let age = cx.now_ms.saturating_sub(since_ms);
                    Some(cx.now_ms + format::duration_changes_in(age))
                }
                RunState::Restarting { at_ms } | RunState::CrashLoop { at_ms, .. }
                    if at_ms > cx.now_ms =>
                {
                    let left = at_ms - cx.now_ms;
                    Some(cx.now_ms + (left % 1000).max(1))
                }
                _ => None,
            })
            .min()
    }
}

/// The text of every column for one unikernel, indexed by [`Column`].
fn cells(info: &UnikernelInfo, cx: &DrawCx) -> [String; 11] {
    let name = &info.config.name;
    let cpu_use = cx
        .model
        .cpu
        .get(name)
        .map_or(String::from("-"), |c| format!("{:.0}", c.percent));
    let uptime = uptime_ms(info, cx.now_ms).map_or(String::from("-"), format::duration);
    let taps = if info.taps.is_empty() {
        "-".to_string()
    } else {
        info.taps
            .iter()
            .map(|t| t.tap.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    [
        name.to_string(),
        format::state(&info.state, cx.now_ms),
        info.target.as_str().to_string(),
        info.config.cpu.to_string(),
        format!("{} MB", info.config.memory_mb),
        cpu_use,
        uptime,
        info.restarts.to_string(),
        last_exit(info),
        taps,
        info.digest.get(..12).unwrap_or(&info.digest).to_string(),
    ]
}

/// The columns that fit in `width`, each as wide as its widest text: the
/// most telling first (name, state, uptime), the digest last.
fn fit(width: u16, rows: &[(bool, [String; 11], &RunState)]) -> Vec<(Column, u16)> {
    const PRIORITY: [Column; 11] = [
        Column::Name,
        Column::State,
        Column::Uptime,
        Column::CpuUse,
        Column::Memory,
        Column::Restarts,
        Column::LastExit,
        Column::Cpu,
        Column::Target,
        Column::Taps,
        Column::Digest,
    ];
    let widest = |column: Column| {
        let text = rows
            .iter()
            .map(|(_, texts, _)| texts[column as usize].chars().count())
            .max()
            .unwrap_or(0);
        let header = column.heading().chars().count() + 1;
        u16::try_from(text.max(header)).unwrap_or(u16::MAX)
    };
    let mut chosen = Vec::new();
    let mut used: u16 = 0;
    for column in PRIORITY {
        let w = widest(column);
        let needed = if chosen.is_empty() {
            w
        } else {
            w.saturating_add(1)
        };
        if used.saturating_add(needed) <= width || chosen.is_empty() {
            used = used.saturating_add(needed);
            chosen.push((column, w));
        }
    }
    chosen.sort_by_key(|(column, _)| *column as usize);
    chosen
}
