//! # `summary-upsert`: the session-summary upsert keyed by a session tag
//!
//! Seed `000_9bdcb1381353509b.txt`, "Phase 1: Atomic Upsert in `api_session_summarize()`":
//!
//! > `find_document_by_tag()` → check → `add_async()` is not transactional. Two concurrent
//! > requests both see "no existing doc" and both create.
//!
//! and its plan: "Add `upsert_document_by_tag()` — SELECT FOR UPDATE in transaction". Production
//! held 6 summary documents for one session.
//!
//! ## The race
//!
//! Each of `requests` requests summarises the same session (tag `s1`) with its own content:
//! it looks the summary up by tag, updates it if found, and creates it otherwise. Between the
//! look-up and the write another request can do the same, so both create.
//!
//! ## Variants
//!
//! - `check-then-insert` (as found): find by tag, then update by id or insert, each statement in
//!   autocommit.
//! - `select-for-update` (the plan's fix): `BEGIN; SELECT … WHERE tag = $1 FOR UPDATE;` then
//!   update or insert, then `COMMIT`. No unique index on `tag`, as in the plan.
//! - `unique-on-conflict`: a unique index on `tag` and one
//!   `INSERT … ON CONFLICT (tag) DO UPDATE SET content = EXCLUDED.content`.
//! - `advisory-xact-lock`: `BEGIN; pg_advisory_xact_lock(hash(tag));` then check-then-insert in
//!   the same transaction; the lock is released at `COMMIT`.
//! - `select-for-update-repeatable-read` (ours, the reviewer's question "would a stronger
//!   isolation level fix it?"): the plan's fix inside `BEGIN ISOLATION LEVEL REPEATABLE READ`;
//!   a request that gets 40001 rolls back and reports the failure.
//! - `on-conflict-do-nothing` (ours, a tempting shortcut): a unique index on `tag` and
//!   `INSERT … ON CONFLICT (tag) DO NOTHING`. The application does not look at the row count,
//!   so the later summary is dropped while its request reports success.
//!
//! Which fix does not hold: the plan's `select-for-update`. At READ COMMITTED `FOR UPDATE`
//! locks only rows that exist, and an uncommitted insert is invisible to the other request's
//! snapshot, so while no summary is committed both requests find nothing and both insert; with no
//! unique index nothing stops the second. The explorer's shortest schedule takes 8 steps: request
//! 1 begins, finds nothing, inserts; request 2 begins and finds nothing; both commit
//! (`racelab explain summary-upsert/select-for-update`). REPEATABLE READ does not help: its
//! snapshot hides the other request's uncommitted insert just the same, and 40001 is raised
//! only for rows that exist and changed, so `select-for-update-repeatable-read` fails with the
//! same 8 steps. (Only SERIALIZABLE would detect this read-write dependency, at the price of a
//! retry loop; the unique index is the cheaper fix.) `check-then-insert` fails the same way in
//! 4 steps, and `on-conflict-do-nothing` fails "success means stored" in 2. `unique-on-conflict`
//! and `advisory-xact-lock` hold, explored completely for 2 requests with 1 crash, 1 injected
//! error and 1 timeout per execution.
//!
//! ## Invariant
//!
//! Never two committed documents with one tag, and never a request that reports success while
//! its content was never stored: a successful request must have seen its INSERT or UPDATE
//! return exactly one row (`RETURNING *`), and that write must have committed.

use racelab_harness::catalogue::{DynModel, Params, RaceDef, VariantDef};
use racelab_harness::model::{Actor, Invariant, Model, Target, View};
use racelab_harness::op::{
    ConnId, ErrorCode, Expr, LockScope, OnConflict, Op, Outcome, Row, RowLock, Sql, Value, MAX_ACTORS,
};
use racelab_harness::sim::{Schema, TableDef, UniqueIndex, World};
use racelab_harness::symmetry::{Renaming, Symmetry};

