//! The create form end to end: the real `fulmar` binary in a pseudo-terminal against a
//! real daemon running the test tender, driven through its keys as an
//! operator would: a unikernel created through the form, a submit the form
//! refuses, and block data moved through the block devices screen.

use crate::support;

use fulmar::api::image::{DeviceKind, Target};
use fulmar::api::label::Label;
use fulmar::api::protocol::{Reply, Request};
use fulmar::api::unikernel::UnikernelInfo;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;
use support::bytes::{fifo, pattern, sha, sha_of};
use support::daemon::{Host, eventually};
use support::images::Spec;
use support::netns;
use support::pty::{PATIENCE, Pty};

const WIDTH: u16 = 160;
const HEIGHT: u16 = 40;
const MIB: usize = 1 << 20;

/// Columns of a form line before its input: the focus marker and the label.
const LABEL_COLUMNS: usize = 14;
/// The label of the submit button's row: it has none.
const SUBMIT: &str = "";

/// A form line as its label and the rest (the input and its note).
fn split_row(line: &str) -> (String, String) {
    let label: String = line.chars().take(LABEL_COLUMNS).collect();
    let rest: String = line.chars().skip(LABEL_COLUMNS).collect();
    let label = label.trim_start_matches('▸').trim().to_string();
    (label, rest.trim().to_string())
}

/// The form row the focus marker is on, as its label and the rest.
fn focused(screen: &vt100::Screen) -> Option<(String, String)> {
    let text = screen.contents();
    text.lines().find(|l| l.starts_with('▸')).map(split_row)
}

/// The rest of the first line labelled `label` ("" when there is none).
fn row_of(screen: &vt100::Screen, label: &str) -> String {
    screen
        .contents()
        .lines()
        .map(split_row)
        .find(|(l, _)| l == label)
        .map(|(_, rest)| rest)
        .unwrap_or_default()
}

/// The submit button and its note.
fn submit_row(screen: &vt100::Screen) -> String {
    let text = screen.contents();
    let line = text.lines().find(|l| l.contains("[ Create"));
    line.map(|l| split_row(l).1).unwrap_or_default()
}

/// The TUI on `host` with the create form open, once the form knows the
/// host's policy (its memory note says what is free).
fn open_form(host: &Host) -> Pty {
    let tui = Pty::fulmar(host, &[], WIDTH, HEIGHT);
    tui.send_keys(b"n");
    tui.wait_for("create a unikernel", PATIENCE);
    tui.wait_for(" free", PATIENCE);
    tui
}

/// Types `image` into the image field, has it checked, and names the
/// unikernel `name`.
fn choose_image(tui: &Pty, image: &Path, name: &str) {
    tui.send_keys(image.to_str().unwrap().as_bytes());
    tui.send_keys(b"\r");
    tui.wait_for("✓ checked", PATIENCE);
    tui.send_keys(name.as_bytes());
    tui.wait_until(&format!("{name} typed in its field"), PATIENCE, |s| {
        focused(s).is_some_and(|(label, rest)| label == "Name" && rest.starts_with(name))
    });
}

/// Tabs through the form until the focus is on the row labelled `label`.
fn focus_on(tui: &Pty, label: &str) {
    for _ in 0..20 {
        let (now, _) = focused(tui.terminal().screen()).unwrap_or_default();
        if now == label {
            return;
        }
        tui.send_keys(b"\t");
        tui.wait_until(&format!("the focus off {now:?}"), PATIENCE, |s| {
            focused(s).is_some_and(|(l, _)| l != now)
        });
    }
    panic!("no row {label:?} in the form:\n{}", tui.screen_text());
}

/// Binds device row `device` to its first option, `choice`, once the
/// daemon's list of them (`offered`) is in.
fn bind_first(tui: &Pty, device: &str, offered: &str, choice: &str) {
    focus_on(tui, device);
    tui.wait_until(&format!("{device} offering a choice"), PATIENCE, |s| {
        row_of(s, device).contains(offered)
    });
    tui.send_keys(b"\x1b[C");
    tui.wait_until(&format!("{device} bound to {choice}"), PATIENCE, |s| {
        row_of(s, device).starts_with(&format!("◂ {choice} ▸"))
    });
}

