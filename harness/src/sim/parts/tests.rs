//! Each part's rules, and parts in a world beside the database.

use super::*;
use crate::op::{ActorId, Applied, ErrorCode, Footprint, Op, Outcome, Sql, Value};
use crate::sim::subsystem::Subsystem;
use crate::sim::{Schema, TableDef, World};

fn fp() -> Footprint {
    Footprint::default()
}

#[test]
fn mutex_hands_over_fifo_and_is_not_reentrant() {
    let mut m = Mutex::new();
    assert_eq!(m.apply(0, &MutexOp::Lock(7), &mut fp()), Applied::Done(Outcome::Ok));
    assert_eq!(m.apply(1, &MutexOp::Lock(7), &mut fp()), Applied::Blocked);
    assert_eq!(m.apply(2, &MutexOp::Lock(7), &mut fp()), Applied::Blocked);
    assert_eq!(m.apply(0, &MutexOp::TryLock(7), &mut fp()), Applied::Done(Outcome::Bool(false)));
    assert_eq!(m.apply(1, &MutexOp::Unlock(7), &mut fp()), Applied::Done(Outcome::Err(EPERM)));
    assert_eq!(m.apply(0, &MutexOp::Unlock(7), &mut fp()), Applied::Done(Outcome::Ok));
    assert!(m.is_ready(1) && !m.is_ready(2));
    assert_eq!(m.holder(7), Some(1));
    assert_eq!(m.take_ready(1, &mut fp()), Some(Outcome::Ok));
    // Re-locking a held lock waits on itself: the explorer reports the deadlock.
    assert_eq!(m.apply(1, &MutexOp::Lock(7), &mut fp()), Applied::Blocked);
    assert!(!m.is_ready(1));
}

#[test]
fn mutex_crash_releases_to_the_next_waiter_and_timeout_dequeues() {
    let mut m = Mutex::new();
    m.apply(0, &MutexOp::Lock(1), &mut fp());
    m.apply(1, &MutexOp::Lock(1), &mut fp());
    m.apply(2, &MutexOp::Lock(1), &mut fp());
    assert_eq!(m.cancel_wait(1, &mut fp()), Outcome::Err(ErrorCode::ETIMEDOUT));
    m.on_crash(&[0], &mut fp());
    assert_eq!(m.holder(1), Some(2));
    assert!(m.is_ready(2) && !m.is_ready(1));
}

#[test]
fn atomics_return_the_previous_value() {
    let mut a = AtomicCells::new();
    let run = |a: &mut AtomicCells, op| match a.apply(0, &op, &mut fp()) {
        Applied::Done(o) => o,
        Applied::Blocked => panic!("atomics never wait"),
    };
    assert_eq!(run(&mut a, AtomicOp::FetchAdd(3, 5)), Outcome::Value(Value::Int(0)));
    assert_eq!(run(&mut a, AtomicOp::Load(3)), Outcome::Value(Value::Int(5)));
    assert_eq!(run(&mut a, AtomicOp::CompareExchange { key: 3, current: 4, new: 9 }), Outcome::Bool(false));
    assert_eq!(run(&mut a, AtomicOp::CompareExchange { key: 3, current: 5, new: 9 }), Outcome::Bool(true));
    assert_eq!(run(&mut a, AtomicOp::Store(3, 1)), Outcome::Value(Value::Int(9)));
    assert_eq!(a.get(3), 1);
}

#[test]
fn cache_entries_expire_after_ttl_ticks_and_die_with_the_process() {
    let mut c = TtlCache::new(2, vec![0, 1]);
    let get = |c: &mut TtlCache| match c.apply(0, &CacheOp::Get(1), &mut fp()) {
        Applied::Done(Outcome::Value(v)) => v,
        other => panic!("{other:?}"),
    };
    c.apply(0, &CacheOp::Put(1, Value::Int(42)), &mut fp());
    assert_eq!(get(&mut c), Value::Int(42));
    c.apply(2, &CacheOp::Tick, &mut fp());
    assert_eq!(get(&mut c), Value::Int(42));
    c.apply(2, &CacheOp::Tick, &mut fp());
    assert_eq!(get(&mut c), Value::Null);
    c.apply(0, &CacheOp::Put(1, Value::Int(7)), &mut fp());
    c.on_crash(&[2], &mut fp());
    assert_eq!(c.peek(1), Some(Value::Int(7)), "a crash elsewhere leaves this process's cache");
    c.on_crash(&[1], &mut fp());
    assert_eq!(c.peek(1), None);
}

