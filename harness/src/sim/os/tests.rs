//! The operating system's rules: processes, spawns, files, flock, crashes and renaming.

use super::*;

const LOCK: &str = "spawn.lock";

fn os(actors: usize) -> Os {
    Os::new(actors)
}

fn apply(os: &mut Os, actor: ActorId, op: OsOp) -> Applied {
    os.apply(actor, &op, &mut Footprint::default())
}

fn done(os: &mut Os, actor: ActorId, op: OsOp) -> Outcome {
    match apply(os, actor, op) {
        Applied::Done(o) => o,
        Applied::Blocked => panic!("actor {actor} blocked"),
    }
}

fn take(os: &mut Os, actor: ActorId) -> Option<Outcome> {
    os.take_ready(actor, &mut Footprint::default())
}

fn crash(os: &mut Os, actor: ActorId) -> Vec<ActorId> {
    let dead = os.process_mates(actor);
    os.on_crash(&dead, &mut Footprint::default());
    dead
}

/// Hooks 0 and 1 in processes of their own, their daemons 2 and 3 not spawned yet.
fn hooks_before_spawning() -> crate::sim::World {
    let mut world = crate::sim::World::new(crate::sim::Schema::default(), 4);
    world.os.number_by_actors();
    world.os.start_process(&[0]);
    world.os.start_process(&[1]);
    world.os.add_dormant(2);
    world.os.add_dormant(3);
    world
}

/// Hooks 0 and 1 each spawn their daemon (2 and 3), `first` first; the daemon of `first`
/// takes the lock and names itself in the PID file.
fn spawned_in_turn(first: ActorId) -> crate::sim::World {
    use crate::op::Op;
    let mut world = hooks_before_spawning();
    for hook in [first, 1 - first] {
        world.apply(hook, &Op::os("spawn", OsOp::SpawnProcess { actor: hook + 2 }));
    }
    let daemon = first + 2;
    world.apply(daemon, &Op::os("lock", OsOp::Flock { path: LOCK, nonblocking: true }));
    let pid = world.os.pid_of(daemon).expect("spawned");
    world.apply(daemon, &Op::os("name", OsOp::WriteFile { path: "pid", content: Value::Int(pid.into()) }));
    world
}

#[test]
fn a_renamed_os_equals_the_os_built_with_the_renamed_actors() {
    use crate::symmetry::{Renaming, Symmetry};
    let units = Symmetry::units(&[vec![0, 2], vec![1, 3]], Vec::new()).renumbering();
    let mut world = spawned_in_turn(1);
    assert_eq!(world.os.pid_of(3), Some(102));
    let numbered = world.rename(Renaming::new(vec![1, 0, 3, 2], &[], &units));
    // Hook 1's daemon, spawned first as pid 102, is now hook 0's daemon, still pid 102;
    // the hooks' own processes swap pids with them.
    assert_eq!(world, spawned_in_turn(0));
    assert_eq!((numbered.pid(100), numbered.pid(101), numbered.pid(102)), (101, 100, 102));
    assert_eq!(world.os.file("pid"), Some(Value::Int(102)));
    assert_eq!(world.os.flock_holder(LOCK), Some(102));
}

#[test]
fn an_os_in_use_is_renamed_only_when_the_model_numbers_processes_by_actors() {
    let mut os = os(2);
    os.start_process(&[0]);
    assert!(os.renamable().is_err());
    os.number_by_actors();
    assert!(os.renamable().is_ok());
}

fn flock(nonblocking: bool) -> OsOp {
    OsOp::Flock { path: LOCK, nonblocking }
}

#[test]
fn spawn_process_wakes_the_dormant_actor_with_its_pid() {
    let mut os = os(2);
    let parent = os.start_process(&[0]);
    os.add_dormant(1);
    assert_eq!(apply(&mut os, 1, OsOp::AwaitSpawn), Applied::Blocked);
    assert!(os.is_dormant(1) && !os.is_ready(1));
    let Outcome::Pid(child) = done(&mut os, 0, OsOp::SpawnProcess { actor: 1 }) else { panic!() };
    assert_ne!(child, parent);
    assert!(!os.is_dormant(1) && os.is_ready(1));
    assert_eq!(take(&mut os, 1), Some(Outcome::Pid(child)));
    assert!(os.is_alive(child) && os.is_alive(parent));
    assert_eq!(os.pid_of(1), Some(child));
}

