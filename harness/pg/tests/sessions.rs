//! The step-by-step controller on a real server. These tests need the PostgreSQL server
//! binaries; without them they fail and say how to install them.
//!
//! All tests share one embedded cluster (started by the first, stopped with the last) and
//! each works in a scratch database of its own.

use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use racelab_harness::op::{Applied, ErrorCode, Expr, LockScope, OnConflict, Outcome, RowLock, Sql, Value};
use racelab_harness::sim::{Schema, TableDef, UniqueIndex};
use racelab_pg::{Cluster, Sessions};

struct TestDb {
    db: Cluster,
    _host: Arc<Cluster>,
}

fn test_db() -> TestDb {
    static HOST: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    let host = {
        let mut slot = HOST.lock().unwrap_or_else(|p| p.into_inner());
        match slot.upgrade() {
            Some(h) => h,
            None => {
                let h = Arc::new(
                    Cluster::embedded().unwrap_or_else(|e| panic!("cannot start an embedded PostgreSQL cluster: {e}")),
                );
                *slot = Arc::downgrade(&h);
                h
            }
        }
    };
    let dir = host.dir().unwrap().display().to_string();
    let db = Cluster::external(&format!("host={dir} port=5432 user=racelab dbname=postgres"))
        .unwrap_or_else(|e| panic!("cannot create a scratch database: {e}"));
    TestDb { db, _host: host }
}

fn schema() -> Schema {
    Schema {
        tables: vec![
            TableDef {
                name: "jobs",
                columns: vec!["id", "tag", "state", "n"],
                unique: vec![
                    UniqueIndex { name: "jobs_id", columns: vec!["id"], predicate: None },
                    UniqueIndex {
                        name: "jobs_running_tag",
                        columns: vec!["tag"],
                        predicate: Some(("state", Value::Str("running"))),
                    },
                ],
            },
            TableDef {
                name: "kv",
                columns: vec!["k", "v"],
                unique: vec![UniqueIndex { name: "kv_k", columns: vec!["k"], predicate: None }],
            },
        ],
    }
}

const TEXT: &[(&str, &str)] = &[("jobs", "tag"), ("jobs", "state")];

fn open(t: &TestDb, n: usize) -> Sessions {
    Sessions::open(&t.db, &schema(), TEXT, n).unwrap_or_else(|e| panic!("{e}"))
}

fn job(id: i64, tag: &'static str, state: &'static str) -> Sql {
    Sql::Insert {
        table: "jobs",
        row: vec![Value::Int(id), Value::Str(tag), Value::Str(state), Value::Int(0)],
        on_conflict: OnConflict::Error,
    }
}

fn kv(k: i64, v: i64) -> Vec<Value> {
    vec![Value::Int(k), Value::Int(v)]
}

fn bump(k: i64) -> Sql {
    Sql::Update { table: "kv", filter: vec![("k", Value::Int(k))], set: vec![("v", Expr::Add("v", 1))] }
}

fn lock(key: i64) -> Sql {
    Sql::AdvisoryLock { key, scope: LockScope::Session }
}

#[track_caller]
fn done(s: &mut Sessions, conn: u8, stmt: Sql) -> Outcome {
    match s.execute(conn, &stmt).unwrap_or_else(|e| panic!("{e}")) {
        Applied::Done(o) => o,
        Applied::Blocked => panic!("{stmt:?} on {conn} blocked"),
    }
}

#[track_caller]
fn blocks(s: &mut Sessions, conn: u8, stmt: Sql) {
    let a = s.execute(conn, &stmt).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a, Applied::Blocked, "{stmt:?} on {conn}");
    assert!(!s.is_ready(conn));
}

fn count(s: &mut Sessions, sql: &str) -> i64 {
    s.control_query(sql).unwrap()[0].as_deref().unwrap().parse().unwrap()
}

/// Advisory locks in this test's database (other tests run beside it on the same server).
const ADVISORY: &str = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";

