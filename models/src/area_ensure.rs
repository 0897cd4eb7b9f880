//! `area-ensure`: `ensure_area_exists(name)` over a page API with no unique constraint.
//!
//! Seed `001_931027a52e302014.txt`, "Bug 1" and "Bug 2":
//!
//! > `find_area_by_name()` calls `client.databases.query()` which fails with AttributeError.
//! > Error handling catches it and returns `None`. `ensure_area_exists()` interprets `None` as
//! > "doesn't exist" and creates new entry …
//! > This happens even if the API works, because: 1. Multiple Pub/Sub messages processed in
//! > parallel 2. All check at same time → all get "not found" 3. All proceed to create → duplicates
//!
//! and its fixes, "Option 2A: Application-Level Locking" (an `asyncio.Lock` per area name in each
//! instance, "Cons: Doesn't work across multiple Cloud Run instances") and "Option 2B:
//! Firestore-Based Distributed Lock" (`@firestore.async_transactional` around a cache document,
//! with the Notion page created inside the transaction function).
//!
//! The service runs as `instances` Cloud Run instances (processes), each handling `workers`
//! Pub/Sub messages at once (tasks). Every message needs the area `HOME`. A crash kills an
//! instance's tasks; Pub/Sub then redelivers each message it had not acknowledged, so the
//! restarted worker starts over. A lookup that raises ends the message unacknowledged.
//!
//! Variants and what exploring them gives (scenario files under `scenarios/area-ensure/`; each
//! table is the shortest counterexample `racelab check` prints):
//! - `swallow-error` (as found) is violated with one worker and one failed lookup, when `HOME`
//!   already exists:
//!
//!   | Time | worker A                                              |
//!   |------|-------------------------------------------------------|
//!   | T0   | find_area_by_name(HOME) → AttributeError \[injected\] |
//!   | T1   | create_area_page(HOME) → 2                            |
//!
//! - `check-then-create` (errors propagate, Option 1A) is violated by the seed's own table,
//!   with no fault at all: two workers of one instance both find nothing, both create.
//!
//!   | Time | worker A                       | worker B                       |
//!   |------|--------------------------------|--------------------------------|
//!   | T0   | find_area_by_name(HOME) → null | -                              |
//!   | T1   | -                              | find_area_by_name(HOME) → null |
//!   | T2   | create_area_page(HOME) → 1     | -                              |
//!   | T3   | -                              | create_area_page(HOME) → 2     |
//!
//! - `in-process-lock` (Option 2A) holds within one instance (see the tests), and is violated
//!   by two instances (2 × 2 workers explored; the other workers' columns are empty): each
//!   instance has its own lock table, so both hold "the" lock for `HOME` at once.
//!
//!   | Time | instance 1 / worker A          | instance 2 / worker A          |
//!   |------|--------------------------------|--------------------------------|
//!   | T0   | area_lock.acquire(1) → ok      | -                              |
//!   | T1   | find_area_by_name(HOME) → null | -                              |
//!   | T2   | -                              | area_lock.acquire(1) → ok      |
//!   | T3   | -                              | find_area_by_name(HOME) → null |
//!   | T4   | create_area_page(HOME) → 1     | -                              |
//!   | T5   | -                              | create_area_page(HOME) → 2     |
//!
//! - `transactional-cache` (Option 2B) is violated by two instances: optimistic concurrency
//!   decides only at commit which transaction wins, and by then both functions have created a
//!   page. The loser's commit aborts, the client library re-runs the function, which reads the
//!   winner's cached page and returns it; its own page stays (see the tests).
//!
//!   | Time | instance 1 / worker A               | instance 2 / worker A               |
//!   |------|-------------------------------------|-------------------------------------|
//!   | T0   | transaction → ok                    | -                                   |
//!   | T1   | doc_ref.get(area_cache/HOME) → null | -                                   |
//!   | T2   | find_area_by_name(HOME) → null      | -                                   |
//!   | T3   | -                                   | transaction → ok                    |
//!   | T4   | -                                   | doc_ref.get(area_cache/HOME) → null |
//!   | T5   | -                                   | find_area_by_name(HOME) → null      |
//!   | T6   | create_area_page(HOME) → 1          | -                                   |
//!   | T7   | -                                   | create_area_page(HOME) → 2          |
//!
//! - `idempotency-key` (ours) holds for 2 instances × 2 workers, up to two crashes, two failed
//!   lookups and a lost reply (18,591 states, complete): lookup errors propagate (never read as
//!   "not found"), and the create carries a key derived from the area name, so every create of
//!   `HOME` (another instance's, or a redelivered message's after a crash between the create and
//!   the acknowledgement) returns the first page. Notion's public API has no such key; the
//!   service needs a page store, or a small proxy in front of Notion, that keeps one (what
//!   Option 2C looked for). A Firestore create-if-absent claim alone is not enough: the worker
//!   that won the claim can die between its create and recording the page id, and whoever takes
//!   over cannot tell an in-flight create from none without such a key.
//!
//! The invariant: never two pages titled with one area name, checked after every step.

