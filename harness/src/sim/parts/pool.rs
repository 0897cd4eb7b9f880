//! [`ConnectionPool`]: a bounded pool with overflow and an optional checkout timeout.

use std::fmt;
use std::hash::Hash;

use crate::explore::state::ByteSink;

use crate::op::{ActorId, Applied, ErrorCode, Footprint, Outcome, Value};
use crate::sim::subsystem::{PartOp, Subsystem};
use crate::symmetry::{Renaming, Renumbering};

use super::{resource, EPERM, MAX_WAITERS};

/// Ops on [`ConnectionPool`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolOp {
    /// Take a connection: returns `Value(Int(n))`, the n-th checkout slot. Waits while `size +
    /// overflow` are out; with a checkout timeout the wait may end in `Err(POOL_TIMEOUT)`.
    Checkout,
    /// Return slot `n`.
    Checkin(i64),
}

impl fmt::Display for PoolOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolOp::Checkout => Ok(()),
            PoolOp::Checkin(n) => write!(f, "({n})"),
        }
    }
}

impl PartOp for PoolOp {
    fn is_fallible(&self) -> bool {
        matches!(self, PoolOp::Checkout)
    }
}

/// SQLAlchemy's `TimeoutError: QueuePool limit … reached, connection timed out`.
pub const POOL_TIMEOUT: ErrorCode = ErrorCode("POOL_TIMEOUT");

/// A bounded pool (SQLAlchemy's `QueuePool`): `size` connections plus `overflow` more on demand;
/// further checkouts wait, oldest first. With `checkout_timeout`, a waiting checkout is always
/// ready to move: if a connection was handed to it, it gets it; otherwise its timer has fired
/// and it fails with [`POOL_TIMEOUT`]. The explorer decides when the timer fires, by when it
/// steps the waiter. Without a timeout it waits forever, as `pool_timeout=None` does.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionPool {
    size: u8,
    overflow: u8,
    checkout_timeout: bool,
    /// Who holds each slot.
    slots: Vec<Option<ActorId>>,
    /// Waiting checkouts, oldest first.
    waiters: Vec<ActorId>,
    /// Waiters handed a slot, not collected yet.
    granted: Vec<(ActorId, u8)>,
}

impl ConnectionPool {
    pub fn new(size: u8, overflow: u8, checkout_timeout: bool) -> ConnectionPool {
        let total = usize::from(size) + usize::from(overflow);
        assert!(total > 0 && total <= 64, "a pool holds 1..=64 connections");
        ConnectionPool {
            size,
            overflow,
            checkout_timeout,
            slots: vec![None; total],
            waiters: Vec::new(),
            granted: Vec::new(),
        }
    }

    /// Connections checked out now.
    pub fn in_use(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Actors waiting for a connection.
    pub fn waiting(&self) -> &[ActorId] {
        &self.waiters
    }

    /// Slots in all, out or not.
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Old slot → new slot: the slots every checkout treats alike, numbered in the order of
    /// their renamed holders (a slot handed over but not collected after one held, then free
    /// slots), ties in their old order. An actor's two slots thus keep their relative order.
    pub(crate) fn slot_renumbering(&self, r: &Renaming) -> Renumbering {
        let mut order: Vec<((ActorId, bool), usize)> =
            (0..self.slots.len()).map(|s| (self.slot_order(s, |a| r.actor(a)), s)).collect();
        order.sort_unstable();
        Renumbering::in_order(0, order.len(), order.iter().map(|&(_, old)| old))
    }

    /// What [`ConnectionPool::slot_renumbering`] orders slot `s` by, once `rename` renames
    /// actors: its holder, then whether it was handed over but not collected.
    fn slot_order(&self, s: usize, rename: impl Fn(ActorId) -> ActorId) -> (ActorId, bool) {
        let granted = self.granted.iter().any(|&(_, g)| usize::from(g) == s);
        (self.slots[s].map_or(ActorId::MAX, rename), granted)
    }

    /// Are the slots numbered as [`ConnectionPool::slot_renumbering`] numbers them for a
    /// renaming that keeps every actor?
    pub(crate) fn slots_in_order(&self) -> bool {
        (1..self.slots.len()).all(|s| self.slot_order(s - 1, |a| a) <= self.slot_order(s, |a| a))
    }

    /// Return `slot`: to the oldest waiter if any, which moves every waiter up the queue.
    fn hand_over(&mut self, slot: usize, fp: &mut Footprint) {
        if self.waiters.is_empty() {
            self.slots[slot] = None;
            return;
        }
        self.waiters.iter().for_each(|&a| fp.signature_changed(a));
        let next = self.waiters.remove(0);
        self.slots[slot] = Some(next);
        self.granted.push((next, slot as u8));
    }
}

impl Subsystem for ConnectionPool {
    type Op = PoolOp;

