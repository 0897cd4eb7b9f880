//! Reusable parts a model can add to its world with [`super::World::add_part`]: an in-process
//! mutex, atomic cells, a TTL cache with explored time, a bounded connection pool, and a timer
//! whose sleeps end when a clock actor's ticks say so. Each is a
//! [`Subsystem`] like the built-in database, OS and HTTP boundary.
//!
//! Keys are small integers chosen by the model (a lock per area name, a cell per counter), so
//! that states stay small and hash fast.

use std::collections::BTreeMap;
use std::fmt;

use crate::op::{ActorId, Applied, ErrorCode, Footprint, Outcome, Resource, Value};

use super::subsystem::{PartOp, Subsystem};
use crate::symmetry::Renaming;

/// Upper bound on waiters queued on one lock or pool.
const MAX_WAITERS: usize = crate::op::MAX_ACTORS;

fn resource(kind: u64, key: i64) -> Resource {
    Resource::Custom(kind.wrapping_mul(31).wrapping_add(key as u64))
}

// ---------------------------------------------------------------------------------------------
// Mutex

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

/// Releasing a lock one does not hold.
pub const EPERM: ErrorCode = ErrorCode("EPERM");

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
    fn actor_signature(&self, actor: ActorId, abstracting: &Renaming) -> u128 {
        let mine: Vec<(i64, bool, Option<usize>)> = self
            .locks
            .iter()
            .filter(|(_, l)| l.holder == Some(actor) || l.waiters.contains(&actor))
            .map(|(&k, l)| (abstracting.int(k), l.holder == Some(actor), l.waiters.iter().position(|&a| a == actor)))
            .collect();
        crate::explore::state::fingerprint_of(&(mine, self.granted.contains(&actor)))
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

// ---------------------------------------------------------------------------------------------
// Atomic cells

/// Ops on [`AtomicCells`]. Every op returns the value before it (`Value`), as Rust's atomics do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AtomicOp {
    Load(i64),
    Store(i64, i64),
    FetchAdd(i64, i64),
    /// `compare_exchange(current, new)`: returns `Bool` (swapped or not).
    CompareExchange {
        key: i64,
        current: i64,
        new: i64,
    },
}

impl fmt::Display for AtomicOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AtomicOp::Load(k) => write!(f, "({k})"),
            AtomicOp::Store(k, v) | AtomicOp::FetchAdd(k, v) => write!(f, "({k}, {v})"),
            AtomicOp::CompareExchange { key, current, new } => write!(f, "({key}, {current} → {new})"),
        }
    }
}

impl PartOp for AtomicOp {
    fn is_fallible(&self) -> bool {
        false
    }
}

/// Shared-memory integers by key, each starting at 0. Sequentially consistent: every op is one
/// atomic step. Values survive crashes of single threads only when the cell outlives the
/// process, which is the model's choice (it is not cleared here).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AtomicCells {
    cells: BTreeMap<i64, i64>,
}

impl AtomicCells {
    pub fn new() -> AtomicCells {
        AtomicCells::default()
    }

    pub fn get(&self, key: i64) -> i64 {
        self.cells.get(&key).copied().unwrap_or(0)
    }

    pub fn set(&mut self, key: i64, value: i64) {
        self.cells.insert(key, value);
    }
}

impl Subsystem for AtomicCells {
    type Op = AtomicOp;

