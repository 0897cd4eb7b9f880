//! [`TtlCache`]: a per-process cache whose entries expire after explored ticks.

use std::collections::BTreeMap;
use std::fmt;

use crate::op::{ActorId, Applied, Footprint, Outcome, Value};
use crate::sim::subsystem::{PartOp, Subsystem};
use crate::symmetry::Renaming;

use super::resource;

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