#[test]
fn spawn_before_await_returns_at_once() {
    let mut os = os(2);
    os.start_process(&[0]);
    os.add_dormant(1);
    let Outcome::Pid(child) = done(&mut os, 0, OsOp::SpawnProcess { actor: 1 }) else { panic!() };
    assert_eq!(done(&mut os, 1, OsOp::AwaitSpawn), Outcome::Pid(child));
}

#[test]
fn spawn_task_joins_the_callers_process_and_dies_with_it() {
    let mut os = os(2);
    let server = os.start_process(&[0]);
    os.add_dormant(1);
    apply(&mut os, 1, OsOp::AwaitSpawn);
    assert_eq!(done(&mut os, 0, OsOp::SpawnTask { actor: 1 }), Outcome::Ok);
    assert_eq!(take(&mut os, 1), Some(Outcome::Pid(server)));
    assert_eq!(crash(&mut os, 0), vec![0, 1]);
    assert!(!os.is_alive(server));
}

#[test]
#[should_panic(expected = "not dormant")]
fn spawning_an_actor_twice_is_a_model_bug() {
    let mut os = os(2);
    os.start_process(&[0]);
    os.add_dormant(1);
    done(&mut os, 0, OsOp::SpawnProcess { actor: 1 });
    done(&mut os, 0, OsOp::SpawnProcess { actor: 1 });
}

#[test]
fn files_read_write_remove() {
    let mut os = os(1);
    os.start_process(&[0]);
    let read = OsOp::ReadFile { path: "observer.pid" };
    assert_eq!(done(&mut os, 0, read.clone()), Outcome::Err(ErrorCode::ENOENT));
    done(&mut os, 0, OsOp::WriteFile { path: "observer.pid", content: Value::Int(7) });
    done(&mut os, 0, OsOp::WriteFile { path: "observer.pid", content: Value::Int(8) });
    assert_eq!(done(&mut os, 0, read.clone()), Outcome::Value(Value::Int(8)));
    assert_eq!(done(&mut os, 0, OsOp::RemoveFile { path: "observer.pid" }), Outcome::Ok);
    assert_eq!(done(&mut os, 0, OsOp::RemoveFile { path: "observer.pid" }), Outcome::Err(ErrorCode::ENOENT));
    assert_eq!(done(&mut os, 0, read), Outcome::Err(ErrorCode::ENOENT));
}

#[test]
fn is_alive_follows_exit_and_crash() {
    let mut os = os(2);
    let a = os.start_process(&[0]);
    let b = os.start_process(&[1]);
    assert_eq!(done(&mut os, 0, OsOp::IsAlive { pid: b }), Outcome::Bool(true));
    assert_eq!(done(&mut os, 0, OsOp::IsAlive { pid: 4242 }), Outcome::Bool(false));
    assert_eq!(done(&mut os, 1, OsOp::Exit), Outcome::Ok);
    assert_eq!(done(&mut os, 0, OsOp::IsAlive { pid: b }), Outcome::Bool(false));
    crash(&mut os, 0);
    assert!(!os.is_alive(a));
}

#[test]
fn nonblocking_flock_fails_while_held_elsewhere() {
    let mut os = os(2);
    let a = os.start_process(&[0]);
    os.start_process(&[1]);
    assert_eq!(done(&mut os, 0, flock(true)), Outcome::Ok);
    assert_eq!(done(&mut os, 0, flock(true)), Outcome::Ok, "re-flock by the holder is a no-op");
    assert_eq!(done(&mut os, 1, flock(true)), Outcome::Err(ErrorCode::EWOULDBLOCK));
    assert_eq!(os.flock_holder(LOCK), Some(a));
}

#[test]
fn blocking_flock_is_granted_fifo_on_unlock() {
    let mut os = os(3);
    os.start_process(&[0]);
    let b = os.start_process(&[1]);
    let c = os.start_process(&[2]);
    done(&mut os, 0, flock(false));
    assert_eq!(apply(&mut os, 2, flock(false)), Applied::Blocked);
    assert_eq!(apply(&mut os, 1, flock(false)), Applied::Blocked);
    assert!(!os.is_ready(1) && !os.is_ready(2) && !os.is_dormant(1));
    done(&mut os, 0, OsOp::Funlock { path: LOCK });
    assert_eq!(os.flock_holder(LOCK), Some(c));
    assert!(os.is_ready(2) && !os.is_ready(1));
    assert_eq!(take(&mut os, 2), Some(Outcome::Ok));
    assert_eq!(take(&mut os, 1), None);
    done(&mut os, 2, OsOp::Funlock { path: LOCK });
    assert_eq!(os.flock_holder(LOCK), Some(b));
    assert_eq!(take(&mut os, 1), Some(Outcome::Ok));
    done(&mut os, 1, OsOp::Funlock { path: LOCK });
    assert_eq!(os.flock_holder(LOCK), None);
}

