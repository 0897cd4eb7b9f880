//! # `pool-exhaustion`: each locked operation holds two pooled connections
//!
//! Seed `004_a5c38daeb850dd15.txt`, "Constraints and Gotchas", 1 and 2:
//!
//! > **Dual-connection cost** -- Each locked operation uses 2 connections (1 lock, 1 work). Pool
//! > increased to 25 total to accommodate.
//! > **Lock contention on rapid hooks** -- […] Under rapid stop+session_end, the second hook
//! > waits up to 15s.
//!
//! and "Phase 1": "Increase connection pool size (pool_size: 10->15, max_overflow: 5->10)".
//!
//! ## The race
//!
//! A hook checks out a connection for `advisory_lock(AGENT, agent.id)`, takes the lock on it,
//! and only then checks out its work connection (SQLAlchemy's session). Hooks of one agent that
//! arrive together each hold a lock connection while they wait for the AGENT lock. When they
//! hold every connection the pool has, the lock holder waits for a work connection that only
//! they could return, and they wait for its lock: a cycle through the pool, which PostgreSQL
//! cannot see (the pool is in the application) and which no lock timeout breaks when the wait is
//! unbounded. The harness's deadlock check sees it.
//!
//! ## Variants
//!
//! - `small-pool` (as found): `pool_size` + `max_overflow` no more than the peak of concurrent
//!   hooks; checkouts wait without a bound. Explored exhaustively scaled down (a pool of 2 + 1
//!   and 3 hooks), the way the seed's 10 + 5 meets 15 hooks or more.
//! - `small-pool-at-peak`: the same code at the seed's sizes, pool 10 + overflow 5 and 16 hooks,
//!   too large to enumerate: explored with PCT (its scenario sets the mode).
//! - `sized-pool` (the seed's Phase 1, generalised): `pool_size` + `max_overflow` ≥ peak hooks
//!   + 1, so the lock holder always finds its work connection.
//! - `checkout-timeout` (ours): the small pool with a bounded checkout wait (`pool_timeout`); the
//!   excess hook fails with SQLAlchemy's `TimeoutError`, unwinds, and releases what it held.
//!
//! Which variants do not hold: `small-pool` and `small-pool-at-peak`. Scaled down, in 7 steps
//! hook 1 checks out a connection and takes the lock, hooks 2 and 3 check out the other two and
//! wait for the lock, and hook 1 waits for its work connection forever (`racelab explain
//! pool-exhaustion/small-pool`). At the seed's sizes PCT finds the same cycle with 15 hooks
//! holding all 15 connections (500 schedules of depth 2 from seed 0; found in schedule 47, shrunk
//! to 41 steps). `sized-pool` (2 + 1 for 2 hooks) and `checkout-timeout` (1 + 1 for 2 hooks) hold,
//! explored completely with 1 crash per execution; their scenarios use 2 hooks so that
//! PostgreSQL's stateless enumeration completes too. With 3 hooks (3 + 1, and 2 + 1 with the
//! timeout) both hold on the simulator as well, with 1 crash per execution (24,320 and 24,609 states). Whether the seed's 15 + 10 suffices depends only on
//! the peak: by the same cycle, one agent's hooks deadlock it once there are as many of them as
//! connections (25), and not before.
//!
//! ## Invariant
//!
//! Never a deadlock; a hook that cannot get a connection fails with a timeout error and never
//! hangs.

use racelab_harness::catalogue::{DynModel, Params, RaceDef, VariantDef};
use racelab_harness::model::{Actor, Invariant, Model, Phase, Status, Target, View};
use racelab_harness::op::{ConnId, ErrorCode, LockScope, Op, Outcome, Sql, Value};
use racelab_harness::sim::parts::{ConnectionPool, PoolOp, POOL_TIMEOUT};
use racelab_harness::sim::{PartId, Schema, World};
use racelab_harness::symmetry::{Renaming, Symmetry};

