//! Wake order, one rule per test: two or more statements freed by one transaction end are
//! woken and race, the first one stepped re-running first; a lone waiter re-runs at once;
//! advisory lock waiters are granted in order.

use super::test_steps::{block, row, run, tagged_db, take};
use super::*;

/// Three sessions and a committed row (1, a, 0).
fn db() -> Db {
    tagged_db(3)
}

fn set_n(n: i64) -> Sql {
    Sql::Update { table: "t", filter: vec![("id", Value::Int(1))], set: vec![("n", Expr::Value(Value::Int(n)))] }
}

fn woken(db: &Db) -> Vec<ConnId> {
    db.woken().collect()
}

/// Session 0 holds row 1 in an open transaction; sessions 1 and 2 wait to update it.
fn two_updates_waiting() -> Db {
    let mut d = db();
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, set_n(10));
    block(&mut d, 1, set_n(11));
    block(&mut d, 2, set_n(12));
    d
}

#[test]
fn waiters_freed_together_are_woken_and_the_first_stepped_wins() {
    for (first, second) in [(1, 2), (2, 1)] {
        let mut d = two_updates_waiting();
        run(&mut d, 0, Sql::Commit);
        assert_eq!(woken(&d), [1, 2], "both race");
        assert!(d.is_ready(1) && d.is_ready(2));
        let n = if first == 1 { 11 } else { 12 };
        assert_eq!(take(&mut d, first), Some(Outcome::Rows(vec![row(1, "a", n)])));
        // The winner's update committed at once (autocommit), so the loser, re-run in the same
        // step, is done too.
        assert!(woken(&d).is_empty());
        let m = if second == 1 { 11 } else { 12 };
        assert_eq!(take(&mut d, second), Some(Outcome::Rows(vec![row(1, "a", m)])));
        assert_eq!(d.committed_rows("t"), vec![row(1, "a", m)]);
    }
}

#[test]
fn the_loser_of_a_race_waits_again_for_the_winners_transaction() {
    let mut d = db();
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, set_n(10));
    run(&mut d, 1, Sql::Begin);
    run(&mut d, 2, Sql::Begin);
    block(&mut d, 1, set_n(11));
    block(&mut d, 2, set_n(12));
    run(&mut d, 0, Sql::Commit);
    assert_eq!(woken(&d), [1, 2]);
    // Session 2 gets there first: it updates the row in its open transaction …
    assert_eq!(take(&mut d, 2), Some(Outcome::Rows(vec![row(1, "a", 12)])));
    // … and session 1, re-run in the same step, waits for it now.
    assert!(!d.is_ready(1) && woken(&d).is_empty());
    assert!(d.sessions[1].pending.is_some());
    run(&mut d, 2, Sql::Commit);
    assert_eq!(take(&mut d, 1), Some(Outcome::Rows(vec![row(1, "a", 11)])));
}

#[test]
fn inserts_waiting_on_an_uncommitted_key_race_when_it_rolls_back() {
    for first in [1, 2] {
        let mut d = db();
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, Sql::Insert { table: "t", row: row(5, "b", 0), on_conflict: OnConflict::Error });
        block(&mut d, 1, Sql::Insert { table: "t", row: row(6, "b", 1), on_conflict: OnConflict::Error });
        block(&mut d, 2, Sql::Insert { table: "t", row: row(7, "b", 2), on_conflict: OnConflict::Error });
        run(&mut d, 0, Sql::Rollback);
        assert_eq!(woken(&d), [1, 2]);
        let (id, n) = if first == 1 { (6, 1) } else { (7, 2) };
        assert_eq!(take(&mut d, first), Some(Outcome::Rows(vec![row(id, "b", n)])));
        let other = 3 - first;
        assert_eq!(take(&mut d, other), Some(Outcome::Err(ErrorCode::UNIQUE_VIOLATION)));
    }
}

#[test]
fn a_lone_waiter_re_runs_at_once() {
    let mut d = db();
    run(&mut d, 0, Sql::Begin);
    run(&mut d, 0, set_n(10));
    block(&mut d, 1, set_n(11));
    run(&mut d, 0, Sql::Commit);
    assert!(woken(&d).is_empty());
    assert_eq!(d.sessions[1].ready, Some(Outcome::Rows(vec![row(1, "a", 11)])));
}

#[test]
fn advisory_waiters_are_granted_in_order_not_woken() {
    let mut d = db();
    let lock = Sql::AdvisoryLock { key: 7, scope: LockScope::Session };
    run(&mut d, 0, lock.clone());
    block(&mut d, 1, lock.clone());
    block(&mut d, 2, lock.clone());
    run(&mut d, 0, Sql::AdvisoryUnlock { key: 7 });
    assert!(woken(&d).is_empty());
    assert!(d.is_ready(1) && !d.is_ready(2));
}
