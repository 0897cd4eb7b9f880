//! The deadlock victim, one rule per test: the statement that closes a wait-for cycle waits;
//! every session on the cycle is ready and the first one stepped fails with 40P01 (whichever
//! member it is), aborting its transaction and releasing its locks, while the others wait on; a
//! session waiting on the cycle but not in it is no candidate; a waiter re-run by a commit can
//! close a cycle too; and outcomes do not depend on which wait closed the cycle.

use super::test_steps::{block, run, take};
use super::*;

fn schema() -> Schema {
    Schema { tables: vec![TableDef { name: "t", columns: vec!["id", "n"], unique: vec![] }] }
}

/// `n` sessions and committed rows (1, 0) and (2, 0).
fn db(n: usize) -> Db {
    let mut db = Db::new(schema());
    db.seed_row("t", vec![Value::Int(1), Value::Int(0)]);
    db.seed_row("t", vec![Value::Int(2), Value::Int(0)]);
    for _ in 0..n {
        db.open_session();
    }
    db
}

fn deadlocked(db: &Db) -> Vec<ConnId> {
    db.deadlocked().collect()
}

fn lock(key: i64) -> Sql {
    Sql::AdvisoryLock { key, scope: LockScope::Xact }
}

fn bump(id: i64) -> Sql {
    Sql::Update { table: "t", filter: vec![("id", Value::Int(id))], set: vec![("n", Expr::Add("n", 1))] }
}

fn bumped(id: i64) -> Outcome {
    Outcome::Rows(vec![vec![Value::Int(id), Value::Int(1)]])
}

const DEADLOCK: Outcome = Outcome::Err(ErrorCode::DEADLOCK_DETECTED);

/// Sessions 0 and 1 each hold one advisory lock in a transaction and wait for the other's;
/// session 1's wait closes the cycle.
fn advisory_cycle() -> Db {
    let mut d = db(2);
    for (c, key) in [(0, 1), (1, 2)] {
        run(&mut d, c, Sql::Begin);
        run(&mut d, c, lock(key));
    }
    block(&mut d, 0, lock(2));
    assert!(!d.is_ready(0) && deadlocked(&d).is_empty(), "no cycle yet");
    block(&mut d, 1, lock(1));
    d
}

#[test]
fn either_side_of_a_two_way_advisory_deadlock_can_be_the_victim() {
    for victim in [0, 1] {
        let mut d = advisory_cycle();
        assert_eq!(deadlocked(&d), [0, 1], "both checks are due");
        assert!(d.is_ready(0) && d.is_ready(1));
        let mut f = Footprint::default();
        assert_eq!(d.take_ready(victim, &mut f), Some(DEADLOCK));
        assert_eq!(f, Footprint::GLOBAL, "a victim's abort touches everything");
        assert!(deadlocked(&d).is_empty(), "the cycle is broken");
        // The survivor got the victim's lock, and the victim's block is aborted.
        let survivor = 1 - victim;
        assert_eq!(take(&mut d, survivor), Some(Outcome::Ok));
        assert_eq!(run(&mut d, victim, lock(9)), Outcome::Err(ErrorCode::IN_FAILED_SQL_TRANSACTION));
        run(&mut d, victim, Sql::Rollback);
        run(&mut d, survivor, Sql::Commit);
        assert!(d.advisory.is_empty() && d.wait_queue.is_empty());
    }
}

#[test]
fn any_member_of_a_three_way_cycle_can_be_the_victim_and_the_others_wait_on() {
    for victim in [0, 1, 2] {
        // 0 → 1 → 2 → 0 on advisory locks 1, 2, 3; session 2 closes the cycle.
        let mut d = db(3);
        for c in 0..3 {
            run(&mut d, c, Sql::Begin);
            run(&mut d, c, lock(i64::from(c) + 1));
        }
        block(&mut d, 0, lock(2));
        block(&mut d, 1, lock(3));
        block(&mut d, 2, lock(1));
        assert_eq!(deadlocked(&d), [0, 1, 2]);
        assert_eq!(take(&mut d, victim), Some(DEADLOCK));
        assert!(deadlocked(&d).is_empty());
        // Only the member that waited for the victim is granted; the third waits on for it.
        let granted = (victim + 2) % 3;
        let waiting = (victim + 1) % 3;
        assert!(d.is_ready(granted) && !d.is_ready(waiting));
        assert_eq!(take(&mut d, granted), Some(Outcome::Ok));
        run(&mut d, granted, Sql::Commit);
        assert_eq!(take(&mut d, waiting), Some(Outcome::Ok));
    }
}

