//! The app as the operator sees it: snapshots of the home screen in every
//! state at 80x24 and 200x60, the dialogs, and what keys send to the daemon.

use crate::api::unikernel::ExitStatus;
use crate::ui::config::Config;
use crate::ui::fixtures::*;
use crate::ui::message::{Command, Update};

/// A classic 80x24 terminal and a large one; the name says which.
fn at_both_sizes(name: &str, setup: impl Fn(&mut Harness)) {
    for (width, height) in [(80, 24), (200, 60)] {
        let mut harness = Harness::new(width, height);
        setup(&mut harness);
        insta::assert_snapshot!(format!("{name}_{width}x{height}"), harness.screen());
    }
}

fn many(count: usize) -> Vec<crate::api::unikernel::UnikernelInfo> {
    (0..count)
        .map(|i| running(&format!("svc{i:04}"), (i as u64 + 1) * 1_000))
        .collect()
}

#[test]
fn home_connecting() {
    for (width, height) in [(80, 24), (200, 60)] {
        let mut harness = Harness::new(width, height);
        harness.app = crate::ui::app::App::new(Config::default(), false);
        insta::assert_snapshot!(
            format!("home_connecting_{width}x{height}"),
            harness.screen()
        );
    }
}

#[test]
fn home_empty() {
    at_both_sizes("home_empty", |h| h.update(Update::Unikernels(Vec::new())));
}

#[test]
fn home_every_state() {
    at_both_sizes("home_every_state", |h| {
        h.update(Update::Unikernels(every_state()))
    });
}

#[test]
fn home_many() {
    at_both_sizes("home_many", |h| {
        h.update(Update::Unikernels(many(1000)));
        h.press(&["G"]);
    });
}

#[test]
fn home_crash_loop() {
    at_both_sizes("home_crash_loop", |h| {
        h.update(Update::Unikernels(vec![crash_loop("flaky")]))
    });
}

#[test]
fn home_disconnected_keeps_the_last_state() {
    at_both_sizes("home_disconnected", |h| {
        h.update(Update::Unikernels(every_state()));
        h.update(Update::Disconnected {
            reason: "the daemon closed the connection".into(),
        });
    });
}

#[test]
fn too_small() {
    for (width, height) in [(25, 10), (12, 2)] {
        let mut harness = Harness::new(width, height);
        harness.update(Update::Unikernels(every_state()));
        insta::assert_snapshot!(format!("too_small_{width}x{height}"), harness.screen());
    }
}

#[test]
fn filter_narrows_the_list_live() {
    at_both_sizes("home_filtered", |h| {
        h.update(Update::Unikernels(every_state()));
        h.press(&["/"]);
        h.type_text("b");
    });
}

#[test]
fn sort_by_state_descending() {
    at_both_sizes("home_sorted", |h| {
        h.update(Update::Unikernels(every_state()));
        h.press(&["s", "S"]);
    });
}

#[test]
fn help_is_generated_from_the_key_map() {
    at_both_sizes("help_home", |h| {
        h.update(Update::Unikernels(every_state()));
        h.press(&["?"]);
    });
}

#[test]
fn destroy_dialog_names_what_happens_and_defaults_to_cancel() {
    at_both_sizes("dialog_destroy", |h| {
        h.update(Update::Unikernels(every_state()));
        h.press(&["G", "x"]);
    });
    let mut h = Harness::showing(every_state(), 80, 24);
    h.press(&["G", "x", "enter"]);
    assert_eq!(h.sent, [], "enter on the default button cancels");
    h.press(&["x", "right", "enter"]);
    assert_eq!(h.sent, [Command::Destroy(label("web"))]);
}

#[test]
fn restart_and_remove_go_through_the_dialog_too() {
    let mut h = Harness::showing(every_state(), 80, 24);
    // Sorted by name: batch, broken, flaky, parked, waiting, web.
    h.press(&["r", "l", "enter"]);
    h.press(&["X", "l", "enter"]);
    assert_eq!(
        h.sent,
        [
            Command::Restart(label("batch")),
            Command::Remove(label("batch"))
        ]
    );
}

#[test]
fn remove_of_a_running_unikernel_is_refused_with_the_reason() {
    let mut h = Harness::showing(vec![running("web", 1000)], 80, 24);
    h.press(&["X"]);
    let screen = h.screen();
    assert!(
        screen.contains("web is running: destroy it first"),
        "{screen}"
    );
    assert_eq!(h.sent, []);
}

