//! How the form looks: a column of labels, the fields, and beside each what
//! is wrong with it (under it when the terminal is too narrow), marked ✗ so
//! that colour is never the only sign. Only the lines on screen are drawn;
//! the form scrolls to keep the focused row and its reasons in view.

use crate::api::image::{DeviceKind, TenderReport};
use crate::api::policy::format_cpus;
use crate::ui::screens::DrawCx;
use crate::ui::screens::create::CreateView;
use crate::ui::screens::create::form::{Check, Image, Mode, RestartKind, Row};
use crate::ui::widgets::field::Field;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};

/// The width of the label column (a focus marker and the label), and of
/// the input column in a narrow and a wide terminal.
const LABEL: u16 = 14;
const LABEL_TEXT: usize = 11;
const INPUT_NARROW: u16 = 28;
const INPUT_WIDE: u16 = 36;
const WIDE: u16 = 100;
/// A reason goes beside its field only where it has at least this much room.
const BESIDE: u16 = 40;
/// Completion matches listed under the image path.
const MATCHES_SHOWN: usize = 8;

/// One line of the form.
enum Piece<'a> {
    /// A label, an input (a text field, a value or a button) and a note after it.
    Row {
        row: Row,
        label: String,
        input: Input<'a>,
        note: Line<'static>,
    },
    /// Free text from column `indent`; `row` is the row it belongs to.
    Text {
        row: Option<Row>,
        indent: u16,
        line: Line<'static>,
    },
}

enum Input<'a> {
    Field(&'a Field),
    Value(Line<'static>),
    /// As wide as its text; the note follows it.
    Button(Line<'static>),
}

/// The input column's width in a terminal `width` wide.
fn input_width(width: u16) -> u16 {
    if width < WIDE {
        INPUT_NARROW
    } else {
        INPUT_WIDE
    }
}

impl Piece<'_> {
    fn row(&self) -> Option<Row> {
        match self {
            Piece::Row { row, .. } => Some(*row),
            Piece::Text { row, .. } => *row,
        }
    }
}

/// The pieces of the form, built for a frame of `width` columns.
struct Builder<'a> {
    pieces: Vec<Piece<'a>>,
    check: Check,
    cx: &'a DrawCx<'a>,
    width: u16,
}

impl<'a> Builder<'a> {
    fn note_width(&self) -> u16 {
        self.width
            .saturating_sub(LABEL + input_width(self.width) + 1)
    }

    fn text(&mut self, row: Option<Row>, indent: u16, line: Line<'static>) {
        self.pieces.push(Piece::Text { row, indent, line });
    }

    fn blank(&mut self) {
        self.text(None, 0, Line::default());
    }

    fn row(&mut self, row: Row, label: &str, input: Input<'a>, note: Line<'static>) {
        self.row_with(row, label, input, note, Vec::new());
    }

    /// A row, lines of `details` under it, then its reasons: the first
    /// beside it when there is room, the rest (or all) under the details.
    fn row_with(
        &mut self,
        row: Row,
        label: &str,
        input: Input<'a>,
        note: Line<'static>,
        details: Vec<Line<'static>>,
    ) {
        let reasons: Vec<String> = self.check.reasons_of(row).map(String::from).collect();
        let mut under = reasons.as_slice();
        let mut note = note;
        if let Some(first) = reasons.first() {
            let room = usize::from(self.note_width());
            if room >= usize::from(BESIDE) && first.chars().count() + 2 <= room {
                note = self.reason_line(first);
                under = &reasons[1..];
            }
        }
        let label = if label.chars().count() > LABEL_TEXT {
            let cut: String = label.chars().take(LABEL_TEXT - 1).collect();
            format!("{cut}…")
        } else {
            label.to_string()
        };
        self.pieces.push(Piece::Row {
            row,
            label,
            input,
            note,
        });
        for line in details {
            self.text(Some(row), LABEL, line);
        }
        for reason in under {
            self.reason_under(row, reason);
        }
    }

