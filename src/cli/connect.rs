//! Reaching the daemon: its socket, and starting one in the background when
//! there is none (as tmux starts its server), unless told not to.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;

/// How long a freshly started daemon may take to listen.
const START_PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no fulmar daemon is listening on {}: start one with `fulmar daemon` (or drop --no-start)", .0.display())]
    NoDaemon(PathBuf),
    #[error("cannot reach the daemon on {}: {source}", path.display())]
    Socket { path: PathBuf, source: io::Error },
    #[error("cannot start a daemon: {0}")]
    Start(String),
    #[error("the daemon started in the background did not listen on {} within {} s: see {}", socket.display(), START_PATIENCE.as_secs(), log.display())]
    StartTimeout { socket: PathBuf, log: PathBuf },
}

/// Where a background daemon's output goes.
pub fn log_path(runtime: &Path) -> PathBuf {
    runtime.join("daemon.log")
}

/// Connects to `socket`; with `may_start`, starts a daemon first if none
/// listens there. `daemon_args` are the global options to pass it.
pub async fn connect(
    socket: &Path,
    runtime: &Path,
    may_start: bool,
    daemon_args: &[std::ffi::OsString],
) -> Result<UnixStream, ConnectError> {
    match UnixStream::connect(socket).await {
        Ok(stream) => return Ok(stream),
        Err(e) if is_absent(&e) && may_start => {}
        Err(e) if is_absent(&e) => return Err(ConnectError::NoDaemon(socket.to_owned())),
        Err(source) => {
            return Err(ConnectError::Socket {
                path: socket.to_owned(),
                source,
            });
        }
    }
    let log = log_path(runtime);
    let pid = start_daemon(runtime, &log, daemon_args)?;
    eprintln!(
        "fulmar: started a daemon in the background (pid {pid}); its log is {}",
        log.display()
    );
    let deadline = Instant::now() + START_PATIENCE;
    loop {
        match UnixStream::connect(socket).await {
            Ok(stream) => return Ok(stream),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(_) => {
                return Err(ConnectError::StartTimeout {
                    socket: socket.to_owned(),
                    log,
                });
            }
        }
    }
}

/// No socket, or one nobody listens on (a daemon that died).
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

fn start_daemon(
    runtime: &Path,
    log: &Path,
    args: &[std::ffi::OsString],
) -> Result<u32, ConnectError> {
    let fail = |what: &str, e: io::Error| ConnectError::Start(format!("{what}: {e}"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(runtime)
        .map_err(|e| fail(&format!("cannot create {}", runtime.display()), e))?;
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .map_err(|e| fail(&format!("cannot open {}", log.display()), e))?;
    let err = out
        .try_clone()
        .map_err(|e| fail("cannot share the log", e))?;
    let exe = std::env::current_exe().map_err(|e| fail("cannot find the fulmar binary", e))?;
    let child = Command::new(exe)
        .args(args)
        .args(["daemon", "--background"])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| fail("cannot run fulmar daemon", e))?;
    Ok(child.id())
}
