//! Block devices end to end: the real daemon and CLI; old contents
//! survive every failed transfer.

use crate::support;

use fulmar::api::image::{DeviceKind, Target};
use nix::sys::signal::Signal;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use support::bytes::{pattern, sha, sha_of};
use support::daemon::{Host, eventually};
use support::images::Spec;

const MIB: usize = 1 << 20;

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

#[test]
fn round_trips_keep_every_byte() {
    let mut host = Host::new();
    host.start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    for (mb, compressed) in [(1, false), (1, true), (16, false), (16, true), (512, false)] {
        let name = format!("d{mb}{}", if compressed { "z" } else { "" });
        host.ok(&["block", "create", &name, &mb.to_string()]);
        let data = pattern(mb * MIB, mb as u64);
        let source = if compressed {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(&data).unwrap();
            write_file(tmp.path(), &name, &z.finish().unwrap())
        } else {
            write_file(tmp.path(), &name, &data)
        };
        let mut args = vec!["block", "upload", &name, &source];
        if compressed {
            args.push("--compressed");
        }
        host.ok(&args);
        assert_eq!(sha_of(&host.block_file(&name)), sha(&data), "{name}");
        let back = tmp.path().join(format!("{name}.back"));
        let mut args = vec!["block", "download", &name, back.to_str().unwrap()];
        if compressed {
            args.push("--compressed");
        }
        host.ok(&args);
        let mut got = std::fs::read(&back).unwrap();
        if compressed {
            let mut d = flate2::read::ZlibDecoder::new(&got[..]);
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut d, &mut plain).unwrap();
            got = plain;
        }
        assert_eq!(sha(&got), sha(&data), "{name} downloaded");
        std::fs::remove_file(back).unwrap();
    }
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&host.ok(&["block", "list", "--json"])).unwrap();
    assert_eq!(list.len(), 5);
    assert!(
        list.iter()
            .any(|b| b["name"] == "d512" && b["size_mb"] == 512 && b["attached_to"].is_null())
    );
}