const DOCUMENTS: &str = "documents";
const COLUMNS: [&str; 3] = ["id", "tag", "content"];
const ID: usize = 0;
const TAG_COL: usize = 1;
/// The session every request summarises.
const TAG: Value = Value::Str("s1");
/// `hashtext(tag)` for `pg_advisory_xact_lock`: a 32-bit hash of the tag (FNV-1a here).
const TAG_LOCK_KEY: i64 = fnv1a_32(b"s1");

const fn fnv1a_32(bytes: &[u8]) -> i64 {
    let mut hash = 0x811c_9dc5u32;
    let mut i = 0;
    while i < bytes.len() {
        hash = (hash ^ bytes[i] as u32).wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash as i32 as i64
}

pub const NO_TWO_DOCUMENTS_PER_TAG: &str = "no-two-documents-per-tag";
pub const SUCCESS_MEANS_STORED: &str = "success-means-stored";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    CheckThenInsert,
    SelectForUpdate,
    SelectForUpdateRepeatableRead,
    UniqueOnConflict,
    AdvisoryXactLock,
    OnConflictDoNothing,
}

impl Variant {
    fn transactional(self) -> bool {
        matches!(self, Variant::SelectForUpdate | Variant::SelectForUpdateRepeatableRead | Variant::AdvisoryXactLock)
    }
    fn unique_tag(self) -> bool {
        matches!(self, Variant::UniqueOnConflict | Variant::OnConflictDoNothing)
    }
    fn first_pc(self) -> Pc {
        match self {
            Variant::CheckThenInsert => Pc::Find,
            Variant::SelectForUpdate | Variant::SelectForUpdateRepeatableRead | Variant::AdvisoryXactLock => Pc::Begin,
            Variant::UniqueOnConflict | Variant::OnConflictDoNothing => Pc::Insert,
        }
    }
}

/// Where a request stands in `api_session_summarize()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pc {
    Begin,
    Lock,
    Find,
    Insert,
    /// Update the document with this id, which the find returned.
    Update(i64),
    Commit,
    /// The transaction failed with this error; roll back, then report it.
    Rollback(ErrorCode),
    Done,
}

/// What the request answered its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Response {
    Success,
    Failure(ErrorCode),
}

/// One `api_session_summarize()` request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SummaryRequest {
    variant: Variant,
    id: i64,
    content: &'static str,
    conn: ConnId,
    pc: Pc,
    /// How many rows its INSERT or UPDATE returned, once that ran.
    written: Option<usize>,
    /// Its write is durable: it ran in autocommit, or its transaction committed.
    committed: bool,
    /// It met a summary another request had stored (found it, or conflicted with it).
    met_existing: bool,
    response: Option<Response>,
}

impl SummaryRequest {
    fn new(variant: Variant, index: usize, conn: ConnId) -> SummaryRequest {
        SummaryRequest {
            variant,
            id: index as i64 + 1,
            content: racelab_harness::intern(format!("summary-{}", index + 1)),
            conn,
            pc: variant.first_pc(),
            written: None,
            committed: false,
            met_existing: false,
            response: None,
        }
    }

    fn in_transaction(&self) -> bool {
        self.variant.transactional() && !matches!(self.pc, Pc::Begin | Pc::Commit | Pc::Rollback(_) | Pc::Done)
    }

    fn finish(&mut self, response: Response) -> Pc {
        self.response = Some(response);
        Pc::Done
    }

    /// Any error fails the request; an open transaction is rolled back first.
    fn fail(&mut self, error: ErrorCode) -> Pc {
        if self.in_transaction() {
            Pc::Rollback(error)
        } else {
            self.finish(Response::Failure(error))
        }
    }

    fn after_write(&mut self, rows: &[Row]) -> Pc {
        self.written = Some(rows.len());
        // An upsert that returns someone else's id, or no row, met an existing summary.
        if self.pc == Pc::Insert && rows.first().map(row_id) != Some(Some(self.id)) {
            self.met_existing = true;
        }
        if self.variant.transactional() {
            Pc::Commit
        } else {
            self.committed = true;
            self.finish(Response::Success)
        }
    }
}

