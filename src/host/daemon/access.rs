//! Who may talk to the daemon: root, the daemon's own user, and members of the
//! socket's group (SO_PEERCRED). Everyone else is refused
//! and logged, even if the socket's permissions let them connect.

use nix::unistd::{Gid, Group, Uid, User};

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
