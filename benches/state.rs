//! State file saves: `StateWriter::save` of a 1,000-unikernel state
//! (about 1 MB of JSON) against writing the same bytes with `std::fs::write`,
//! in the same run, so the cost of the fsyncs, link and renames shows.
//!
//! `cargo bench --bench state`. Runs in a directory under Cargo's target
//! directory (a real disk, unlike a tmpfs /tmp), or under
//! `FULMAR_BENCH_DIR` when set.

use fulmar::api::label::Label;
use fulmar::api::unikernel::{
    BlockConfig, ExitRecord, ExitStatus, NetConfig, RestartPolicy, UnikernelConfig,
};
use fulmar::host::state::StateFile;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const UNIKERNELS: usize = 1_000;
const RUNS: usize = 50;

/// What a daemon might keep per unikernel: its configuration, image digest,
/// restart count and recent exits.
#[derive(Serialize, Deserialize)]
struct Entry {
    config: UnikernelConfig,
    digest: String,
    restarts: u32,
    exits: Vec<ExitRecord>,
}

#[derive(Serialize, Deserialize)]
struct Fleet {
    unikernels: Vec<Entry>,
}

fn entry(i: usize) -> Entry {
    let name = Label::new(&format!("service-{i:04}")).unwrap();
    let mut config = UnikernelConfig::new(name);
    config.cpu = (i % 2) as u32;
    config.nets = vec![NetConfig {
        interface: "service".into(),
        bridge: "br0".into(),
        mac: None,
    }];
    config.blocks = vec![BlockConfig {
        device: "storage".into(),
        block: Label::new(&format!("disk-{i:04}")).unwrap(),
        sector_size: Some(512),
    }];
    config.args = vec![
        "--ipv4=10.0.0.2/24".into(),
        "--ipv4-gateway=10.0.0.1".into(),
        format!("--hostname=service-{i:04}.example.org"),
        "--tls=true".into(),
    ];
    config.restart = RestartPolicy::OnFailure;
    Entry {
        config,
        digest: format!("{:064x}", i * 7919),
        restarts: 3,
        exits: (0..3)
            .map(|k| ExitRecord {
                status: ExitStatus::Code(k),
                at_ms: 1_790_000_000_000 + k as u64,
                ran_ms: 86_400_000,
            })
            .collect(),
    }
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let base = std::env::var_os("FULMAR_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).unwrap();
    let tmp = tempfile::tempdir_in(&base).unwrap();
    let fleet = Fleet {
        unikernels: (0..UNIKERNELS).map(entry).collect(),
    };

    let mut writer = StateFile::<Fleet>::new(tmp.path()).load().unwrap().writer;
    writer.save(&fleet).unwrap();
    let bytes = std::fs::read(writer.path()).unwrap();
    let plain = tmp.path().join("plain.json");
    std::fs::write(&plain, &bytes).unwrap();

    let (mut encode, mut write, mut save) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let start = Instant::now();
        std::hint::black_box(serde_json::to_vec_pretty(&fleet).unwrap());
        encode.push(start.elapsed());

        let start = Instant::now();
        std::fs::write(&plain, &bytes).unwrap();
        write.push(start.elapsed());

        let start = Instant::now();
        writer.save(&fleet).unwrap();
        save.push(start.elapsed());
    }
    drop(writer);

    let mut load = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let loaded = StateFile::<Fleet>::new(tmp.path()).load().unwrap();
        load.push(start.elapsed());
        assert_eq!(loaded.state.unwrap().unikernels.len(), UNIKERNELS);
    }

    let (encode, write, save, load) = (
        median(&mut encode),
        median(&mut write),
        median(&mut save),
        median(&mut load),
    );
    println!(
        "state file: {UNIKERNELS} unikernels, {} bytes ({} compact), {RUNS} runs, medians",
        bytes.len(),
        serde_json::to_vec(&fleet).unwrap().len()
    );
    println!("  encode only (serde_json, pretty)   {:8.2} ms", ms(encode));
    println!("  std::fs::write of the same bytes   {:8.2} ms", ms(write));
    println!("  StateWriter::save                  {:8.2} ms", ms(save));
    println!(
        "  save - encode - write              {:8.2} ms  (fsyncs, link, renames)",
        ms(save.saturating_sub(encode + write))
    );
    println!(
        "  save / write                       {:8.2}x",
        save.as_secs_f64() / write.as_secs_f64()
    );
    println!(
        "  save / (encode + write)            {:8.2}x",
        save.as_secs_f64() / (encode + write).as_secs_f64()
    );
    println!("  StateFile::load                    {:8.2} ms", ms(load));
}
