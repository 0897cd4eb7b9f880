//! # `agent-lock-commit`: a critical section that commits 2 to 8 times
//!
//! Seed `004_a5c38daeb850dd15.txt`, "Architecture Decisions", decision 1:
//!
//! > **Session-scoped advisory locks on dedicated connections** -- Transaction-scoped locks
//! > (`pg_advisory_xact_lock`) release on commit. The hook processing pipeline does 2-8
//! > intermediate `db.session.commit()` calls within critical sections. Session-scoped locks on a
//! > separate connection survive all application commits.
//!
//! ## The race
//!
//! Two hooks of one agent each run the hook pipeline under the AGENT lock. The pipeline commits
//! `commits` times along the way (SQLAlchemy begins the next transaction by itself). A
//! transaction-scoped lock ends with the first of those commits, so the other hook enters the
//! critical section while the first is still in it.
//!
//! ## Variants
//!
//! - `xact-lock`: `pg_advisory_xact_lock` on the work connection, inside the pipeline's
//!   transaction.
//! - `session-lock` (decision 1): `pg_advisory_lock` on a dedicated connection, unlocked when the
//!   pipeline is done.
//!
//! Which variant does not hold: `xact-lock`. Hook 1 begins, locks, runs its first stage and
//! commits; the commit releases the lock, so hook 2 begins and takes it while hook 1 still has
//! stages to run (6 steps, `racelab explain agent-lock-commit/xact-lock`). `session-lock` holds,
//! explored completely for 2 hooks with 8 commits each (156 states; its scenario has no faults so
//! that PostgreSQL can enumerate it too). With 1 crash per execution it holds as well on the
//! simulator (1,610 states): a crashed hook's connections close and its lock with them.
//!
//! ## Invariant
//!
//! Never two hooks of one agent inside the critical section at once.

use racelab_harness::catalogue::{DynModel, Params, RaceDef, VariantDef};
use racelab_harness::model::{Actor, Invariant, Model, Status, Target, View};
use racelab_harness::op::{ConnId, ErrorCode, LockScope, Op, Outcome, Sql};
use racelab_harness::sim::{Schema, World};
use racelab_harness::symmetry::{Renaming, Symmetry};

const AGENT_KEY: i64 = (1 << 32) | 1;

pub const ONE_HOOK_IN_THE_CRITICAL_SECTION: &str = "one-hook-in-the-critical-section";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    XactLock,
    SessionLock,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pc {
    /// `pg_advisory_lock` on the dedicated lock connection.
    SessionLock,
    /// SQLAlchemy's autobegin before stage `i`.
    Begin(u8),
    XactLock,
    /// Stage `i` of the pipeline (state transition, turn capture, …).
    Stage(u8),
    /// The `db.session.commit()` after stage `i`.
    Commit(u8),
    SessionUnlock,
    /// An error ends the pipeline: roll back, then release the session lock.
    Rollback,
    Done,
}

/// One hook request running the pipeline under the AGENT lock.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HookPipeline {
    variant: Variant,
    commits: u8,
    work: ConnId,
    lock: ConnId,
    pc: Pc,
    /// Between taking the lock and finishing the last stage.
    in_critical_section: bool,
    finished_stages: u8,
    failure: Option<ErrorCode>,
}

impl HookPipeline {
    fn after_error(&mut self, error: ErrorCode) -> Pc {
        self.failure = Some(error);
        self.in_critical_section = false;
        match self.pc {
            Pc::SessionLock => Pc::Done,
            Pc::Begin(_) | Pc::Commit(_) => self.release(),
            _ => Pc::Rollback,
        }
    }

    fn release(&self) -> Pc {
        match self.variant {
            Variant::SessionLock => Pc::SessionUnlock,
            Variant::XactLock => Pc::Done,
        }
    }
}

impl Actor for HookPipeline {
    /// Hooks differ only in their connections.
    fn rename(&mut self, r: &Renaming) {
        self.work = r.conn(self.work);
        self.lock = r.conn(self.lock);
    }

    fn next_op(&self) -> Option<Op> {
        let op = match self.pc {
            Pc::SessionLock => {
                Op::sql("advisory_lock", self.lock, Sql::AdvisoryLock { key: AGENT_KEY, scope: LockScope::Session })
            }
            Pc::Begin(_) => Op::sql("begin", self.work, Sql::Begin),
            Pc::XactLock => {
                Op::sql("advisory_xact_lock", self.work, Sql::AdvisoryLock { key: AGENT_KEY, scope: LockScope::Xact })
            }
            Pc::Stage(_) => Op::local("process_stage"),
            Pc::Commit(_) => Op::sql("commit", self.work, Sql::Commit),
            Pc::SessionUnlock => Op::sql("advisory_unlock", self.lock, Sql::AdvisoryUnlock { key: AGENT_KEY }),
            Pc::Rollback => Op::sql("rollback", self.work, Sql::Rollback),
            Pc::Done => return None,
        };
        Some(op)
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        if let Outcome::Err(error) = outcome {
            if !matches!(self.pc, Pc::Rollback | Pc::SessionUnlock | Pc::Done) {
                self.pc = self.after_error(*error);
                return;
            }
        }
        self.pc = match self.pc {
            Pc::Done => Pc::Done,
            Pc::SessionLock => {
                self.in_critical_section = true;
                Pc::Begin(0)
            }
            Pc::Begin(0) if self.variant == Variant::XactLock => Pc::XactLock,
            Pc::Begin(i) => Pc::Stage(i),
            Pc::XactLock => {
                self.in_critical_section = true;
                Pc::Stage(0)
            }
            Pc::Stage(i) => {
                self.finished_stages = i + 1;
                if i + 1 == self.commits {
                    self.in_critical_section = false;
                }
                Pc::Commit(i)
            }
            Pc::Commit(i) if i + 1 < self.commits => Pc::Begin(i + 1),
            Pc::Commit(_) => self.release(),
            Pc::Rollback => self.release(),
            Pc::SessionUnlock => Pc::Done,
        };
    }
}

