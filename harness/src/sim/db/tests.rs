//! The database's rules, one behaviour per test: visibility, unique indexes, `ON CONFLICT`,
//! re-checks of updated rows, row locks, advisory locks, deadlocks and settling.

use super::*;
use crate::op::ErrorCode as E;

fn schema() -> Schema {
    Schema {
        tables: vec![
            TableDef {
                name: "t",
                columns: vec!["id", "tag", "n"],
                unique: vec![UniqueIndex { name: "t_tag", columns: vec!["tag"], predicate: None }],
            },
            TableDef {
                name: "jobs",
                columns: vec!["key", "state"],
                unique: vec![UniqueIndex {
                    name: "one_running",
                    columns: vec!["key"],
                    predicate: Some(("state", Value::Str("running"))),
                }],
            },
        ],
    }
}

/// A database with `n` sessions and a row (1, a, 0) in `t`.
fn db(n: usize) -> Db {
    let mut db = Db::new(schema());
    db.seed_row("t", vec![Value::Int(1), Value::Str("a"), Value::Int(0)]);
    for i in 0..n {
        assert_eq!(db.open_session(), i as ConnId);
    }
    db
}

fn run(db: &mut Db, c: ConnId, s: Sql) -> Outcome {
    match db.execute(c, &s, &mut Footprint::default()) {
        Applied::Done(o) => o,
        Applied::Blocked => panic!("{s:?} blocked"),
    }
}

fn block(db: &mut Db, c: ConnId, s: Sql) {
    assert_eq!(db.execute(c, &s, &mut Footprint::default()), Applied::Blocked, "{s:?} should block");
    assert!(!db.is_ready(c));
}

/// `s` closes a wait-for cycle: it waits, and is ready to be the deadlock's victim.
fn close_cycle(db: &mut Db, c: ConnId, s: Sql) {
    assert_eq!(db.execute(c, &s, &mut Footprint::default()), Applied::Blocked, "{s:?} should block");
    assert!(db.is_ready(c), "session {c} is on no cycle");
}

fn ready(db: &mut Db, c: ConnId) -> Outcome {
    assert!(db.is_ready(c), "session {c} is not ready");
    db.take_ready(c, &mut Footprint::default()).expect("ready outcome")
}

fn row(id: i64, tag: &'static str, n: i64) -> Row {
    vec![Value::Int(id), Value::Str(tag), Value::Int(n)]
}

fn ins(id: i64, tag: &'static str, n: i64) -> Sql {
    Sql::Insert { table: "t", row: row(id, tag, n), on_conflict: OnConflict::Error }
}

fn sel(filter: Filter) -> Sql {
    Sql::Select { table: "t", filter, lock: None }
}

fn lock(filter: Filter, l: RowLock) -> Sql {
    Sql::Select { table: "t", filter, lock: Some(l) }
}

fn all() -> Sql {
    sel(vec![])
}

fn add(filter: Filter, n: i64) -> Sql {
    Sql::Update { table: "t", filter, set: vec![("n", Expr::Add("n", n))] }
}

fn del(filter: Filter) -> Sql {
    Sql::Delete { table: "t", filter }
}

fn tag(t: &'static str) -> Filter {
    vec![("tag", Value::Str(t))]
}

fn rows(v: Vec<Row>) -> Outcome {
    Outcome::Rows(v)
}

fn err(code: ErrorCode) -> Outcome {
    Outcome::Err(code)
}

fn adv(key: i64, scope: LockScope) -> Sql {
    Sql::AdvisoryLock { key, scope }
}

#[test]
fn autocommit_insert_is_visible_to_others() {
    let mut d = db(2);
    assert_eq!(run(&mut d, 0, ins(2, "b", 0)), rows(vec![row(2, "b", 0)]));
    assert_eq!(run(&mut d, 1, all()), rows(vec![row(1, "a", 0), row(2, "b", 0)]));
    assert_eq!(d.committed_rows("t"), vec![row(1, "a", 0), row(2, "b", 0)]);
}

#[test]
fn uncommitted_insert_is_invisible_to_others_until_commit() {
    let mut d = db(2);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, ins(2, "b", 0));
    assert_eq!(run(&mut d, 0, sel(tag("b"))), rows(vec![row(2, "b", 0)]), "own writes are visible");
    assert_eq!(run(&mut d, 1, sel(tag("b"))), rows(vec![]));
    assert_eq!(d.committed_rows("t"), vec![row(1, "a", 0)]);
    run(&mut d, 0, Sql::Commit);
    assert_eq!(run(&mut d, 1, sel(tag("b"))), rows(vec![row(2, "b", 0)]));
}

