//! The console panes as the operator sees them: snapshots at 80x24 and
//! 200x60 of every state, and what keys do (commands sent, screen text,
//! styles of highlighted cells).

use crate::api::unikernel::{ExitStatus, UnikernelInfo};
use crate::ui::fixtures::*;
use crate::ui::message::{Command, Update};
use crate::ui::theme::{Theme, ThemeName};
use std::path::PathBuf;

/// A connected app that knows `unikernels` and shows the consoles of `names`.
fn open(unikernels: Vec<UnikernelInfo>, names: &str, width: u16, height: u16) -> Harness {
    let mut h = Harness::showing(unikernels, width, height);
    h.press(&[":"]);
    h.type_text(&format!("console {names}"));
    keys(&mut h, &["enter"]);
    h
}

/// Presses keys with a frame drawn after each, as the real loop does: pages
/// and jumps are as long as the pane last drawn.
fn keys(h: &mut Harness, keys: &[&str]) {
    for key in keys {
        h.press(&[key]);
        h.screen();
    }
}

fn web_and_db() -> Vec<UnikernelInfo> {
    vec![running("web", 60_000), running("db", 120_000)]
}

/// `count` numbered lines of `name`'s console, from `first` on.
fn numbered(h: &mut Harness, name: &str, first: u64, count: u64) {
    for seq in first..first + count {
        h.update(console_bytes(
            name,
            seq,
            format!("{name} line {seq}: GET /index.html 200").as_bytes(),
        ));
    }
}

/// Runs `setup` at both sizes and snapshots each.
fn at_both_sizes(name: &str, setup: impl Fn(u16, u16) -> Harness) {
    for (width, height) in [(80, 24), (200, 60)] {
        let mut h = setup(width, height);
        insta::assert_snapshot!(format!("{name}_{width}x{height}"), h.screen());
    }
}

/// A console of `lines` lines where line `seq` says "error" when `seq` is in `errors`.
fn with_errors(width: u16, height: u16, lines: u64, errors: &[u64]) -> Harness {
    let mut h = open(web_and_db(), "web", width, height);
    for seq in 1..=lines {
        let text = match errors.contains(&seq) {
            true => format!("line {seq}: error: disk full"),
            false => format!("line {seq}: ok"),
        };
        h.update(console_line(seq, &text));
    }
    h
}

#[test]
fn one_pane_following() {
    at_both_sizes("following", |w, h| {
        let mut harness = open(web_and_db(), "web", w, h);
        numbered(&mut harness, "web", 1, 100);
        harness
    });
}

#[test]
fn scrolled_back_pauses_following() {
    at_both_sizes("scrolled_back", |w, h| {
        let mut harness = open(web_and_db(), "web", w, h);
        numbered(&mut harness, "web", 1, 100);
        keys(&mut harness, &["pgup", "k", "k"]);
        // New lines do not move a paused pane.
        numbered(&mut harness, "web", 101, 5);
        harness
    });
}

fn long_line(h: &mut Harness) {
    numbered(h, "web", 1, 3);
    let long: String = (0..40).map(|i| format!("word{i:02} ")).collect();
    h.update(console_line(4, &long));
    numbered(h, "web", 5, 2);
}

#[test]
fn a_long_line_wraps() {
    at_both_sizes("wrap_on", |w, h| {
        let mut harness = open(web_and_db(), "web", w, h);
        long_line(&mut harness);
        harness
    });
}

#[test]
fn a_long_line_is_cut_without_wrap_and_moves_sideways() {
    at_both_sizes("wrap_off", |w, h| {
        let mut harness = open(web_and_db(), "web", w, h);
        long_line(&mut harness);
        keys(&mut harness, &["w"]);
        harness
    });
    at_both_sizes("wrap_off_shifted", |w, h| {
        let mut harness = open(web_and_db(), "web", w, h);
        long_line(&mut harness);
        keys(&mut harness, &["w", "l"]);
        harness
    });
}

#[test]
fn timestamps_are_utc_with_milliseconds() {
    at_both_sizes("timestamps", |w, h| {
        let mut harness = open(web_and_db(), "web", w, h);
        long_line(&mut harness);
        keys(&mut harness, &["t"]);
        harness
    });
}

#[test]
fn find_highlights_every_match_and_counts_them() {
    at_both_sizes("find", |w, h| {
        let mut harness = with_errors(w, h, 100, &[3, 40, 93, 96, 99]);
        keys(&mut harness, &["/"]);
        harness.type_text("error");
        keys(&mut harness, &["enter", "N", "N", "N"]);
        harness
    });
}

