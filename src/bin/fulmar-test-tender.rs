//! fulmar-test-tender: a TEST DOUBLE for Solo5's `solo5-hvt` and `solo5-spt`.
//!
//! It runs no guest. fulmar's test suite links it into a temporary directory as
//! `solo5-hvt`, `solo5-spt` or `solo5-hvt.2` and puts that directory on PATH; it
//! takes its target from the name it runs under and otherwise behaves as
//! a Solo5 tender does. Never install it under a tender's name on a host.
//!
//! Command line, as a tender's:
//!
//! ```text
//! solo5-hvt [--mem=MB] [--net:NAME=TAP]... [--net-mac:NAME=HWADDR]...
//!           [--block:NAME=PATH]... [--block-sector-size:NAME=N]... [--] KERNEL [ARGS...]
//! solo5-hvt --version      stderr: "solo5-hvt tender, version ...", "ABI version N"; exit 0
//! solo5-hvt --help         usage on stderr; exit 1
//! ```
//!
//! The ABI version is 2 unless `FULMAR_TEST_TENDER_ABI` says otherwise (to fake a
//! tender of another Solo5 release). It exits 1 with `solo5-<target>: ...` on
//! stderr, as a tender does on any tender-side error, unless: KERNEL is a plain
//! (not zlib) Solo5 image for its target and ABI version; the `--net:` and
//! `--block:` options name exactly the manifest's devices, each once and with the
//! right kind; each tap exists and is up; each block file opens for reading and
//! writing and its size is a multiple of its sector size (a power of two >= 512, default 512); hvt gets at most 4096 MB;
//! and the guest script below parses.
//!
//! Then it writes to stdout (the guest console) a banner, `fulmar-test-tender:
//! TARGET ABI N`, every argument it received as `argv[I]=ARG` exactly as received,
//! `mem=MB`, its devices (`net:NAME tap=TAP mac=HWADDR|none`, `block:NAME
//! path=PATH sector=N`) and `fulmar-test-tender: guest starts`. Then it runs
//! ARGS, one step per argument, as the guest's script:
//!
//! | step | what the "guest" does |
//! |---|---|
//! | `print=TEXT` | prints TEXT and a newline |
//! | `escape` | prints [`ESCAPES`]: window title (OSC 0), clipboard write (OSC 52), clear screen, cursor moves, colours, BEL |
//! | `burst=N` | prints lines `burst 1` .. `burst N` as fast as it can |
//! | `burst-bytes=N` | writes exactly N bytes as fast as it can: lines of 63 `x` and a newline, the last one cut short |
//! | `block-write=DEV:OFFSET:TEXT` | writes TEXT at byte OFFSET of block device DEV |
//! | `block-read=DEV:OFFSET:LEN` | prints `block-read DEV:OFFSET:` and the LEN bytes found there |
//! | `sleep=MS` | sleeps MS milliseconds |
//! | `sleep-forever` | sleeps until a signal ends it |
//! | `hang` | stops answering SIGTERM and SIGINT, says `fulmar-test-tender: hung`, then sleeps: only SIGKILL ends it |
//! | `exit=N` | exits with N & 0xff, as `solo5_exit(N)` |
//! | `abort` | exits 255, as `solo5_abort()` |
//! | `segv` | a guest fault: hvt exits 255 ("Fatal trap"), spt is killed by SIGSEGV |
//! | `raise=SIG` | is killed by signal number SIG (e.g. 31, SIGSYS, for a seccomp violation) |
//! | anything else | printed as it is |
//!
//! After the last step it exits 0. On SIGTERM or SIGINT, hvt prints `solo5-hvt:
//! Exiting on signal N` to stderr and exits 1; spt is killed by the signal.

use fulmar::api::image::{DeviceKind, Target};
use fulmar::host::image::{self, Compression};
use nix::sys::signal::{self, SigHandler, SigSet, Signal};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const VERSION: &str = "v0.12.1-fulmar-test-double";
const ABI_ENV: &str = "FULMAR_TEST_TENDER_ABI";
const DEFAULT_ABI: u32 = 2;
const HVT_MAX_MEM_MB: u64 = 4096;
const DEFAULT_MEM_MB: u64 = 512;
const DEFAULT_SECTOR: u64 = 512;