#[test]
fn each_statement_takes_a_fresh_snapshot() {
    let mut d = db(2);
    run(&mut d, 0, Sql::Begin);
    assert_eq!(run(&mut d, 0, all()).rows().len(), 1);
    run(&mut d, 1, ins(2, "b", 0));
    assert_eq!(run(&mut d, 0, all()).rows().len(), 2, "READ COMMITTED sees B's commit");
}

#[test]
fn rollback_leaves_the_database_as_it_was() {
    let mut d = db(2);
    let original = d.clone();
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, ins(2, "b", 0));
    run(&mut d, 0, add(vec![], 1));
    run(&mut d, 0, lock(vec![], RowLock::ForUpdate));
    run(&mut d, 0, adv(7, LockScope::Xact));
    run(&mut d, 0, Sql::SetLockTimeout(100));
    run(&mut d, 0, Sql::Rollback);
    assert_eq!(d, original);
}

#[test]
fn committed_updates_compact_to_the_same_state() {
    let mut a = db(1);
    run(&mut a, 0, add(vec![], 1));
    run(&mut a, 0, add(vec![], 1));
    let mut b = Db::new(schema());
    b.seed_row("t", row(1, "a", 2));
    b.open_session();
    assert_eq!(a, b, "dead versions are dropped and commit numbers renumbered");
}

#[test]
fn plain_insert_duplicate_is_a_unique_violation() {
    let mut d = db(1);
    assert_eq!(run(&mut d, 0, ins(2, "a", 0)), err(E::UNIQUE_VIOLATION));
    assert_eq!(d.committed_rows("t").len(), 1);
}

#[test]
fn null_keys_never_conflict() {
    let mut d = db(1);
    let null_tag = |id| Sql::Insert {
        table: "t",
        row: vec![Value::Int(id), Value::Null, Value::Int(0)],
        on_conflict: OnConflict::Error,
    };
    assert!(!run(&mut d, 0, null_tag(2)).is_err());
    assert!(!run(&mut d, 0, null_tag(3)).is_err());
    assert_eq!(run(&mut d, 0, sel(vec![("tag", Value::Null)])), rows(vec![]), "col = NULL is never true");
}

#[test]
fn insert_waits_for_uncommitted_duplicate_then_fails_on_commit() {
    let mut d = db(2);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, ins(2, "b", 0));
    block(&mut d, 1, ins(3, "b", 0));
    run(&mut d, 0, Sql::Commit);
    assert_eq!(ready(&mut d, 1), err(E::UNIQUE_VIOLATION));
    assert_eq!(d.committed_rows("t").len(), 2);
}

#[test]
fn insert_waits_for_uncommitted_duplicate_then_proceeds_on_abort() {
    let mut d = db(2);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, ins(2, "b", 0));
    block(&mut d, 1, ins(3, "b", 0));
    run(&mut d, 0, Sql::Rollback);
    assert_eq!(ready(&mut d, 1), rows(vec![row(3, "b", 0)]));
    assert_eq!(d.committed_rows("t"), vec![row(1, "a", 0), row(3, "b", 0)]);
}

#[test]
fn insert_waits_for_uncommitted_delete_of_duplicate() {
    let mut d = db(3);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, del(tag("a")));
    block(&mut d, 1, ins(2, "a", 0));
    run(&mut d, 0, Sql::Rollback);
    assert_eq!(ready(&mut d, 1), err(E::UNIQUE_VIOLATION), "the deleter aborted: the key is live");

    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, del(tag("a")));
    block(&mut d, 2, ins(2, "a", 0));
    run(&mut d, 0, Sql::Commit);
    assert_eq!(ready(&mut d, 2), rows(vec![row(2, "a", 0)]), "the deleter committed: no conflict");
}

#[test]
fn own_uncommitted_duplicate_conflicts_at_once() {
    let mut d = db(1);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, ins(2, "b", 0));
    assert_eq!(run(&mut d, 0, ins(3, "b", 0)), err(E::UNIQUE_VIOLATION));
}

#[test]
fn update_checks_unique_indexes() {
    let mut d = db(1);
    run(&mut d, 0, ins(2, "b", 0));
    let retag = Sql::Update { table: "t", filter: tag("b"), set: vec![("tag", Expr::Value(Value::Str("a")))] };
    assert_eq!(run(&mut d, 0, retag), err(E::UNIQUE_VIOLATION));
    // Updating a row without changing its key does not conflict with its own old version.
    assert_eq!(run(&mut d, 0, add(tag("a"), 5)), rows(vec![row(1, "a", 5)]));
}