#[test]
fn stdin_and_stdout_carry_the_data() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&["block", "create", "disk", "2"]);
    let data = pattern(2 * MIB, 7);
    let mut up = host
        .command(&["--no-start", "block", "upload", "disk", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    up.stdin.take().unwrap().write_all(&data).unwrap();
    assert!(up.wait().unwrap().success());
    let down = host.run(&["block", "download", "disk", "-"]);
    assert!(down.status.success());
    assert_eq!(sha(&down.stdout), sha(&data));
}

#[test]
fn failed_uploads_keep_the_old_contents() {
    let mut host = Host::new();
    host.start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let old = pattern(4 * MIB, 1);
    host.device_holding("disk", 4, &old);
    let intact = |host: &Host, why: &str| {
        assert_eq!(sha_of(&host.block_file("disk")), sha(&old), "{why}");
        assert_eq!(host.block_files(), ["disk"], "{why} left a file behind");
    };
    // Oversize.
    let big = write_file(tmp.path(), "big", &pattern(5 * MIB, 2));
    let err = host.fails(&["block", "upload", "disk", &big]);
    assert!(err.contains("disk"), "{err}");
    intact(&host, "oversize");
    // The client killed mid-stream.
    let (mut up, stdin) = upload_under_way(&host, "disk", 3);
    up.kill().unwrap();
    up.wait().unwrap();
    drop(stdin);
    eventually("the daemon drops the upload", || {
        host.block_files() == ["disk"]
    });
    intact(&host, "client killed");
    // The daemon killed -9 mid-stream, then started again.
    let (mut up, stdin) = upload_under_way(&host, "disk", 4);
    host.signal_daemon(Signal::SIGKILL);
    drop(stdin);
    let _ = up.wait();
    host.start(&[]);
    intact(&host, "daemon killed");
}

/// An upload from the CLI's stdin that has reached the daemon's temporary
/// file and waits for more: the moment a failure must not cost the old contents.
fn upload_under_way(
    host: &Host,
    name: &str,
    seed: u64,
) -> (std::process::Child, std::process::ChildStdin) {
    let mut up = host
        .command(&["--no-start", "block", "upload", name, "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = up.stdin.take().unwrap();
    stdin.write_all(&pattern(2 * MIB, seed)).unwrap();
    eventually("the upload reaches the daemon", || {
        host.block_files()
            .iter()
            .any(|f| f.starts_with(".partial_"))
    });
    (up, stdin)
}

#[test]
fn a_full_disk_keeps_the_old_contents() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let mut host = Host::new();
    let mount = host.data.path().join("block");
    let _unmount = Tmpfs::mount(&mount, "12m");
    host.start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let old = pattern(4 * MIB, 5);
    host.device_holding("disk", 4, &old);
    // Leave less room than an upload's temporary copy needs.
    std::fs::write(mount.join("filler"), vec![1u8; 6 * MIB]).unwrap();
    let err = host.fails(&[
        "block",
        "upload",
        "disk",
        &write_file(tmp.path(), "new", &pattern(4 * MIB, 6)),
    ]);
    assert!(err.to_lowercase().contains("space"), "{err}");
    assert_eq!(sha_of(&mount.join("disk")), sha(&old));
    assert_eq!(names_in(&mount), ["disk", "filler"]);
    host.signal_daemon(Signal::SIGTERM);
}

/// A small tmpfs mounted (by root) at a new directory `at`, for a full
/// disk; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0700").as_str()),
        )
        .unwrap();
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount(&self.0);
    }
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `echo precious > f; fulmar block download ... f`: a download the daemon
/// refuses (no such device, busy) or that fails midway (the destination's
/// disk fills, with the file lent to the daemon or through frames) leaves
/// `f` as it was and nothing beside it; a complete one replaces it and keeps
/// its mode.
#[test]
fn refused_and_failed_downloads_keep_the_destination() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let mut host = Host::new();
    host.start(&[]);
    let old = pattern(4 * MIB, 40);
    host.device_holding("disk", 4, &old);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("f");
    std::fs::write(&dest, "precious\n").unwrap();
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o640)).unwrap();
    let intact = |dest: &Path, why: &str| {
        assert_eq!(std::fs::read(dest).unwrap(), b"precious\n", "{why}");
        assert_eq!(names_in(dest.parent().unwrap()), ["f"], "{why} left a file");
    };
    let dest_arg = dest.to_str().unwrap();

    let err = host.fails(&["block", "download", "nosuchdev", dest_arg]);
    assert!(err.contains("does not exist"), "{err}");
    intact(&dest, "no such device");

    let (mut up, stdin) = upload_under_way(&host, "disk", 41);
    let err = host.fails(&["block", "download", "disk", dest_arg]);
    assert!(err.contains("busy"), "{err}");
    intact(&dest, "busy");
    up.kill().unwrap();
    up.wait().unwrap();
    drop(stdin);
    eventually("the daemon drops the upload", || {
        host.block_files() == ["disk"]
    });

    // Room for the old contents, not for the device.
    let small = tmp.path().join("small");
    let _unmount = Tmpfs::mount(&small, "1m");
    let on_small = small.join("f");
    std::fs::write(&on_small, "precious\n").unwrap();
    for no_lending in ["0", "1"] {
        let out = host
            .command(&["--no-start", "block", "download", "disk"])
            .arg(&on_small)
            .env("FULMAR_NO_LOCAL_FD", no_lending)
            .output()
            .unwrap();
        assert!(!out.status.success(), "a download larger than its disk");
        intact(
            &on_small,
            &format!("a full disk (FULMAR_NO_LOCAL_FD={no_lending})"),
        );
    }

    host.ok(&["block", "download", "disk", dest_arg]);
    assert_eq!(sha_of(&dest), sha(&old));
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
    assert_eq!(names_in(tmp.path()), ["f", "small"]);
}

/// `cat /dev/zero | fulmar block upload disk -` and `block create new 4
/// --data /dev/zero`: data with no end is refused as soon as it passes the
/// device's size, and the client exits with the reason; nothing changes.
#[test]
fn endless_data_is_refused_at_once() {
    let mut host = Host::new();
    host.start(&[]);
    let old = pattern(4 * MIB, 42);
    host.device_holding("disk", 4, &old);
    let cases: [(&[&str], bool, &str); 4] = [
        (&["upload", "disk", "-"], false, "disk"),
        (&["upload", "disk", "-"], true, "disk"),
        (&["create", "new", "4", "--data", "/dev/zero"], false, "new"),
        (&["create", "new", "4", "--data", "-"], true, "new"),
    ];
    for (args, piped, name) in cases {
        let why = format!("{args:?}, {}", if piped { "a pipe" } else { "/dev/zero" });
        let mut command = host.command(&[&["--no-start", "block"][..], args].concat());
        command.stderr(Stdio::piped());
        if piped {
            command.stdin(Stdio::piped());
        } else {
            command.stdin(std::fs::File::open("/dev/zero").unwrap());
        }
        let mut cli = command.spawn().unwrap();
        if let Some(mut stdin) = cli.stdin.take() {
            // Zeros until the client is gone and the pipe breaks.
            std::thread::spawn(move || while stdin.write_all(&[0; 65536]).is_ok() {});
        }
        let status = exits_or_hangs(&mut cli, &why);
        let mut err = String::new();
        std::io::Read::read_to_string(&mut cli.stderr.take().unwrap(), &mut err).unwrap();
        assert!(!status.success(), "{why}");
        let want = format!("the data is larger than {name} (4 MB)");
        assert!(err.contains(&want), "{why}: {err}");
        assert_eq!(sha_of(&host.block_file("disk")), sha(&old), "{why}");
        assert_eq!(host.block_files(), ["disk"], "{why}");
    }
}

