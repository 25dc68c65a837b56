//! Who may talk to the daemon: root, the daemon's own user, and members of the
//! socket's group (SO_PEERCRED), as DESIGN.md says. Everyone else is refused
//! and logged, even if the socket's permissions let them connect.
//!
//! A client on the socket may also lend the daemon one of its open files for
//! a block transfer: [`Peer`] takes it from the client's process.

use nix::unistd::{Gid, Group, Uid, User};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

#[derive(Debug, Clone)]
pub struct Access {
    daemon: Uid,
    group: Option<Gid>,
}

impl Access {
    pub fn new(group: Option<Gid>) -> Access {
        Access {
            daemon: nix::unistd::geteuid(),
            group,
        }
    }

    pub fn allows(&self, uid: u32, gid: u32) -> bool {
        let uid = Uid::from_raw(uid);
        uid.is_root()
            || uid == self.daemon
            || self
                .group
                .is_some_and(|g| in_group(uid, Gid::from_raw(gid), g))
    }
}

/// The process at the other end of a connection, as the kernel named it when
/// it connected (a pidfd from SO_PEERPIDFD, so a process that exits and whose
/// pid is reused is never mistaken for it), for taking the files it lends.
#[derive(Debug)]
pub struct Peer {
    pidfd: OwnedFd,
}

impl Peer {
    /// The peer of `socket`, where the system can name it (Linux 6.5 and later).
    #[cfg(target_os = "linux")]
    pub fn of(socket: &impl AsRawFd) -> io::Result<Peer> {
        use std::os::fd::FromRawFd;
        // The value of SO_PEERPIDFD on every architecture fulmar runs on
        // (only alpha, mips, parisc and sparc number it otherwise).
        const SO_PEERPIDFD: libc::c_int = 77;
        let mut pidfd: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `pidfd` and `len` are locals that outlive the call, and
        // `len` says how big `pidfd` is.
        let r = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERPIDFD,
                (&raw mut pidfd).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        if pidfd < 0 {
            return Err(io::Error::other("the peer has no pidfd"));
        }
        // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
        Ok(Peer {
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn of(_socket: &impl AsRawFd) -> io::Result<Peer> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// The peer's descriptor `fd`, duplicated with pidfd_getfd(2): the very
    /// same open file description, with the access mode the peer opened it
    /// with, so the daemon can read through it only what the peer opened for
    /// reading and write only what it opened for writing. The daemon never
    /// reopens the file by path, which would reach it with the daemon's rights
    /// rather than the client's. Fails where the kernel refuses (before 5.6,
    /// or ptrace rules such as yama forbid it).
    #[cfg(target_os = "linux")]
    pub fn take(&self, fd: i32) -> io::Result<File> {
        use std::os::fd::FromRawFd;
        // SAFETY: takes no pointers; the pidfd is open for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_getfd,
                self.pidfd.as_raw_fd(),
                libc::c_long::from(fd),
                0 as libc::c_long,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::c_int::try_from(r).map_err(io::Error::other)?;
        // SAFETY: a new descriptor the kernel just gave us; nothing else owns it.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    #[cfg(not(target_os = "linux"))]
    pub fn take(&self, _fd: i32) -> io::Result<File> {
        // Never made here: `of` has no pidfd to give.
        let _ = &self.pidfd;
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

/// By primary group, or as a listed member of the group.
fn in_group(uid: Uid, primary: Gid, group: Gid) -> bool {
    if primary == group {
        return true;
    }
    let Ok(Some(user)) = User::from_uid(uid) else {
        return false;
    };
    matches!(Group::from_gid(group), Ok(Some(g)) if g.mem.contains(&user.name))
}

/// The group named on the command line, by name or number.
pub fn resolve_group(name: &str) -> Result<Gid, String> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(Gid::from_raw(n));
    }
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(format!(
            "there is no group {name}: create it (groupadd {name}) or name another"
        )),
        Err(e) => Err(format!("cannot look up group {name}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_the_daemon_user_and_the_group_are_let_in() {
        let me = nix::unistd::geteuid().as_raw();
        let stranger = if me == 54321 { 54322 } else { 54321 };
        let access = Access::new(Some(Gid::from_raw(4242)));
        assert!(access.allows(0, 0));
        assert!(access.allows(me, 99));
        assert!(access.allows(stranger, 4242));
        assert!(!access.allows(stranger, stranger));
        assert!(!Access::new(None).allows(stranger, 4242));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_peer_lends_its_own_open_files() {
        use std::io::{Read, Seek, Write};
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        // Our own process is the peer of a socket pair.
        let Ok(peer) = Peer::of(&ours) else {
            println!("skipped: this kernel has no SO_PEERPIDFD");
            return;
        };
        let mut lent = tempfile::tempfile().unwrap();
        lent.write_all(b"lent bytes").unwrap();
        lent.rewind().unwrap();
        let mut taken = peer.take(lent.as_raw_fd()).unwrap();
        let mut text = String::new();
        taken.read_to_string(&mut text).unwrap();
        assert_eq!(text, "lent bytes");
        // The same open file description: reading one moved the other.
        assert_eq!(lent.stream_position().unwrap(), 10);
        assert!(peer.take(-1).is_err());
    }

    #[test]
    fn groups_resolve_by_name_or_number() {
        assert_eq!(resolve_group("0"), Ok(Gid::from_raw(0)));
        assert_eq!(resolve_group("root"), Ok(Gid::from_raw(0)));
        assert!(
            resolve_group("no-such-group-fulmar")
                .unwrap_err()
                .contains("groupadd")
        );
    }
}
