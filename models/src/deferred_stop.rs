//! # `deferred-stop`: a deferred stop against session end
//!
//! Seed `004_a5c38daeb850dd15.txt`, "Phase 2 (HIGH fixes)":
//!
//! > Restructure deferred stop: sleep loop first, advisory lock second, state re-check after
//! > acquisition
//!
//! and the acceptance criteria's "deferred stop vs session_end" race.
//!
//! ## The race
//!
//! A stop hook defers its work: a background thread waits for the transcript to settle
//! (`time.sleep` in a loop), then marks the agent stopped. Meanwhile `session_end` takes the
//! AGENT lock and marks the agent COMPLETE. If the deferred stop decided to stop before the
//! session ended, its write lands on a COMPLETE agent and turns it back.
//!
//! Time is not the wall clock: the sleep ends when a clock actor's tick (an explored step) says
//! so, so the explorer places the session end before, during or after the sleep.
//!
//! ## Variants
//!
//! - `check-then-lock` (as found): read the state; if not COMPLETE, sleep, take the lock, write.
//! - `recheck-after-lock` (the seed's restructure): sleep, take the lock, re-read the state, and
//!   write only if it is not COMPLETE.
//!
//! Which variant does not hold: `check-then-lock`. The deferred stop reads PROCESSING and falls
//! asleep; the session ends (lock, COMPLETE, unlock); the tick wakes the stop, which takes the
//! lock and writes STOPPED over COMPLETE (`racelab explain deferred-stop/check-then-lock`).
//! `recheck-after-lock` holds, explored completely with 1 crash per execution (146 states; with 1
//! injected error as well it holds on the simulator too, 236 states).
//!
//! ## Invariant
//!
//! Never a COMPLETE state overwritten by a stale stop.

use racelab_harness::catalogue::{DynModel, Params, RaceDef, VariantDef};
use racelab_harness::model::{Actor, Invariant, Model, Target, View};
use racelab_harness::op::{ConnId, ErrorCode, Expr, LockScope, Op, Outcome, Sql, Value};
use racelab_harness::sim::parts::{Timer, TimerOp};
use racelab_harness::sim::{PartId, Schema, TableDef, World};

const AGENTS: &str = "agents";
const COLUMNS: [&str; 2] = ["id", "state"];
const STATE: usize = 1;
const AGENT_ID: Value = Value::Int(1);
const AGENT_KEY: i64 = (1 << 32) | 1;
const PROCESSING: Value = Value::Str("processing");
const COMPLETE: Value = Value::Str("complete");
const STOPPED: Value = Value::Str("stopped");
/// Ticks the deferred stop sleeps for the transcript to settle.
const SLEEP_TICKS: u32 = 1;