    fn reason_line(&self, reason: &str) -> Line<'static> {
        Line::from(Span::styled(format!("✗ {reason}"), self.cx.theme.bad))
    }

    fn reason_under(&mut self, row: Row, reason: &str) {
        let width = usize::from(self.width.saturating_sub(LABEL + 2)).max(10);
        for (i, part) in wrap(reason, width).into_iter().enumerate() {
            let text = if i == 0 {
                format!("✗ {part}")
            } else {
                format!("  {part}")
            };
            let line = Line::from(Span::styled(text, self.cx.theme.bad));
            self.text(Some(row), LABEL, line);
        }
    }

    fn dim(&self, text: impl Into<String>) -> Line<'static> {
        Line::from(Span::styled(text.into(), self.cx.theme.dim))
    }

    /// A choice shown between arrows, so it reads as one to change.
    fn choice(&self, text: impl Into<String>, chosen: bool) -> Input<'a> {
        let style = if chosen {
            self.cx.theme.text
        } else {
            self.cx.theme.dim
        };
        Input::Value(Line::from(Span::styled(
            format!("◂ {} ▸", text.into()),
            style,
        )))
    }
}

impl CreateView {
    pub(super) fn draw_form(&self, frame: &mut Frame, area: Rect, cx: &DrawCx) {
        let pieces = self.pieces(area.width, cx);
        let height = usize::from(area.height);
        let offset = self.scrolled(&pieces, height);
        for (y, piece) in pieces.iter().skip(offset).take(height).enumerate() {
            let line = Rect {
                y: area.y + y as u16,
                height: 1,
                ..area
            };
            self.draw_piece(frame, line, piece, cx);
        }
    }