const AGENT_KEY: i64 = (1 << 32) | 1;

pub const NO_HOOK_HANGS: &str = "no-hook-hangs";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    SmallPool,
    SmallPoolAtPeak,
    SizedPool,
    CheckoutTimeout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pc {
    CheckoutLock,
    Lock,
    CheckoutWork,
    Work,
    CheckinWork,
    Unlock,
    CheckinLock,
    Done,
}

/// A hook route: `with advisory_lock(AGENT, agent.id):` then its work on the session.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PooledHook {
    pool: PartId<ConnectionPool>,
    /// The server session behind the lock connection this hook checks out.
    conn: ConnId,
    pc: Pc,
    lock_slot: Option<i64>,
    work_slot: Option<i64>,
    worked: bool,
    failure: Option<ErrorCode>,
}

impl PooledHook {
    /// The exception unwinds: release the lock if it was taken, return what was checked out.
    fn unwind(&mut self, error: ErrorCode, locked: bool) -> Pc {
        self.failure = Some(error);
        match (locked, self.lock_slot) {
            (true, _) => Pc::Unlock,
            (false, Some(_)) => Pc::CheckinLock,
            (false, None) => Pc::Done,
        }
    }
}

fn slot(outcome: &Outcome) -> Option<i64> {
    match outcome {
        Outcome::Value(Value::Int(n)) => Some(*n),
        _ => None,
    }
}

impl Actor for PooledHook {
    /// Hooks differ only in their connection and the pool slots they checked out, which the
    /// world renumbers to follow their holders.
    fn rename(&mut self, r: &Renaming) {
        self.conn = r.conn(self.conn);
        self.lock_slot = self.lock_slot.map(|s| r.slot(s));
        self.work_slot = self.work_slot.map(|s| r.slot(s));
    }

    fn next_op(&self) -> Option<Op> {
        let op = match self.pc {
            Pc::CheckoutLock => self.pool.op("checkout_lock_connection", PoolOp::Checkout),
            Pc::Lock => {
                Op::sql("advisory_lock", self.conn, Sql::AdvisoryLock { key: AGENT_KEY, scope: LockScope::Session })
            }
            Pc::CheckoutWork => self.pool.op("checkout_work_connection", PoolOp::Checkout),
            Pc::Work => Op::local("process_hook"),
            Pc::CheckinWork => self.pool.op("checkin", PoolOp::Checkin(self.work_slot.expect("checked out"))),
            Pc::Unlock => Op::sql("advisory_unlock", self.conn, Sql::AdvisoryUnlock { key: AGENT_KEY }),
            Pc::CheckinLock => self.pool.op("checkin", PoolOp::Checkin(self.lock_slot.expect("checked out"))),
            Pc::Done => return None,
        };
        Some(op)
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        self.pc = match (self.pc, outcome) {
            (Pc::Done, _) => Pc::Done,
            (Pc::CheckoutLock, Outcome::Err(e)) => self.unwind(*e, false),
            (Pc::CheckoutLock, o) => {
                self.lock_slot = slot(o);
                Pc::Lock
            }
            (Pc::Lock, Outcome::Err(e)) => self.unwind(*e, false),
            (Pc::Lock, _) => Pc::CheckoutWork,
            (Pc::CheckoutWork, Outcome::Err(e)) => self.unwind(*e, true),
            (Pc::CheckoutWork, o) => {
                self.work_slot = slot(o);
                Pc::Work
            }
            (Pc::Work, _) => {
                self.worked = true;
                Pc::CheckinWork
            }
            (Pc::CheckinWork, _) => {
                self.work_slot = None;
                Pc::Unlock
            }
            (Pc::Unlock, _) => Pc::CheckinLock,
            (Pc::CheckinLock, _) => {
                self.lock_slot = None;
                Pc::Done
            }
        };
    }
}

