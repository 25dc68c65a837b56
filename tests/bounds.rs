//! What a client can make the daemon (and `fulmar inspect`) hold: each bound
//! is shown by the attack it stops, against the real daemon binary.

#[path = "it/support/mod.rs"]
mod support;

use fulmar::api::image::Target;
use fulmar::api::protocol::{ClientMessage, ErrorKind, Request};
use fulmar::wire::client::ClientError;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
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
    // A bomb as an attacker would send it: zeros, 1 GiB of them.
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

/// `message` as a JSON frame of id `id`, as it goes on the wire.
fn json_frame(id: u64, message: &impl serde::Serialize) -> Vec<u8> {
    use fulmar::wire::{Frame, FrameKind};
    let mut wire = Vec::new();
    Frame {
        kind: FrameKind::Json,
        id,
        payload: serde_json::to_vec(message).unwrap().into(),
    }
    .encode_into(&mut wire)
    .unwrap();
    wire
}

/// The next frame's JSON, read by hand.
fn read_json(from: &mut impl Read) -> serde_json::Value {
    let mut head = [0; fulmar::wire::HEADER_LEN];
    from.read_exact(&mut head).unwrap();
    let len = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize - 9;
    let mut payload = vec![0; len];
    from.read_exact(&mut payload).unwrap();
    serde_json::from_slice(&payload).unwrap()
}

/// Says Hello as a client does, then asks for the list: None once the
/// daemon answered it, the refusal's message if it refused the connection.
fn say_hello(from: &mut impl Read, to: &mut impl Write) -> Option<String> {
    let hello = fulmar::wire::Hello {
        protocol: fulmar::wire::PROTOCOL_VERSION,
        software: "idle test client".into(),
    };
    to.write_all(&json_frame(0, &hello)).unwrap();
    to.write_all(&json_frame(1, &ClientMessage::Request(Request::List)))
        .unwrap();
    to.flush().unwrap();
    assert!(read_json(from)["protocol"].is_u64(), "no Hello came back");
    let answer = read_json(from);
    match answer["type"].as_str() {
        Some("reply") => None,
        Some("error") => Some(answer["body"]["message"].as_str().unwrap().to_owned()),
        _ => panic!("{answer}"),
    }
}

/// An idle connection of the test's own user.
fn idle_connection(host: &Host) -> (UnixStream, Option<String>) {
    let mut conn = UnixStream::connect(host.socket()).unwrap();
    let mut to = conn.try_clone().unwrap();
    let refused = say_hello(&mut conn, &mut to);
    (conn, refused)
}