use racelab_harness::catalogue::{Params, RaceDef, VariantDef};
use racelab_harness::model::{Actor, Invariant, Model, Target, View};
use racelab_harness::op::{ActorId, ErrorCode, Op, Outcome, Value};
use racelab_harness::sim::firestore::{Firestore, FirestoreOp, ABORTED, MAX_ATTEMPTS};
use racelab_harness::sim::notion::{Notion, NotionOp};
use racelab_harness::sim::parts::{Mutex, MutexOp};
use racelab_harness::sim::{PartId, Schema, World};

/// The area every message needs.
pub const AREA_NAME: &str = "HOME";
pub const AREA: Value = Value::Str(AREA_NAME);
/// The Firestore document Option 2B caches the area's page id in.
pub const CACHE_DOC: Value = Value::Str("area_cache/HOME");
/// The idempotency key of the area's create: a pure function of the area name.
pub const AREA_KEY_NAME: &str = "area:HOME";
pub const AREA_KEY: Value = Value::Str(AREA_KEY_NAME);
/// The key of the area's lock in an instance's lock table.
const AREA_LOCK: i64 = 1;

pub const NO_TWO_PAGES_PER_AREA: &str = "no-two-pages-per-area";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    SwallowError,
    CheckThenCreate,
    InProcessLock,
    TransactionalCache,
    IdempotencyKey,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pc {
    /// `async with lock:` (Option 2A).
    Lock,
    Find,
    Create,
    Unlock,
    /// Option 2B's transaction function, attempt by attempt.
    TxBegin,
    TxGetCache,
    TxRetrieve,
    TxFind,
    TxCreate,
    TxSet,
    TxCommit,
    TxRollback,
    /// The handler returned a page id; Pub/Sub acknowledges the message.
    Ack,
    Done,
}

/// What `ensure_area_exists` ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ended {
    /// Returned this page id (the message is acknowledged).
    Page(i64),
    /// Raised (the message is not acknowledged).
    Raised(ErrorCode),
}

/// The parts of the world a worker calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Apis {
    notion: PartId<Notion>,
    firestore: PartId<Firestore>,
    /// This worker's instance's lock table (Option 2A).
    lock: Option<PartId<Mutex>>,
    lookup_may_fail: bool,
}

/// One Pub/Sub message being handled by `ensure_area_exists(AREA)` in a task of an instance.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Worker {
    variant: Variant,
    apis: Apis,
    pc: Pc,
    /// Transaction attempts that ended in a conflict (Option 2B).
    attempts: u8,
    /// The page id this attempt is about to return or cache.
    page: Option<i64>,
    /// An error raised inside the lock, re-raised after the release.
    raised: Option<ErrorCode>,
    pub ended: Option<Ended>,
}

impl Worker {
    fn new(variant: Variant, apis: Apis) -> Worker {
        let pc = match variant {
            Variant::InProcessLock => Pc::Lock,
            Variant::TransactionalCache => Pc::TxBegin,
            _ => Pc::Find,
        };
        Worker { variant, apis, pc, attempts: 0, page: None, raised: None, ended: None }
    }

    fn find(&self) -> Op {
        self.apis.notion.op("find_area_by_name", NotionOp::Query { title: AREA, may_fail: self.apis.lookup_may_fail })
    }

    fn create(&self) -> Op {
        let idempotency_key = (self.variant == Variant::IdempotencyKey).then_some(AREA_KEY);
        self.apis.notion.op("create_area_page", NotionOp::Create { title: AREA, idempotency_key })
    }

    fn tx(&self, name: &'static str, op: FirestoreOp) -> Op {
        self.apis.firestore.op(name, op)
    }

    fn returned(&mut self, page: i64) -> Pc {
        self.page = Some(page);
        Pc::Ack
    }

    fn end(&mut self, ended: Ended) -> Pc {
        self.ended = Some(ended);
        Pc::Done
    }

