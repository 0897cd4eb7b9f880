//! # `reaper-commit`: the agent reaper commits after its loop
//!
//! Seed `004_a5c38daeb850dd15.txt`, "Constraints and Gotchas", 3:
//!
//! > **Reaper must commit inside lock** -- Current reaper does batch commit after loop, which is
//! > incompatible with per-agent advisory locking. Must restructure to commit per-agent inside
//! > lock scope.
//!
//! and "Phase 2": "Agent reaper: per-agent `advisory_lock_or_skip` with commit-inside-lock".
//!
//! ## The race
//!
//! The reaper walks the agents; for each it takes `advisory_lock_or_skip(AGENT, agent.id)`
//! (`pg_try_advisory_lock` on a dedicated connection), reads the agent, and marks it reaped. A
//! hook of the same agent takes the AGENT lock, reads the agent, and writes its new state. Both
//! are ORM read-modify-writes: each writes the row's `revision` it read plus one. When the
//! reaper commits only after its loop, its write is still uncommitted when it releases the
//! agent's lock: the hook takes the lock, reads the committed row (the reaper's write is not
//! visible yet), waits on the row lock, and once the reaper commits overwrites its write with a
//! state computed from the stale read.
//!
//! ## Variants
//!
//! - `batch-commit` (as found, with the per-agent lock): update under the lock, unlock, commit
//!   after the loop (one agent here).
//! - `commit-inside-lock` (the seed's fix): commit, then unlock.
//!
//! Which variant does not hold: `batch-commit`, in 11 steps: the reaper locks, reads revision 0,
//! writes revision 1 and unlocks; the hook locks and reads revision 0; the reaper commits; the
//! hook writes revision 1 and commits (`racelab explain reaper-commit/batch-commit`). Had the
//! hook written before the reaper's commit, its update would have waited on the reaper's row
//! lock and then written the same stale revision. `commit-inside-lock` holds, explored completely for the reaper
//! and one hook with 1 crash and 1 injected error per execution. Parameter `hooks` (default 1)
//! adds identical hooks of the same agent, which the search treats as interchangeable.
//!
//! ## Invariant
//!
//! No lost update: the agent's committed `revision` counts every committed write to it.

use racelab_harness::catalogue::{DynModel, Params, RaceDef, VariantDef};
use racelab_harness::model::{Actor, Invariant, Model, Target, View};
use racelab_harness::op::{ConnId, ErrorCode, Expr, LockScope, Op, Outcome, Sql, Value};
use racelab_harness::sim::{Schema, TableDef, World};
use racelab_harness::symmetry::{Renaming, Symmetry};

const AGENTS: &str = "agents";
const COLUMNS: [&str; 3] = ["id", "state", "revision"];
const REVISION: usize = 2;
const AGENT_ID: Value = Value::Int(1);
const AGENT_KEY: i64 = (1 << 32) | 1;

pub const NO_LOST_UPDATE: &str = "no-lost-update";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    BatchCommit,
    CommitInsideLock,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Reaper,
    Hook,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pc {
    Lock,
    Begin,
    Read,
    /// Write the state with the revision read plus one.
    Write(i64),
    Commit,
    Unlock,
    Rollback,
    Done,
}

/// The reaper or a hook, each updating the agent under the AGENT lock.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AgentWriter {
    role: Role,
    variant: Variant,
    lock: ConnId,
    work: ConnId,
    pc: Pc,
    locked: bool,
    /// Its write is committed.
    committed: bool,
    /// The revision it read, once it read one.
    read_revision: Option<i64>,
    failure: Option<ErrorCode>,
}

impl AgentWriter {
    fn after_unlock(&self) -> Pc {
        match (self.role, self.variant) {
            (Role::Reaper, Variant::BatchCommit) if !self.committed && self.failure.is_none() => Pc::Commit,
            _ => Pc::Done,
        }
    }
    fn after_commit(&self) -> Pc {
        match (self.role, self.variant) {
            (Role::Reaper, Variant::BatchCommit) => Pc::Done,
            _ => Pc::Unlock,
        }
    }
}

impl Actor for AgentWriter {
    fn rename(&mut self, r: &Renaming) {
        self.lock = r.conn(self.lock);
        self.work = r.conn(self.work);
    }

