//! REPEATABLE READ, one rule per test: the snapshot is the transaction's and is taken by its
//! first statement; a write to a row changed since fails with 40001, whether the change
//! committed before the write or while it waited; `ON CONFLICT` meeting a row the snapshot
//! does not see fails with 40001; an insert meeting a committed duplicate is still 23505.

use super::test_steps::{block, row, run, tagged_db};
use super::*;

const RR: Sql = Sql::BeginRepeatableRead;

/// Two sessions and a committed row (1, a, 0).
fn db() -> Db {
    tagged_db(2)
}

fn ready(db: &mut Db, c: ConnId) -> Outcome {
    db.take_ready(c, &mut Footprint::default()).expect("a granted wait")
}

fn all() -> Sql {
    Sql::Select { table: "t", filter: vec![], lock: None }
}

fn add_one() -> Sql {
    Sql::Update { table: "t", filter: vec![("id", Value::Int(1))], set: vec![("n", Expr::Add("n", 1))] }
}

fn rows(v: Vec<Row>) -> Outcome {
    Outcome::Rows(v)
}

const SERIALIZATION: Outcome = Outcome::Err(ErrorCode::SERIALIZATION_FAILURE);

#[test]
fn the_snapshot_is_taken_by_the_first_statement_and_kept() {
    let mut d = db();
    run(&mut d, 0, RR);
    // Nothing is read yet: a commit before the first statement is seen.
    run(&mut d, 1, add_one());
    assert_eq!(run(&mut d, 0, all()), rows(vec![row(1, "a", 1)]));
    run(&mut d, 1, add_one());
    assert_eq!(run(&mut d, 0, all()), rows(vec![row(1, "a", 1)]), "a later commit stays invisible");
    run(&mut d, 0, Sql::Commit);
    assert_eq!(run(&mut d, 0, all()), rows(vec![row(1, "a", 2)]));
}

#[test]
fn read_committed_blocks_still_see_each_commit() {
    let mut d = db();
    run(&mut d, 0, Sql::Begin);
    assert_eq!(run(&mut d, 0, all()), rows(vec![row(1, "a", 0)]));
    run(&mut d, 1, add_one());
    assert_eq!(run(&mut d, 0, all()), rows(vec![row(1, "a", 1)]));
}

#[test]
fn updating_a_row_changed_since_the_snapshot_fails() {
    let mut d = db();
    run(&mut d, 0, RR);
    run(&mut d, 0, all());
    run(&mut d, 1, add_one());
    assert_eq!(run(&mut d, 0, add_one()), SERIALIZATION);
    // The error aborts the block; the other session's write stands.
    assert_eq!(run(&mut d, 0, all()), Outcome::Err(ErrorCode::IN_FAILED_SQL_TRANSACTION));
    run(&mut d, 0, Sql::Rollback);
    assert_eq!(d.committed_rows("t"), vec![row(1, "a", 1)]);
}

#[test]
fn a_waiting_update_fails_when_the_holder_commits_and_proceeds_when_it_aborts() {
    for commit in [true, false] {
        let mut d = db();
        run(&mut d, 0, RR);
        run(&mut d, 0, all());
        run(&mut d, 1, Sql::Begin);
        run(&mut d, 1, add_one());
        block(&mut d, 0, add_one());
        run(&mut d, 1, if commit { Sql::Commit } else { Sql::Rollback });
        let expect = if commit { SERIALIZATION } else { rows(vec![row(1, "a", 1)]) };
        assert_eq!(ready(&mut d, 0), expect, "holder commit: {commit}");
    }
}

#[test]
fn for_update_and_delete_of_a_changed_row_fail_too() {
    let lock = Sql::Select { table: "t", filter: vec![("tag", Value::Str("a"))], lock: Some(RowLock::ForUpdate) };
    let delete = Sql::Delete { table: "t", filter: vec![("tag", Value::Str("a"))] };
    for stmt in [lock, delete] {
        let mut d = db();
        run(&mut d, 0, RR);
        run(&mut d, 0, all());
        run(&mut d, 1, add_one());
        assert_eq!(run(&mut d, 0, stmt.clone()), SERIALIZATION, "{stmt:?}");
    }
}