#[test]
fn pool_waits_beyond_size_plus_overflow_and_times_out_when_the_explorer_says() {
    let mut p = ConnectionPool::new(1, 1, true);
    assert_eq!(p.apply(0, &PoolOp::Checkout, &mut fp()), Applied::Done(Outcome::Value(Value::Int(0))));
    assert_eq!(p.apply(1, &PoolOp::Checkout, &mut fp()), Applied::Done(Outcome::Value(Value::Int(1))));
    assert_eq!(p.apply(2, &PoolOp::Checkout, &mut fp()), Applied::Blocked);
    assert_eq!(p.apply(3, &PoolOp::Checkout, &mut fp()), Applied::Blocked);
    // With a checkout timeout the waiter can always move: before a checkin, it times out.
    assert!(p.is_ready(2));
    assert_eq!(p.take_ready(2, &mut fp()), Some(Outcome::Err(POOL_TIMEOUT)));
    assert_eq!(p.apply(1, &PoolOp::Checkin(1), &mut fp()), Applied::Done(Outcome::Ok));
    assert_eq!(p.take_ready(3, &mut fp()), Some(Outcome::Value(Value::Int(1))));
    assert_eq!(p.apply(0, &PoolOp::Checkin(1), &mut fp()), Applied::Done(Outcome::Err(EPERM)));
    assert_eq!(p.in_use(), 2);
}

#[test]
fn a_renamed_pool_equals_the_pool_built_with_the_renamed_holders() {
    use crate::symmetry::{Renaming, Symmetry};
    // Hooks 0 and 1 check out in turn; hook 2 waits.
    let build = |first: ActorId, second: ActorId| {
        let mut world = World::new(Schema::default(), 3);
        let pool = world.add_part(ConnectionPool::new(1, 1, false));
        for actor in [first, second, 2] {
            world.apply(actor, &pool.op("checkout", PoolOp::Checkout));
        }
        world
    };
    let symmetry = Symmetry::group(0..3, Vec::new()).renumbering();
    let swap = Renaming::new(vec![1, 0, 2], &[], &symmetry);
    let mut swapped = build(0, 1);
    let numbered = swapped.rename(swap);
    // Hook 1 (was 0) holds slot 1 (was 0): slots follow their holders, so hook 0 (was 1)
    // holds slot 0, as when hook 0 checked out first.
    assert_eq!(swapped, build(0, 1));
    assert_eq!((numbered.slot(0), numbered.slot(1)), (1, 0));
    // The state built with the renamed holders (hook 1 first), numbered the same way.
    let mut renamed_ids = build(1, 0);
    assert_ne!(renamed_ids, build(0, 1));
    renamed_ids.rename(Renaming::new(vec![0, 1, 2], &[], &symmetry));
    assert_eq!(renamed_ids, swapped);
    // Without the model's word, slots keep their numbers: who holds them is renamed only.
    let mut kept = build(0, 1);
    let applied = kept.rename(Renaming::new(vec![1, 0, 2], &[], &Symmetry::group(0..3, Vec::new())));
    assert_eq!((applied.slot(0), applied.slot(1)), (0, 1));
    assert_eq!(kept, build(1, 0));
}

#[test]
fn pool_without_timeout_waits_until_a_crash_returns_a_connection() {
    let mut p = ConnectionPool::new(1, 0, false);
    p.apply(0, &PoolOp::Checkout, &mut fp());
    assert_eq!(p.apply(1, &PoolOp::Checkout, &mut fp()), Applied::Blocked);
    assert!(!p.is_ready(1));
    p.on_crash(&[0], &mut fp());
    assert_eq!(p.take_ready(1, &mut fp()), Some(Outcome::Value(Value::Int(0))));
}

#[test]
fn a_sleep_ends_only_after_its_ticks() {
    let mut t = Timer::new();
    assert_eq!(t.apply(0, &TimerOp::Sleep(0), &mut fp()), Applied::Done(Outcome::Ok));
    assert_eq!(t.apply(0, &TimerOp::Sleep(2), &mut fp()), Applied::Blocked);
    assert_eq!(t.apply(1, &TimerOp::Sleep(1), &mut fp()), Applied::Blocked);
    assert!(!t.is_ready(0) && !t.is_ready(1));
    assert_eq!(t.apply(2, &TimerOp::Tick, &mut fp()), Applied::Done(Outcome::Ok));
    assert!(!t.is_ready(0) && t.is_ready(1));
    assert_eq!(t.take_ready(1, &mut fp()), Some(Outcome::Ok));
    t.apply(2, &TimerOp::Tick, &mut fp());
    assert_eq!(t.take_ready(0, &mut fp()), Some(Outcome::Ok));
    assert_eq!(t.sleepers(), 0);
    t.apply(0, &TimerOp::Sleep(5), &mut fp());
    t.on_crash(&[0], &mut fp());
    assert_eq!(t.sleepers(), 0);
}