#[test]
fn two_tasks_of_one_process_exclude_each_other() {
    let mut os = os(2);
    let server = os.start_process(&[0]);
    os.add_dormant(1);
    apply(&mut os, 1, OsOp::AwaitSpawn);
    done(&mut os, 0, OsOp::SpawnTask { actor: 1 });
    take(&mut os, 1);
    assert_eq!(done(&mut os, 0, flock(false)), Outcome::Ok);
    assert_eq!(done(&mut os, 1, flock(true)), Outcome::Err(ErrorCode::EWOULDBLOCK));
    assert_eq!(apply(&mut os, 1, flock(false)), Applied::Blocked, "each task opened its own description");
    done(&mut os, 0, OsOp::Funlock { path: LOCK });
    assert_eq!(take(&mut os, 1), Some(Outcome::Ok));
    assert_eq!(os.flock_holder(LOCK), Some(server));
}

#[test]
fn funlock_by_a_non_holder_changes_nothing() {
    let mut os = os(2);
    let a = os.start_process(&[0]);
    os.start_process(&[1]);
    done(&mut os, 0, flock(false));
    assert_eq!(done(&mut os, 1, OsOp::Funlock { path: LOCK }), Outcome::Ok);
    assert_eq!(os.flock_holder(LOCK), Some(a));
}

#[test]
fn exit_releases_flocks_to_the_next_waiter() {
    let mut os = os(2);
    os.start_process(&[0]);
    let b = os.start_process(&[1]);
    done(&mut os, 0, flock(false));
    apply(&mut os, 1, flock(false));
    done(&mut os, 0, OsOp::Exit);
    assert_eq!(os.flock_holder(LOCK), Some(b));
    assert_eq!(take(&mut os, 1), Some(Outcome::Ok));
}

/// Three processes: the first holds the lock, the second and third wait for it, in that order.
/// Returns the first's and the third's pids.
fn holder_and_two_waiters() -> (Os, Pid, Pid) {
    let mut os = os(3);
    let a = os.start_process(&[0]);
    os.start_process(&[1]);
    let c = os.start_process(&[2]);
    done(&mut os, 0, flock(false));
    apply(&mut os, 1, flock(false));
    apply(&mut os, 2, flock(false));
    (os, a, c)
}

#[test]
fn crash_releases_flocks_and_drops_the_dead_waits() {
    let (mut os, a, c) = holder_and_two_waiters();
    // The waiter dies first: it leaves the queue.
    assert_eq!(crash(&mut os, 1), vec![1]);
    assert_eq!(os.flock_holder(LOCK), Some(a));
    // The holder dies: the lock passes over the dead waiter to the live one.
    assert_eq!(crash(&mut os, 0), vec![0]);
    assert_eq!(os.flock_holder(LOCK), Some(c));
    assert_eq!(take(&mut os, 2), Some(Outcome::Ok));
    assert!(!os.is_alive(a));
}

#[test]
fn cancel_wait_dequeues_a_blocked_flock() {
    let (mut os, a, c) = holder_and_two_waiters();
    assert_eq!(os.cancel_wait(1, &mut Footprint::default()), Outcome::Err(ErrorCode::ETIMEDOUT));
    assert_eq!(os.flock_holder(LOCK), Some(a));
    done(&mut os, 0, OsOp::Funlock { path: LOCK });
    assert_eq!(os.flock_holder(LOCK), Some(c));
}

#[test]
fn a_dormant_actor_that_crashes_before_its_spawn_starts_a_dead_process() {
    let mut os = os(2);
    os.start_process(&[0]);
    os.add_dormant(1);
    apply(&mut os, 1, OsOp::AwaitSpawn);
    assert_eq!(crash(&mut os, 1), vec![1]);
    assert!(!os.is_dormant(1));
    let Outcome::Pid(child) = done(&mut os, 0, OsOp::SpawnProcess { actor: 1 }) else { panic!() };
    assert!(!os.is_alive(child));
}

