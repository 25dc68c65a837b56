//! Where the daemon listens: its own socket, or the one systemd passes.

use nix::unistd::{Gid, chown};
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("a fulmar daemon is already listening on {}: stop it first (or give this one another --socket)", .0.display())]
    SocketBusy(PathBuf),
    #[error("{} exists and is not a socket: move it away or choose another --socket", .0.display())]
    NotASocket(PathBuf),
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "systemd passed LISTEN_FDS={0}: the socket unit must pass exactly one Unix stream socket"
    )]
    Activation(String),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ListenError {
    let path = path.to_owned();
    move |source| ListenError::Io { what, path, source }
}

/// Makes `dir` (and its parents) if needed, 0700.
pub fn make_private_dir(dir: &Path) -> Result<(), ListenError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create", dir))
}

/// The listening socket and whether the daemon made it (and so removes it).
pub struct Listener {
    pub listener: std::os::unix::net::UnixListener,
    pub bound: Option<PathBuf>,
}

/// The socket systemd passed (socket activation), if it passed one to us.
pub fn activated() -> Result<Option<Listener>, ListenError> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    if !ours {
        return Ok(None);
    }
    let fds = std::env::var("LISTEN_FDS").unwrap_or_default();
    if fds != "1" {
        return Err(ListenError::Activation(fds));
    }
    // SAFETY: with LISTEN_PID naming this process, systemd's protocol says fd 3
    // is an open socket handed to us, and nothing else in the process owns it.
    let listener =
        unsafe { <std::os::unix::net::UnixListener as std::os::fd::FromRawFd>::from_raw_fd(3) };
    Ok(Some(Listener {
        listener,
        bound: None,
    }))
}

/// Binds `socket`, 0660 and owned by `group` if given. A socket file left by a
/// daemon that died is replaced; a live daemon's is refused, and anything that
/// is not a socket is never touched.
pub fn bind(socket: &Path, group: Option<Gid>) -> Result<Listener, ListenError> {
    if let Some(dir) = socket.parent() {
        make_private_dir(dir)?;
        if let Some(gid) = group {
            // Members of the group may pass through, not list.
            chown(dir, None, Some(gid)).map_err(|e| io_err("give the group", dir)(e.into()))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o710))
                .map_err(io_err("open to the group", dir))?;
        }
    }
    match fs::symlink_metadata(socket) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ListenError::NotASocket(socket.to_owned()));
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return Err(ListenError::SocketBusy(socket.to_owned()));
            }
            fs::remove_file(socket).map_err(io_err("remove the stale socket", socket))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspect", socket)(e)),
    }
    let listener =
        std::os::unix::net::UnixListener::bind(socket).map_err(io_err("listen on", socket))?;
    fs::set_permissions(socket, fs::Permissions::from_mode(0o660))
        .map_err(io_err("restrict", socket))?;
    if let Some(gid) = group {
        chown(socket, None, Some(gid)).map_err(|e| io_err("give the group", socket)(e.into()))?;
    }
    Ok(Listener {
        listener,
        bound: Some(socket.to_owned()),
    })
}

/// Tells systemd (Type=notify) that the daemon is ready; nothing without it.
pub fn notify_ready() {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_notify(&target, b"READY=1") {
        tracing::warn!("cannot tell systemd the daemon is ready: {e}");
    }
}

#[cfg(target_os = "linux")]
fn send_notify(target: &std::ffi::OsStr, message: &[u8]) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = target.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(Path::new(target))?,
    };
    UnixDatagram::unbound()?.send_to_addr(message, &addr)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn send_notify(target: &std::ffi::OsStr, message: &[u8]) -> io::Result<()> {
    std::os::unix::net::UnixDatagram::unbound()?.send_to(message, target)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_socket_is_refused_and_a_stale_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/fulmar.sock");
        let first = bind(&socket, None).unwrap();
        assert_eq!(
            fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
            0o660
        );
        assert!(matches!(
            bind(&socket, None),
            Err(ListenError::SocketBusy(_))
        ));
        drop(first);
        bind(&socket, None).unwrap();
    }

    #[test]
    fn something_else_at_the_socket_path_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fulmar.sock");
        fs::write(&path, "mine").unwrap();
        assert!(matches!(bind(&path, None), Err(ListenError::NotASocket(_))));
        assert_eq!(fs::read_to_string(&path).unwrap(), "mine");
    }
}
