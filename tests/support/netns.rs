//! Runs a test inside a network namespace of its own, so that the bridges and
//! taps it makes never touch the host's interfaces.
//!
//! The test re-runs itself: the outer process starts the same test binary for
//! the same test under `unshare --net --mount`; the inner one mounts a fresh
//! sysfs (so /sys/class/net shows the namespace's interfaces, not the host's),
//! brings `lo` up and runs the body. Needs root; otherwise the test says why and
//! passes without running.

use std::process::Command;

const INNER: &str = "FULMAR_TEST_IN_NETNS";

/// Call first in a test: `if !netns::enter("module::test_name") { return; }`.
/// Returns true in the namespace (run the body), false outside it (the body ran
/// in the child, whose failure has already failed this test).
pub fn enter(test: &str) -> bool {
    if std::env::var_os(INNER).is_some() {
        setup_inside();
        return true;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped {test}: making bridges and taps in a network namespace needs root");
        return false;
    }
    let stdout = rerun(&["--exact", test, "--nocapture", "--test-threads=1"]);
    assert!(
        stdout.contains("1 passed"),
        "{test} did not run in its namespace (wrong test name?)"
    );
    false
}

/// For a whole program (a benchmark): true in the namespace, false outside it
/// once the program has run there.
pub fn enter_program() -> bool {
    if std::env::var_os(INNER).is_some() {
        setup_inside();
        return true;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: making bridges and taps in a network namespace needs root");
        return false;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    rerun(&args);
    false
}

/// Runs this executable again with `args` in new network and mount namespaces,
/// passes its output on and returns its stdout.
fn rerun(args: &[&str]) -> String {
    let out = Command::new("unshare")
        .args(["--net", "--mount", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(args)
        .env(INNER, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "failed in its namespace");
    stdout
}

fn setup_inside() {
    use nix::mount::{MsFlags, mount};
    // unshare(1) made the mount namespace private; a new sysfs shows this
    // namespace's interfaces.
    mount(
        Some("sysfs"),
        "/sys",
        Some("sysfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount sysfs in the test namespace");
    ip(&["link", "set", "dev", "lo", "up"]);
}

/// Runs `ip ARGS` and fails the test if it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
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
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