fn row_id(row: &Row) -> Option<i64> {
    match row.get(ID) {
        Some(Value::Int(id)) => Some(*id),
        _ => None,
    }
}

impl Actor for SummaryRequest {
    fn next_op(&self) -> Option<Op> {
        let conn = self.conn;
        let op = match self.pc {
            Pc::Begin if self.variant == Variant::SelectForUpdateRepeatableRead => {
                Op::sql("begin_repeatable_read", conn, Sql::BeginRepeatableRead)
            }
            Pc::Begin => Op::sql("begin", conn, Sql::Begin),
            Pc::Lock => {
                Op::sql("pg_advisory_xact_lock", conn, Sql::AdvisoryLock { key: TAG_LOCK_KEY, scope: LockScope::Xact })
            }
            Pc::Find => {
                let (name, lock) = match self.variant {
                    Variant::SelectForUpdate | Variant::SelectForUpdateRepeatableRead => {
                        ("find_document_by_tag_for_update", Some(RowLock::ForUpdate))
                    }
                    _ => ("find_document_by_tag", None),
                };
                Op::sql(name, conn, Sql::Select { table: DOCUMENTS, filter: vec![("tag", TAG)], lock })
            }
            Pc::Insert => {
                let (name, on_conflict) = match self.variant {
                    Variant::UniqueOnConflict => (
                        "upsert_document_by_tag",
                        OnConflict::DoUpdate { target: vec!["tag"], set: vec![("content", Expr::Excluded("content"))] },
                    ),
                    Variant::OnConflictDoNothing => {
                        ("add_document_if_absent", OnConflict::DoNothing { target: vec!["tag"] })
                    }
                    _ => ("add_document", OnConflict::Error),
                };
                let row = vec![Value::Int(self.id), TAG, Value::Str(self.content)];
                Op::sql(name, conn, Sql::Insert { table: DOCUMENTS, row, on_conflict })
            }
            Pc::Update(id) => Op::sql(
                "update_document",
                conn,
                Sql::Update {
                    table: DOCUMENTS,
                    filter: vec![("id", Value::Int(id))],
                    set: vec![("content", Expr::Value(Value::Str(self.content)))],
                },
            ),
            Pc::Commit => Op::sql("commit", conn, Sql::Commit),
            Pc::Rollback(_) => Op::sql("rollback", conn, Sql::Rollback),
            Pc::Done => return None,
        };
        Some(op)
    }

    /// Requests are identical but for their id, content and connection; an update remembers
    /// the id of the summary it found, which is another request's.
    fn rename(&mut self, r: &Renaming) {
        self.id = r.int(self.id);
        self.content = match r.value(Value::Str(self.content)) {
            Value::Str(content) => content,
            other => unreachable!("content renamed to {other}"),
        };
        self.conn = r.conn(self.conn);
        if let Pc::Update(id) = &mut self.pc {
            *id = r.int(*id);
        }
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        self.pc = match (self.pc, outcome) {
            (Pc::Rollback(error), _) => self.finish(Response::Failure(error)),
            (Pc::Done, _) => Pc::Done,
            (_, Outcome::Err(error)) => self.fail(*error),
            (Pc::Begin, _) if self.variant == Variant::AdvisoryXactLock => Pc::Lock,
            (Pc::Begin | Pc::Lock, _) => Pc::Find,
            (Pc::Find, found) => match found.rows().first().and_then(row_id) {
                Some(id) => {
                    self.met_existing = true;
                    Pc::Update(id)
                }
                None => Pc::Insert,
            },
            (Pc::Insert | Pc::Update(_), written) => self.after_write(written.rows()),
            (Pc::Commit, _) => {
                self.committed = true;
                self.finish(Response::Success)
            }
        };
    }
}

/// `requests` concurrent summaries of one session.
pub struct SummaryUpsert {
    pub variant: Variant,
    pub requests: usize,
}