#[test]
fn matches_are_painted_in_the_theme_and_the_current_one_stands_out() {
    let mut h = with_errors(80, 24, 10, &[2, 5, 9]);
    keys(&mut h, &["/"]);
    h.type_text("error");
    keys(&mut h, &["enter", "N"]);
    let screen = h.screen();
    assert!(screen.contains("match 2 of 3"), "{screen}");
    let theme = Theme::new(ThemeName::Default);
    let buffer = h.terminal.backend().buffer();
    let row_of = |text: &str| {
        (0..buffer.area.height)
            .find(|&y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
                    .contains(text)
            })
            .unwrap()
    };
    let styles = |y: u16| -> Vec<(String, ratatui::style::Style)> {
        (0..buffer.area.width)
            .map(|x| (buffer[(x, y)].symbol().to_string(), buffer[(x, y)].style()))
            .collect()
    };
    let painted = |y: u16, style: ratatui::style::Style| -> String {
        styles(y)
            .into_iter()
            .filter(|(_, s)| {
                s.fg == style.fg.or(theme.text.fg) && s.bg == style.bg.or(Some(Default::default()))
            })
            .map(|(c, _)| c)
            .collect()
    };
    let current = theme.text.patch(theme.selected);
    let matched = theme.text.patch(theme.matched);
    assert_eq!(painted(row_of("line 5:"), current), "error");
    assert_eq!(painted(row_of("line 2:"), matched), "error");
    assert_eq!(painted(row_of("line 9:"), matched), "error");
    assert_eq!(
        painted(row_of("line 3:"), matched),
        "",
        "no match, no paint"
    );
}

#[test]
fn next_and_previous_go_round_both_ways() {
    let mut h = with_errors(80, 24, 100, &[3, 40, 93, 96, 99]);
    keys(&mut h, &["/"]);
    h.type_text("error");
    keys(&mut h, &["enter"]);
    assert!(
        h.screen().contains("match 5 of 5"),
        "the newest match first"
    );
    keys(&mut h, &["n"]);
    let screen = h.screen();
    assert!(screen.contains("match 1 of 5"), "{screen}");
    assert!(screen.contains("went round to the first match"), "{screen}");
    assert!(screen.contains("line 3: error"), "scrolled to it: {screen}");
    keys(&mut h, &["N"]);
    let screen = h.screen();
    assert!(screen.contains("match 5 of 5"), "{screen}");
    assert!(screen.contains("went round to the last match"), "{screen}");
    assert!(screen.contains("line 99: error"), "{screen}");
    keys(&mut h, &["N", "N"]);
    assert!(h.screen().contains("match 3 of 5"));
}

#[test]
fn a_find_with_nothing_says_so() {
    let mut h = with_errors(80, 24, 10, &[]);
    keys(&mut h, &["/"]);
    h.type_text("panic");
    keys(&mut h, &["enter"]);
    assert!(h.screen().contains("/panic no match"));
    keys(&mut h, &["n"]);
    assert!(h.screen().contains("no match for /panic"));
    keys(&mut h, &["esc"]);
    assert!(!h.screen().contains("/panic"), "Esc puts the find away");
    assert!(
        h.screen().contains("console of web"),
        "and stays on the screen"
    );
}

#[test]
fn several_panes_side_by_side() {
    at_both_sizes("side_by_side", |w, h| {
        let mut harness = open(web_and_db(), "web db", w, h);
        numbered(&mut harness, "web", 1, 30);
        numbered(&mut harness, "db", 1, 30);
        keys(&mut harness, &["tab"]);
        harness
    });
}

fn interleaved(h: &mut Harness) {
    for seq in 1..=30 {
        h.update(console_bytes(
            "web",
            seq,
            format!("GET /page/{seq}").as_bytes(),
        ));
        if seq % 3 == 0 {
            let mut text = format!("query {seq} took 2 ms");
            if seq == 30 {
                text.push_str(": SELECT name, state, restarts FROM unikernels WHERE state <> 'running' ORDER BY restarts DESC");
            }
            h.update(console_bytes("db", seq, text.as_bytes()));
        }
    }
}

#[test]
fn merged_panes_prefix_each_line_with_its_source() {
    at_both_sizes("merged", |w, h| {
        let mut harness = open(web_and_db(), "web db", w, h);
        interleaved(&mut harness);
        keys(&mut harness, &["m"]);
        harness
    });
    at_both_sizes("merged_timestamps", |w, h| {
        let mut harness = open(web_and_db(), "web db", w, h);
        interleaved(&mut harness);
        keys(&mut harness, &["m", "t"]);
        harness
    });
}

#[test]
fn merging_and_splitting_back_keeps_the_panes() {
    let mut h = open(web_and_db(), "web db", 80, 24);
    interleaved(&mut h);
    keys(&mut h, &["m"]);
    assert!(h.screen().contains("consoles of web, db, merged"));
    assert!(h.screen().contains("db  │ query 30 took 2 ms"));
    keys(&mut h, &["m"]);
    let screen = h.screen();
    assert!(
        !screen.contains("merged") && !screen.contains("│ query"),
        "{screen}"
    );
}