#[test]
fn partial_unique_index_applies_only_inside_its_predicate() {
    let mut d = db(1);
    let job = |state| Sql::Insert {
        table: "jobs",
        row: vec![Value::Str("k"), Value::Str(state)],
        on_conflict: OnConflict::Error,
    };
    assert!(!run(&mut d, 0, job("done")).is_err());
    assert!(!run(&mut d, 0, job("done")).is_err(), "duplicates outside the predicate are fine");
    assert!(!run(&mut d, 0, job("running")).is_err());
    assert_eq!(run(&mut d, 0, job("running")), err(E::UNIQUE_VIOLATION));
    assert_eq!(d.committed_rows("jobs").len(), 3);
}

#[test]
fn on_conflict_do_nothing() {
    let mut d = db(2);
    let upsert = |id| Sql::Insert {
        table: "t",
        row: row(id, "a", 9),
        on_conflict: OnConflict::DoNothing { target: vec!["tag"] },
    };
    assert_eq!(run(&mut d, 0, upsert(2)), rows(vec![]));
    // Waits on an in-progress conflicting insert like a plain INSERT.
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, del(tag("a")));
    run(&mut d, 0, ins(3, "a", 0));
    block(&mut d, 1, upsert(4));
    run(&mut d, 0, Sql::Commit);
    assert_eq!(ready(&mut d, 1), rows(vec![]));
    assert_eq!(d.committed_rows("t"), vec![row(3, "a", 0)]);
}

fn upsert_add(id: i64, n: i64) -> Sql {
    Sql::Insert {
        table: "t",
        row: row(id, "a", n),
        on_conflict: OnConflict::DoUpdate {
            target: vec!["tag"],
            set: vec![("n", Expr::Excluded("n")), ("id", Expr::Add("id", 10))],
        },
    }
}

#[test]
fn on_conflict_do_update_updates_the_conflicting_row() {
    let mut d = db(1);
    assert_eq!(run(&mut d, 0, upsert_add(2, 5)), rows(vec![row(11, "a", 5)]));
    assert_eq!(d.committed_rows("t"), vec![row(11, "a", 5)]);
    run(&mut d, 0, del(vec![]));
    assert_eq!(run(&mut d, 0, upsert_add(2, 5)), rows(vec![row(2, "a", 5)]), "no conflict: plain insert");
}

#[test]
fn on_conflict_do_update_waits_for_the_row_lock() {
    let mut d = db(2);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, add(tag("a"), 1));
    block(&mut d, 1, upsert_add(2, 5));
    run(&mut d, 0, Sql::Commit);
    assert_eq!(ready(&mut d, 1), rows(vec![row(11, "a", 5)]));
}

#[test]
fn on_conflict_do_update_sees_rows_committed_after_its_snapshot_would_be_taken() {
    // A conflicting insert that commits while we wait is updated, not inserted over.
    let mut d = db(2);
    run(&mut d, 0, del(vec![]));
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, ins(1, "a", 1));
    block(&mut d, 1, upsert_add(2, 5));
    run(&mut d, 0, Sql::Commit);
    assert_eq!(ready(&mut d, 1), rows(vec![row(11, "a", 5)]));
}

#[test]
fn update_rechecks_the_newest_version() {
    let mut d = db(2);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, add(tag("a"), 1));
    block(&mut d, 1, add(tag("a"), 10));
    run(&mut d, 0, Sql::Commit);
    assert_eq!(ready(&mut d, 1), rows(vec![row(1, "a", 11)]), "Add applies to the newest version");
}

#[test]
fn update_skips_a_row_updated_to_no_longer_match() {
    let mut d = db(2);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, add(vec![("n", Value::Int(0))], 1));
    block(&mut d, 1, add(vec![("n", Value::Int(0))], 10));
    run(&mut d, 0, Sql::Commit);
    assert_eq!(ready(&mut d, 1), rows(vec![]));
    assert_eq!(d.committed_rows("t"), vec![row(1, "a", 1)]);
}

#[test]
fn update_and_delete_skip_a_concurrently_deleted_row() {
    let mut d = db(3);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, del(tag("a")));
    block(&mut d, 1, add(tag("a"), 1));
    block(&mut d, 2, del(tag("a")));
    run(&mut d, 0, Sql::Commit);
    assert_eq!(ready(&mut d, 1), rows(vec![]));
    assert_eq!(ready(&mut d, 2), rows(vec![]));
}