impl SummaryUpsert {
    fn schema(&self) -> Schema {
        let unique = if self.variant.unique_tag() {
            vec![UniqueIndex { name: "documents_tag_key", columns: vec!["tag"], predicate: None }]
        } else {
            Vec::new()
        };
        Schema { tables: vec![TableDef { name: DOCUMENTS, columns: COLUMNS.to_vec(), unique }] }
    }
}

impl Model for SummaryUpsert {
    type Actor = SummaryRequest;

    fn init(&self) -> (World, Vec<SummaryRequest>) {
        let mut world = World::new(self.schema(), self.requests);
        let actors = (0..self.requests).map(|i| SummaryRequest::new(self.variant, i, world.connect(i))).collect();
        (world, actors)
    }

    fn actor_names(&self) -> Vec<String> {
        (1..=self.requests).map(|i| format!("request {i}")).collect()
    }

    fn symmetry(&self) -> Option<Symmetry> {
        if self.requests < 2 {
            return None;
        }
        let owned = (0..self.requests).map(|i| {
            let request = SummaryRequest::new(self.variant, i, 0);
            vec![Value::Int(request.id), Value::Str(request.content)]
        });
        Some(Symmetry::group(0..self.requests, owned.collect()))
    }

    fn invariants(&self) -> Vec<Invariant<SummaryRequest>> {
        vec![
            Invariant::new(NO_TWO_DOCUMENTS_PER_TAG, no_two_documents_per_tag),
            Invariant::new(SUCCESS_MEANS_STORED, success_means_stored),
        ]
    }

    fn targets(&self) -> Vec<Target<SummaryRequest>> {
        vec![
            Target::new("every request reported success", |v: &View<Self::Actor>| {
                v.actors.iter().all(|a| a.response == Some(Response::Success))
            }),
            Target::new("a request met a summary another request had stored", |v: &View<Self::Actor>| {
                v.actors.iter().any(|a| a.met_existing)
            }),
        ]
    }
}

fn no_two_documents_per_tag(view: &View<'_, SummaryRequest>) -> Result<(), String> {
    let rows = view.world.db.committed_rows(DOCUMENTS);
    let with_tag = rows.iter().filter(|r| r.get(TAG_COL) == Some(&TAG)).count();
    if with_tag > 1 {
        return Err(format!("{with_tag} committed documents with tag {TAG}"));
    }
    Ok(())
}

fn success_means_stored(view: &View<'_, SummaryRequest>) -> Result<(), String> {
    for (i, a) in view.actors.iter().enumerate() {
        if a.response != Some(Response::Success) {
            continue;
        }
        let stored = match (a.written, a.committed) {
            (Some(1), true) => continue,
            (Some(1), false) => "its write did not commit".to_string(),
            (Some(n), _) => format!("its write returned {n} rows"),
            (None, _) => "it never wrote".to_string(),
        };
        return Err(format!("request {} reported success but {stored}: {} was never stored", i + 1, a.content));
    }
    Ok(())
}

fn build(params: &Params, variant: Variant) -> Result<Box<dyn DynModel>, String> {
    let requests = params.workers("requests", 2, 2, MAX_ACTORS)?;
    Ok(Box::new(SummaryUpsert { variant, requests }))
}