#[test]
fn dropped_lines_are_always_shown() {
    at_both_sizes("dropped", |w, h| {
        let mut harness = open(web_and_db(), "web", w, h);
        numbered(&mut harness, "web", 1, 10);
        harness.update(dropped("web", 1234));
        numbered(&mut harness, "web", 1245, 10);
        harness
    });
    let mut h = open(web_and_db(), "web db", 80, 24);
    h.update(dropped("db", 1));
    keys(&mut h, &["m"]);
    assert!(h.screen().contains("1 line dropped"));
}

#[test]
fn escape_sequences_show_as_text() {
    at_both_sizes("escapes", |w, h| {
        let mut harness = open(web_and_db(), "web", w, h);
        harness.update(console_bytes(
            "web",
            1,
            b"\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x1b[0m\rback\x08 \xff\tafter tab",
        ));
        harness.update(console_line(2, "caf\u{e9} \u{4e16}\u{754c} wide"));
        harness
    });
    let mut h = open(web_and_db(), "web", 80, 24);
    h.press(&["t"]);
    h.update(console_bytes(
        "web",
        1,
        b"\x1b[2J\x1b]0;title\x07\x9b\xc2\x9b\x00\x7f",
    ));
    h.screen();
    let buffer = h.terminal.backend().buffer();
    for cell in buffer.content() {
        assert!(
            !cell.symbol().chars().any(char::is_control),
            "{:?} reached the terminal",
            cell.symbol()
        );
    }
}

#[test]
fn exits_and_restarts_show_as_fulmar_lines_in_the_same_pane() {
    at_both_sizes("restarted", |w, h| {
        let mut harness = open(web_and_db(), "web", w, h);
        numbered(&mut harness, "web", 1, 3);
        harness.update(fulmar_line("web", 4, "exited 2"));
        harness.update(fulmar_line(
            "web",
            5,
            "restarting in 1000 ms (failure 1 in a row)",
        ));
        harness.update(Update::Unikernels(vec![
            exited("web", ExitStatus::Code(2)),
            running("db", 1_000),
        ]));
        harness.update(fulmar_line("web", 6, "started, pid 4243"));
        harness.update(Update::Unikernels(web_and_db()));
        numbered(&mut harness, "web", 7, 2);
        harness
    });
}

#[test]
fn fulmar_lines_are_painted_as_fulmar_lines() {
    let mut h = open(web_and_db(), "web", 80, 24);
    h.update(fulmar_line("web", 1, "exited 2"));
    h.screen();
    let theme = Theme::new(ThemeName::Default);
    let buffer = h.terminal.backend().buffer();
    let cell = &buffer[(1, 2)];
    assert_eq!(cell.symbol(), "-");
    assert_eq!(cell.fg, theme.fulmar.fg.unwrap());
    assert!(cell.modifier.contains(theme.fulmar.add_modifier));
}

#[test]
fn a_removed_unikernel_says_so() {
    at_both_sizes("removed", |w, h| {
        let mut harness = open(web_and_db(), "web db", w, h);
        numbered(&mut harness, "web", 1, 5);
        harness.update(fulmar_line("web", 6, "exited 0"));
        harness.update(Update::Unikernels(vec![running("db", 1_000)]));
        harness
    });
}

#[test]
fn a_long_line_split_by_the_daemon_reads_as_one() {
    let mut h = open(web_and_db(), "web", 80, 24);
    keys(&mut h, &["t"]);
    let chunk = |seq: u64, text: &str, continued: bool| Update::Console {
        name: label("web"),
        event: piece(seq, NOW_MS, text, continued),
    };
    h.update(chunk(1, "first half, ", false));
    h.update(chunk(2, "second half", true));
    h.update(chunk(3, "next line", false));
    let screen = h.screen();
    assert!(
        screen.contains("│08:00:00.000 first half, second half"),
        "{screen}"
    );
    assert_eq!(screen.matches("08:00:00.000").count(), 2, "{screen}");
}

#[test]
fn panes_watch_while_open_and_closing_them_unwatches() {
    let mut h = open(web_and_db(), "web db", 80, 24);
    assert_eq!(
        h.sent,
        [Command::Watch(label("web")), Command::Watch(label("db"))]
    );
    keys(&mut h, &["x"]);
    assert_eq!(h.sent[2..], [Command::Unwatch(label("web"))]);
    assert!(h.screen().contains("console of db"));
    keys(&mut h, &["x"]);
    assert_eq!(h.sent[3..], [Command::Unwatch(label("db"))]);
    assert!(
        h.screen().contains("unikernels (2)"),
        "the last pane closes the screen"
    );

    let mut h = open(web_and_db(), "web db", 80, 24);
    keys(&mut h, &["m", "x"]);
    assert_eq!(
        h.sent[2..],
        [
            Command::Unwatch(label("web")),
            Command::Unwatch(label("db"))
        ]
    );
    assert!(h.screen().contains("unikernels (2)"));

    let mut h = open(web_and_db(), "web db", 80, 24);
    keys(&mut h, &["esc"]);
    assert_eq!(
        h.sent[2..],
        [
            Command::Unwatch(label("web")),
            Command::Unwatch(label("db"))
        ]
    );
}