#[test]
fn either_side_of_a_row_lock_deadlock_can_be_the_victim() {
    for victim in [0, 1] {
        let mut d = db(2);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 1, Sql::Begin);
        assert_eq!(run(&mut d, 0, bump(1)), bumped(1));
        assert_eq!(run(&mut d, 1, bump(2)), bumped(2));
        block(&mut d, 0, bump(2));
        block(&mut d, 1, bump(1));
        assert_eq!(deadlocked(&d), [0, 1]);
        assert_eq!(take(&mut d, victim), Some(DEADLOCK));
        let survivor = 1 - victim;
        // The victim's update is rolled back: the survivor updates the row from 0.
        let other_row = if survivor == 0 { 2 } else { 1 };
        assert_eq!(take(&mut d, survivor), Some(bumped(other_row)));
        run(&mut d, survivor, Sql::Commit);
        run(&mut d, victim, Sql::Rollback);
        let n: Vec<Value> = d.committed_rows("t").iter().map(|r| r[1]).collect();
        assert_eq!(n, [Value::Int(1), Value::Int(1)], "only the survivor's two updates");
    }
}

#[test]
fn a_waiter_behind_a_cycle_is_no_candidate() {
    let mut d = advisory_cycle();
    d.open_session();
    block(&mut d, 2, lock(1));
    assert_eq!(deadlocked(&d), [0, 1]);
    assert!(!d.is_ready(2));
    // Session 0 is the victim: its lock 1 goes to session 1, queued first, not to session 2.
    assert_eq!(take(&mut d, 0), Some(DEADLOCK));
    assert_eq!(take(&mut d, 1), Some(Outcome::Ok));
    assert!(!d.is_ready(2));
}

#[test]
fn a_victims_outcome_does_not_depend_on_which_wait_closed_the_cycle() {
    let mut other = db(2);
    for (c, key) in [(0, 1), (1, 2)] {
        run(&mut other, c, Sql::Begin);
        run(&mut other, c, lock(key));
    }
    block(&mut other, 1, lock(1));
    block(&mut other, 0, lock(2));
    let mut d = advisory_cycle();
    assert_eq!(deadlocked(&other), deadlocked(&d));
    // The wait queue remembers who waited first, so the states differ only in that order; the
    // victims' outcomes are the same.
    assert_eq!(other.take_ready(0, &mut Footprint::default()), d.take_ready(0, &mut Footprint::default()));
    assert_eq!(take(&mut other, 1), take(&mut d, 1));
    assert_eq!(other.committed_rows("t"), d.committed_rows("t"));
}

#[test]
fn a_waiter_re_run_by_a_commit_can_close_a_cycle() {
    for victim in [0, 2] {
        let mut d = db(3);
        run(&mut d, 0, Sql::Begin);
        run(&mut d, 0, lock(7));
        run(&mut d, 1, Sql::Begin);
        run(&mut d, 1, bump(1));
        run(&mut d, 2, Sql::Begin);
        run(&mut d, 2, bump(2));
        block(&mut d, 2, lock(7)); // 2 waits for 0
        let bump_all = Sql::Update { table: "t", filter: vec![], set: vec![("n", Expr::Add("n", 1))] };
        block(&mut d, 0, bump_all); // 0 waits for 1 (row 1)
        assert!(deadlocked(&d).is_empty());
        // 1 commits: 0 re-runs, updates row 1, and now waits for 2 (row 2): 0 → 2 → 0.
        run(&mut d, 1, Sql::Commit);
        assert_eq!(deadlocked(&d), [0, 2]);
        assert_eq!(take(&mut d, victim), Some(DEADLOCK));
        if victim == 0 {
            assert_eq!(take(&mut d, 2), Some(Outcome::Ok), "0's lock 7 went with its transaction");
        } else {
            let rows = vec![vec![Value::Int(1), Value::Int(2)], vec![Value::Int(2), Value::Int(1)]];
            assert_eq!(take(&mut d, 0), Some(Outcome::Rows(rows)), "2's update of row 2 was rolled back");
        }
    }
}
