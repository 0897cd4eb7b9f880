//! # `lock-reentrancy`: a nested `advisory_lock()` for the same key on a second connection
//!
//! Seed `004_a5c38daeb850dd15.txt`, "Architecture Decisions", decision 4:
//!
//! > **Thread-local reentrancy detection** -- Nested `advisory_lock()` calls for the same key on
//! > different connections would deadlock. Thread-local tracking raises `AdvisoryLockError`
//! > immediately instead.
//!
//! and decision 1: each `advisory_lock()` takes `pg_advisory_lock` on a dedicated connection.
//!
//! ## The race
//!
//! A hook route holds `advisory_lock(AGENT, agent.id)` and calls a service that takes the same
//! lock again. The nested call checks out a second connection and asks PostgreSQL for a lock
//! that the hook's first connection holds. PostgreSQL sees one session waiting for another, idle
//! session, not a cycle: its deadlock detector never fires, and the thread waits on itself
//! forever. A second hook of the same agent then queues behind it, forever too.
//!
//! ## Variants
//!
//! - `unguarded` (as found): the nested call goes to PostgreSQL.
//! - `reentrancy-guard` (decision 4): a thread-local set of held keys; the nested call raises
//!   `AdvisoryLockError` at once, and the hook unwinds and releases its lock.
//!
//! Which variant does not hold: `unguarded`. In 3 steps hook 1 takes the lock, its nested call
//! waits on it, and hook 2 queues behind (`racelab explain lock-reentrancy/unguarded`); the harness's deadlock check
//! reports it, on the simulator and on PostgreSQL alike, since the waiter's blocker is its own
//! idle connection. `reentrancy-guard` holds, explored completely for 2 hooks with 1 crash per
//! execution: every hook ends, the nested call failing fast.
//!
//! ## Invariant
//!
//! No hang: every hook that was not killed ends, and a nested call fails fast with a clear error.

use racelab_harness::catalogue::{DynModel, Params, RaceDef, VariantDef};
use racelab_harness::model::{Actor, Invariant, Model, Phase, Status, Target, View};
use racelab_harness::op::{ConnId, ErrorCode, LockScope, Op, Outcome, Sql};
use racelab_harness::sim::{Schema, World};
use racelab_harness::symmetry::{Renaming, Symmetry};

/// `pg_advisory_lock(1, agent_id)`: namespace AGENT (1) high, agent id 1 low.
const AGENT_KEY: i64 = (1 << 32) | 1;
/// The error the guard raises.
pub const ADVISORY_LOCK_ERROR: ErrorCode = ErrorCode("AdvisoryLockError");

pub const EVERY_HOOK_ENDS: &str = "every-hook-ends";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    Unguarded,
    ReentrancyGuard,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pc {
    /// The thread-local check before `advisory_lock()` at nesting level 0 or 1.
    Guard(usize),
    Lock(usize),
    Work,
    Unlock(usize),
    Done,
}

/// A hook route whose handler nests `advisory_lock(AGENT, agent.id)` once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Hook {
    variant: Variant,
    /// The dedicated connection of each nesting level.
    conns: [ConnId; 2],
    /// Keys this thread holds, as the guard tracks them.
    held_here: bool,
    pc: Pc,
    worked: bool,
    failure: Option<ErrorCode>,
}

impl Hook {
    fn lock_pc(&self, level: usize) -> Pc {
        match self.variant {
            Variant::Unguarded => Pc::Lock(level),
            Variant::ReentrancyGuard => Pc::Guard(level),
        }
    }

    /// The exception unwinds the `with` blocks entered so far.
    fn raise(&mut self, error: ErrorCode, entered: usize) -> Pc {
        self.failure = Some(error);
        if entered == 0 {
            Pc::Done
        } else {
            Pc::Unlock(entered - 1)
        }
    }
}

impl Actor for Hook {
    /// Hooks differ only in their two connections.
    fn rename(&mut self, r: &Renaming) {
        self.conns = self.conns.map(|c| r.conn(c));
    }

    fn next_op(&self) -> Option<Op> {
        let op = match self.pc {
            Pc::Guard(_) => Op::local("check_thread_local_locks"),
            Pc::Lock(0) => {
                Op::sql("advisory_lock", self.conns[0], Sql::AdvisoryLock { key: AGENT_KEY, scope: LockScope::Session })
            }
            Pc::Lock(_) => Op::sql(
                "nested_advisory_lock",
                self.conns[1],
                Sql::AdvisoryLock { key: AGENT_KEY, scope: LockScope::Session },
            ),
            Pc::Work => Op::local("process_hook"),
            Pc::Unlock(level) => {
                let name = if level == 0 { "advisory_unlock" } else { "nested_advisory_unlock" };
                Op::sql(name, self.conns[level], Sql::AdvisoryUnlock { key: AGENT_KEY })
            }
            Pc::Done => return None,
        };
        Some(op)
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        self.pc = match (self.pc, outcome) {
            (Pc::Done, _) => Pc::Done,
            (Pc::Guard(level), _) if self.held_here => self.raise(ADVISORY_LOCK_ERROR, level),
            (Pc::Guard(level), _) => Pc::Lock(level),
            (Pc::Lock(level), Outcome::Err(error)) => self.raise(*error, level),
            (Pc::Lock(0), _) => {
                self.held_here = true;
                self.lock_pc(1)
            }
            (Pc::Lock(_), _) => Pc::Work,
            (Pc::Work, _) => {
                self.worked = true;
                Pc::Unlock(1)
            }
            (Pc::Unlock(0), _) => {
                self.held_here = false;
                Pc::Done
            }
            (Pc::Unlock(level), _) => Pc::Unlock(level - 1),
        };
    }
}

