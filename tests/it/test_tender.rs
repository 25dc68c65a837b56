//! The test tender (a test double for solo5-hvt / solo5-spt) behaves as a
//! Solo5 tender does, so that tests built on it test something real.

use crate::support;

use fulmar::api::image::Target;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};
use support::images;
use support::tender::Tenders;

const ALL_NAMES: [&str; 4] = ["solo5-hvt", "solo5-spt", "solo5-hvt.2", "solo5-spt.2"];

fn run(tenders: &Tenders, name: &str, args: &[&OsString]) -> Output {
    command(tenders, name, args).output().unwrap()
}

fn command(tenders: &Tenders, name: &str, args: &[&OsString]) -> Command {
    let mut cmd = Command::new(tenders.tender(name));
    cmd.args(args)
        .env_remove("FULMAR_TEST_TENDER_ABI")
        .stdin(Stdio::null());
    cmd
}

fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A block file of `len` bytes in a temporary directory.
fn block_file(len: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("storage.img");
    std::fs::File::create(&path).unwrap().set_len(len).unwrap();
    (dir, path)
}

/// Whether `lo` is up here, so it can stand in for a tap.
fn lo_is_up() -> bool {
    let flags = std::fs::read_to_string("/sys/class/net/lo/flags").unwrap_or_default();
    u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).is_ok_and(|f| f & 1 != 0)
}

fn assert_tender_error(out: &Output, prefix: &str, mentions: &str) {
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("{prefix}: ")) && err.contains(mentions),
        "stderr {err:?} should start with {prefix:?} and mention {mentions:?}"
    );
    assert!(
        out.stdout.is_empty(),
        "no guest output: {}",
        text(&out.stdout)
    );
}

#[test]
fn version_prints_its_abi_to_stderr() {
    let tenders = Tenders::install(&ALL_NAMES);
    for name in ["solo5-hvt", "solo5-spt.2"] {
        let out = run(&tenders, name, &[&os("--version")]);
        assert!(out.status.success());
        assert!(out.stdout.is_empty());
        assert_eq!(
            text(&out.stderr),
            format!("{name} tender, version v0.12.1-fulmar-test-double\nABI version 2\n")
        );
        assert_eq!(fulmar::host::tender::probe(&tenders.tender(name)), Ok(2));
    }
    let out = command(&tenders, "solo5-hvt", &[&os("--version")])
        .env("FULMAR_TEST_TENDER_ABI", "3")
        .output()
        .unwrap();
    assert!(text(&out.stderr).ends_with("\nABI version 3\n"));
}