#[test]
fn insert_waits_on_an_uncommitted_duplicate_then_fails() {
    let t = test_db();
    let mut s = open(&t, 2);
    assert_eq!(done(&mut s, 0, Sql::Begin), Outcome::Ok);
    assert_eq!(
        done(&mut s, 0, job(1, "a", "running")),
        Outcome::Rows(vec![vec![Value::Int(1), Value::Str("a"), Value::Str("running"), Value::Int(0)]])
    );
    blocks(&mut s, 1, job(2, "a", "running"));
    assert_eq!(done(&mut s, 0, Sql::Commit), Outcome::Ok);
    assert!(s.is_ready(1));
    assert_eq!(s.take_ready(1), Some(Outcome::Err(ErrorCode::UNIQUE_VIOLATION)));
    assert_eq!(s.take_ready(1), None);
    // Outside the partial index's predicate there is no conflict.
    assert_eq!(done(&mut s, 1, job(3, "a", "done")).rows().len(), 1);
    assert_eq!(s.committed_rows("jobs").unwrap().len(), 2);
}

#[test]
fn advisory_lock_waits_and_is_granted() {
    let t = test_db();
    let mut s = open(&t, 2);
    assert_eq!(done(&mut s, 0, lock(7)), Outcome::Ok);
    blocks(&mut s, 1, lock(7));
    assert_eq!(done(&mut s, 0, Sql::AdvisoryTryLock { key: 8, scope: LockScope::Xact }), Outcome::Bool(true));
    assert_eq!(done(&mut s, 0, Sql::AdvisoryUnlock { key: 7 }), Outcome::Bool(true));
    assert_eq!(s.take_ready(1), Some(Outcome::Ok));
    assert_eq!(done(&mut s, 0, Sql::AdvisoryTryLock { key: 7, scope: LockScope::Session }), Outcome::Bool(false));
    assert_eq!(done(&mut s, 0, Sql::AdvisoryUnlock { key: 7 }), Outcome::Bool(false));
    assert_eq!(done(&mut s, 1, Sql::AdvisoryUnlockAll), Outcome::Ok);
    assert_eq!(count(&mut s, ADVISORY), 0);
}

#[test]
fn for_update_nowait_and_skip_locked() {
    let t = test_db();
    let mut s = open(&t, 2);
    s.reset(&[("kv", kv(1, 10)), ("kv", kv(2, 20))]).unwrap();
    let sel = |lock| Sql::Select { table: "kv", filter: vec![], lock };
    assert_eq!(done(&mut s, 0, Sql::Begin), Outcome::Ok);
    assert_eq!(
        done(
            &mut s,
            0,
            Sql::Select { table: "kv", filter: vec![("k", Value::Int(1))], lock: Some(RowLock::ForUpdate) }
        ),
        Outcome::Rows(vec![kv(1, 10)])
    );
    assert_eq!(done(&mut s, 1, sel(Some(RowLock::ForUpdateNowait))), Outcome::Err(ErrorCode::LOCK_NOT_AVAILABLE));
    assert_eq!(done(&mut s, 1, sel(Some(RowLock::ForUpdateSkipLocked))), Outcome::Rows(vec![kv(2, 20)]));
    assert_eq!(done(&mut s, 1, sel(None)), Outcome::Rows(vec![kv(1, 10), kv(2, 20)]));
    blocks(&mut s, 1, sel(Some(RowLock::ForUpdate)));
    assert_eq!(done(&mut s, 0, Sql::Rollback), Outcome::Ok);
    assert_eq!(s.take_ready(1), Some(Outcome::Rows(vec![kv(1, 10), kv(2, 20)])));
}

/// Sessions 0 and 1 each update one row in a transaction, then 0 waits for 1's row and 1's
/// wait for 0's closes the cycle.
fn row_lock_cycle(s: &mut Sessions) {
    done(s, 0, Sql::Begin);
    done(s, 1, Sql::Begin);
    assert_eq!(done(s, 0, bump(1)), Outcome::Rows(vec![kv(1, 1)]));
    assert_eq!(done(s, 1, bump(2)), Outcome::Rows(vec![kv(2, 1)]));
    blocks(s, 0, bump(2));
    // The closer waits too: both members are ready, one of them to be the victim.
    assert_eq!(s.execute(1, &bump(1)).unwrap(), Applied::Blocked);
    assert_eq!(s.deadlocked(), [0, 1]);
    assert!(s.is_ready(0) && s.is_ready(1));
}