    fn name(&self) -> &'static str {
        "atomics"
    }

    fn renamable(&self) -> Result<(), String> {
        Ok(())
    }

    /// Keys and contents are renamed like any value: an owned value names its owner only.
    fn rename(&mut self, r: &Renaming) {
        self.cells = std::mem::take(&mut self.cells).into_iter().map(|(k, v)| (r.int(k), r.int(v))).collect();
    }

    fn apply(&mut self, _actor: ActorId, op: &AtomicOp, fp: &mut Footprint) -> Applied {
        let outcome = match *op {
            AtomicOp::Load(k) => {
                fp.read(resource(2, k));
                Outcome::Value(Value::Int(self.get(k)))
            }
            AtomicOp::Store(k, v) => {
                fp.write(resource(2, k));
                let old = self.get(k);
                self.set(k, v);
                Outcome::Value(Value::Int(old))
            }
            AtomicOp::FetchAdd(k, d) => {
                fp.write(resource(2, k));
                let old = self.get(k);
                self.set(k, old.wrapping_add(d));
                Outcome::Value(Value::Int(old))
            }
            AtomicOp::CompareExchange { key, current, new } => {
                fp.write(resource(2, key));
                let swapped = self.get(key) == current;
                if swapped {
                    self.set(key, new);
                }
                Outcome::Bool(swapped)
            }
        };
        Applied::Done(outcome)
    }

    fn describe(&self) -> Vec<String> {
        if self.cells.is_empty() {
            return Vec::new();
        }
        let cells: Vec<String> = self.cells.iter().map(|(k, v)| format!("{k}={v}")).collect();
        vec![format!("atomics: {}", cells.join(", "))]
    }
}

// ---------------------------------------------------------------------------------------------
// TTL cache

/// Ops on [`TtlCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheOp {
    /// Returns the cached `Value`, or `Value::Null` on a miss (absent or expired).
    Get(i64),
    /// Cache a value for `ttl` ticks from now.
    Put(i64, Value),
    Invalidate(i64),
    /// One tick of time passes. A clock actor issues these, so the explorer decides when time
    /// moves relative to everything else.
    Tick,
}

impl fmt::Display for CacheOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheOp::Get(k) | CacheOp::Invalidate(k) => write!(f, "({k})"),
            CacheOp::Put(k, v) => write!(f, "({k}={v})"),
            CacheOp::Tick => Ok(()),
        }
    }
}

impl PartOp for CacheOp {
    fn is_fallible(&self) -> bool {
        false
    }
}

/// A per-process in-memory cache whose entries expire `ttl` ticks after they were put. Time is
/// a counter moved by [`CacheOp::Tick`], never the wall clock. The cache lives in its process:
/// a crash of any of `members` empties it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TtlCache {
    ttl: u32,
    now: u32,
    /// Key → (value, expiry tick).
    entries: BTreeMap<i64, (Value, u32)>,
    members: Vec<ActorId>,
}

impl TtlCache {
    /// A cache whose entries live `ttl` ticks, in the process of `members`.
    pub fn new(ttl: u32, members: Vec<ActorId>) -> TtlCache {
        assert!(ttl > 0, "a TTL of zero caches nothing");
        TtlCache { ttl, now: 0, entries: BTreeMap::new(), members }
    }

    /// The live entry for `key`, if any.
    pub fn peek(&self, key: i64) -> Option<Value> {
        self.entries.get(&key).filter(|(_, exp)| *exp > self.now).map(|(v, _)| *v)
    }

    pub fn now(&self) -> u32 {
        self.now
    }
}

impl Subsystem for TtlCache {
    type Op = CacheOp;

    fn name(&self) -> &'static str {
        "cache"
    }

    fn renamable(&self) -> Result<(), String> {
        Ok(())
    }

    fn rename(&mut self, r: &Renaming) {
        let entries = std::mem::take(&mut self.entries);
        self.entries = entries.into_iter().map(|(k, (v, expiry))| (r.int(k), (r.value(v), expiry))).collect();
        self.members.iter_mut().for_each(|a| *a = r.actor(*a));
        self.members.sort_unstable();
    }

    fn apply(&mut self, _actor: ActorId, op: &CacheOp, fp: &mut Footprint) -> Applied {
        let outcome = match *op {
            CacheOp::Get(k) => {
                fp.read(resource(3, k));
                fp.read(resource(3, i64::MIN));
                Outcome::Value(self.peek(k).unwrap_or(Value::Null))
            }
            CacheOp::Put(k, v) => {
                fp.write(resource(3, k));
                fp.read(resource(3, i64::MIN));
                self.entries.insert(k, (v, self.now.saturating_add(self.ttl)));
                Outcome::Ok
            }
            CacheOp::Invalidate(k) => {
                fp.write(resource(3, k));
                self.entries.remove(&k);
                Outcome::Ok
            }
            CacheOp::Tick => {
                fp.write(resource(3, i64::MIN));
                fp.global();
                self.now = self.now.checked_add(1).expect("cache clock overflow");
                let now = self.now;
                // Expired entries are dropped so that equal futures hash equal.
                self.entries.retain(|_, (_, exp)| *exp > now);
                Outcome::Ok
            }
        };
        Applied::Done(outcome)
    }

    fn on_crash(&mut self, dead: &[ActorId], fp: &mut Footprint) {
        if dead.iter().any(|a| self.members.contains(a)) {
            fp.global();
            self.entries.clear();
        }
    }

    fn describe(&self) -> Vec<String> {
        let live: Vec<String> = self.entries.iter().map(|(k, (v, exp))| format!("{k}={v} until t{exp}")).collect();
        vec![format!("cache at t{}: {}", self.now, if live.is_empty() { "empty".into() } else { live.join(", ") })]
    }
}