/// What `escape` prints: a title, a clipboard write, clear and home, red, bold
/// underlined green, a 256-colour, a cursor move, BEL, a reset and a newline.
const ESCAPES: &[u8] = b"\x1b]0;fulmar test title\x07\x1b]52;c;ZnVsbWFy\x07\x1b[2J\x1b[H\
\x1b[31mred\x1b[0m \x1b[1;4;32mbold green\x1b[0m \x1b[38;5;208morange\x1b[0m\
\x1b[5;10Hmoved\x07\x1b[0m\n";

/// The banner's last line: what follows is the guest script's output.
const BANNER_END: &str = "fulmar-test-tender: guest starts";

const USAGE: &str = "\
fulmar-test-tender: a TEST DOUBLE for solo5-hvt / solo5-spt, used by fulmar's test suite.
It runs no guest and must never be installed as a tender.
Run it as solo5-hvt* or solo5-spt* (a symlink): it takes its target from that name.
usage: solo5-hvt [--mem=MB] [--net:NAME=TAP]... [--net-mac:NAME=HWADDR]...
                 [--block:NAME=PATH]... [--block-sector-size:NAME=N]... [--] KERNEL [ARGS...]
       solo5-hvt --version";

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let invoked = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(target) = target_of(&invoked) else {
        eprintln!("{USAGE}\n(invoked as {invoked:?}, which names no target)");
        return ExitCode::from(1);
    };
    let me = format!("solo5-{target}");
    if let Err(e) = set_up_signals(target, &me) {
        eprintln!("{me}: cannot set up signal handling: {e}");
        return ExitCode::from(1);
    }
    match run(target, &invoked, &argv) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{me}: {e}");
            ExitCode::from(1)
        }
    }
}

fn target_of(invoked: &str) -> Option<Target> {
    [Target::Hvt, Target::Spt]
        .into_iter()
        .find(|t| invoked.starts_with(&format!("solo5-{t}")))
}

fn abi_version() -> Result<u32, String> {
    match std::env::var(ABI_ENV) {
        Err(_) => Ok(DEFAULT_ABI),
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{ABI_ENV}={v:?} is not an ABI version number")),
    }
}