pub fn race() -> RaceDef {
    RaceDef {
        id: "summary-upsert",
        seed: "000_9bdcb1381353509b.txt",
        passage: "`find_document_by_tag()` → check → `add_async()` is not transactional. Two concurrent requests \
                  both see \"no existing doc\" and both create.",
        invariant: "Never two documents with one tag, and never a summary request that reports success but whose \
                    content was never stored.",
        variants: vec![
            VariantDef {
                id: "check-then-insert",
                summary: "find by tag, then update or insert, each statement in autocommit (as found)",
                build: |p| build(p, Variant::CheckThenInsert),
            },
            VariantDef {
                id: "select-for-update",
                summary: "BEGIN; SELECT … WHERE tag FOR UPDATE; update or insert; COMMIT, no unique index (the plan)",
                build: |p| build(p, Variant::SelectForUpdate),
            },
            VariantDef {
                id: "select-for-update-repeatable-read",
                summary: "the plan's SELECT … FOR UPDATE transaction at REPEATABLE READ, no unique index",
                build: |p| build(p, Variant::SelectForUpdateRepeatableRead),
            },
            VariantDef {
                id: "unique-on-conflict",
                summary: "unique index on tag; INSERT … ON CONFLICT (tag) DO UPDATE SET content = EXCLUDED.content",
                build: |p| build(p, Variant::UniqueOnConflict),
            },
            VariantDef {
                id: "advisory-xact-lock",
                summary: "BEGIN; pg_advisory_xact_lock(hash(tag)); check-then-insert; COMMIT",
                build: |p| build(p, Variant::AdvisoryXactLock),
            },
            VariantDef {
                id: "on-conflict-do-nothing",
                summary: "unique index on tag; INSERT … ON CONFLICT (tag) DO NOTHING, row count unchecked",
                build: |p| build(p, Variant::OnConflictDoNothing),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use racelab_harness::explore::shortest::replay;
    use racelab_harness::explore::Bounds;
    use racelab_harness::model::Phase;
    use racelab_harness::testing::{steps, texts, violated};

    fn two_requests(variant: Variant) -> SummaryUpsert {
        SummaryUpsert { variant, requests: 2 }
    }

    #[test]
    fn check_then_insert_both_find_nothing_and_both_create() {
        let model = two_requests(Variant::CheckThenInsert);
        let r = replay(&model, &Bounds::default(), &steps(&[0, 1, 0, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "find_document_by_tag(tag=s1) → none",
                "find_document_by_tag(tag=s1) → none",
                "add_document(1, s1, summary-1) → [1, s1, summary-1]",
                // The replay stops at the first violation: only this second insert is one.
                "add_document(2, s1, summary-2) → [2, s1, summary-2]",
            ]
        );
        assert_eq!(r.violation.unwrap().invariant, NO_TWO_DOCUMENTS_PER_TAG);
        assert_eq!(violated(&model, &r.state, Phase::Final), [NO_TWO_DOCUMENTS_PER_TAG]);
    }

    #[test]
    fn select_for_update_locks_nothing_while_no_summary_exists() {
        let model = two_requests(Variant::SelectForUpdate);
        let r = replay(&model, &Bounds::default(), &steps(&[0, 1, 0, 1, 0, 1, 0, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "begin → ok",
                "begin → ok",
                "find_document_by_tag_for_update(tag=s1) → none",
                // FOR UPDATE on no row does not wait.
                "find_document_by_tag_for_update(tag=s1) → none",
                "add_document(1, s1, summary-1) → [1, s1, summary-1]",
                "add_document(2, s1, summary-2) → [2, s1, summary-2]",
                "commit → ok",
                "commit → ok",
            ]
        );
        assert!(!r.state.any_step(), "a final state");
        assert_eq!(r.violation.unwrap().invariant, NO_TWO_DOCUMENTS_PER_TAG);
    }

    #[test]
    fn repeatable_read_hides_the_uncommitted_insert_just_the_same() {
        let model = two_requests(Variant::SelectForUpdateRepeatableRead);
        let r = replay(&model, &Bounds::default(), &steps(&[0, 1, 0, 1, 0, 1, 0, 1])).unwrap();
        let cells = texts(&r.events);
        assert_eq!(cells[0], "begin_repeatable_read isolation level repeatable read → ok");
        assert_eq!(cells[3], "find_document_by_tag_for_update(tag=s1) → none");
        assert_eq!(r.violation.unwrap().invariant, NO_TWO_DOCUMENTS_PER_TAG);
    }

    #[test]
    fn repeatable_read_updates_a_summary_committed_before_its_snapshot() {
        let model = two_requests(Variant::SelectForUpdateRepeatableRead);
        let r = replay(&model, &Bounds::default(), &steps(&[0, 0, 0, 0, 1, 1, 1, 1])).unwrap();
        let cells = texts(&r.events);
        assert_eq!(cells[5], "find_document_by_tag_for_update(tag=s1) → [1, s1, summary-1]");
        assert_eq!(cells[6], "update_document(id=1; content=summary-2) → [1, s1, summary-2]");
        assert_eq!(r.violation, None);
    }

    #[test]
    fn on_conflict_do_nothing_drops_the_second_summary_and_reports_success() {
        let model = two_requests(Variant::OnConflictDoNothing);
        let r = replay(&model, &Bounds::default(), &steps(&[0, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "add_document_if_absent(1, s1, summary-1) on conflict do nothing → [1, s1, summary-1]",
                "add_document_if_absent(2, s1, summary-2) on conflict do nothing → none",
            ]
        );
        assert_eq!(r.state.actors[1].response, Some(Response::Success));
        assert_eq!(r.violation.unwrap().invariant, SUCCESS_MEANS_STORED);
        assert_eq!(violated(&model, &r.state, Phase::Final), [SUCCESS_MEANS_STORED]);
    }

    #[test]
    fn unique_on_conflict_second_request_updates_the_first_summary() {
        let model = two_requests(Variant::UniqueOnConflict);
        let r = replay(&model, &Bounds::default(), &steps(&[0, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "upsert_document_by_tag(1, s1, summary-1) on conflict set content=excluded.content → [1, s1, summary-1]",
                "upsert_document_by_tag(2, s1, summary-2) on conflict set content=excluded.content → [1, s1, summary-2]",
            ]
        );
        assert!(r.state.actors[1].met_existing);
        assert_eq!(r.violation, None);
        assert!(violated(&model, &r.state, Phase::Final).is_empty());
        let rows = r.state.world.db.committed_rows(DOCUMENTS);
        assert_eq!(rows, vec![vec![Value::Int(1), TAG, Value::Str("summary-2")]]);
    }

    #[test]
    fn advisory_xact_lock_serialises_the_check() {
        let model = two_requests(Variant::AdvisoryXactLock);
        let r = replay(&model, &Bounds::default(), &steps(&[0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "begin → ok",
                "pg_advisory_xact_lock(139573449) → ok",
                "begin → ok",
                "pg_advisory_xact_lock(139573449) … waits",
                "find_document_by_tag(tag=s1) → none",
                "add_document(1, s1, summary-1) → [1, s1, summary-1]",
                "commit → ok",
                // The commit released the xact lock, so request 2 may collect it.
                "pg_advisory_xact_lock(139573449) ⇐ ok",
                "find_document_by_tag(tag=s1) → [1, s1, summary-1]",
                "update_document(id=1; content=summary-2) → [1, s1, summary-2]",
                "commit → ok",
            ]
        );
        assert_eq!(r.violation, None);
        assert!(violated(&model, &r.state, Phase::Final).is_empty());
        assert!(r.state.actors.iter().all(|a| a.response == Some(Response::Success)));
    }

    #[test]
    fn eight_requests_explored_completely() {
        use racelab_harness::run::{check, Backend, Mode, Verdict};
        let bounds = Bounds::default();
        let upsert = SummaryUpsert { variant: Variant::UniqueOnConflict, requests: 8 };
        let checked = check("summary-upsert/unique-on-conflict", &upsert, &Mode::Exhaustive, &bounds, &Backend::Sim);
        assert_eq!(checked.verdict, Verdict::Holds);
        assert!(checked.complete);
        // Eight requests each insert-or-update once: every order of the eight is an execution.
        assert_eq!(checked.stats.executions, 40_320);
        let racy = SummaryUpsert { variant: Variant::CheckThenInsert, requests: 8 };
        let checked = check("summary-upsert/check-then-insert", &racy, &Mode::Exhaustive, &bounds, &Backend::Sim);
        assert_eq!(checked.verdict, Verdict::Violated);
        assert_eq!(checked.counterexample.expect("a counterexample").steps, 4, "two of the eight suffice");
    }
}
