//! # `session-get-or-create`: several active sessions per user
//!
//! Seed `003_b75e7638340bacc9.txt`, "Phase 1" and "Phase 2":
//!
//! > **Investigation**: Logs showed 3 sessions created within 12 seconds […]
//! > Session fetched at pipeline entry (`_manage_session`) / Session refetched in
//! > `handle_direct_action()` / Session refetched in `execute_direct_handler()` /
//! > **3 concurrent calls = race condition**
//!
//! and "Phase 5": `CREATE UNIQUE INDEX idx_unique_active_session_per_user ON
//! conversation_sessions(subcontractor_id) WHERE status = 'active'`.
//!
//! ## The race
//!
//! `get_or_create_session(user_id)` looks for the user's active session and inserts one when it
//! finds none, each statement in autocommit. Every call that finds nothing inserts, so calls that
//! overlap each create a session. One message made three overlapping calls (pipeline, direct
//! handler, action); two messages from one user can also arrive together.
//!
//! ## Variants
//!
//! - `triple-call` (as found): one message, three concurrent `get_or_create_session()` calls.
//! - `ttl-cache` (Phase 1): the same three calls behind the session service's in-memory cache
//!   (`_session_cache`, 5-second TTL, one per process). A clock actor moves time one tick at a
//!   time, so entries expire whenever the explorer says.
//! - `pass-through` (Phase 2): the session is fetched once per message and passed down; two
//!   messages from one user arrive together.
//! - `partial-unique-index` (Phase 5): the pass-through with the partial unique index on the
//!   active session; a call whose insert conflicts (23505) fetches the session that won.
//!
//! Which fixes do not hold: `ttl-cache` and `pass-through`. The cache is filled only after the
//! database call returns, so calls that start together all miss it and insert (6 steps: two
//! misses, then a find and an insert each, `racelab explain
//! session-get-or-create/ttl-cache`). Passing the session down removes the triple call but not
//! two messages of one user: 4 steps, both messages find nothing, both insert. Only the database
//! can decide between concurrent inserters: `partial-unique-index` holds, explored completely for
//! two messages with 1 crash and 1 injected error per execution.
//!
//! ## Invariant
//!
//! Never two active sessions for one user.

use racelab_harness::catalogue::{DynModel, Params, RaceDef, VariantDef};
use racelab_harness::model::{Actor, Invariant, Model, Target, View};
use racelab_harness::op::{ConnId, ErrorCode, OnConflict, Op, Outcome, Row, Sql, Value, MAX_ACTORS};
use racelab_harness::sim::parts::{CacheOp, TtlCache};
use racelab_harness::sim::{PartId, Schema, TableDef, UniqueIndex, World};
use racelab_harness::symmetry::{Renaming, Symmetry};

const SESSIONS: &str = "conversation_sessions";
const COLUMNS: [&str; 3] = ["id", "subcontractor_id", "status"];
const ID: usize = 0;
const USER_COL: usize = 1;
const STATUS_COL: usize = 2;
/// The user: a number no session id reaches (ids are 1 to the number of calls), so that the
/// ids each call owns name that call only (see [`SessionGetOrCreate::symmetry`]).
const USER: Value = Value::Int(100);
const ACTIVE: Value = Value::Str("active");
/// The cache key of the user's session: the user's id, no session id.
const CACHE_KEY: i64 = 100;
/// The handlers of one message that each fetched the session, as found.
const TRIPLE: [&str; 3] = ["pipeline", "direct handler", "action"];

pub const ONE_ACTIVE_SESSION_PER_USER: &str = "one-active-session-per-user";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    TripleCall,
    TtlCache,
    PassThrough,
    PartialUniqueIndex,
}

