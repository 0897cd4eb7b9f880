//! `judge-persist`: `POST /judge` answers 200 before the judgment is stored.
//!
//! Seed `002_80ca205b53ca1f38.txt`, "The Problem (Diagnosed)":
//!
//! > 3. `_persist_judgment()` called (fire-and-forget ✗) …
//! > 5. HTTP 200 returned IMMEDIATELY
//! > 6. (in background) DB maybe saves, maybe fails silently …
//! > 8. Next request: Data may or may not exist → RACE CONDITION
//!
//! and "Task 0.1" / "Task 0.3": `_persist_judgment_async()` re-raises the save's error, and
//! `/judge` awaits it before it returns, so that "POST /judge → (AWAIT persist) → HTTP 200 (data
//! guaranteed)" and "GET /judge/{id} → 200 (always found)".
//!
//! The handler runs the judgment, then either spawns the INSERT as a background task of the
//! server process (whose errors are "logged at DEBUG level, never raised") and answers 200 at
//! once, or awaits the INSERT and answers 500 if it fails. The client then fetches the judgment
//! by id. In the first form the GET can run before the task's INSERT; a failed INSERT, or a
//! server process that dies after the 200, loses a judgment the client was told was stored.
//!
//! Variants:
//! - `fire-and-forget`: as found.
//! - `await-persist`: the plan's fix (Task 0.3), for the DB save. The guidance write is the
//!   separate race `guidance-write`.
//!
//! Invariants: a client that got 200 finds its judgment with `GET /judge/{id}`; and a judgment
//! that got a 200 is committed in the final state.
//!
//! One client: requests for different judgments share no rows, so more clients add states and
//! no interleaving that matters. The judgment id is fixed per request: the one the response body
//! would carry, which the request here carries as its argument.

use racelab_harness::catalogue::{Params, RaceDef, VariantDef};
use racelab_harness::model::{Actor, Invariant, Model, Phase, Target, View};
use racelab_harness::op::{ActorId, ConnId, ErrorCode, HttpOp, OnConflict, Op, OsOp, Outcome, Sql, Value};
use racelab_harness::sim::{Schema, TableDef, UniqueIndex, World};

pub const JUDGMENTS: &str = "judgments";
pub const ROUTE: &str = "/judge";
/// The id of the judgment the client asks for.
pub const JUDGMENT_ID: i64 = 1;
pub const VERDICT: Value = Value::Str("APPROVE");
pub const GET_AFTER_200_FINDS_JUDGMENT: &str = "get-after-200-finds-judgment";
pub const JUDGMENT_WITH_200_IS_STORED: &str = "judgment-with-200-is-stored";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    FireAndForget,
    AwaitPersist,
}

