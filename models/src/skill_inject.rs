//! # `skill-inject`: skill injection that checks a cached `prompt_injected_at`
//!
//! Seed `004_a5c38daeb850dd15.txt`, "Phase 1 (Foundation + CRITICAL)":
//!
//! > Add `db.session.refresh(agent)` defence in depth to skill injector
//!
//! with the acceptance criteria's CRITICAL "skill injector double injection", and "Constraints
//! and Gotchas", 7: "Stale ORM reads are OUT OF SCOPE -- Pattern #4 (SQLAlchemy identity map
//! caching) […] Advisory locks serialise writes but do not fix stale reads".
//!
//! ## The race
//!
//! Each hook request loads the agent into its SQLAlchemy session when it starts; the identity
//! map then keeps that copy. The skill injector runs later under `advisory_lock(AGENT,
//! agent.id)`, checks `agent.prompt_injected_at`, and if it is unset sends the skill prompt and
//! persists the time. The lock serialises the injectors, but a hook that loaded the agent before
//! the other hook persisted its injection checks a stale copy and injects again.
//!
//! ## Variants
//!
//! - `stale-read` (as found, with Phase 1's lock): the check reads the identity map's copy.
//! - `refresh` (Phase 1's defence in depth): `db.session.refresh(agent)` under the lock, before
//!   the check.
//!
//! Which variant does not hold: `stale-read`. Both hooks load the agent; hook 1 locks, injects,
//! persists and unlocks; hook 2 locks and its cached copy still says "never injected" (`racelab
//! explain skill-inject/stale-read`, 8 steps). `refresh` holds, explored completely for two hooks
//! with no faults (21 states: the hooks are symmetric, and with `refresh` the loaded copy is
//! never read, so a hook does not keep it), and for 16 hooks (2,737 states). It does not
//! survive a crash between sending the prompt and persisting the time: with `crashes = 1` the
//! explorer finds hook 1 loading, locking, refreshing (null) and sending, then crashing; hook
//! 2 refreshes, still reads null, and sends again (9 steps). That is at-least-once delivery,
//! which no fresher read closes; the scenario therefore explores no faults.
//!
//! ## Invariant
//!
//! Never two injections for one agent.

use racelab_harness::catalogue::{DynModel, Params, RaceDef, VariantDef};
use racelab_harness::model::{Actor, Invariant, Model, Target, View};
use racelab_harness::op::{ConnId, ErrorCode, Expr, LockScope, Op, Outcome, Row, Sql, Value, MAX_ACTORS};
use racelab_harness::sim::{Schema, TableDef, World};
use racelab_harness::symmetry::{Renaming, Symmetry};

const AGENTS: &str = "agents";
const COLUMNS: [&str; 2] = ["id", "prompt_injected_at"];
const INJECTED_AT: usize = 1;
const AGENT_ID: Value = Value::Int(1);
const AGENT_KEY: i64 = (1 << 32) | 1;

/// The time hook `i` persists: one string per hook, compared with nothing but null, so the
/// hooks are identical up to it.
fn time_of(i: usize) -> &'static str {
    racelab_harness::intern(format!("t{}", i + 1))
}