/// An idle connection of uid 65534 (gid 65534), through its own `fulmar proxy`.
fn idle_connection_as_nobody(host: &Host) -> (std::process::Child, Option<String>) {
    let mut proxy = host
        .command_as(65534, &["proxy"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut to, mut from) = (proxy.stdin.take().unwrap(), proxy.stdout.take().unwrap());
    let refused = say_hello(&mut from, &mut to);
    // Kept open with the child: the proxy ends when its stdin closes.
    std::mem::forget((to, from));
    (proxy, refused)
}

/// `fulmar list` as uid `uid` with group 65534, which the daemon lets in.
fn list_as(host: &Host, uid: u32) -> std::process::Output {
    host.command_as(uid, &["list"]).output().unwrap()
}

fn kill_all(children: Vec<std::process::Child>) {
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn a_user_at_the_connection_cap_is_told_which_limit_and_how_to_raise_it() {
    let mut host = Host::new();
    host.start(&["--max-connections-per-user", "3"]);
    // The probes of start() are gone once a request has been answered.
    host.ok(&["list"]);
    let idle: Vec<_> = (0..3).map(|_| idle_connection(&host)).collect();
    assert!(idle.iter().all(|(_, refused)| refused.is_none()));
    let err = host.fails(&["list"]);
    assert!(err.contains("--max-connections-per-user 3"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    drop(idle);
    support::daemon::eventually("a user back under the cap gets in", || {
        host.run(&["list"]).status.success()
    });
}

#[test]
fn idle_connections_of_one_user_do_not_lock_out_another() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to connect as other users");
        return;
    }
    let mut host = Host::new();
    host.start(&["--group", "65534", "--max-connections-per-user", "8"]);
    host.ok(&["list"]);
    let (proxies, refusals): (Vec<_>, Vec<_>) =
        (0..12).map(|_| idle_connection_as_nobody(&host)).unzip();
    let refused: Vec<_> = refusals.iter().flatten().collect();
    assert_eq!(refused.len(), 4, "{refusals:?}");
    assert!(refused[0].contains("uid 65534"), "{}", refused[0]);
    // Another user, and root, are served all the while.
    let other = list_as(&host, 65533);
    assert!(
        other.status.success(),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    host.ok(&["list"]);
    kill_all(proxies);
}

#[test]
fn root_gets_in_while_everyone_else_is_at_the_cap() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to connect as other users");
        return;
    }
    let mut host = Host::new();
    host.start(&["--group", "65534", "--max-connections", "4"]);
    host.ok(&["list"]);
    let (proxies, refusals): (Vec<_>, Vec<_>) =
        (0..4).map(|_| idle_connection_as_nobody(&host)).unzip();
    assert!(refusals.iter().all(Option::is_none), "{refusals:?}");
    let other = list_as(&host, 65533);
    assert!(!other.status.success());
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(err.contains("--max-connections 4"), "{err}");
    host.ok(&["list"]);
    kill_all(proxies);
}

/// Reads until the daemon hangs up; false if it still holds the connection
/// after far longer than the timeout under test.
fn hung_up(conn: &mut UnixStream) -> bool {
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut sink = [0; 4096];
    loop {
        match conn.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn a_client_that_never_says_hello_is_hung_up_on() {
    let mut host = Host::new();
    host.start(&["--client-timeout", "1"]);
    let mut silent = UnixStream::connect(host.socket()).unwrap();
    assert!(hung_up(&mut silent));
    host.ok(&["list"]);
}

#[test]
fn a_half_frame_is_dropped() {
    let mut host = Host::new();
    host.start(&["--client-timeout", "1"]);
    let (mut conn, refused) = idle_connection(&host);
    assert_eq!(refused, None);
    let request = json_frame(2, &ClientMessage::Request(Request::List));
    conn.write_all(&request[..request.len() / 2]).unwrap();
    assert!(hung_up(&mut conn));
    host.ok(&["list"]);
}

/// What the kernel says a process's resident memory is now, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_client_that_reads_no_replies_holds_the_daemon_to_bounded_memory() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const REQUESTS: usize = 20_000;
    let mut host = Host::new();
    host.start(&[]);
    let (conn, refused) = idle_connection(&host);
    assert_eq!(refused, None);
    let sent = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let mut to = conn.try_clone().unwrap();
        let sent = &sent;
        s.spawn(move || {
            for id in 1..=REQUESTS as u64 {
                let request = json_frame(id, &ClientMessage::Request(Request::List));
                if to.write_all(&request).is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Until all are sent, or the daemon stopped reading them: a daemon
        // that reads them all is only slow, never still for seconds.
        let mut last = usize::MAX;
        while sent.load(Ordering::Relaxed) != last && last != REQUESTS {
            last = sent.load(Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs(3));
        }
        host.ok(&["list"]);
        let peak = peak_rss_kib(host.daemon_pid());
        assert!(
            peak < MEMORY_CAP_KIB,
            "the daemon peaked at {peak} KiB after {last} requests"
        );
        // The writer fails once the connection is gone.
        conn.shutdown(std::net::Shutdown::Both).unwrap();
    });
    host.ok(&["list"]);
    let now = rss_kib(host.daemon_pid());
    assert!(now < MEMORY_CAP_KIB, "the daemon holds {now} KiB");
}

/// `fulmar daemon EXTRA` for `host`, started with open-file limits `soft`
/// and `hard`, as systemd's defaults or a unit's `LimitNOFILE` set them.
fn daemon_with_file_limit(host: &Host, soft: u64, hard: u64) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut command = host.command(&["daemon"]);
    // SAFETY: setrlimit is async-signal-safe and the closure touches nothing else.
    unsafe {
        command.pre_exec(move || {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard)
                .map_err(std::io::Error::from)
        });
    }
    command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn the_daemon_fits_its_connections_to_the_open_file_limit() {
    let mut host = Host::new();
    // Held by the host, which kills it should it run after all.
    host.daemon = Some(daemon_with_file_limit(&host, 600, 600));
    support::daemon::eventually("the daemon refuses to start", || {
        host.daemon.as_mut().unwrap().try_wait().unwrap().is_some()
    });
    let too_few = host.daemon.take().unwrap().wait_with_output().unwrap();
    assert!(!too_few.status.success());
    let err = String::from_utf8_lossy(&too_few.stderr);
    assert!(err.contains("LimitNOFILE"), "{err}");
    assert!(err.contains("--max-connections 512"), "{err}");
    // systemd's default: a soft limit of 1,024 under a far higher hard one.
    host.daemon = Some(daemon_with_file_limit(&host, 1024, 4096));
    host.wait_listening();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", host.daemon_pid())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        open_files.split_whitespace().collect::<Vec<_>>()[3..5],
        ["4096", "4096"],
        "{open_files}"
    );
}