/// `fulmar block upload disk - --size N --sha256 HEX` (and `block create
/// --data`): a stream shorter or longer than N, or with another digest, is
/// refused with nothing changed and nothing left; a longer one while it
/// streams (it never ends here). The right size and digest are accepted,
/// plain, zlib or from a file the daemon copies itself.
#[test]
fn uploads_are_checked_against_their_size_and_digest() {
    let mut host = Host::new();
    host.start(&[]);
    let old = pattern(4 * MIB, 50);
    host.device_holding("disk", 4, &old);
    let data = pattern(MIB + 3, 51);
    let (size, digest) = (data.len().to_string(), sha(&data));
    let tmp = tempfile::tempdir().unwrap();
    let zlib = {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&data).unwrap();
        z.finish().unwrap()
    };
    let file = write_file(tmp.path(), "data", &data);
    let run = |args: &[&str], stdin: Option<Vec<u8>>, endless: bool| {
        let mut command = host.command(&[&["--no-start", "block"][..], args].concat());
        command.stdin(Stdio::piped()).stderr(Stdio::piped());
        let mut cli = command.spawn().unwrap();
        let mut pipe = cli.stdin.take().unwrap();
        std::thread::spawn(move || {
            if let Some(bytes) = stdin {
                let _ = pipe.write_all(&bytes);
            }
            while endless && pipe.write_all(&[7; 65536]).is_ok() {}
        });
        let status = exits_or_hangs(&mut cli, &format!("{args:?}"));
        let mut err = String::new();
        std::io::Read::read_to_string(&mut cli.stderr.take().unwrap(), &mut err).unwrap();
        (status.success(), err)
    };
    let wrong = sha(b"another file");
    // The arguments, the data on stdin, whether it never ends, why refused.
    type Refused<'a> = (&'a [&'a str], Option<Vec<u8>>, bool, &'a str);
    let refused: [Refused; 6] = [
        (
            &["upload", "disk", "-", "--size", &size],
            Some(data[1..].to_vec()),
            false,
            "not the",
        ),
        (
            &["upload", "disk", "-", "--size", &size],
            Some(data.clone()),
            true,
            "more than the",
        ),
        (
            &["upload", "disk", "-", "--sha256", &wrong],
            Some(data.clone()),
            false,
            "SHA-256",
        ),
        (
            &["upload", "disk", &file, "--size", &size, "--sha256", &wrong],
            None,
            false,
            "SHA-256",
        ),
        (
            &["upload", "disk", "-", "--compressed", "--sha256", &wrong],
            Some(zlib.clone()),
            false,
            "SHA-256",
        ),
        (
            &["create", "new", "2", "--data", "-", "--sha256", &wrong],
            Some(data.clone()),
            false,
            "SHA-256",
        ),
    ];
    for (args, stdin, endless, why) in refused {
        let (ok, err) = run(args, stdin, endless);
        assert!(!ok, "{args:?} accepted");
        assert!(
            err.contains(why) && err.contains("nothing was changed"),
            "{args:?}: {err}"
        );
        assert_eq!(sha_of(&host.block_file("disk")), sha(&old), "{args:?}");
        assert_eq!(host.block_files(), ["disk"], "{args:?}");
    }

    let mut want = data.clone();
    want.resize(4 * MIB, 0);
    let accepted: [(&[&str], Option<Vec<u8>>); 3] = [
        (
            &["upload", "disk", "-", "--size", &size, "--sha256", &digest],
            Some(data.clone()),
        ),
        (
            &[
                "upload", "disk", &file, "--size", &size, "--sha256", &digest,
            ],
            None,
        ),
        (
            &[
                "upload",
                "disk",
                "-",
                "--compressed",
                "--size",
                &size,
                "--sha256",
                &digest,
            ],
            Some(zlib),
        ),
    ];
    for (args, stdin) in accepted {
        std::fs::write(host.block_file("disk"), &old).unwrap();
        let (ok, err) = run(args, stdin, false);
        assert!(ok, "{args:?}: {err}");
        assert_eq!(sha_of(&host.block_file("disk")), sha(&want), "{args:?}");
    }
    host.ok(&[
        "block", "create", "new", "4", "--data", &file, "--sha256", &digest,
    ]);
    assert_eq!(sha_of(&host.block_file("new")), sha(&want));
}