#[test]
fn waiting_update_does_not_see_rows_inserted_after_its_snapshot() {
    let mut d = db(3);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, add(tag("a"), 1));
    block(&mut d, 1, add(vec![], 100));
    run(&mut d, 2, ins(2, "b", 0));
    run(&mut d, 0, Sql::Commit);
    assert_eq!(ready(&mut d, 1), rows(vec![row(1, "a", 101)]), "row b is newer than the snapshot");
    assert_eq!(run(&mut d, 2, sel(tag("b"))), rows(vec![row(2, "b", 0)]));
}

#[test]
fn update_returns_rows_written_before_and_after_a_wait() {
    let mut d = db(2);
    run(&mut d, 0, ins(2, "b", 0));
    run(&mut d, 0, ins(3, "c", 0));
    run(&mut d, 1, Sql::Begin);
    run(&mut d, 1, lock(tag("b"), RowLock::ForUpdate));
    block(&mut d, 0, add(vec![], 1));
    run(&mut d, 1, Sql::Commit);
    assert_eq!(ready(&mut d, 0), rows(vec![row(1, "a", 1), row(2, "b", 1), row(3, "c", 1)]));
    assert_eq!(d.committed_rows("t"), vec![row(1, "a", 1), row(2, "b", 1), row(3, "c", 1)]);
}

#[test]
fn for_update_blocks_nowait_fails_skip_locked_skips() {
    let mut d = db(3);
    run(&mut d, 0, ins(2, "b", 0));
    run(&mut d, 0, Sql::Begin);
    assert_eq!(run(&mut d, 0, lock(tag("a"), RowLock::ForUpdate)), rows(vec![row(1, "a", 0)]));
    assert_eq!(run(&mut d, 1, lock(vec![], RowLock::ForUpdateNowait)), err(E::LOCK_NOT_AVAILABLE));
    assert_eq!(run(&mut d, 1, lock(vec![], RowLock::ForUpdateSkipLocked)), rows(vec![row(2, "b", 0)]));
    assert_eq!(run(&mut d, 1, all()).rows().len(), 2, "plain reads do not wait for row locks");
    block(&mut d, 2, lock(vec![], RowLock::ForUpdate));
    run(&mut d, 0, Sql::Commit);
    assert_eq!(ready(&mut d, 2), rows(vec![row(1, "a", 0), row(2, "b", 0)]));
}

#[test]
fn for_update_after_concurrent_update_returns_the_newest_version() {
    let mut d = db(2);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, add(tag("a"), 1));
    run(&mut d, 1, Sql::Begin);
    block(&mut d, 1, lock(tag("a"), RowLock::ForUpdate));
    run(&mut d, 0, Sql::Commit);
    assert_eq!(ready(&mut d, 1), rows(vec![row(1, "a", 1)]));
    // The lock is held until the transaction ends.
    run(&mut d, 0, Sql::Begin);
    block(&mut d, 0, add(tag("a"), 1));
    run(&mut d, 1, Sql::Rollback);
    assert_eq!(ready(&mut d, 0), rows(vec![row(1, "a", 2)]));
}

#[test]
fn autocommit_for_update_releases_its_lock() {
    let mut d = db(2);
    run(&mut d, 0, lock(vec![], RowLock::ForUpdate));
    assert_eq!(run(&mut d, 1, add(vec![], 1)).rows().len(), 1);
}

#[test]
fn error_aborts_block_until_rollback() {
    let mut d = db(2);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, ins(2, "b", 0));
    assert_eq!(run(&mut d, 0, ins(3, "a", 0)), err(E::UNIQUE_VIOLATION));
    assert_eq!(run(&mut d, 1, ins(4, "b", 0)), rows(vec![row(4, "b", 0)]), "the aborted insert is dead");
    assert_eq!(run(&mut d, 0, all()), err(E::IN_FAILED_SQL_TRANSACTION));
    assert_eq!(run(&mut d, 0, Sql::SetLockTimeout(5)), err(E::IN_FAILED_SQL_TRANSACTION));
    assert_eq!(run(&mut d, 0, Sql::Begin), err(E::IN_FAILED_SQL_TRANSACTION));
    assert_eq!(run(&mut d, 0, Sql::Rollback), Outcome::Ok);
    assert_eq!(run(&mut d, 0, all()).rows().len(), 2);
}

#[test]
fn commit_of_a_failed_block_rolls_back() {
    let mut d = db(1);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, add(vec![], 1));
    assert!(run(&mut d, 0, ins(3, "a", 0)).is_err());
    assert_eq!(run(&mut d, 0, Sql::Commit), Outcome::Ok);
    assert_eq!(d.committed_rows("t"), vec![row(1, "a", 0)]);
}

