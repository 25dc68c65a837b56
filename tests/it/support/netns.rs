//! Runs test code inside a network namespace of its own, so that the bridges
//! and taps it makes never touch the host's interfaces.
//!
//! Namespaces belong to threads on Linux: [`run`] starts a thread that moves to
//! new network and mount namespaces and mounts a fresh sysfs there (so
//! /sys/class/net shows the namespace's interfaces, not the host's). Everything
//! the body spawns inherits them; async code must run on a current-thread
//! runtime inside the body so that it never leaves the thread. Used by the
//! integration tests and, through `#[path]`, by the unit tests in `src/host`.

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use std::process::Command;

/// Runs `body` in fresh namespaces and returns what it returns, or says why it
/// cannot (not root, no namespaces here) and returns `None`. A panic in `body`
/// fails the calling test.
pub fn run<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: making bridges and taps in a network namespace needs root");
        return None;
    }
    let thread = std::thread::spawn(move || enter().map(|()| body()));
    match thread.join() {
        Ok(Ok(value)) => Some(value),
        Ok(Err(why)) => {
            eprintln!("skipped: cannot make a network namespace: {why}");
            None
        }
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn enter() -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare: {e}"))?;
    // Keep the sysfs mount below from propagating back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))?;
    mount(
        Some("sysfs"),
        "/sys",
        Some("sysfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| format!("mounting sysfs: {e}"))?;
    // Refuse to go on unless the view really is a new namespace's.
    let names = interfaces();
    assert_eq!(
        names,
        ["lo"],
        "the new namespace shows other interfaces: refusing to touch them"
    );
    ip(&["link", "set", "dev", "lo", "up"]);
    Ok(())
}

/// Names the `ip` program for a test process run with an empty PATH, to
/// prove that the code under test finds no `ip` to run.
pub const IP_PROGRAM: &str = "FULMAR_TEST_IP";

/// The `ip` program this process runs: from [`IP_PROGRAM`], else found on PATH.
pub fn ip_program() -> std::path::PathBuf {
    if let Some(program) = std::env::var_os(IP_PROGRAM) {
        return program.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("ip"))
        .find(|program| program.is_file())
        .expect("iproute2's ip on PATH")
}

/// Runs `ip ARGS` and fails the test if it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new(ip_program())
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes bridge `name`, up.
pub fn bridge(name: &str) {
    ip(&["link", "add", name, "type", "bridge"]);
    ip(&["link", "set", "dev", name, "up"]);
}

/// The interfaces in this namespace, sorted.
pub fn interfaces() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .expect("read /sys/class/net")
        .map(|e| {
            e.expect("read /sys/class/net")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}
