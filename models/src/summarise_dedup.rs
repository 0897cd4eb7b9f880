//! # `summarise-dedup`: two summarisers for one turn
//!
//! Seed `004_a5c38daeb850dd15.txt`, "Phase 2 (HIGH fixes)":
//!
//! > Summarisation service: `SELECT ... FOR UPDATE NOWAIT` on turn row
//!
//! and the acceptance criteria's "summarisation dedup" race.
//!
//! ## The race
//!
//! `summarise_turn(turn)` runs from a hook and from a background poller. It loads the turn, and
//! when the turn has no summary yet it asks the model for one and stores it. Two summarisers that
//! load the turn before either stores both summarise it, and the second summary replaces the
//! first.
//!
//! ## Variants
//!
//! - `unlocked` (as found): load, summarise, store, each in autocommit.
//! - `for-update-nowait` (the seed's fix): `BEGIN; SELECT … FOR UPDATE NOWAIT` on the turn; a
//!   summariser that finds the row locked (55P03) skips the turn, one that finds a summary
//!   commits and skips; otherwise it summarises, stores and commits while holding the row lock.
//!
//! Which variant does not hold: `unlocked`, in 6 steps: both load the turn without a summary,
//! both summarise, both store (`racelab explain summarise-dedup/unlocked`). `for-update-nowait`
//! holds, explored completely for two summarisers with 1 crash and 1 injected error per
//! execution: a summariser that crashes or fails before committing stores nothing, and the turn
//! stays free for the next.
//!
//! ## Invariant
//!
//! A turn is summarised once: never two summaries stored for one turn.

use racelab_harness::catalogue::{DynModel, Params, RaceDef, VariantDef};
use racelab_harness::model::{Actor, Invariant, Model, Target, View};
use racelab_harness::op::{ConnId, ErrorCode, Expr, Op, Outcome, RowLock, Sql, Value};
use racelab_harness::sim::{Schema, TableDef, World};
use racelab_harness::symmetry::{Renaming, Symmetry};

const TURNS: &str = "turns";
const COLUMNS: [&str; 2] = ["id", "summary"];
const SUMMARY: usize = 1;
const TURN_ID: Value = Value::Int(1);
/// The summary summariser `i` writes.
fn summary(i: usize) -> &'static str {
    racelab_harness::intern(format!("summary-{}", i + 1))
}