#[test]
fn transaction_control_outside_and_inside_blocks_only_warns() {
    let mut d = db(1);
    assert_eq!(run(&mut d, 0, Sql::Commit), Outcome::Ok);
    assert_eq!(run(&mut d, 0, Sql::Rollback), Outcome::Ok);
    run(&mut d, 0, Sql::Begin);
    assert_eq!(run(&mut d, 0, Sql::Begin), Outcome::Ok);
    run(&mut d, 0, add(vec![], 1));
    run(&mut d, 0, Sql::Commit);
    assert_eq!(d.committed_rows("t"), vec![row(1, "a", 1)]);
}

#[test]
fn advisory_session_locks_stack_and_need_matching_unlocks() {
    let mut d = db(2);
    let try1 = Sql::AdvisoryTryLock { key: 1, scope: LockScope::Session };
    let unlock = Sql::AdvisoryUnlock { key: 1 };
    assert_eq!(run(&mut d, 0, adv(1, LockScope::Session)), Outcome::Ok);
    assert_eq!(run(&mut d, 0, adv(1, LockScope::Session)), Outcome::Ok);
    assert_eq!(run(&mut d, 1, try1.clone()), Outcome::Bool(false));
    assert_eq!(run(&mut d, 0, unlock.clone()), Outcome::Bool(true));
    assert_eq!(run(&mut d, 1, try1.clone()), Outcome::Bool(false), "one hold remains");
    assert_eq!(run(&mut d, 0, unlock.clone()), Outcome::Bool(true));
    assert_eq!(run(&mut d, 0, unlock.clone()), Outcome::Bool(false), "not held any more");
    assert_eq!(run(&mut d, 1, try1), Outcome::Bool(true));
    assert_eq!(run(&mut d, 0, unlock), Outcome::Bool(false), "held by another session");
}

#[test]
fn advisory_unlock_all_releases_session_holds() {
    let mut d = db(2);
    run(&mut d, 0, adv(1, LockScope::Session));
    run(&mut d, 0, adv(1, LockScope::Session));
    run(&mut d, 0, adv(2, LockScope::Session));
    block(&mut d, 1, adv(2, LockScope::Session));
    assert_eq!(run(&mut d, 0, Sql::AdvisoryUnlockAll), Outcome::Ok);
    assert_eq!(ready(&mut d, 1), Outcome::Ok);
    assert_eq!(run(&mut d, 1, Sql::AdvisoryTryLock { key: 1, scope: LockScope::Session }), Outcome::Bool(true));
}

#[test]
fn advisory_xact_locks_release_at_transaction_end() {
    let mut d = db(2);
    let try_xact = Sql::AdvisoryTryLock { key: 1, scope: LockScope::Xact };
    // In autocommit the lock is released as soon as the statement ends.
    assert_eq!(run(&mut d, 0, adv(1, LockScope::Xact)), Outcome::Ok);
    assert_eq!(run(&mut d, 1, try_xact.clone()), Outcome::Bool(true));
    run(&mut d, 0, Sql::Begin);
    assert_eq!(run(&mut d, 0, try_xact.clone()), Outcome::Bool(true));
    assert_eq!(run(&mut d, 0, Sql::AdvisoryUnlock { key: 1 }), Outcome::Bool(false), "xact holds don't unlock");
    block(&mut d, 1, adv(1, LockScope::Session));
    run(&mut d, 0, Sql::Commit);
    assert_eq!(ready(&mut d, 1), Outcome::Ok);
}

#[test]
fn session_advisory_lock_survives_rollback() {
    let mut d = db(2);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, adv(1, LockScope::Session));
    assert!(run(&mut d, 0, ins(2, "a", 0)).is_err());
    run(&mut d, 0, Sql::Rollback);
    assert_eq!(run(&mut d, 1, Sql::AdvisoryTryLock { key: 1, scope: LockScope::Session }), Outcome::Bool(false));
}

#[test]
fn advisory_waiters_are_granted_in_fifo_order() {
    let mut d = db(3);
    run(&mut d, 0, adv(1, LockScope::Session));
    block(&mut d, 2, adv(1, LockScope::Session));
    block(&mut d, 1, adv(1, LockScope::Session));
    run(&mut d, 0, Sql::AdvisoryUnlock { key: 1 });
    assert_eq!(ready(&mut d, 2), Outcome::Ok, "the head of the queue goes first");
    assert!(!d.is_ready(1));
    assert_eq!(run(&mut d, 0, Sql::AdvisoryTryLock { key: 1, scope: LockScope::Session }), Outcome::Bool(false));
    run(&mut d, 2, Sql::AdvisoryUnlock { key: 1 });
    assert_eq!(ready(&mut d, 1), Outcome::Ok);
}

