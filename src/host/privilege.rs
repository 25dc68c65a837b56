//! Who tenders run as, and what that user may reach: least privilege.
//!
//! A root daemon runs every tender as an unprivileged user (by default
//! [`DEFAULT_USER`]): its uid, its primary gid and exactly its supplementary
//! groups (so `/dev/kvm` comes through the kvm group), no capabilities,
//! `no_new_privs`. That user gets only what a run needs:
//!
//! * the daemon's directories on the way to its files, searchable but not
//!   listable: the data and runtime directories by others (`o+x`, as the socket
//!   group may own the runtime directory), `block/`, `unikernels/` and the run
//!   directory by the tender's group only (`root:GID 0710`); the owner stays
//!   root, so the tender can neither create nor rename anything in them;
//! * the run's image copy, owned by it and read-only (0400);
//! * each attached block device file, owned by it (0600) while attached and
//!   given back to root when the run ends: owning it, rather than a group that
//!   every tender shares, keeps other tenders' users out of it; a tender could
//!   chmod a file it owns, so giving it back resets the mode too;
//! * its taps, created owned by its uid.

use nix::unistd::{Gid, Uid, User};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, fchown};
use std::path::{Path, PathBuf};

/// The system user tenders run as unless `--tender-user` names another.
pub const DEFAULT_USER: &str = "fulmar-tender";

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "the user {DEFAULT_USER}, which tenders run as, does not exist: create it with `useradd --system --no-create-home --shell /usr/sbin/nologin --groups kvm {DEFAULT_USER}`, or pass --tender-user root to keep tenders as root knowingly"
    )]
    NoDefaultUser,
    #[error(
        "no user {0} to run tenders as: create it, or pass --tender-user with an existing user"
    )]
    NoUser(String),
    #[error("cannot look up the user {name}: {source}")]
    Lookup { name: String, source: nix::Error },
    #[error(
        "a daemon that is not root cannot run tenders as {0}: drop --tender-user (tenders then run as the daemon's own user), or run the daemon as root"
    )]
    NotRoot(String),
    #[error("cannot let the tender user reach {}: {source}", path.display())]
    Grant { path: PathBuf, source: io::Error },
}

/// An unprivileged user that tenders run as, resolved to ids before any fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenderUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// All of its groups, the primary one included.
    groups: Vec<libc::gid_t>,
}

impl TenderUser {
    pub fn lookup(name: &str) -> Result<TenderUser, PrivilegeError> {
        let lookup = |source| PrivilegeError::Lookup {
            name: name.to_owned(),
            source,
        };
        let user = User::from_name(name)
            .map_err(lookup)?
            .ok_or_else(|| PrivilegeError::NoUser(name.to_owned()))?;
        let cname = CString::new(name).map_err(|_| PrivilegeError::NoUser(name.to_owned()))?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid)
            .map_err(lookup)?
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        Ok(TenderUser {
            name: name.to_owned(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
        })
    }

    /// Becomes this user for good, in a forked child before exec: only
    /// async-signal-safe calls, nothing allocated. Groups and gid first, while
    /// still root; setting every uid to a non-root one then empties the
    /// permitted, effective and ambient capability sets.
    pub fn become_it(&self) -> io::Result<()> {
        // SAFETY: the pointer and length describe `self.groups`, which lives
        // until the call returns; the kernel only reads it.
        // size_t on Linux, int on FreeBSD.
        #[allow(clippy::useless_conversion)]
        let count = self
            .groups
            .len()
            .try_into()
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let set = unsafe { libc::setgroups(count, self.groups.as_ptr()) };
        check(set)?;
        // SAFETY: plain system calls on integers.
        check(unsafe { libc::setresgid(self.gid, self.gid, self.gid) })?;
        // SAFETY: as above.
        check(unsafe { libc::setresuid(self.uid, self.uid, self.uid) })
    }
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// No exec after this one can gain privileges (setuid binaries, file
/// capabilities), and no ambient capability passes on. For the forked child
/// before exec: both are single system calls.
#[cfg(target_os = "linux")]
pub fn no_new_privileges() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
    // SAFETY: as above. Kernels before 4.3 have no ambient set: EINVAL, and
    // nothing to clear.
    match check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    }) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        other => other,
    }
}