    /// The first line to show: where it was, moved just enough to show the
    /// focused row and its reasons.
    fn scrolled(&self, pieces: &[Piece], height: usize) -> usize {
        let mine: Vec<usize> = pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| p.row() == Some(self.focus))
            .map(|(i, _)| i)
            .collect();
        let mut offset = self.offset.get().min(pieces.len().saturating_sub(height));
        if let (Some(&first), Some(&last)) = (mine.first(), mine.last()) {
            if last >= offset + height {
                offset = last + 1 - height;
            }
            if first < offset {
                offset = first;
            }
        }
        self.offset.set(offset);
        offset
    }

    fn draw_piece(&self, frame: &mut Frame, area: Rect, piece: &Piece, cx: &DrawCx) {
        match piece {
            Piece::Text { indent, line, .. } => {
                let x = (*indent).min(area.width);
                let rest = Rect {
                    x: area.x + x,
                    width: area.width - x,
                    ..area
                };
                frame.render_widget(line.clone(), rest);
            }
            Piece::Row {
                row,
                label,
                input,
                note,
            } => {
                let focused = *row == self.focus;
                let (marker, style) = if focused {
                    ("▸ ", cx.theme.key)
                } else {
                    ("  ", cx.theme.text)
                };
                let label_area = Rect {
                    width: LABEL.min(area.width),
                    ..area
                };
                frame.render_widget(Span::styled(format!("{marker}{label}"), style), label_area);
                let x = LABEL.min(area.width);
                let input_width = match input {
                    Input::Button(line) => line.width() as u16,
                    _ => input_width(area.width),
                }
                .min(area.width - x);
                let input_area = Rect {
                    x: area.x + x,
                    width: input_width,
                    ..area
                };
                match input {
                    Input::Field(field) => field.draw(frame, input_area, cx.theme, focused),
                    Input::Button(line) => frame.render_widget(line.clone(), input_area),
                    Input::Value(line) => {
                        let line = if focused {
                            restyled(line, cx.theme.selected)
                        } else {
                            line.clone()
                        };
                        frame.render_widget(line, input_area);
                    }
                }
                let note_x = (x + input_width + 1).min(area.width);
                let note_area = Rect {
                    x: area.x + note_x,
                    width: area.width - note_x,
                    ..area
                };
                frame.render_widget(note.clone(), note_area);
            }
        }
    }

    fn pieces<'a>(&'a self, width: u16, cx: &'a DrawCx<'a>) -> Vec<Piece<'a>> {
        let form = &self.form;
        let mut b = Builder {
            pieces: Vec::new(),
            check: form.check(cx.model),
            cx,
            width,
        };
        self.image_pieces(&mut b);
        self.setting_pieces(&mut b);
        b.blank();
        self.device_pieces(&mut b);
        b.blank();
        self.submit_piece(&mut b);
        b.pieces
    }

    fn image_pieces<'a>(&'a self, b: &mut Builder<'a>) {
        let form = &self.form;
        if let Image::Kept { info } = &form.image {
            let value = format!("{} · sha256 {}", info.target, short(&info.sha256));
            let note = b.dim("kept by the daemon");
            let input = Input::Value(Line::from(value));
            // The image of a unikernel being edited cannot change: no row to focus.
            b.pieces.push(Piece::Row {
                row: Row::Image,
                label: "Image".into(),
                input,
                note,
            });
            return;
        }
        let note = match &form.image {
            Image::Inspecting { .. } => Line::from(Span::styled("checking…", b.cx.theme.busy)),
            Image::Ready { path, .. } if path == form.image_path.text() => {
                Line::from(Span::styled("✓ checked", b.cx.theme.good))
            }
            _ => Line::default(),
        };
        let mut details = Vec::new();
        if let Some(why) = &self.completion_note {
            details.push(b.dim(why.clone()));
        }
        if !self.matches.is_empty() {
            details.push(b.dim(matches_line(&self.matches)));
        }
        if let Image::Ready { report, .. } = &form.image {
            let image = &report.image;
            let compressed = if image.compressed { ", was zlib" } else { "" };
            details.push(Line::from(format!(
                "{} · ABI {} · sha256 {} · {}{compressed}",
                image.target,
                image.abi_version,
                short(&image.sha256),
                crate::ui::format::bytes(image.size),
            )));
            details.push(match &report.tender {
                TenderReport::Found { path, abi_version } => {
                    Line::from(format!("run by {path} (ABI {abi_version})"))
                }
                TenderReport::Missing { .. } => {
                    Line::from(Span::styled("no tender here would run it", b.cx.theme.bad))
                }
            });
        }
        let input = Input::Field(&form.image_path);
        b.row_with(Row::Image, "Image", input, note, details);
    }

    fn setting_pieces<'a>(&'a self, b: &mut Builder<'a>) {
        let form = &self.form;
        match &form.mode {
            Mode::Create => b.row(Row::Name, "Name", Input::Field(&form.name), Line::default()),
            Mode::Edit(name) => {
                let note = b.dim("fixed");
                b.pieces.push(Piece::Row {
                    row: Row::Name,
                    label: "Name".into(),
                    input: Input::Value(Line::from(name.to_string())),
                    note,
                });
            }
        }
        let memory_note = b.cx.model.policy.as_ref().map_or_else(Line::default, |p| {
            let free = p.policy.memory_mb.saturating_sub(p.used.memory_mb);
            b.dim(format!("MB · {free} of {} free", p.policy.memory_mb))
        });
        b.row(
            Row::Memory,
            "Memory",
            Input::Field(&form.memory),
            memory_note,
        );
        let cpu_note = b.cx.model.policy.as_ref().map_or_else(Line::default, |p| {
            b.dim(format!("online: {}", format_cpus(&p.policy.cpus)))
        });
        b.row(Row::Cpu, "CPU", Input::Field(&form.cpu), cpu_note);
        let args_note = b.dim("quotes and \\ as in a shell");
        b.row(Row::Args, "Arguments", Input::Field(&form.args), args_note);
        let restart_note = b.dim(match form.restart {
            RestartKind::Never => "stays down when it exits",
            RestartKind::OnFailure => "after a non-zero exit or a signal",
            RestartKind::OnCodes => "only after the failures below",
            RestartKind::Always => "after every exit, 0 too",
        });
        let restart = b.choice(form.restart.name(), true);
        b.row(Row::Restart, "Restart", restart, restart_note);
        if form.restart == RestartKind::OnCodes {
            let note = b.dim("exit codes and signal, e.g. signal,2-5");
            b.row(Row::Codes, "  codes", Input::Field(&form.codes), note);
        }
        let priority_note = b.dim("higher starts first at boot");
        b.row(
            Row::Priority,
            "Priority",
            Input::Field(&form.priority),
            priority_note,
        );
    }

    fn device_pieces<'a>(&'a self, b: &mut Builder<'a>) {
        let form = &self.form;
        let heading = match (&form.image, form.devices.len()) {
            (Image::Ready { .. } | Image::Kept { .. }, 0) => {
                "Devices: the image's manifest declares none.".to_string()
            }
            (Image::Ready { .. } | Image::Kept { .. }, n) => {
                format!("Devices: the image's manifest declares {n}; bind every one.")
            }
            _ => "Devices: listed from the image's manifest once it is chosen.".to_string(),
        };
        b.text(
            None,
            0,
            Line::from(Span::styled(heading, b.cx.theme.header)),
        );
        for (i, row) in form.devices.iter().enumerate() {
            let options = form.options(i, b.cx.model);
            let input = match (&row.choice, row.device.kind) {
                (Some(choice), _) => {
                    let size = options
                        .iter()
                        .find(|(o, _)| o == choice)
                        .and_then(|(_, size)| *size)
                        .map_or(String::new(), |mb| format!(" · {mb} MB"));
                    b.choice(format!("{choice}{size}"), true)
                }
                (None, DeviceKind::Net) if options.is_empty() => b.choice("no bridges here", false),
                (None, DeviceKind::Net) => b.choice("choose a bridge", false),
                (None, DeviceKind::Block) if options.is_empty() => {
                    b.choice("no free block devices", false)
                }
                (None, DeviceKind::Block) => b.choice("choose a block device", false),
            };
            let note = match (row.device.kind, b.check.macs.get(i).copied().flatten()) {
                (DeviceKind::Net, Some(mac)) => b.dim(format!("net · MAC {mac}")),
                (kind, _) => b.dim(kind.to_string()),
            };
            b.row(Row::Device(i), &row.device.name, input, note);
            if row.device.kind == DeviceKind::Block {
                let note = b.dim("bytes; empty means 512");
                b.row(Row::Sector(i), "  sector", Input::Field(&row.sector), note);
            }
        }
    }

    fn submit_piece<'a>(&'a self, b: &mut Builder<'a>) {
        let form = &self.form;
        let ready = b.check.ready() && !self.submitting;
        let name = b
            .check
            .config
            .as_ref()
            .map_or(String::new(), |c| format!(" {}", c.name));
        let verb = match form.mode {
            Mode::Create => "Create",
            Mode::Edit(_) => "Restart",
        };
        let style = match (ready, self.focus == Row::Submit) {
            (true, true) => b.cx.theme.button_focused,
            (true, false) => b.cx.theme.button,
            (false, _) => b.cx.theme.dim,
        };
        // The button's look says whether it is ready, and so does its note.
        let button = Input::Button(Line::from(Span::styled(format!("[ {verb}{name} ]"), style)));
        let note = if self.submitting {
            Line::from(Span::styled(
                "sent; waiting for the daemon…",
                b.cx.theme.busy,
            ))
        } else if let Some(waiting) = &b.check.waiting {
            b.dim(format!("not yet: {waiting}"))
        } else if b.check.reasons.is_empty() {
            Line::from(Span::styled("ready", b.cx.theme.good))
        } else {
            let n = b.check.reasons.len();
            b.dim(format!(
                "not ready: {n} thing{} to fix (✗)",
                if n == 1 { "" } else { "s" }
            ))
        };
        b.row(Row::Submit, "", button, note);
    }
}