#[test]
fn advisory_deadlock_the_closer_is_one_possible_victim() {
    let mut d = db(2);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, adv(1, LockScope::Xact));
    run(&mut d, 1, Sql::Begin);
    run(&mut d, 1, adv(2, LockScope::Xact));
    block(&mut d, 0, adv(2, LockScope::Xact));
    close_cycle(&mut d, 1, adv(1, LockScope::Xact));
    assert_eq!(d.deadlocked().collect::<Vec<_>>(), [0, 1]);
    assert_eq!(ready(&mut d, 1), err(E::DEADLOCK_DETECTED), "the closer's check runs first");
    assert_eq!(ready(&mut d, 0), Outcome::Ok, "the victim's xact lock was released");
    assert_eq!(run(&mut d, 1, all()), err(E::IN_FAILED_SQL_TRANSACTION));
}

#[test]
fn row_lock_deadlock() {
    let mut d = db(2);
    run(&mut d, 0, ins(2, "b", 0));
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 1, Sql::Begin);
    run(&mut d, 0, add(tag("a"), 1));
    run(&mut d, 1, add(tag("b"), 1));
    block(&mut d, 0, add(tag("b"), 1));
    close_cycle(&mut d, 1, add(tag("a"), 1));
    assert_eq!(ready(&mut d, 1), err(E::DEADLOCK_DETECTED), "the closer, one possible victim");
    assert_eq!(ready(&mut d, 0), rows(vec![row(2, "b", 1)]));
    run(&mut d, 0, Sql::Commit);
    run(&mut d, 1, Sql::Rollback);
    assert_eq!(d.committed_rows("t"), vec![row(1, "a", 1), row(2, "b", 1)]);
}

#[test]
fn three_way_deadlock_through_mixed_waits() {
    let mut d = db(3);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, add(tag("a"), 1));
    run(&mut d, 1, adv(5, LockScope::Session));
    block(&mut d, 1, add(tag("a"), 1)); // 1 waits for 0's transaction
    block(&mut d, 2, adv(5, LockScope::Session)); // 2 waits for 1
    close_cycle(&mut d, 0, adv(5, LockScope::Xact)); // 0 -> 1 -> 0
    assert_eq!(d.deadlocked().collect::<Vec<_>>(), [0, 1], "2 waits on the cycle, not in it");
    assert!(!d.is_ready(2));
    assert_eq!(ready(&mut d, 0), err(E::DEADLOCK_DETECTED), "the closer, one possible victim");
    assert_eq!(ready(&mut d, 1), rows(vec![row(1, "a", 1)]));
    assert!(!d.is_ready(2), "1 still holds its session lock");
    run(&mut d, 1, Sql::AdvisoryUnlock { key: 5 });
    assert_eq!(ready(&mut d, 2), Outcome::Ok);
}

#[test]
fn cancel_wait_reports_lock_timeout_or_cancel() {
    let mut d = db(2);
    run(&mut d, 0, adv(1, LockScope::Session));
    run(&mut d, 1, Sql::Begin);
    run(&mut d, 1, ins(2, "b", 0));
    block(&mut d, 1, adv(1, LockScope::Session));
    assert_eq!(d.cancel_wait(1, &mut Footprint::default()), err(E::QUERY_CANCELED));
    assert_eq!(run(&mut d, 1, all()), err(E::IN_FAILED_SQL_TRANSACTION));
    run(&mut d, 1, Sql::Rollback);
    assert_eq!(d.committed_rows("t").len(), 1, "the cancelled transaction rolled back");
    run(&mut d, 1, Sql::SetLockTimeout(50));
    block(&mut d, 1, adv(1, LockScope::Session));
    assert_eq!(d.cancel_wait(1, &mut Footprint::default()), err(E::LOCK_NOT_AVAILABLE));
    run(&mut d, 0, Sql::AdvisoryUnlock { key: 1 });
    assert!(!d.is_ready(1), "the cancelled wait is gone from the queue");
}

#[test]
fn set_lock_timeout_in_an_aborted_block_is_undone() {
    let mut d = db(1);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, Sql::SetLockTimeout(50));
    run(&mut d, 0, Sql::Rollback);
    assert_eq!(d.sessions[0].lock_timeout, 0);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, Sql::SetLockTimeout(50));
    run(&mut d, 0, Sql::Commit);
    assert_eq!(d.sessions[0].lock_timeout, 50);
}