#[test]
fn read_only_takes_every_changing_action_away() {
    let mut h = Harness::with(Config::default(), true, 200, 60);
    h.update(Update::Unikernels(every_state()));
    for key in ["x", "r", "X", "n"] {
        h.press(&[key, "right", "enter"]);
    }
    h.press(&[":"]);
    h.type_text("destroy web");
    h.press(&["enter", "right", "enter"]);
    assert_eq!(h.sent, []);
    insta::assert_snapshot!("read_only_200x60", h.screen());
    h.press(&["?"]);
    let help = h.screen();
    assert!(
        !help.contains("destroy") && !help.contains("restart"),
        "{help}"
    );
}

#[test]
fn command_line_opens_screens_and_explains_mistakes() {
    let mut h = Harness::showing(every_state(), 80, 24);
    h.press(&[":"]);
    h.type_text("frobnicate");
    h.press(&["enter"]);
    assert!(h.screen().contains("unknown command `frobnicate`"));
    h.press(&[":"]);
    h.type_text("console nosuch");
    h.press(&["enter"]);
    assert!(h.screen().contains("there is no unikernel named nosuch"));
    h.press(&[":"]);
    h.type_text("console web");
    h.press(&["enter"]);
    assert_eq!(h.sent, [Command::Watch(label("web"))]);
    h.press(&["esc"]);
    assert_eq!(
        h.sent,
        [Command::Watch(label("web")), Command::Unwatch(label("web"))]
    );
    h.press(&[":"]);
    h.type_text("q");
    h.press(&["enter"]);
    assert!(h.app.quitting());
}

#[test]
fn outcomes_of_commands_show_on_the_status_line() {
    let mut h = Harness::showing(every_state(), 80, 24);
    h.update(Update::Done {
        what: "destroy web".into(),
        outcome: Err("web is not running".into()),
    });
    assert!(
        h.screen()
            .contains("destroy web failed: web is not running")
    );
    h.press(&["j"]);
    assert!(!h.screen().contains("failed"), "a key clears the notice");
}

#[test]
fn a_console_opened_twice_is_watched_once() {
    let mut h = Harness::showing(every_state(), 80, 24);
    h.press(&["G", "c"]);
    h.press(&[":"]);
    h.type_text("console web");
    h.press(&["enter", "esc", "esc"]);
    assert_eq!(
        h.sent,
        [Command::Watch(label("web")), Command::Unwatch(label("web"))]
    );
}

#[test]
fn nothing_is_drawn_when_nothing_changed() {
    let mut h = Harness::showing(vec![exited("done", ExitStatus::Code(0))], 80, 24);
    h.screen();
    assert!(h.app.take_dirty());
    assert!(!h.app.take_dirty());
    h.update(Update::Unikernels(vec![exited(
        "done",
        ExitStatus::Code(0),
    )]));
    assert!(!h.app.take_dirty(), "the same list again changes nothing");
    assert_eq!(
        h.app.next_change_ms(NOW_MS),
        None,
        "an exited unikernel has no clock on screen"
    );
    h.update(Update::Unikernels(vec![running("web", 1_500)]));
    assert!(h.app.take_dirty());
    assert_eq!(
        h.app.next_change_ms(NOW_MS),
        Some(NOW_MS + 500),
        "uptime 1s becomes 2s"
    );
}

#[test]
fn a_download_that_would_replace_a_file_asks_on_any_screen_once_nothing_else_is_open() {
    let mut h = Harness::showing(every_state(), 80, 24);
    let question = || Update::WouldOverwrite {
        block: label("spare"),
        path: "spare.img".into(),
    };
    // The answer came after the operator left the blocks screen: it asks on the list.
    h.update(question());
    assert!(h.screen().contains("Overwrite spare.img?"));
    h.press(&["enter"]);
    assert!(h.screen().contains("download of spare not started"));
    // While the operator types on the command line, the question waits.
    h.press(&[":"]);
    h.type_text("blo");
    h.update(question());
    assert!(
        !h.screen().contains("Overwrite"),
        "the prompt keeps the keys"
    );
    h.press(&["esc"]);
    assert!(h.screen().contains("Overwrite spare.img?"));
    h.press(&["right", "enter"]);
    assert_eq!(
        h.sent.last(),
        Some(&Command::BlockDownload {
            name: label("spare"),
            path: "spare.img".into(),
            overwrite: true,
        })
    );
    assert!(!h.screen().contains("Overwrite"));
}