/// Waits for `child` to exit; one that is still running after a minute hung,
/// which fails the test (a bound on a hang, not a measure of speed).
fn exits_or_hangs(child: &mut std::process::Child, why: &str) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{why}: the client hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn attached_devices_cannot_be_replaced_or_destroyed() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&["block", "create", "disk", "1"]);
    let image = Spec::new(Target::Hvt, &[("storage", DeviceKind::Block)]).path();
    host.ok(&[
        "create",
        "db",
        image.to_str().unwrap(),
        "--block",
        "storage:disk",
        "--",
        "sleep-forever",
    ]);
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&host.ok(&["block", "list", "--json"])).unwrap();
    assert_eq!(list[0]["attached_to"], "db");
    let tmp = tempfile::tempdir().unwrap();
    let file = write_file(tmp.path(), "x", &pattern(MIB, 9));
    let err = host.fails(&["block", "upload", "disk", &file]);
    assert!(err.contains("attached to db"), "{err}");
    assert!(
        host.fails(&["block", "destroy", "disk"])
            .contains("attached to db")
    );
    host.ok(&["destroy", "db"]);
    host.ok(&["block", "upload", "disk", &file]);
    host.ok(&["block", "destroy", "disk"]);
    assert!(host.block_files().is_empty());
}

#[test]
fn bad_names_and_sizes_are_refused() {
    let mut host = Host::new();
    host.start(&[]);
    for bad in ["a/b", "..", "../x", ""] {
        let out = host.run(&["block", "create", bad, "1"]);
        assert!(!out.status.success(), "{bad:?} accepted");
    }
    assert!(
        host.fails(&["block", "create", "zero", "0"])
            .contains("at least 1 MB")
    );
    assert!(
        host.fails(&["block", "create", "huge", "999999999"])
            .contains("disk are free")
    );
    host.ok(&["block", "create", "ok", "1"]);
    assert!(
        host.fails(&["block", "create", "ok", "1"])
            .contains("already exists")
    );
    assert_eq!(host.block_files(), ["ok"]);
}

#[test]
fn transfers_show_progress_on_a_terminal_and_nothing_otherwise() {
    use support::pty::{PATIENCE, Pty};
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&["block", "create", "disk", "64"]);
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source.img");
    std::fs::write(&source, pattern(64 * MIB, 31)).unwrap();
    let back = tmp.path().join("back.img");
    let (source, back) = (source.to_str().unwrap(), back.to_str().unwrap());
    for args in [["upload", "disk", source], ["download", "disk", back]] {
        let mut cli = Pty::fulmar(&host, &[&["block"][..], &args].concat(), 120, 6);
        assert!(cli.wait_exit(PATIENCE).success(), "{}", cli.screen_text());
        let text = cli.screen_text();
        // The line left on the terminal is the end, with a rate.
        let bar = text
            .lines()
            .find(|l| l.contains(" of 64.0 MiB"))
            .unwrap_or_else(|| panic!("no progress line for {args:?}:\n{text}"));
        assert!(bar.starts_with("100%: 64.0 MiB of 64.0 MiB, "), "{bar}");
        assert!(bar.contains("/s, 0s left"), "{bar}");
        std::fs::remove_file(back).ok();
        // Not a terminal (a script, a pipe): nothing but the result.
        let piped = host.run(&[&["block"][..], &args].concat());
        assert!(piped.status.success());
        assert!(
            piped.stderr.is_empty(),
            "{args:?}: {:?}",
            String::from_utf8_lossy(&piped.stderr)
        );
        std::fs::remove_file(back).ok();
    }
}

