//! [`Mutex`]: in-process locks by key, FIFO hand-over, gone with their process.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::Hash;

use crate::explore::state::ByteSink;

use crate::op::{ActorId, Applied, ErrorCode, Footprint, Outcome};
use crate::sim::subsystem::{PartOp, Subsystem};
use crate::symmetry::Renaming;

use super::{resource, EPERM, MAX_WAITERS};

/// Ops on [`Mutex`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MutexOp {
    /// `lock.acquire()`: waits while another thread holds it. Not reentrant: a thread that
    /// already holds it waits on itself, as `threading.Lock` does.
    Lock(i64),
    /// `lock.acquire(blocking=False)`: returns `Bool`.
    TryLock(i64),
    /// `lock.release()`: returns `Ok`, or `Err(EPERM)` when the caller does not hold it.
    Unlock(i64),
}

impl fmt::Display for MutexOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MutexOp::Lock(k) | MutexOp::TryLock(k) | MutexOp::Unlock(k) => write!(f, "({k})"),
        }
    }
}

impl PartOp for MutexOp {
    fn is_fallible(&self) -> bool {
        false
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Lock {
    holder: Option<ActorId>,
    /// Blocked `Lock` calls, oldest first.
    waiters: Vec<ActorId>,
}

/// In-process mutexes by key (`threading.Lock`, `asyncio.Lock`, `std::sync::Mutex`), held by an
/// actor (a thread or task). FIFO hand-over. The lock lives in process memory: when its process
/// crashes, the locks its dead threads held are gone with them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Mutex {
    locks: BTreeMap<i64, Lock>,
    /// Actors whose `Lock` was granted and not collected yet.
    granted: Vec<ActorId>,
}

impl Mutex {
    pub fn new() -> Mutex {
        Mutex::default()
    }

    /// The actor holding lock `key`.
    pub fn holder(&self, key: i64) -> Option<ActorId> {
        self.locks.get(&key).and_then(|l| l.holder)
    }

    fn release(&mut self, key: i64) {
        let lock = self.locks.get_mut(&key).expect("release of a known lock");
        lock.holder = None;
        if !lock.waiters.is_empty() {
            let next = lock.waiters.remove(0);
            lock.holder = Some(next);
            self.granted.push(next);
        }
        if lock.holder.is_none() {
            self.locks.remove(&key);
        }
    }
}

impl Subsystem for Mutex {
    type Op = MutexOp;

    fn name(&self) -> &'static str {
        "mutex"
    }

    fn renamable(&self) -> Result<(), String> {
        Ok(())
    }

    fn rename(&mut self, r: &Renaming) {
        let locks = std::mem::take(&mut self.locks);
        self.locks = locks
            .into_iter()
            .map(|(key, Lock { holder, waiters })| {
                let waiters = waiters.into_iter().map(|a| r.actor(a)).collect();
                (r.int(key), Lock { holder: holder.map(|a| r.actor(a)), waiters })
            })
            .collect();
        self.granted.iter_mut().for_each(|a| *a = r.actor(*a));
    }

    /// The locks `actor` holds or waits for (keys as `abstracting` names them), and where in
    /// each queue.
    fn actor_signature(&self, actor: ActorId, abstracting: &Renaming, out: &mut ByteSink<'_>) {
        let mine = self.locks.iter().filter(|(_, l)| l.holder == Some(actor) || l.waiters.contains(&actor));
        mine.clone().count().hash(out);
        for (&k, l) in mine {
            (abstracting.int(k), l.holder == Some(actor), l.waiters.iter().position(|&a| a == actor)).hash(out);
        }
        self.granted.contains(&actor).hash(out);
    }

    fn apply(&mut self, actor: ActorId, op: &MutexOp, fp: &mut Footprint) -> Applied {
        match *op {
            MutexOp::Lock(key) => {
                fp.write(resource(1, key));
                let lock = self.locks.entry(key).or_default();
                if lock.holder.is_none() {
                    lock.holder = Some(actor);
                    return Applied::Done(Outcome::Ok);
                }
                assert!(lock.waiters.len() < MAX_WAITERS, "too many waiters on lock {key}");
                lock.waiters.push(actor);
                Applied::Blocked
            }
            MutexOp::TryLock(key) => {
                fp.write(resource(1, key));
                let lock = self.locks.entry(key).or_default();
                let free = lock.holder.is_none();
                if free {
                    lock.holder = Some(actor);
                }
                Applied::Done(Outcome::Bool(free))
            }
            MutexOp::Unlock(key) => {
                fp.write(resource(1, key));
                if self.holder(key) != Some(actor) {
                    return Applied::Done(Outcome::Err(EPERM));
                }
                self.release(key);
                Applied::Done(Outcome::Ok)
            }
        }
    }

    fn is_ready(&self, actor: ActorId) -> bool {
        self.granted.contains(&actor)
    }

    fn take_ready(&mut self, actor: ActorId, _fp: &mut Footprint) -> Option<Outcome> {
        let k = self.granted.iter().position(|&a| a == actor)?;
        self.granted.remove(k);
        Some(Outcome::Ok)
    }

    fn cancel_wait(&mut self, actor: ActorId, fp: &mut Footprint) -> Outcome {
        fp.global();
        if let Some(k) = self.granted.iter().position(|&a| a == actor) {
            // The grant raced the timeout and won: the caller sees the timeout, so release.
            self.granted.remove(k);
            let key = *self.locks.iter().find(|(_, l)| l.holder == Some(actor)).expect("a granted lock").0;
            self.release(key);
        }
        for lock in self.locks.values_mut() {
            lock.waiters.retain(|&a| a != actor);
        }
        Outcome::Err(ErrorCode::ETIMEDOUT)
    }

    fn on_crash(&mut self, dead: &[ActorId], fp: &mut Footprint) {
        fp.global();
        self.granted.retain(|a| !dead.contains(a));
        for lock in self.locks.values_mut() {
            lock.waiters.retain(|a| !dead.contains(a));
        }
        let held: Vec<i64> =
            self.locks.iter().filter(|(_, l)| l.holder.is_some_and(|h| dead.contains(&h))).map(|(k, _)| *k).collect();
        for key in held {
            self.release(key);
        }
    }

    fn describe(&self) -> Vec<String> {
        if self.locks.is_empty() {
            return Vec::new();
        }
        let held: Vec<String> = self
            .locks
            .iter()
            .map(|(k, l)| match l.holder {
                Some(h) => format!("{k} held by #{h}"),
                None => format!("{k} free"),
            })
            .collect();
        vec![format!("mutexes: {}", held.join(", "))]
    }
}
