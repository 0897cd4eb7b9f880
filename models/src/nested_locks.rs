//! # `nested-locks`: fine-grained advisory-lock namespaces taken in different nesting orders
//!
//! Seed `004_a5c38daeb850dd15.txt`, "Architecture Decisions", decision 2:
//!
//! > **Single AGENT namespace** -- A single `pg_advisory_lock(1, agent_id)` per agent, rather than
//! > fine-grained namespaces (per-command, per-turn, etc.). Fine-grained namespaces (8 explored)
//! > caused 7 nested lock scenarios and deadlock risk.
//!
//! and decision 1: "Session-scoped advisory locks on dedicated connections": the
//! `advisory_lock(namespace, id)` context manager takes `pg_advisory_lock` on a pooled connection
//! of its own, so each nesting level holds a separate connection.
//!
//! ## The race
//!
//! Of the pairs the seed names, the one that best fits is its HIGH race "progress capture vs
//! reconciler": a stop hook captures a turn's progress under its agent, so it takes AGENT then
//! TURN; the transcript reconciler works turn by turn and updates the agent, so it takes TURN
//! then AGENT. Many stop hooks (`hooks`, one per agent session that stops) race the
//! reconciler (`reconcilers`, one by default: the seed lists it among the background threads,
//! beside the reaper). When a hook and a reconciler each hold their outer lock, each waits for
//! the other's forever. Because every lock sits on its
//! own connection, PostgreSQL sees two waiting sessions whose holders are idle sessions, not a
//! cycle: its deadlock detector never fires, and both threads hang.
//!
//! ## Variants
//!
//! - `fine-grained` (as the proposal explored it): AGENT→TURN in the hook, TURN→AGENT in the
//!   reconciler, each lock on its own dedicated connection.
//! - `single-namespace` (decision 2): both take only `advisory_lock(AGENT, agent_id)`, never
//!   nested.
//! - `fine-grained-one-connection` (ours, for teaching): the same nesting orders with both of an
//!   actor's locks on one connection, so the cycle is between two sessions and PostgreSQL raises
//!   `40P01 deadlock_detected` in one of them; that hook fails instead of hanging.
//!
//! Which variant does not hold: `fine-grained`. In 4 steps the hook takes AGENT, the reconciler
//! TURN, and each then waits for the other's lock; nothing in PostgreSQL breaks the wait, so the
//! harness's own no-deadlock check reports it (it runs before "every hook completes", which it
//! makes redundant in the simulator). `fine-grained-one-connection` fails "no hook fails" in 5
//! steps: the same 4, then one hook's deadlock check finds the cycle and its statement fails
//! with 40P01. PostgreSQL aborts whichever waiter checks first; when the reconciler's wait closes
//! the cycle within `deadlock_timeout` of the hook's, that is the hook, as in the shortest
//! counterexample, and otherwise the reconciler. The explorer tries both.
//! `single-namespace` holds, explored completely for a hook and a reconciler with 1 crash per
//! execution, and (in the scale table) for 16 hooks and a reconciler.
//!
//! ## Invariant
//!
//! No deadlock, no hook that fails with an error, and every hook that was not killed completes.

use racelab_harness::catalogue::{DynModel, Params, RaceDef, VariantDef};
use racelab_harness::model::{Actor, Invariant, Model, Phase, Status, Target, View};
use racelab_harness::op::{ConnId, ErrorCode, LockScope, Op, Outcome, Sql};
use racelab_harness::sim::{Schema, World};
use racelab_harness::symmetry::{Renaming, Symmetry};

const AGENT_ID: i64 = 1;
const TURN_ID: i64 = 2;

pub const NO_HOOK_FAILS: &str = "no-hook-fails";
pub const EVERY_HOOK_COMPLETES: &str = "every-hook-completes";

/// A lock namespace of the fine-grained design.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Namespace {
    Agent = 1,
    Turn = 2,
}

impl Namespace {
    /// `pg_advisory_lock(namespace, id)` packs its two int4 keys into one int8: namespace high.
    fn key(self) -> i64 {
        let id = match self {
            Namespace::Agent => AGENT_ID,
            Namespace::Turn => TURN_ID,
        };
        ((self as i64) << 32) | id
    }
    fn lock_name(self) -> &'static str {
        match self {
            Namespace::Agent => "advisory_lock_agent",
            Namespace::Turn => "advisory_lock_turn",
        }
    }
    fn unlock_name(self) -> &'static str {
        match self {
            Namespace::Agent => "advisory_unlock_agent",
            Namespace::Turn => "advisory_unlock_turn",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    FineGrained,
    SingleNamespace,
    FineGrainedOneConnection,
}

