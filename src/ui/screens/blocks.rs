//! Block devices: name, size, the unikernel holding each, and the work on
//! them: create (optionally filled from a local file), upload, download and
//! destroy. Transfers run in the link while the operator carries on; this
//! screen shows each as a gauge with bytes, rate and time left, and cancels
//! the selected device's.

use crate::api::label::Label;
use crate::ui::format;
use crate::ui::keymap::{Action, Context};
use crate::ui::message::Command;
use crate::ui::model::{Model, Overwrite, Transfer};
use crate::ui::screens::{Ask, Confirm, Cx, DrawCx, Effect, Notice, Question, Then, View};
use crate::ui::widgets::selection::Selection;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, LineGauge, Paragraph, Row, Table, Wrap};
use std::path::PathBuf;

/// The transfer label beside each gauge takes this many columns.
const GAUGE_LABEL: u16 = 20;

#[derive(Default)]
pub struct BlocksView {
    /// Device names in display order, one selected.
    rows: Selection,
    /// The device an open question (upload, download path) is about.
    target: Option<Label>,
    /// A new device's answers so far: its name, then its size.
    new_name: Option<Label>,
    new_size_mb: Option<u64>,
}

impl BlocksView {
    pub fn new() -> BlocksView {
        BlocksView::default()
    }

    fn refresh(&mut self, model: &Model) {
        // A device being created shows (and can be cancelled) before it exists.
        let mut rows: Vec<Label> = model
            .blocks
            .iter()
            .flatten()
            .map(|b| b.name.clone())
            .chain(model.transfers.keys().cloned())
            .collect();
        rows.sort();
        rows.dedup();
        self.rows.set_rows(rows);
    }

    /// The selected device for `action`, or the reason there is none to use.
    fn device_for(&self, action: Action, cx: &Cx) -> Result<Label, String> {
        let Some(name) = self.rows.selected().cloned() else {
            return Err("there is no block device yet: create one first".into());
        };
        let info = cx.model.blocks.iter().flatten().find(|b| b.name == name);
        let holder = info.and_then(|b| b.attached_to.as_ref());
        let busy = cx.model.transfers.get(&name);
        match (action, holder, busy) {
            (Action::CancelTransfer, _, None) => Err(format!("no transfer of {name} is under way")),
            (Action::CancelTransfer, _, Some(_)) => Ok(name),
            (_, _, Some(t)) => Err(format!(
                "{name} is busy: its {} is under way; wait for it, or cancel it",
                t.kind.name()
            )),
            (Action::Upload | Action::BlockDestroy, Some(holder), _) => Err(format!(
                "block device {name} is attached to {holder}: destroy {holder} first"
            )),
            _ => Ok(name),
        }
    }

    fn on_device_action(&mut self, action: Action, cx: &mut Cx) {
        let name = match self.device_for(action, cx) {
            Ok(name) => name,
            Err(why) => return cx.effect(Notice::error(why)),
        };
        match action {
            Action::Upload => {
                let prompt = format!("upload into {name} (its contents are replaced) from file: ");
                self.target = Some(name);
                ask(cx, Question::UploadPath, prompt, String::new());
            }
            Action::Download => {
                let prompt = format!("download {name} to file: ");
                let initial = format!("{name}.img");
                self.target = Some(name);
                ask(cx, Question::DownloadPath, prompt, initial);
            }
            Action::BlockDestroy => {
                let size = listed_size_mb(cx.model, &name);
                cx.effect(Effect::Confirm(Confirm {
                    title: format!("Destroy block device {name}?"),
                    lines: vec![
                        format!("{name} ({size} MB) and everything on it are deleted."),
                        "This cannot be undone; download it first to keep a copy.".into(),
                    ],
                    yes: format!("Destroy {name}"),
                    then: Then::Send(Command::BlockDestroy(name)),
                }));
            }
            Action::CancelTransfer => cx.effect(Effect::Send(Command::CancelTransfer(name))),
            _ => {}
        }
    }

