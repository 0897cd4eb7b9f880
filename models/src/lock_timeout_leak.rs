//! # `lock-timeout-leak`: `lock_timeout` fires after the lock was granted
//!
//! Seed `004_a5c38daeb850dd15.txt`, "Architecture Decisions", decision 5:
//!
//! > **Unconditional unlock in finally** -- PostgreSQL Bug #17686: `lock_timeout` can fire AFTER
//! > the lock is granted but BEFORE the result is returned. Unconditional `pg_advisory_unlock` in
//! > the finally block prevents phantom lock leaks.
//!
//! ## The race
//!
//! `advisory_lock()` runs `pg_advisory_lock` on a dedicated pooled connection under
//! `lock_timeout`. When the timeout fires after the grant, the caller sees 55P03 while the
//! server holds the lock for the session. The connection goes back to the pool still holding it,
//! and the next hook of that agent waits forever for a lock nobody will release.
//!
//! The bug is the explorer's lost-reply fault: the statement takes effect and the client sees an
//! error (for `pg_advisory_lock`, 55P03). A genuine timeout (the lock was never granted) is the
//! timeout fault; both are explored.
//!
//! ## Variants
//!
//! - `unlock-if-acquired`: unlock in `finally` only if `pg_advisory_lock` returned.
//! - `unconditional-unlock` (decision 5): always `pg_advisory_unlock` in `finally`; it returns
//!   false, with a warning, when the lock was never granted.
//!
//! Which variant does not hold: `unlock-if-acquired`. Hook 1's lock is granted but its reply is
//! lost; it raises without unlocking and ends, and hook 2 then waits forever (2 steps, `racelab
//! explain lock-timeout-leak/unlock-if-acquired`). The harness reports the hang as a deadlock:
//! every unfinished hook waits and nothing can release it. `unconditional-unlock` holds, explored
//! completely for 2 hooks with 1 lost reply, 1 timeout and 1 crash per execution.
//!
//! ## Invariant
//!
//! No lock outlives its operation: once a hook has ended, the next hook of the agent gets the lock.

use racelab_harness::catalogue::{DynModel, Params, RaceDef, VariantDef};
use racelab_harness::model::{Actor, Invariant, Model, Phase, Status, Target, View};
use racelab_harness::op::{ConnId, ErrorCode, LockScope, Op, Outcome, Sql};
use racelab_harness::sim::{Schema, World};
use racelab_harness::symmetry::{Renaming, Symmetry};

const AGENT_KEY: i64 = (1 << 32) | 1;

pub const EVERY_HOOK_GETS_THE_LOCK_OR_FAILS: &str = "every-hook-gets-the-lock-or-fails";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    UnlockIfAcquired,
    UnconditionalUnlock,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pc {
    Lock,
    Work,
    Unlock,
    Done,
}

/// A hook that runs under `advisory_lock(AGENT, agent.id)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LockedHook {
    variant: Variant,
    conn: ConnId,
    pc: Pc,
    worked: bool,
    /// The error `advisory_lock()` raised, if it did.
    lock_error: Option<ErrorCode>,
    /// What `pg_advisory_unlock` returned in `finally`.
    unlocked: Option<bool>,
}

impl Actor for LockedHook {
    /// Hooks differ only in their connection.
    fn rename(&mut self, r: &Renaming) {
        self.conn = r.conn(self.conn);
    }

    fn next_op(&self) -> Option<Op> {
        let op = match self.pc {
            Pc::Lock => {
                Op::sql("advisory_lock", self.conn, Sql::AdvisoryLock { key: AGENT_KEY, scope: LockScope::Session })
            }
            Pc::Work => Op::local("process_hook"),
            Pc::Unlock => Op::sql("advisory_unlock", self.conn, Sql::AdvisoryUnlock { key: AGENT_KEY }),
            Pc::Done => return None,
        };
        Some(op)
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        self.pc = match (self.pc, outcome) {
            (Pc::Lock, Outcome::Err(error)) => {
                self.lock_error = Some(*error);
                match self.variant {
                    Variant::UnlockIfAcquired => Pc::Done,
                    Variant::UnconditionalUnlock => Pc::Unlock,
                }
            }
            (Pc::Lock, _) => Pc::Work,
            (Pc::Work, _) => {
                self.worked = true;
                Pc::Unlock
            }
            (Pc::Unlock, result) => {
                self.unlocked = Some(*result == Outcome::Bool(true));
                Pc::Done
            }
            (Pc::Done, _) => Pc::Done,
        };
    }
}

/// `hooks` hooks of one agent, each on its own pooled lock connection.
pub struct LockTimeoutLeak {
    pub variant: Variant,
    pub hooks: usize,
}

impl Model for LockTimeoutLeak {
    type Actor = LockedHook;