#[test]
fn a_row_only_locked_by_another_is_no_conflict() {
    let mut d = db();
    let lock = Sql::Select { table: "t", filter: vec![], lock: Some(RowLock::ForUpdate) };
    run(&mut d, 0, RR);
    run(&mut d, 0, all());
    run(&mut d, 1, Sql::Begin);
    run(&mut d, 1, lock);
    block(&mut d, 0, add_one());
    run(&mut d, 1, Sql::Commit);
    assert_eq!(ready(&mut d, 0), rows(vec![row(1, "a", 1)]));
}

#[test]
fn on_conflict_meeting_a_row_the_snapshot_does_not_see_fails() {
    let upsert = |on_conflict| Sql::Insert { table: "t", row: row(3, "b", 7), on_conflict };
    let do_nothing = OnConflict::DoNothing { target: vec!["tag"] };
    let do_update = OnConflict::DoUpdate { target: vec!["tag"], set: vec![("n", Expr::Excluded("n"))] };
    for on_conflict in [do_nothing, do_update] {
        let mut d = db();
        run(&mut d, 0, RR);
        run(&mut d, 0, all());
        run(&mut d, 1, Sql::Insert { table: "t", row: row(2, "b", 0), on_conflict: OnConflict::Error });
        assert_eq!(run(&mut d, 0, upsert(on_conflict.clone())), SERIALIZATION, "{on_conflict:?}");
    }
    // A row the snapshot sees is updated as at READ COMMITTED.
    let mut d = db();
    run(&mut d, 0, RR);
    let do_update = OnConflict::DoUpdate { target: vec!["tag"], set: vec![("n", Expr::Excluded("n"))] };
    let upsert_a = Sql::Insert { table: "t", row: row(3, "a", 7), on_conflict: do_update };
    assert_eq!(run(&mut d, 0, upsert_a), rows(vec![row(1, "a", 7)]));
}

#[test]
fn a_plain_insert_meeting_a_committed_duplicate_is_a_unique_violation() {
    let mut d = db();
    run(&mut d, 0, RR);
    run(&mut d, 0, all());
    run(&mut d, 1, Sql::Insert { table: "t", row: row(2, "b", 0), on_conflict: OnConflict::Error });
    let dup = Sql::Insert { table: "t", row: row(3, "b", 0), on_conflict: OnConflict::Error };
    assert_eq!(run(&mut d, 0, dup), Outcome::Err(ErrorCode::UNIQUE_VIOLATION));
}

#[test]
fn a_lock_call_takes_the_snapshot_before_it_waits() {
    let mut d = db();
    run(&mut d, 1, Sql::AdvisoryLock { key: 9, scope: LockScope::Session });
    run(&mut d, 0, RR);
    block(&mut d, 0, Sql::AdvisoryLock { key: 9, scope: LockScope::Xact });
    run(&mut d, 1, add_one());
    run(&mut d, 1, Sql::AdvisoryUnlock { key: 9 });
    assert_eq!(ready(&mut d, 0), Outcome::Ok);
    // The snapshot predates the update the lock holder made before releasing the lock.
    assert_eq!(run(&mut d, 0, all()), rows(vec![row(1, "a", 0)]));
    assert_eq!(run(&mut d, 0, add_one()), SERIALIZATION);
}

#[test]
fn the_snapshot_ends_with_the_transaction_and_states_stay_canonical() {
    let mut d = db();
    run(&mut d, 0, RR);
    run(&mut d, 0, all());
    run(&mut d, 0, Sql::Commit);
    let mut fresh = db();
    run(&mut fresh, 0, Sql::Begin);
    run(&mut fresh, 0, Sql::Commit);
    assert_eq!(d, fresh);
}

/// Snapshots are numbered by rank among the live ones, so one transaction's end can renumber
/// another's snapshot: that changes what the other session holds, which symmetry's sort keys
/// read, and the statement must say so.
#[test]
fn a_commit_that_renumbers_another_snapshot_says_that_sessions_changed() {
    let mut d = tagged_db(3);
    run(&mut d, 0, RR);
    run(&mut d, 0, all());
    run(&mut d, 1, add_one());
    run(&mut d, 2, RR);
    run(&mut d, 2, all());
    let before = d.sessions[2].tx_snapshot;
    let mut fp = Footprint::default();
    assert_eq!(d.execute(0, &Sql::Commit, &mut fp), Applied::Done(Outcome::Ok));
    assert_ne!(d.sessions[2].tx_snapshot, before, "session 2's snapshot got a new number");
    assert_eq!(fp.signatures, u32::MAX, "every session may hold something else now");
}
