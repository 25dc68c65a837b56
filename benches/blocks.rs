//! Block transfers: a 1 GiB upload and download through the CLI and
//! the daemon, against `cp` of the same file on the same filesystem in the
//! same run; peak resident memory of the daemon and of the CLI. The CLI lends
//! the daemon its file (one copy in the kernel, as `cp`'s); the same
//! transfers with FULMAR_NO_LOCAL_FD=1 go through the socket, for comparison.
//!
//! `cargo bench --bench blocks`; with `TMPDIR=/dev/shm` the data directory,
//! and so `cp` too, is on a tmpfs.

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::daemon::Host;

const SIZE_MB: u64 = 1024;
/// Odd, so the median is a round; many, since on a shared VM a round now and
/// then takes several times as long, `cp`'s as well as fulmar's.
const ROUNDS: usize = 11;
/// Uncounted rounds first: the first transfers find the page cache and the
/// daemon cold, as the first `cp` does.
const WARM_UP: usize = 1;
/// The source, the device, and an upload's temporary file or a copy.
const SPACE_NEEDED: u64 = 3 * (SIZE_MB << 20);

#[derive(Default)]
struct Times {
    cp: Vec<Duration>,
    cp_sync: Vec<Duration>,
    sync: Vec<Duration>,
    up: Vec<Duration>,
    down: Vec<Duration>,
    up_socket: Vec<Duration>,
    down_socket: Vec<Duration>,
}

fn main() {
    let mut host = Host::new();
    let dir = host.data.path().to_owned();
    check_space(&dir);
    host.start(&[]);
    let source = dir.join("source.img");
    write_random(&source, SIZE_MB << 20);
    host.ok(&["block", "create", "disk", &SIZE_MB.to_string()]);
    let copy = dir.join("copy.img");
    let out = dir.join("out.img");
    let src = source.to_str().unwrap();
    let load_before = load();
    let mut t = Times::default();
    let (mut up_rss, mut down_rss) = (0, 0);
    for round in 0..WARM_UP + ROUNDS {
        if round == WARM_UP {
            t = Times::default();
        }
        t.cp.push(timed(Command::new("cp").arg(&source).arg(&copy)).0);
        std::fs::remove_file(&copy).unwrap();
        // The same durability as an upload, which syncs before it renames.
        let (cp, _) = timed(Command::new("cp").arg(&source).arg(&copy));
        let (sync, _) = timed(Command::new("sync").arg(&copy));
        t.cp_sync.push(cp + sync);
        t.sync.push(sync);
        std::fs::remove_file(&copy).unwrap();
        for lend in [true, false] {
            let cli = |args: &[&str]| {
                let mut c = host.command(&[&["--no-start", "block"], args].concat());
                if !lend {
                    c.env("FULMAR_NO_LOCAL_FD", "1");
                }
                c
            };
            let (time, rss) = timed(&mut cli(&["upload", "disk", src]));
            if lend { &mut t.up } else { &mut t.up_socket }.push(time);
            up_rss = up_rss.max(rss);
            // Untimed, as the removals of cp's copies are.
            wait_old_contents_freed(host.daemon_pid());
            let (time, rss) = timed(&mut cli(&["download", "disk", out.to_str().unwrap()]));
            if lend {
                &mut t.down
            } else {
                &mut t.down_socket
            }
            .push(time);
            down_rss = down_rss.max(rss);
            std::fs::remove_file(&out).unwrap();
        }
    }
    let daemon_hwm = hwm_kb(host.daemon_pid());
    report(&mut t, &dir, load_before);
    println!(
        "  peak RSS: daemon {} MiB, CLI upload {} MiB, CLI download {} MiB",
        daemon_hwm >> 10,
        up_rss >> 10,
        down_rss >> 10
    );
}

fn report(t: &mut Times, dir: &Path, load_before: String) {
    let median = |v: &mut Vec<Duration>| {
        let mut sorted = v.clone();
        sorted.sort();
        sorted[sorted.len() / 2]
    };
    let rate = |d: Duration| (SIZE_MB as f64) / d.as_secs_f64();
    let (c, cs, u, d) = (
        rate(median(&mut t.cp)),
        rate(median(&mut t.cp_sync)),
        rate(median(&mut t.up)),
        rate(median(&mut t.down)),
    );
    let (us, ds) = (
        rate(median(&mut t.up_socket)),
        rate(median(&mut t.down_socket)),
    );
    println!(
        "1 GiB through the CLI and daemon, median of {ROUNDS}, on {} (load average {load_before} before, {} after):",
        fs_type(dir),
        load()
    );
    println!("  cp                 {c:>8.0} MiB/s");
    println!(
        "  cp, then sync      {cs:>8.0} MiB/s  (sync alone: {:.0} ms)",
        median(&mut t.sync).as_secs_f64() * 1e3
    );
    println!(
        "  block upload       {u:>8.0} MiB/s  ({:.2}x cp, {:.2}x cp + sync)",
        u / c,
        u / cs
    );
    println!("  block download     {d:>8.0} MiB/s  ({:.2}x cp)", d / c);
    println!(
        "  through the socket: upload {us:.0} MiB/s ({:.2}x cp, {:.2}x cp + sync), download {ds:.0} MiB/s ({:.2}x cp)",
        us / c,
        us / cs,
        ds / c
    );
    // Each round's transfer against that round's `cp`, which ran just
    // before it: a slow spell of the machine then weighs on both alike.
    let paired = |v: &[Duration]| {
        let mut ratios: Vec<f64> =
            t.cp.iter()
                .zip(v)
                .map(|(cp, x)| cp.as_secs_f64() / x.as_secs_f64())
                .collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };
    println!(
        "  round by round, the median of cp's time over the transfer's: upload {:.2}x, download {:.2}x",
        paired(&t.up),
        paired(&t.down)
    );
    let all = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "  each round in order, s: cp {}; cp + sync {}; upload {}; download {}; socket upload {}; socket download {}",
        all(&t.cp),
        all(&t.cp_sync),
        all(&t.up),
        all(&t.down),
        all(&t.up_socket),
        all(&t.down_socket)
    );
}

/// Refuses to start where the files would not fit, rather than fill a
/// filesystem others use.
fn check_space(dir: &Path) {
    let stat = nix::sys::statvfs::statvfs(dir).unwrap();
    let free = stat.blocks_available() * stat.fragment_size();
    assert!(
        free >= SPACE_NEEDED,
        "the bench needs {} GiB free in {} and there are {} MiB: point TMPDIR elsewhere",
        SPACE_NEEDED >> 30,
        dir.display(),
        free >> 20
    );
}

fn fs_type(dir: &Path) -> String {
    use nix::sys::statfs::{EXT4_SUPER_MAGIC, TMPFS_MAGIC, statfs};
    let kind = statfs(dir).unwrap().filesystem_type();
    match kind {
        TMPFS_MAGIC => "tmpfs".into(),
        EXT4_SUPER_MAGIC => "ext4".into(),
        other => format!("a filesystem of type {:#x}", other.0),
    }
}

/// The one-minute load average, since other jobs share the machine.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn write_random(path: &Path, len: u64) {
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

/// Waits until the daemon has freed the contents an upload replaced: it
/// answers first, then closes the old file (freeing 1 GiB takes a while), and
/// the next step should not pay for that.
fn wait_old_contents_freed(pid: i32) {
    let holds_old = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .any(|target| {
                let target = target.to_string_lossy();
                target.contains("/block/") && target.ends_with(" (deleted)")
            })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while holds_old() {
        assert!(
            Instant::now() < deadline,
            "the daemon never freed the old contents"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
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