    /// The answers to the create questions, one after the other.
    fn on_create_answer(&mut self, question: Question, answer: &str, cx: &mut Cx) {
        match question {
            Question::BlockName => match new_name(answer, cx.model) {
                Ok(name) => {
                    let prompt = format!("size of {name} in MB: ");
                    self.new_name = Some(name);
                    ask(cx, Question::BlockSize, prompt, String::new());
                }
                Err(why) => cx.effect(Notice::error(why)),
            },
            Question::BlockSize => match (size_mb(answer), &self.new_name) {
                (Ok(size), Some(name)) => {
                    let prompt = format!("fill {name} from file (empty: start with zeros): ");
                    self.new_size_mb = Some(size);
                    ask(cx, Question::BlockData, prompt, String::new());
                }
                (Err(why), _) => cx.effect(Notice::error(why)),
                (Ok(_), None) => {}
            },
            Question::BlockData => {
                let (Some(name), Some(size_mb)) = (self.new_name.take(), self.new_size_mb.take())
                else {
                    return;
                };
                let data = Some(answer.trim())
                    .filter(|a| !a.is_empty())
                    .map(PathBuf::from);
                cx.effect(Effect::Send(Command::BlockCreate {
                    name,
                    size_mb,
                    data,
                }));
            }
            _ => {}
        }
    }
}

/// A column for texts at most `widest` long, and its heading.
fn column(widest: Option<usize>, heading: &str) -> Constraint {
    let width = widest.unwrap_or(0).max(heading.len());
    Constraint::Length(u16::try_from(width).unwrap_or(u16::MAX))
}

fn ask(cx: &mut Cx, question: Question, prompt: String, initial: String) {
    cx.effect(Effect::Ask(Ask {
        question,
        prompt,
        initial,
    }));
}

/// The size of block device `name`, as last listed (0 if it is not).
fn listed_size_mb(model: &Model, name: &Label) -> u64 {
    model
        .blocks
        .iter()
        .flatten()
        .find(|b| &b.name == name)
        .map_or(0, |b| b.size_mb)
}

/// The dialog before an upload replaces a device's contents.
fn ask_upload(model: &Model, name: Label, path: PathBuf) -> Confirm {
    let size = listed_size_mb(model, &name);
    Confirm {
        title: format!("Replace the contents of {name}?"),
        lines: vec![
            format!(
                "{name} ({size} MB) gets the contents of {}, then zeros to its end.",
                path.display()
            ),
            "The old contents stay until the upload is complete; a cancel keeps them.".into(),
        ],
        yes: format!("Upload into {name}"),
        then: Then::Send(Command::BlockUpload { name, path }),
    }
}

/// The dialog for a download that would replace a file.
pub fn ask_overwrite(question: &Overwrite) -> Confirm {
    let path = question.path.display();
    Confirm {
        title: format!("Overwrite {path}?"),
        lines: vec![
            format!("{path} exists. Downloading {} replaces it.", question.block),
            "The old file stays until the download is complete.".into(),
        ],
        yes: "Overwrite".into(),
        then: Then::Send(Command::BlockDownload {
            name: question.block.clone(),
            path: question.path.clone(),
            overwrite: true,
        }),
    }
}

/// A new device's name: valid and not taken.
fn new_name(answer: &str, model: &Model) -> Result<Label, String> {
    let answer = answer.trim();
    if answer.is_empty() {
        return Err("a block device needs a name: press n to start again".into());
    }
    let name = Label::new(answer).map_err(|e| format!("cannot create a block device: {e}"))?;
    if model.blocks.iter().flatten().any(|b| b.name == name) {
        return Err(format!(
            "a block device named {name} already exists: pick another name"
        ));
    }
    Ok(name)
}

fn size_mb(answer: &str) -> Result<u64, String> {
    match answer.trim().parse::<u64>() {
        Ok(0) => Err("a block device needs at least 1 MB".into()),
        Ok(size) => Ok(size),
        Err(_) => Err(format!(
            "`{}` is not a size: write a whole number of MB, such as 64",
            answer.trim()
        )),
    }
}