/// No command line can carry a NUL, but a hand-made client can send one: the
/// daemon refuses the name, says why, and creates nothing.
#[tokio::test]
async fn a_name_with_nul_from_a_hand_made_client_is_refused() {
    use fulmar::api::label::Label;
    use fulmar::api::protocol::{ClientMessage, DaemonMessage, ErrorKind, Request};
    use fulmar::wire::{FrameReader, FrameWriter, HANDSHAKE_TIMEOUT, Hello, Peer, handshake};
    let mut host = Host::new();
    host.start(&[]);
    let stream = tokio::net::UnixStream::connect(host.socket())
        .await
        .unwrap();
    let (read, write) = stream.into_split();
    let (mut reader, mut writer) = (FrameReader::new(read), FrameWriter::new(write));
    handshake(
        Peer::Daemon,
        &mut reader,
        &mut writer,
        &Hello::ours("hand-made"),
        HANDSHAKE_TIMEOUT,
    )
    .await
    .unwrap();
    let create = ClientMessage::Request(Request::BlockCreate {
        name: Label::new("ab").unwrap(),
        size_mb: 1,
        with_data: false,
        lend: false,
        check: Default::default(),
    });
    let json = serde_json::to_string(&create)
        .unwrap()
        .replace(r#""ab""#, r#""a\u0000b""#);
    let with_nul: serde_json::Value = serde_json::from_str(&json).unwrap();
    writer.send_json(1, &with_nul).await.unwrap();
    writer.flush().await.unwrap();
    let frame = reader.next().await.unwrap().expect("an answer");
    match frame.json::<DaemonMessage>().unwrap() {
        DaemonMessage::Error(e) => {
            assert_eq!(e.kind, ErrorKind::Protocol, "{e:?}");
            assert!(e.message.contains("'\\0'"), "{}", e.message);
        }
        other => panic!("the daemon answered {other:?}"),
    }
    assert_eq!(host.ok(&["block", "list", "--json"]).trim(), "[]");
}

/// The same contents through every path a transfer can take: from the page
/// cache (a file, stdin redirected from one) or through memory (a pipe, the
/// api client over `fulmar proxy`, where the client's end is not a Unix
/// socket), into the device by splice or through memory (zlib). Each must
/// leave or give the same bytes.
#[test]
fn every_transfer_path_gives_the_same_bytes() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&["block", "create", "disk", "4"]);
    let tmp = tempfile::tempdir().unwrap();
    // Not a whole number of pages, so pieces end inside a page.
    let data = pattern(3 * MIB + 4321, 11);
    let source = write_file(tmp.path(), "source", &data);
    let mut want = data.clone();
    want.resize(4 * MIB, 0);
    let want = sha(&want);
    let device = || sha_of(&host.block_file("disk"));
    let upload = |how: &str, stdin: Stdio, extra: &[&str]| {
        // Something else first, so each upload has something to replace.
        host.ok(&[
            "block",
            "upload",
            "disk",
            &write_file(tmp.path(), "x", b"x"),
        ]);
        let mut args = vec!["--no-start", "block", "upload", "disk"];
        args.extend_from_slice(extra);
        let out = host.command(&args).stdin(stdin).output().unwrap();
        assert!(
            out.status.success(),
            "{how}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(device(), want, "uploaded {how}");
    };
    upload("from a file", Stdio::null(), &[&source]);
    let file = std::fs::File::open(&source).unwrap();
    upload("from stdin redirected from a file", file.into(), &["-"]);
    let mut cat = std::process::Command::new("cat")
        .arg(&source)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    upload("from a pipe", cat.stdout.take().unwrap().into(), &["-"]);
    cat.wait().unwrap();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&data).unwrap();
    let zipped = write_file(tmp.path(), "z", &z.finish().unwrap());
    upload("compressed", Stdio::null(), &["--compressed", &zipped]);

    let to_file = tmp.path().join("down");
    host.ok(&["block", "download", "disk", to_file.to_str().unwrap()]);
    assert_eq!(sha_of(&to_file), want, "to a file");
    let redirected = std::fs::File::create(&to_file).unwrap();
    let out = host
        .command(&["--no-start", "block", "download", "disk", "-"])
        .stdout(redirected)
        .status()
        .unwrap();
    assert!(out.success());
    assert_eq!(sha_of(&to_file), want, "to stdout redirected to a file");
    let piped = host.run(&["block", "download", "disk", "-"]);
    assert!(piped.status.success());
    assert_eq!(sha(&piped.stdout), want, "to a pipe");

    through_the_proxy(&host, &source, &tmp.path().join("proxied"), &want);
}