/// FreeBSD's equivalent (procctl PROC_NO_NEW_PRIVS_CTL) is not wired up yet.
#[cfg(not(target_os = "linux"))]
pub fn no_new_privileges() -> io::Result<()> {
    Ok(())
}

/// Who a daemon runs tenders as, given `--tender-user`; `None`: as the daemon
/// itself. A root daemon needs a user that exists; root itself is allowed, with
/// a warning. A daemon that is not root has nothing to drop.
pub fn choose(requested: Option<&str>) -> Result<Option<TenderUser>, PrivilegeError> {
    let me = Uid::effective();
    if !me.is_root() {
        return match requested {
            Some(name) if TenderUser::lookup(name)?.uid != me.as_raw() => {
                Err(PrivilegeError::NotRoot(name.to_owned()))
            }
            _ => Ok(None),
        };
    }
    let user = match requested {
        Some(name) => TenderUser::lookup(name)?,
        None => TenderUser::lookup(DEFAULT_USER).map_err(|e| match e {
            PrivilegeError::NoUser(_) => PrivilegeError::NoDefaultUser,
            e => e,
        })?,
    };
    if user.uid == 0 {
        tracing::warn!(
            "tenders run as root (--tender-user {}): a unikernel that escapes its tender owns the host",
            user.name
        );
        return Ok(None);
    }
    Ok(Some(user))
}

fn grant_err(path: &Path) -> impl FnOnce(io::Error) -> PrivilegeError {
    let path = path.to_owned();
    move |source| PrivilegeError::Grant { path, source }
}

/// Lets others search `dir` (not list it), keeping the rest of its mode.
pub fn open_to_search(dir: &Path) -> Result<(), PrivilegeError> {
    let mode = fs::metadata(dir)
        .map_err(grant_err(dir))?
        .permissions()
        .mode();
    fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o7777 | 0o001))
        .map_err(grant_err(dir))
}

impl TenderUser {
    /// Lets this user's group search `dir`, and nobody else but root in.
    pub fn may_search(&self, dir: &Path) -> Result<(), PrivilegeError> {
        std::os::unix::fs::chown(dir, Some(0), Some(self.gid)).map_err(grant_err(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o710)).map_err(grant_err(dir))
    }

    /// Gives `file` to this user with `mode`; a symlink is refused, so only
    /// the file the daemon made changes hands.
    pub fn hand_over(&self, file: &Path, mode: u32) -> Result<(), PrivilegeError> {
        set_owner(file, self.uid, self.gid, mode)
    }
}

/// Gives `file` back to root, 0600, whatever its tender did to its mode.
pub fn take_back(file: &Path) -> Result<(), PrivilegeError> {
    set_owner(file, 0, 0, 0o600)
}

fn set_owner(file: &Path, uid: u32, gid: u32, mode: u32) -> Result<(), PrivilegeError> {
    let opened: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(file)
        .map_err(grant_err(file))?;
    fchown(&opened, Some(uid), Some(gid)).map_err(grant_err(file))?;
    opened
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(grant_err(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_user_is_named_and_the_default_tells_how_to_create_it() {
        let err = TenderUser::lookup("fulmar-no-such-user").unwrap_err();
        assert!(matches!(err, PrivilegeError::NoUser(_)), "{err}");
        let text = PrivilegeError::NoDefaultUser.to_string();
        assert!(text.contains("useradd --system"), "{text}");
        assert!(text.contains("--tender-user root"), "{text}");
    }

    #[test]
    fn root_has_its_groups() {
        let root = TenderUser::lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0), "{:?}", root.groups);
    }
}