/// `hooks` hooks of one agent, each committing `commits` times in its critical section.
pub struct AgentLockCommit {
    pub variant: Variant,
    pub hooks: usize,
    pub commits: u8,
}

impl Model for AgentLockCommit {
    type Actor = HookPipeline;

    fn init(&self) -> (World, Vec<HookPipeline>) {
        let mut world = World::new(Schema::default(), self.hooks);
        let actors = (0..self.hooks)
            .map(|i| {
                let work = world.connect(i);
                let lock = if self.variant == Variant::SessionLock { world.connect(i) } else { work };
                HookPipeline {
                    variant: self.variant,
                    commits: self.commits,
                    work,
                    lock,
                    pc: if self.variant == Variant::SessionLock { Pc::SessionLock } else { Pc::Begin(0) },
                    in_critical_section: false,
                    finished_stages: 0,
                    failure: None,
                }
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

    fn invariants(&self) -> Vec<Invariant<HookPipeline>> {
        vec![Invariant::new(ONE_HOOK_IN_THE_CRITICAL_SECTION, one_hook_in_the_critical_section)]
    }

    fn targets(&self) -> Vec<Target<HookPipeline>> {
        let commits = self.commits;
        vec![
            Target::new("a hook ran every stage", move |v: &View<Self::Actor>| {
                v.actors.iter().any(|a| a.finished_stages == commits)
            }),
            Target::new("a hook committed inside its critical section", |v: &View<Self::Actor>| {
                v.actors.iter().any(|a| a.in_critical_section && a.finished_stages > 0)
            }),
        ]
    }
}

fn one_hook_in_the_critical_section(view: &View<'_, HookPipeline>) -> Result<(), String> {
    // A crashed hook's connections closed with it, and its locks with them.
    let inside: Vec<String> = view
        .actors
        .iter()
        .zip(view.status)
        .enumerate()
        .filter(|(_, (a, status))| a.in_critical_section && **status != Status::Crashed)
        .map(|(i, (a, _))| (i, a))
        .map(|(i, a)| format!("hook {} (after {} of {} stages)", i + 1, a.finished_stages, a.commits))
        .collect();
    if inside.len() > 1 {
        return Err(format!("{} are inside the critical section at once", inside.join(" and ")));
    }
    Ok(())
}

fn build(params: &Params, variant: Variant) -> Result<Box<dyn DynModel>, String> {
    let hooks = params.workers("hooks", 2, 2, racelab_harness::op::MAX_ACTORS)?;
    let commits = params.int("commits", 2, 2, 8)? as u8;
    Ok(Box::new(AgentLockCommit { variant, hooks, commits }))
}

pub fn race() -> RaceDef {
    RaceDef {
        id: "agent-lock-commit",
        seed: "004_a5c38daeb850dd15.txt",
        passage: "Transaction-scoped locks (`pg_advisory_xact_lock`) release on commit. The hook processing \
                  pipeline does 2-8 intermediate `db.session.commit()` calls within critical sections.",
        invariant: "Never two hooks of one agent inside the critical section at once.",
        variants: vec![
            VariantDef {
                id: "xact-lock",
                summary: "pg_advisory_xact_lock on the work connection; the pipeline commits 2 to 8 times",
                build: |p| build(p, Variant::XactLock),
            },
            VariantDef {
                id: "session-lock",
                summary: "pg_advisory_lock on a dedicated connection, unlocked after the last stage",
                build: |p| build(p, Variant::SessionLock),
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
    fn xact_lock_is_released_by_the_first_intermediate_commit() {
        let m = AgentLockCommit { variant: Variant::XactLock, hooks: 2, commits: 2 };
        let r = replay(&m, &Bounds::default(), &steps(&[0, 0, 0, 0, 1, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "begin → ok",
                "advisory_xact_lock(4294967297) → ok",
                "process_stage → ok",
                "commit → ok",
                "begin → ok",
                "advisory_xact_lock(4294967297) → ok",
            ]
        );
        assert_eq!(r.violation.unwrap().invariant, ONE_HOOK_IN_THE_CRITICAL_SECTION);
    }

    #[test]
    fn session_lock_survives_the_commits() {
        let m = AgentLockCommit { variant: Variant::SessionLock, hooks: 2, commits: 2 };
        let r = replay(&m, &Bounds::default(), &steps(&[0, 0, 0, 0, 1, 0, 0, 0, 0, 1])).unwrap();
        let cells = texts(&r.events);
        assert_eq!(cells[4], "advisory_lock(4294967297) … waits");
        assert_eq!(cells[8], "advisory_unlock(4294967297) → true");
        assert_eq!(cells[9], "advisory_lock(4294967297) ⇐ ok");
        assert_eq!(r.violation, None);
    }
}