// ---------------------------------------------------------------------------------------------
// Connection pool

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

    /// Old slot → new slot: the slots every checkout treats alike, numbered in the order of
    /// their renamed holders (a slot handed over but not collected after one held, then free
    /// slots), ties in their old order. An actor's two slots thus keep their relative order.
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn slot_renumbering(&self, r: &Renaming) -> Vec<(i64, i64)> {
        let mut order: Vec<(ActorId, bool, usize)> = (0..self.slots.len())
            .map(|s| {
                let granted = self.granted.iter().any(|&(_, g)| usize::from(g) == s);
                (self.slots[s].map_or(ActorId::MAX, |a| r.actor(a)), granted, s)
            })
            .collect();
        order.sort_unstable();
        order.iter().enumerate().map(|(new, &(_, _, old))| (old as i64, new as i64)).collect()
    }

    fn hand_over(&mut self, slot: usize) {
        if self.waiters.is_empty() {
            self.slots[slot] = None;
            return;
        }
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
    /// `r` gives them ([`ConnectionPool::slot_renumbering`], or kept).
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

    /// How many slots `actor` holds, whether one was handed to it, where it waits.
    fn actor_signature(&self, actor: ActorId, _: &Renaming) -> u128 {
        let held = self.slots.iter().filter(|&&h| h == Some(actor)).count();
        let granted = self.granted.iter().any(|&(a, _)| a == actor);
        let queued = self.waiters.iter().position(|&a| a == actor);
        crate::explore::state::fingerprint_of(&(held, granted, queued))
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
                        self.hand_over(slot);
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
            self.waiters.remove(k);
            return Some(Outcome::Err(POOL_TIMEOUT));
        }
        None
    }

    fn cancel_wait(&mut self, actor: ActorId, fp: &mut Footprint) -> Outcome {
        fp.global();
        if let Some(k) = self.granted.iter().position(|&(a, _)| a == actor) {
            let (_, slot) = self.granted.remove(k);
            self.hand_over(usize::from(slot));
        }
        self.waiters.retain(|&a| a != actor);
        Outcome::Err(POOL_TIMEOUT)
    }

    fn on_crash(&mut self, dead: &[ActorId], fp: &mut Footprint) {
        fp.global();
        self.waiters.retain(|a| !dead.contains(a));
        self.granted.retain(|(a, _)| !dead.contains(a));
        for slot in 0..self.slots.len() {
            if self.slots[slot].is_some_and(|h| dead.contains(&h)) {
                self.hand_over(slot);
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

// ---------------------------------------------------------------------------------------------
// Timer

/// Ops on [`Timer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerOp {
    /// `time.sleep(n)`: waits until `n` ticks have passed.
    Sleep(u32),
    /// One tick of time passes, for every sleeper at once. A clock actor issues these, so the
    /// explorer decides when a sleep ends relative to everything else. While nobody sleeps the
    /// passing of time changes nothing, so a tick waits (idle, never deadlocked) for a sleeper.
    Tick,
}

impl fmt::Display for TimerOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimerOp::Sleep(n) => write!(f, "({n})"),
            TimerOp::Tick => Ok(()),
        }
    }
}

impl PartOp for TimerOp {
    fn is_fallible(&self) -> bool {
        false
    }
}