/// `hooks` hooks of one agent, each nesting the AGENT lock.
pub struct LockReentrancy {
    pub variant: Variant,
    pub hooks: usize,
}

impl Model for LockReentrancy {
    type Actor = Hook;

    fn init(&self) -> (World, Vec<Hook>) {
        let mut world = World::new(Schema::default(), self.hooks);
        let actors = (0..self.hooks)
            .map(|i| {
                let conns = [world.connect(i), world.connect(i)];
                let mut hook =
                    Hook { variant: self.variant, conns, held_here: false, pc: Pc::Done, worked: false, failure: None };
                hook.pc = hook.lock_pc(0);
                hook
            })
            .collect();
        (world, actors)
    }

    fn actor_names(&self) -> Vec<String> {
        (1..=self.hooks).map(|i| format!("hook {i}")).collect()
    }

    fn symmetry(&self) -> Option<Symmetry> {
        (self.hooks >= 2).then(|| Symmetry::group(0..self.hooks, Vec::new()))
    }

    fn invariants(&self) -> Vec<Invariant<Hook>> {
        vec![Invariant::final_only(EVERY_HOOK_ENDS, every_hook_ends)]
    }

    fn targets(&self) -> Vec<Target<Hook>> {
        vec![
            Target::new("a nested call failed fast with AdvisoryLockError", |v: &View<Self::Actor>| {
                v.actors.iter().any(|a| a.failure == Some(ADVISORY_LOCK_ERROR))
            }),
            Target::new("every hook ended", |v: &View<Self::Actor>| v.actors.iter().all(|a| a.pc == Pc::Done)),
        ]
    }
}

fn every_hook_ends(view: &View<'_, Hook>) -> Result<(), String> {
    for (i, (a, status)) in view.actors.iter().zip(view.status).enumerate() {
        if *status != Status::Crashed && a.pc != Pc::Done && view.phase == Phase::Final {
            let at = a.next_op().map(|op| op.name).unwrap_or("?");
            return Err(format!("hook {} hangs in {at}", i + 1));
        }
    }
    Ok(())
}

fn build(params: &Params, variant: Variant) -> Result<Box<dyn DynModel>, String> {
    let hooks = params.workers("hooks", 2, 1, racelab_harness::op::MAX_ACTORS)?;
    Ok(Box::new(LockReentrancy { variant, hooks }))
}

pub fn race() -> RaceDef {
    RaceDef {
        id: "lock-reentrancy",
        seed: "004_a5c38daeb850dd15.txt",
        passage: "Nested `advisory_lock()` calls for the same key on different connections would deadlock. \
                  Thread-local tracking raises `AdvisoryLockError` immediately instead.",
        invariant: "Never a hang: a nested advisory_lock() for a key the thread holds fails fast with a clear error.",
        variants: vec![
            VariantDef {
                id: "unguarded",
                summary: "the nested advisory_lock() asks PostgreSQL on a second connection (as found)",
                build: |p| build(p, Variant::Unguarded),
            },
            VariantDef {
                id: "reentrancy-guard",
                summary: "thread-local tracking raises AdvisoryLockError for a key the thread already holds",
                build: |p| build(p, Variant::ReentrancyGuard),
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

    #[test]
    fn unguarded_nested_call_waits_on_its_own_connection() {
        let m = LockReentrancy { variant: Variant::Unguarded, hooks: 1 };
        let r = replay(&m, &Bounds::default(), &steps(&[0, 0])).unwrap();
        assert_eq!(texts(&r.events), ["advisory_lock(4294967297) → ok", "nested_advisory_lock(4294967297) … waits"]);
        assert_eq!(r.violation.unwrap().invariant, DEADLOCK);
    }

    #[test]
    fn guard_raises_and_the_hook_releases_its_lock() {
        let m = LockReentrancy { variant: Variant::ReentrancyGuard, hooks: 2 };
        let r = replay(&m, &Bounds::default(), &steps(&[0, 0, 1, 1, 0, 0, 1, 1, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "check_thread_local_locks → ok",
                "advisory_lock(4294967297) → ok",
                "check_thread_local_locks → ok",
                "advisory_lock(4294967297) … waits",
                // The nested call raises at once …
                "check_thread_local_locks → ok",
                // … and the `with` block releases the outer lock on the way out.
                "advisory_unlock(4294967297) → true",
                "advisory_lock(4294967297) ⇐ ok",
                "check_thread_local_locks → ok",
                "advisory_unlock(4294967297) → true",
            ]
        );
        assert_eq!(r.violation, None);
        assert!(r.state.actors.iter().all(|a| a.failure == Some(ADVISORY_LOCK_ERROR)));
    }
}