impl Variant {
    /// `get_or_create_session()` calls per message.
    fn calls_per_message(self) -> usize {
        match self {
            Variant::TripleCall | Variant::TtlCache => 3,
            Variant::PassThrough | Variant::PartialUniqueIndex => 1,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pc {
    CacheGet,
    Find,
    Insert,
    /// The insert conflicted with the session another call created: fetch that one.
    FindWinner,
    /// Cache the session this call got.
    CachePut(i64),
    /// The clock's next tick; it has this many left.
    Tick(u8),
    Done,
}

/// One `get_or_create_session()` call, or the clock that ages the cache.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionCall {
    variant: Variant,
    /// The id an insert by this call uses.
    new_id: i64,
    conn: ConnId,
    cache: Option<PartId<TtlCache>>,
    pc: Pc,
    /// The session this call returned.
    session: Option<i64>,
    /// It returned a session it did not create.
    reused: bool,
    failure: Option<ErrorCode>,
}

impl SessionCall {
    fn finish_with(&mut self, id: i64, reused: bool) -> Pc {
        self.session = Some(id);
        self.reused = reused;
        match self.cache {
            Some(_) => Pc::CachePut(id),
            None => Pc::Done,
        }
    }
}

/// The clock's `new_id`: it inserts nothing.
const CLOCK_ID: i64 = 0;

fn row_id(row: &Row) -> Option<i64> {
    match row.get(ID) {
        Some(Value::Int(id)) => Some(*id),
        _ => None,
    }
}

impl Actor for SessionCall {
    /// Calls differ only in their connection and the id their insert uses; the clock (id 0)
    /// holds nothing of theirs.
    fn rename(&mut self, r: &Renaming) {
        if self.new_id == CLOCK_ID {
            return;
        }
        self.new_id = r.int(self.new_id);
        self.conn = r.conn(self.conn);
        self.session = self.session.map(|id| r.int(id));
        if let Pc::CachePut(id) = &mut self.pc {
            *id = r.int(*id);
        }
    }

    fn next_op(&self) -> Option<Op> {
        let conn = self.conn;
        let find = || Sql::Select {
            table: SESSIONS,
            filter: vec![("subcontractor_id", USER), ("status", ACTIVE)],
            lock: None,
        };
        let op = match self.pc {
            Pc::CacheGet => self.cache.expect("a cached variant").op("session_cache_get", CacheOp::Get(CACHE_KEY)),
            Pc::Find => Op::sql("find_active_session", conn, find()),
            Pc::FindWinner => Op::sql("find_active_session", conn, find()),
            Pc::Insert => {
                let row = vec![Value::Int(self.new_id), USER, ACTIVE];
                Op::sql("create_session", conn, Sql::Insert { table: SESSIONS, row, on_conflict: OnConflict::Error })
            }
            Pc::CachePut(id) => {
                self.cache.expect("a cached variant").op("session_cache_put", CacheOp::Put(CACHE_KEY, Value::Int(id)))
            }
            Pc::Tick(_) => self.cache.expect("a clock ticks a cache").op("one_second_passes", CacheOp::Tick),
            Pc::Done => return None,
        };
        Some(op)
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        self.pc = match (self.pc, outcome) {
            (Pc::Done, _) => Pc::Done,
            (Pc::Tick(left), _) => {
                if left > 1 {
                    Pc::Tick(left - 1)
                } else {
                    Pc::Done
                }
            }
            (Pc::CachePut(_), _) => Pc::Done,
            (Pc::Insert, Outcome::Err(ErrorCode::UNIQUE_VIOLATION)) if self.variant == Variant::PartialUniqueIndex => {
                Pc::FindWinner
            }
            (_, Outcome::Err(error)) => {
                self.failure = Some(*error);
                Pc::Done
            }
            (Pc::CacheGet, Outcome::Value(Value::Int(id))) => {
                self.session = Some(*id);
                self.reused = true;
                Pc::Done
            }
            (Pc::CacheGet, _) => Pc::Find,
            (Pc::Find | Pc::FindWinner, found) => match found.rows().first().and_then(row_id) {
                Some(id) => self.finish_with(id, true),
                None if self.pc == Pc::Find => Pc::Insert,
                None => {
                    // The winner ended its session in between; the caller sees no session.
                    self.failure = Some(ErrorCode::UNIQUE_VIOLATION);
                    Pc::Done
                }
            },
            (Pc::Insert, _) => self.finish_with(self.new_id, false),
        };
    }
}

/// `messages` messages of one user, each with its variant's calls, and for `ttl-cache` a clock.
pub struct SessionGetOrCreate {
    pub variant: Variant,
    pub messages: usize,
    /// Cache TTL and clock ticks, in seconds (`ttl-cache` only).
    pub ttl: u32,
    pub ticks: u8,
}

impl SessionGetOrCreate {
    fn calls(&self) -> usize {
        self.messages * self.variant.calls_per_message()
    }

    fn schema(&self) -> Schema {
        let unique = if self.variant == Variant::PartialUniqueIndex {
            vec![UniqueIndex {
                name: "idx_unique_active_session_per_user",
                columns: vec!["subcontractor_id"],
                predicate: Some(("status", ACTIVE)),
            }]
        } else {
            Vec::new()
        };
        Schema { tables: vec![TableDef { name: SESSIONS, columns: COLUMNS.to_vec(), unique }] }
    }
}

impl Model for SessionGetOrCreate {
    type Actor = SessionCall;

    fn init(&self) -> (World, Vec<SessionCall>) {
        let calls = self.calls();
        let cached = self.variant == Variant::TtlCache;
        let actors_total = calls + usize::from(cached);
        let mut world = World::new(self.schema(), actors_total);
        // The cache lives in the web process that runs every call.
        let cache = cached.then(|| world.add_part(TtlCache::new(self.ttl, (0..calls).collect())));
        let first_pc = if cached { Pc::CacheGet } else { Pc::Find };
        let mut actors: Vec<SessionCall> = (0..calls)
            .map(|i| SessionCall {
                variant: self.variant,
                new_id: i as i64 + 1,
                conn: world.connect(i),
                cache,
                pc: first_pc,
                session: None,
                reused: false,
                failure: None,
            })
            .collect();
        if cached {
            actors.push(SessionCall {
                variant: self.variant,
                new_id: CLOCK_ID,
                conn: 0,
                cache,
                pc: if self.ticks > 0 { Pc::Tick(self.ticks) } else { Pc::Done },
                session: None,
                reused: false,
                failure: None,
            });
        }
        (world, actors)
    }

    fn actor_names(&self) -> Vec<String> {
        let per = self.variant.calls_per_message();
        let mut names: Vec<String> = (0..self.calls())
            .map(|i| match (per, self.messages) {
                (3, 1) => TRIPLE[i].to_string(),
                (3, _) => format!("message {} {}", i / 3 + 1, TRIPLE[i % 3]),
                _ => format!("message {}", i + 1),
            })
            .collect();
        if self.variant == Variant::TtlCache {
            names.push("clock".to_string());
        }
        names
    }

    fn invariants(&self) -> Vec<Invariant<SessionCall>> {
        vec![Invariant::new(ONE_ACTIVE_SESSION_PER_USER, one_active_session_per_user)]
    }

    /// Every call runs the same code with the same parameters; each owns the id its insert
    /// uses. The clock is no call and stays outside the group.
    fn symmetry(&self) -> Option<Symmetry> {
        let calls = self.calls();
        let owned = (0..calls).map(|i| vec![Value::Int(i as i64 + 1)]).collect();
        (calls >= 2).then(|| Symmetry::group(0..calls, owned))
    }

    fn targets(&self) -> Vec<Target<SessionCall>> {
        vec![
            Target::new("a call created a session", |v: &View<Self::Actor>| {
                v.actors.iter().any(|a| a.session.is_some() && !a.reused)
            }),
            Target::new("a call reused the session another call created", |v: &View<Self::Actor>| {
                v.actors.iter().any(|a| a.reused)
            }),
        ]
    }
}

fn one_active_session_per_user(view: &View<'_, SessionCall>) -> Result<(), String> {
    let active: Vec<String> = view
        .world
        .db
        .committed_rows(SESSIONS)
        .iter()
        .filter(|r| r.get(USER_COL) == Some(&USER) && r.get(STATUS_COL) == Some(&ACTIVE))
        .map(|r| r[ID].to_string())
        .collect();
    if active.len() > 1 {
        return Err(format!("user {USER} has {} active sessions: {}", active.len(), active.join(", ")));
    }
    Ok(())
}

fn build(params: &Params, variant: Variant) -> Result<Box<dyn DynModel>, String> {
    let per = variant.calls_per_message();
    let default_messages = if per == 3 { 1 } else { 2 };
    // The clock of `ttl-cache` is one more actor.
    let most = (MAX_ACTORS - usize::from(variant == Variant::TtlCache)) / per;
    let messages = params.workers("messages", default_messages, 1, most)?;
    let (ttl, ticks) = if variant == Variant::TtlCache {
        (params.int("ttl", 1, 1, 5)? as u32, params.int("ticks", 1, 0, 6)? as u8)
    } else {
        (1, 0)
    };
    let model = SessionGetOrCreate { variant, messages, ttl, ticks };
    if model.calls() < 2 {
        return Err("one call alone cannot race: give `messages` = 2 or more".to_string());
    }
    Ok(Box::new(model))
}

pub fn race() -> RaceDef {
    RaceDef {
        id: "session-get-or-create",
        seed: "003_b75e7638340bacc9.txt",
        passage: "Multiple concurrent `get_or_create_session()` calls created duplicate sessions before database \
                  updates completed. […] **3 concurrent calls = race condition**",
        invariant: "Never two active sessions for one user.",
        variants: vec![
            VariantDef {
                id: "triple-call",
                summary: "one message calls get_or_create_session() three times at once (as found)",
                build: |p| build(p, Variant::TripleCall),
            },
            VariantDef {
                id: "ttl-cache",
                summary: "Phase 1: the three calls behind a per-process 5-second session cache",
                build: |p| build(p, Variant::TtlCache),
            },
            VariantDef {
                id: "pass-through",
                summary: "Phase 2: one call per message, session_id passed down; two messages at once",
                build: |p| build(p, Variant::PassThrough),
            },
            VariantDef {
                id: "partial-unique-index",
                summary: "Phase 5: unique index on the user's active session; a conflicting insert fetches the winner",
                build: |p| build(p, Variant::PartialUniqueIndex),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use racelab_harness::explore::shortest::replay;
    use racelab_harness::explore::Bounds;
    use racelab_harness::testing::{steps, texts};

    fn model(variant: Variant, messages: usize) -> SessionGetOrCreate {
        SessionGetOrCreate { variant, messages, ttl: 2, ticks: 3 }
    }

    #[test]
    fn triple_call_creates_three_sessions_for_one_click() {
        let m = model(Variant::TripleCall, 1);
        let r = replay(&m, &Bounds::default(), &steps(&[0, 1, 0, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "find_active_session(subcontractor_id=100, status=active) → none",
                "find_active_session(subcontractor_id=100, status=active) → none",
                "create_session(1, 100, active) → [1, 100, active]",
                "create_session(2, 100, active) → [2, 100, active]",
            ]
        );
        assert_eq!(r.violation.unwrap().invariant, ONE_ACTIVE_SESSION_PER_USER);
    }

    #[test]
    fn ttl_cache_is_filled_too_late_for_calls_that_start_together() {
        let m = model(Variant::TtlCache, 1);
        let r = replay(&m, &Bounds::default(), &steps(&[0, 1, 0, 1, 0, 1])).unwrap();
        assert_eq!(texts(&r.events)[..2], ["session_cache_get(100) → null", "session_cache_get(100) → null"]);
        assert_eq!(r.violation.unwrap().invariant, ONE_ACTIVE_SESSION_PER_USER);
    }

    #[test]
    fn ttl_cache_serves_a_later_call_until_the_entry_expires() {
        let m = model(Variant::TtlCache, 1);
        // The pipeline creates and caches; the handler hits the cache; two ticks expire it.
        let r = replay(&m, &Bounds::default(), &steps(&[0, 0, 0, 0, 1, 3, 3, 2])).unwrap();
        assert_eq!(r.violation, None);
        let cells = texts(&r.events);
        assert_eq!(cells[4], "session_cache_get(100) → 1");
        assert_eq!(cells[7], "session_cache_get(100) → null");
    }

    #[test]
    fn partial_unique_index_turns_the_second_insert_into_a_reuse() {
        let m = model(Variant::PartialUniqueIndex, 2);
        let r = replay(&m, &Bounds::default(), &steps(&[0, 1, 0, 1, 1])).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "find_active_session(subcontractor_id=100, status=active) → none",
                "find_active_session(subcontractor_id=100, status=active) → none",
                "create_session(1, 100, active) → [1, 100, active]",
                "create_session(2, 100, active) → 23505 unique_violation",
                "find_active_session(subcontractor_id=100, status=active) → [1, 100, active]",
            ]
        );
        assert_eq!(r.violation, None);
        assert_eq!(r.state.actors[1].session, Some(1));
    }
}
