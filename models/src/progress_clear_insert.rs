//! # `progress-clear-insert`: `progress_update_state.create_session()`
//!
//! Seed `003_b75e7638340bacc9.txt`, "Phase 4: Audit and Fix Progress Update State":
//!
//! > **Problem Found**: `create_session()` has same pattern:
//! > `await self.clear_session(user_id)` … then
//! > `supabase_client.client.table("progress_update_sessions").insert({...})`
//!
//! The fix replaces the insert with `.upsert({…, "images_uploaded": 0, …},
//! on_conflict="subcontractor_id")`, and Phase 5 notes that the table "already had
//! `UNIQUE(subcontractor_id)`".
//!
//! ## The race
//!
//! The user already has a progress session from an earlier task, with 3 images uploaded. Each of
//! `requests` requests starts a new session for that user on its own task: `clear_session`
//! (`DELETE … WHERE subcontractor_id = $1`), then `INSERT`. Each call is a separate Supabase REST
//! request, so each statement autocommits. Two requests can both clear before either inserts.
//!
//! ## Variants
//!
//! - `clear-then-insert` (as found, with `UNIQUE(subcontractor_id)` as the seed says the table
//!   had): the later insert fails with a unique violation, so a request errors out.
//! - `clear-then-insert-no-unique` (as found, without the constraint): both inserts succeed and the
//!   user has two sessions.
//! - `upsert` (Phase 4): `INSERT … ON CONFLICT (subcontractor_id) DO UPDATE SET task_id =
//!   EXCLUDED.task_id, images_uploaded = EXCLUDED.images_uploaded` with `images_uploaded = 0` in
//!   the payload, as PostgREST's `upsert` writes every column it is given.
//! - `upsert-task-only` (ours, the upsert without the payload's counters): `ON CONFLICT … DO
//!   UPDATE SET task_id = EXCLUDED.task_id` only; the previous session's counters survive.
//!
//! Which variant does not hold: the code as found, both ways. With the constraint the second
//! request's insert fails with 23505 after both cleared (4 steps); without it the user ends with
//! two sessions (4 steps). The Phase 4 `upsert` holds, explored completely for 2 requests with 1
//! crash and 1 injected error per execution; `upsert-task-only` shows what "Reset counters" in
//! the seed's payload guards against (2 steps).
//!
//! ## Invariant
//!
//! Never two rows for one user; never a request that fails with a unique violation; and once a
//! request has reported success, the user's row has its counters reset (`images_uploaded = 0`).
//! Nothing in this model uploads images, so any success must leave 0.

use racelab_harness::catalogue::{DynModel, Params, RaceDef, VariantDef};
use racelab_harness::model::{Actor, Invariant, Model, Phase, Target, View};
use racelab_harness::op::{ConnId, ErrorCode, Expr, OnConflict, Op, Outcome, Row, Sql, Value};
use racelab_harness::sim::{Schema, TableDef, UniqueIndex, World};
use racelab_harness::symmetry::{Renaming, Symmetry};

const SESSIONS: &str = "progress_update_sessions";
const COLUMNS: [&str; 4] = ["id", "subcontractor_id", "task_id", "images_uploaded"];
const SUBCONTRACTOR: usize = 1;
const TASK: usize = 2;
const IMAGES: usize = 3;
const USER: Value = Value::Str("u1");
/// The session the user already has, from an earlier task, with uploads counted.
/// Outside the new sessions' ids (1, 2, …, at most 32), which the symmetry renames.
const PREVIOUS_ID: i64 = 100;
const PREVIOUS_TASK: Value = Value::Str("task-0");
/// Outside the new sessions' ids too: a count that equalled an id would be renamed with it.
const PREVIOUS_IMAGES: i64 = 40;

pub const ONE_ROW_PER_USER: &str = "one-row-per-user";
pub const NO_UNIQUE_VIOLATION: &str = "no-unique-violation";
pub const COUNTERS_RESET: &str = "counters-reset";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    ClearThenInsert,
    ClearThenInsertNoUnique,
    Upsert,
    UpsertTaskOnly,
}