    /// After the lookup: return what it found, create, or raise.
    fn after_find(&mut self, outcome: &Outcome) -> Pc {
        match (outcome, self.variant) {
            (Outcome::Value(Value::Int(page)), Variant::InProcessLock) => {
                self.page = Some(*page);
                Pc::Unlock
            }
            (Outcome::Value(Value::Int(page)), _) => self.returned(*page),
            // Bug 1: the error is logged and read as "not found".
            (Outcome::Err(_), Variant::SwallowError) => Pc::Create,
            (Outcome::Err(e), Variant::InProcessLock) => {
                self.raised = Some(*e);
                Pc::Unlock
            }
            (Outcome::Err(e), _) => self.end(Ended::Raised(*e)),
            (_, _) => Pc::Create,
        }
    }
}

fn page_of(outcome: &Outcome) -> i64 {
    match outcome {
        Outcome::Value(Value::Int(page)) => *page,
        other => panic!("create_area_page returned {other:?}"),
    }
}

impl Actor for Worker {
    fn next_op(&self) -> Option<Op> {
        let lock = || self.apis.lock.expect("an instance lock (in-process-lock)");
        Some(match self.pc {
            Pc::Lock => lock().op("area_lock.acquire", MutexOp::Lock(AREA_LOCK)),
            Pc::Find | Pc::TxFind => self.find(),
            Pc::Create | Pc::TxCreate => self.create(),
            Pc::Unlock => lock().op("area_lock.release", MutexOp::Unlock(AREA_LOCK)),
            Pc::TxBegin => self.tx("transaction", FirestoreOp::Begin),
            Pc::TxGetCache => self.tx("doc_ref.get", FirestoreOp::Get { doc: CACHE_DOC }),
            Pc::TxRetrieve => self.apis.notion.op("pages.retrieve", NotionOp::Retrieve { page: self.page? }),
            Pc::TxSet => self.tx("transaction.set", FirestoreOp::Set { doc: CACHE_DOC, value: Value::Int(self.page?) }),
            Pc::TxCommit => self.tx("commit", FirestoreOp::Commit),
            Pc::TxRollback => self.tx("rollback", FirestoreOp::Rollback),
            Pc::Ack => Op::local("message.ack"),
            Pc::Done => return None,
        })
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        self.pc = match (self.pc, outcome) {
            (Pc::Lock, _) => Pc::Find,
            (Pc::Find, o) => self.after_find(o),
            (Pc::Create, o) => {
                let page = page_of(o);
                if self.variant == Variant::InProcessLock {
                    self.page = Some(page);
                    Pc::Unlock
                } else {
                    self.returned(page)
                }
            }
            (Pc::Unlock, _) => match (self.raised, self.page) {
                (Some(e), _) => self.end(Ended::Raised(e)),
                (None, Some(page)) => self.returned(page),
                (None, None) => panic!("released the lock with neither a page nor an error"),
            },
            (Pc::TxBegin, _) => Pc::TxGetCache,
            (Pc::TxGetCache, Outcome::Value(Value::Int(page))) => {
                self.page = Some(*page);
                Pc::TxRetrieve
            }
            (Pc::TxGetCache, Outcome::Err(e)) => self.end(Ended::Raised(*e)),
            (Pc::TxGetCache, _) => Pc::TxFind,
            // "Verify it still exists in Notion": if so the function returns it and the
            // decorator commits; if not, fall through to the lookup.
            (Pc::TxRetrieve, Outcome::Bool(true)) => Pc::TxCommit,
            (Pc::TxRetrieve, _) => Pc::TxFind,
            (Pc::TxFind, Outcome::Value(Value::Int(page))) => {
                self.page = Some(*page);
                Pc::TxSet
            }
            (Pc::TxFind, Outcome::Err(e)) => {
                self.raised = Some(*e);
                Pc::TxRollback
            }
            (Pc::TxFind, _) => Pc::TxCreate,
            (Pc::TxCreate, o) => {
                self.page = Some(page_of(o));
                Pc::TxSet
            }
            (Pc::TxSet, _) => Pc::TxCommit,
            (Pc::TxCommit, Outcome::Err(e)) if *e == ABORTED && self.attempts + 1 < MAX_ATTEMPTS => {
                // The client library runs the whole function again; the page it created stays.
                self.attempts += 1;
                self.page = None;
                Pc::TxBegin
            }
            (Pc::TxCommit, Outcome::Err(e)) => self.end(Ended::Raised(*e)),
            (Pc::TxCommit, _) => self.returned(self.page.expect("a committed page id")),
            (Pc::TxRollback, _) => self.end(Ended::Raised(self.raised.expect("the error that rolled back"))),
            (Pc::Ack, _) => self.end(Ended::Page(self.page.expect("the page id returned"))),
            (Pc::Done, o) => panic!("a finished worker got {o:?}"),
        };
    }