#[test]
fn cancelled_update_releases_waiters_behind_it() {
    let mut d = db(3);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, lock(tag("a"), RowLock::ForUpdate));
    run(&mut d, 1, Sql::Begin);
    run(&mut d, 1, adv(9, LockScope::Xact));
    block(&mut d, 1, add(tag("a"), 1));
    block(&mut d, 2, adv(9, LockScope::Xact));
    assert_eq!(d.cancel_wait(1, &mut Footprint::default()), err(E::QUERY_CANCELED));
    assert_eq!(ready(&mut d, 2), Outcome::Ok);
}

#[test]
fn injected_errors_abort_the_transaction() {
    let mut d = db(2);
    assert_eq!(d.inject_error(0, &ins(2, "b", 0), &mut Footprint::default()), err(E::IO_ERROR));
    assert_eq!(d.committed_rows("t").len(), 1);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, ins(2, "b", 0));
    assert_eq!(d.inject_error(0, &all(), &mut Footprint::default()), err(E::IO_ERROR));
    assert_eq!(run(&mut d, 0, all()), err(E::IN_FAILED_SQL_TRANSACTION));
    run(&mut d, 0, Sql::Rollback);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, ins(2, "b", 0));
    assert_eq!(d.inject_error(0, &Sql::Commit, &mut Footprint::default()), err(E::IO_ERROR));
    assert_eq!(run(&mut d, 0, all()).rows().len(), 1, "the failed COMMIT rolled back and ended the block");
}

#[test]
fn disconnect_rolls_back_and_releases_everything() {
    let mut d = db(3);
    let original = d.clone();
    run(&mut d, 0, adv(1, LockScope::Session));
    run(&mut d, 0, Sql::SetLockTimeout(10));
    run(&mut d, 1, Sql::Begin);
    run(&mut d, 1, add(vec![], 1));
    block(&mut d, 0, add(vec![], 1));
    block(&mut d, 2, adv(1, LockScope::Session));
    d.disconnect(0, &mut Footprint::default());
    assert!(!d.is_ready(0));
    assert_eq!(ready(&mut d, 2), Outcome::Ok, "the dead session's advisory lock is released");
    run(&mut d, 2, Sql::AdvisoryUnlock { key: 1 });
    d.disconnect(1, &mut Footprint::default());
    assert_eq!(d, original);
}

#[test]
fn footprints_cover_reads_writes_and_transaction_ends() {
    let mut d = db(2);
    let mut fp = Footprint::default();
    d.execute(0, &Sql::Begin, &mut fp);
    assert_eq!(fp, Footprint::default());
    d.execute(0, &sel(vec![]), &mut fp);
    let mut want = Footprint::default();
    want.read(Resource::Table("t"));
    want.read(Resource::Commits);
    assert_eq!(fp, want);
    d.execute(0, &add(vec![], 1), &mut fp);
    assert_ne!(fp.writes & want.reads, 0, "an update writes the table");
    let mut commit = Footprint::default();
    d.execute(0, &Sql::Commit, &mut commit);
    let mut want = Footprint::default();
    want.write(Resource::Commits);
    want.write(Resource::Table("t"));
    assert_eq!(commit, want, "a commit that frees nobody writes what it changed");
    let mut fp = Footprint::default();
    d.execute(1, &adv(3, LockScope::Session), &mut fp);
    let mut want = Footprint::default();
    want.write(Resource::Advisory(3));
    assert_eq!(fp, want);
}

#[test]
fn waiting_delete_does_not_see_rows_inserted_after_its_snapshot() {
    let mut d = db(3);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, lock(tag("a"), RowLock::ForUpdate));
    block(&mut d, 1, del(vec![("n", Value::Int(0))]));
    run(&mut d, 2, ins(2, "b", 0));
    run(&mut d, 0, Sql::Commit);
    assert_eq!(ready(&mut d, 1), rows(vec![row(1, "a", 0)]));
    assert_eq!(d.committed_rows("t"), vec![row(2, "b", 0)]);
}

#[test]
fn on_conflict_on_a_partial_index_applies_only_inside_the_predicate() {
    let mut d = db(1);
    let job = |state| Sql::Insert {
        table: "jobs",
        row: vec![Value::Str("k"), Value::Str(state)],
        on_conflict: OnConflict::DoNothing { target: vec!["key"] },
    };
    assert_eq!(run(&mut d, 0, job("running")).rows().len(), 1);
    assert_eq!(run(&mut d, 0, job("running")), rows(vec![]));
    assert_eq!(run(&mut d, 0, job("done")).rows().len(), 1, "outside the predicate: no arbiter applies");
}