#[test]
fn a_deadlock_makes_its_members_ready_and_the_closer_is_the_victim_on_a_fresh_run() {
    let t = test_db();
    let mut s = open(&t, 2);
    s.reset(&[("kv", kv(1, 0)), ("kv", kv(2, 0))]).unwrap();
    row_lock_cycle(&mut s);
    assert_eq!(s.pick_victim(1), Ok(Outcome::Err(ErrorCode::DEADLOCK_DETECTED)));
    assert!(s.deadlocked().is_empty());
    assert_eq!(s.take_ready(0), Some(Outcome::Rows(vec![kv(2, 1)])));
    assert_eq!(done(&mut s, 1, Sql::Commit), Outcome::Ok, "COMMIT of a failed transaction rolls back");
    assert_eq!(done(&mut s, 0, Sql::Commit), Outcome::Ok);
    assert_eq!(s.committed_rows("kv").unwrap(), vec![kv(1, 1), kv(2, 1)]);
}

#[test]
fn an_earlier_waiter_is_the_victim_when_the_run_is_repeated_with_it_pinned() {
    let t = test_db();
    let mut s = open(&t, 2);
    let seed = [("kv", kv(1, 0)), ("kv", kv(2, 0))];
    s.reset(&seed).unwrap();
    row_lock_cycle(&mut s);
    // PostgreSQL failed the closer; picking session 0 asks for a repeat with it pinned.
    let pin = s.pick_victim(0).unwrap_err();
    assert_eq!((pin.victim, pin.others.clone()), (4, vec![5]), "statements 4 and 5 of the run waited");
    s.reset(&seed).unwrap();
    s.pin_victims(vec![pin]).unwrap();
    row_lock_cycle(&mut s);
    assert_eq!(s.pick_victim(0), Ok(Outcome::Err(ErrorCode::DEADLOCK_DETECTED)));
    assert_eq!(s.take_ready(1), Some(Outcome::Rows(vec![kv(1, 1)])), "the closer got the victim's row");
    assert_eq!(done(&mut s, 1, Sql::Commit), Outcome::Ok);
    assert_eq!(done(&mut s, 0, Sql::Rollback), Outcome::Ok);
    assert_eq!(s.committed_rows("kv").unwrap(), vec![kv(1, 1), kv(2, 1)]);
    // A fresh run forgets the pin.
    s.reset(&seed).unwrap();
    row_lock_cycle(&mut s);
    assert!(s.pick_victim(0).is_err());
}

#[test]
fn injected_error_aborts_the_transaction() {
    let t = test_db();
    let mut s = open(&t, 1);
    done(&mut s, 0, Sql::Begin);
    done(&mut s, 0, job(1, "a", "running"));
    assert_eq!(s.inject_error(0, &job(2, "b", "running")).unwrap(), Outcome::Err(ErrorCode::IO_ERROR));
    assert_eq!(
        done(&mut s, 0, Sql::Select { table: "jobs", filter: vec![], lock: None }),
        Outcome::Err(ErrorCode::IN_FAILED_SQL_TRANSACTION)
    );
    assert_eq!(done(&mut s, 0, Sql::Commit), Outcome::Ok);
    assert_eq!(s.committed_rows("jobs").unwrap(), Vec::<Vec<Value>>::new());
    // A failed COMMIT leaves no transaction behind.
    done(&mut s, 0, Sql::Begin);
    done(&mut s, 0, job(3, "c", "running"));
    assert_eq!(s.inject_error(0, &Sql::Commit).unwrap(), Outcome::Err(ErrorCode::IO_ERROR));
    assert_eq!(done(&mut s, 0, job(4, "d", "running")).rows().len(), 1);
    let ids: Vec<Value> = s.committed_rows("jobs").unwrap().into_iter().map(|r| r[0]).collect();
    assert_eq!(ids, vec![Value::Int(4)]);
}