/// `hooks` hooks of one agent sharing a pool of `pool_size` + `max_overflow` connections.
pub struct PoolExhaustion {
    pub variant: Variant,
    pub hooks: usize,
    pub pool_size: u8,
    pub max_overflow: u8,
    pub checkout_timeout: bool,
}

impl Model for PoolExhaustion {
    type Actor = PooledHook;

    fn init(&self) -> (World, Vec<PooledHook>) {
        let mut world = World::new(Schema::default(), self.hooks);
        let pool = world.add_part(ConnectionPool::new(self.pool_size, self.max_overflow, self.checkout_timeout));
        let actors = (0..self.hooks)
            .map(|i| PooledHook {
                pool,
                conn: world.connect(i),
                pc: Pc::CheckoutLock,
                lock_slot: None,
                work_slot: None,
                worked: false,
                failure: None,
            })
            .collect();
        (world, actors)
    }

    fn actor_names(&self) -> Vec<String> {
        (1..=self.hooks).map(|i| format!("hook {i}")).collect()
    }

    fn symmetry(&self) -> Option<Symmetry> {
        // Slots are interchangeable too: which one a hook got is only a number it checks in.
        Some(Symmetry::group(0..self.hooks, Vec::new()).renumbering())
    }

    fn invariants(&self) -> Vec<Invariant<PooledHook>> {
        vec![Invariant::new(NO_HOOK_HANGS, no_hook_hangs)]
    }

    fn targets(&self) -> Vec<Target<PooledHook>> {
        let mut targets = vec![
            Target::new("a hook ran its work under the lock", |v: &View<Self::Actor>| {
                v.actors.iter().any(|a| a.worked)
            }),
            Target::new("a hook waited for the lock holding a pooled connection", |v: &View<Self::Actor>| {
                v.actors.iter().zip(v.status).any(|(a, s)| a.pc == Pc::Lock && *s == Status::Waiting)
            }),
        ];
        if self.checkout_timeout {
            targets.push(Target::new("an excess hook failed with a pool timeout", |v: &View<Self::Actor>| {
                v.actors.iter().any(|a| a.failure == Some(POOL_TIMEOUT))
            }));
        }
        targets
    }
}

/// A hook may fail with the pool's timeout error; any other end than completing or that is a
/// failure of the design. Hangs are the harness's deadlock check.
fn no_hook_hangs(view: &View<'_, PooledHook>) -> Result<(), String> {
    if view.phase != Phase::Final {
        return Ok(());
    }
    for (i, (a, status)) in view.actors.iter().zip(view.status).enumerate() {
        if *status != Status::Crashed && a.pc != Pc::Done {
            return Err(format!("hook {} never ends: it waits in {}", i + 1, a.next_op().map_or("?", |op| op.name)));
        }
        if let Some(error) = a.failure.filter(|e| *e != POOL_TIMEOUT) {
            return Err(format!("hook {} failed with {error}, not a timeout", i + 1));
        }
    }
    Ok(())
}

fn build(params: &Params, variant: Variant) -> Result<Box<dyn DynModel>, String> {
    let (hooks, size, overflow) = match variant {
        Variant::SmallPoolAtPeak => (16, 10, 5),
        Variant::SmallPool => (3, 2, 1),
        Variant::SizedPool => (2, 2, 1),
        Variant::CheckoutTimeout => (2, 1, 1),
    };
    let hooks = params.workers("hooks", hooks, 2, 24)?;
    let pool_size = params.int("pool_size", size, 1, 40)? as u8;
    let max_overflow = params.int("max_overflow", overflow, 0, 20)? as u8;
    let total = usize::from(pool_size) + usize::from(max_overflow);
    match variant {
        Variant::SizedPool if total <= hooks => {
            return Err(format!("`pool_size` + `max_overflow` = {total} does not size the pool for {hooks} hooks + 1"))
        }
        Variant::SmallPool | Variant::SmallPoolAtPeak | Variant::CheckoutTimeout if total > hooks => {
            return Err(format!("`pool_size` + `max_overflow` = {total} is not small for {hooks} hooks"))
        }
        _ => {}
    }
    let checkout_timeout = variant == Variant::CheckoutTimeout;
    Ok(Box::new(PoolExhaustion { variant, hooks, pool_size, max_overflow, checkout_timeout }))
}