/// An upload and a download with the api client over `fulmar proxy`'s
/// stdio: the client's side of the connection is a pair of pipes, so it
/// sends and receives through memory; progress reaches the total each way.
fn through_the_proxy(host: &Host, source: &str, out: &Path, want: &str) {
    use fulmar::api::protocol::{Reply, Request};
    use fulmar::wire::client::Progress;
    host.with_proxy_client(async |client| {
        let name = fulmar::api::label::Label::new("disk").unwrap();
        let size = std::fs::metadata(source).unwrap().len();
        let mut sent = Vec::new();
        let reply = client
            .send_file(
                Request::BlockUpload {
                    name: name.clone(),
                    compressed: false,
                    lend: false,
                    check: Default::default(),
                },
                std::fs::File::open(source).unwrap(),
                |p| sent.push(p),
            )
            .await
            .unwrap();
        assert_eq!(reply, Reply::Transferred { bytes: size });
        assert_progress(&sent, size);
        assert_eq!(sha_of(&host.block_file("disk")), want);

        let total = 4 * MIB as u64;
        let mut received = Vec::new();
        let got = client
            .receive_file(
                Request::BlockDownload {
                    name,
                    compressed: false,
                    lend: false,
                },
                std::fs::File::create(out).unwrap(),
                Some(total),
                |p| received.push(p),
            )
            .await
            .unwrap();
        assert_eq!(got, total);
        assert_progress(&received, total);
        assert_eq!(sha_of(out), want, "downloaded");
    });

    fn assert_progress(seen: &[Progress], total: u64) {
        assert!(seen.windows(2).all(|w| w[0].done <= w[1].done), "{seen:?}");
        assert!(seen.iter().all(|p| p.total == Some(total)), "{seen:?}");
        assert_eq!(seen.last().map(|p| p.done), Some(total), "{seen:?}");
    }
}

/// A runtime and an api client on the daemon's own socket, the way the CLI
/// and the TUI connect: a client that may lend the daemon its files.
fn local_client(host: &Host) -> (tokio::runtime::Runtime, fulmar::wire::client::Client) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(support::daemon::client_at(host.socket()))
        .unwrap();
    (rt, client)
}

fn upload_request(name: &str) -> fulmar::api::protocol::Request {
    fulmar::api::protocol::Request::BlockUpload {
        name: fulmar::api::label::Label::new(name).unwrap(),
        compressed: false,
        lend: false,
        check: Default::default(),
    }
}

fn download_request(name: &str) -> fulmar::api::protocol::Request {
    fulmar::api::protocol::Request::BlockDownload {
        name: fulmar::api::label::Label::new(name).unwrap(),
        compressed: false,
        lend: false,
    }
}