#[test]
fn disconnect_releases_session_advisory_locks() {
    let t = test_db();
    let mut s = open(&t, 2);
    let old = s.pids()[0];
    done(&mut s, 0, lock(1));
    done(&mut s, 0, Sql::Begin);
    done(&mut s, 0, Sql::Insert { table: "kv", row: kv(1, 1), on_conflict: OnConflict::Error });
    blocks(&mut s, 1, lock(1));
    // The session is recycled (same backend), but nothing of the dead client's survives.
    s.disconnect(0).unwrap();
    assert_eq!(s.take_ready(1), Some(Outcome::Ok));
    assert_eq!(count(&mut s, &format!("{ADVISORY} AND pid = {old}")), 0);
    assert_eq!(s.committed_rows("kv").unwrap(), Vec::<Vec<Value>>::new(), "the open transaction rolled back");
    s.disconnect(1).unwrap();
    assert_eq!(count(&mut s, ADVISORY), 0);
    // The recycled sessions work.
    assert_eq!(done(&mut s, 0, lock(1)), Outcome::Ok);
    assert_eq!(done(&mut s, 1, Sql::AdvisoryTryLock { key: 1, scope: LockScope::Session }), Outcome::Bool(false));
}

#[test]
fn disconnect_ends_a_waiting_statement() {
    let t = test_db();
    let mut s = open(&t, 2);
    done(&mut s, 0, lock(1));
    blocks(&mut s, 1, lock(1));
    s.disconnect(1).unwrap();
    assert!(!s.is_blocked(1));
    assert_eq!(s.take_ready(1), None);
    // The recycled session holds nothing and waits for the lock like any other session.
    blocks(&mut s, 1, lock(1));
    s.disconnect(0).unwrap();
    assert_eq!(s.take_ready(1), Some(Outcome::Ok));
}

#[test]
fn cancel_wait_fails_the_waiting_statement() {
    let t = test_db();
    let mut s = open(&t, 2);
    done(&mut s, 0, lock(3));
    done(&mut s, 1, Sql::Begin);
    blocks(&mut s, 1, Sql::AdvisoryLock { key: 3, scope: LockScope::Xact });
    assert!(s.is_blocked(1));
    assert_eq!(s.cancel_wait(1).unwrap(), Outcome::Err(ErrorCode::QUERY_CANCELED));
    assert!(!s.is_blocked(1));
    assert_eq!(done(&mut s, 1, bump(1)), Outcome::Err(ErrorCode::IN_FAILED_SQL_TRANSACTION));
}

#[test]
fn upserts_and_returning_rows() {
    let t = test_db();
    let mut s = open(&t, 1);
    s.reset(&[("kv", kv(2, 0)), ("kv", kv(1, 0))]).unwrap();
    let up = |k, v| Sql::Insert {
        table: "kv",
        row: kv(k, v),
        on_conflict: OnConflict::DoUpdate { target: vec!["k"], set: vec![("v", Expr::Add("v", 5))] },
    };
    assert_eq!(done(&mut s, 0, up(1, 9)), Outcome::Rows(vec![kv(1, 5)]));
    assert_eq!(done(&mut s, 0, up(3, 9)), Outcome::Rows(vec![kv(3, 9)]));
    let nothing = Sql::Insert { table: "kv", row: kv(3, 0), on_conflict: OnConflict::DoNothing { target: vec!["k"] } };
    assert_eq!(done(&mut s, 0, nothing), Outcome::Rows(vec![]));
    let all = Sql::Update { table: "kv", filter: vec![], set: vec![("v", Expr::Value(Value::Int(7)))] };
    assert_eq!(done(&mut s, 0, all), Outcome::Rows(vec![kv(1, 7), kv(2, 7), kv(3, 7)]));
    let del = Sql::Delete { table: "kv", filter: vec![("v", Value::Int(7))] };
    assert_eq!(done(&mut s, 0, del).rows().len(), 3);
    // ON CONFLICT on the partial index repeats its predicate.
    done(&mut s, 0, job(1, "a", "running"));
    let again = Sql::Insert {
        table: "jobs",
        row: vec![Value::Int(2), Value::Str("a"), Value::Str("running"), Value::Null],
        on_conflict: OnConflict::DoUpdate { target: vec!["tag"], set: vec![("n", Expr::Add("n", 1))] },
    };
    assert_eq!(
        done(&mut s, 0, again),
        Outcome::Rows(vec![vec![Value::Int(1), Value::Str("a"), Value::Str("running"), Value::Int(1)]])
    );
    done(&mut s, 0, Sql::SetLockTimeout(50));
    assert_eq!(s.control_query("SELECT 1").unwrap(), vec![Some("1".to_string())]);
}