    /// The instance restarts; Pub/Sub redelivers a message that was not acknowledged.
    fn on_crash(&self) -> Option<Worker> {
        match self.ended {
            Some(Ended::Page(_)) => Some(self.clone()),
            _ => Some(Worker::new(self.variant, self.apis)),
        }
    }
}

/// `instances` × `workers` workers, all ensuring [`AREA`].
pub struct AreaEnsure {
    pub variant: Variant,
    pub instances: usize,
    pub workers: usize,
    pub lookup_may_fail: bool,
    /// The area page exists before the messages arrive.
    pub area_exists: bool,
}

impl AreaEnsure {
    fn worker_name(&self, i: usize) -> String {
        let letter = char::from(b'A' + (i % self.workers) as u8);
        if self.instances == 1 {
            format!("worker {letter}")
        } else {
            format!("instance {} / worker {letter}", i / self.workers + 1)
        }
    }
}

fn notion_of<'a>(v: &View<'a, Worker>) -> &'a Notion {
    let w = v.actors.first().expect("at least one worker");
    v.world.part(w.apis.notion)
}

impl Model for AreaEnsure {
    type Actor = Worker;

    fn init(&self) -> (World, Vec<Worker>) {
        let n = self.instances * self.workers;
        let mut world = World::new(Schema::default(), n);
        let notion = world.add_part(Notion::new());
        if self.area_exists {
            world.part_mut(notion).seed_page(AREA);
        }
        let firestore = world.add_part(Firestore::new());
        let mut actors = Vec::with_capacity(n);
        for instance in 0..self.instances {
            let members: Vec<ActorId> = (instance * self.workers..(instance + 1) * self.workers).collect();
            world.os.start_process(&members);
            // Option 2A's `self._area_locks`: one table per process.
            let lock = (self.variant == Variant::InProcessLock).then(|| world.add_part(Mutex::new()));
            let apis = Apis { notion, firestore, lock, lookup_may_fail: self.lookup_may_fail };
            actors.extend(members.iter().map(|_| Worker::new(self.variant, apis)));
        }
        (world, actors)
    }

    fn actor_names(&self) -> Vec<String> {
        (0..self.instances * self.workers).map(|i| self.worker_name(i)).collect()
    }

    fn invariants(&self) -> Vec<Invariant<Worker>> {
        vec![Invariant::new(NO_TWO_PAGES_PER_AREA, |v: &View<'_, Worker>| {
            let pages = notion_of(v).pages_titled(AREA);
            if pages.len() > 1 {
                let ids: Vec<String> = pages.iter().map(i64::to_string).collect();
                return Err(format!("{} pages titled {AREA}: ids {}", pages.len(), ids.join(", ")));
            }
            Ok(())
        })]
    }

    fn targets(&self) -> Vec<Target<Worker>> {
        let mut targets = vec![
            Target::new("the area page exists", |v: &View<'_, Worker>| !notion_of(v).pages_titled(AREA).is_empty()),
            Target::new("a worker returned the area's page id", |v: &View<'_, Worker>| {
                v.actors.iter().any(|w| matches!(w.ended, Some(Ended::Page(_))))
            }),
        ];
        if self.variant == Variant::TransactionalCache {
            targets.push(Target::new("a transaction cached the page id", |v: &View<'_, Worker>| {
                let w = v.actors.first().expect("at least one worker");
                v.world.part(w.apis.firestore).get(CACHE_DOC).is_some()
            }));
        }
        targets
    }
}

fn build(p: &Params, variant: Variant) -> Result<Box<dyn racelab_harness::catalogue::DynModel>, String> {
    let instances = p.count("instances", 2, 1, 4)?;
    // Per instance; the Notion and Firestore parts rename no actors, so there is no symmetry
    // to reduce by, and 8 workers in all is as far as the plain search goes.
    let workers = p.workers("workers", 2, 1, 4)?;
    if instances * workers > 8 {
        return Err(format!("`instances` × `workers` is {}, more than 8 workers", instances * workers));
    }
    Ok(Box::new(AreaEnsure {
        variant,
        instances,
        workers,
        lookup_may_fail: p.bool("lookup_may_fail", true)?,
        area_exists: p.bool("area_exists", false)?,
    }))
}