/// `line` in one style throughout: a focused value reads as selected.
fn restyled(line: &Line, style: Style) -> Line<'static> {
    let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
    Line::from(Span::styled(text, style))
}

/// "3 matches: web.hvt  web.spt  webroot/", the first few by name.
fn matches_line(matches: &[String]) -> String {
    let names: Vec<&str> = matches
        .iter()
        .take(MATCHES_SHOWN)
        .map(|m| base_name(m))
        .collect();
    let more = matches.len().saturating_sub(MATCHES_SHOWN);
    let more = if more > 0 {
        format!("  (+{more} more)")
    } else {
        String::new()
    };
    format!("{} matches: {}{more}", matches.len(), names.join("  "))
}

/// The start of a digest, enough to tell images apart.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// The last part of a path as the operator typed it, a directory keeping its `/`.
fn base_name(path: &str) -> &str {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    match trimmed.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// `text` in lines of at most `width` characters, broken at blanks where it can.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word = word.to_string();
        loop {
            let len = line.chars().count();
            let needed = word.chars().count() + usize::from(len > 0);
            if len + needed <= width {
                if len > 0 {
                    line.push(' ');
                }
                line.push_str(&word);
                break;
            }
            if len > 0 {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            // A word longer than a line is cut.
            let cut: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            lines.push(cut);
            if word.is_empty() {
                break;
            }
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_blanks_and_cuts_long_words() {
        assert_eq!(wrap("one two three", 7), ["one two", "three"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), [""]);
    }

    #[test]
    fn base_names_keep_a_directory_slash() {
        assert_eq!(base_name("/srv/img/web.hvt"), "web.hvt");
        assert_eq!(base_name("/srv/img/"), "img/");
        assert_eq!(base_name("web"), "web");
    }
}
