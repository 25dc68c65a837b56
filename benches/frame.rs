//! Protocol framing against a plain copy over the same kind of socket.
//!
//! The target: a 1 GiB binary stream through `wire` at no less than
//! 0.8x the throughput of the bare bytes. Each run pushes 1 GiB through a
//! fresh `UnixStream::pair()` three ways, interleaved: plain `write_all` /
//! `read` of 256 KiB chunks; the same chunks as data frames through
//! `FrameWriter` / `FrameReader`; and those frames under a credit window,
//! with the receiver's grants flowing back as JSON frames on the same socket.
//! Run with `cargo bench --bench frame`; it asserts nothing.

use fulmar::wire::{
    CHUNK_SIZE, CreditWindow, DEFAULT_WINDOW, FrameReader, FrameWriter, ReceiveWindow,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const TOTAL: usize = 1 << 30;
const RUNS: usize = 7;

/// The bench's stand-in for the protocol's `Credit { bytes }` message.
#[derive(Serialize, Deserialize)]
struct Credit {
    bytes: u64,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut times: [Vec<Duration>; 3] = Default::default();
    let mut peaks = [0.0f64; 3];
    runtime.block_on(async {
        // One warm-up of each, then the runs, interleaved.
        for run in 0..=RUNS {
            for (variant, all) in times.iter_mut().enumerate() {
                forget_peak_rss();
                let time = match variant {
                    0 => plain().await,
                    1 => framed().await,
                    _ => credited().await,
                };
                peaks[variant] = peaks[variant].max(peak_rss_mb());
                if run > 0 {
                    all.push(time);
                }
            }
        }
    });
    let rate = |d: Duration| TOTAL as f64 / 1e9 / d.as_secs_f64();
    println!(
        "protocol framing: 1 GiB over a Unix socketpair, {} KiB chunks, median of {RUNS} runs",
        CHUNK_SIZE >> 10
    );
    println!(
        "{:<30} {:>6} {:>6} {:>6} {:>6} {:>9}",
        "", "GB/s", "ratio", "min", "max", "peak RSS"
    );
    let names = [
        "plain write_all/read",
        "data frames",
        "data frames + credit window",
    ];
    for ((name, time), peak) in names.iter().zip(&times).zip(peaks) {
        println!(
            "{:<30} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.1} MB",
            name,
            rate(median(time)),
            median(&times[0]).as_secs_f64() / median(time).as_secs_f64(),
            rate(*time.iter().max().expect("runs")),
            rate(*time.iter().min().expect("runs")),
            peak
        );
    }
}

/// Each variant's peak resident memory is measured from what is resident
/// when it starts.
fn forget_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// VmHWM: the peak since the last `forget_peak_rss`.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches(" kB").parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb * 1024.0 / 1e6
}

fn pair() -> (UnixStream, UnixStream) {
    UnixStream::pair().expect("a Unix socketpair")
}

/// The bytes one chunk carries: not zero, so nothing can shortcut them.
fn chunk() -> Vec<u8> {
    (0..CHUNK_SIZE).map(|i| (i % 251) as u8).collect()
}

async fn plain() -> Duration {
    let (mut near, mut far) = pair();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = chunk();
        for _ in 0..TOTAL / CHUNK_SIZE {
            near.write_all(&chunk).await.expect("write");
        }
    });
    let mut buf = vec![0; CHUNK_SIZE];
    let mut received = 0;
    loop {
        match far.read(&mut buf).await.expect("read") {
            0 => break,
            n => received += n,
        }
    }
    writer.await.expect("the writer");
    assert_eq!(received, TOTAL);
    start.elapsed()
}

async fn framed() -> Duration {
    let (near, far) = pair();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = chunk();
        let mut writer = FrameWriter::new(near);
        for _ in 0..TOTAL / CHUNK_SIZE {
            writer.send_data(1, &chunk).await.expect("send");
        }
        writer.flush().await.expect("flush");
    });
    let mut reader = FrameReader::new(far);
    let mut received = 0;
    while let Some(frame) = reader.next().await.expect("read a frame") {
        received += frame.payload.len();
    }
    writer.await.expect("the writer");
    assert_eq!(received, TOTAL);
    start.elapsed()
}

async fn credited() -> Duration {
    let (near, far) = pair();
    let (near_read, near_write) = near.into_split();
    let (far_read, far_write) = far.into_split();
    let start = Instant::now();
    let window = Arc::new(CreditWindow::new());
    let credit_in = tokio::spawn({
        let window = window.clone();
        async move {
            let mut reader = FrameReader::new(near_read);
            while let Some(frame) = reader.next().await.expect("read a credit") {
                window.grant(frame.json::<Credit>().expect("a credit").bytes);
            }
        }
    });
    let writer = tokio::spawn(async move {
        let chunk = chunk();
        let mut writer = FrameWriter::new(near_write);
        for _ in 0..TOTAL / CHUNK_SIZE {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let n = window.reserve(rest.len()).await.expect("credit");
                writer.send_data(1, &rest[..n]).await.expect("send");
                rest = &rest[n..];
            }
        }
        writer.flush().await.expect("flush");
    });
    let mut reader = FrameReader::new(far_read);
    let mut credits = FrameWriter::new(far_write);
    let mut receive = ReceiveWindow::new(DEFAULT_WINDOW);
    let mut received = 0;
    let mut grant = receive.grant();
    loop {
        if let Some(bytes) = grant {
            credits
                .send_json(1, &Credit { bytes })
                .await
                .expect("grant");
            credits.flush().await.expect("flush a grant");
        }
        let Some(frame) = reader.next().await.expect("read a frame") else {
            break;
        };
        let n = frame.payload.len();
        receive.received(n as u64).expect("within the window");
        received += n;
        drop(frame);
        receive.consumed(n as u64);
        grant = receive.grant();
    }
    writer.await.expect("the writer");
    drop(credits);
    credit_in.await.expect("the credit reader");
    assert_eq!(received, TOTAL);
    start.elapsed()
}
