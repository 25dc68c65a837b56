//! Launch overhead: from `Supervisor::create` to the tender's first
//! console line, against spawning the same test tender directly with the same
//! devices, in the same run; then 100 launch/destroy cycles checked for leaks
//! (file descriptors, taps, resident memory).
//!
//! Needs root (bridges and taps in a network namespace of its own):
//! `cargo bench --bench launch`.

#[path = "../tests/it/support/mod.rs"]
mod support;

use fulmar::api::console::{ConsoleEvent, LineSource, Since};
use fulmar::api::image::{DeviceKind, Target};
use fulmar::api::label::Label;
use fulmar::api::unikernel::{BlockConfig, NetConfig, UnikernelConfig};
use fulmar::host::image::{self, Compression, Image};
use fulmar::host::net;
use fulmar::host::paths::Dirs;
use fulmar::host::supervisor::{Settings, Supervisor};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::images::Spec;
use support::tender::Tenders;

const RUNS: usize = 100;

fn main() {
    support::netns::run(|| {
        support::netns::bridge("br0");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(bench())
    });
}

async fn bench() {
    let data = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let tenders = Tenders::install(&["solo5-hvt"]);
    let dirs = Dirs {
        data: data.path().into(),
        runtime: runtime.path().into(),
    };
    let mut settings = Settings::new(dirs);
    settings.tender_path = Some(tenders.path_var());
    settings.monitor = Some(support::daemon::fulmar().to_owned());
    let sup = Supervisor::new(settings);
    let disk = Label::new("disk").unwrap();
    sup.block_store().create(&disk, 1).unwrap();
    let spec = Spec::new(
        Target::Hvt,
        &[
            ("storage", DeviceKind::Block),
            ("service0", DeviceKind::Net),
        ],
    );
    let image = image::load(&spec.path(), Compression::Detect).unwrap();
    let config = UnikernelConfig {
        nets: vec![NetConfig {
            interface: "service0".into(),
            bridge: "br0".into(),
            mac: None,
        }],
        blocks: vec![BlockConfig {
            device: "storage".into(),
            block: disk.clone(),
            sector_size: None,
        }],
        args: vec!["sleep-forever".into()],
        ..UnikernelConfig::new(Label::new("bench").unwrap())
    };

    // Warm up: page cache, the first tap, the tender probe.
    launch_once(&sup, &config, &image).await;
    let before = (open_fds(), support::netns::interfaces(), rss_kb());
    let mut fulmar = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        fulmar.push(launch_once(&sup, &config, &image).await);
    }
    let after = (open_fds(), support::netns::interfaces(), rss_kb());

    let tap = net::create_tap("br0", None, &mut |_| Ok(())).unwrap();
    let block = data.path().join("block/disk");
    let mut direct = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        direct.push(direct_once(&tenders, &spec, &tap.name, &block));
    }
    net::delete_tap(&tap.name).unwrap();

    let (f, d) = (median(&mut fulmar), median(&mut direct));
    println!("launch to first console line, median of {RUNS} (one net, one block):");
    println!("  fulmar supervisor   {:>8.2} ms", ms(f));
    println!("  direct spawn        {:>8.2} ms", ms(d));
    println!("  overhead            {:>8.2} ms", ms(f) - ms(d));
    println!("after {RUNS} launch/destroy cycles:");
    println!("  open fds            {} -> {}", before.0, after.0);
    println!("  interfaces          {:?} -> {:?}", before.1, after.1);
    println!("  resident memory     {} KiB -> {} KiB", before.2, after.2);
}

/// Creates the unikernel, waits for its first console line, destroys and removes it.
async fn launch_once(sup: &Supervisor, config: &UnikernelConfig, image: &Image) -> Duration {
    let start = Instant::now();
    sup.create(config.clone(), image.clone()).await.unwrap();
    let console = sup.console(&config.name).unwrap();
    let (history, mut live) = console.subscribe(Since::Everything);
    if !history.iter().any(|l| l.source == LineSource::Unikernel) {
        loop {
            match live.recv().await {
                Some(ConsoleEvent::Line(l)) if l.source == LineSource::Unikernel => break,
                Some(_) => {}
                None => panic!("console closed"),
            }
        }
    }
    let took = start.elapsed();
    sup.destroy(&config.name).await.unwrap();
    sup.remove(&config.name).unwrap();
    took
}

/// Spawns the tender as an operator would by hand, and reads its first byte.
fn direct_once(tenders: &Tenders, spec: &Spec, tap: &str, block: &Path) -> Duration {
    let start = Instant::now();
    let mut child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(tenders.tender("solo5-hvt"))
        .arg("--mem=512")
        .arg(format!("--net:service0={tap}"))
        .arg(format!("--block:storage={}", block.display()))
        .arg("--")
        .arg(spec.path())
        .arg("sleep-forever")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut byte = [0u8; 1];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut byte)
        .unwrap();
    let took = start.elapsed();
    child.kill().unwrap();
    child.wait().unwrap();
    took
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