/// Sleeps that end when a clock actor's ticks say so, never by the wall clock. A sleeper whose
/// ticks have passed is ready; until then it waits (a timeout fault interrupts it: `ETIMEDOUT`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Timer {
    /// Each sleeper with the ticks it still has to wait, in the order they fell asleep.
    sleepers: Vec<(ActorId, u32)>,
    /// Clocks whose tick waits for a sleeper.
    idle_clocks: Vec<ActorId>,
}

impl Timer {
    pub fn new() -> Timer {
        Timer::default()
    }

    /// Actors asleep now, woken or not.
    pub fn sleepers(&self) -> usize {
        self.sleepers.len()
    }

    fn tick(&mut self) {
        for (_, left) in &mut self.sleepers {
            *left = left.saturating_sub(1);
        }
    }
}

impl Subsystem for Timer {
    type Op = TimerOp;

    fn name(&self) -> &'static str {
        "timer"
    }

    fn renamable(&self) -> Result<(), String> {
        Ok(())
    }

    fn rename(&mut self, r: &Renaming) {
        self.sleepers.iter_mut().for_each(|(a, _)| *a = r.actor(*a));
        self.idle_clocks.iter_mut().for_each(|a| *a = r.actor(*a));
    }

    /// Where `actor` sleeps and how long it has left, or where it waits as a clock.
    fn actor_signature(&self, actor: ActorId, _: &Renaming) -> u128 {
        let asleep = self.sleepers.iter().position(|&(a, _)| a == actor).map(|k| (k, self.sleepers[k].1));
        crate::explore::state::fingerprint_of(&(asleep, self.idle_clocks.iter().position(|&a| a == actor)))
    }

    fn apply(&mut self, actor: ActorId, op: &TimerOp, fp: &mut Footprint) -> Applied {
        fp.write(resource(5, 0));
        match *op {
            TimerOp::Sleep(0) => Applied::Done(Outcome::Ok),
            TimerOp::Sleep(n) => {
                assert!(self.sleepers.len() < MAX_WAITERS, "too many sleepers");
                self.sleepers.push((actor, n));
                Applied::Blocked
            }
            TimerOp::Tick if self.sleepers.is_empty() => {
                assert!(self.idle_clocks.len() < MAX_WAITERS, "too many clocks");
                self.idle_clocks.push(actor);
                Applied::Blocked
            }
            TimerOp::Tick => {
                self.tick();
                Applied::Done(Outcome::Ok)
            }
        }
    }

    fn is_ready(&self, actor: ActorId) -> bool {
        self.sleepers.iter().any(|&(a, left)| a == actor && left == 0)
            || (self.idle_clocks.contains(&actor) && !self.sleepers.is_empty())
    }

    fn take_ready(&mut self, actor: ActorId, fp: &mut Footprint) -> Option<Outcome> {
        fp.write(resource(5, 0));
        if let Some(k) = self.sleepers.iter().position(|&(a, left)| a == actor && left == 0) {
            self.sleepers.remove(k);
            return Some(Outcome::Ok);
        }
        let k = self.idle_clocks.iter().position(|&a| a == actor).filter(|_| !self.sleepers.is_empty())?;
        self.idle_clocks.remove(k);
        self.tick();
        Some(Outcome::Ok)
    }

    fn cancel_wait(&mut self, actor: ActorId, fp: &mut Footprint) -> Outcome {
        fp.global();
        self.sleepers.retain(|&(a, _)| a != actor);
        self.idle_clocks.retain(|&a| a != actor);
        Outcome::Err(ErrorCode::ETIMEDOUT)
    }

    fn on_crash(&mut self, dead: &[ActorId], fp: &mut Footprint) {
        fp.global();
        self.sleepers.retain(|(a, _)| !dead.contains(a));
        self.idle_clocks.retain(|a| !dead.contains(a));
    }

    /// A clock is idle only while there is nobody to wake; once someone sleeps, its tick is due.
    fn is_idle(&self, actor: ActorId) -> bool {
        self.idle_clocks.contains(&actor) && self.sleepers.is_empty()
    }

    fn describe(&self) -> Vec<String> {
        if self.sleepers.is_empty() {
            return Vec::new();
        }
        let asleep: Vec<String> = self.sleepers.iter().map(|(a, left)| format!("#{a} for {left} more ticks")).collect();
        vec![format!("asleep: {}", asleep.join(", "))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{Op, Sql};
    use crate::sim::{Schema, TableDef, World};

    fn fp() -> Footprint {
        Footprint::default()
    }

    #[test]
    fn mutex_hands_over_fifo_and_is_not_reentrant() {
        let mut m = Mutex::new();
        assert_eq!(m.apply(0, &MutexOp::Lock(7), &mut fp()), Applied::Done(Outcome::Ok));
        assert_eq!(m.apply(1, &MutexOp::Lock(7), &mut fp()), Applied::Blocked);
        assert_eq!(m.apply(2, &MutexOp::Lock(7), &mut fp()), Applied::Blocked);
        assert_eq!(m.apply(0, &MutexOp::TryLock(7), &mut fp()), Applied::Done(Outcome::Bool(false)));
        assert_eq!(m.apply(1, &MutexOp::Unlock(7), &mut fp()), Applied::Done(Outcome::Err(EPERM)));
        assert_eq!(m.apply(0, &MutexOp::Unlock(7), &mut fp()), Applied::Done(Outcome::Ok));
        assert!(m.is_ready(1) && !m.is_ready(2));
        assert_eq!(m.holder(7), Some(1));
        assert_eq!(m.take_ready(1, &mut fp()), Some(Outcome::Ok));
        // Re-locking a held lock waits on itself: the explorer reports the deadlock.
        assert_eq!(m.apply(1, &MutexOp::Lock(7), &mut fp()), Applied::Blocked);
        assert!(!m.is_ready(1));
    }

    #[test]
    fn mutex_crash_releases_to_the_next_waiter_and_timeout_dequeues() {
        let mut m = Mutex::new();
        m.apply(0, &MutexOp::Lock(1), &mut fp());
        m.apply(1, &MutexOp::Lock(1), &mut fp());
        m.apply(2, &MutexOp::Lock(1), &mut fp());
        assert_eq!(m.cancel_wait(1, &mut fp()), Outcome::Err(ErrorCode::ETIMEDOUT));
        m.on_crash(&[0], &mut fp());
        assert_eq!(m.holder(1), Some(2));
        assert!(m.is_ready(2) && !m.is_ready(1));
    }

    #[test]
    fn atomics_return_the_previous_value() {
        let mut a = AtomicCells::new();
        let run = |a: &mut AtomicCells, op| match a.apply(0, &op, &mut fp()) {
            Applied::Done(o) => o,
            Applied::Blocked => panic!("atomics never wait"),
        };
        assert_eq!(run(&mut a, AtomicOp::FetchAdd(3, 5)), Outcome::Value(Value::Int(0)));
        assert_eq!(run(&mut a, AtomicOp::Load(3)), Outcome::Value(Value::Int(5)));
        assert_eq!(run(&mut a, AtomicOp::CompareExchange { key: 3, current: 4, new: 9 }), Outcome::Bool(false));
        assert_eq!(run(&mut a, AtomicOp::CompareExchange { key: 3, current: 5, new: 9 }), Outcome::Bool(true));
        assert_eq!(run(&mut a, AtomicOp::Store(3, 1)), Outcome::Value(Value::Int(9)));
        assert_eq!(a.get(3), 1);
    }

    #[test]
    fn cache_entries_expire_after_ttl_ticks_and_die_with_the_process() {
        let mut c = TtlCache::new(2, vec![0, 1]);
        let get = |c: &mut TtlCache| match c.apply(0, &CacheOp::Get(1), &mut fp()) {
            Applied::Done(Outcome::Value(v)) => v,
            other => panic!("{other:?}"),
        };
        c.apply(0, &CacheOp::Put(1, Value::Int(42)), &mut fp());
        assert_eq!(get(&mut c), Value::Int(42));
        c.apply(2, &CacheOp::Tick, &mut fp());
        assert_eq!(get(&mut c), Value::Int(42));
        c.apply(2, &CacheOp::Tick, &mut fp());
        assert_eq!(get(&mut c), Value::Null);
        c.apply(0, &CacheOp::Put(1, Value::Int(7)), &mut fp());
        c.on_crash(&[2], &mut fp());
        assert_eq!(c.peek(1), Some(Value::Int(7)), "a crash elsewhere leaves this process's cache");
        c.on_crash(&[1], &mut fp());
        assert_eq!(c.peek(1), None);
    }

    #[test]
    fn pool_waits_beyond_size_plus_overflow_and_times_out_when_the_explorer_says() {
        let mut p = ConnectionPool::new(1, 1, true);
        assert_eq!(p.apply(0, &PoolOp::Checkout, &mut fp()), Applied::Done(Outcome::Value(Value::Int(0))));
        assert_eq!(p.apply(1, &PoolOp::Checkout, &mut fp()), Applied::Done(Outcome::Value(Value::Int(1))));
        assert_eq!(p.apply(2, &PoolOp::Checkout, &mut fp()), Applied::Blocked);
        assert_eq!(p.apply(3, &PoolOp::Checkout, &mut fp()), Applied::Blocked);
        // With a checkout timeout the waiter can always move: before a checkin, it times out.
        assert!(p.is_ready(2));
        assert_eq!(p.take_ready(2, &mut fp()), Some(Outcome::Err(POOL_TIMEOUT)));
        assert_eq!(p.apply(1, &PoolOp::Checkin(1), &mut fp()), Applied::Done(Outcome::Ok));
        assert_eq!(p.take_ready(3, &mut fp()), Some(Outcome::Value(Value::Int(1))));
        assert_eq!(p.apply(0, &PoolOp::Checkin(1), &mut fp()), Applied::Done(Outcome::Err(EPERM)));
        assert_eq!(p.in_use(), 2);
    }

    #[test]
    fn a_renamed_pool_equals_the_pool_built_with_the_renamed_holders() {
        use crate::symmetry::{Renaming, Symmetry};
        // Hooks 0 and 1 check out in turn; hook 2 waits.
        let build = |first: ActorId, second: ActorId| {
            let mut world = World::new(Schema::default(), 3);
            let pool = world.add_part(ConnectionPool::new(1, 1, false));
            for actor in [first, second, 2] {
                world.apply(actor, &pool.op("checkout", PoolOp::Checkout));
            }
            world
        };
        let symmetry = Symmetry::group(0..3, Vec::new()).renumbering();
        let swap = Renaming::new(vec![1, 0, 2], &[], &symmetry);
        let mut swapped = build(0, 1);
        let numbered = swapped.rename(&swap).expect("slots renumbered");
        // Hook 1 (was 0) holds slot 1 (was 0): slots follow their holders, so hook 0 (was 1)
        // holds slot 0, as when hook 0 checked out first.
        assert_eq!(swapped, build(0, 1));
        assert_eq!((numbered.slot(0), numbered.slot(1)), (1, 0));
        // The state built with the renamed holders (hook 1 first), numbered the same way.
        let mut renamed_ids = build(1, 0);
        assert_ne!(renamed_ids, build(0, 1));
        renamed_ids.rename(&Renaming::new(vec![0, 1, 2], &[], &symmetry));
        assert_eq!(renamed_ids, swapped);
        // Without the model's word, slots keep their numbers: who holds them is renamed only.
        let mut kept = build(0, 1);
        assert!(kept.rename(&Renaming::new(vec![1, 0, 2], &[], &Symmetry::group(0..3, Vec::new()))).is_none());
        assert_eq!(kept, build(1, 0));
    }

    #[test]
    fn pool_without_timeout_waits_until_a_crash_returns_a_connection() {
        let mut p = ConnectionPool::new(1, 0, false);
        p.apply(0, &PoolOp::Checkout, &mut fp());
        assert_eq!(p.apply(1, &PoolOp::Checkout, &mut fp()), Applied::Blocked);
        assert!(!p.is_ready(1));
        p.on_crash(&[0], &mut fp());
        assert_eq!(p.take_ready(1, &mut fp()), Some(Outcome::Value(Value::Int(0))));
    }

    #[test]
    fn a_sleep_ends_only_after_its_ticks() {
        let mut t = Timer::new();
        assert_eq!(t.apply(0, &TimerOp::Sleep(0), &mut fp()), Applied::Done(Outcome::Ok));
        assert_eq!(t.apply(0, &TimerOp::Sleep(2), &mut fp()), Applied::Blocked);
        assert_eq!(t.apply(1, &TimerOp::Sleep(1), &mut fp()), Applied::Blocked);
        assert!(!t.is_ready(0) && !t.is_ready(1));
        assert_eq!(t.apply(2, &TimerOp::Tick, &mut fp()), Applied::Done(Outcome::Ok));
        assert!(!t.is_ready(0) && t.is_ready(1));
        assert_eq!(t.take_ready(1, &mut fp()), Some(Outcome::Ok));
        t.apply(2, &TimerOp::Tick, &mut fp());
        assert_eq!(t.take_ready(0, &mut fp()), Some(Outcome::Ok));
        assert_eq!(t.sleepers(), 0);
        t.apply(0, &TimerOp::Sleep(5), &mut fp());
        t.on_crash(&[0], &mut fp());
        assert_eq!(t.sleepers(), 0);
    }

    #[test]
    fn a_tick_with_nobody_asleep_waits_idle_for_a_sleeper() {
        let mut t = Timer::new();
        assert_eq!(t.apply(2, &TimerOp::Tick, &mut fp()), Applied::Blocked);
        assert!(t.is_idle(2) && !t.is_ready(2));
        assert_eq!(t.apply(0, &TimerOp::Sleep(1), &mut fp()), Applied::Blocked);
        assert!(t.is_ready(2) && !t.is_idle(2) && !t.is_ready(0));
        assert_eq!(t.take_ready(2, &mut fp()), Some(Outcome::Ok));
        assert!(!t.is_idle(2) && t.is_ready(0));
    }

    #[test]
    fn parts_route_through_the_world_and_a_crash_reaches_them() {
        let mut world = World::new(Schema::default(), 2);
        let lock = world.add_part(Mutex::new());
        world.os.start_process(&[0]);
        world.os.start_process(&[1]);
        assert_eq!(world.apply(0, &lock.op("acquire", MutexOp::Lock(5))), Applied::Done(Outcome::Ok));
        assert_eq!(world.apply(1, &lock.op("acquire", MutexOp::Lock(5))), Applied::Blocked);
        assert_eq!(lock.op("acquire", MutexOp::Lock(5)).label(), "acquire(5)");
        assert!(!world.is_ready(1));
        world.crash(0);
        assert!(world.is_ready(1));
        assert_eq!(world.take_ready(1), Some(Outcome::Ok));
        assert_eq!(world.part(lock).holder(5), Some(1));
        assert!(world.describe().iter().any(|l| l == "mutexes: 5 held by #1"), "{:?}", world.describe());
    }

    #[test]
    fn a_commit_whose_reply_is_lost_took_effect() {
        let schema = Schema { tables: vec![TableDef { name: "t", columns: vec!["id"], unique: vec![] }] };
        let mut world = World::new(schema, 2);
        let (c0, c1) = (world.connect(0), world.connect(1));
        let run = |w: &mut World, actor, conn, stmt| match w.apply(actor, &Op::sql("s", conn, stmt)) {
            Applied::Done(o) => o,
            Applied::Blocked => panic!("nothing waits here"),
        };
        run(&mut world, 0, c0, Sql::Begin);
        let insert = Sql::Insert { table: "t", row: vec![Value::Int(1)], on_conflict: crate::op::OnConflict::Error };
        run(&mut world, 0, c0, insert);
        let commit = Op::sql("commit", c0, Sql::Commit);
        let Applied::Done(outcome) = world.apply(0, &commit) else { panic!("commit waits") };
        assert_eq!(outcome, Outcome::Ok);
        let seen = world.lose_reply(0, &commit, outcome);
        assert_eq!(seen, Outcome::Err(ErrorCode::QUERY_CANCELED), "the client saw a timeout");
        let rows = run(&mut world, 1, c1, Sql::Select { table: "t", filter: vec![], lock: None });
        assert_eq!(rows.rows().len(), 1, "yet the row is committed for everyone else");
    }
}