    fn name(&self) -> &'static str {
        "pool"
    }

    fn renamable(&self) -> Result<(), String> {
        Ok(())
    }

    /// Who holds or waits for a slot is renamed; the slots themselves move to the numbers
    /// `r` gives them (`ConnectionPool::slot_renumbering`, or kept).
    fn rename(&mut self, r: &Renaming) {
        let mut slots = vec![None; self.slots.len()];
        for (s, holder) in self.slots.iter().enumerate() {
            slots[r.slot(s as i64) as usize] = holder.map(|a| r.actor(a));
        }
        self.slots = slots;
        self.waiters.iter_mut().for_each(|a| *a = r.actor(*a));
        for (a, slot) in &mut self.granted {
            *a = r.actor(*a);
            *slot = r.slot(i64::from(*slot)) as u8;
        }
    }

    fn reports_signature_changes(&self) -> bool {
        true
    }

    /// How many slots `actor` holds, whether one was handed to it, where it waits.
    fn actor_signature(&self, actor: ActorId, _: &Renaming, out: &mut ByteSink<'_>) {
        let held = self.slots.iter().filter(|&&h| h == Some(actor)).count();
        let granted = self.granted.iter().any(|&(a, _)| a == actor);
        let queued = self.waiters.iter().position(|&a| a == actor);
        (held, granted, queued).hash(out);
    }

    fn apply(&mut self, actor: ActorId, op: &PoolOp, fp: &mut Footprint) -> Applied {
        fp.write(resource(4, 0));
        match *op {
            PoolOp::Checkout => match self.slots.iter().position(Option::is_none) {
                Some(slot) => {
                    self.slots[slot] = Some(actor);
                    Applied::Done(Outcome::Value(Value::Int(slot as i64)))
                }
                None => {
                    assert!(self.waiters.len() < MAX_WAITERS, "too many waiters on the pool");
                    self.waiters.push(actor);
                    Applied::Blocked
                }
            },
            PoolOp::Checkin(n) => {
                let slot = usize::try_from(n).ok().filter(|&s| s < self.slots.len());
                match slot {
                    Some(slot) if self.slots[slot] == Some(actor) => {
                        self.hand_over(slot, fp);
                        Applied::Done(Outcome::Ok)
                    }
                    _ => Applied::Done(Outcome::Err(EPERM)),
                }
            }
        }
    }

    fn is_ready(&self, actor: ActorId) -> bool {
        self.granted.iter().any(|&(a, _)| a == actor) || (self.checkout_timeout && self.waiters.contains(&actor))
    }

    fn take_ready(&mut self, actor: ActorId, fp: &mut Footprint) -> Option<Outcome> {
        fp.write(resource(4, 0));
        if let Some(k) = self.granted.iter().position(|&(a, _)| a == actor) {
            let (_, slot) = self.granted.remove(k);
            return Some(Outcome::Value(Value::Int(i64::from(slot))));
        }
        if self.checkout_timeout {
            let k = self.waiters.iter().position(|&a| a == actor)?;
            self.waiters[k..].iter().for_each(|&a| fp.signature_changed(a));
            self.waiters.remove(k);
            return Some(Outcome::Err(POOL_TIMEOUT));
        }
        None
    }

    fn cancel_wait(&mut self, actor: ActorId, fp: &mut Footprint) -> Outcome {
        fp.global();
        if let Some(k) = self.granted.iter().position(|&(a, _)| a == actor) {
            let (_, slot) = self.granted.remove(k);
            self.hand_over(usize::from(slot), fp);
        }
        self.waiters.retain(|&a| a != actor);
        Outcome::Err(POOL_TIMEOUT)
    }

    fn on_crash(&mut self, dead: &[ActorId], fp: &mut Footprint) {
        let signatures = fp.signatures;
        fp.global();
        fp.signatures = signatures;
        // Waiters behind a dead one move up the queue.
        self.waiters.iter().for_each(|&a| fp.signature_changed(a));
        self.waiters.retain(|a| !dead.contains(a));
        self.granted.retain(|(a, _)| !dead.contains(a));
        for slot in 0..self.slots.len() {
            if self.slots[slot].is_some_and(|h| dead.contains(&h)) {
                self.hand_over(slot, fp);
            }
        }
    }

    fn describe(&self) -> Vec<String> {
        vec![format!(
            "pool: {} of {}+{} connections out, {} waiting",
            self.in_use(),
            self.size,
            self.overflow,
            self.waiters.len()
        )]
    }
}