pub const ONE_INJECTION_PER_AGENT: &str = "one-injection-per-agent";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    StaleRead,
    Refresh,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pc {
    /// The request loads the agent into its session's identity map.
    Load,
    Lock,
    Refresh,
    /// The check of the cached `prompt_injected_at`, then the tmux send.
    Inject,
    Persist,
    Unlock,
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SkillInjector {
    variant: Variant,
    lock: ConnId,
    work: ConnId,
    now: &'static str,
    pc: Pc,
    /// The identity map's copy of the agent row.
    cached: Option<Row>,
    locked: bool,
    injected: bool,
    failure: Option<ErrorCode>,
}

impl SkillInjector {
    fn cached_says_injected(&self) -> bool {
        self.cached.as_ref().is_some_and(|r| r[INJECTED_AT] != Value::Null)
    }
}

impl Actor for SkillInjector {
    /// Hooks differ only in their connections and the time they persist, which a cached row
    /// may hold.
    fn rename(&mut self, r: &Renaming) {
        self.lock = r.conn(self.lock);
        self.work = r.conn(self.work);
        self.now = match r.value(Value::Str(self.now)) {
            Value::Str(now) => now,
            other => unreachable!("a time renamed to {other}"),
        };
        if let Some(row) = &mut self.cached {
            r.row(row);
        }
    }

    fn next_op(&self) -> Option<Op> {
        let load = || Sql::Select { table: AGENTS, filter: vec![("id", AGENT_ID)], lock: None };
        let op = match self.pc {
            Pc::Load => Op::sql("load_agent", self.work, load()),
            Pc::Lock => {
                Op::sql("advisory_lock", self.lock, Sql::AdvisoryLock { key: AGENT_KEY, scope: LockScope::Session })
            }
            Pc::Refresh => Op::sql("refresh_agent", self.work, load()),
            Pc::Inject => Op::local("send_skill_prompt"),
            Pc::Persist => {
                let set = vec![("prompt_injected_at", Expr::Value(Value::Str(self.now)))];
                Op::sql(
                    "persist_prompt_injected_at",
                    self.work,
                    Sql::Update { table: AGENTS, filter: vec![("id", AGENT_ID)], set },
                )
            }
            Pc::Unlock => Op::sql("advisory_unlock", self.lock, Sql::AdvisoryUnlock { key: AGENT_KEY }),
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
            // With `refresh`, the loaded copy is never read: the refresh under the lock
            // replaces it first. Keeping it would only tell apart states that differ in a dead
            // value (and, in the lock's FIFO queue, in the order of such states).
            Pc::Load if self.variant == Variant::Refresh => Pc::Lock,
            Pc::Load | Pc::Refresh => {
                self.cached = outcome.rows().first().cloned();
                match self.pc {
                    Pc::Load => Pc::Lock,
                    _ if self.cached_says_injected() => Pc::Unlock,
                    _ => Pc::Inject,
                }
            }
            Pc::Lock => {
                self.locked = true;
                match self.variant {
                    Variant::Refresh => Pc::Refresh,
                    Variant::StaleRead if self.cached_says_injected() => Pc::Unlock,
                    Variant::StaleRead => Pc::Inject,
                }
            }
            Pc::Inject => {
                self.injected = true;
                Pc::Persist
            }
            Pc::Persist => {
                self.cached = outcome.rows().first().cloned();
                Pc::Unlock
            }
            Pc::Unlock => {
                self.locked = false;
                Pc::Done
            }
        };
    }
}

/// `hooks` hook requests of one agent, each running the skill injector.
pub struct SkillInject {
    pub variant: Variant,
    pub hooks: usize,
}

impl Model for SkillInject {
    type Actor = SkillInjector;

    fn init(&self) -> (World, Vec<SkillInjector>) {
        let schema = Schema { tables: vec![TableDef { name: AGENTS, columns: COLUMNS.to_vec(), unique: vec![] }] };
        let mut world = World::new(schema, self.hooks);
        world.db.seed_row(AGENTS, vec![AGENT_ID, Value::Null]);
        let actors = (0..self.hooks)
            .map(|i| SkillInjector {
                variant: self.variant,
                lock: world.connect(i),
                work: world.connect(i),
                now: time_of(i),
                pc: Pc::Load,
                cached: None,
                locked: false,
                injected: false,
                failure: None,
            })
            .collect();
        (world, actors)
    }

    fn actor_names(&self) -> Vec<String> {
        (1..=self.hooks).map(|i| format!("hook {i}")).collect()
    }

    /// Every hook runs the same injector; each owns the time it persists.
    fn symmetry(&self) -> Option<Symmetry> {
        let owned = (0..self.hooks).map(|i| vec![Value::Str(time_of(i))]).collect();
        (self.hooks >= 2).then(|| Symmetry::group(0..self.hooks, owned))
    }

    fn invariants(&self) -> Vec<Invariant<SkillInjector>> {
        vec![Invariant::new(ONE_INJECTION_PER_AGENT, one_injection_per_agent)]
    }

    fn targets(&self) -> Vec<Target<SkillInjector>> {
        vec![
            Target::new("a hook injected the skill prompt", |v: &View<Self::Actor>| {
                v.actors.iter().any(|a| a.injected)
            }),
            Target::new("every hook ended without error", |v: &View<Self::Actor>| {
                v.actors.iter().all(|a| a.pc == Pc::Done && a.failure.is_none())
            }),
        ]
    }
}

fn one_injection_per_agent(view: &View<'_, SkillInjector>) -> Result<(), String> {
    let injected: Vec<String> =
        view.actors.iter().enumerate().filter(|(_, a)| a.injected).map(|(i, _)| format!("hook {}", i + 1)).collect();
    if injected.len() > 1 {
        return Err(format!(
            "agent {AGENT_ID} got the skill prompt {} times ({})",
            injected.len(),
            injected.join(", ")
        ));
    }
    Ok(())
}

fn build(params: &Params, variant: Variant) -> Result<Box<dyn DynModel>, String> {
    let hooks = params.workers("hooks", 2, 2, MAX_ACTORS)?;
    Ok(Box::new(SkillInject { variant, hooks }))
}

pub fn race() -> RaceDef {
    RaceDef {
        id: "skill-inject",
        seed: "004_a5c38daeb850dd15.txt",
        passage: "Add `db.session.refresh(agent)` defence in depth to skill injector",
        invariant: "Never two skill injections for one agent.",
        variants: vec![
            VariantDef {
                id: "stale-read",
                summary: "under the AGENT lock, check prompt_injected_at on the identity map's cached agent (as found)",
                build: |p| build(p, Variant::StaleRead),
            },
            VariantDef {
                id: "refresh",
                summary: "under the AGENT lock, db.session.refresh(agent), then check prompt_injected_at",
                build: |p| build(p, Variant::Refresh),
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
    fn stale_read_injects_again_from_the_identity_map() {
        let m = SkillInject { variant: Variant::StaleRead, hooks: 2 };
        let r = replay(&m, &Bounds::default(), &steps(&[0, 1, 0, 0, 0, 0, 1, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "load_agent(id=1) → [1, null]",
                "load_agent(id=1) → [1, null]",
                "advisory_lock(4294967297) → ok",
                "send_skill_prompt → ok",
                "persist_prompt_injected_at(id=1; prompt_injected_at=t1) → [1, t1]",
                "advisory_unlock(4294967297) → true",
                "advisory_lock(4294967297) → ok",
                // Its cached copy predates hook 1's persist.
                "send_skill_prompt → ok",
            ]
        );
        assert_eq!(r.violation.unwrap().invariant, ONE_INJECTION_PER_AGENT);
    }

    #[test]
    fn refresh_sees_the_persisted_injection() {
        let m = SkillInject { variant: Variant::Refresh, hooks: 2 };
        let r = replay(&m, &Bounds::default(), &steps(&[0, 1, 0, 0, 0, 0, 0, 1, 1, 1])).unwrap();
        let cells = texts(&r.events);
        assert_eq!(cells[8], "refresh_agent(id=1) → [1, t1]");
        assert_eq!(cells[9], "advisory_unlock(4294967297) → true");
        assert_eq!(r.violation, None);
    }
}