#[test]
fn footprints_name_the_resources() {
    let mut os = os(2);
    os.start_process(&[0]);
    os.add_dormant(1);
    let mut fp = Footprint::default();
    os.apply(0, &OsOp::ReadFile { path: "a" }, &mut fp);
    let mut write_a = Footprint::default();
    write_a.write(Resource::File("a"));
    assert!(fp.conflicts(&write_a));
    let mut spawn = Footprint::default();
    os.apply(0, &OsOp::SpawnProcess { actor: 1 }, &mut spawn);
    let mut alive = Footprint::default();
    os.apply(0, &OsOp::IsAlive { pid: 101 }, &mut alive);
    assert!(spawn.conflicts(&alive));
    assert!(!fp.conflicts(&alive));
}

#[test]
fn through_the_world_a_spawn_wakes_and_a_crash_hands_over_the_flock() {
    use crate::op::Op;
    use crate::sim::{Schema, World};
    let mut world = World::new(Schema::default(), 3);
    world.os.start_process(&[0]);
    world.os.start_process(&[1]);
    world.os.add_dormant(2);
    let flock = Op::os("lock", flock(false));
    assert_eq!(world.apply(2, &Op::os("await_spawn", OsOp::AwaitSpawn)), Applied::Blocked);
    assert!(world.is_dormant(2));
    assert_eq!(world.apply(0, &flock), Applied::Done(Outcome::Ok));
    assert_eq!(world.apply(1, &flock), Applied::Blocked);
    assert!(world.is_waiting(1) && !world.is_ready(1) && !world.is_dormant(1));
    let Applied::Done(Outcome::Pid(child)) = world.apply(0, &Op::os("spawn", OsOp::SpawnProcess { actor: 2 })) else {
        panic!()
    };
    assert_eq!(world.take_ready(2), Some(Outcome::Pid(child)));
    assert_eq!(world.crash(0), vec![0]);
    assert!(world.is_ready(1));
    assert_eq!(world.take_ready(1), Some(Outcome::Ok));
    assert!(world.os.is_alive(child));
}

#[test]
fn equal_histories_give_equal_states() {
    let run = || {
        let mut os = os(2);
        os.start_process(&[0]);
        os.add_dormant(1);
        done(&mut os, 0, OsOp::WriteFile { path: "b", content: Value::Int(1) });
        done(&mut os, 0, OsOp::WriteFile { path: "a", content: Value::Int(2) });
        done(&mut os, 0, OsOp::SpawnProcess { actor: 1 });
        os
    };
    assert_eq!(run(), run());
}

/// The OS's ops and crashes name every other actor whose signature they change.
fn assert_marks(os: &mut Os, mover: Option<ActorId>, change: impl FnOnce(&mut Os, &mut Footprint)) {
    let actors = os.waits.len();
    crate::sim::subsystem::assert_changed_signatures_named(os, actors, mover, change);
}

#[test]
fn ops_and_crashes_name_every_actor_whose_signature_they_change() {
    let mut os = os(5);
    os.number_by_actors();
    for a in 0..4 {
        os.start_process(&[a]);
    }
    os.add_dormant(4);
    assert_marks(&mut os, Some(0), |os, fp| assert_eq!(os.apply(0, &flock(false), fp), Applied::Done(Outcome::Ok)));
    for a in 1..4 {
        assert_marks(&mut os, Some(a), |os, fp| assert_eq!(os.apply(a, &flock(false), fp), Applied::Blocked));
    }
    // A waiter in the middle of the queue dies: the one behind it moves up.
    assert_marks(&mut os, None, |os, fp| os.on_crash(&[1], fp));
    // The holder lets go: the next waiter gets the lock, the last moves up.
    assert_marks(&mut os, Some(0), |os, fp| {
        os.apply(0, &OsOp::Funlock { path: LOCK }, fp);
    });
    assert_marks(&mut os, Some(2), |os, fp| assert_eq!(os.take_ready(2, fp), Some(Outcome::Ok)));
    // A spawn wakes its child; an exit frees the lock for the last waiter.
    assert_marks(&mut os, Some(0), |os, fp| {
        os.apply(0, &OsOp::SpawnProcess { actor: 4 }, fp);
    });
    assert_marks(&mut os, Some(2), |os, fp| {
        os.apply(2, &OsOp::Exit, fp);
    });
    assert_eq!(os.waits[3].as_ref().and_then(|w| w.outcome.clone()), Some(Outcome::Ok), "the last waiter got the lock");
}