pub fn race() -> RaceDef {
    RaceDef {
        id: "area-ensure",
        seed: "001_931027a52e302014.txt",
        passage: "Error handling catches it and returns `None`. `ensure_area_exists()` interprets `None` as \
                  \"doesn't exist\" and creates new entry … All check at same time → all get \"not found\" … All \
                  proceed to create → duplicates",
        invariant: "Never two pages with one area name.",
        variants: vec![
            VariantDef {
                id: "swallow-error",
                summary: "as found: a failing lookup is logged and returned as \"not found\", then the area is created",
                build: |p| build(p, Variant::SwallowError),
            },
            VariantDef {
                id: "check-then-create",
                summary: "lookup errors propagate (Option 1A), but find-then-create still races",
                build: |p| build(p, Variant::CheckThenCreate),
            },
            VariantDef {
                id: "in-process-lock",
                summary: "Option 2A: an asyncio.Lock per area name, one lock table per instance",
                build: |p| build(p, Variant::InProcessLock),
            },
            VariantDef {
                id: "transactional-cache",
                summary: "Option 2B: an optimistic Firestore transaction over a cache document, page created inside it",
                build: |p| build(p, Variant::TransactionalCache),
            },
            VariantDef {
                id: "idempotency-key",
                summary: "ours: lookup errors propagate and the create carries a key derived from the area name",
                build: |p| build(p, Variant::IdempotencyKey),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use racelab_harness::explore::shortest::{replay, Replayed};
    use racelab_harness::explore::Bounds;
    use racelab_harness::model::Phase;
    use racelab_harness::testing::{crash, error, steps, texts, violated};

    fn model(variant: Variant, instances: usize, workers: usize) -> AreaEnsure {
        AreaEnsure { variant, instances, workers, lookup_may_fail: true, area_exists: false }
    }

    fn pages(r: &Replayed<Worker>) -> Vec<i64> {
        let w = &r.state.actors[0];
        r.state.world.part(w.apis.notion).pages_titled(AREA)
    }

    #[test]
    fn swallow_error_reads_a_failed_lookup_as_not_found_and_creates_a_second_page() {
        let m = AreaEnsure { area_exists: true, ..model(Variant::SwallowError, 1, 1) };
        let bounds = Bounds { errors: 1, ..Bounds::default() };
        let r = replay(&m, &bounds, &[vec![error(0)], steps(&[0])].concat()).unwrap();
        assert_eq!(
            texts(&r.events),
            ["find_area_by_name(HOME) → AttributeError [injected]", "create_area_page(HOME) → 2"]
        );
        assert_eq!(r.violation.as_ref().unwrap().invariant, NO_TWO_PAGES_PER_AREA);
        assert_eq!(pages(&r), [1, 2]);
    }

    #[test]
    fn check_then_create_raises_on_a_failed_lookup_but_two_workers_both_create() {
        let m = AreaEnsure { area_exists: true, ..model(Variant::CheckThenCreate, 1, 1) };
        let bounds = Bounds { errors: 1, ..Bounds::default() };
        let r = replay(&m, &bounds, &[error(0)]).unwrap();
        assert_eq!(r.state.actors[0].ended, Some(Ended::Raised(racelab_harness::sim::notion::QUERY_FAILED)));
        assert_eq!(r.violation, None);

        let m = model(Variant::CheckThenCreate, 1, 2);
        let r = replay(&m, &Bounds::default(), &steps(&[0, 1, 0, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "find_area_by_name(HOME) → null",
                "find_area_by_name(HOME) → null",
                "create_area_page(HOME) → 1",
                "create_area_page(HOME) → 2",
            ]
        );
        assert_eq!(r.violation.as_ref().unwrap().invariant, NO_TWO_PAGES_PER_AREA);
    }

    #[test]
    fn in_process_lock_serialises_one_instance_but_not_two() {
        let one = model(Variant::InProcessLock, 1, 2);
        let r = replay(&one, &Bounds::default(), &steps(&[0, 1, 0, 0, 0, 1, 1, 1, 0, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "area_lock.acquire(1) → ok",
                "area_lock.acquire(1) … waits",
                "find_area_by_name(HOME) → null",
                "create_area_page(HOME) → 1",
                "area_lock.release(1) → ok",
                "area_lock.acquire(1) ⇐ ok",
                "find_area_by_name(HOME) → 1",
                "area_lock.release(1) → ok",
                "message.ack → ok",
                "message.ack → ok",
            ]
        );
        assert_eq!(r.violation, None);
        assert!(r.state.actors.iter().all(|w| w.ended == Some(Ended::Page(1))));

        let two = model(Variant::InProcessLock, 2, 1);
        let r = replay(&two, &Bounds::default(), &steps(&[0, 1, 0, 1, 0, 1])).unwrap();
        assert_eq!(texts(&r.events)[1], "area_lock.acquire(1) → ok", "the other instance's lock is free");
        assert_eq!(r.violation.as_ref().unwrap().invariant, NO_TWO_PAGES_PER_AREA);
    }

    #[test]
    fn transactional_cache_retries_after_the_conflict_and_returns_the_winners_page_leaving_its_own() {
        let m = model(Variant::TransactionalCache, 2, 1);
        // Both run the function up to its create; worker A's create is the first page.
        let both = steps(&[0, 1, 0, 1, 0, 1, 0]);
        let r = replay(&m, &Bounds::default(), &both).unwrap();
        assert_eq!(r.violation, None, "one page so far");
        let r = replay(&m, &Bounds::default(), &[both.clone(), steps(&[1])].concat()).unwrap();
        assert_eq!(r.violation.as_ref().unwrap().invariant, NO_TWO_PAGES_PER_AREA);
        let events = texts(&r.events);
        assert_eq!(events[2], "doc_ref.get(area_cache/HOME) → null");
        assert_eq!(events[7], "create_area_page(HOME) → 2");
        // Without the invariant stopping the replay, the story goes on: A commits, B aborts,
        // B's retry returns A's page, and page 2 is an orphan.
        let mut state = r.state;
        for c in steps(&[0, 0, 0, 1, 1, 1, 1, 1, 1, 1]) {
            state.apply(c, &Bounds::default());
        }
        assert_eq!(state.actors[0].ended, Some(Ended::Page(1)));
        assert_eq!(state.actors[1].attempts, 1, "worker B's first commit aborted");
        assert_eq!(state.actors[1].ended, Some(Ended::Page(1)));
        assert_eq!(violated(&m, &state, Phase::Final), [NO_TWO_PAGES_PER_AREA]);
    }

    #[test]
    fn idempotency_key_survives_a_crash_after_the_create_and_a_failed_lookup() {
        let m = model(Variant::IdempotencyKey, 2, 2);
        let bounds = Bounds { crashes: 1, errors: 1, ..Bounds::default() };
        // Instance 1 dies after worker A's create, before the ack; instance 2's create with the
        // same key returns A's page; the redelivered message's lookup fails and raises.
        let schedule =
            [steps(&[0, 2, 0]), vec![crash(1)], steps(&[2]), vec![error(0)], steps(&[1, 3, 1, 2, 3])].concat();
        let r = replay(&m, &bounds, &schedule).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "find_area_by_name(HOME) → null",
                "find_area_by_name(HOME) → null",
                "create_area_page(HOME, key=area:HOME) → 1",
                "✗ crash",
                "create_area_page(HOME, key=area:HOME) → 1",
                "find_area_by_name(HOME) → AttributeError [injected]",
                "find_area_by_name(HOME) → 1",
                "find_area_by_name(HOME) → 1",
                "message.ack → ok",
                "message.ack → ok",
                "message.ack → ok",
            ]
        );
        assert_eq!(r.violation, None);
        assert_eq!(pages(&r), [1]);
        let ended: Vec<_> = r.state.actors.iter().map(|w| w.ended).collect();
        let failed = Ended::Raised(racelab_harness::sim::notion::QUERY_FAILED);
        assert_eq!(ended, [Some(failed), Some(Ended::Page(1)), Some(Ended::Page(1)), Some(Ended::Page(1))]);
    }

    #[test]
    fn the_race_has_the_catalogue_variants_and_rejects_too_many_workers() {
        let race = race();
        let ids: Vec<_> = race.variants.iter().map(|v| v.id).collect();
        assert_eq!(
            ids,
            ["swallow-error", "check-then-create", "in-process-lock", "transactional-cache", "idempotency-key"]
        );
        let mut values = std::collections::BTreeMap::new();
        values.insert("instances".to_string(), racelab_harness::catalogue::Param::Int(3));
        values.insert("workers".to_string(), racelab_harness::catalogue::Param::Int(3));
        let err = (race.variants[0].build)(&Params::new(values)).err().unwrap();
        assert!(err.contains("more than 8"), "{err}");
    }
}