/// Bytes per second over the transfer so far; `None` before time has passed.
/// `38%: 24.0 MiB of 64.0 MiB, 6.0 MiB/s, 6s left` (what is known of it).
fn progress(t: &Transfer) -> String {
    format::transfer(t.done, t.total, t.at_ms.saturating_sub(t.started_ms))
}

fn share(t: &Transfer) -> Option<f64> {
    format::share(t.done, t.total)
}

impl View for BlocksView {
    fn context(&self) -> Context {
        Context::Blocks
    }

    fn title(&self, model: &Model) -> String {
        let count = model.blocks.as_ref().map_or(0, Vec::len);
        match model.transfers.len() {
            0 => format!("block devices ({count})"),
            1 => format!("block devices ({count}), a transfer under way"),
            n => format!("block devices ({count}), {n} transfers under way"),
        }
    }

    fn on_action(&mut self, action: Action, cx: &mut Cx) -> bool {
        if self.rows.navigate(action) {
            return true;
        }
        match action {
            Action::BlockCreate => {
                self.new_name = None;
                self.new_size_mb = None;
                let prompt = "name of the new block device: ".to_string();
                ask(cx, Question::BlockName, prompt, String::new());
            }
            Action::Upload | Action::Download | Action::BlockDestroy | Action::CancelTransfer => {
                self.on_device_action(action, cx)
            }
            _ => return false,
        }
        true
    }

    fn on_answer(&mut self, question: Question, answer: String, cx: &mut Cx) {
        match question {
            Question::UploadPath | Question::DownloadPath => {
                let Some(name) = self.target.take() else {
                    return;
                };
                let path = answer.trim();
                if path.is_empty() {
                    return cx.effect(Notice::error("no file named: nothing was transferred"));
                }
                let path = PathBuf::from(path);
                cx.effect(match question {
                    Question::UploadPath => Effect::Confirm(ask_upload(cx.model, name, path)),
                    _ => Effect::Send(Command::BlockDownload {
                        name,
                        path,
                        overwrite: false,
                    }),
                });
            }
            _ => self.on_create_answer(question, &answer, cx),
        }
    }

    fn on_open(&mut self, cx: &mut Cx) {
        cx.effect(Effect::Send(Command::RefreshBlocks));
    }

    fn on_model(&mut self, model: &Model) {
        self.refresh(model);
    }

    fn draw(&self, frame: &mut Frame, area: Rect, cx: &DrawCx) {
        let gauges = u16::try_from(cx.model.transfers.len()).unwrap_or(u16::MAX);
        // The table keeps a header and a row at least; transfers get the rest.
        let gauges = gauges.min(area.height.saturating_sub(4) / 2);
        let [table, transfers] = Layout::vertical([
            Constraint::Fill(1),
            Constraint::Length(if gauges == 0 { 0 } else { gauges + 2 }),
        ])
        .areas(area);
        self.draw_table(frame, table, cx);
        if gauges > 0 {
            self.draw_transfers(frame, transfers, cx);
        }
    }

    fn min_size(&self) -> (u16, u16) {
        (40, 4)
    }
}

