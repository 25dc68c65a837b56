//! Block transfers (issue 5): a 1 GiB upload and download through the CLI and
//! the daemon, against `cp` of the same file on the same filesystem in the
//! same run; peak resident memory of the daemon and of the CLI.
//!
//! `cargo bench --bench blocks`

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::daemon::Host;

const SIZE_MB: u64 = 1024;

fn main() {
    let mut host = Host::new();
    host.start(&[]);
    let dir = host.data.path().to_owned();
    let source = dir.join("source.img");
    write_random(&source, SIZE_MB << 20);
    host.ok(&["block", "create", "disk", &SIZE_MB.to_string()]);
    let copy = dir.join("copy.img");
    let out = dir.join("out.img");
    let src = source.to_str().unwrap();
    let (mut cp, mut cp_sync, mut up, mut down) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut up_rss, mut down_rss) = (0, 0);
    for _ in 0..3 {
        cp.push(timed(Command::new("cp").arg(&source).arg(&copy)).0);
        std::fs::remove_file(&copy).unwrap();
        // The same durability as an upload, which syncs before it renames.
        let start = Instant::now();
        timed(Command::new("cp").arg(&source).arg(&copy));
        timed(Command::new("sync").arg(&copy));
        cp_sync.push(start.elapsed());
        std::fs::remove_file(&copy).unwrap();
        let (t, rss) = timed(&mut host.command(&["--no-start", "block", "upload", "disk", src]));
        up.push(t);
        up_rss = up_rss.max(rss);
        let (t, rss) = timed(&mut host.command(&[
            "--no-start",
            "block",
            "download",
            "disk",
            out.to_str().unwrap(),
        ]));
        down.push(t);
        down_rss = down_rss.max(rss);
        std::fs::remove_file(&out).unwrap();
    }
    let daemon_hwm = hwm_kb(host.daemon_pid());
    let rate = |v: &mut Vec<Duration>| {
        v.sort();
        (SIZE_MB as f64) / v[v.len() / 2].as_secs_f64()
    };
    let (c, cs, u, d) = (
        rate(&mut cp),
        rate(&mut cp_sync),
        rate(&mut up),
        rate(&mut down),
    );
    println!("1 GiB through the CLI and daemon, median of 3 (same filesystem):");
    println!("  cp                 {c:>8.0} MiB/s");
    println!(
        "  cp, then sync      {cs:>8.0} MiB/s  (upload vs this: {:.2}x)",
        u / cs
    );
    println!("  block upload       {u:>8.0} MiB/s  ({:.2}x cp)", u / c);
    println!("  block download     {d:>8.0} MiB/s  ({:.2}x cp)", d / c);
    println!(
        "  peak RSS: daemon {} MiB, CLI upload {} MiB, CLI download {} MiB",
        daemon_hwm >> 10,
        up_rss >> 10,
        down_rss >> 10
    );
}

fn write_random(path: &std::path::Path, len: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..(len >> 20) {
        for b in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
}

/// Runs `command`, returning its wall time and peak resident memory (KiB).
/// The child is reaped by `wait4`, which also gives its rusage.
#[allow(clippy::zombie_processes)]
fn timed(command: &mut Command) -> (Duration, u64) {
    let start = Instant::now();
    let child = command.spawn().unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: wait4 writes a status and a rusage into the two valid pointers.
    let waited = unsafe { libc::wait4(pid.as_raw(), &mut status, 0, usage.as_mut_ptr()) };
    let took = start.elapsed();
    assert_eq!(waited, pid.as_raw());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "command failed"
    );
    // SAFETY: wait4 succeeded, so it filled in the rusage.
    let usage = unsafe { usage.assume_init() };
    (took, usage.ru_maxrss as u64)
}

fn hwm_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
