//! A model written only against racelab's public API that uses every reusable part: a bounded
//! connection pool, an in-process mutex, a TTL cache whose time the explorer moves, and an atomic
//! counter; and a property that reads the model's parameter.
//!
//! The story: `workers` request handlers each take a pooled connection, then count a page view.
//! The count is cached for a few ticks. `locked` handlers update the counter under the mutex with
//! one fetch-add; `racy` handlers read the cached count (or the counter on a miss) and store
//! count + 1, losing updates.

use racelab_harness::explore::Bounds;
use racelab_harness::model::{Actor, Invariant, Model, Target, View};
use racelab_harness::op::{Op, Outcome, Value};
use racelab_harness::run::{check, Backend, Mode, Verdict};
use racelab_harness::sim::parts::{AtomicCells, AtomicOp, CacheOp, ConnectionPool, Mutex, MutexOp, PoolOp, TtlCache};
use racelab_harness::sim::{PartId, Schema, World};

const VIEWS: i64 = 0;
const LOCK: i64 = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Parts {
    pool: PartId<ConnectionPool>,
    lock: PartId<Mutex>,
    cache: PartId<TtlCache>,
    counter: PartId<AtomicCells>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pc {
    Checkout,
    Lock,
    CachedCount,
    LoadCount,
    Store(i64),
    Increment,
    Invalidate,
    Unlock,
    Checkin(i64),
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Role {
    Handler {
        locked: bool,
        pc: Pc,
        slot: i64,
    },
    /// Moves the cache's time: each op is one tick, at a moment the explorer picks.
    Clock {
        ticks: u8,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Worker {
    parts: Parts,
    role: Role,
}

impl Actor for Worker {
    fn next_op(&self) -> Option<Op> {
        let p = self.parts;
        let op = match &self.role {
            Role::Clock { ticks: 0 } => return None,
            Role::Clock { .. } => p.cache.op("tick", CacheOp::Tick),
            Role::Handler { pc, .. } => match *pc {
                Pc::Checkout => p.pool.op("checkout", PoolOp::Checkout),
                Pc::Lock => p.lock.op("lock", MutexOp::Lock(LOCK)),
                Pc::CachedCount => p.cache.op("cached_count", CacheOp::Get(VIEWS)),
                Pc::LoadCount => p.counter.op("load_count", AtomicOp::Load(VIEWS)),
                Pc::Store(n) => p.counter.op("store_count", AtomicOp::Store(VIEWS, n)),
                Pc::Increment => p.counter.op("fetch_add", AtomicOp::FetchAdd(VIEWS, 1)),
                Pc::Invalidate => p.cache.op("invalidate", CacheOp::Invalidate(VIEWS)),
                Pc::Unlock => p.lock.op("unlock", MutexOp::Unlock(LOCK)),
                Pc::Checkin(slot) => p.pool.op("checkin", PoolOp::Checkin(slot)),
                Pc::Done => return None,
            },
        };
        Some(op)
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        match &mut self.role {
            Role::Clock { ticks } => *ticks -= 1,
            Role::Handler { locked, pc, slot } => {
                *pc = match (*pc, outcome) {
                    (Pc::Checkout, Outcome::Value(Value::Int(s))) => {
                        *slot = *s;
                        if *locked {
                            Pc::Lock
                        } else {
                            Pc::CachedCount
                        }
                    }
                    (_, Outcome::Err(_)) => Pc::Done,
                    (Pc::Lock, _) => Pc::Increment,
                    (Pc::Increment, _) => Pc::Invalidate,
                    (Pc::CachedCount, Outcome::Value(Value::Int(n))) => Pc::Store(n + 1),
                    (Pc::CachedCount, _) => Pc::LoadCount,
                    (Pc::LoadCount, Outcome::Value(Value::Int(n))) => Pc::Store(n + 1),
                    (Pc::Store(_), _) => Pc::Invalidate,
                    (Pc::Invalidate, _) if *locked => Pc::Unlock,
                    (Pc::Invalidate | Pc::Unlock, _) => Pc::Checkin(*slot),
                    _ => Pc::Done,
                };
            }
        }
    }
}

struct PageViews {
    workers: usize,
    locked: bool,
}

impl Model for PageViews {
    type Actor = Worker;

    fn init(&self) -> (World, Vec<Worker>) {
        let mut world = World::new(Schema::default(), self.workers + 1);
        let parts = Parts {
            pool: world.add_part(ConnectionPool::new(1, 1, false)),
            lock: world.add_part(Mutex::new()),
            cache: world.add_part(TtlCache::new(2, (0..self.workers).collect())),
            counter: world.add_part(AtomicCells::new()),
        };
        let handler = Role::Handler { locked: self.locked, pc: Pc::Checkout, slot: -1 };
        let mut actors: Vec<Worker> = (0..self.workers).map(|_| Worker { parts, role: handler.clone() }).collect();
        actors.push(Worker { parts, role: Role::Clock { ticks: 2 } });
        (world, actors)
    }

    fn actor_names(&self) -> Vec<String> {
        (1..=self.workers).map(|i| format!("handler {i}")).chain(["clock".to_string()]).collect()
    }

    fn invariants(&self) -> Vec<Invariant<Worker>> {
        let workers = self.workers as i64;
        vec![Invariant::final_only("every-view-counted", move |v: &View<Worker>| {
            let counter = v.actors[0].parts.counter;
            match v.world.part(counter).get(VIEWS) {
                n if n == workers => Ok(()),
                n => Err(format!("{workers} views counted as {n}")),
            }
        })]
    }

    fn targets(&self) -> Vec<Target<Worker>> {
        vec![Target::new("a handler waited for a pooled connection", |v: &View<Worker>| {
            !v.world.part(v.actors[0].parts.pool).waiting().is_empty()
        })]
    }
}

#[test]
fn three_locked_handlers_count_every_view() {
    let model = PageViews { workers: 3, locked: true };
    let checked = check("page-views/locked", &model, &Mode::Exhaustive, &Bounds::default(), &Backend::Sim);
    assert_eq!(checked.verdict, Verdict::Holds, "{:?}", checked.reason);
    assert!(checked.complete && checked.stats.states > 10);
}

#[test]
fn racy_handlers_lose_a_view_through_the_cache() {
    let model = PageViews { workers: 2, locked: false };
    let checked = check("page-views/racy", &model, &Mode::Exhaustive, &Bounds::default(), &Backend::Sim);
    assert_eq!(checked.verdict, Verdict::Violated);
    let cx = checked.counterexample.expect("a counterexample");
    assert_eq!(cx.invariant, "every-view-counted");
    assert!(cx.detail.contains("2 views counted as 1"), "{}", cx.detail);
}

#[test]
fn a_crash_releases_the_mutex_and_the_pooled_connection() {
    let model = PageViews { workers: 2, locked: true };
    let bounds = Bounds { crashes: 1, ..Bounds::default() };
    let checked = check("page-views/locked", &model, &Mode::Exhaustive, &bounds, &Backend::Sim);
    // A crashed handler counts no view (or its view but no more), so the final count can fall
    // short: the explorer finds it; and it never deadlocks on the dead handler's lock.
    assert_eq!(checked.verdict, Verdict::Violated);
    let cx = checked.counterexample.expect("a counterexample");
    assert_eq!(cx.invariant, "every-view-counted", "{}", cx.detail);
    assert!(cx.timeline.render(200).contains("✗ crash"));
}
