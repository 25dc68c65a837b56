//! What a client can make the daemon (and `fulmar inspect`) hold: each bound
//! is shown by the attack it stops, against the real daemon binary.

mod support;

use fulmar::api::client::ClientError;
use fulmar::api::image::Target;
use fulmar::api::protocol::{ErrorKind, Request};
use std::path::Path;
use support::daemon::Host;
use support::images::Spec;

/// What the kernel says a process's peak resident memory was, in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Far more than the daemon or `fulmar inspect` needs for a small image,
/// far less than the bombs below inflate to.
const MEMORY_CAP_KIB: u64 = 64 << 10;

/// A zlib stream of `prefix` then `mib` MiB of zeros, made without
/// compressing them all: one MiB of zeros compresses to the same blocks
/// wherever it falls after a zero, so they are repeated. Its checksum is
/// wrong, which only a reader that inflated all of it would find.
fn bomb(prefix: &[u8], mib: usize) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut zlib = Compress::new(Compression::best(), true);
    let mut compress = |input: &[u8], out: &mut Vec<u8>| {
        out.reserve(input.len() / 100 + 1024);
        let before = zlib.total_in();
        zlib.compress_vec(input, out, FlushCompress::Sync).unwrap();
        assert_eq!(zlib.total_in() - before, input.len() as u64);
    };
    let mut stream = Vec::new();
    compress(prefix, &mut stream);
    compress(&[0], &mut stream);
    let mut zeros = Vec::new();
    compress(&vec![0; 1 << 20], &mut zeros);
    for _ in 0..mib {
        stream.extend_from_slice(&zeros);
    }
    stream.extend_from_slice(&[0x03, 0x00, 0, 0, 0, 0]);
    stream
}

fn upload_files(host: &Host) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(host.data.path().join("images")) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".upload-"))
        .collect()
}

#[test]
fn an_image_upload_is_refused_as_it_passes_the_limit() {
    let mut host = Host::new();
    host.start(&["--max-image-mb", "1"]);
    let err = host.fails(&["create", "z", "/dev/zero"]);
    assert!(err.contains("--max-image-mb"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(upload_files(&host).is_empty(), "{:?}", upload_files(&host));
    // Images under the limit still go in.
    let image = Spec::new(Target::Hvt, &[]).path();
    host.ok(&[
        "create",
        "small",
        image.to_str().unwrap(),
        "--",
        "sleep-forever",
    ]);
}

#[test]
fn a_zlib_bomb_is_refused_in_bounded_memory_by_the_daemon() {
    let mut host = Host::new();
    host.start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb");
    // The bomb: zeros, 1 GiB of them.
    std::fs::write(&path, bomb(&[], 1024)).unwrap();
    let err = host.fails(&["create", "z", path.to_str().unwrap()]);
    assert!(err.contains("not an ELF file"), "{err}");
    let peak = peak_rss_kib(host.daemon_pid());
    assert!(peak < MEMORY_CAP_KIB, "the daemon peaked at {peak} KiB");
    assert!(upload_files(&host).is_empty());
}

/// Runs `fulmar inspect` on `path`; returns its stderr and peak memory in KiB.
// Reaped by wait4, which std cannot do and which also gives the peak.
#[allow(clippy::zombie_processes)]
fn inspect_peak(host: &Host, path: &Path) -> (String, u64) {
    use std::os::unix::process::ExitStatusExt;
    let child = host
        .command(&["inspect", path.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills; `pid` is our own child,
    // not yet reaped (std reaps only in wait, which is not called).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals of the right types.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.unwrap(), &mut err).unwrap();
    assert!(
        !std::process::ExitStatus::from_raw(status).success(),
        "{err}"
    );
    (err, usage.ru_maxrss as u64)
}

#[test]
fn a_zlib_bomb_is_refused_in_bounded_memory_by_inspect() {
    let host = Host::new();
    let dir = tempfile::tempdir().unwrap();
    let zeros = dir.path().join("zeros");
    std::fs::write(&zeros, bomb(&[], 1024)).unwrap();
    let (err, peak) = inspect_peak(&host, &zeros);
    assert!(err.contains("not an ELF file"), "{err}");
    assert!(peak < MEMORY_CAP_KIB, "inspect peaked at {peak} KiB");
    // A real image's headers, then a GiB of zeros its headers never declared.
    let elf = dir.path().join("elf");
    let image = Spec::new(Target::Hvt, &[]).bytes();
    std::fs::write(&elf, bomb(&image, 1024)).unwrap();
    let (err, peak) = inspect_peak(&host, &elf);
    assert!(err.contains("where its ELF headers say it ends"), "{err}");
    assert!(peak < MEMORY_CAP_KIB, "inspect peaked at {peak} KiB");
}

#[test]
fn an_image_upload_beyond_the_cap_is_refused_while_two_go_on() {
    let mut host = Host::new();
    host.start(&["--image-uploads", "2"]);
    let image = Spec::new(Target::Hvt, &[]).path();
    let third = host.with_client(async |client| {
        // Two uploads whose data never ends while the test holds the writers.
        let (_w1, r1) = tokio::io::duplex(64);
        let (_w2, r2) = tokio::io::duplex(64);
        let put = Request::PutImage { compressed: false };
        let first = client.send_data(put.clone(), r1, |_| {});
        let second = client.send_data(put.clone(), r2, |_| {});
        let third = async {
            while upload_files(&host).len() < 2 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            let file = tokio::fs::File::open(&image).await.unwrap();
            client.send_data(put.clone(), file, |_| {}).await
        };
        tokio::select! {
            third = third => third,
            done = first => panic!("the first upload ended: {done:?}"),
            done = second => panic!("the second upload ended: {done:?}"),
        }
    });
    let Err(ClientError::Daemon(e)) = third else {
        panic!("{third:?}");
    };
    assert_eq!(e.kind, ErrorKind::Conflict, "{e:?}");
    assert!(e.message.contains("--image-uploads"), "{e:?}");
    // Once they are gone, an upload goes in again.
    host.ok(&[
        "create",
        "small",
        image.to_str().unwrap(),
        "--",
        "sleep-forever",
    ]);
}