impl BlocksView {
    fn draw_table(&self, frame: &mut Frame, area: Rect, cx: &DrawCx) {
        let Some(blocks) = &cx.model.blocks else {
            let text = "waiting for the daemon to list the block devices…";
            frame.render_widget(Paragraph::new(text).style(cx.theme.dim), area);
            return;
        };
        if self.rows.rows().is_empty() {
            let text = match cx.keys.hint(Context::Blocks, Action::BlockCreate) {
                Some(key) if !cx.read_only => format!(
                    "No block devices yet. Press {key} to create one, or run `fulmar block create NAME SIZE_MB`."
                ),
                _ => "No block devices yet.".to_string(),
            };
            frame.render_widget(
                Paragraph::new(text)
                    .style(cx.theme.dim)
                    .wrap(Wrap { trim: true }),
                area,
            );
            return;
        }
        let visible = usize::from(area.height.saturating_sub(1)).max(1);
        let shown = self.rows.in_view(visible);
        let rows = shown.iter().map(|name| {
            let info = blocks.iter().find(|b| &b.name == name);
            let transfer =
                cx.model
                    .transfers
                    .get(name)
                    .map_or(String::from("-"), |t| match share(t) {
                        Some(s) => format!("{} {:.0}%", t.kind.name(), s * 100.0),
                        None => format!("{} {}", t.kind.name(), format::bytes(t.done)),
                    });
            let attached = info
                .and_then(|b| b.attached_to.as_ref())
                .map_or(String::from("-"), Label::to_string);
            let size = info.map_or(String::from("-"), |b| b.size_mb.to_string());
            let style = if self.rows.is_selected(name) {
                cx.theme.selected
            } else {
                cx.theme.text
            };
            Row::new([
                Cell::from(name.to_string()),
                Cell::from(format!("{size:>8}")),
                Cell::from(attached),
                Cell::from(transfer),
            ])
            .style(style)
        });
        let header =
            Row::new(["NAME", " SIZE MB", "ATTACHED TO", "TRANSFER"]).style(cx.theme.header);
        // Columns as wide as their widest text, so they stay together.
        let names = shown.iter().map(|n| n.as_str().len()).max();
        let holders = blocks
            .iter()
            .filter_map(|b| b.attached_to.as_ref())
            .map(|a| a.as_str().len())
            .max();
        let widths = [
            column(names, "NAME"),
            Constraint::Length(8),
            column(holders, "ATTACHED TO"),
            Constraint::Fill(1),
        ];
        let table = Table::new(rows, widths).header(header).column_spacing(2);
        frame.render_widget(table, area);
    }