/// A member's signature lists its flocks by their renamed paths, so it is the same whichever
/// member it is, even where its own lock file sorts on the other side of a shared one.
#[test]
fn a_signature_does_not_depend_on_which_member_holds_the_locks() {
    use crate::explore::state::ByteSink;
    use crate::symmetry::{Renaming, Symmetry};
    let own = [Value::Str("a.lock"), Value::Str("z.lock")];
    let symmetry = Symmetry::group(0..2, vec![vec![own[0]], vec![own[1]]]);
    let holding = |actor: ActorId| {
        let mut os = os(2);
        os.number_by_actors();
        os.start_process(&[0]);
        os.start_process(&[1]);
        let Value::Str(path) = own[actor] else { unreachable!() };
        done(&mut os, actor, OsOp::Flock { path, nonblocking: false });
        done(&mut os, actor, OsOp::Flock { path: "m.lock", nonblocking: false });
        os
    };
    let signature = |os: &Os, actor: ActorId| {
        let mut bytes = Vec::new();
        let abstracting = Renaming::abstracting(actor, &[0, 1], &[], &symmetry);
        os.signature(actor, &abstracting, &mut ByteSink(&mut bytes));
        bytes
    };
    assert_eq!(signature(&holding(0), 0), signature(&holding(1), 1));
}

#[test]
fn fixed_by_answers_as_renaming_a_copy_does() {
    use crate::symmetry::{Renaming, Symmetry};
    let units = Symmetry::units(&[vec![0, 2], vec![1, 3]], Vec::new()).renumbering();
    let swap = || Renaming::new(vec![1, 0, 3, 2], &[], &units);
    let by_copy = |world: &crate::sim::World| {
        let mut renamed = world.clone();
        renamed.rename(swap());
        renamed == *world
    };
    let by_check = |world: &crate::sim::World| world.os.fixed_by(&world.numbered(swap()));
    // Told apart by who holds the lock and whose pid the file names.
    let spawned = spawned_in_turn(0);
    assert!(!by_copy(&spawned));
    assert_eq!(by_check(&spawned), by_copy(&spawned));
    // Two hooks that have done nothing yet mirror each other.
    let idle = hooks_before_spawning();
    assert!(by_copy(&idle));
    assert_eq!(by_check(&idle), by_copy(&idle));
    // Both daemons spawned, neither locked: mirrors again, pids renumbered to follow.
    let mut both = idle.clone();
    for hook in [0, 1] {
        both.apply(hook, &crate::op::Op::os("spawn", OsOp::SpawnProcess { actor: hook + 2 }));
    }
    assert!(by_copy(&both));
    assert_eq!(by_check(&both), by_copy(&both));
    // Spawned the other way round, the pids are out of the hooks' order: not a mirror.
    let mut crossed = idle.clone();
    for hook in [1, 0] {
        crossed.apply(hook, &crate::op::Op::os("spawn", OsOp::SpawnProcess { actor: hook + 2 }));
    }
    assert!(!by_copy(&crossed));
    assert_eq!(by_check(&crossed), by_copy(&crossed));
}

#[test]
fn the_packed_fingerprint_tells_apart_what_each_field_holds() {
    let fingerprint = |os: &Os| crate::explore::state::fingerprint_of(os);
    let base = || {
        let mut os = os(3);
        os.start_process(&[0]);
        os.add_dormant(2);
        os
    };
    let mut variants = vec![base()];
    // Another process, another actor in one, a dormant actor fewer, a dead process, a stillborn
    // actor, a waiting actor, a file, a held flock.
    let mut more = base();
    more.start_process(&[1]);
    variants.push(more);
    let mut mates = base();
    mates.start_process(&[1]);
    mates.processes[1].actors.push(2);
    variants.push(mates);
    let mut awake = base();
    awake.dormant[2] = false;
    variants.push(awake);
    let mut dead = base();
    crash(&mut dead, 0);
    variants.push(dead);
    let mut stillborn = base();
    stillborn.stillborn[2] = true;
    variants.push(stillborn);
    let mut spawning = base();
    apply(&mut spawning, 0, OsOp::SpawnProcess { actor: 2 });
    variants.push(spawning);
    let mut written = base();
    done(&mut written, 0, OsOp::WriteFile { path: "pid", content: Value::Int(100) });
    variants.push(written);
    let mut locked = base();
    done(&mut locked, 0, OsOp::Flock { path: LOCK, nonblocking: true });
    variants.push(locked);
    for (i, a) in variants.iter().enumerate() {
        for (j, b) in variants.iter().enumerate().skip(i + 1) {
            assert_ne!(a, b, "variants {i} and {j} are the same state");
            assert_ne!(fingerprint(a), fingerprint(b), "variants {i} and {j} share a fingerprint");
        }
    }
}
