//! The daemon's benchmarks, against baselines in the same run:
//!
//! * console ingest: the test tender writing 256 MiB as fast as it can into its
//!   console, drained by the daemon, against the same tender writing into a
//!   FIFO that `cat FIFO > /dev/null` drains; then again with one console
//!   subscriber that never reads (the daemon's memory must stay bounded);
//! * 1,000 idle unikernels: the daemon's resident memory, `fulmar list --json`
//!   and one more create and destroy;
//! * 50 creates at once: how long a `list` takes while they run, against the
//!   same daemon idle (the supervisor's lock must never wait on their I/O).
//!
//! `cargo bench --bench daemon` (FULMAR_BENCH_UNIKERNELS changes the 1,000;
//! FULMAR_BENCH_PART=ingest, idle or creates runs one part).

#[path = "../tests/it/support/mod.rs"]
mod support;

use fulmar::api::console::Since;
use fulmar::api::event::Event;
use fulmar::api::image::Target;
use fulmar::api::label::Label;
use fulmar::api::protocol::{Request, StreamItem};
use fulmar::api::unikernel::UnikernelConfig;
use fulmar::wire::client::Client;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::daemon::Host;
use support::images::Spec;

const BURST: u64 = 1 << 30;

fn main() {
    let image = Spec::new(Target::Hvt, &[]).path();
    let image = image.to_str().unwrap();
    let part = std::env::var("FULMAR_BENCH_PART").ok();
    let runs = |name: &str| part.as_deref().is_none_or(|p| p == name);
    if runs("ingest") {
        ingest(image);
    }
    if runs("idle") {
        idle(image);
    }
    if runs("creates") {
        concurrent_creates(image);
    }
}

fn ingest(image: &str) {
    let mut host = Host::new();
    host.start(&[]);
    let rt = runtime();
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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Sends `image` to the daemon; returns its digest.
async fn upload(client: &Client, image: &str) -> String {
    let file = tokio::fs::File::open(image).await.unwrap();
    client.put_image(file, false).await.unwrap().sha256
}

async fn connect(host: &Host) -> Client {
    connect_to(&host.socket()).await
}

async fn connect_to(socket: &std::path::Path) -> Client {
    let (read, write) = tokio::net::UnixStream::connect(socket)
        .await
        .unwrap()
        .into_split();
    Client::over(read, write).await.unwrap()
}

/// The same tender under the daemon, from the create request to the exit
/// event; optionally with a console subscriber that never reads.
async fn daemon_ingest(host: &Host, image: &str, stalled: bool) -> Duration {
    let client = connect(host).await;
    let digest = upload(&client, image).await;
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

const CREATES: usize = 50;

fn concurrent_creates(image: &str) {
    let mut host = Host::new();
    host.start(&[]);
    let rt = runtime();
    let digest = rt.block_on(async { upload(&connect(&host).await, image).await });
    let idle = ListObserver::start(&host, 200).stop();
    let observer = ListObserver::start(&host, 0);
    let probe = SchedulingProbe::start();
    let started = Instant::now();
    rt.block_on(async {
        let mut creates = tokio::task::JoinSet::new();
        for i in 0..CREATES {
            let (socket, digest) = (host.socket(), digest.clone());
            creates.spawn(async move {
                let mut config = UnikernelConfig::new(Label::new(&format!("c{i}")).unwrap());
                config.memory_mb = 1;
                config.args = vec!["sleep-forever".into()];
                let client = connect_to(&socket).await;
                client
                    .call(Request::Create {
                        config,
                        image: digest,
                    })
                    .await
                    .unwrap();
            });
        }
        while let Some(done) = creates.join_next().await {
            done.unwrap();
        }
    });
    let all = started.elapsed();
    let waits = probe.stop();
    let during = observer.stop();
    rt.block_on(async {
        let client = connect(&host).await;
        for i in 0..CREATES {
            let name = Label::new(&format!("c{i}")).unwrap();
            client
                .call(Request::Destroy { name: name.clone() })
                .await
                .unwrap();
            client.call(Request::Remove { name }).await.unwrap();
        }
    });
    let (idle_p50, idle_p99, idle_max) = percentiles(idle.clone());
    let (p50, p99, max) = percentiles(during.clone());
    println!(
        "list while {CREATES} creates run at once ({:.0} ms for all of them):",
        ms(all)
    );
    println!(
        "  idle daemon      p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms  ({} lists)",
        ms(idle_p50),
        ms(idle_p99),
        ms(idle_max),
        idle.len()
    );
    println!(
        "  during creates   p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms  ({} lists; p99 {:.1}x idle)",
        ms(p50),
        ms(p99),
        ms(max),
        during.len(),
        ms(p99) / ms(idle_p99)
    );
    let (wait_p50, wait_p99, wait_max) = percentiles(waits);
    println!(
        "  baseline: a thread waiting for a CPU meanwhile  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms",
        ms(wait_p50),
        ms(wait_p99),
        ms(wait_max)
    );
}

/// How long a thread that wakes every millisecond waits for a CPU: with 50
/// tenders and monitors starting on two cores, part of any request's latency
/// is this, whatever the daemon does.
struct SchedulingProbe {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Duration>>,
}

impl SchedulingProbe {
    const NAP: Duration = Duration::from_millis(1);

    /// Measures from now until [`SchedulingProbe::stop`].
    fn start() -> SchedulingProbe {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut waits = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let start = Instant::now();
                std::thread::sleep(Self::NAP);
                waits.push(start.elapsed().saturating_sub(Self::NAP));
            }
            waits
        });
        SchedulingProbe { stop, thread }
    }

    fn stop(self) -> Vec<Duration> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// One connection on a thread and runtime of its own, timing one `list`
/// after another: the load's own client tasks cannot delay it.
struct ListObserver {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Duration>>,
}

impl ListObserver {
    /// Lists until stopped, and at least `at_least` times.
    fn start(host: &Host, at_least: usize) -> ListObserver {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, socket) = (stop.clone(), host.socket());
        let (connected, ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let client = connect_to(&socket).await;
                client.call(Request::List).await.unwrap();
                connected.send(()).unwrap();
                let mut times = Vec::new();
                while times.len() < at_least || !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    let start = Instant::now();
                    client.call(Request::List).await.unwrap();
                    times.push(start.elapsed());
                }
                times
            })
        });
        ready.recv().unwrap();
        ListObserver { stop, thread }
    }

    fn stop(self) -> Vec<Duration> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// The median, 99th percentile and maximum of `times`.
fn percentiles(mut times: Vec<Duration>) -> (Duration, Duration, Duration) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), at(1.0))
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