    fn draw_transfers(&self, frame: &mut Frame, area: Rect, cx: &DrawCx) {
        let [heading, _, list] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Fill(1),
        ])
        .areas(area);
        let cancel = cx
            .keys
            .hint(Context::Blocks, Action::CancelTransfer)
            .map_or(String::new(), |k| {
                format!(" ({k} cancels the selected device's)")
            });
        frame.render_widget(
            Line::from(vec![
                Span::styled("TRANSFERS", cx.theme.header),
                Span::styled(cancel, cx.theme.dim),
            ]),
            heading,
        );
        let rows =
            Layout::vertical(vec![Constraint::Length(1); usize::from(list.height)]).split(list);
        // The bar grows with the screen, leaving room for the numbers.
        let bar = list.width.saturating_sub(GAUGE_LABEL + 50).clamp(10, 60);
        for ((name, transfer), row) in cx.model.transfers.iter().zip(rows.iter()) {
            let [gauge, numbers] =
                Layout::horizontal([Constraint::Length(GAUGE_LABEL + bar), Constraint::Fill(1)])
                    .spacing(1)
                    .areas(*row);
            let width = usize::from(GAUGE_LABEL - 1);
            let label = format!("{:<width$}", format!("{} {name}", transfer.kind.name()));
            match share(transfer) {
                Some(ratio) => frame.render_widget(
                    LineGauge::default()
                        .ratio(ratio)
                        .label(Span::styled(label, cx.theme.text))
                        .filled_symbol("█")
                        .unfilled_symbol("░")
                        .filled_style(cx.theme.bar)
                        .unfilled_style(cx.theme.dim),
                    gauge,
                ),
                None => frame.render_widget(Span::styled(label, cx.theme.text), gauge),
            }
            frame.render_widget(Span::styled(progress(transfer), cx.theme.text), numbers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::unikernel::UnikernelInfo;
    use crate::ui::config::Config;
    use crate::ui::fixtures::*;
    use crate::ui::message::{TransferKind, Update};

    const MIB: u64 = 1 << 20;

    fn open(width: u16, height: u16) -> Harness {
        let mut h = Harness::showing(every_state(), width, height);
        h.press(&["b"]);
        h
    }

    fn at_both_sizes(name: &str, setup: impl Fn(&mut Harness)) {
        for (width, height) in [(80, 24), (200, 60)] {
            let mut harness = open(width, height);
            setup(&mut harness);
            insta::assert_snapshot!(format!("{name}_{width}x{height}"), harness.screen());
        }
    }

    /// Updates for a transfer of `block` that started 4 s ago and has
    /// moved `done` bytes since.
    fn transfer(h: &mut Harness, block: &str, kind: TransferKind, done: u64, total: Option<u64>) {
        let update = |done| Update::Transfer {
            block: label(block),
            kind,
            done,
            total,
        };
        h.app.on_update(update(0), NOW_MS - 4_000);
        h.update(update(done));
    }

    fn sent_after_open(h: &Harness) -> &[Command] {
        assert_eq!(h.sent.first(), Some(&Command::RefreshBlocks));
        &h.sent[1..]
    }

    #[test]
    fn blocks_list() {
        at_both_sizes("blocks_list", |_| {});
    }

    #[test]
    fn blocks_empty() {
        at_both_sizes("blocks_empty", |h| h.update(Update::Blocks(Vec::new())));
    }

    #[test]
    fn blocks_transfer_in_progress() {
        at_both_sizes("blocks_transfer", |h| {
            transfer(h, "spare", TransferKind::Upload, 24 * MIB, Some(64 * MIB));
            // Filled from a pipe: no size to measure against.
            transfer(h, "fresh", TransferKind::Create, 3 * MIB, None);
        });
    }

    #[test]
    fn blocks_overwrite_dialog() {
        at_both_sizes("blocks_overwrite", |h| {
            h.update(Update::WouldOverwrite {
                block: label("spare"),
                path: "/home/op/spare.img".into(),
            })
        });
    }

    #[test]
    fn blocks_destroy_dialog() {
        at_both_sizes("blocks_destroy", |h| h.press(&["x"]));
    }

    #[test]
    fn blocks_create_questions() {
        at_both_sizes("blocks_create_name", |h| {
            h.press(&["n"]);
            h.type_text("fresh");
        });
        at_both_sizes("blocks_create_size", |h| {
            h.press(&["n"]);
            h.type_text("fresh");
            h.press(&["enter"]);
            h.type_text("64");
        });
        at_both_sizes("blocks_create_data", |h| {
            h.press(&["n"]);
            h.type_text("fresh");
            h.press(&["enter"]);
            h.type_text("64");
            h.press(&["enter"]);
        });
    }

    #[test]
    fn create_asks_name_size_and_file_in_turn() {
        let mut h = open(80, 24);
        h.press(&["n"]);
        h.type_text("fresh");
        h.press(&["enter"]);
        h.type_text("64");
        h.press(&["enter"]);
        h.type_text("/tmp/seed.img");
        h.press(&["enter"]);
        h.press(&["n"]);
        h.type_text("empty");
        h.press(&["enter"]);
        h.type_text(" 8 ");
        h.press(&["enter", "enter"]);
        assert_eq!(
            sent_after_open(&h),
            [
                Command::BlockCreate {
                    name: label("fresh"),
                    size_mb: 64,
                    data: Some("/tmp/seed.img".into()),
                },
                Command::BlockCreate {
                    name: label("empty"),
                    size_mb: 8,
                    data: None,
                },
            ]
        );
    }

    #[test]
    fn create_refuses_bad_answers_with_the_reason() {
        for (name, size, why) in [
            ("", None, "a block device needs a name"),
            ("a/b", None, "contains '/'"),
            ("spare", None, "named spare already exists"),
            ("fresh", Some("lots"), "`lots` is not a size"),
            ("fresh", Some("-1"), "`-1` is not a size"),
            ("fresh", Some("0"), "at least 1 MB"),
        ] {
            let mut h = open(80, 24);
            h.press(&["n"]);
            h.type_text(name);
            h.press(&["enter"]);
            if let Some(size) = size {
                h.type_text(size);
                h.press(&["enter"]);
            }
            let screen = h.screen();
            assert!(screen.contains(why), "{name:?} {size:?}: {screen}");
            // No further question follows a refusal.
            h.press(&["enter"]);
            assert_eq!(sent_after_open(&h), [], "{name:?} {size:?}");
        }
    }

    #[test]
    fn upload_asks_for_the_file() {
        let mut h = open(80, 24);
        h.press(&["u"]);
        assert!(
            h.screen()
                .contains("upload into spare (its contents are replaced)")
        );
        h.type_text("/tmp/new.img");
        h.press(&["enter"]);
        let screen = h.screen();
        assert!(
            screen.contains("Replace the contents of spare?"),
            "{screen}"
        );
        // Enter on the default button keeps the contents.
        h.press(&["enter"]);
        assert!(
            !h.screen().contains("Replace the contents"),
            "the dialog is gone"
        );
        assert_eq!(sent_after_open(&h), []);
        // An empty answer sends nothing, and asks nothing.
        h.press(&["u", "enter"]);
        assert!(!h.screen().contains("Replace the contents"));
        assert_eq!(sent_after_open(&h), []);
        h.press(&["u"]);
        h.type_text("/tmp/new.img");
        h.press(&["enter", "right", "enter"]);
        assert_eq!(
            sent_after_open(&h),
            [Command::BlockUpload {
                name: label("spare"),
                path: "/tmp/new.img".into(),
            }]
        );
    }

    #[test]
    fn blocks_confirm_upload() {
        at_both_sizes("blocks_confirm_upload", |h| {
            h.press(&["u"]);
            h.type_text("/var/images/disk.img");
            h.press(&["enter"]);
        });
    }

    #[test]
    fn an_attached_device_is_neither_replaced_nor_destroyed() {
        let mut h = open(80, 24);
        h.press(&["j", "u"]);
        let screen = h.screen();
        assert!(
            screen.contains("block device web-disk is attached to web: destroy web first"),
            "{screen}"
        );
        h.press(&["x"]);
        assert!(h.screen().contains("attached to web"));
        h.press(&["right", "enter"]);
        assert_eq!(sent_after_open(&h), []);
    }

    #[test]
    fn download_asks_before_replacing_a_file() {
        let mut h = open(80, 24);
        h.press(&["d"]);
        assert!(h.screen().contains("download spare to file: spare.img"));
        h.press(&["enter"]);
        let first = Command::BlockDownload {
            name: label("spare"),
            path: "spare.img".into(),
            overwrite: false,
        };
        assert_eq!(sent_after_open(&h), std::slice::from_ref(&first));
        let exists = Update::WouldOverwrite {
            block: label("spare"),
            path: "spare.img".into(),
        };
        // Enter on the default button keeps the file.
        h.update(exists.clone());
        assert!(h.screen().contains("Overwrite spare.img?"));
        h.press(&["enter"]);
        assert!(h.screen().contains("download of spare not started"));
        assert_eq!(h.app.model.overwrite, None);
        h.press(&["j"]);
        assert!(!h.screen().contains("Overwrite"), "the dialog is gone");
        // Moving to the button and confirming sends it again, allowed to replace.
        h.update(exists);
        h.press(&["right", "enter"]);
        assert_eq!(
            sent_after_open(&h),
            [
                first,
                Command::BlockDownload {
                    name: label("spare"),
                    path: "spare.img".into(),
                    overwrite: true,
                }
            ]
        );
        assert_eq!(h.app.model.overwrite, None);
    }

    #[test]
    fn destroy_names_the_device_and_defaults_to_cancel() {
        let mut h = open(80, 24);
        h.press(&["x", "enter"]);
        assert_eq!(sent_after_open(&h), []);
        h.press(&["x"]);
        assert!(h.screen().contains("spare (1024 MB) and everything on it"));
        h.press(&["right", "enter"]);
        assert_eq!(sent_after_open(&h), [Command::BlockDestroy(label("spare"))]);
    }

    #[test]
    fn a_transfer_can_be_cancelled_and_blocks_other_work_meanwhile() {
        let mut h = open(80, 24);
        h.press(&["c"]);
        assert!(h.screen().contains("no transfer of spare is under way"));
        transfer(
            &mut h,
            "spare",
            TransferKind::Download,
            MIB,
            Some(1024 * MIB),
        );
        for key in ["u", "d", "x"] {
            h.press(&[key]);
            let screen = h.screen();
            assert!(
                screen.contains("spare is busy: its download is under way"),
                "{key}: {screen}"
            );
        }
        h.press(&["c"]);
        assert_eq!(
            sent_after_open(&h),
            [Command::CancelTransfer(label("spare"))]
        );
        h.update(Update::TransferEnded {
            block: label("spare"),
        });
        h.update(Update::Done {
            what: "download spare to spare.img".into(),
            outcome: Err("cancelled; spare.img was left as it was".into()),
        });
        let screen = h.screen();
        assert!(!screen.contains("TRANSFERS"), "{screen}");
        assert!(
            screen.contains("cancelled; spare.img was left as it was"),
            "{screen}"
        );
    }

    #[test]
    fn a_device_being_created_is_listed_and_can_be_cancelled() {
        let mut h = open(80, 24);
        transfer(&mut h, "fresh", TransferKind::Create, MIB, None);
        h.press(&["g"]);
        let screen = h.screen();
        assert!(
            screen.contains("fresh            -  -            create 1.0 MiB"),
            "{screen}"
        );
        h.press(&["x"]);
        assert!(
            h.screen()
                .contains("fresh is busy: its create is under way")
        );
        h.press(&["c"]);
        assert_eq!(
            sent_after_open(&h),
            [Command::CancelTransfer(label("fresh"))]
        );
        h.update(Update::TransferEnded {
            block: label("fresh"),
        });
        assert!(!h.screen().contains("fresh"), "gone with its transfer");
    }

    #[test]
    fn a_failed_upload_is_reported() {
        let mut h = open(80, 24);
        h.press(&["u"]);
        h.type_text("/nope.img");
        h.press(&["enter"]);
        h.update(Update::TransferEnded {
            block: label("spare"),
        });
        h.update(Update::Done {
            what: "upload /nope.img to spare".into(),
            outcome: Err(
                "cannot read /nope.img: No such file or directory (os error 2); check the path"
                    .into(),
            ),
        });
        assert!(
            h.screen()
                .contains("upload /nope.img to spare failed: cannot read /nope.img")
        );
    }

    #[test]
    fn read_only_leaves_only_downloads() {
        let mut h = Harness::with(Config::default(), true, 80, 24);
        h.update(Update::Unikernels(Vec::<UnikernelInfo>::new()));
        h.update(Update::Blocks(blocks()));
        h.press(&["b"]);
        for key in ["n", "u", "x"] {
            h.press(&[key]);
            assert!(h.screen().contains("read-only"), "{key}");
            h.press(&["right", "enter"]);
        }
        assert_eq!(sent_after_open(&h), []);
        let screen = h.screen();
        assert!(
            !screen.contains("create") && screen.contains("download"),
            "{screen}"
        );
        h.press(&["d", "enter"]);
        assert_eq!(sent_after_open(&h).len(), 1);
    }

    #[test]
    fn the_list_waits_for_the_daemon() {
        let mut h = Harness::new(80, 24);
        h.press(&["b"]);
        assert!(h.screen().contains("waiting for the daemon"));
        h.update(Update::Blocks(blocks()));
        assert!(h.screen().contains("web-disk"));
    }

    #[test]
    fn rate_and_time_left_come_from_the_updates_times() {
        let t = Transfer {
            kind: TransferKind::Upload,
            done: 24 * MIB,
            total: Some(64 * MIB),
            started_ms: 1_000,
            at_ms: 5_000,
        };
        assert_eq!(
            progress(&t),
            "38%: 24.0 MiB of 64.0 MiB, 6.0 MiB/s, 6s left"
        );
        assert_eq!(share(&t), Some(0.375));
        let just_started = Transfer {
            done: 0,
            at_ms: 1_000,
            ..t
        };
        assert_eq!(progress(&just_started), "0%: 0 B of 64.0 MiB");
        let piped = Transfer { total: None, ..t };
        assert_eq!(progress(&piped), "24.0 MiB so far, 6.0 MiB/s");
        assert_eq!(share(&piped), None);
    }
}