pub fn race() -> RaceDef {
    RaceDef {
        id: "pool-exhaustion",
        seed: "004_a5c38daeb850dd15.txt",
        passage: "**Dual-connection cost** -- Each locked operation uses 2 connections (1 lock, 1 work). Pool \
                  increased to 25 total to accommodate.",
        invariant: "Never a deadlock; an excess request fails with a timeout error and never hangs.",
        variants: vec![
            VariantDef {
                id: "small-pool",
                summary: "lock connection, then work connection, from a pool smaller than peak hooks + 1 (scaled down)",
                build: |p| build(p, Variant::SmallPool),
            },
            VariantDef {
                id: "small-pool-at-peak",
                summary: "the same at the seed's sizes: pool 10 + overflow 5 under 16 hooks of one agent",
                build: |p| build(p, Variant::SmallPoolAtPeak),
            },
            VariantDef {
                id: "sized-pool",
                summary: "pool_size + max_overflow of at least peak hooks + 1",
                build: |p| build(p, Variant::SizedPool),
            },
            VariantDef {
                id: "checkout-timeout",
                summary: "the small pool with a bounded checkout wait; the excess hook fails with a timeout",
                build: |p| build(p, Variant::CheckoutTimeout),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use racelab_harness::explore::shortest::replay;
    use racelab_harness::explore::Bounds;
    use racelab_harness::model::DEADLOCK;
    use racelab_harness::testing::{steps, texts};

    fn model(variant: Variant, pool_size: u8, checkout_timeout: bool) -> PoolExhaustion {
        PoolExhaustion { variant, hooks: 3, pool_size, max_overflow: 1, checkout_timeout }
    }

    #[test]
    fn small_pool_lock_holder_waits_for_a_connection_its_waiters_hold() {
        let m = model(Variant::SmallPool, 2, false);
        let r = replay(&m, &Bounds::default(), &steps(&[0, 0, 1, 1, 2, 2, 0])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "checkout_lock_connection → 0",
                "advisory_lock(4294967297) → ok",
                "checkout_lock_connection → 1",
                "advisory_lock(4294967297) … waits",
                "checkout_lock_connection → 2",
                "advisory_lock(4294967297) … waits",
                "checkout_work_connection … waits",
            ]
        );
        assert_eq!(r.violation.unwrap().invariant, DEADLOCK);
    }

    #[test]
    fn checkout_timeout_fails_the_holder_which_releases_the_lock() {
        let m = model(Variant::CheckoutTimeout, 2, true);
        let r = replay(&m, &Bounds::default(), &steps(&[0, 0, 1, 1, 2, 2, 0, 0, 0, 0, 1])).unwrap();
        let cells = texts(&r.events);
        assert_eq!(cells[7], "checkout_work_connection ⇐ POOL_TIMEOUT");
        assert_eq!(cells[8], "advisory_unlock(4294967297) → true");
        assert_eq!(cells[10], "advisory_lock(4294967297) ⇐ ok");
        assert_eq!(r.violation, None);
    }

    #[test]
    fn pool_sizes_are_checked_against_the_variant() {
        let params = |pairs: &[(&str, i64)]| {
            Params::new(
                pairs.iter().map(|(k, v)| (k.to_string(), racelab_harness::catalogue::Param::Int(*v))).collect(),
            )
        };
        assert!(build(&params(&[("pool_size", 3)]), Variant::SmallPool).is_err());
        assert!(build(&params(&[("hooks", 3), ("pool_size", 2)]), Variant::SizedPool).is_err());
        assert!(build(&params(&[]), Variant::SmallPoolAtPeak).is_ok());
    }
}