#[test]
fn help_and_unknown_names_exit_1() {
    let tenders = Tenders::install(&["solo5-hvt", "fulmar-test-tender"]);
    let out = run(&tenders, "solo5-hvt", &[&os("--help")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("TEST DOUBLE"));
    let out = run(&tenders, "fulmar-test-tender", &[&os("--version")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("TEST DOUBLE"));
    let out = run(&tenders, "solo5-hvt", &[&os("--bogus"), &os("--")]);
    assert_tender_error(&out, "solo5-hvt", "--bogus");
}

#[test]
fn accepts_exactly_the_manifest_devices_and_reports_them() {
    if !lo_is_up() {
        eprintln!("skipped: no `lo` that is up to stand in for a tap");
        return;
    }
    let tenders = Tenders::install(&ALL_NAMES);
    let image = os(images::block_and_net(Target::Hvt).path());
    let (_dir, block) = block_file(1 << 20);
    let args = [
        os("--mem=64"),
        os("--net:service0=lo"),
        os("--net-mac:service0=00:80:41:cd:8a:eb"),
        os(format!("--block:storage={}", block.display())),
        os("--block-sector-size:storage=4096"),
        os("--"),
        image.clone(),
        os("print=hello"),
    ];
    let out = run(&tenders, "solo5-hvt", &args.iter().collect::<Vec<_>>());
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let mut expected = format!(
        "fulmar-test-tender: hvt ABI 2\nargv[0]={}\n",
        tenders.tender("solo5-hvt").display()
    );
    for (i, a) in args.iter().enumerate() {
        expected += &format!("argv[{}]={}\n", i + 1, a.to_string_lossy());
    }
    expected += &format!(
        "mem=64\nnet:service0 tap=lo mac=00:80:41:cd:8a:eb\nblock:storage path={} sector=4096\n\
         fulmar-test-tender: guest starts\nhello\n",
        block.display()
    );
    assert_eq!(text(&out.stdout), expected);
    assert!(out.stderr.is_empty());
}

#[test]
fn refuses_argv_that_does_not_match_the_manifest() {
    let tenders = Tenders::install(&ALL_NAMES);
    let image = os(images::block_and_net(Target::Hvt).path());
    let (_dir, block) = block_file(1 << 20);
    let block_arg = |name: &str| os(format!("--block:{name}={}", block.display()));
    let net_arg = |name: &str| os(format!("--net:{name}=lo"));
    let cases: Vec<(&str, Vec<OsString>)> = vec![
        ("service0", vec![block_arg("storage")]),
        ("storage", vec![net_arg("service0")]),
        (
            "extra",
            vec![
                net_arg("service0"),
                block_arg("storage"),
                block_arg("extra"),
            ],
        ),
        (
            "extra",
            vec![net_arg("service0"), block_arg("storage"), net_arg("extra")],
        ),
        ("storage", vec![net_arg("storage"), block_arg("service0")]),
        (
            "storage",
            vec![
                net_arg("service0"),
                block_arg("storage"),
                block_arg("storage"),
            ],
        ),
        (
            "other",
            vec![
                net_arg("service0"),
                block_arg("storage"),
                os("--net-mac:other=00:80:41:00:00:01"),
            ],
        ),
        (
            "other",
            vec![
                net_arg("service0"),
                block_arg("storage"),
                os("--block-sector-size:other=512"),
            ],
        ),
    ];
    for (mentions, mut args) in cases {
        args.extend([os("--"), image.clone()]);
        let out = run(&tenders, "solo5-hvt", &args.iter().collect::<Vec<_>>());
        assert_tender_error(&out, "solo5-hvt", mentions);
    }
}

#[test]
fn refuses_an_image_of_another_target_abi_or_packing() {
    let tenders = Tenders::install(&ALL_NAMES);
    let hvt = os(images::no_devices(Target::Hvt).path());
    let spt = os(images::no_devices(Target::Spt).path());
    let abi3 = os(images::no_devices(Target::Hvt).with_abi(3).path());
    let zlib = os(images::no_devices(Target::Hvt).zlib_path());
    for (name, image, mentions) in [
        ("solo5-hvt", &spt, "spt"),
        ("solo5-spt", &hvt, "hvt"),
        ("solo5-hvt", &abi3, "ABI version 3"),
        ("solo5-hvt", &zlib, "zlib"),
    ] {
        let out = run(&tenders, name, &[&os("--"), image]);
        assert_tender_error(&out, &name[..9], mentions);
    }
    let out = command(&tenders, "solo5-hvt", &[&os("--"), &abi3])
        .env("FULMAR_TEST_TENDER_ABI", "3")
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let out = command(&tenders, "solo5-hvt", &[&os("--"), &hvt])
        .env("FULMAR_TEST_TENDER_ABI", "3")
        .output()
        .unwrap();
    assert_tender_error(&out, "solo5-hvt", "ABI");
}

#[test]
fn checks_block_sizes_and_sector_sizes() {
    let tenders = Tenders::install(&ALL_NAMES);
    let image = os(images::one_block(Target::Spt).path());
    let (_dir, mib) = block_file(1 << 20);
    let (_dir2, odd) = block_file(1000);
    let run_with = |block: &Path, sector: Option<&str>| {
        let mut args = vec![os(format!("--block:storage={}", block.display()))];
        args.extend(sector.map(|s| os(format!("--block-sector-size:storage={s}"))));
        args.extend([os("--"), image.clone()]);
        run(&tenders, "solo5-spt", &args.iter().collect::<Vec<_>>())
    };
    for sector in [None, Some("512"), Some("4096"), Some("1048576")] {
        let out = run_with(&mib, sector);
        assert!(out.status.success(), "{sector:?}: {}", text(&out.stderr));
    }
    assert_tender_error(&run_with(&odd, None), "solo5-spt", "1000");
    for bad in ["256", "1000", "0"] {
        assert_tender_error(&run_with(&mib, Some(bad)), "solo5-spt", bad);
    }
    assert_tender_error(&run_with(&mib, Some("2097152")), "solo5-spt", "2097152");
    let missing = mib.with_file_name("missing.img");
    assert_tender_error(&run_with(&missing, None), "solo5-spt", "missing.img");
}

#[test]
fn checks_that_taps_exist_and_are_up() {
    let tenders = Tenders::install(&ALL_NAMES);
    let image = os(images::one_net(Target::Hvt).path());
    let no_tap = os("--net:service=fulmarnotap0");
    let out = run(&tenders, "solo5-hvt", &[&no_tap, &os("--"), &image]);
    assert_tender_error(&out, "solo5-hvt", "fulmarnotap0");

    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped the down-tap case: needs root for a network namespace");
        return;
    }
    // In a fresh network namespace `lo` exists but is down; `ip netns exec`
    // mounts that namespace's sysfs for the command it runs.
    let ns = NetNs::new();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(tenders.tender("solo5-hvt"))
        .args(["--net:service=lo", "--"])
        .arg(&image)
        .env_remove("FULMAR_TEST_TENDER_ABI")
        .output()
        .unwrap();
    assert_tender_error(&out, "solo5-hvt", "down");
}

/// A network namespace of its own, removed when dropped.
struct NetNs(String);

impl NetNs {
    fn new() -> NetNs {
        let name = format!("fulmar-tt-{}", std::process::id());
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(status.success(), "ip netns add {name}");
        NetNs(name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn hvt_refuses_more_than_4096_mb() {
    let tenders = Tenders::install(&ALL_NAMES);
    for (name, target, mem, ok) in [
        ("solo5-hvt", Target::Hvt, "4096", true),
        ("solo5-hvt", Target::Hvt, "4097", false),
        ("solo5-spt", Target::Spt, "8192", true),
    ] {
        let image = os(images::no_devices(target).path());
        let out = run(
            &tenders,
            name,
            &[&os(format!("--mem={mem}")), &os("--"), &image],
        );
        if ok {
            assert!(out.status.success(), "{name} {mem}: {}", text(&out.stderr));
            assert!(text(&out.stdout).contains(&format!("\nmem={mem}\n")));
        } else {
            assert_tender_error(&out, name, mem);
        }
    }
}

#[test]
fn passes_arguments_verbatim_and_prints_unknown_steps() {
    let tenders = Tenders::install(&ALL_NAMES);
    let image = os(images::no_devices(Target::Spt).path());
    let odd: Vec<OsString> = vec![
        os("two words"),
        os("it's \"quoted\""),
        os("a;b && c | d"),
        os("$(touch /tmp/fulmar-pwned) `id`"),
        os(""),
        os("*"),
        OsString::from_vec(b"not utf-8 \xff".to_vec()),
    ];
    let mut args = vec![os("--"), image.clone()];
    args.extend(odd.iter().cloned());
    let out = run(&tenders, "solo5-spt.2", &args.iter().collect::<Vec<_>>());
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let mut expected = b"fulmar-test-tender: spt ABI 2\n".to_vec();
    let argv0 = tenders.tender("solo5-spt.2").into_os_string();
    for (i, a) in std::iter::once(&argv0).chain(&args).enumerate() {
        expected.extend(format!("argv[{i}]=").bytes());
        expected.extend(a.as_encoded_bytes());
        expected.push(b'\n');
    }
    expected.extend(b"mem=512\n");
    expected.extend(BANNER_END);
    for a in &odd {
        expected.extend(a.as_encoded_bytes());
        expected.push(b'\n');
    }
    assert_eq!(text(&out.stdout), text(&expected));
    assert_eq!(out.stdout, expected);
}

/// Runs a device-less hvt image with `steps` and returns what it did.
fn script(tenders: &Tenders, name: &str, steps: &[&str]) -> Output {
    let target = if name.starts_with("solo5-hvt") {
        Target::Hvt
    } else {
        Target::Spt
    };
    let mut args = vec![os("--"), os(images::no_devices(target).path())];
    args.extend(steps.iter().map(os));
    run(tenders, name, &args.iter().collect::<Vec<_>>())
}

const BANNER_END: &[u8] = b"fulmar-test-tender: guest starts\n";

/// The guest's output: stdout after the banner.
fn guest_output(out: &Output) -> Vec<u8> {
    let at = out
        .stdout
        .windows(BANNER_END.len())
        .position(|w| w == BANNER_END)
        .expect("banner");
    out.stdout[at + BANNER_END.len()..].to_vec()
}

#[test]
fn script_exit_codes() {
    let tenders = Tenders::install(&ALL_NAMES);
    for (steps, code) in [
        (&["print=bye"][..], 0),
        (&["exit=0"][..], 0),
        (&["exit=3", "print=never"][..], 3),
        (&["exit=263"][..], 7),
        (&["exit=-1"][..], 255),
        (&["abort"][..], 255),
        (&["sleep=1", "exit=42"][..], 42),
    ] {
        for name in ["solo5-hvt", "solo5-spt"] {
            let out = script(&tenders, name, steps);
            assert_eq!(out.status.code(), Some(code), "{name} {steps:?}");
            assert!(!text(&guest_output(&out)).contains("never"));
        }
    }
}

#[test]
fn script_output_steps() {
    let tenders = Tenders::install(&ALL_NAMES);
    let out = script(&tenders, "solo5-hvt", &["print=one", "escape", "print=two"]);
    assert!(out.status.success());
    let guest = guest_output(&out);
    assert!(guest.starts_with(b"one\n\x1b]0;"));
    assert!(guest.ends_with(b"\x1b[0m\ntwo\n"));
    for needle in [
        &b"\x07"[..],
        b"\x1b[2J",
        b"\x1b[31m",
        b"\x1b[5;10H",
        b"\x1b]52;",
    ] {
        assert!(
            guest.windows(needle.len()).any(|w| w == needle),
            "{needle:?}"
        );
    }

    let out = script(&tenders, "solo5-spt", &["burst=10000", "print=end"]);
    let lines: Vec<String> = text(&guest_output(&out))
        .lines()
        .map(String::from)
        .collect();
    let expected: Vec<String> = (1..=10000)
        .map(|i| format!("burst {i}"))
        .chain(["end".to_owned()])
        .collect();
    assert_eq!(lines, expected);

    for n in [0usize, 1, 64, 100_001] {
        let out = script(&tenders, "solo5-hvt", &[&format!("burst-bytes={n}")]);
        let guest = guest_output(&out);
        assert_eq!(guest.len(), n);
        assert!(
            guest
                .chunks(64)
                .all(|c| c.iter().take(63).all(|&b| b == b'x'))
        );
        assert_eq!(guest.iter().filter(|&&b| b == b'\n').count(), n / 64);
    }
}

#[test]
fn script_writes_and_reads_its_block_device() {
    let tenders = Tenders::install(&ALL_NAMES);
    let image = os(images::one_block(Target::Hvt).path());
    let (_dir, block) = block_file(4096);
    let args = [
        os(format!("--block:storage={}", block.display())),
        os("--"),
        image,
        os("block-write=storage:1000:hello: world"),
        os("block-read=storage:998:16"),
    ];
    let out = run(&tenders, "solo5-hvt", &args.iter().collect::<Vec<_>>());
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let data = std::fs::read(&block).unwrap();
    assert_eq!(data.len(), 4096);
    assert_eq!(&data[1000..1012], b"hello: world");
    assert!(data[..1000].iter().chain(&data[1012..]).all(|&b| b == 0));
    let guest = guest_output(&out);
    assert!(guest.starts_with(b"block-read storage:998:\0\0hello: world\0\0\n"));
}

#[test]
fn bad_script_steps_are_tender_errors() {
    let tenders = Tenders::install(&ALL_NAMES);
    for (step, mentions) in [
        ("exit=abc", "exit=abc"),
        ("burst=-1", "burst=-1"),
        ("block-write=storage:0:x", "--block"),
        ("block-read=storage", "block-read"),
        ("raise=999", "raise=999"),
    ] {
        let out = script(&tenders, "solo5-hvt", &[step]);
        assert_tender_error(&out, "solo5-hvt", mentions);
    }
}

#[test]
fn guest_faults_and_signals_end_it_as_each_target_does() {
    let tenders = Tenders::install(&ALL_NAMES);
    let out = script(&tenders, "solo5-hvt", &["segv"]);
    assert_eq!(out.status.code(), Some(255));
    let out = script(&tenders, "solo5-spt", &["segv"]);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV));
    for name in ["solo5-hvt", "solo5-spt"] {
        let out = script(&tenders, name, &["raise=31"]);
        assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{name}");
    }
}

/// Starts a tender that sleeps forever once it has printed `ready`.
fn start_sleeper(tenders: &Tenders, name: &str, target: Target) -> Child {
    let mut child = command(
        tenders,
        name,
        &[
            &os("--"),
            &os(images::no_devices(target).path()),
            &os("print=ready"),
            &os("sleep-forever"),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while line != "ready\n" {
        line.clear();
        assert_ne!(
            stdout.read_line(&mut line).unwrap(),
            0,
            "tender exited early"
        );
    }
    child
}

/// Waits for `child`, killing it (and failing) if it hangs: a guard, not a timing check.
fn wait(mut child: Child) -> (ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status, err);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the test tender did not end");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigterm_and_sigint_end_hvt_with_1_and_kill_spt() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let tenders = Tenders::install(&ALL_NAMES);
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let hvt = start_sleeper(&tenders, "solo5-hvt", Target::Hvt);
        kill(Pid::from_raw(hvt.id() as i32), sig).unwrap();
        let (status, err) = wait(hvt);
        assert_eq!(status.code(), Some(1), "{sig}");
        assert_eq!(
            err,
            format!("solo5-hvt: Exiting on signal {}\n", sig as i32)
        );

        let spt = start_sleeper(&tenders, "solo5-spt", Target::Spt);
        kill(Pid::from_raw(spt.id() as i32), sig).unwrap();
        let (status, err) = wait(spt);
        assert_eq!(status.signal(), Some(sig as i32), "{sig}");
        assert!(err.is_empty());
    }
}