impl Variant {
    fn unique_user(self) -> bool {
        self != Variant::ClearThenInsertNoUnique
    }
    fn clears_first(self) -> bool {
        matches!(self, Variant::ClearThenInsert | Variant::ClearThenInsertNoUnique)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pc {
    Clear,
    Insert,
    Done,
}

/// What `create_session()` returned to its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Response {
    Success,
    Failure(ErrorCode),
}

/// One `create_session(user, task)` call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CreateSession {
    variant: Variant,
    id: i64,
    task: &'static str,
    conn: ConnId,
    pc: Pc,
    response: Option<Response>,
}

impl CreateSession {
    fn new(variant: Variant, index: usize, conn: ConnId) -> CreateSession {
        CreateSession {
            variant,
            id: index as i64 + 1,
            task: racelab_harness::intern(format!("task-{}", index + 1)),
            conn,
            pc: if variant.clears_first() { Pc::Clear } else { Pc::Insert },
            response: None,
        }
    }
}

impl Actor for CreateSession {
    fn next_op(&self) -> Option<Op> {
        let conn = self.conn;
        let op = match self.pc {
            Pc::Clear => Op::sql(
                "clear_session",
                conn,
                Sql::Delete { table: SESSIONS, filter: vec![("subcontractor_id", USER)] },
            ),
            Pc::Insert => {
                let row = vec![Value::Int(self.id), USER, Value::Str(self.task), Value::Int(0)];
                let target = vec!["subcontractor_id"];
                let (name, on_conflict) = match self.variant {
                    Variant::ClearThenInsert | Variant::ClearThenInsertNoUnique => {
                        ("insert_session", OnConflict::Error)
                    }
                    Variant::Upsert => (
                        "upsert_session",
                        OnConflict::DoUpdate {
                            target,
                            set: vec![
                                ("task_id", Expr::Excluded("task_id")),
                                ("images_uploaded", Expr::Excluded("images_uploaded")),
                            ],
                        },
                    ),
                    Variant::UpsertTaskOnly => (
                        "upsert_session",
                        OnConflict::DoUpdate { target, set: vec![("task_id", Expr::Excluded("task_id"))] },
                    ),
                };
                Op::sql(name, conn, Sql::Insert { table: SESSIONS, row, on_conflict })
            }
            Pc::Done => return None,
        };
        Some(op)
    }

    /// Calls are identical but for their session id, task and connection.
    fn rename(&mut self, r: &Renaming) {
        self.id = r.int(self.id);
        self.task = match r.value(Value::Str(self.task)) {
            Value::Str(task) => task,
            other => unreachable!("task renamed to {other}"),
        };
        self.conn = r.conn(self.conn);
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        // Every statement autocommits, so an error just fails the call.
        self.pc = match (self.pc, outcome) {
            (Pc::Done, _) => Pc::Done,
            (_, Outcome::Err(error)) => {
                self.response = Some(Response::Failure(*error));
                Pc::Done
            }
            (Pc::Clear, _) => Pc::Insert,
            (Pc::Insert, _) => {
                self.response = Some(Response::Success);
                Pc::Done
            }
        };
    }
}

/// `requests` concurrent `create_session()` calls for one user who has a previous session.
pub struct ProgressClearInsert {
    pub variant: Variant,
    pub requests: usize,
}

impl ProgressClearInsert {
    fn schema(&self) -> Schema {
        let unique = if self.variant.unique_user() {
            vec![UniqueIndex {
                name: "progress_update_sessions_subcontractor_id_key",
                columns: vec!["subcontractor_id"],
                predicate: None,
            }]
        } else {
            Vec::new()
        };
        Schema { tables: vec![TableDef { name: SESSIONS, columns: COLUMNS.to_vec(), unique }] }
    }
}

impl Model for ProgressClearInsert {
    type Actor = CreateSession;

    fn init(&self) -> (World, Vec<CreateSession>) {
        let mut world = World::new(self.schema(), self.requests);
        world.db.seed_row(SESSIONS, vec![Value::Int(PREVIOUS_ID), USER, PREVIOUS_TASK, Value::Int(PREVIOUS_IMAGES)]);
        let actors = (0..self.requests).map(|i| CreateSession::new(self.variant, i, world.connect(i))).collect();
        (world, actors)
    }