pub const ONE_SUMMARY_PER_TURN: &str = "one-summary-per-turn";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    Unlocked,
    ForUpdateNowait,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pc {
    Begin,
    Load,
    Summarise,
    Store,
    Commit,
    Rollback,
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Summariser {
    variant: Variant,
    conn: ConnId,
    summary: &'static str,
    pc: Pc,
    /// It stored its summary, and the store is committed.
    stored: bool,
    /// Its store returned, not yet committed.
    store_pending: bool,
    /// It skipped the turn: locked by another, or already summarised.
    skipped: bool,
    failure: Option<ErrorCode>,
}

impl Summariser {
    fn transactional(&self) -> bool {
        self.variant == Variant::ForUpdateNowait
    }
}

impl Actor for Summariser {
    /// Summarisers differ only in their connection and the summary they write.
    fn rename(&mut self, r: &Renaming) {
        self.conn = r.conn(self.conn);
        self.summary = match r.value(Value::Str(self.summary)) {
            Value::Str(summary) => summary,
            other => unreachable!("summary renamed to {other}"),
        };
    }

    fn next_op(&self) -> Option<Op> {
        let conn = self.conn;
        let op = match self.pc {
            Pc::Begin => Op::sql("begin", conn, Sql::Begin),
            Pc::Load => {
                let (name, lock) = match self.variant {
                    Variant::Unlocked => ("load_turn", None),
                    Variant::ForUpdateNowait => ("load_turn_for_update_nowait", Some(RowLock::ForUpdateNowait)),
                };
                Op::sql(name, conn, Sql::Select { table: TURNS, filter: vec![("id", TURN_ID)], lock })
            }
            Pc::Summarise => Op::local("summarise_with_model"),
            Pc::Store => {
                let set = vec![("summary", Expr::Value(Value::Str(self.summary)))];
                Op::sql("store_summary", conn, Sql::Update { table: TURNS, filter: vec![("id", TURN_ID)], set })
            }
            Pc::Commit => Op::sql("commit", conn, Sql::Commit),
            Pc::Rollback => Op::sql("rollback", conn, Sql::Rollback),
            Pc::Done => return None,
        };
        Some(op)
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        if let (Outcome::Err(error), false) = (outcome, matches!(self.pc, Pc::Rollback | Pc::Done)) {
            if *error == ErrorCode::LOCK_NOT_AVAILABLE && self.pc == Pc::Load {
                self.skipped = true;
            } else {
                self.failure = Some(*error);
            }
            self.store_pending = false;
            self.pc = if self.transactional() && !matches!(self.pc, Pc::Begin | Pc::Commit) {
                Pc::Rollback
            } else {
                Pc::Done
            };
            return;
        }
        self.pc = match self.pc {
            Pc::Done | Pc::Rollback => Pc::Done,
            Pc::Begin => Pc::Load,
            Pc::Load => match outcome.rows().first().map(|r| r[SUMMARY]) {
                Some(Value::Null) => Pc::Summarise,
                _ => {
                    self.skipped = true;
                    if self.transactional() {
                        Pc::Commit
                    } else {
                        Pc::Done
                    }
                }
            },
            Pc::Summarise => Pc::Store,
            Pc::Store if self.transactional() => {
                self.store_pending = true;
                Pc::Commit
            }
            Pc::Store => {
                self.stored = true;
                Pc::Done
            }
            Pc::Commit => {
                self.stored = self.store_pending;
                self.store_pending = false;
                Pc::Done
            }
        };
    }
}

/// `summarisers` summarisers of one turn that has no summary yet.
pub struct SummariseDedup {
    pub variant: Variant,
    pub summarisers: usize,
}

impl Model for SummariseDedup {
    type Actor = Summariser;

    fn init(&self) -> (World, Vec<Summariser>) {
        let schema = Schema { tables: vec![TableDef { name: TURNS, columns: COLUMNS.to_vec(), unique: vec![] }] };
        let mut world = World::new(schema, self.summarisers);
        world.db.seed_row(TURNS, vec![TURN_ID, Value::Null]);
        let actors = (0..self.summarisers)
            .map(|i| Summariser {
                variant: self.variant,
                conn: world.connect(i),
                summary: summary(i),
                pc: if self.variant == Variant::ForUpdateNowait { Pc::Begin } else { Pc::Load },
                stored: false,
                store_pending: false,
                skipped: false,
                failure: None,
            })
            .collect();
        (world, actors)
    }

    fn actor_names(&self) -> Vec<String> {
        (0..self.summarisers).map(|i| if i == 0 { "stop hook".to_string() } else { format!("poller {i}") }).collect()
    }

    /// The stop hook and the pollers run the same code; only their names differ.
    fn symmetry(&self) -> Option<Symmetry> {
        let owned = (0..self.summarisers).map(|i| vec![Value::Str(summary(i))]).collect();
        (self.summarisers >= 2).then(|| Symmetry::group(0..self.summarisers, owned))
    }

    fn invariants(&self) -> Vec<Invariant<Summariser>> {
        vec![Invariant::new(ONE_SUMMARY_PER_TURN, one_summary_per_turn)]
    }

    fn targets(&self) -> Vec<Target<Summariser>> {
        vec![
            Target::new("a summary was stored", |v: &View<Self::Actor>| v.actors.iter().any(|a| a.stored)),
            Target::new("a summariser skipped the turn", |v: &View<Self::Actor>| v.actors.iter().any(|a| a.skipped)),
        ]
    }
}

fn one_summary_per_turn(view: &View<'_, Summariser>) -> Result<(), String> {
    let stored: Vec<&str> = view.actors.iter().filter(|a| a.stored).map(|a| a.summary).collect();
    if stored.len() > 1 {
        return Err(format!("turn {TURN_ID} was summarised {} times: {}", stored.len(), stored.join(", ")));
    }
    Ok(())
}

fn build(params: &Params, variant: Variant) -> Result<Box<dyn DynModel>, String> {
    let summarisers = params.workers("summarisers", 2, 2, racelab_harness::op::MAX_ACTORS)?;
    Ok(Box::new(SummariseDedup { variant, summarisers }))
}

pub fn race() -> RaceDef {
    RaceDef {
        id: "summarise-dedup",
        seed: "004_a5c38daeb850dd15.txt",
        passage: "Summarisation service: `SELECT ... FOR UPDATE NOWAIT` in `summarise_turn()`",
        invariant: "Never a turn summarised twice.",
        variants: vec![
            VariantDef {
                id: "unlocked",
                summary: "load the turn, summarise if it has no summary, store it; autocommit (as found)",
                build: |p| build(p, Variant::Unlocked),
            },
            VariantDef {
                id: "for-update-nowait",
                summary: "BEGIN; SELECT … FOR UPDATE NOWAIT on the turn; skip on 55P03 or an existing summary",
                build: |p| build(p, Variant::ForUpdateNowait),
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
    fn unlocked_both_load_an_unsummarised_turn() {
        let m = SummariseDedup { variant: Variant::Unlocked, summarisers: 2 };
        let r = replay(&m, &Bounds::default(), &steps(&[0, 1, 0, 1, 0, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "load_turn(id=1) → [1, null]",
                "load_turn(id=1) → [1, null]",
                "summarise_with_model → ok",
                "summarise_with_model → ok",
                "store_summary(id=1; summary=summary-1) → [1, summary-1]",
                "store_summary(id=1; summary=summary-2) → [1, summary-2]",
            ]
        );
        assert_eq!(r.violation.unwrap().invariant, ONE_SUMMARY_PER_TURN);
    }

    #[test]
    fn nowait_makes_the_second_summariser_skip() {
        let m = SummariseDedup { variant: Variant::ForUpdateNowait, summarisers: 2 };
        let r = replay(&m, &Bounds::default(), &steps(&[0, 0, 1, 1, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "begin → ok",
                "load_turn_for_update_nowait(id=1) → [1, null]",
                "begin → ok",
                "load_turn_for_update_nowait(id=1) → 55P03 lock_not_available",
                "rollback → ok",
            ]
        );
        assert!(r.state.actors[1].skipped);
        assert_eq!(r.violation, None);
    }
}