#[test]
fn blocking_touches_the_waits_and_waking_touches_everything() {
    let mut d = db(2);
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, add(vec![], 1));
    let mut fp = Footprint::default();
    assert_eq!(d.execute(1, &add(vec![], 1), &mut fp), Applied::Blocked);
    let mut waits = Footprint::default();
    waits.write(Resource::Waits);
    assert!(fp.conflicts(&waits), "waits feed deadlock detection");
    let mut table = Footprint::default();
    table.read(Resource::Table("t"));
    assert!(fp.conflicts(&table), "what it waits on");
    assert_ne!(fp, Footprint::GLOBAL);
    let mut fp = Footprint::default();
    d.execute(0, &Sql::Rollback, &mut fp);
    assert_eq!(fp, Footprint::GLOBAL);
    assert_eq!(ready(&mut d, 1), rows(vec![row(1, "a", 1)]));
}

#[test]
fn independent_transactions_commute_to_equal_states() {
    let script = |first: ConnId| {
        let mut d = db(2);
        let second = 1 - first;
        run(&mut d, first, ins(10 + i64::from(first), ["x", "y"][usize::from(first)], 0));
        run(&mut d, second, ins(10 + i64::from(second), ["x", "y"][usize::from(second)], 0));
        d
    };
    let (a, b) = (script(0), script(1));
    assert_eq!(a.committed_rows("t").len(), 3);
    assert_ne!(a, b, "insertion order is observable");
    let mut a = a;
    let mut b = b;
    run(&mut a, 0, del(vec![("id", Value::Int(10))]));
    run(&mut b, 0, del(vec![("id", Value::Int(10))]));
    run(&mut a, 0, ins(10, "x", 0));
    run(&mut b, 0, ins(10, "x", 0));
    assert_eq!(a, b, "commit numbering does not depend on history");
}

/// Random statements from three sessions, with timeouts, injected errors and disconnects:
/// the internal invariants hold throughout, and once every session has disconnected no
/// lock, waiter or dead version remains.
#[test]
fn random_interleavings_keep_invariants() {
    let tags = ["a", "b", "c"];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..300 {
        let mut d = db(3);
        let mut fp = Footprint::default();
        for _ in 0..40 {
            let mut c = next(3) as ConnId;
            // Statements woken together race before anything else happens (as the explorer
            // enforces): one of them moves first.
            let woken: Vec<ConnId> = d.woken().collect();
            let racing = if woken.is_empty() { d.deadlocked().collect() } else { woken };
            if !racing.is_empty() {
                c = racing[next(racing.len() as u64) as usize];
                d.take_ready(c, &mut fp);
                continue;
            }
            if d.sessions[usize::from(c)].pending.is_some() {
                match next(4) {
                    0 => drop(d.cancel_wait(c, &mut fp)),
                    1 => d.disconnect(c, &mut fp),
                    _ => {}
                }
                continue;
            }
            if d.is_ready(c) {
                d.take_ready(c, &mut fp);
            }
            let t = tags[next(3) as usize];
            let key = next(2) as i64;
            let scope = if next(2) == 0 { LockScope::Session } else { LockScope::Xact };
            let stmt = match next(16) {
                0 | 1 => Sql::Begin,
                2 => Sql::Commit,
                3 => Sql::Rollback,
                4 => ins(next(5) as i64, t, 0),
                5 => upsert_add(next(5) as i64, 1),
                6 => Sql::Insert {
                    table: "t",
                    row: row(9, t, 0),
                    on_conflict: OnConflict::DoNothing { target: vec!["tag"] },
                },
                7 => add(tag(t), 1),
                8 => del(tag(t)),
                9 => lock(
                    tag(t),
                    [RowLock::ForUpdate, RowLock::ForUpdateNowait, RowLock::ForUpdateSkipLocked][next(3) as usize],
                ),
                10 => sel(tag(t)),
                11 => adv(key, scope),
                12 => Sql::AdvisoryTryLock { key, scope },
                13 => Sql::AdvisoryUnlock { key },
                14 => Sql::SetLockTimeout(next(2) as u32),
                _ => {
                    d.inject_error(c, &add(tag(t), 1), &mut fp);
                    continue;
                }
            };
            d.execute(c, &stmt, &mut fp);
        }
        for c in 0..3 {
            d.disconnect(c, &mut fp);
        }
        assert!(d.advisory.is_empty() && d.wait_queue.is_empty());
        assert!(d.tables.iter().flatten().all(|r| r.locker.is_none() && r.versions.len() == 1));
    }
}