/// What the daemon reports of unikernel `name`.
fn info(host: &Host, name: &str) -> UnikernelInfo {
    let reply = host.with_client(async |client| {
        let name = Label::new(name).unwrap();
        client.call(Request::Info { name }).await.unwrap()
    });
    match reply {
        Reply::Unikernel { unikernel } => *unikernel,
        other => panic!("the daemon answered {other:?}"),
    }
}

#[test]
fn a_unikernel_with_a_block_device_and_a_net_interface_created_through_the_form() {
    netns::run(|| {
        netns::bridge("br0");
        let mut host = Host::new();
        host.start(&[]);
        host.ok(&["block", "create", "disk", "4"]);
        let image = Spec::new(
            Target::Hvt,
            &[("service", DeviceKind::Net), ("storage", DeviceKind::Block)],
        )
        .path();
        let tui = open_form(&host);
        choose_image(&tui, &image, "web");
        focus_on(&tui, "Arguments");
        tui.send_keys(b"print=hello-from-form sleep-forever");
        tui.wait_until("the arguments typed", PATIENCE, |s| {
            row_of(s, "Arguments").contains("sleep-forever")
        });
        bind_first(&tui, "service", "choose a bridge", "br0");
        // The form shows the MAC the interface will get.
        let row = row_of(tui.terminal().screen(), "service");
        let mac = row
            .split_once("MAC ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no MAC shown: {row}"))
            .to_string();
        bind_first(&tui, "storage", "choose a block device", "disk · 4 MB");
        focus_on(&tui, SUBMIT);
        tui.wait_until("the form ready", PATIENCE, |s| {
            submit_row(s) == "[ Create web ] ready"
        });
        tui.send_keys(b"\r");
        // The new unikernel's console opens, with what the guest printed
        // (not only the tender's banner, which lists its arguments).
        tui.wait_for("console of web", PATIENCE);
        tui.wait_until("the guest's line", PATIENCE, |s| {
            s.contents()
                .lines()
                .any(|l| l.contains("hello-from-form") && !l.contains("print="))
        });
        let console = tui.screen_text();

        let listed = host.list();
        assert_eq!(listed.len(), 1, "{listed:#?}");
        assert_eq!(listed[0]["name"], "web", "{listed:#?}");
        assert_eq!(listed[0]["state"], "running", "{listed:#?}");
        // `list --json` names no taps or blocks: the daemon's full report does.
        let web = info(&host, "web");
        let taps: Vec<_> = web
            .taps
            .iter()
            .map(|t| (t.interface.as_str(), t.bridge.as_str()))
            .collect();
        assert_eq!(taps, [("service", "br0")], "{web:#?}");
        let tap = &web.taps[0].tap;
        let master = std::fs::read_link(format!("/sys/class/net/{tap}/master")).unwrap();
        assert!(master.ends_with("br0"), "{tap} is on {master:?}");
        // The tender was given that tap, with the MAC the form showed.
        assert!(
            console.contains(&format!("net:service tap={tap} mac={mac}")),
            "{console}"
        );
        let blocks: Vec<_> = web
            .config
            .blocks
            .iter()
            .map(|b| (b.device.as_str(), b.block.as_str()))
            .collect();
        assert_eq!(blocks, [("storage", "disk")], "{web:#?}");
        let devices: Vec<serde_json::Value> =
            serde_json::from_str(&host.ok(&["block", "list", "--json"])).unwrap();
        assert_eq!(devices.len(), 1, "{devices:#?}");
        assert_eq!(devices[0]["attached_to"], "web", "{devices:#?}");
    });
}

#[test]
fn submit_is_refused_while_a_manifest_device_is_unbound() {
    let mut host = Host::new();
    host.start(&[]);
    // There is a device to choose; the operator does not choose it.
    host.ok(&["block", "create", "disk", "4"]);
    let image = Spec::new(Target::Hvt, &[("storage", DeviceKind::Block)]).path();
    let tui = open_form(&host);
    choose_image(&tui, &image, "web");
    focus_on(&tui, SUBMIT);
    assert_eq!(
        submit_row(tui.terminal().screen()),
        "[ Create web ] not ready: 1 thing to fix (✗)"
    );
    tui.send_keys(b"\r");
    tui.wait_for(
        "not yet: 1 thing to fix, each marked ✗ beside its field",
        PATIENCE,
    );
    // The focus went to the device, its reason beside it.
    let screen = tui.screen_text();
    let (label, row) = focused(tui.terminal().screen()).unwrap_or_default();
    assert_eq!(label, "storage", "{screen}");
    assert!(
        row.ends_with("✗ not bound: choose a block device"),
        "{screen}"
    );
    assert!(screen.contains("create a unikernel"), "{screen}");
    assert_eq!(host.list(), Vec::<serde_json::Value>::new());
    let devices: Vec<serde_json::Value> =
        serde_json::from_str(&host.ok(&["block", "list", "--json"])).unwrap();
    assert!(devices[0]["attached_to"].is_null(), "{devices:#?}");
}