    fn actor_names(&self) -> Vec<String> {
        (1..=self.requests).map(|i| format!("request {i}")).collect()
    }

    fn symmetry(&self) -> Option<Symmetry> {
        let owned = (0..self.requests).map(|i| {
            let call = CreateSession::new(self.variant, i, 0);
            vec![Value::Int(call.id), Value::Str(call.task)]
        });
        (self.requests >= 2).then(|| Symmetry::group(0..self.requests, owned.collect()))
    }

    fn invariants(&self) -> Vec<Invariant<CreateSession>> {
        vec![
            Invariant::new(ONE_ROW_PER_USER, one_row_per_user),
            Invariant::new(NO_UNIQUE_VIOLATION, no_unique_violation),
            Invariant::new(COUNTERS_RESET, counters_reset),
        ]
    }

    fn targets(&self) -> Vec<Target<CreateSession>> {
        vec![
            Target::new("every request reported success", |v: &View<Self::Actor>| {
                v.actors.iter().all(|a| a.response == Some(Response::Success))
            }),
            Target::new("the previous session was replaced", |v: &View<Self::Actor>| {
                let rows = user_rows(v);
                !rows.is_empty() && rows.iter().all(|r| r.get(TASK) != Some(&PREVIOUS_TASK))
            }),
        ]
    }
}

fn user_rows(view: &View<'_, CreateSession>) -> Vec<Row> {
    view.world.db.committed_rows(SESSIONS).into_iter().filter(|r| r.get(SUBCONTRACTOR) == Some(&USER)).collect()
}

fn one_row_per_user(view: &View<'_, CreateSession>) -> Result<(), String> {
    let rows = user_rows(view);
    if rows.len() > 1 {
        return Err(format!("{} progress sessions for user {USER}", rows.len()));
    }
    Ok(())
}

fn no_unique_violation(view: &View<'_, CreateSession>) -> Result<(), String> {
    match view.actors.iter().position(|a| a.response == Some(Response::Failure(ErrorCode::UNIQUE_VIOLATION))) {
        Some(i) => Err(format!("request {} failed: {}", i + 1, ErrorCode::UNIQUE_VIOLATION)),
        None => Ok(()),
    }
}

fn counters_reset(view: &View<'_, CreateSession>) -> Result<(), String> {
    if view.phase != Phase::Final || !view.actors.iter().any(|a| a.response == Some(Response::Success)) {
        return Ok(());
    }
    match user_rows(view).into_iter().find(|r| r.get(IMAGES) != Some(&Value::Int(0))) {
        Some(row) => Err(format!(
            "a new session was created but the user's row on {} still counts {} images",
            row[TASK], row[IMAGES]
        )),
        None => Ok(()),
    }
}

fn build(params: &Params, variant: Variant) -> Result<Box<dyn DynModel>, String> {
    let requests = params.workers("requests", 2, 2, racelab_harness::op::MAX_ACTORS)?;
    Ok(Box::new(ProgressClearInsert { variant, requests }))
}