    fn next_op(&self) -> Option<Op> {
        let op = match self.pc {
            Pc::Lock => match self.role {
                Role::Reaper => Op::sql(
                    "advisory_lock_or_skip",
                    self.lock,
                    Sql::AdvisoryTryLock { key: AGENT_KEY, scope: LockScope::Session },
                ),
                Role::Hook => {
                    Op::sql("advisory_lock", self.lock, Sql::AdvisoryLock { key: AGENT_KEY, scope: LockScope::Session })
                }
            },
            Pc::Begin => Op::sql("begin", self.work, Sql::Begin),
            Pc::Read => Op::sql(
                "load_agent",
                self.work,
                Sql::Select { table: AGENTS, filter: vec![("id", AGENT_ID)], lock: None },
            ),
            Pc::Write(revision) => {
                let state = match self.role {
                    Role::Reaper => "reaped",
                    Role::Hook => "processing",
                };
                let set =
                    vec![("state", Expr::Value(Value::Str(state))), ("revision", Expr::Value(Value::Int(revision)))];
                Op::sql("flush_agent", self.work, Sql::Update { table: AGENTS, filter: vec![("id", AGENT_ID)], set })
            }
            Pc::Commit => Op::sql("commit", self.work, Sql::Commit),
            Pc::Unlock => Op::sql("advisory_unlock", self.lock, Sql::AdvisoryUnlock { key: AGENT_KEY }),
            Pc::Rollback => Op::sql("rollback", self.work, Sql::Rollback),
            Pc::Done => return None,
        };
        Some(op)
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        if let (Outcome::Err(error), false) = (outcome, matches!(self.pc, Pc::Unlock | Pc::Rollback | Pc::Done)) {
            self.failure = Some(*error);
            self.pc = match self.pc {
                Pc::Lock => Pc::Done,
                Pc::Begin | Pc::Commit if self.locked => Pc::Unlock,
                Pc::Begin | Pc::Commit => Pc::Done,
                _ => Pc::Rollback,
            };
            return;
        }
        self.pc = match self.pc {
            Pc::Done => Pc::Done,
            Pc::Lock if *outcome == Outcome::Bool(false) => Pc::Done,
            Pc::Lock => {
                self.locked = true;
                Pc::Begin
            }
            Pc::Begin => Pc::Read,
            Pc::Read => match outcome.rows().first().map(|r| r[REVISION]) {
                Some(Value::Int(revision)) => {
                    self.read_revision = Some(revision);
                    Pc::Write(revision + 1)
                }
                _ => Pc::Rollback,
            },
            Pc::Write(_) => match (self.role, self.variant) {
                (Role::Reaper, Variant::BatchCommit) => Pc::Unlock,
                _ => Pc::Commit,
            },
            Pc::Commit => {
                self.committed = true;
                self.after_commit()
            }
            Pc::Unlock => {
                self.locked = false;
                self.after_unlock()
            }
            Pc::Rollback if self.locked => Pc::Unlock,
            Pc::Rollback => Pc::Done,
        };
    }
}

/// The reaper and the hooks of the agent it reaps (one by default). The hooks are identical:
/// they run the same code on the same agent and own nothing of their own.
pub struct ReaperCommit {
    pub variant: Variant,
    pub hooks: usize,
}

impl Model for ReaperCommit {
    type Actor = AgentWriter;

    fn init(&self) -> (World, Vec<AgentWriter>) {
        let schema = Schema { tables: vec![TableDef { name: AGENTS, columns: COLUMNS.to_vec(), unique: vec![] }] };
        let mut world = World::new(schema, 1 + self.hooks);
        world.db.seed_row(AGENTS, vec![AGENT_ID, Value::Str("idle"), Value::Int(0)]);
        let actors = std::iter::once(Role::Reaper)
            .chain(std::iter::repeat_n(Role::Hook, self.hooks))
            .enumerate()
            .map(|(i, role)| AgentWriter {
                role,
                variant: self.variant,
                lock: world.connect(i),
                work: world.connect(i),
                pc: Pc::Lock,
                locked: false,
                committed: false,
                read_revision: None,
                failure: None,
            })
            .collect();
        (world, actors)
    }

    fn actor_names(&self) -> Vec<String> {
        let hooks = (1..=self.hooks).map(|k| if self.hooks == 1 { "hook".to_string() } else { format!("hook {k}") });
        std::iter::once("reaper".to_string()).chain(hooks).collect()
    }