#[test]
fn a_tick_with_nobody_asleep_waits_idle_for_a_sleeper() {
    let mut t = Timer::new();
    assert_eq!(t.apply(2, &TimerOp::Tick, &mut fp()), Applied::Blocked);
    assert!(t.is_idle(2) && !t.is_ready(2));
    assert_eq!(t.apply(0, &TimerOp::Sleep(1), &mut fp()), Applied::Blocked);
    assert!(t.is_ready(2) && !t.is_idle(2) && !t.is_ready(0));
    assert_eq!(t.take_ready(2, &mut fp()), Some(Outcome::Ok));
    assert!(!t.is_idle(2) && t.is_ready(0));
}

#[test]
fn parts_route_through_the_world_and_a_crash_reaches_them() {
    let mut world = World::new(Schema::default(), 2);
    let lock = world.add_part(Mutex::new());
    world.os.start_process(&[0]);
    world.os.start_process(&[1]);
    assert_eq!(world.apply(0, &lock.op("acquire", MutexOp::Lock(5))), Applied::Done(Outcome::Ok));
    assert_eq!(world.apply(1, &lock.op("acquire", MutexOp::Lock(5))), Applied::Blocked);
    assert_eq!(lock.op("acquire", MutexOp::Lock(5)).label(), "acquire(5)");
    assert!(!world.is_ready(1));
    world.crash(0);
    assert!(world.is_ready(1));
    assert_eq!(world.take_ready(1), Some(Outcome::Ok));
    assert_eq!(world.part(lock).holder(5), Some(1));
    assert!(world.describe().iter().any(|l| l == "mutexes: 5 held by #1"), "{:?}", world.describe());
}

#[test]
fn a_commit_whose_reply_is_lost_took_effect() {
    let schema = Schema { tables: vec![TableDef { name: "t", columns: vec!["id"], unique: vec![] }] };
    let mut world = World::new(schema, 2);
    let (c0, c1) = (world.connect(0), world.connect(1));
    let run = |w: &mut World, actor, conn, stmt| match w.apply(actor, &Op::sql("s", conn, stmt)) {
        Applied::Done(o) => o,
        Applied::Blocked => panic!("nothing waits here"),
    };
    run(&mut world, 0, c0, Sql::Begin);
    let insert = Sql::Insert { table: "t", row: vec![Value::Int(1)], on_conflict: crate::op::OnConflict::Error };
    run(&mut world, 0, c0, insert);
    let commit = Op::sql("commit", c0, Sql::Commit);
    let Applied::Done(outcome) = world.apply(0, &commit) else { panic!("commit waits") };
    assert_eq!(outcome, Outcome::Ok);
    let seen = world.lose_reply(0, &commit, outcome);
    assert_eq!(seen, Outcome::Err(ErrorCode::QUERY_CANCELED), "the client saw a timeout");
    let rows = run(&mut world, 1, c1, Sql::Select { table: "t", filter: vec![], lock: None });
    assert_eq!(rows.rows().len(), 1, "yet the row is committed for everyone else");
}

/// The pool's ops and crashes name every other actor whose signature they change.
fn assert_pool_marks(
    p: &mut ConnectionPool,
    mover: Option<ActorId>,
    change: impl FnOnce(&mut ConnectionPool, &mut Footprint),
) {
    crate::sim::subsystem::assert_changed_signatures_named(p, 4, mover, change);
}

#[test]
fn pool_ops_and_crashes_name_every_actor_whose_signature_they_change() {
    let mut p = ConnectionPool::new(1, 0, true);
    let checkout = |a: ActorId| {
        move |p: &mut ConnectionPool, fp: &mut Footprint| {
            p.apply(a, &PoolOp::Checkout, fp);
        }
    };
    assert_pool_marks(&mut p, Some(0), checkout(0));
    for a in 1..4 {
        assert_pool_marks(&mut p, Some(a), checkout(a));
    }
    // A waiter in the middle of the queue dies: the one behind it moves up.
    assert_pool_marks(&mut p, None, |p, fp| p.on_crash(&[1], fp));
    // A waiter's timer fires: the one behind it moves up.
    assert_pool_marks(&mut p, Some(2), |p, fp| assert_eq!(p.take_ready(2, fp), Some(Outcome::Err(POOL_TIMEOUT))));
    assert_pool_marks(&mut p, Some(2), checkout(2));
    // The holder checks in: the oldest waiter gets the slot, the rest move up.
    assert_pool_marks(&mut p, Some(0), |p, fp| {
        p.apply(0, &PoolOp::Checkin(0), fp);
    });
    assert!(p.is_ready(3));
}