fn save(conn: ConnId, judgment_id: i64) -> Op {
    Op::sql(
        "repo.save",
        conn,
        Sql::Insert { table: JUDGMENTS, row: vec![Value::Int(judgment_id), VERDICT], on_conflict: OnConflict::Error },
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ClientPc {
    PostJudge,
    GetJudgment,
    Done,
}

/// The caller of `POST /judge`, then of `GET /judge/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Client {
    conn: ConnId,
    pc: ClientPc,
    /// The status of `POST /judge`, if a response came.
    status: Option<u16>,
    /// Whether `GET /judge/{id}` found the judgment, if it answered.
    found: Option<bool>,
}

impl Actor for Client {
    fn next_op(&self) -> Option<Op> {
        Some(match self.pc {
            ClientPc::PostJudge => Op::http("POST", HttpOp::Request { route: ROUTE, arg: Value::Int(JUDGMENT_ID) }),
            ClientPc::GetJudgment => Op::sql(
                "GET /judge",
                self.conn,
                Sql::Select { table: JUDGMENTS, filter: vec![("id", Value::Int(JUDGMENT_ID))], lock: None },
            ),
            ClientPc::Done => return None,
        })
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        self.pc = match (self.pc, outcome) {
            (ClientPc::PostJudge, Outcome::Status(status)) => {
                self.status = Some(*status);
                if *status == 200 {
                    ClientPc::GetJudgment
                } else {
                    ClientPc::Done
                }
            }
            // Connection reset or refused: no answer, nothing promised.
            (ClientPc::PostJudge, _) => ClientPc::Done,
            (ClientPc::GetJudgment, Outcome::Err(_)) => ClientPc::Done,
            (ClientPc::GetJudgment, rows) => {
                self.found = Some(!rows.rows().is_empty());
                ClientPc::Done
            }
            (pc, o) => panic!("client at {pc:?} got {o:?}"),
        };
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum HandlerPc {
    Accept,
    RunJudgment,
    Persist,
    Respond,
    Done,
}

/// The `judge()` route handler in the server process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Handler {
    variant: Variant,
    /// Its own connection (`await-persist`).
    conn: Option<ConnId>,
    /// The dormant background task it spawns (`fire-and-forget`).
    persist_task: Option<ActorId>,
    pc: HandlerPc,
    judgment_id: Option<i64>,
    status: u16,
}

impl Actor for Handler {
    fn next_op(&self) -> Option<Op> {
        Some(match self.pc {
            HandlerPc::Accept => Op::http("judge", HttpOp::Accept { route: ROUTE }),
            HandlerPc::RunJudgment => Op::local("orchestrator.run"),
            HandlerPc::Persist => match self.variant {
                Variant::FireAndForget => {
                    Op::os("_persist_judgment", OsOp::SpawnTask { actor: self.persist_task.expect("a persist task") })
                }
                Variant::AwaitPersist => save(self.conn.expect("a connection"), self.judgment_id?),
            },
            HandlerPc::Respond => Op::http("return", HttpOp::Respond { status: self.status }),
            HandlerPc::Done => return None,
        })
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        self.pc = match (self.pc, outcome) {
            (HandlerPc::Accept, Outcome::Value(Value::Int(id))) => {
                self.judgment_id = Some(*id);
                HandlerPc::RunJudgment
            }
            // A timed-out accept (no request yet) is retried, as a server's accept loop does.
            (HandlerPc::Accept, Outcome::Err(_)) => HandlerPc::Accept,
            (HandlerPc::RunJudgment, _) => HandlerPc::Persist,
            (HandlerPc::Persist, outcome) => {
                // A failed spawn, or (await-persist) a failed save, raises: FastAPI answers 500.
                self.status = if outcome.is_err() { 500 } else { 200 };
                HandlerPc::Respond
            }
            (HandlerPc::Respond, _) => HandlerPc::Done,
            (pc, o) => panic!("handler at {pc:?} got {o:?}"),
        };
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum PersistPc {
    Start,
    Save,
    Done,
}

/// The background task `_persist_judgment()` (`fire-and-forget`), a task of the server process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PersistTask {
    conn: ConnId,
    /// The judgment the handler handed it when it created the task.
    judgment_id: i64,
    pc: PersistPc,
    /// The error it logged at DEBUG and dropped.
    dropped_error: Option<ErrorCode>,
}

impl Actor for PersistTask {
    fn next_op(&self) -> Option<Op> {
        Some(match self.pc {
            PersistPc::Start => Op::os("create_task", OsOp::AwaitSpawn),
            PersistPc::Save => save(self.conn, self.judgment_id),
            PersistPc::Done => return None,
        })
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        self.pc = match (self.pc, outcome) {
            // A timed-out wait to be spawned leaves the task unspawned, still waiting.
            (PersistPc::Start, Outcome::Err(_)) => PersistPc::Start,
            (PersistPc::Start, _) => PersistPc::Save,
            (PersistPc::Save, Outcome::Err(e)) => {
                self.dropped_error = Some(*e);
                PersistPc::Done
            }
            (PersistPc::Save, _) => PersistPc::Done,
            (pc, o) => panic!("persist task at {pc:?} got {o:?}"),
        };
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum JudgeActor {
    Client(Client),
    Handler(Handler),
    PersistTask(PersistTask),
}

impl JudgeActor {
    fn client(&self) -> Option<&Client> {
        match self {
            JudgeActor::Client(c) => Some(c),
            _ => None,
        }
    }
}

impl Actor for JudgeActor {
    fn next_op(&self) -> Option<Op> {
        match self {
            JudgeActor::Client(c) => c.next_op(),
            JudgeActor::Handler(h) => h.next_op(),
            JudgeActor::PersistTask(t) => t.next_op(),
        }
    }

    fn on_outcome(&mut self, outcome: &Outcome) {
        match self {
            JudgeActor::Client(c) => c.on_outcome(outcome),
            JudgeActor::Handler(h) => h.on_outcome(outcome),
            JudgeActor::PersistTask(t) => t.on_outcome(outcome),
        }
    }
}

const CLIENT: ActorId = 0;
const HANDLER: ActorId = 1;
/// Only in `fire-and-forget`.
const PERSIST_TASK: ActorId = 2;

/// A client process, and a server process running the handler (and, in `fire-and-forget`, the
/// background task it spawns; a server crash kills both).
pub struct JudgePersist {
    pub variant: Variant,
}

impl JudgePersist {
    fn schema() -> Schema {
        Schema {
            tables: vec![TableDef {
                name: JUDGMENTS,
                columns: vec!["id", "verdict"],
                unique: vec![UniqueIndex { name: "judgments_pkey", columns: vec!["id"], predicate: None }],
            }],
        }
    }
}

impl Model for JudgePersist {
    type Actor = JudgeActor;

    fn init(&self) -> (World, Vec<JudgeActor>) {
        let actors = match self.variant {
            Variant::FireAndForget => 3,
            Variant::AwaitPersist => 2,
        };
        let mut world = World::new(Self::schema(), actors);
        world.os.start_process(&[CLIENT]);
        world.os.start_process(&[HANDLER]);
        world.http.listen(ROUTE, HANDLER);
        let client = Client { conn: world.connect(CLIENT), pc: ClientPc::PostJudge, status: None, found: None };
        let mut handler = Handler {
            variant: self.variant,
            conn: None,
            persist_task: None,
            pc: HandlerPc::Accept,
            judgment_id: None,
            status: 200,
        };
        let mut all = vec![JudgeActor::Client(client)];
        match self.variant {
            Variant::FireAndForget => {
                world.os.add_dormant(PERSIST_TASK);
                handler.persist_task = Some(PERSIST_TASK);
                all.push(JudgeActor::Handler(handler));
                all.push(JudgeActor::PersistTask(PersistTask {
                    conn: world.connect(PERSIST_TASK),
                    judgment_id: JUDGMENT_ID,
                    pc: PersistPc::Start,
                    dropped_error: None,
                }));
            }
            Variant::AwaitPersist => {
                handler.conn = Some(world.connect(HANDLER));
                all.push(JudgeActor::Handler(handler));
            }
        }
        (world, all)
    }

    fn actor_names(&self) -> Vec<String> {
        let mut names = vec!["client".to_string(), "judge()".to_string()];
        if self.variant == Variant::FireAndForget {
            names.push("_persist_judgment task".to_string());
        }
        names
    }

    fn invariants(&self) -> Vec<Invariant<JudgeActor>> {
        vec![
            Invariant::new(GET_AFTER_200_FINDS_JUDGMENT, get_after_200_finds_judgment),
            Invariant::new(JUDGMENT_WITH_200_IS_STORED, judgment_with_200_is_stored),
        ]
    }

    fn targets(&self) -> Vec<Target<JudgeActor>> {
        vec![
            Target::new("the client received 200", |v| client(v).status == Some(200)),
            Target::new("the client looked the judgment up", |v| client(v).found.is_some()),
            Target::new("the judgment row was written", judgment_stored),
        ]
    }
}

fn client<'a>(v: &View<'a, JudgeActor>) -> &'a Client {
    v.actors[CLIENT].client().expect("actor 0 is the client")
}

fn judgment_stored(v: &View<'_, JudgeActor>) -> bool {
    v.world.db.committed_rows(JUDGMENTS).iter().any(|row| row.first() == Some(&Value::Int(JUDGMENT_ID)))
}

fn get_after_200_finds_judgment(v: &View<'_, JudgeActor>) -> Result<(), String> {
    let c = client(v);
    if c.status == Some(200) && c.found == Some(false) {
        return Err(format!("POST /judge answered 200 but GET /judge/{JUDGMENT_ID} found no judgment"));
    }
    Ok(())
}

fn judgment_with_200_is_stored(v: &View<'_, JudgeActor>) -> Result<(), String> {
    if v.phase == Phase::Final && client(v).status == Some(200) && !judgment_stored(v) {
        return Err(format!("POST /judge answered 200 but judgment {JUDGMENT_ID} was never committed"));
    }
    Ok(())
}

pub fn race() -> RaceDef {
    RaceDef {
        id: "judge-persist",
        seed: "002_80ca205b53ca1f38.txt",
        passage: "3. `_persist_judgment()` called (fire-and-forget ✗) … 5. HTTP 200 returned IMMEDIATELY 6. (in \
                  background) DB maybe saves, maybe fails silently … Task 0.3: AWAIT all persistence before \
                  returning HTTP 200",
        invariant: "After a 200 from POST /judge, GET /judge/{id} finds the judgment, and it is never lost.",
        variants: vec![
            VariantDef {
                id: "fire-and-forget",
                summary: "as found: the INSERT runs in a background task whose errors are logged and dropped",
                build: |_: &Params| Ok(Box::new(JudgePersist { variant: Variant::FireAndForget })),
            },
            VariantDef {
                id: "await-persist",
                summary: "the plan's fix: the handler awaits the INSERT and answers 500 if it fails",
                build: |_: &Params| Ok(Box::new(JudgePersist { variant: Variant::AwaitPersist })),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use racelab_harness::explore::shortest::replay;
    use racelab_harness::explore::Bounds;
    use racelab_harness::model::Status;
    use racelab_harness::testing::{crash, error, steps, texts, violated};

    /// POST → accept → run → spawn the task → 200 → the client's GET before the task's INSERT.
    #[test]
    fn fire_and_forget_get_before_the_background_insert_finds_nothing() {
        let model = JudgePersist { variant: Variant::FireAndForget };
        let schedule = steps(&[CLIENT, HANDLER, HANDLER, HANDLER, HANDLER, CLIENT, CLIENT]);
        let r = replay(&model, &Bounds::default(), &schedule).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "POST(/judge 1) … waits", // POST waits for the response
                "judge(/judge) → 1",
                "orchestrator.run → ok",
                "_persist_judgment → ok", // the task is spawned
                "return(200) → ok",
                // No violation until here: the replay stops at the first one.
                "POST(/judge 1) ⇐ HTTP 200",
                "GET /judge(id=1) → none", // the INSERT has not run
            ]
        );
        assert_eq!(r.violation.unwrap().invariant, "get-after-200-finds-judgment");
        assert_eq!(violated(&model, &r.state, Phase::Step), ["get-after-200-finds-judgment"]);
    }

    /// The server process dies after the 200 and before the task's INSERT: the task dies too.
    #[test]
    fn fire_and_forget_server_crash_after_200_loses_the_judgment() {
        let model = JudgePersist { variant: Variant::FireAndForget };
        let bounds = Bounds { crashes: 1, ..Bounds::default() };
        let schedule = [
            steps(&[CLIENT, HANDLER, HANDLER, HANDLER, HANDLER]),
            // Only a live actor can be chosen to crash, and the handler has returned: the server
            // process is crashed through its background task.
            vec![crash(PERSIST_TASK)],
            steps(&[CLIENT, CLIENT]),
        ]
        .concat();
        let r = replay(&model, &bounds, &schedule).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "POST(/judge 1) … waits",
                "judge(/judge) → 1",
                "orchestrator.run → ok",
                "_persist_judgment → ok",
                "return(200) → ok",
                "✗ crash",
                "POST(/judge 1) ⇐ HTTP 200",
                "GET /judge(id=1) → none",
            ]
        );
        assert_eq!(r.events[5].also_crashed, [HANDLER], "the handler dies with the task's process");
        assert_eq!(r.state.status[PERSIST_TASK], Status::Crashed);
        assert!(r.state.status.iter().all(|s| *s != Status::Running && *s != Status::Waiting), "a final state");
        assert_eq!(r.violation.unwrap().invariant, "get-after-200-finds-judgment");
        assert!(violated(&model, &r.state, Phase::Final).contains(&"judgment-with-200-is-stored"));
    }

    /// Under the fix, a crash before the response resets the client's request: no 200.
    #[test]
    fn await_persist_crash_before_the_response_gives_no_200() {
        let model = JudgePersist { variant: Variant::AwaitPersist };
        let bounds = Bounds { crashes: 1, ..Bounds::default() };
        let schedule = [steps(&[CLIENT, HANDLER, HANDLER, HANDLER]), vec![crash(HANDLER)], steps(&[CLIENT])].concat();
        let r = replay(&model, &bounds, &schedule).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "POST(/judge 1) … waits",
                "judge(/judge) → 1",
                "orchestrator.run → ok",
                "repo.save(1, APPROVE) → [1, APPROVE]",
                "✗ crash",
                "POST(/judge 1) ⇐ ECONNRESET",
            ]
        );
        assert_eq!(r.violation, None);
        assert!(violated(&model, &r.state, Phase::Final).is_empty());
    }

    /// Under the fix, a failed INSERT answers 500.
    #[test]
    fn await_persist_failed_save_answers_500() {
        let model = JudgePersist { variant: Variant::AwaitPersist };
        let bounds = Bounds { errors: 1, ..Bounds::default() };
        let schedule = [steps(&[CLIENT, HANDLER, HANDLER]), vec![error(HANDLER)], steps(&[HANDLER, CLIENT])].concat();
        let r = replay(&model, &bounds, &schedule).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "POST(/judge 1) … waits",
                "judge(/judge) → 1",
                "orchestrator.run → ok",
                "repo.save(1, APPROVE) → 58030 io_error [injected]",
                "return(500) → ok",
                "POST(/judge 1) ⇐ HTTP 500",
            ]
        );
        assert_eq!(r.violation, None);
        assert!(violated(&model, &r.state, Phase::Final).is_empty());
    }

    /// Needs the database simulator: with the stub, SELECT returns no rows.
    #[test]
    fn await_persist_get_after_200_finds_the_judgment() {
        let model = JudgePersist { variant: Variant::AwaitPersist };
        let schedule = steps(&[CLIENT, HANDLER, HANDLER, HANDLER, HANDLER, CLIENT, CLIENT]);
        let r = replay(&model, &Bounds::default(), &schedule).unwrap();
        assert_eq!(
            texts(&r.events),
            [
                "POST(/judge 1) … waits",
                "judge(/judge) → 1",
                "orchestrator.run → ok",
                "repo.save(1, APPROVE) → [1, APPROVE]",
                "return(200) → ok",
                "POST(/judge 1) ⇐ HTTP 200",
                "GET /judge(id=1) → [1, APPROVE]",
            ]
        );
        assert_eq!(r.violation, None);
        assert!(violated(&model, &r.state, Phase::Final).is_empty());
    }

    #[test]
    fn the_race_has_both_variants() {
        let race = race();
        let ids: Vec<_> = race.variants.iter().map(|v| v.id).collect();
        assert_eq!(ids, ["fire-and-forget", "await-persist"]);
        for v in &race.variants {
            assert!((v.build)(&Params::default()).is_ok());
        }
    }
}
