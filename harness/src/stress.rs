//! Stress: a model's actors run freely and concurrently, each on a thread of its own, against
//! a real database, round after round, and the model's invariants are checked after each round.
//!
//! Nothing chooses who moves. Statements run on the server with its real blocking, each actor
//! on its own connections; the model's in-process parts (a mutex, a pool, atomic cells) run
//! inside the world under one lock, and an op that waits there waits on a condition variable
//! until another actor's op grants it. What a round covers is whatever the server's and the
//! operating system's scheduling produce, so a violation found here carries no token: the
//! report says which round found it, and the explorers are how to get its schedule.
//!
//! A round: build the model's initial state, reset the server to it (schema, seed rows, fresh
//! sessions), run every actor to its end, then check every invariant on the final state (the
//! committed rows read from the server, the actors' final states). Rounds repeat until the
//! requested number of operations has run.
//!
//! Limits: no faults are injected (crashes, errors, timeouts and lost replies are the
//! explorers' business); invariants are checked at the end of a round, so a property broken
//! only in the middle of a round and repaired before its end goes unseen; actors that use the
//! operating system or the HTTP boundary (processes, files, servers) cannot run freely and the
//! model is reported as skipped.
//!
//! Stuck rounds: when no actor has completed an op for [`STALL`] while some have not finished,
//! every one of them waits for something that will not come (a deadlock the server cannot
//! see, such as a client waiting for its own second connection, or a cycle through an
//! in-process lock). A watchdog then cancels the running statements (they fail with 57014)
//! and ends the waits in parts; the round counts as deadlocked. A statement cancelled by the
//! sessions' own `statement_timeout` counts the same way.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::model::{Actor, Model, Phase, Status, View, DEADLOCK};
use crate::op::{ActorId, Applied, ConnId, ErrorCode, Op, OpKind, Outcome, Row, Sql, TableId};
use crate::sim::{RealDb, Schema, World};

/// A database that runs statements from many threads at once, each connection used by one
/// thread at a time, with the server's own blocking.
pub trait FreeDb: Send + Sync {
    /// Start over: empty the tables, insert `seed`, and give every one of the `sessions`
    /// connections a fresh state (no transaction, setting or lock survives).
    fn reset(&self, schema: &Schema, sessions: usize, seed: &[(TableId, Row)]);
    /// Run `stmt` on `conn` and wait for its outcome; the calling thread blocks while the
    /// statement waits on the server.
    fn execute(&self, conn: ConnId, stmt: &Sql) -> Outcome;
    /// The rows of `table` as a new snapshot sees them.
    fn committed_rows(&self, table: TableId) -> Vec<Row>;
    /// Cancel every statement that runs (it fails with 57014): the round is stuck.
    fn cancel_all(&self);
    /// The first infrastructure failure (a lost server), after which outcomes mean nothing.
    fn failure(&self) -> Option<String>;
}

/// What to run.
#[derive(Clone, Debug)]
pub struct StressOptions {
    /// Stop after the round in which this many operations (ops of all actors) have run.
    pub ops: u64,
    /// A round that has not ended after this long is stopped and counted as stuck.
    pub round_limit: Duration,
}

/// One invariant that some rounds broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StressViolation {
    pub invariant: String,
    /// How many rounds broke it.
    pub rounds: u64,
    /// The first of them (1-based).
    pub first_round: u64,
    /// What the invariant said in that round.
    pub detail: String,
}

/// What a stress run did and found.
#[derive(Clone, Debug)]
pub struct StressReport {
    pub actors: usize,
    pub rounds: u64,
    pub ops: u64,
    pub elapsed: Duration,
    /// In the model's order of invariants, the deadlock check first.
    pub violations: Vec<StressViolation>,
    /// Rounds in which at least one invariant broke.
    pub violated_rounds: u64,
    /// Why the model could not run freely, if it could not.
    pub skipped: Option<String>,
    /// A failure of the database (a lost server): the run stopped, and is no result.
    pub failure: Option<String>,
}