#[test]
fn reset_leaves_no_rows_locks_or_connections() {
    let t = test_db();
    let mut s = open(&t, 3);
    done(&mut s, 0, job(1, "a", "running"));
    done(&mut s, 0, lock(1));
    done(&mut s, 1, Sql::Begin);
    done(&mut s, 1, Sql::AdvisoryLock { key: 2, scope: LockScope::Xact });
    done(&mut s, 1, job(2, "b", "running"));
    blocks(&mut s, 2, job(3, "b", "running"));
    let before = s.pids();
    let start = Instant::now();
    s.reset(&[("kv", kv(1, 1))]).unwrap();
    eprintln!("reset with a blocked statement: {:?}", start.elapsed());
    assert!(s.pids().iter().all(|p| !before.contains(p)));
    assert_eq!(s.committed_rows("jobs").unwrap(), Vec::<Vec<Value>>::new());
    assert_eq!(s.committed_rows("kv").unwrap(), vec![kv(1, 1)]);
    assert_eq!(count(&mut s, ADVISORY), 0);
    let conns = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND backend_type = 'client backend'";
    assert_eq!(count(&mut s, conns), 4, "three sessions and the control connection");
    // Everything works after the reset.
    assert_eq!(done(&mut s, 2, lock(5)), Outcome::Ok);
    drop(s);
}

#[test]
fn timings() {
    let t = test_db();
    let mut s = open(&t, 2);
    let n = 200;
    let start = Instant::now();
    for _ in 0..n {
        s.raw_round_trip(0, "SELECT 1").unwrap();
    }
    let raw = start.elapsed() / n;
    let start = Instant::now();
    for _ in 0..n {
        done(&mut s, 0, Sql::AdvisoryTryLock { key: 1, scope: LockScope::Xact });
    }
    let step = start.elapsed() / n;
    done(&mut s, 1, lock(9));
    blocks(&mut s, 0, lock(9));
    let start = Instant::now();
    for _ in 0..n {
        done(&mut s, 1, Sql::AdvisoryTryLock { key: 1, scope: LockScope::Xact });
    }
    let step_with_waiter = start.elapsed() / n;
    let start = Instant::now();
    done(&mut s, 1, Sql::AdvisoryUnlockAll);
    assert_eq!(s.take_ready(0), Some(Outcome::Ok));
    let wake = start.elapsed();
    let start = Instant::now();
    done(&mut s, 1, Sql::Begin);
    blocks(&mut s, 1, lock(9));
    let block = start.elapsed();
    let start = Instant::now();
    let resets = 20;
    for _ in 0..resets {
        s.reset(&[("kv", kv(1, 1)), ("jobs", vec![Value::Int(1), Value::Str("x"), Value::Str("y"), Value::Int(0)])])
            .unwrap();
    }
    let reset = start.elapsed() / resets;
    eprintln!(
        "SELECT 1 round trip {raw:?}; step {step:?}; step while another waits {step_with_waiter:?}; \
         step that wakes a waiter {wake:?}; step that blocks {block:?}; reset {reset:?}"
    );
}
