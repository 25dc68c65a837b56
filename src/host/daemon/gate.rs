//! How many connections the daemon holds open, per user and in all, so that
//! idle clients can never take every descriptor: root keeps a reserve beyond
//! the overall cap, and refusals themselves are bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections root may open while everyone else is held at the overall cap,
/// so an operator can always look and act.
pub const ROOT_RESERVE: usize = 16;
/// Refused connections the daemon tells why at once; past this many it hangs
/// up without a word, so refusing cannot exhaust descriptors either.
pub const REFUSING: usize = 16;

#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Connections of all users but root's reserve.
    pub total: usize,
    /// Connections of any one user, root included.
    pub per_user: usize,
}

/// Why a connection was not admitted; the message tells how to get in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    #[error(
        "the daemon holds as many connections as it takes (--max-connections {0}): close idle \
         fulmar clients, or restart the daemon with a higher --max-connections"
    )]
    Total(usize),
    #[error(
        "uid {uid} has as many connections open as one user may (--max-connections-per-user \
         {cap}): close some of its fulmar clients, or restart the daemon with a higher \
         --max-connections-per-user"
    )]
    PerUser { uid: u32, cap: usize },
}

pub struct Gate {
    caps: Caps,
    open: Mutex<Open>,
    refusing: Arc<Semaphore>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_user: HashMap<u32, usize>,
}

/// An admitted connection's place; dropping it frees the place.
pub struct Ticket {
    gate: Arc<Gate>,
    uid: u32,
}

impl Gate {
    pub fn new(caps: Caps) -> Arc<Gate> {
        Arc::new(Gate {
            caps,
            open: Mutex::default(),
            refusing: Arc::new(Semaphore::new(REFUSING)),
        })
    }

    /// A place for a connection of `uid`, if the caps leave one.
    pub fn admit(self: &Arc<Self>, uid: u32) -> Result<Ticket, Full> {
        let mut open = self.lock();
        let total = if uid == 0 {
            self.caps.total.saturating_add(ROOT_RESERVE)
        } else {
            self.caps.total
        };
        if open.total >= total {
            return Err(Full::Total(self.caps.total));
        }
        let mine = open.by_user.entry(uid).or_default();
        if *mine >= self.caps.per_user {
            return Err(Full::PerUser {
                uid,
                cap: self.caps.per_user,
            });
        }
        *mine += 1;
        open.total += 1;
        Ok(Ticket {
            gate: self.clone(),
            uid,
        })
    }

    /// Leave to tell one more refused client why; None when as many are
    /// being told already.
    pub fn refusing(&self) -> Option<OwnedSemaphorePermit> {
        self.refusing.clone().try_acquire_owned().ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.gate.lock();
        open.total -= 1;
        if let Some(mine) = open.by_user.get_mut(&self.uid) {
            *mine -= 1;
            if *mine == 0 {
                open.by_user.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_is_capped_and_root_keeps_a_reserve() {
        let gate = Gate::new(Caps {
            total: 3,
            per_user: 2,
        });
        let a = [gate.admit(1000).unwrap(), gate.admit(1000).unwrap()];
        assert_eq!(
            gate.admit(1000).err(),
            Some(Full::PerUser { uid: 1000, cap: 2 })
        );
        let b = gate.admit(1001).unwrap();
        assert_eq!(gate.admit(1002).err(), Some(Full::Total(3)));
        let root = gate.admit(0).unwrap();
        drop(a);
        let again = gate.admit(1000).unwrap();
        drop((b, root, again));
        assert_eq!(gate.lock().total, 0);
        assert!(gate.lock().by_user.is_empty());
    }
}