/// At most this many rounds, whatever the operation count asks.
const MAX_ROUNDS: u64 = 10_000_000;
/// Bound on the ops one actor runs in one round; models' loops are bounded far below this.
const MAX_OPS_PER_ACTOR: u64 = 100_000;
/// How often an actor waiting in an in-process part looks at the round's deadline.
const PART_WAIT_SLICE: Duration = Duration::from_millis(10);
/// A round in which no actor completed an op for this long is stuck. Far above any wait in a
/// queue that moves: each holder keeps a lock for a few statements.
pub const STALL: Duration = Duration::from_millis(500);
/// How often the watchdog looks for progress.
const WATCH_TICK: Duration = Duration::from_millis(20);

/// Run `model` on `db` round after round until `options.ops` operations have run.
pub fn stress<M: Model>(model: &M, db: Arc<dyn FreeDb>, options: &StressOptions) -> StressReport {
    let invariants = model.invariants();
    let start = Instant::now();
    let mut report = StressReport {
        actors: 0,
        rounds: 0,
        ops: 0,
        elapsed: Duration::ZERO,
        violations: Vec::new(),
        violated_rounds: 0,
        skipped: None,
        failure: None,
    };
    // Names in report order: the deadlock check, then the invariants.
    let mut order: Vec<String> = vec![DEADLOCK.to_string()];
    order.extend(invariants.iter().map(|inv| inv.name.to_string()));
    let mut found: Vec<Option<StressViolation>> = vec![None; order.len()];
    while report.ops < options.ops && report.rounds < MAX_ROUNDS {
        report.rounds += 1;
        let round = report.rounds;
        let (mut world, actors) = model.init();
        assert!(!actors.is_empty() && actors.len() <= crate::op::MAX_ACTORS);
        report.actors = actors.len();
        // Attaching resets the server to the model's seed rows, through `Committed`.
        world.attach_real_db(Arc::new(Mutex::new(Committed(db.clone()))));
        if let Some(failure) = db.failure() {
            report.failure = Some(failure);
            break;
        }
        let ran = run_round(world, actors, db.as_ref(), Instant::now() + options.round_limit);
        if let Some(failure) = db.failure() {
            report.failure = Some(failure);
            break;
        }
        if let Some(reason) = ran.unsupported {
            report.skipped = Some(reason);
            break;
        }
        report.ops += ran.ops;
        let mut broken: Vec<(usize, String)> = Vec::new();
        if model.deadlock_is_violation() && !ran.stuck.is_empty() {
            let shown: Vec<&str> = ran.stuck.iter().take(3).map(String::as_str).collect();
            let more = if ran.stuck.len() > 3 { ", …" } else { "" };
            let detail = format!(
                "{} of {} actors stuck in a wait nothing ended (cancelled): {}{more}",
                ran.stuck.len(),
                ran.actors.len(),
                shown.join(", ")
            );
            broken.push((0, detail));
        }
        for phase in [Phase::Step, Phase::Final] {
            let view = View { world: &ran.world, actors: &ran.actors, status: &ran.status, phase };
            for (k, inv) in invariants.iter().enumerate() {
                if (phase == Phase::Final || !inv.final_only) && !broken.iter().any(|(j, _)| *j == k + 1) {
                    if let Err(detail) = inv.check(&view) {
                        broken.push((k + 1, detail));
                    }
                }
            }
        }
        if !broken.is_empty() {
            report.violated_rounds += 1;
        }
        for (k, detail) in broken {
            let entry = found[k].get_or_insert_with(|| StressViolation {
                invariant: order[k].clone(),
                rounds: 0,
                first_round: round,
                detail,
            });
            entry.rounds += 1;
        }
    }
    report.violations = found.into_iter().flatten().collect();
    report.elapsed = start.elapsed();
    report
}

/// The end of one round.
struct Ran<A> {
    world: World,
    actors: Vec<A>,
    status: Vec<Status>,
    ops: u64,
    /// Why the round got stuck, per stuck actor: a statement cancelled by its timeout, or an
    /// actor still waiting at the round's deadline.
    stuck: Vec<String>,
    unsupported: Option<String>,
}

