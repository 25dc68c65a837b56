//! The daemon's benchmarks, against baselines in the same run:
//!
//! * console ingest: the test tender writing 256 MiB as fast as it can into its
//!   console, drained by the daemon, against the same tender writing into a
//!   FIFO that `cat FIFO > /dev/null` drains; then again with one console
//!   subscriber that never reads (the daemon's memory must stay bounded);
//! * 1,000 idle unikernels: the daemon's resident memory, `fulmar list --json`
//!   and one more create and destroy.
//!
//! `cargo bench --bench daemon` (FULMAR_BENCH_UNIKERNELS changes the 1,000).

#[path = "../tests/it/support/mod.rs"]
mod support;

use fulmar::api::client::Client;
use fulmar::api::console::Since;
use fulmar::api::event::Event;
use fulmar::api::image::Target;
use fulmar::api::label::Label;
use fulmar::api::protocol::{Request, StreamItem};
use fulmar::api::unikernel::UnikernelConfig;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::daemon::Host;
use support::images::Spec;

const BURST: u64 = 1 << 30;

fn main() {
    let image = Spec::new(Target::Hvt, &[]).path();
    let image = image.to_str().unwrap();
    ingest(image);
    idle(image);
}

fn ingest(image: &str) {
    let mut host = Host::new();
    host.start(&[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let baseline = median(5, || cat_baseline(&host, image));
    let fulmar = median(5, || rt.block_on(daemon_ingest(&host, image, false)));
    let stalled = median(5, || rt.block_on(daemon_ingest(&host, image, true)));
    let rss = rss_kb(host.daemon_pid());
    let rate = |d: Duration| BURST as f64 / d.as_secs_f64() / 1e6;
    println!(
        "console ingest of {} MiB from the test tender, median of 5:",
        BURST >> 20
    );
    println!(
        "  cat FIFO > /dev/null         {:>8.0} MB/s",
        rate(baseline)
    );
    println!(
        "  fulmar daemon                {:>8.0} MB/s  ({:.2}x)",
        rate(fulmar),
        rate(fulmar) / rate(baseline)
    );
    println!(
        "  with a stalled subscriber    {:>8.0} MB/s  ({:.2}x)",
        rate(stalled),
        rate(stalled) / rate(baseline)
    );
    println!("  daemon resident memory after {rss} KiB");
}

async fn connect(host: &Host) -> Client {
    let (read, write) = tokio::net::UnixStream::connect(host.socket())
        .await
        .unwrap()
        .into_split();
    Client::over(read, write).await.unwrap()
}

/// The same tender under the daemon, from the create request to the exit
/// event; optionally with a console subscriber that never reads.
async fn daemon_ingest(host: &Host, image: &str, stalled: bool) -> Duration {
    let client = connect(host).await;
    let file = tokio::fs::File::open(image).await.unwrap();
    let digest = client.put_image(file, false).await.unwrap().sha256;
    let name = Label::new("burst").unwrap();
    let mut events = client.stream(Request::Events).await.unwrap();
    client.call(Request::List).await.unwrap();
    let mut config = UnikernelConfig::new(name.clone());
    config.args = vec![format!("burst-bytes={BURST}")];
    let start = Instant::now();
    client
        .call(Request::Create {
            config,
            image: digest,
        })
        .await
        .unwrap();
    // Subscribed, and never read: its queues fill, then it only lags.
    let staller = if stalled {
        Some(connect(host).await)
    } else {
        None
    };
    let _stalled = match &staller {
        Some(c) => Some(
            c.stream(Request::Console {
                name: name.clone(),
                since: Since::Everything,
                follow: true,
            })
            .await
            .unwrap(),
        ),
        None => None,
    };
    loop {
        if let Some(Ok(StreamItem::Event {
            event: Event::Exited { name: n, .. },
        })) = events.next().await
            && n == name
        {
            break;
        }
    }
    let took = start.elapsed();
    client.call(Request::Remove { name }).await.unwrap();
    took
}

/// The tender writing into a FIFO that cat drains, start to exit.
fn cat_baseline(host: &Host, image: &str) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("console");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut cat = Command::new("cat")
        .arg(&fifo)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let out = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let status = Command::new(host.tenders.tender("solo5-hvt"))
        .args(["--", image, &format!("burst-bytes={BURST}")])
        .stdout(out)
        .status()
        .unwrap();
    let took = start.elapsed();
    assert!(status.success());
    cat.wait().unwrap();
    took
}

fn idle(image: &str) {
    let count: usize = std::env::var("FULMAR_BENCH_UNIKERNELS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let mut host = Host::new();
    host.start(&[]);
    let started = Instant::now();
    for i in 0..count {
        host.ok(&[
            "create",
            &format!("idle{i}"),
            image,
            "--mem",
            "1",
            "--",
            "sleep-forever",
        ]);
    }
    let creating = started.elapsed();
    let rss = rss_kb(host.daemon_pid());
    let list = median(21, || {
        let start = Instant::now();
        let out = host
            .command(&["--no-start", "list", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success());
        start.elapsed()
    });
    let create = median(11, || {
        let start = Instant::now();
        host.ok(&[
            "create",
            "extra",
            image,
            "--mem",
            "1",
            "--",
            "sleep-forever",
        ]);
        let took = start.elapsed();
        host.ok(&["destroy", "extra"]);
        host.ok(&["remove", "extra"]);
        took
    });
    let destroy = median(11, || {
        host.ok(&[
            "create",
            "extra",
            image,
            "--mem",
            "1",
            "--",
            "sleep-forever",
        ]);
        let start = Instant::now();
        host.ok(&["destroy", "extra"]);
        let took = start.elapsed();
        host.ok(&["remove", "extra"]);
        took
    });
    let noop = median(21, || {
        let start = Instant::now();
        Command::new(support::daemon::fulmar())
            .arg("--version")
            .output()
            .unwrap();
        start.elapsed()
    });
    println!(
        "{count} idle unikernels (created in {:.1} s):",
        creating.as_secs_f64()
    );
    println!("  daemon resident memory       {:>8} KiB", rss);
    println!(
        "  fulmar list --json           {:>8.1} ms median of 21",
        ms(list)
    );
    println!(
        "  one more create              {:>8.1} ms median of 11",
        ms(create)
    );
    println!(
        "  one more destroy             {:>8.1} ms median of 11",
        ms(destroy)
    );
    println!(
        "  baseline: fulmar --version   {:>8.1} ms median of 21 (process start-up)",
        ms(noop)
    );
}

fn median(n: usize, mut run: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..n).map(|_| run()).collect();
    times.sort();
    times[n / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
