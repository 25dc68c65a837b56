//! The TUI's daemon link against the real daemon: it mirrors the state,
//! streams watched consoles, carries out commands, and after the daemon goes
//! away says so, reconnects by itself and resumes the consoles without
//! showing a line twice.

use crate::support;

use fulmar::api::console::{ConsoleEvent, ConsoleLine, LineSource};
use fulmar::api::image::Target;
use fulmar::api::label::Label;
use fulmar::api::unikernel::RunState;
use fulmar::ui::consoles::ConsoleBuffer;
use fulmar::ui::link;
use fulmar::ui::message::{Command, Update};
use nix::sys::signal::Signal;
use std::time::Duration;
use support::daemon::Host;
use support::images::Spec;
use tokio::sync::mpsc;

/// Waits for the first update `pick` accepts, skipping the others.
async fn next<T>(
    updates: &mut mpsc::Receiver<Update>,
    what: &str,
    mut pick: impl FnMut(Update) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            let update = updates.recv().await.expect("the link stopped");
            if let Some(found) = pick(update) {
                return found;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("never: {what}"))
}

/// A link to `host`'s daemon, once it has connected.
async fn connected(host: &Host) -> (mpsc::UnboundedSender<Command>, mpsc::Receiver<Update>) {
    let (tx, mut updates) = mpsc::channel(1024);
    let commands = link::spawn(host.connector(), tx);
    next(&mut updates, "connected", |u| {
        matches!(u, Update::Connected { .. }).then_some(())
    })
    .await;
    (commands, updates)
}

fn console_text(update: Update) -> Option<(u64, u64, String)> {
    match update {
        Update::Console {
            event: ConsoleEvent::Line(line),
            ..
        } => Some((
            line.seq,
            line.at_ms,
            String::from_utf8_lossy(&line.bytes).into_owned(),
        )),
        _ => None,
    }
}

fn line(seq: u64, at_ms: u64, text: &str) -> ConsoleEvent {
    ConsoleEvent::Line(ConsoleLine {
        seq,
        at_ms,
        bytes: text.as_bytes().to_vec(),
        continued: false,
        source: LineSource::Unikernel,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_mirrors_the_daemon_and_survives_its_restart() {
    let mut host = Host::new();
    host.start(&[]);
    let image = Spec::new(Target::Hvt, &[]).path();
    let image = image.to_str().unwrap();
    host.ok(&[
        "create",
        "web",
        image,
        "--",
        "print=first",
        "sleep=400",
        "print=second",
        "sleep-forever",
    ]);
    let web = Label::new("web").unwrap();

    let (commands, mut updates) = connected(&host).await;
    let list = next(&mut updates, "the list", |u| match u {
        Update::Unikernels(list) => Some(list),
        _ => None,
    })
    .await;
    assert_eq!(list.len(), 1);
    assert!(matches!(list[0].state, RunState::Running { .. }));

    commands.send(Command::Watch(web.clone())).unwrap();
    let mut before: Vec<(u64, u64, String)> = Vec::new();
    while !before.iter().any(|(_, _, text)| text == "second") {
        before.push(next(&mut updates, "the console's lines", console_text).await);
    }
    assert!(
        before.iter().any(|(_, _, text)| text == "first"),
        "{before:?}"
    );

    // The daemon goes; the unikernel stays, and so does the link.
    host.signal_daemon(Signal::SIGKILL);
    let reason = next(&mut updates, "the disconnection", |u| match u {
        Update::Disconnected { reason } => Some(reason),
        _ => None,
    })
    .await;
    assert!(!reason.is_empty());
    commands.send(Command::Destroy(web.clone())).unwrap();
    let refused = next(
        &mut updates,
        "the refusal while disconnected",
        |u| match u {
            Update::Done { outcome, .. } => Some(outcome),
            _ => None,
        },
    )
    .await;
    assert!(refused.unwrap_err().contains("not connected"));

    host.start(&[]);
    next(&mut updates, "reconnected", |u| {
        matches!(u, Update::Connected { .. }).then_some(())
    })
    .await;
    // The console is resubscribed. The new daemon lost the old history and
    // numbers from 0 again; the app's buffer must take its lines all the same.
    let adopted = next(&mut updates, "the console after the restart", |u| match u {
        Update::Console { event, .. } => Some(event),
        _ => None,
    })
    .await;
    let mut buffer = ConsoleBuffer::default();
    for (seq, at_ms, text) in &before {
        buffer.push(line(*seq, *at_ms, text));
    }
    assert!(
        buffer.push(adopted.clone()),
        "{adopted:?} was taken for history"
    );

    commands.send(Command::Destroy(web.clone())).unwrap();
    let outcome = next(&mut updates, "the destroy's outcome", |u| match u {
        Update::Done { what, outcome } => Some((what, outcome)),
        _ => None,
    })
    .await;
    assert_eq!(outcome, ("destroy web".to_string(), Ok(())));
    let stopped = next(&mut updates, "the list after destroy", |u| match u {
        Update::Unikernels(list) if list.iter().all(|u| u.state == RunState::Stopped) => Some(list),
        _ => None,
    })
    .await;
    assert_eq!(stopped.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_console_follows_a_unikernel_created_again_under_its_name() {
    let mut host = Host::new();
    host.start(&[]);
    let image = Spec::new(Target::Hvt, &[]).path();
    let image = image.to_str().unwrap();
    let (commands, mut updates) = connected(&host).await;
    // Watched before it exists, as a pane left open can be.
    commands
        .send(Command::Watch(Label::new("web").unwrap()))
        .unwrap();
    for word in ["first", "second"] {
        let print = format!("print={word}");
        host.ok(&["create", "web", image, "--", &print, "sleep-forever"]);
        let seen = next(&mut updates, &format!("web's {word} life"), |u| {
            console_text(u).filter(|(_, _, text)| text == word)
        })
        .await;
        assert_eq!(seen.2, word);
        host.ok(&["destroy", "web"]);
        host.ok(&["remove", "web"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_that_cannot_be_followed_says_why_once() {
    let mut host = Host::new();
    host.start(&[]);
    let image = Spec::new(Target::Hvt, &[]).path();
    let image = image.to_str().unwrap();
    let (commands, mut updates) = connected(&host).await;
    commands
        .send(Command::Watch(Label::new("ghost").unwrap()))
        .unwrap();
    let failure = |u: Update| match u {
        Update::Done {
            what,
            outcome: Err(why),
        } if what.contains("console of ghost") => Some(why),
        _ => None,
    };
    let why = next(&mut updates, "the follow's failure", failure).await;
    assert!(why.contains("ghost"), "{why}");
    // Every change makes the link follow again; the same reason is not repeated.
    host.ok(&["create", "web", image, "--", "sleep-forever"]);
    let again = async {
        loop {
            match updates.recv().await {
                Some(u) if failure(u.clone()).is_some() => return u,
                Some(_) => {}
                None => std::future::pending().await,
            }
        }
    };
    let repeated = tokio::time::timeout(Duration::from_secs(2), again).await;
    assert!(repeated.is_err(), "reported again: {repeated:?}");
}