pub const COMPLETE_STAYS_COMPLETE: &str = "complete-stays-complete";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    CheckThenLock,
    RecheckAfterLock,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    DeferredStop,
    SessionEnd,
    Clock,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pc {
    Read,
    Sleep,
    Lock,
    /// The check after the lock (`recheck-after-lock` only).
    Recheck,
    Write,
    Unlock,
    Tick,
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AgentTask {
    role: Role,
    variant: Variant,
    timer: PartId<Timer>,
    lock: ConnId,
    work: ConnId,
    pc: Pc,
    locked: bool,
    /// Its write returned.
    wrote: bool,
    /// It saw COMPLETE and left the agent alone.
    skipped: bool,
    failure: Option<ErrorCode>,
}

impl AgentTask {
    fn after_check(&mut self, outcome: &Outcome, next: Pc) -> Pc {
        if outcome.rows().first().map(|r| r[STATE]) == Some(COMPLETE) {
            self.skipped = true;
            if self.locked {
                Pc::Unlock
            } else {
                Pc::Done
            }
        } else {
            next
        }
    }
}

impl Actor for AgentTask {
    fn next_op(&self) -> Option<Op> {
        let read = || Sql::Select { table: AGENTS, filter: vec![("id", AGENT_ID)], lock: None };
        let op = match self.pc {
            Pc::Read => Op::sql("load_agent_state", self.work, read()),
            Pc::Recheck => Op::sql("reload_agent_state", self.work, read()),
            Pc::Sleep => self.timer.op("sleep", TimerOp::Sleep(SLEEP_TICKS)),
            Pc::Lock => {
                Op::sql("advisory_lock", self.lock, Sql::AdvisoryLock { key: AGENT_KEY, scope: LockScope::Session })
            }
            Pc::Write => {
                let (name, state) = match self.role {
                    Role::SessionEnd => ("mark_complete", COMPLETE),
                    _ => ("mark_stopped", STOPPED),
                };
                let set = vec![("state", Expr::Value(state))];
                Op::sql(name, self.work, Sql::Update { table: AGENTS, filter: vec![("id", AGENT_ID)], set })
            }
            Pc::Unlock => Op::sql("advisory_unlock", self.lock, Sql::AdvisoryUnlock { key: AGENT_KEY }),
            Pc::Tick => self.timer.op("time_passes", TimerOp::Tick),
            Pc::Done => return None,
        };
        Some(op)
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        if let (Outcome::Err(error), false) = (outcome, matches!(self.pc, Pc::Unlock | Pc::Done)) {
            self.failure = Some(*error);
            self.pc = if self.locked { Pc::Unlock } else { Pc::Done };
            return;
        }
        self.pc = match self.pc {
            Pc::Done => Pc::Done,
            Pc::Tick => Pc::Done,
            Pc::Read => self.after_check(outcome, Pc::Sleep),
            Pc::Sleep => Pc::Lock,
            Pc::Lock => {
                self.locked = true;
                match (self.role, self.variant) {
                    (Role::DeferredStop, Variant::RecheckAfterLock) => Pc::Recheck,
                    _ => Pc::Write,
                }
            }
            Pc::Recheck => self.after_check(outcome, Pc::Write),
            Pc::Write => {
                self.wrote = true;
                Pc::Unlock
            }
            Pc::Unlock => {
                self.locked = false;
                Pc::Done
            }
        };
    }

    /// Time does not stop when a process dies: the clock goes on; the hooks stay dead.
    fn on_crash(&self) -> Option<Self> {
        (self.role == Role::Clock).then(|| self.clone())
    }
}

/// The deferred stop, `session_end`, and the clock that ends the stop's sleep.
pub struct DeferredStop {
    pub variant: Variant,
}

impl Model for DeferredStop {
    type Actor = AgentTask;

    fn init(&self) -> (World, Vec<AgentTask>) {
        let schema = Schema { tables: vec![TableDef { name: AGENTS, columns: COLUMNS.to_vec(), unique: vec![] }] };
        let mut world = World::new(schema, 3);
        world.db.seed_row(AGENTS, vec![AGENT_ID, PROCESSING]);
        let timer = world.add_part(Timer::new());
        let task = |world: &mut World, i: usize, role: Role, pc: Pc| {
            let (lock, work) = if role == Role::Clock { (0, 0) } else { (world.connect(i), world.connect(i)) };
            AgentTask {
                role,
                variant: self.variant,
                timer,
                lock,
                work,
                pc,
                locked: false,
                wrote: false,
                skipped: false,
                failure: None,
            }
        };
        let first = match self.variant {
            Variant::CheckThenLock => Pc::Read,
            Variant::RecheckAfterLock => Pc::Sleep,
        };
        let actors = vec![
            task(&mut world, 0, Role::DeferredStop, first),
            task(&mut world, 1, Role::SessionEnd, Pc::Lock),
            task(&mut world, 2, Role::Clock, Pc::Tick),
        ];
        (world, actors)
    }

    fn actor_names(&self) -> Vec<String> {
        vec!["deferred stop".to_string(), "session_end".to_string(), "clock".to_string()]
    }

    fn invariants(&self) -> Vec<Invariant<AgentTask>> {
        vec![Invariant::new(COMPLETE_STAYS_COMPLETE, complete_stays_complete)]
    }

    fn targets(&self) -> Vec<Target<AgentTask>> {
        vec![
            Target::new("the deferred stop marked the agent stopped", |v: &View<Self::Actor>| v.actors[0].wrote),
            Target::new("the deferred stop left a completed agent alone", |v: &View<Self::Actor>| v.actors[0].skipped),
        ]
    }
}

fn complete_stays_complete(view: &View<'_, AgentTask>) -> Result<(), String> {
    if !view.actors[1].wrote {
        return Ok(());
    }
    match view.world.db.committed_rows(AGENTS).first().map(|r| r[STATE]) {
        Some(COMPLETE) => Ok(()),
        Some(state) => Err(format!("session_end marked the agent complete, but it is {state}")),
        None => Err("the agent row is gone".to_string()),
    }
}

fn build(_params: &Params, variant: Variant) -> Result<Box<dyn DynModel>, String> {
    Ok(Box::new(DeferredStop { variant }))
}

pub fn race() -> RaceDef {
    RaceDef {
        id: "deferred-stop",
        seed: "004_a5c38daeb850dd15.txt",
        passage: "Restructure deferred stop: sleep loop first, advisory lock second, state re-check after acquisition",
        invariant: "Never a COMPLETE state overwritten by a stale stop.",
        variants: vec![
            VariantDef {
                id: "check-then-lock",
                summary: "read the state; if not COMPLETE, sleep, lock, mark stopped (as found)",
                build: |p| build(p, Variant::CheckThenLock),
            },
            VariantDef {
                id: "recheck-after-lock",
                summary: "sleep, lock, re-read the state, mark stopped only if not COMPLETE",
                build: |p| build(p, Variant::RecheckAfterLock),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use racelab_harness::explore::shortest::replay;
    use racelab_harness::explore::Bounds;
    use racelab_harness::testing::{steps, texts};

    #[test]
    fn check_then_lock_stops_an_agent_whose_session_ended_during_the_sleep() {
        let m = DeferredStop { variant: Variant::CheckThenLock };
        let r = replay(&m, &Bounds::default(), &steps(&[0, 0, 1, 1, 1, 2, 0, 0, 0])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "load_agent_state(id=1) → [1, processing]",
                "sleep(1) … waits",
                "advisory_lock(4294967297) → ok",
                "mark_complete(id=1; state=complete) → [1, complete]",
                "advisory_unlock(4294967297) → true",
                "time_passes → ok",
                "sleep(1) ⇐ ok",
                "advisory_lock(4294967297) → ok",
                "mark_stopped(id=1; state=stopped) → [1, stopped]",
            ]
        );
        assert_eq!(r.violation.unwrap().invariant, COMPLETE_STAYS_COMPLETE);
    }

    #[test]
    fn recheck_after_lock_sees_complete_and_leaves_it() {
        let m = DeferredStop { variant: Variant::RecheckAfterLock };
        let r = replay(&m, &Bounds::default(), &steps(&[0, 1, 1, 1, 2, 0, 0, 0, 0])).unwrap();
        let cells = texts(&r.events);
        assert_eq!(cells[7], "reload_agent_state(id=1) → [1, complete]");
        assert_eq!(cells[8], "advisory_unlock(4294967297) → true");
        assert_eq!(r.violation, None);
        assert!(r.state.actors[0].skipped);
    }
}
