//! One run of a tender: prepare the host (image copy, console FIFO, taps),
//! exec the tender, and release all of it again when the run ends.

use crate::api::unikernel::{TapInfo, UnikernelConfig};
use crate::host::block::BlockFile;
use crate::host::console::{self, Console};
use crate::host::net;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Console(#[from] console::ConsoleError),
    #[error("{0}")]
    Net(#[from] net::NetError),
    #[error("cannot start {program}: {source}; is it installed and on PATH?")]
    Spawn { program: String, source: io::Error },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LaunchError {
    let path = path.to_owned();
    move |source| LaunchError::Io { what, path, source }
}

/// What one run made on the host; [`Resources::release`] removes exactly that,
/// and nothing that was there before it.
#[derive(Debug, Default)]
pub struct Resources {
    dir: Option<PathBuf>,
    image: Option<PathBuf>,
    fifo: Option<PathBuf>,
    taps: Vec<String>,
}

impl Resources {
    /// Removes the taps, the image copy, the FIFO and the run directory. Clean-up
    /// goes on past a failure so that one stuck tap does not leak the rest.
    pub fn release(self) {
        for tap in &self.taps {
            if let Err(e) = net::delete_tap(tap) {
                tracing::warn!("clean-up: {e}");
            }
        }
        if let Some(image) = &self.image {
            if let Err(e) = fs::remove_file(image) {
                tracing::warn!("clean-up: cannot remove {}: {e}", image.display());
            }
        }
        if let Some(fifo) = &self.fifo {
            if let Err(e) = console::remove_fifo(fifo) {
                tracing::warn!("clean-up: {e}");
            }
        }
        // Only when empty: anything else in it is not ours to delete.
        if let Some(dir) = &self.dir {
            if let Err(e) = fs::remove_dir(dir) {
                tracing::warn!("clean-up: cannot remove {}: {e}", dir.display());
            }
        }
    }
}

/// A tender that is running, with its console being drained.
pub struct Launched {
    pub child: Child,
    pub pid: u32,
    pub argv: Vec<String>,
    pub taps: Vec<TapInfo>,
    pub resources: Resources,
    pub drain: JoinHandle<()>,
}

/// Where a unikernel's run lives: `<runtime>/unikernels/<name>/{image,console}`.
pub fn run_dir(runtime: &Path, name: &str) -> PathBuf {
    runtime.join("unikernels").join(name)
}

/// Prepares the host and starts the tender. Each step that fails undoes the
/// ones before it, so a failed launch leaves nothing behind.
pub fn launch(
    config: &UnikernelConfig,
    stored_image: &Path,
    tender: &Path,
    blocks: &[BlockFile],
    runtime: &Path,
    console: &Console,
) -> Result<Launched, LaunchError> {
    let dir = run_dir(runtime, config.name.as_str());
    let mut made = Resources::default();
    match prepare_and_exec(
        config,
        &dir,
        stored_image,
        tender,
        blocks,
        &mut made,
        console,
    ) {
        Ok(launched) => Ok(Launched {
            resources: made,
            ..launched
        }),
        Err(e) => {
            made.release();
            Err(e)
        }
    }
}

fn prepare_and_exec(
    config: &UnikernelConfig,
    dir: &Path,
    stored_image: &Path,
    tender: &Path,
    blocks: &[BlockFile],
    made: &mut Resources,
    console: &Console,
) -> Result<Launched, LaunchError> {
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("create the run directory", dir))?;
        made.dir = Some(dir.to_owned());
    }
    let image = dir.join("image");
    fs::copy(stored_image, &image).map_err(io_err("copy the image to", &image))?;
    made.image = Some(image.clone());
    fs::set_permissions(&image, fs::Permissions::from_mode(0o600))
        .map_err(io_err("restrict", &image))?;

    let mut taps = Vec::with_capacity(config.nets.len());
    for net in &config.nets {
        let tap = net::create_tap(&net.bridge)?;
        made.taps.push(tap.name.clone());
        taps.push(TapInfo {
            interface: net.interface.clone(),
            tap: tap.name,
            bridge: net.bridge.clone(),
            mac: config.mac_of(net),
        });
    }

    // The reader is open before the tender starts, so no early output is lost.
    let fifo = dir.join("console");
    console::create_fifo(&fifo)?;
    made.fifo = Some(fifo.clone());
    let reader = console::open_reader(&fifo)?;

    let argv = argv(config, tender, &image, &taps, blocks);
    let writer = console::open_writer(&fifo)?;
    let stderr = writer
        .try_clone()
        .map_err(io_err("share the console FIFO", &fifo))?;
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(stderr)
        .spawn()
        .map_err(|source| LaunchError::Spawn {
            program: argv[0].clone(),
            source,
        })?;
    // Our copies of the writer went into the Command and are closed now: the
    // reader sees end-of-file exactly when the tender is gone.
    let pid = child.id().unwrap_or_default();
    let drain = tokio::spawn(drain(reader, console.clone(), config.name.to_string()));
    Ok(Launched {
        child,
        pid,
        argv,
        taps,
        resources: Resources::default(),
        drain,
    })
}

/// Reads the console until the tender is gone; a read error ends the run's
/// console, not the run.
async fn drain(reader: tokio::net::unix::pipe::Receiver, console: Console, name: String) {
    if let Err(e) = console::drain(reader, console).await {
        tracing::warn!("{name}: console: {e}");
    }
}

/// albatross's command line (SOLO5.md), pinned to the configured CPU.
pub fn argv(
    config: &UnikernelConfig,
    tender: &Path,
    image: &Path,
    taps: &[TapInfo],
    blocks: &[BlockFile],
) -> Vec<String> {
    let mut argv = pin(config.cpu);
    argv.push(tender.display().to_string());
    argv.push(format!("--mem={}", config.memory_mb));
    for t in taps {
        argv.push(format!("--net:{}={}", t.interface, t.tap));
    }
    for t in taps {
        argv.push(format!("--net-mac:{}={}", t.interface, t.mac));
    }
    for (b, file) in config.blocks.iter().zip(blocks) {
        argv.push(format!("--block:{}={}", b.device, file.path.display()));
    }
    // Only given sizes: the tender's default is the same 512.
    for b in &config.blocks {
        if let Some(size) = b.sector_size {
            argv.push(format!("--block-sector-size:{}={size}", b.device));
        }
    }
    argv.push("--".into());
    argv.push(image.display().to_string());
    argv.extend(config.args.iter().cloned());
    argv
}

#[cfg(not(target_os = "freebsd"))]
fn pin(cpu: u32) -> Vec<String> {
    vec!["taskset".into(), "-c".into(), cpu.to_string()]
}

#[cfg(target_os = "freebsd")]
fn pin(cpu: u32) -> Vec<String> {
    vec!["cpuset".into(), "-l".into(), cpu.to_string()]
}
