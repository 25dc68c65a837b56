//! `fulmar inspect` against `sha256sum` on the same 64 MiB image.
//!
//! The target: reading an image (decompress + digest + parse) at no less than
//! 0.8x the throughput of `sha256sum` on the same file, in at most twice the
//! image's size of memory. Both programs run as child processes, interleaved,
//! on files in the page cache; wall time and the child's peak RSS come from
//! `wait4`. Run with `cargo bench --bench inspect`; it asserts nothing.

#[allow(dead_code)] // the bench uses only part of the writer
#[path = "../tests/it/support/elf.rs"]
mod elf;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const IMAGE_SIZE: usize = 64 << 20;
const RUNS: usize = 9;

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let random = image(random_payload);
    let code = image(code_payload);
    let files = [
        ("plain, random payload", random.clone()),
        ("zlib, random payload", elf::zlib(&random)),
        ("plain, /usr/bin payload", code.clone()),
        ("zlib, /usr/bin payload", elf::zlib(&code)),
    ]
    .map(|(name, bytes)| {
        let path = dir.path().join(name.replace([',', ' ', '/'], "_"));
        std::fs::write(&path, &bytes).expect("write the image");
        (name, path, bytes.len())
    });
    drop((random, code));
    forget_peak_rss();
    println!("inspect: median of {RUNS} runs, MB/s of the file on disk");
    println!(
        "{:<24} {:>8} {:>12} {:>12} {:>6} {:>11} {:>9} {:>11}",
        "file",
        "size MB",
        "fulmar MB/s",
        "sha256 MB/s",
        "ratio",
        "fulmar RSS",
        "RSS/image",
        "sha256 RSS"
    );
    for (name, path, size) in &files {
        let report = measure(path);
        let mb = *size as f64 / 1e6;
        let rate = |d: Duration| mb / d.as_secs_f64();
        println!(
            "{:<24} {:>8.1} {:>12.0} {:>12.0} {:>6.2} {:>8.1} MB {:>9.2} {:>8.1} MB",
            name,
            mb,
            rate(report.fulmar.0),
            rate(report.sha256sum.0),
            report.sha256sum.0.as_secs_f64() / report.fulmar.0.as_secs_f64(),
            report.fulmar.1 as f64 / 1e6,
            report.fulmar.1 as f64 / IMAGE_SIZE as f64,
            report.sha256sum.1 as f64 / 1e6,
        );
    }
}

/// A child spawned with vfork starts from its parent's peak RSS, which the
/// images just built would inflate: reset it to what is resident now.
fn forget_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
}

/// Incompressible: deflate stores it, inflate just copies.
fn random_payload(len: usize) -> Vec<u8> {
    let mut words = XorShift(0x9e37_79b9_7f4a_7c15);
    (0..len.div_ceil(8))
        .flat_map(|_| words.next_u64().to_le_bytes())
        .take(len)
        .collect()
}

/// Real machine code and data: the files of /usr/bin, in name order.
fn code_payload(len: usize) -> Vec<u8> {
    let mut names: Vec<_> = std::fs::read_dir("/usr/bin")
        .expect("list /usr/bin")
        .map(|entry| entry.expect("read /usr/bin").path())
        .collect();
    names.sort();
    let mut out = Vec::with_capacity(len);
    for name in names.iter().cycle() {
        if out.len() >= len {
            break;
        }
        if name.is_file() {
            out.extend(std::fs::read(name).unwrap_or_default());
        }
    }
    out.truncate(len);
    out
}

/// A valid image of `IMAGE_SIZE` bytes with a payload made by `payload(len)`.
fn image(payload: fn(usize) -> Vec<u8>) -> Vec<u8> {
    let mut image = elf::ElfImage::solo5(
        elf::HVT,
        2,
        &[elf::Entry::block("storage"), elf::Entry::net("service0")],
    );
    let overhead = image.to_bytes().len() - image.payload.len();
    image.payload = payload(IMAGE_SIZE - overhead);
    let bytes = image.to_bytes();
    assert_eq!(bytes.len(), IMAGE_SIZE);
    bytes
}

struct XorShift(u64);

impl XorShift {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Median wall time and highest peak RSS of each program.
struct Report {
    fulmar: (Duration, u64),
    sha256sum: (Duration, u64),
}

fn measure(path: &Path) -> Report {
    let fulmar = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fulmar"));
        c.arg("inspect").arg("--json").arg(path);
        c
    };
    let sha256sum = || {
        let mut c = Command::new("sha256sum");
        c.arg(path);
        c
    };
    // Warm the page cache and the binaries.
    run(fulmar());
    run(sha256sum());
    let (mut f, mut s) = (vec![], vec![]);
    for _ in 0..RUNS {
        f.push(run(fulmar()));
        s.push(run(sha256sum()));
    }
    Report {
        fulmar: summary(f),
        sha256sum: summary(s),
    }
}

fn summary(mut runs: Vec<(Duration, u64)>) -> (Duration, u64) {
    let peak = runs.iter().map(|r| r.1).max().unwrap_or(0);
    runs.sort();
    (runs[runs.len() / 2].0, peak)
}

/// Runs a child to completion: its wall time and peak RSS in bytes.
#[allow(clippy::zombie_processes)] // reaped by wait4, which also gives its rusage
fn run(mut command: Command) -> (Duration, u64) {
    let start = Instant::now();
    let child = command
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet reaped (std's `Child` is never waited
    // on here), and both pointers are to live locals of the right types.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    assert_eq!(reaped, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{command:?} failed: {status}"
    );
    (elapsed, usage.ru_maxrss as u64 * 1024)
}