    fn symmetry(&self) -> Option<Symmetry> {
        (self.hooks >= 2).then(|| Symmetry::group(1..=self.hooks, Vec::new()))
    }

    fn invariants(&self) -> Vec<Invariant<AgentWriter>> {
        vec![Invariant::new(NO_LOST_UPDATE, no_lost_update)]
    }

    fn targets(&self) -> Vec<Target<AgentWriter>> {
        vec![
            Target::new("both the reaper and the hook committed a write", |v: &View<Self::Actor>| {
                v.actors.iter().all(|a| a.committed)
            }),
            Target::new("the reaper skipped a locked agent", |v: &View<Self::Actor>| {
                v.actors[0].pc == Pc::Done && v.actors[0].read_revision.is_none() && v.actors[0].failure.is_none()
            }),
        ]
    }
}

fn no_lost_update(view: &View<'_, AgentWriter>) -> Result<(), String> {
    let rows = view.world.db.committed_rows(AGENTS);
    let Some(Value::Int(revision)) = rows.first().map(|r| r[REVISION]) else {
        return Err("the agent row is gone".to_string());
    };
    let writes = view.actors.iter().filter(|a| a.committed).count() as i64;
    if revision < writes {
        let names: Vec<String> = view
            .actors
            .iter()
            .filter(|a| a.committed)
            .map(|a| format!("{:?} (read revision {})", a.role, a.read_revision.unwrap_or(-1)).to_lowercase())
            .collect();
        return Err(format!(
            "{writes} committed writes ({}) but the agent is at revision {revision}",
            names.join(", ")
        ));
    }
    Ok(())
}

fn build(params: &Params, variant: Variant) -> Result<Box<dyn DynModel>, String> {
    let hooks = params.workers("hooks", 1, 1, racelab_harness::op::MAX_ACTORS - 1)?;
    Ok(Box::new(ReaperCommit { variant, hooks }))
}

pub fn race() -> RaceDef {
    RaceDef {
        id: "reaper-commit",
        seed: "004_a5c38daeb850dd15.txt",
        passage: "**Reaper must commit inside lock** -- Current reaper does batch commit after loop, which is \
                  incompatible with per-agent advisory locking.",
        invariant: "Never a lost update of an agent's state.",
        variants: vec![
            VariantDef {
                id: "batch-commit",
                summary: "per-agent advisory_lock_or_skip, update, unlock; one commit after the loop (as found)",
                build: |p| build(p, Variant::BatchCommit),
            },
            VariantDef {
                id: "commit-inside-lock",
                summary: "per-agent advisory_lock_or_skip, update, commit, then unlock",
                build: |p| build(p, Variant::CommitInsideLock),
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
    fn batch_commit_releases_the_lock_before_the_write_is_visible() {
        let m = ReaperCommit { variant: Variant::BatchCommit, hooks: 1 };
        let r = replay(&m, &Bounds::default(), &steps(&[0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "advisory_lock_or_skip(4294967297) → true",
                "begin → ok",
                "load_agent(id=1) → [1, idle, 0]",
                "flush_agent(id=1; state=reaped, revision=1) → [1, reaped, 1]",
                "advisory_unlock(4294967297) → true",
                "advisory_lock(4294967297) → ok",
                "begin → ok",
                // The reaper's write is not committed: the hook reads revision 0.
                "load_agent(id=1) → [1, idle, 0]",
                "flush_agent(id=1; state=processing, revision=1) … waits",
                "commit → ok",
                "flush_agent(id=1; state=processing, revision=1) ⇐ [1, processing, 1]",
                "commit → ok",
            ]
        );
        assert_eq!(r.violation.unwrap().invariant, NO_LOST_UPDATE);
    }

    #[test]
    fn commit_inside_lock_makes_the_hook_read_the_reapers_write() {
        let m = ReaperCommit { variant: Variant::CommitInsideLock, hooks: 1 };
        let r = replay(&m, &Bounds::default(), &steps(&[0, 0, 0, 0, 1, 0, 0, 1, 1, 1, 1, 1, 1])).unwrap();
        let cells = texts(&r.events);
        assert_eq!(cells[4], "advisory_lock(4294967297) … waits");
        assert_eq!(cells[9], "load_agent(id=1) → [1, reaped, 1]");
        assert_eq!(r.violation, None);
        assert_eq!(r.state.world.db.committed_rows(AGENTS)[0][REVISION], Value::Int(2));
    }
}