/// The TUI on `host` showing its block devices, `disk` among them.
fn blocks_screen(host: &Host) -> Pty {
    let tui = Pty::fulmar(host, &[], WIDTH, HEIGHT);
    tui.send_keys(b"b");
    tui.wait_for("block devices (1)", PATIENCE);
    tui.wait_until("disk listed", PATIENCE, |s| {
        s.contents()
            .lines()
            .any(|l| l.starts_with("disk ") && l.contains(" 4 "))
    });
    tui
}

/// Answers the path prompt that `key` opens with `path`, replacing what the
/// prompt proposes (`proposed`).
fn answer_path(tui: &Pty, key: &[u8], prompt: &str, proposed: &str, path: &Path) {
    tui.send_keys(key);
    tui.wait_for(prompt, PATIENCE);
    tui.send_keys(&vec![0x7f; proposed.len()]);
    tui.send_keys(path.to_str().unwrap().as_bytes());
    tui.send_keys(b"\r");
}

#[test]
fn a_file_uploaded_and_downloaded_through_the_blocks_screen_comes_back_the_same() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&["block", "create", "disk", "4"]);
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source.img");
    std::fs::write(&source, pattern(4 * MIB, 7)).unwrap();
    let back = tmp.path().join("back.img");

    let tui = blocks_screen(&host);
    answer_path(&tui, b"u", "upload into disk", "", &source);
    tui.wait_for("Replace the contents of disk?", PATIENCE);
    tui.confirm("Upload into disk");
    tui.wait_for(
        &format!("upload {} to disk: done", source.display()),
        PATIENCE,
    );
    answer_path(&tui, b"d", "download disk to file: ", "disk.img", &back);
    tui.wait_for(
        &format!("download disk to {}: done", back.display()),
        PATIENCE,
    );
    assert_eq!(sha_of(&back), sha_of(&source));
}

/// Opens `fifo` for writing once a reader has it open; without blocking, so
/// a reader that never comes fails the test instead of hanging it.
fn open_writer(fifo: &Path) -> File {
    let start = Instant::now();
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
        {
            Ok(pipe) => return pipe,
            // ENXIO: no reader yet.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
            Err(e) => panic!("open {}: {e}", fifo.display()),
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the upload never opened the pipe"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Writes all of `bytes` into the pipe as its reader takes them.
fn feed(mut pipe: &File, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match pipe.write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLOUT)];
                let waited = nix::poll::poll(&mut fds, PollTimeout::from(20_000u16)).unwrap();
                assert!(waited > 0, "the upload stopped reading the pipe");
            }
            Err(e) => panic!("write to the pipe: {e}"),
        }
    }
}

#[test]
fn an_upload_cancelled_midway_leaves_the_old_contents() {
    let mut host = Host::new();
    host.start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let old = pattern(4 * MIB, 21);
    host.device_holding("disk", 4, &old);
    let source = tmp.path().join("pipe");
    fifo(&source);

    let tui = blocks_screen(&host);
    answer_path(&tui, b"u", "upload into disk", "", &source);
    tui.confirm("Upload into disk");
    let pipe = open_writer(&source);
    feed(&pipe, &pattern(MIB, 22));
    tui.wait_until("the upload's gauge", PATIENCE, |s| {
        let text = s.contents();
        text.contains("TRANSFERS")
            && text
                .lines()
                .any(|l| l.starts_with("upload disk") && l.contains("so far"))
    });
    tui.send_keys(b"c");
    tui.wait_for("cancelled; disk keeps its old contents", PATIENCE);
    tui.wait_gone("TRANSFERS", PATIENCE);
    drop(pipe);
    eventually("the daemon drops the partial upload", || {
        host.block_files() == ["disk"]
    });
    let back = tmp.path().join("back.img");
    host.ok(&["block", "download", "disk", back.to_str().unwrap()]);
    assert_eq!(sha_of(&back), sha(&old));
}