/// The two code paths that nest locks in opposite orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// A stop hook capturing the turn's progress: AGENT, then TURN.
    StopHook,
    /// The transcript reconciler updating the agent from a turn: TURN, then AGENT.
    Reconciler,
}

impl Path {
    fn namespaces(self, variant: Variant) -> Vec<Namespace> {
        match (variant, self) {
            (Variant::SingleNamespace, _) => vec![Namespace::Agent],
            (_, Path::StopHook) => vec![Namespace::Agent, Namespace::Turn],
            (_, Path::Reconciler) => vec![Namespace::Turn, Namespace::Agent],
        }
    }
    fn work_name(self) -> &'static str {
        match self {
            Path::StopHook => "capture_progress",
            Path::Reconciler => "reconcile_transcript",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Path::StopHook => "stop hook",
            Path::Reconciler => "reconciler",
        }
    }
}

/// One lock of a nesting, on the connection that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct HeldOn {
    namespace: Namespace,
    conn: ConnId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pc {
    /// Take the `i`-th lock, outermost first.
    Lock(usize),
    Work,
    /// Release the `i`-th lock; innermost first, as the `with` blocks unwind.
    Unlock(usize),
    Done,
}

/// A hook or background task that runs its work under nested advisory locks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LockingTask {
    path: Path,
    locks: Vec<HeldOn>,
    pc: Pc,
    /// It held every lock it nests and ran its work.
    worked: bool,
    /// The error that made it fail, if one did.
    failure: Option<ErrorCode>,
}

impl LockingTask {
    fn completed(&self) -> bool {
        self.pc == Pc::Done && self.failure.is_none()
    }
}

impl Actor for LockingTask {
    fn next_op(&self) -> Option<Op> {
        let op = match self.pc {
            Pc::Lock(i) => {
                let HeldOn { namespace, conn } = self.locks[i];
                let stmt = Sql::AdvisoryLock { key: namespace.key(), scope: LockScope::Session };
                Op::sql(namespace.lock_name(), conn, stmt)
            }
            Pc::Work => Op::local(self.path.work_name()),
            Pc::Unlock(i) => {
                let HeldOn { namespace, conn } = self.locks[i];
                Op::sql(namespace.unlock_name(), conn, Sql::AdvisoryUnlock { key: namespace.key() })
            }
            Pc::Done => return None,
        };
        Some(op)
    }

    /// Tasks on one path differ only in their connections; the keys are the agent's and turn's.
    fn rename(&mut self, r: &Renaming) {
        for lock in &mut self.locks {
            lock.conn = r.conn(lock.conn);
        }
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        let unwind_from = |i: usize| if i == 0 { Pc::Done } else { Pc::Unlock(i - 1) };
        self.pc = match (self.pc, outcome) {
            // The `with` raises: the locks already held are released on the way out.
            (Pc::Lock(i), Outcome::Err(error)) => {
                self.failure = Some(*error);
                unwind_from(i)
            }
            (Pc::Lock(i), _) if i + 1 < self.locks.len() => Pc::Lock(i + 1),
            (Pc::Lock(_), _) => Pc::Work,
            (Pc::Work, _) => {
                self.worked = true;
                Pc::Unlock(self.locks.len() - 1)
            }
            // An unlock returns false when the lock was not held; there is nothing more to do.
            (Pc::Unlock(i), _) => unwind_from(i),
            (Pc::Done, _) => Pc::Done,
        };
    }
}

/// `hooks` stop hooks and `reconcilers` reconcilers of one agent on one turn, in that order.
pub struct NestedLocks {
    pub variant: Variant,
    pub hooks: usize,
    pub reconcilers: usize,
}

impl NestedLocks {
    fn tasks(&self) -> usize {
        self.hooks + self.reconcilers
    }

    fn path(&self, task: usize) -> Path {
        if task < self.hooks {
            Path::StopHook
        } else {
            Path::Reconciler
        }
    }
}

impl Model for NestedLocks {
    type Actor = LockingTask;

    fn init(&self) -> (World, Vec<LockingTask>) {
        let mut world = World::new(Schema::default(), self.tasks());
        let actors = (0..self.tasks())
            .map(|i| {
                let path = self.path(i);
                let namespaces = path.namespaces(self.variant);
                let shared = (self.variant == Variant::FineGrainedOneConnection).then(|| world.connect(i));
                // Otherwise each `advisory_lock()` checks out a dedicated connection of its own.
                let locks = namespaces
                    .into_iter()
                    .map(|namespace| HeldOn { namespace, conn: shared.unwrap_or_else(|| world.connect(i)) })
                    .collect();
                LockingTask { path, locks, pc: Pc::Lock(0), worked: false, failure: None }
            })
            .collect();
        (world, actors)
    }