    fn init(&self) -> (World, Vec<LockedHook>) {
        let mut world = World::new(Schema::default(), self.hooks);
        let actors = (0..self.hooks)
            .map(|i| LockedHook {
                variant: self.variant,
                conn: world.connect(i),
                pc: Pc::Lock,
                worked: false,
                lock_error: None,
                unlocked: None,
            })
            .collect();
        (world, actors)
    }

    fn actor_names(&self) -> Vec<String> {
        (1..=self.hooks).map(|i| format!("hook {i}")).collect()
    }

    /// Hooks differ only in their connection.
    fn symmetry(&self) -> Option<Symmetry> {
        (self.hooks >= 2).then(|| Symmetry::group(0..self.hooks, Vec::new()))
    }

    fn invariants(&self) -> Vec<Invariant<LockedHook>> {
        vec![Invariant::final_only(EVERY_HOOK_GETS_THE_LOCK_OR_FAILS, every_hook_ends)]
    }

    fn targets(&self) -> Vec<Target<LockedHook>> {
        vec![
            Target::new("a hook's lock call failed with lock_not_available", |v: &View<Self::Actor>| {
                v.actors.iter().any(|a| a.lock_error == Some(ErrorCode::LOCK_NOT_AVAILABLE))
            }),
            Target::new("a hook ran under the lock", |v: &View<Self::Actor>| v.actors.iter().any(|a| a.worked)),
        ]
    }
}

fn every_hook_ends(view: &View<'_, LockedHook>) -> Result<(), String> {
    for (i, (a, status)) in view.actors.iter().zip(view.status).enumerate() {
        if view.phase == Phase::Final && *status != Status::Crashed && a.pc != Pc::Done {
            return Err(format!("hook {} waits forever for a lock no running hook holds", i + 1));
        }
    }
    Ok(())
}

fn build(params: &Params, variant: Variant) -> Result<Box<dyn DynModel>, String> {
    let hooks = params.workers("hooks", 2, 2, racelab_harness::op::MAX_ACTORS)?;
    Ok(Box::new(LockTimeoutLeak { variant, hooks }))
}

pub fn race() -> RaceDef {
    RaceDef {
        id: "lock-timeout-leak",
        seed: "004_a5c38daeb850dd15.txt",
        passage: "PostgreSQL Bug #17686: `lock_timeout` can fire AFTER the lock is granted but BEFORE the result is \
                  returned. Unconditional `pg_advisory_unlock` in the finally block prevents phantom lock leaks.",
        invariant: "No advisory lock is still held after the operation that took it ended.",
        variants: vec![
            VariantDef {
                id: "unlock-if-acquired",
                summary: "finally unlocks only if pg_advisory_lock returned",
                build: |p| build(p, Variant::UnlockIfAcquired),
            },
            VariantDef {
                id: "unconditional-unlock",
                summary: "finally always calls pg_advisory_unlock (false when never granted)",
                build: |p| build(p, Variant::UnconditionalUnlock),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use racelab_harness::explore::shortest::replay;
    use racelab_harness::explore::{Bounds, Choice, ChoiceKind};
    use racelab_harness::model::DEADLOCK;
    use racelab_harness::testing::{steps, texts};

    fn lost(actor: u8) -> Choice {
        Choice { actor, kind: ChoiceKind::LostReply }
    }

    fn bounds() -> Bounds {
        Bounds { lost_replies: 1, ..Bounds::default() }
    }

    #[test]
    fn a_lock_granted_after_its_timeout_leaks_when_unlock_is_conditional() {
        let m = LockTimeoutLeak { variant: Variant::UnlockIfAcquired, hooks: 2 };
        let mut schedule = vec![lost(0)];
        schedule.extend(steps(&[1]));
        let r = replay(&m, &bounds(), &schedule).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "advisory_lock(4294967297) → ok [reply lost: 55P03 lock_not_available]",
                "advisory_lock(4294967297) … waits",
            ]
        );
        assert_eq!(r.violation.unwrap().invariant, DEADLOCK);
    }

    #[test]
    fn unconditional_unlock_releases_the_phantom_lock() {
        let m = LockTimeoutLeak { variant: Variant::UnconditionalUnlock, hooks: 2 };
        let mut schedule = vec![lost(0)];
        schedule.extend(steps(&[1, 0, 1, 1, 1]));
        let r = replay(&m, &bounds(), &schedule).unwrap();
        let cells = texts(&r.events);
        assert_eq!(cells[2], "advisory_unlock(4294967297) → true");
        assert_eq!(cells[3], "advisory_lock(4294967297) ⇐ ok");
        assert_eq!(r.violation, None);
        assert_eq!(r.state.actors[0].unlocked, Some(true));
    }
}