fn run(target: Target, invoked: &str, argv: &[OsString]) -> Result<ExitCode, String> {
    let abi = abi_version()?;
    let opts = match parse_args(argv.get(1..).unwrap_or_default())? {
        Parsed::Version => {
            eprintln!("{invoked} tender, version {VERSION}\nABI version {abi}");
            return Ok(ExitCode::SUCCESS);
        }
        Parsed::Help => {
            eprintln!("{USAGE}");
            return Ok(ExitCode::from(1));
        }
        Parsed::Run(opts) => opts,
    };
    check(target, abi, &opts)?;
    let steps = opts
        .args
        .iter()
        .map(|a| Step::parse(a, &opts))
        .collect::<Result<Vec<_>, _>>()?;
    let mut console = io::stdout().lock();
    banner(&mut console, target, abi, argv, &opts).map_err(console_error)?;
    for step in &steps {
        if let Some(code) = step.run(&mut console, target).map_err(console_error)? {
            return Ok(code);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn console_error(e: io::Error) -> String {
    format!("cannot write to the console: {e}")
}

#[derive(Default)]
struct Options {
    mem_mb: Option<u64>,
    nets: Vec<(String, String)>,
    macs: Vec<(String, String)>,
    blocks: Vec<(String, PathBuf)>,
    sector_sizes: Vec<(String, u64)>,
    kernel: PathBuf,
    args: Vec<OsString>,
}

impl Options {
    fn block_path(&self, dev: &str) -> Option<&Path> {
        self.blocks
            .iter()
            .find(|(n, _)| n == dev)
            .map(|(_, p)| p.as_path())
    }

    fn sector_size(&self, dev: &str) -> u64 {
        self.sector_sizes
            .iter()
            .find(|(n, _)| n == dev)
            .map_or(DEFAULT_SECTOR, |(_, s)| *s)
    }
}

enum Parsed {
    Version,
    Help,
    Run(Options),
}

fn parse_args(args: &[OsString]) -> Result<Parsed, String> {
    let mut opts = Options::default();
    let mut rest = args.iter();
    let kernel = loop {
        let Some(arg) = rest.next() else {
            return Err("missing KERNEL operand (try --help)".into());
        };
        if arg == "--" {
            break rest
                .next()
                .ok_or("missing KERNEL operand after -- (try --help)")?;
        }
        if !arg.as_bytes().starts_with(b"--") {
            break arg;
        }
        let Some(arg) = arg.to_str() else {
            return Err(format!("invalid option {arg:?}"));
        };
        match arg {
            "--version" => return Ok(Parsed::Version),
            "--help" => return Ok(Parsed::Help),
            _ => parse_option(arg, &mut opts)?,
        }
    };
    opts.kernel = PathBuf::from(kernel);
    opts.args = rest.cloned().collect();
    Ok(Parsed::Run(opts))
}

fn parse_option(arg: &str, opts: &mut Options) -> Result<(), String> {
    let invalid = || format!("invalid option {arg} (try --help)");
    if let Some(mb) = arg.strip_prefix("--mem=") {
        opts.mem_mb = Some(
            mb.parse()
                .map_err(|_| format!("{arg}: not a number of MB"))?,
        );
        return Ok(());
    }
    let (option, value) = arg.split_once('=').ok_or_else(invalid)?;
    let (kind, name) = option.split_once(':').ok_or_else(invalid)?;
    let pair = (name.to_owned(), value);
    match kind {
        "--net" => opts.nets.push((pair.0, pair.1.to_owned())),
        "--net-mac" => opts.macs.push((pair.0, pair.1.to_owned())),
        "--block" => opts.blocks.push((pair.0, PathBuf::from(pair.1))),
        "--block-sector-size" => {
            let n = value.parse().map_err(|_| format!("{arg}: not a number"))?;
            opts.sector_sizes.push((pair.0, n));
        }
        _ => return Err(invalid()),
    }
    Ok(())
}

/// Everything a tender checks before it starts a guest.
fn check(target: Target, abi: u32, opts: &Options) -> Result<(), String> {
    let mem = opts.mem_mb.unwrap_or(DEFAULT_MEM_MB);
    if target == Target::Hvt && mem > HVT_MAX_MEM_MB {
        return Err(format!(
            "--mem={mem}: hvt gives a guest at most {HVT_MAX_MEM_MB} MB"
        ));
    }
    let kernel = opts.kernel.display();
    let img = image::load(&opts.kernel, Compression::Detect).map_err(|e| e.to_string())?;
    let info = img.info;
    if info.compressed {
        return Err(format!(
            "{kernel}: is zlib-compressed; a tender runs the uncompressed ELF"
        ));
    }
    if info.target != target {
        return Err(format!(
            "{kernel}: built for target {}, this tender runs {target}",
            info.target
        ));
    }
    if info.abi_version != abi {
        return Err(format!(
            "{kernel}: ABI version {} is not this tender's ({abi})",
            info.abi_version
        ));
    }
    check_devices(&info.devices, opts)?;
    opts.nets.iter().try_for_each(|(_, tap)| check_tap(tap))?;
    opts.blocks
        .iter()
        .try_for_each(|(name, path)| check_block(path, opts.sector_size(name)))
}

fn check_devices(manifest: &[fulmar::api::image::Device], opts: &Options) -> Result<(), String> {
    let given: Vec<(&str, DeviceKind)> = opts
        .nets
        .iter()
        .map(|(n, _)| (n.as_str(), DeviceKind::Net))
        .chain(
            opts.blocks
                .iter()
                .map(|(n, _)| (n.as_str(), DeviceKind::Block)),
        )
        .collect();
    for (i, &(name, kind)) in given.iter().enumerate() {
        if given[..i].iter().any(|&(n, _)| n == name) {
            return Err(format!("device {name:?} is given more than once"));
        }
        match manifest.iter().find(|d| d.name == name) {
            None => return Err(format!("the image's manifest declares no device {name:?}")),
            Some(d) if d.kind != kind => {
                return Err(format!(
                    "device {name:?} is a {} device in the manifest, given as --{kind}:",
                    d.kind
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(d) = manifest
        .iter()
        .find(|d| !given.iter().any(|&(n, _)| n == d.name))
    {
        return Err(format!(
            "the manifest declares {} device {:?}, which is not given: pass --{}:{}=...",
            d.kind, d.name, d.kind, d.name
        ));
    }
    if let Some((name, _)) = opts
        .macs
        .iter()
        .find(|(n, _)| !opts.nets.iter().any(|(m, _)| m == n))
    {
        return Err(format!("--net-mac:{name} names no --net: device"));
    }
    if let Some((name, _)) = opts
        .sector_sizes
        .iter()
        .find(|(n, _)| opts.block_path(n).is_none())
    {
        return Err(format!(
            "--block-sector-size:{name} names no --block: device"
        ));
    }
    Ok(())
}

/// The tap must exist and be up (IFF_UP in its sysfs flags). sysfs shows the
/// network namespace it was mounted in, as for fulmar's own net code: tests that
/// make taps in a namespace of their own mount sysfs there (`ip netns exec` does).
fn check_tap(tap: &str) -> Result<(), String> {
    if tap.starts_with('@') {
        return Err(format!(
            "--net:...={tap}: taps by descriptor are broken in v0.12.1"
        ));
    }
    if tap.is_empty() || tap.contains('/') || tap == "." || tap == ".." {
        return Err(format!("{tap:?} is not an interface name"));
    }
    let flags_file = Path::new("/sys/class/net").join(tap).join("flags");
    let flags = std::fs::read_to_string(&flags_file)
        .map_err(|e| format!("tap {tap} does not exist ({}: {e})", flags_file.display()))?;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16)
        .map_err(|_| format!("tap {tap}: unreadable flags {flags:?}"))?;
    if flags & libc::IFF_UP as u32 == 0 {
        return Err(format!("tap {tap} is down"));
    }
    Ok(())
}

fn check_block(path: &Path, sector: u64) -> Result<(), String> {
    if sector < 512 || !sector.is_power_of_two() {
        return Err(format!("sector size {sector} is not a power of two >= 512"));
    }
    // Opened as a tender opens it, so a file its user may not write fails here.
    let len = File::options()
        .read(true)
        .write(true)
        .open(path)
        .and_then(|f| f.metadata())
        .map_err(|e| format!("block {}: {e}", path.display()))?
        .len();
    if len % sector != 0 {
        return Err(format!(
            "block {}: size {len} is not a multiple of the sector size {sector}",
            path.display()
        ));
    }
    Ok(())
}

fn banner(
    out: &mut impl Write,
    target: Target,
    abi: u32,
    argv: &[OsString],
    opts: &Options,
) -> io::Result<()> {
    writeln!(out, "fulmar-test-tender: {target} ABI {abi}")?;
    for (i, arg) in argv.iter().enumerate() {
        write!(out, "argv[{i}]=")?;
        out.write_all(arg.as_bytes())?;
        out.write_all(b"\n")?;
    }
    writeln!(out, "mem={}", opts.mem_mb.unwrap_or(DEFAULT_MEM_MB))?;
    for (name, tap) in &opts.nets {
        let mac = opts
            .macs
            .iter()
            .find(|(n, _)| n == name)
            .map_or("none", |(_, m)| m);
        writeln!(out, "net:{name} tap={tap} mac={mac}")?;
    }
    for (name, path) in &opts.blocks {
        let sector = opts.sector_size(name);
        writeln!(out, "block:{name} path={} sector={sector}", path.display())?;
    }
    writeln!(out, "{BANNER_END}")?;
    out.flush()
}

/// One step of the guest script (see the module documentation).
enum Step {
    Print(Vec<u8>),
    Escape,
    Burst(u64),
    BurstBytes(u64),
    BlockWrite {
        path: PathBuf,
        offset: u64,
        text: Vec<u8>,
    },
    BlockRead {
        label: String,
        path: PathBuf,
        offset: u64,
        len: usize,
    },
    Sleep(Duration),
    SleepForever,
    Hang,
    Exit(u8),
    Abort,
    Segv,
    Raise(Signal),
}

impl Step {
    fn parse(arg: &OsStr, opts: &Options) -> Result<Step, String> {
        let bytes = arg.as_bytes();
        let (word, value) = match bytes.iter().position(|&b| b == b'=') {
            Some(i) => (&bytes[..i], Some(&bytes[i + 1..])),
            None => (bytes, None),
        };
        let bad = |why: &str| format!("test script step {arg:?}: {why}");
        let text = || std::str::from_utf8(value.unwrap_or_default()).map_err(|_| bad("not UTF-8"));
        let number = |v: &str| v.parse::<u64>().map_err(|_| bad("not a number"));
        let block = |dev: &str| {
            opts.block_path(dev)
                .map(Path::to_path_buf)
                .ok_or_else(|| bad("no such --block: device"))
        };
        Ok(match (word, value) {
            (b"print", Some(v)) => Step::Print(v.to_vec()),
            (b"escape", None) => Step::Escape,
            (b"burst", Some(_)) => Step::Burst(number(text()?)?),
            (b"burst-bytes", Some(_)) => Step::BurstBytes(number(text()?)?),
            (b"block-write", Some(v)) => {
                let mut parts = v.splitn(3, |&b| b == b':');
                let (Some(dev), Some(offset), Some(text)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(bad("want block-write=DEV:OFFSET:TEXT"));
                };
                Step::BlockWrite {
                    path: block(&String::from_utf8_lossy(dev))?,
                    offset: number(&String::from_utf8_lossy(offset))?,
                    text: text.to_vec(),
                }
            }
            (b"block-read", Some(_)) => {
                let spec = text()?;
                let [dev, offset, len] = spec.splitn(3, ':').collect::<Vec<_>>()[..] else {
                    return Err(bad("want block-read=DEV:OFFSET:LEN"));
                };
                Step::BlockRead {
                    label: format!("{dev}:{offset}"),
                    path: block(dev)?,
                    offset: number(offset)?,
                    len: usize::try_from(number(len)?).map_err(|_| bad("too long"))?,
                }
            }
            (b"sleep", Some(_)) => Step::Sleep(Duration::from_millis(number(text()?)?)),
            (b"sleep-forever", None) => Step::SleepForever,
            (b"hang", None) => Step::Hang,
            (b"exit", Some(_)) => {
                let n: i64 = text()?.parse().map_err(|_| bad("not a number"))?;
                Step::Exit((n & 0xff) as u8)
            }
            (b"abort", None) => Step::Abort,
            (b"segv", None) => Step::Segv,
            (b"raise", Some(_)) => {
                let n: i32 = text()?.parse().map_err(|_| bad("not a signal number"))?;
                Step::Raise(Signal::try_from(n).map_err(|_| bad("not a signal number"))?)
            }
            _ => Step::Print(bytes.to_vec()),
        })
    }

    /// Runs the step; `Some(code)` when the guest exits with it.
    fn run(&self, out: &mut impl Write, target: Target) -> io::Result<Option<ExitCode>> {
        match self {
            Step::Print(text) => {
                out.write_all(text)?;
                out.write_all(b"\n")?;
            }
            Step::Escape => out.write_all(ESCAPES)?,
            Step::Burst(n) => {
                let mut fast = BufWriter::with_capacity(1 << 16, &mut *out);
                for i in 1..=*n {
                    writeln!(fast, "burst {i}")?;
                }
                fast.flush()?;
            }
            Step::BurstBytes(n) => burst_bytes(out, *n)?,
            Step::BlockWrite { path, offset, text } => {
                let file = File::options().write(true).open(path)?;
                file.write_all_at(text, *offset)?;
                file.sync_data()?;
            }
            Step::BlockRead {
                label,
                path,
                offset,
                len,
            } => {
                let mut buf = vec![0; *len];
                File::open(path)?.read_exact_at(&mut buf, *offset)?;
                write!(out, "block-read {label}:")?;
                out.write_all(&buf)?;
                out.write_all(b"\n")?;
            }
            Step::Sleep(d) => {
                out.flush()?;
                std::thread::sleep(*d);
            }
            Step::SleepForever => {
                out.flush()?;
                loop {
                    std::thread::park();
                }
            }
            Step::Hang => hang(out)?,
            Step::Exit(code) => return Ok(Some(ExitCode::from(*code))),
            Step::Abort => {
                writeln!(out, "fulmar-test-tender: abort")?;
                return Ok(Some(ExitCode::from(255)));
            }
            Step::Segv if target == Target::Hvt => {
                writeln!(out, "fulmar-test-tender: Fatal trap (segv)")?;
                return Ok(Some(ExitCode::from(255)));
            }
            Step::Segv => die_by(out, Signal::SIGSEGV)?,
            Step::Raise(sig) => die_by(out, *sig)?,
        }
        out.flush()?;
        Ok(None)
    }
}

fn burst_bytes(out: &mut impl Write, n: u64) -> io::Result<()> {
    const LINE: &[u8; 64] = b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n";
    let mut fast = BufWriter::with_capacity(1 << 16, &mut *out);
    let mut left = n;
    while left > 0 {
        let take = usize::try_from(left.min(LINE.len() as u64)).unwrap_or(LINE.len());
        fast.write_all(&LINE[..take])?;
        left -= take as u64;
    }
    fast.flush()
}

/// Ends the process by `sig` with its default action, as the kernel would.
fn die_by(out: &mut impl Write, sig: Signal) -> io::Result<()> {
    out.flush()?;
    // SIGKILL and SIGSTOP cannot be reset; their default action is the only one.
    let _ = reset_to_default(sig);
    let mut set = SigSet::empty();
    set.add(sig);
    set.thread_unblock().map_err(io::Error::from)?;
    signal::raise(sig).map_err(io::Error::from)?;
    Err(io::Error::other(format!(
        "signal {sig} did not end the process"
    )))
}

fn reset_to_default(sig: Signal) -> nix::Result<SigHandler> {
    // SAFETY: SIG_DFL runs no code of ours in signal context, so no handler can
    // break async-signal-safety.
    unsafe { signal::signal(sig, SigHandler::SigDfl) }
}

/// hvt turns SIGTERM and SIGINT into a message and exit 1; spt dies by them.
/// Either way the dispositions and mask inherited from the parent are undone
/// first, since an ignored or blocked signal would change what tests see.
fn set_up_signals(target: Target, me: &str) -> nix::Result<()> {
    let mut set = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        reset_to_default(sig)?;
        set.add(sig);
    }
    if target != Target::Hvt {
        return set.thread_unblock();
    }
    // Blocked here, before any thread exists, so every thread inherits the mask
    // and only the waiter below ever receives them.
    set.thread_block()?;
    let me = me.to_owned();
    std::thread::spawn(move || {
        loop {
            match set.wait() {
                Ok(_) if HUNG.load(Ordering::SeqCst) => continue,
                // With nobody reading the console any more, the message is lost
                // but the exit must still happen: write, never panic.
                Ok(sig) => {
                    let _ = writeln!(io::stderr(), "{me}: Exiting on signal {}", sig as i32);
                }
                Err(e) => {
                    let _ = writeln!(io::stderr(), "{me}: cannot wait for signals: {e}");
                }
            }
            std::process::exit(1);
        }
    });
    Ok(())
}

/// Set by `hang`: the hvt signal waiter then swallows SIGTERM and SIGINT.
static HUNG: AtomicBool = AtomicBool::new(false);

/// A tender that no longer reacts to anything but SIGKILL.
/// It says `fulmar-test-tender: hung` once it is deaf.
fn hang(out: &mut impl Write) -> io::Result<()> {
    HUNG.store(true, Ordering::SeqCst);
    // spt has no waiter: blocked, the signals stay pending and never act.
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().map_err(io::Error::from)?;
    writeln!(out, "fulmar-test-tender: hung")?;
    out.flush()?;
    loop {
        std::thread::park();
    }
}
