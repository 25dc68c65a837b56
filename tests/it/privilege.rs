//! Tenders without root (least privilege): a root daemon runs each
//! tender as the tender user, with no capabilities, `no_new_privs`, a process
//! group of its own, and only its run's files and taps within its reach.

use crate::support;

use fulmar::api::image::Target;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use support::daemon::{Host, eventually};
use support::images;
use support::netns;
use support::tender::Tenders;

const NOBODY: u32 = 65534;

fn status_field(pid: i32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// The process group, from /proc/PID/stat (after the command name: state, ppid, pgrp).
fn process_group(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = stat.rsplit_once(')').unwrap().1;
    after_name
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
}

/// What the tender's descriptors lead to.
fn open_files(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| {
            let link = std::fs::read_link(e.unwrap().path()).unwrap();
            link.display().to_string()
        })
        .collect()
}

/// The tap the tender was given for `interface`, from its command line.
fn tap_of(pid: i32, interface: &str) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let prefix = format!("--net:{interface}=");
    cmdline
        .split(|b| *b == 0)
        .find_map(|a| std::str::from_utf8(a).ok()?.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} on the tender's command line"))
        .to_owned()
}

fn owner_and_mode(path: &Path) -> (u32, u32) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.uid(), meta.mode() & 0o7777)
}

#[test]
fn a_tender_runs_as_the_tender_user_with_no_privileges_and_only_its_own_files() {
    netns::run(|| {
        netns::bridge("br0");
        let mut host = Host::with_tenders(Tenders::install_for_anyone(&["solo5-hvt", "solo5-spt"]));
        host.start(&["--tender-user", "nobody"]);
        host.device_holding("disk", 1, b"written by root");
        let image = images::block_and_net(Target::Spt).path();
        host.ok(&[
            "create",
            "guest",
            image.to_str().unwrap(),
            "--net",
            "service0:br0",
            "--block",
            "storage:disk",
            "--",
            "block-read=storage:0:15",
            "sleep-forever",
        ]);
        // It could read the image (or it would not have started) and its disk.
        eventually("the guest reads its disk", || {
            host.ok(&["console", "guest"])
                .contains("block-read storage:0:written by root")
        });
        let pid = host.pid_of("guest");
        let nobody = format!("{NOBODY}\t{NOBODY}\t{NOBODY}\t{NOBODY}");
        assert_eq!(status_field(pid, "Uid:"), nobody);
        assert_eq!(status_field(pid, "Gid:"), nobody);
        for caps in ["CapEff:", "CapPrm:", "CapAmb:"] {
            assert_eq!(status_field(pid, caps), "0000000000000000", "{caps}");
        }
        assert_eq!(status_field(pid, "NoNewPrivs:"), "1");
        assert_eq!(process_group(pid), pid, "a process group of its own");
        let files = open_files(pid);
        assert!(
            files.iter().all(|f| !f.starts_with("socket:")),
            "the tender holds a socket: {files:?}"
        );
        let tap = tap_of(pid, "service0");
        let tap_owner = std::fs::read_to_string(format!("/sys/class/net/{tap}/owner")).unwrap();
        assert_eq!(tap_owner.trim(), NOBODY.to_string(), "tap {tap}'s owner");
        let disk = host.block_file("disk");
        assert_eq!(owner_and_mode(&disk), (NOBODY, 0o600), "while attached");

        host.ok(&["destroy", "guest"]);
        assert_eq!(owner_and_mode(&disk), (0, 0o600), "given back to root");
    });
}

#[test]
fn a_root_daemon_without_the_tender_user_refuses_to_start_and_says_how_to_make_it() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only a root daemon drops privileges");
        return;
    }
    if nix::unistd::User::from_name("fulmar-tender")
        .unwrap()
        .is_some()
    {
        eprintln!("skipped: this host has a fulmar-tender user");
        return;
    }
    let host = Host::new();
    let out = host
        .command(&["daemon"])
        .env_remove("FULMAR_TENDER_USER")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "useradd --system --no-create-home --shell /usr/sbin/nologin --groups kvm fulmar-tender"
        ),
        "{err}"
    );
    assert!(err.contains("--tender-user root"), "{err}");
    assert!(!host.socket().exists(), "it listened before refusing");
}

/// A block file lent to a tender goes back to root when its run ends, also
/// when the daemon that ends it is not the one that started it.
#[test]
fn a_re_adopted_run_gives_its_block_file_back_to_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only a root daemon drops privileges");
        return;
    }
    let mut host = Host::with_tenders(Tenders::install_for_anyone(&["solo5-hvt", "solo5-spt"]));
    host.start(&["--tender-user", "nobody"]);
    host.device_holding("disk", 1, b"");
    let image = images::one_block(Target::Hvt).path();
    host.ok(&[
        "create",
        "guest",
        image.to_str().unwrap(),
        "--block",
        "storage:disk",
        "--",
        "sleep-forever",
    ]);
    let disk = host.block_file("disk");
    assert_eq!(owner_and_mode(&disk), (NOBODY, 0o600), "while attached");
    host.signal_daemon(nix::sys::signal::Signal::SIGKILL);
    host.start(&["--tender-user", "nobody"]);
    assert_eq!(host.state_of("guest"), "running");
    host.ok(&["destroy", "guest"]);
    assert_eq!(owner_and_mode(&disk), (0, 0o600), "given back to root");
}