    fn actor_names(&self) -> Vec<String> {
        (0..self.tasks())
            .map(|i| {
                let path = self.path(i);
                match if i < self.hooks { i } else { i - self.hooks } {
                    0 => path.name().to_string(),
                    n => format!("{} {}", path.name(), n + 1),
                }
            })
            .collect()
    }

    /// The stop hooks are interchangeable, and so are the reconcilers.
    fn symmetry(&self) -> Option<Symmetry> {
        let groups: Vec<Vec<usize>> = [(0..self.hooks).collect::<Vec<_>>(), (self.hooks..self.tasks()).collect()]
            .into_iter()
            .filter(|g| g.len() >= 2)
            .collect();
        (!groups.is_empty()).then(|| Symmetry { groups, ..Symmetry::default() })
    }

    fn invariants(&self) -> Vec<Invariant<LockingTask>> {
        vec![Invariant::new(NO_HOOK_FAILS, no_hook_fails), Invariant::new(EVERY_HOOK_COMPLETES, every_hook_completes)]
    }

    fn targets(&self) -> Vec<Target<LockingTask>> {
        vec![
            Target::new("a task ran its work under every lock it nests", |v: &View<Self::Actor>| {
                v.actors.iter().any(|a| a.worked)
            }),
            Target::new("every task completed", |v: &View<Self::Actor>| v.actors.iter().all(LockingTask::completed)),
        ]
    }
}

fn no_hook_fails(view: &View<'_, LockingTask>) -> Result<(), String> {
    match view.actors.iter().find_map(|a| a.failure.map(|e| (a, e))) {
        Some((a, error)) => Err(format!("the {} failed: {error}", a.path.name())),
        None => Ok(()),
    }
}

/// A task killed by a crash is exempt: its locks die with its connections and its caller retries.
fn every_hook_completes(view: &View<'_, LockingTask>) -> Result<(), String> {
    if view.phase != Phase::Final {
        return Ok(());
    }
    for (a, status) in view.actors.iter().zip(view.status) {
        if *status == Status::Crashed || a.completed() || a.failure.is_some() {
            continue;
        }
        let stuck = a.next_op().map_or_else(String::new, |op| format!(" in {}", op.name));
        return Err(format!("the {} never completed: it waits{stuck}", a.path.name()));
    }
    Ok(())
}

fn build(params: &Params, variant: Variant) -> Result<Box<dyn DynModel>, String> {
    let reconcilers = params.count("reconcilers", 1, 1, racelab_harness::op::MAX_ACTORS / 2)?;
    let hooks = params.workers("hooks", 1, 1, racelab_harness::op::MAX_ACTORS - reconcilers)?;
    Ok(Box::new(NestedLocks { variant, hooks, reconcilers }))
}