/// The world with its in-process parts, shared by the actors' threads.
struct Shared {
    world: Mutex<World>,
    changed: Condvar,
    /// Set when the round must end early (an unsupported op, the deadline, a stall).
    abort: AtomicBool,
    deadline: Instant,
    /// Ops completed by all actors so far, for the watchdog.
    progress: AtomicU64,
    /// Actors whose thread has not ended.
    running: AtomicUsize,
    /// Every actor starts its first op once all threads are up, so that they race.
    start: Barrier,
}

/// How one actor's thread ended.
struct ActorEnd<A> {
    actor: A,
    status: Status,
    ops: u64,
    stuck: Option<String>,
    unsupported: Option<String>,
}

fn run_round<A: Actor + Send>(world: World, actors: Vec<A>, db: &dyn FreeDb, deadline: Instant) -> Ran<A> {
    let shared = Shared {
        world: Mutex::new(world),
        changed: Condvar::new(),
        abort: AtomicBool::new(false),
        deadline,
        progress: AtomicU64::new(0),
        running: AtomicUsize::new(actors.len()),
        start: Barrier::new(actors.len()),
    };
    let ends: Vec<ActorEnd<A>> = std::thread::scope(|scope| {
        scope.spawn(|| watch(&shared, db));
        let handles: Vec<_> = actors
            .into_iter()
            .enumerate()
            .map(|(i, actor)| {
                let shared = &shared;
                scope.spawn(move || {
                    let end = run_actor(i, actor, shared, db);
                    shared.running.fetch_sub(1, Ordering::SeqCst);
                    end
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    let world = shared.world.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut ran = Ran { world, actors: Vec::new(), status: Vec::new(), ops: 0, stuck: Vec::new(), unsupported: None };
    for end in ends {
        ran.ops += end.ops;
        ran.stuck.extend(end.stuck);
        if ran.unsupported.is_none() {
            ran.unsupported = end.unsupported;
        }
        ran.actors.push(end.actor);
        ran.status.push(end.status);
    }
    ran
}

/// End the waits of a round in which no actor has progressed for [`STALL`].
fn watch(shared: &Shared, db: &dyn FreeDb) {
    let mut last = (shared.progress.load(Ordering::SeqCst), Instant::now());
    while shared.running.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(WATCH_TICK);
        let now = Instant::now();
        let progress = shared.progress.load(Ordering::SeqCst);
        if progress != last.0 {
            last = (progress, now);
        } else if now.duration_since(last.1) >= STALL || now >= shared.deadline {
            shared.abort.store(true, Ordering::SeqCst);
            shared.changed.notify_all();
            db.cancel_all();
            last = (progress, now);
        }
    }
}

fn run_actor<A: Actor>(i: ActorId, mut actor: A, shared: &Shared, db: &dyn FreeDb) -> ActorEnd<A> {
    // An actor that cannot run freely ends the round for everyone.
    let end = |actor: A, status: Status, ops: u64, stuck: Option<String>, unsupported: Option<String>| {
        if unsupported.is_some() {
            shared.abort.store(true, Ordering::SeqCst);
            shared.changed.notify_all();
        }
        ActorEnd { actor, status, ops, stuck, unsupported }
    };
    let mut stuck = None;
    shared.start.wait();
    // `ops`: the ops this actor has completed.
    for ops in 0..MAX_OPS_PER_ACTOR {
        let Some(op) = actor.next_op() else { return end(actor, Status::Finished, ops, stuck, None) };
        let outcome = match &op.kind {
            OpKind::Sql(sql) => {
                let outcome = db.execute(sql.conn, &sql.stmt);
                if outcome == Outcome::Err(ErrorCode::QUERY_CANCELED) && stuck.is_none() {
                    stuck = Some(format!("#{i} in {}", op.name));
                }
                outcome
            }
            OpKind::Os(_) | OpKind::Http(_) => {
                let what = if matches!(op.kind, OpKind::Os(_)) { "the operating system" } else { "HTTP" };
                let reason = format!("actor #{i} uses {what} ({}), which cannot run freely", op.name);
                return end(actor, Status::Running, ops, stuck, Some(reason));
            }
            OpKind::Part(_) | OpKind::Local => match apply_in_world(i, &op, shared) {
                Some(outcome) => outcome,
                None => return end(actor, Status::Waiting, ops, stuck.or(Some(format!("#{i} in {}", op.name))), None),
            },
        };
        shared.progress.fetch_add(1, Ordering::SeqCst);
        actor.on_outcome(&outcome);
    }
    panic!("actor #{i} ran more than {MAX_OPS_PER_ACTOR} ops in one round: an unbounded model loop");
}

/// Apply an op of an in-process part, waiting on the condition variable while it is queued.
/// `None` if the round ended (deadline, abort) before it was granted.
fn apply_in_world(i: ActorId, op: &Op, shared: &Shared) -> Option<Outcome> {
    let mut world = shared.world.lock().unwrap_or_else(|p| p.into_inner());
    let applied = world.apply(i, op);
    shared.changed.notify_all();
    if let Applied::Done(outcome) = applied {
        return Some(outcome);
    }
    loop {
        if world.is_ready(i) {
            let outcome = world.take_ready(i).expect("a ready op has an outcome");
            shared.changed.notify_all();
            return Some(outcome);
        }
        if shared.abort.load(Ordering::SeqCst) || Instant::now() >= shared.deadline {
            shared.abort.store(true, Ordering::SeqCst);
            return None;
        }
        world = shared.changed.wait_timeout(world, PART_WAIT_SLICE).unwrap_or_else(|p| p.into_inner()).0;
    }
}

/// The world's view of the server during a stress run: attaching it resets the server, and
/// properties read committed rows through it. Statements never go through the world in a
/// stress run, so the stepping API is never called.
struct Committed(Arc<dyn FreeDb>);

impl RealDb for Committed {
    fn reset(&mut self, schema: &Schema, sessions: usize, seed: &[(TableId, Row)]) {
        self.0.reset(schema, sessions, seed);
    }
    fn execute(&mut self, _conn: ConnId, _stmt: &Sql) -> Applied {
        unreachable!("stress runs statements outside the world")
    }
    fn is_ready(&self, _conn: ConnId) -> bool {
        false
    }
    fn take_ready(&mut self, _conn: ConnId) -> Option<Outcome> {
        None
    }
    fn cancel_wait(&mut self, _conn: ConnId) -> Outcome {
        unreachable!("stress injects no timeouts")
    }
    fn inject_error(&mut self, _conn: ConnId, _stmt: &Sql) -> Outcome {
        unreachable!("stress injects no errors")
    }
    fn disconnect(&mut self, _conn: ConnId) {
        unreachable!("stress crashes no actor")
    }
    fn committed_rows(&mut self, table: TableId) -> Vec<Row> {
        self.0.committed_rows(table)
    }
    fn failure(&self) -> Option<String> {
        self.0.failure()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Invariant;
    use crate::op::{OsOp, Value};
    use crate::sim::parts::{AtomicCells, AtomicOp, Mutex as LockPart, MutexOp};
    use crate::sim::PartId;

    /// No database: the in-process parts only.
    struct NoDb;

    impl FreeDb for NoDb {
        fn reset(&self, _schema: &Schema, sessions: usize, seed: &[(TableId, Row)]) {
            assert_eq!((sessions, seed.len()), (0, 0));
        }
        fn execute(&self, _conn: ConnId, _stmt: &Sql) -> Outcome {
            unreachable!("these models run no statement")
        }
        fn committed_rows(&self, _table: TableId) -> Vec<Row> {
            Vec::new()
        }
        fn cancel_all(&self) {}
        fn failure(&self) -> Option<String> {
            None
        }
    }

    const INCREMENTS: u32 = 50;

    /// Workers add one to a shared counter `INCREMENTS` times each: load, then store, under a
    /// lock when `locked`. `spawns` makes worker 0 start with an OS op instead.
    struct Counter {
        workers: usize,
        locked: bool,
        spawns: bool,
        lock: PartId<LockPart>,
        cells: PartId<AtomicCells>,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    struct Worker {
        lock: Option<PartId<LockPart>>,
        cells: PartId<AtomicCells>,
        step: u32,
        seen: i64,
        spawns: bool,
    }

    impl Actor for Worker {
        fn next_op(&self) -> Option<Op> {
            if self.spawns {
                return Some(Op::os("spawn", OsOp::AwaitSpawn));
            }
            if self.step >= INCREMENTS * 4 {
                return None;
            }
            Some(match (self.step % 4, self.lock) {
                (0, Some(lock)) => lock.op("lock", MutexOp::Lock(1)),
                (1, _) => self.cells.op("load", AtomicOp::Load(1)),
                (2, _) => self.cells.op("store", AtomicOp::Store(1, self.seen + 1)),
                (3, Some(lock)) => lock.op("unlock", MutexOp::Unlock(1)),
                _ => Op::local("think"),
            })
        }
        fn on_outcome(&mut self, outcome: &Outcome) {
            if self.step % 4 == 1 {
                self.seen = match outcome {
                    Outcome::Value(Value::Int(v)) => *v,
                    other => panic!("load returned {other:?}"),
                };
            }
            self.step += 1;
        }
    }

    impl Model for Counter {
        type Actor = Worker;
        fn init(&self) -> (World, Vec<Worker>) {
            let mut world = World::new(Schema::default(), self.workers);
            assert_eq!(world.add_part(LockPart::new()), self.lock);
            assert_eq!(world.add_part(AtomicCells::new()), self.cells);
            let workers = (0..self.workers)
                .map(|i| Worker {
                    lock: self.locked.then_some(self.lock),
                    cells: self.cells,
                    step: 0,
                    seen: 0,
                    spawns: self.spawns && i == 0,
                })
                .collect();
            (world, workers)
        }
        fn actor_names(&self) -> Vec<String> {
            (0..self.workers).map(|i| format!("worker {i}")).collect()
        }
        fn invariants(&self) -> Vec<Invariant<Worker>> {
            let (cells, expected) = (self.cells, self.workers as i64 * i64::from(INCREMENTS));
            vec![Invariant::final_only("no-lost-update", move |v: &View<Worker>| {
                let total = v.world.part(cells).get(1);
                if total == expected {
                    Ok(())
                } else {
                    Err(format!("counter {total}, expected {expected}"))
                }
            })]
        }
        fn targets(&self) -> Vec<crate::model::Target<Worker>> {
            Vec::new()
        }
    }

    fn counter(locked: bool, spawns: bool) -> Counter {
        // Part handles are indices in the order they are added.
        let mut world = World::new(Schema::default(), 1);
        let lock = world.add_part(LockPart::new());
        let cells = world.add_part(AtomicCells::new());
        Counter { workers: 8, locked, spawns, lock, cells }
    }

    fn options(ops: u64) -> StressOptions {
        StressOptions { ops, round_limit: Duration::from_secs(30) }
    }

    #[test]
    fn waits_in_parts_block_and_are_granted_across_threads() {
        let r = stress(&counter(true, false), Arc::new(NoDb), &options(8 * 200 * 3));
        assert_eq!((r.actors, r.rounds, r.ops), (8, 3, 8 * 200 * 3));
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!((r.skipped, r.failure, r.violated_rounds), (None, None, 0));
    }

    #[test]
    fn actors_that_need_the_os_are_not_run() {
        let r = stress(&counter(true, true), Arc::new(NoDb), &options(1000));
        let reason = r.skipped.expect("skipped");
        assert!(reason.contains("actor #0 uses the operating system (spawn)"), "{reason}");
        assert_eq!(r.rounds, 1);
    }
}
