//! The TUI's block transfers (src/ui/transfer.rs) against a real daemon: what
//! goes up comes back byte for byte, an existing file is only replaced when
//! the operator says so, and a cancelled upload leaves the old contents.

use crate::support;

use fulmar::api::label::Label;
use fulmar::ui::message::{TransferKind, Update};
use fulmar::ui::transfer::{Job, Transfers};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::bytes::{fifo, pattern, sha, sha_of};
use support::daemon::{Host, eventually};
use tokio::sync::mpsc;

const MIB: usize = 1 << 20;

fn label(name: &str) -> Label {
    Label::new(name).unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs `job` through the link's transfer code and returns every update it
/// sent up to its last one (`Done` or `WouldOverwrite`).
async fn run(host: &Host, job: Job) -> Vec<Update> {
    let (tx, mut rx) = mpsc::channel(1024);
    let mut transfers = Transfers::default();
    transfers.start(&Arc::new(host.connector()), job, &tx);
    collect(&mut rx).await
}

async fn collect(rx: &mut mpsc::Receiver<Update>) -> Vec<Update> {
    let mut seen = Vec::new();
    loop {
        let update = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("the transfer never ended")
            .expect("the transfer task went away without a word");
        let last = matches!(update, Update::Done { .. } | Update::WouldOverwrite { .. });
        seen.push(update);
        if last {
            return seen;
        }
    }
}

fn outcome(updates: &[Update]) -> Result<(), String> {
    match updates.last() {
        Some(Update::Done { outcome, .. }) => outcome.clone(),
        other => panic!("no outcome: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_and_downloads_keep_every_byte() {
    let mut host = Host::new();
    host.start(&[]);
    host.ok(&["block", "create", "disk", "8"]);
    let tmp = tempfile::tempdir().unwrap();
    let data = pattern(8 * MIB, 3);
    let source = tmp.path().join("source.img");
    std::fs::write(&source, &data).unwrap();

    let updates = run(
        &host,
        Job::Upload {
            name: label("disk"),
            path: source.clone(),
        },
    )
    .await;
    assert_eq!(outcome(&updates), Ok(()), "{updates:?}");
    assert!(
        updates.iter().any(|u| matches!(
            u,
            Update::Transfer { kind: TransferKind::Upload, total: Some(t), .. } if *t == data.len() as u64
        )),
        "the upload reports its progress against the file's size: {updates:?}"
    );
    assert!(updates.contains(&Update::TransferEnded {
        block: label("disk")
    }));
    assert!(
        updates.iter().any(|u| matches!(u, Update::Blocks(_))),
        "the block list is refreshed: {updates:?}"
    );
    assert_eq!(sha_of(&host.block_file("disk")), sha(&data));

    let back = tmp.path().join("back.img");
    let download = |overwrite| Job::Download {
        name: label("disk"),
        path: back.clone(),
        overwrite,
    };
    let updates = run(&host, download(false)).await;
    assert_eq!(outcome(&updates), Ok(()), "{updates:?}");
    assert!(updates.iter().any(|u| matches!(
        u,
        Update::Transfer { kind: TransferKind::Download, total: Some(t), .. } if *t == data.len() as u64
    )));
    assert_eq!(sha_of(&back), sha(&data));
    assert_eq!(
        files_in(tmp.path()),
        ["back.img", "source.img"],
        "no partial file is left"
    );

    // The file is there now: the operator is asked, and nothing is written.
    std::fs::write(&back, b"mine").unwrap();
    let updates = run(&host, download(false)).await;
    assert_eq!(
        updates.last(),
        Some(&Update::WouldOverwrite {
            block: label("disk"),
            path: back.clone()
        })
    );
    assert_eq!(std::fs::read(&back).unwrap(), b"mine");
    let updates = run(&host, download(true)).await;
    assert_eq!(outcome(&updates), Ok(()), "{updates:?}");
    assert_eq!(sha_of(&back), sha(&data));

    // A new device filled from a file.
    let updates = run(
        &host,
        Job::Create {
            name: label("copy"),
            size_mb: 8,
            data: source.clone(),
        },
    )
    .await;
    assert_eq!(outcome(&updates), Ok(()), "{updates:?}");
    assert_eq!(sha_of(&host.block_file("copy")), sha(&data));

    // A file that is not there is reported, and the device is untouched.
    let updates = run(
        &host,
        Job::Upload {
            name: label("disk"),
            path: tmp.path().join("missing.img"),
        },
    )
    .await;
    let err = outcome(&updates).unwrap_err();
    assert!(
        err.contains("cannot read") && err.contains("missing.img"),
        "{err}"
    );
    assert_eq!(sha_of(&host.block_file("disk")), sha(&data));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_upload_leaves_the_old_contents() {
    let mut host = Host::new();
    host.start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let old = pattern(4 * MIB, 1);
    host.device_holding("disk", 4, &old);
    let pipe = tmp.path().join("pipe");
    fifo(&pipe);
    let (tx, mut rx) = mpsc::channel(1024);
    let mut transfers = Transfers::default();
    transfers.start(
        &Arc::new(host.connector()),
        Job::Upload {
            name: label("disk"),
            path: pipe.clone(),
        },
        &tx,
    );
    let writer = tokio::task::spawn_blocking(move || {
        let mut pipe = std::fs::OpenOptions::new().write(true).open(pipe).unwrap();
        pipe.write_all(&pattern(2 * MIB, 2)).unwrap();
        // Held open: the upload waits for the rest.
        pipe
    });
    eventually("the upload reaches the daemon", || {
        host.block_files()
            .iter()
            .any(|f| f.starts_with(".partial_"))
    });
    let pipe = writer.await.unwrap();
    assert!(transfers.cancel(&label("disk")));
    let updates = collect(&mut rx).await;
    let err = outcome(&updates).unwrap_err();
    assert!(
        err.contains("cancelled") && err.contains("keeps its old contents"),
        "{err}"
    );
    assert!(updates.contains(&Update::TransferEnded {
        block: label("disk")
    }));
    drop(pipe);
    eventually("the daemon drops the partial upload", || {
        host.block_files() == ["disk"]
    });
    assert_eq!(sha_of(&host.block_file("disk")), sha(&old));
    assert!(
        !transfers.cancel(&label("disk")),
        "nothing is left to cancel"
    );
}