#[test]
fn follow_turns_off_scrolling_up_and_on_with_bottom() {
    let mut h = open(web_and_db(), "web", 80, 24);
    numbered(&mut h, "web", 1, 50);
    assert!(h.screen().contains("following"));
    keys(&mut h, &["f"]);
    numbered(&mut h, "web", 51, 5);
    let screen = h.screen();
    assert!(screen.contains("paused"), "{screen}");
    assert!(screen.contains("web line 50:") && !screen.contains("web line 55:"));
    keys(&mut h, &["f"]);
    let screen = h.screen();
    assert!(screen.contains("following") && screen.contains("web line 55:"));
    keys(&mut h, &["k"]);
    let screen = h.screen();
    assert!(screen.contains("paused") && !screen.contains("web line 55:"));
    keys(&mut h, &["G"]);
    numbered(&mut h, "web", 56, 1);
    let screen = h.screen();
    assert!(screen.contains("following") && screen.contains("web line 56:"));
}

#[test]
fn save_sends_the_pane_as_shown_to_the_link() {
    let mut h = open(web_and_db(), "web db", 80, 24);
    interleaved(&mut h);
    h.update(fulmar_line("db", 31, "exited 0"));
    keys(&mut h, &["m", "s"]);
    let screen = h.screen();
    assert!(
        screen.contains("./web+db-console-2027-01-15T08-00-00Z.log"),
        "{screen}"
    );
    keys(&mut h, &["enter"]);
    let Some(Command::SaveConsole { path, text }) = h.sent.last() else {
        panic!("no save in {:?}", h.sent);
    };
    assert_eq!(
        path,
        &PathBuf::from("./web+db-console-2027-01-15T08-00-00Z.log")
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 41);
    assert_eq!(lines[0], "web │ GET /page/1");
    assert_eq!(lines[3], "db  │ query 3 took 2 ms");
    assert_eq!(lines[40], "db  │ --- exited 0 ---");

    h.update(Update::Done {
        what: Command::SaveConsole {
            path: path.clone(),
            text: text.clone(),
        }
        .describe(),
        outcome: Ok(()),
    });
    assert!(h.screen().contains("save 41 lines to ./web+db-console"));
}

#[test]
fn save_with_timestamps_writes_them_and_a_blank_name_saves_nothing() {
    let mut h = open(web_and_db(), "web", 80, 24);
    numbered(&mut h, "web", 1, 2);
    keys(&mut h, &["t", "s"]);
    keys(&mut h, &["enter"]);
    let Some(Command::SaveConsole { text, .. }) = h.sent.last() else {
        panic!("no save in {:?}", h.sent);
    };
    assert_eq!(
        text,
        "07:59:50.010 web line 1: GET /index.html 200\n07:59:50.020 web line 2: GET /index.html 200\n"
    );
    let sent = h.sent.len();
    keys(&mut h, &["s"]);
    for _ in 0..60 {
        keys(&mut h, &["backspace"]);
    }
    keys(&mut h, &["enter"]);
    assert_eq!(h.sent.len(), sent);
    assert!(h.screen().contains("nothing was saved"));
}

#[test]
fn clear_empties_the_pane_until_new_lines_come() {
    let mut h = open(web_and_db(), "web", 80, 24);
    numbered(&mut h, "web", 1, 5);
    keys(&mut h, &["C"]);
    let screen = h.screen();
    assert!(!screen.contains("web line"), "{screen}");
    assert!(screen.contains("No console lines yet"), "{screen}");
    h.update(console_bytes("web", 3, b"sent again after a reconnect"));
    numbered(&mut h, "web", 6, 1);
    let screen = h.screen();
    assert!(screen.contains("web line 6:") && !screen.contains("sent again"));
}

#[test]
fn dropped_lines_get_a_row_of_their_own_when_the_title_is_too_narrow() {
    let four = || {
        ["web", "db", "cache", "queue"]
            .iter()
            .map(|n| running(n, 1_000))
            .collect()
    };
    at_both_sizes("dropped_narrow", |w, h| {
        let mut harness = open(four(), "web db cache queue", w, h);
        for name in ["web", "db", "cache", "queue"] {
            numbered(&mut harness, name, 1, 3);
        }
        harness.update(dropped("cache", 1234));
        harness
    });
}