pub fn race() -> RaceDef {
    RaceDef {
        id: "nested-locks",
        seed: "004_a5c38daeb850dd15.txt",
        passage: "Fine-grained namespaces (8 explored) caused 7 nested lock scenarios and deadlock risk. Single \
                  namespace eliminates nesting entirely.",
        invariant: "Never a deadlock, and never a hook that fails or never completes.",
        variants: vec![
            VariantDef {
                id: "fine-grained",
                summary: "hook takes AGENT then TURN, reconciler TURN then AGENT, each lock on its own connection",
                build: |p| build(p, Variant::FineGrained),
            },
            VariantDef {
                id: "single-namespace",
                summary: "every task takes only the AGENT lock, never nested",
                build: |p| build(p, Variant::SingleNamespace),
            },
            VariantDef {
                id: "fine-grained-one-connection",
                summary: "the fine-grained nesting with both of a task's locks on one connection",
                build: |p| build(p, Variant::FineGrainedOneConnection),
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
    use racelab_harness::testing::{steps, texts, violated};

    fn hook_and_reconciler(variant: Variant) -> NestedLocks {
        NestedLocks { variant, hooks: 1, reconcilers: 1 }
    }

    #[test]
    fn fine_grained_opposite_nesting_hangs_both_tasks() {
        let model = hook_and_reconciler(Variant::FineGrained);
        let r = replay(&model, &Bounds::default(), &steps(&[0, 1, 0, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "advisory_lock_agent(4294967297) → ok",
                "advisory_lock_turn(8589934594) → ok",
                // The hook waits for the reconciler's TURN lock …
                "advisory_lock_turn(8589934594) … waits",
                // … and the reconciler for the hook's AGENT lock.
                "advisory_lock_agent(4294967297) … waits",
            ]
        );
        // Each lock is on its own connection: PostgreSQL sees no cycle and raises nothing.
        assert!(!r.state.world.is_ready(0) && !r.state.world.is_ready(1));
        assert_eq!(r.state.status, [Status::Waiting, Status::Waiting]);
        assert_eq!(r.violation.unwrap().invariant, DEADLOCK);
        assert_eq!(violated(&model, &r.state, Phase::Final), [EVERY_HOOK_COMPLETES]);
    }

    #[test]
    fn fine_grained_on_one_connection_gets_deadlock_detected_in_either_hook() {
        let model = hook_and_reconciler(Variant::FineGrainedOneConnection);
        let bounds = Bounds::default();
        let cycle = [
            "advisory_lock_agent(4294967297) → ok",
            "advisory_lock_turn(8589934594) → ok",
            "advisory_lock_turn(8589934594) … waits",
            // The reconciler's wait closes the cycle: both deadlock checks are due, and the
            // explorer picks whose runs first.
            "advisory_lock_agent(4294967297) … waits",
        ];
        let prefix = steps(&[0, 1, 0, 1]);
        let r = replay(&model, &bounds, &prefix).unwrap();
        assert_eq!(texts(&r.events), cycle);
        assert_eq!(r.state.choices(&bounds), steps(&[0, 1]), "only the deadlock checks race");
        for (victim, label) in [(0, "advisory_lock_turn(8589934594)"), (1, "advisory_lock_agent(4294967297)")] {
            let mut schedule = prefix.clone();
            schedule.extend(steps(&[victim]));
            // Each victim's schedule is a token of its own.
            let id = "nested-locks/fine-grained-one-connection";
            let token = racelab_harness::token::encode(id, &schedule);
            assert_eq!(racelab_harness::token::decode(id, &token).unwrap(), schedule);
            let r = replay(&model, &bounds, &schedule).unwrap();
            assert_eq!(texts(&r.events)[4], format!("{label} ⇐ 40P01 deadlock_detected"));
            let victims: Vec<_> = r.state.actors.iter().filter(|a| a.failure.is_some()).collect();
            assert_eq!(victims.len(), 1, "exactly one task must be aborted: {:?}", r.state.actors);
            assert_eq!(r.state.actors[victim].failure, Some(ErrorCode::DEADLOCK_DETECTED));
            assert_eq!(r.violation.unwrap().invariant, NO_HOOK_FAILS);
        }
        // The reconciler, which closed the cycle, is the victim: it releases its outer lock, and
        // the hook then collects the lock it waited for and finishes.
        let mut state = replay(&model, &bounds, &steps(&[0, 1, 0, 1, 1])).unwrap().state;
        let mut cells = Vec::new();
        for choice in steps(&[1, 0, 0, 0, 0]) {
            assert!(state.choices(&bounds).contains(&choice), "{choice:?} is enabled");
            cells.push(state.apply_described(choice, &bounds).0.text);
        }
        assert_eq!(
            cells,
            [
                "advisory_unlock_turn(8589934594) → true",
                "advisory_lock_turn(8589934594) ⇐ ok",
                "capture_progress → ok",
                "advisory_unlock_turn(8589934594) → true",
                "advisory_unlock_agent(4294967297) → true",
            ]
        );
        assert!(state.actors[0].completed());
        // Every hook that was not aborted completed; the victim's failure stays a violation.
        assert_eq!(violated(&model, &state, Phase::Final), [NO_HOOK_FAILS]);
    }

    #[test]
    fn single_namespace_serialises_the_tasks() {
        let model = hook_and_reconciler(Variant::SingleNamespace);
        let r = replay(&model, &Bounds::default(), &steps(&[0, 1, 0, 0, 1, 1, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "advisory_lock_agent(4294967297) → ok",
                "advisory_lock_agent(4294967297) … waits",
                "capture_progress → ok",
                // The unlock grants the waiting lock.
                "advisory_unlock_agent(4294967297) → true",
                "advisory_lock_agent(4294967297) ⇐ ok",
                "reconcile_transcript → ok",
                "advisory_unlock_agent(4294967297) → true",
            ]
        );
        assert!(r.state.actors.iter().all(LockingTask::completed));
        assert_eq!(r.violation, None);
        assert!(violated(&model, &r.state, Phase::Final).is_empty());
    }
}