/// Uploads and downloads that the daemon copies itself from and into the
/// client's own files, checked byte for byte against the path through the
/// socket (forced with FULMAR_NO_LOCAL_FD=1). That the daemon copied is
/// seen from the outside: its progress starts at 0 before any byte moved
/// (the client's own counts only data frames sent), and it writes the
/// client's file by offset, so the file's position (shared with the client)
/// stays where it was.
#[test]
fn lent_files_are_copied_by_the_daemon_byte_for_byte() {
    use fulmar::api::protocol::Reply;
    use fulmar::wire::client::Progress;
    use std::io::Seek;
    let mut host = Host::new();
    host.start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let (rt, client) = local_client(&host);
    for (i, len) in [MIB, 64 * MIB, 3 * MIB + 4321, 1].into_iter().enumerate() {
        let size_mb = len.div_ceil(MIB);
        let name = format!("lent{i}");
        host.ok(&["block", "create", &name, &size_mb.to_string()]);
        let data = pattern(len, 40 + i as u64);
        let source = write_file(tmp.path(), &name, &data);
        let mut want = data.clone();
        want.resize(size_mb * MIB, 0);
        let want = sha(&want);

        let mut sent: Vec<Progress> = Vec::new();
        let file = std::fs::File::open(&source).unwrap();
        let reply = rt
            .block_on(client.send_file(upload_request(&name), file, |p| sent.push(p)))
            .unwrap();
        assert_eq!(reply, Reply::Transferred { bytes: len as u64 });
        assert_eq!(sent.first().map(|p| p.done), Some(0), "{name}: {sent:?}");
        assert_eq!(sent.last().map(|p| p.done), Some(len as u64), "{name}");
        assert!(sent.iter().all(|p| p.total == Some(len as u64)), "{sent:?}");
        assert!(sent.windows(2).all(|w| w[0].done <= w[1].done), "{sent:?}");
        assert_eq!(sha_of(&host.block_file(&name)), want, "{name} uploaded");

        let back = tmp.path().join(format!("{name}.back"));
        let out = std::fs::File::create(&back).unwrap();
        let mut shared = out.try_clone().unwrap();
        let total = (size_mb * MIB) as u64;
        let mut received: Vec<Progress> = Vec::new();
        let got = rt
            .block_on(
                client.receive_file(download_request(&name), out, Some(total), |p| {
                    received.push(p)
                }),
            )
            .unwrap();
        assert_eq!(got, total);
        assert_eq!(received.last().map(|p| p.done), Some(total), "{name}");
        assert_eq!(shared.stream_position().unwrap(), 0, "{name}: not lent");
        assert_eq!(sha_of(&back), want, "{name} downloaded");

        // The same through the socket.
        let socket = |args: &[&str]| {
            let out = host
                .command(&[&["--no-start"], args].concat())
                .env("FULMAR_NO_LOCAL_FD", "1")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        socket(&["block", "download", &name, back.to_str().unwrap()]);
        assert_eq!(sha_of(&back), want, "{name} downloaded through the socket");
        host.ok(&["block", "upload", &name, &write_file(tmp.path(), "x", b"x")]);
        socket(&["block", "upload", &name, &source]);
        assert_eq!(
            sha_of(&host.block_file(&name)),
            want,
            "{name} through the socket"
        );
        // And a device created with data, by the CLI, lent.
        let made = format!("{name}c");
        host.ok(&[
            "block",
            "create",
            &made,
            &size_mb.to_string(),
            "--data",
            &source,
        ]);
        assert_eq!(sha_of(&host.block_file(&made)), want, "{made} created");
    }
}

/// A lent file that does not fit, or is open the wrong way, is refused before
/// anything changes: the daemon holds the client's own open file, so it can
/// only read what the client opened for reading and write what it opened for
/// writing, and it never reopens the file to get round that.
#[test]
fn lent_files_that_cannot_serve_are_refused() {
    let mut host = Host::new();
    host.start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let old = pattern(2 * MIB, 50);
    host.device_holding("disk", 2, &old);
    let intact = |why: &str| {
        assert_eq!(sha_of(&host.block_file("disk")), sha(&old), "{why}");
        assert_eq!(host.block_files(), ["disk"], "{why} left a file behind");
    };
    let (rt, client) = local_client(&host);

    let big = write_file(tmp.path(), "big", &pattern(2 * MIB + 1, 51));
    let file = std::fs::File::open(&big).unwrap();
    let err = rt
        .block_on(client.send_file(upload_request("disk"), file, |_| {}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("grow it first"), "{err}");
    intact("oversize");

    let write_only = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
    let err = rt
        .block_on(client.send_file(upload_request("disk"), write_only, |_| {}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not open for reading"), "{err}");
    intact("a write-only file to upload");

    let before = std::fs::read(&big).unwrap();
    let read_only = std::fs::File::open(&big).unwrap();
    let err = rt
        .block_on(client.receive_file(download_request("disk"), read_only, None, |_| {}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not open for writing"), "{err}");
    assert_eq!(
        std::fs::read(&big).unwrap(),
        before,
        "the read-only file was written"
    );
}

/// A client that goes away while the daemon copies its file leaves the old
/// contents and no temp file.
#[test]
fn a_client_gone_mid_copy_keeps_the_old_contents() {
    let mut host = Host::new();
    host.start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let old = pattern(MIB, 60);
    host.device_holding("disk", 512, &old);
    let old = sha(&old);
    // Big enough that the copy is far from done when the client goes.
    let big = tmp.path().join("big");
    let piece = pattern(MIB, 61);
    let mut file = std::fs::File::create(&big).unwrap();
    for _ in 0..512 {
        file.write_all(&piece).unwrap();
    }
    drop(file);

    let (rt, client) = local_client(&host);
    let (started, mut copying) = tokio::sync::mpsc::unbounded_channel();
    let file = std::fs::File::open(&big).unwrap();
    rt.block_on(async {
        let upload = client.send_file(upload_request("disk"), file, |p| {
            let _ = started.send(p);
        });
        tokio::select! {
            done = upload => panic!("the upload ended first: {done:?}"),
            _ = copying.recv() => {}
        }
    });
    // The connection closes as a killed client's would.
    drop(client);
    drop(rt);
    // A grow waits for no transfer: it is refused until the upload let go.
    eventually("the daemon drops the upload", || {
        host.run(&["block", "grow", "disk", "513"]).status.success()
    });
    let intact = |host: &Host, why: &str| {
        assert_eq!(host.block_files(), ["disk"], "{why}");
        let device = std::fs::read(host.block_file("disk")).unwrap();
        assert_eq!(sha(&device[..MIB]), old, "{why}: the old contents");
        assert!(
            device[MIB..].iter().all(|&b| b == 0),
            "{why}: new bytes got in"
        );
    };
    intact(&host, "client gone");

    // The daemon killed -9 mid-copy, then started again: only its temp file
    // is left, and the start removes it.
    let (rt, client) = local_client(&host);
    let (started, mut copying) = tokio::sync::mpsc::unbounded_channel();
    let file = std::fs::File::open(&big).unwrap();
    let upload = rt.spawn(async move {
        client
            .send_file(upload_request("disk"), file, |p| {
                let _ = started.send(p);
            })
            .await
    });
    rt.block_on(copying.recv()).unwrap();
    host.signal_daemon(Signal::SIGKILL);
    assert!(rt.block_on(upload).unwrap().is_err());
    host.start(&[]);
    intact(&host, "daemon killed");
}

/// The attack the first protocol let through: a request named a descriptor
/// number, and the daemon took that descriptor out of the process that had
/// connected, with root's rights. A group member who connected and then
/// became root (exec of a setuid program holding `/etc/shadow` open) could
/// copy any root-only file into a block device it may download. Now a file
/// reaches the daemon only inside the request's own frame (SCM_RIGHTS),
/// with the rights its sender opened it with: a number in a request gives the
/// daemon nothing, and a request that says it lends a file but sends none is
/// refused. Either way the device keeps its contents.
#[tokio::test]
async fn a_descriptor_number_in_a_request_reads_no_file() {
    use fulmar::api::protocol::{ClientMessage, DaemonMessage, StreamItem};
    use fulmar::wire::{FrameReader, FrameWriter, HANDSHAKE_TIMEOUT, Hello, Peer, handshake};
    use std::os::fd::AsRawFd;
    let mut host = Host::new();
    host.start(&[]);
    let before = pattern(MIB, 71);
    host.device_holding("disk", 1, &before);
    let tmp = tempfile::tempdir().unwrap();
    let secret_path = tmp.path().join("shadow");
    std::fs::write(&secret_path, b"root:$6$not-for-members:19000::::::\n").unwrap();
    std::fs::set_permissions(
        &secret_path,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .unwrap();
    // The file the attacker's process holds open where the request points.
    let secret = std::fs::File::open(&secret_path).unwrap();

    let upload = |lend: serde_json::Value| {
        let mut request =
            serde_json::to_value(ClientMessage::Request(upload_request("disk"))).unwrap();
        let body = request["body"].as_object_mut().unwrap();
        body.insert(
            lend["key"].as_str().unwrap().to_owned(),
            lend["value"].clone(),
        );
        request
    };
    let by_number = upload(serde_json::json!({"key": "local_fd", "value": secret.as_raw_fd()}));
    let flag_alone = upload(serde_json::json!({"key": "lend", "value": true}));
    for (what, request) in [
        ("a descriptor number", by_number),
        ("the flag alone", flag_alone),
    ] {
        let stream = tokio::net::UnixStream::connect(host.socket())
            .await
            .unwrap();
        let (read, write) = stream.into_split();
        let (mut reader, mut writer) = (FrameReader::new(read), FrameWriter::new(write));
        handshake(
            Peer::Daemon,
            &mut reader,
            &mut writer,
            &Hello::ours("attacker"),
            HANDSHAKE_TIMEOUT,
        )
        .await
        .unwrap();
        writer.send_json(1, &request).await.unwrap();
        writer.flush().await.unwrap();
        let frame = reader.next().await.unwrap().expect("an answer");
        match frame.json::<DaemonMessage>().unwrap() {
            DaemonMessage::Item(StreamItem::Progress { .. }) => {
                panic!("{what}: the daemon copied a file nobody sent it")
            }
            DaemonMessage::Error(e) => assert!(
                e.message.contains("no file came with it"),
                "{what}: {}",
                e.message
            ),
            // Waiting for data frames, as for any upload without a file.
            DaemonMessage::Credit { .. } => assert_eq!(what, "a descriptor number"),
            other => panic!("{what}: the daemon answered {other:?}"),
        }
        // The attacker goes away without sending data: nothing is replaced.
        drop((reader, writer));
    }
    support::daemon::eventually("the aborted uploads to clean up", || {
        host.block_files() == ["disk"]
    });
    assert_eq!(sha_of(&host.block_file("disk")), sha(&before));
    drop(secret);
}

/// Stdout opened to append (`>>`) is never lent (the daemon writes by
/// offset): its download goes through the socket and appends.
#[test]
fn stdout_opened_to_append_takes_the_socket_path() {
    let mut host = Host::new();
    host.start(&[]);
    let want = pattern(MIB, 70);
    host.device_holding("disk", 1, &want);
    let tmp = tempfile::tempdir().unwrap();
    let appended = tmp.path().join("appended");
    std::fs::write(&appended, b"before").unwrap();
    let stdout = std::fs::OpenOptions::new()
        .append(true)
        .open(&appended)
        .unwrap();
    let out = host
        .command(&["--no-start", "block", "download", "disk", "-"])
        .stdout(stdout)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha_of(&appended), sha(&[&b"before"[..], &want].concat()));
}