pub fn race() -> RaceDef {
    RaceDef {
        id: "progress-clear-insert",
        seed: "003_b75e7638340bacc9.txt",
        passage: "`create_session()` has same pattern: `await self.clear_session(user_id)` … \
                  `supabase_client.client.table(\"progress_update_sessions\").insert({...})`",
        invariant: "Never two rows for one user, never a request that fails with a unique violation, and never \
                    counters that were not reset by a new session.",
        variants: vec![
            VariantDef {
                id: "clear-then-insert",
                summary: "DELETE the user's row, then INSERT, each autocommitted, with UNIQUE(subcontractor_id)",
                build: |p| build(p, Variant::ClearThenInsert),
            },
            VariantDef {
                id: "clear-then-insert-no-unique",
                summary: "DELETE the user's row, then INSERT, each autocommitted, with no unique constraint",
                build: |p| build(p, Variant::ClearThenInsertNoUnique),
            },
            VariantDef {
                id: "upsert",
                summary: "INSERT … ON CONFLICT (subcontractor_id) DO UPDATE of task and counters (Phase 4)",
                build: |p| build(p, Variant::Upsert),
            },
            VariantDef {
                id: "upsert-task-only",
                summary:
                    "INSERT … ON CONFLICT (subcontractor_id) DO UPDATE of the task only, counters left as they were",
                build: |p| build(p, Variant::UpsertTaskOnly),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use racelab_harness::explore::shortest::replay;
    use racelab_harness::explore::Bounds;
    use racelab_harness::testing::{steps, texts, violated};

    fn two_requests(variant: Variant) -> ProgressClearInsert {
        ProgressClearInsert { variant, requests: 2 }
    }

    #[test]
    fn clear_then_insert_both_clear_then_the_second_insert_violates_the_constraint() {
        let model = two_requests(Variant::ClearThenInsert);
        let r = replay(&model, &Bounds::default(), &steps(&[0, 1, 0, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "clear_session(subcontractor_id=u1) → [100, u1, task-0, 40]",
                "clear_session(subcontractor_id=u1) → none",
                "insert_session(1, u1, task-1, 0) → [1, u1, task-1, 0]",
                "insert_session(2, u1, task-2, 0) → 23505 unique_violation",
            ]
        );
        assert_eq!(r.state.actors[1].response, Some(Response::Failure(ErrorCode::UNIQUE_VIOLATION)));
        assert_eq!(r.violation.unwrap().invariant, NO_UNIQUE_VIOLATION);
        assert_eq!(violated(&model, &r.state, Phase::Final), [NO_UNIQUE_VIOLATION]);
    }

    #[test]
    fn clear_then_insert_without_the_constraint_leaves_two_sessions() {
        let model = two_requests(Variant::ClearThenInsertNoUnique);
        let r = replay(&model, &Bounds::default(), &steps(&[0, 1, 0, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "clear_session(subcontractor_id=u1) → [100, u1, task-0, 40]",
                "clear_session(subcontractor_id=u1) → none",
                "insert_session(1, u1, task-1, 0) → [1, u1, task-1, 0]",
                // The replay stops at the first violation: only this second insert is one.
                "insert_session(2, u1, task-2, 0) → [2, u1, task-2, 0]",
            ]
        );
        assert_eq!(r.violation.unwrap().invariant, ONE_ROW_PER_USER);
        assert_eq!(violated(&model, &r.state, Phase::Final), [ONE_ROW_PER_USER]);
    }

    #[test]
    fn upsert_task_only_keeps_the_previous_sessions_counters() {
        let model = two_requests(Variant::UpsertTaskOnly);
        // The first upsert alone already leaves the old counters under the new task.
        let first = replay(&model, &Bounds::default(), &steps(&[0])).unwrap();
        assert_eq!(
            texts(&first.events),
            ["upsert_session(1, u1, task-1, 0) on conflict set task_id=excluded.task_id → [100, u1, task-1, 40]"]
        );
        assert_eq!(violated(&model, &first.state, Phase::Final), [COUNTERS_RESET]);
        let r = replay(&model, &Bounds::default(), &steps(&[0, 1])).unwrap();
        assert_eq!(
            texts(&r.events)[1],
            "upsert_session(2, u1, task-2, 0) on conflict set task_id=excluded.task_id → [100, u1, task-2, 40]"
        );
        assert_eq!(r.violation.unwrap().invariant, COUNTERS_RESET);
        assert_eq!(violated(&model, &r.state, Phase::Final), [COUNTERS_RESET]);
    }

    #[test]
    fn upsert_replaces_the_previous_session_and_resets_its_counters() {
        let model = two_requests(Variant::Upsert);
        let r = replay(&model, &Bounds::default(), &steps(&[1, 0])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "upsert_session(2, u1, task-2, 0) on conflict set task_id=excluded.task_id, \
                 images_uploaded=excluded.images_uploaded → [100, u1, task-2, 0]",
                "upsert_session(1, u1, task-1, 0) on conflict set task_id=excluded.task_id, \
                 images_uploaded=excluded.images_uploaded → [100, u1, task-1, 0]",
            ]
        );
        assert_eq!(r.violation, None);
        assert!(violated(&model, &r.state, Phase::Final).is_empty());
        let rows = r.state.world.db.committed_rows(SESSIONS);
        assert_eq!(rows, vec![vec![Value::Int(PREVIOUS_ID), USER, Value::Str("task-1"), Value::Int(0)]]);
    }
}
