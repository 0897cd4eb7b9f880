//! Random small transaction programs, run under the same schedule on the simulator and on a
//! real PostgreSQL server: the two step logs, what each actor saw, and the committed rows at
//! the end must agree. This test needs the PostgreSQL server binaries (it starts a throwaway
//! cluster of its own and stops it at the end).
//!
//! One table `t(id, k, v)` with a unique index on `k` (or a partial one, `WHERE v = 0`), one or
//! two seed rows, and two or three actors on a connection each. Every actor runs a fixed
//! program of one to five statements, whatever their outcomes, and then `ROLLBACK` and
//! `pg_advisory_unlock_all()`. A schedule is a list of actor picks: each pick runs the picked
//! actor's next step if it has one (a new statement, or collecting a granted wait), and now and
//! then loses its reply instead (the statement takes effect, the client sees 57014, or 55P03 for
//! a lock); after the picks, the first actor that can move moves until none can.
//!
//! The schedule is built on both at once, choice by choice. Where the server blocks and the
//! simulator did not (or the other way round), a later choice is not enabled on one side: that
//! is reported as such. A schedule ends when no actor can step; with
//! one connection per actor every wait cycle is PostgreSQL's to break (40P01). Its victim is a
//! race too: the simulator offers every member of the cycle, the server reports the same
//! members, and the pick (the pending actor's if it is one, else the first) is the victim on
//! both; where the server had failed another member, it repeats the run with the pick pinned.
//!
//! Races inside the server: when a transaction ends, every statement waiting for it wakes at
//! once, and which one reaches the row first is up to the operating system's scheduler. The
//! simulator offers every order (statements woken together are all ready, and nothing else moves
//! until one has); the two backends run in lockstep, and where the simulator offers a race the
//! racer the server let through moves (see [`lockstep`]). So the test asks that the simulator's
//! outcomes contain the server's, with no reruns.
//!
//! Row order: the simulator returns rows in insertion order, the server by the first column
//! (`ORDER BY 1`, and `RETURNING` rows are sorted). Every row gets a distinct `id`, and what
//! the actors saw and the committed rows are compared with their rows sorted; the step logs
//! only show row counts for several rows, so they are compared as they are.
//!
//! `PROPTEST_CASES` sets the number of cases (40 by default).

use std::fmt::Write as _;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use racelab_harness::explore::{Bounds, Choice, ChoiceKind, State};
use racelab_harness::model::{Actor, Invariant, Model, Target};
use racelab_harness::op::{ConnId, Expr, LockScope, OnConflict, Op, Outcome, Row, RowLock, Sql, Value};
use racelab_harness::run::Backend;
use racelab_harness::sim::{Schema, TableDef, UniqueIndex, World};
use racelab_pg::Cluster;

/// Cases run when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 40;
/// Actor picks per schedule, before the drain that runs everyone to the end.
const MAX_PICKS: usize = 30;

// ---- the model ----

/// An actor running a fixed program on its own connection, whatever the outcomes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Program {
    conn: ConnId,
    code: Vec<Sql>,
    pc: usize,
    /// Every outcome, rows sorted (the two backends order rows differently).
    seen: Vec<Outcome>,
}

impl Actor for Program {
    fn next_op(&self) -> Option<Op> {
        let stmt = self.code.get(self.pc)?.clone();
        Some(Op::sql(name(&stmt), self.conn, stmt))
    }
    fn on_outcome(&mut self, outcome: &Outcome) {
        self.seen.push(sorted(outcome));
        self.pc += 1;
    }
}

fn sorted(outcome: &Outcome) -> Outcome {
    match outcome {
        Outcome::Rows(rows) => {
            let mut rows = rows.clone();
            rows.sort();
            Outcome::Rows(rows)
        }
        other => other.clone(),
    }
}

/// The label of a statement in the log.
fn name(stmt: &Sql) -> &'static str {
    match stmt {
        Sql::Begin => "begin",
        Sql::BeginRepeatableRead => "begin_repeatable_read",
        Sql::Commit => "commit",
        Sql::Rollback => "rollback",
        Sql::SetLockTimeout(_) => "set_lock_timeout",
        Sql::Select { lock: None, .. } => "select",
        Sql::Select { lock: Some(RowLock::ForUpdate), .. } => "select_for_update",
        Sql::Select { lock: Some(RowLock::ForUpdateNowait), .. } => "select_for_update_nowait",
        Sql::Select { lock: Some(RowLock::ForUpdateSkipLocked), .. } => "select_for_update_skip_locked",
        Sql::Insert { on_conflict: OnConflict::Error, .. } => "insert",
        Sql::Insert { on_conflict: OnConflict::DoNothing { .. }, .. } => "insert",
        Sql::Insert { on_conflict: OnConflict::DoUpdate { .. }, .. } => "upsert",
        Sql::Update { .. } => "update",
        Sql::Delete { .. } => "delete",
        Sql::AdvisoryLock { scope: LockScope::Session, .. } => "pg_advisory_lock",
        Sql::AdvisoryLock { scope: LockScope::Xact, .. } => "pg_advisory_xact_lock",
        Sql::AdvisoryTryLock { scope: LockScope::Session, .. } => "pg_try_advisory_lock",
        Sql::AdvisoryTryLock { scope: LockScope::Xact, .. } => "pg_try_advisory_xact_lock",
        Sql::AdvisoryUnlock { .. } => "pg_advisory_unlock",
        Sql::AdvisoryUnlockAll => "pg_advisory_unlock_all",
    }
}

/// One generated case: the schema variant, the seed rows, the programs and the picks.
#[derive(Clone, Debug)]
struct Case {
    partial: bool,
    seed: Vec<Row>,
    programs: Vec<Vec<Sql>>,
    /// Actor, and whether its reply is lost.
    picks: Vec<(usize, bool)>,
}

impl Case {
    fn schema(&self) -> Schema {
        schema(self.partial)
    }
}

fn schema(partial: bool) -> Schema {
    let unique = if partial {
        UniqueIndex { name: "t_k_v0", columns: vec!["k"], predicate: Some(("v", Value::Int(0))) }
    } else {
        UniqueIndex { name: "t_k", columns: vec!["k"], predicate: None }
    };
    Schema { tables: vec![TableDef { name: "t", columns: vec!["id", "k", "v"], unique: vec![unique] }] }
}

impl Model for Case {
    type Actor = Program;
    fn init(&self) -> (World, Vec<Program>) {
        let mut world = World::new(self.schema(), self.programs.len());
        for row in &self.seed {
            world.db.seed_row("t", row.clone());
        }
        let actors = self
            .programs
            .iter()
            .enumerate()
            .map(|(a, code)| {
                let conn = world.connect(a);
                let mut code = code.clone();
                code.extend([Sql::Rollback, Sql::AdvisoryUnlockAll]);
                Program { conn, code, pc: 0, seen: Vec::new() }
            })
            .collect();
        (world, actors)
    }
    fn actor_names(&self) -> Vec<String> {
        (0..self.programs.len()).map(|i| format!("A{i}")).collect()
    }
    fn invariants(&self) -> Vec<Invariant<Program>> {
        Vec::new()
    }
    fn targets(&self) -> Vec<Target<Program>> {
        Vec::new()
    }
}

// ---- generation ----

/// A value of `k`, mostly 1 (the seed row's) so that statements meet on the same row.
fn key() -> impl Strategy<Value = i64> {
    prop_oneof![3 => Just(1i64), 2 => Just(2), 1 => Just(3)]
}

/// A statement; inserts get their `id` later, so that every row's `id` is distinct.
fn statement() -> impl Strategy<Value = Sql> {
    let filter = |k: i64| vec![("k", Value::Int(k))];
    prop_oneof![
        1 => Just(Sql::Begin),
        1 => Just(Sql::Commit),
        1 => Just(Sql::Rollback),
        3 => (key(), prop_oneof![
            Just(None),
            Just(Some(RowLock::ForUpdate)),
            Just(Some(RowLock::ForUpdateNowait)),
            Just(Some(RowLock::ForUpdateSkipLocked)),
        ])
            .prop_map(move |(k, lock)| Sql::Select { table: "t", filter: filter(k), lock }),
        4 => (key(), 0..=1i64, 0..3u8).prop_map(|(k, v, mode)| Sql::Insert {
            table: "t",
            row: vec![Value::Int(0), Value::Int(k), Value::Int(v)],
            on_conflict: match mode {
                0 => OnConflict::Error,
                1 => OnConflict::DoNothing { target: vec!["k"] },
                _ => OnConflict::DoUpdate { target: vec!["k"], set: vec![("v", Expr::Excluded("v"))] },
            },
        }),
        3 => key().prop_map(move |k| Sql::Update { table: "t", filter: filter(k), set: vec![("v", Expr::Add("v", 1))] }),
        2 => key().prop_map(move |k| Sql::Delete { table: "t", filter: filter(k) }),
        1 => (1..=2i64).prop_map(|key| Sql::AdvisoryLock { key, scope: LockScope::Session }),
        1 => (1..=2i64).prop_map(|key| Sql::AdvisoryLock { key, scope: LockScope::Xact }),
        1 => (1..=2i64).prop_map(|key| Sql::AdvisoryTryLock { key, scope: LockScope::Session }),
        1 => (1..=2i64).prop_map(|key| Sql::AdvisoryUnlock { key }),
    ]
}

/// One to five statements. Most programs open a transaction first (READ COMMITTED or
/// REPEATABLE READ), so that their locks and writes overlap with the other actors' statements.
fn program() -> impl Strategy<Value = Vec<Sql>> {
    let begin = prop_oneof![1 => Just(None), 2 => Just(Some(Sql::Begin)), 1 => Just(Some(Sql::BeginRepeatableRead))];
    (begin, prop::collection::vec(statement(), 1..=5)).prop_map(|(begin, mut body)| {
        if let Some(begin) = begin {
            body.truncate(4);
            body.insert(0, begin);
        }
        body
    })
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        proptest::option::of((key(), 0..=1i64)),
        prop::collection::vec(program(), 2..=3),
        prop::collection::vec((0..3usize, prop::bool::weighted(0.1)), 0..=MAX_PICKS),
    )
        .prop_map(|(partial, second, mut programs, picks)| {
            let mut seed = vec![vec![Value::Int(1), Value::Int(1), Value::Int(0)]];
            if let Some((k, v)) = second {
                // Keep the seed within the unique index.
                let clash = k == 1 && (!partial || v == 0);
                if !clash {
                    seed.push(vec![Value::Int(2), Value::Int(k), Value::Int(v)]);
                }
            }
            let mut id = 10;
            for stmt in programs.iter_mut().flatten() {
                if let Sql::Insert { row, .. } = stmt {
                    row[0] = Value::Int(id);
                    id += 1;
                }
            }
            let n = programs.len();
            Case { partial, seed, programs, picks: picks.into_iter().map(|(p, lost)| (p % n, lost)).collect() }
        })
}

// ---- running a case ----

fn bounds() -> Bounds {
    Bounds { max_depth: 1000, lost_replies: 3, ..Bounds::default() }
}

/// The choice that settles a race among statements woken together on the simulator: the racer
/// PostgreSQL let through (it is ready there), preferring `wanted`. The server's race is over
/// once the controller has settled; the simulator offers every order, and follows the server's.
fn settle_race(sim: &State<Program>, pg: &State<Program>, bounds: &Bounds, wanted: usize) -> Choice {
    let racing = sim.world.racing_actors();
    let on_pg = pg.choices(bounds);
    let step = |actor: usize| Choice { actor: actor as u8, kind: ChoiceKind::Step };
    let winners: Vec<usize> = racing.iter().copied().filter(|&a| on_pg.contains(&step(a))).collect();
    let pick = if winners.contains(&wanted) { wanted } else { winners.first().copied().unwrap_or(racing[0]) };
    step(pick)
}

/// How often statements woken together raced, and how often the server let a later one through.
#[derive(Default)]
struct Races {
    settled: std::cell::Cell<u32>,
    later_first: std::cell::Cell<u32>,
    /// Deadlocks (the server reports the cycle's members as racing), and how many of their
    /// victims were not the actor whose step closed the cycle (the server then repeats the run
    /// with that victim pinned).
    deadlocks: std::cell::Cell<u32>,
    earlier_victims: std::cell::Cell<u32>,
}

/// Run the case's picks on the simulator and the server in lockstep: each pick steps the picked
/// actor if it can (losing its reply if the pick says so); where statements woken together race
/// on the simulator, the one the server let through moves. Then the first actor that can step
/// does, until none can. Stops early where a choice is not enabled on the server.
fn lockstep(case: &Case, backend: &Backend, races: &Races) -> Result<(Vec<Choice>, Run, Run), String> {
    let bounds = bounds();
    let Backend::Real { db, .. } = backend else { panic!("lockstep runs against a server") };
    let mut sim = State::initial(case);
    let mut pg = State::initial_on(case, Some(db));
    let (mut sim_log, mut pg_log, mut choices) = (Vec::new(), Vec::new(), Vec::new());
    let mut not_enabled = None;
    let pick = |actor: usize, lost: bool| {
        let kind = if lost { ChoiceKind::LostReply } else { ChoiceKind::Step };
        Choice { actor: actor as u8, kind }
    };
    let mut picks = case.picks.iter().copied();
    let mut pending: Option<(usize, bool)> = None;
    for _ in 0..bounds.max_depth {
        let enabled = sim.choices(&bounds);
        let racing = sim.world.racing_actors();
        let choice = if !racing.is_empty() {
            let settled = settle_race(&sim, &pg, &bounds, pending.map_or(0, |p| p.0));
            if pg.world.racing_actors().is_empty() {
                races.settled.set(races.settled.get() + 1);
                if usize::from(settled.actor) != racing[0] {
                    races.later_first.set(races.later_first.get() + 1);
                }
            } else {
                races.deadlocks.set(races.deadlocks.get() + 1);
                if choices.last().is_some_and(|c: &Choice| c.actor != settled.actor) {
                    races.earlier_victims.set(races.earlier_victims.get() + 1);
                }
            }
            Some(settled)
        } else if let Some((a, lost)) = pending.take().or_else(|| picks.next()) {
            match [pick(a, lost), pick(a, false)].into_iter().find(|c| enabled.contains(c)) {
                Some(c) => Some(c),
                None => continue,
            }
        } else {
            enabled.iter().copied().find(|c| c.kind == ChoiceKind::Step)
        };
        let Some(choice) = choice else { break };
        if !pg.choices(&bounds).contains(&choice) {
            not_enabled = Some(choices.len());
            sim_log.push(sim.apply_described(choice, &bounds).0.text);
            choices.push(choice);
            break;
        }
        sim_log.push(sim.apply_described(choice, &bounds).0.text);
        pg_log.push(pg.apply_described(choice, &bounds).0.text);
        choices.push(choice);
    }
    let finish = |state: &State<Program>, log: Vec<String>, not_enabled| {
        let mut committed = state.world.db.committed_rows("t");
        committed.sort();
        Run { log, not_enabled, seen: state.actors.iter().map(|a| a.seen.clone()).collect(), committed }
    };
    let sim_run = finish(&sim, sim_log, None);
    let pg_run = finish(&pg, pg_log, not_enabled);
    if let Some(failure) = db.lock().expect("backend lock").failure() {
        return Err(failure);
    }
    Ok((choices, sim_run, pg_run))
}

/// What one backend did with a schedule.
#[derive(PartialEq, Eq)]
struct Run {
    log: Vec<String>,
    /// The first choice that was not enabled, by step.
    not_enabled: Option<usize>,
    seen: Vec<Vec<Outcome>>,
    committed: Vec<Row>,
}

fn sql_text(stmt: &Sql, schema: &Schema) -> String {
    racelab_pg::sql::render(stmt, schema)
}

/// The case, the schedule and both logs side by side.
fn report(case: &Case, choices: &[Choice], sim: &Run, pg: &Run, why: &str) -> String {
    let schema = case.schema();
    let mut s = String::new();
    let _ = writeln!(s, "simulator and PostgreSQL disagree: {why}");
    let index = if case.partial { "UNIQUE (k) WHERE v = 0" } else { "UNIQUE (k)" };
    let _ = writeln!(s, "schema: t(id, k, v) {index}; seed {:?}", case.seed);
    for (a, code) in case.programs.iter().enumerate() {
        let _ = writeln!(s, "A{a}:");
        for stmt in code.iter().chain(&[Sql::Rollback, Sql::AdvisoryUnlockAll]) {
            let _ = writeln!(s, "    {}", sql_text(stmt, &schema));
        }
    }
    let picks: Vec<String> = choices
        .iter()
        .map(|c| format!("A{}{}", c.actor, if c.kind == ChoiceKind::LostReply { " (reply lost)" } else { "" }))
        .collect();
    let _ = writeln!(s, "schedule: {}", picks.join(" "));
    let width = sim.log.iter().map(|l| l.chars().count()).max().unwrap_or(0).max(9) + 3;
    let _ = writeln!(s, "step  who  {:<width$}postgres", "simulator");
    for (k, c) in choices.iter().enumerate() {
        let cell = |r: &Run| match (r.log.get(k), r.not_enabled) {
            (Some(l), _) => l.clone(),
            (None, Some(n)) if n == k => "(not enabled)".into(),
            _ => String::new(),
        };
        let (a, b) = (cell(sim), cell(pg));
        let mark = if a == b { " " } else { "≠" };
        let _ = writeln!(s, "{k:>4}{mark} A{:<3} {a:<width$}{b}", c.actor);
    }
    let _ = writeln!(s, "seen (sim): {:?}", sim.seen);
    let _ = writeln!(s, "seen (pg):  {:?}", pg.seen);
    let _ = writeln!(s, "committed (sim): {:?}", sim.committed);
    let _ = writeln!(s, "committed (pg):  {:?}", pg.committed);
    s
}

fn compare(case: &Case, choices: &[Choice], sim: &Run, pg: &Run) -> Result<(), String> {
    assert!(sim.not_enabled.is_none(), "the schedule was built on the simulator");
    let why = if let Some(k) = (0..sim.log.len()).find(|&k| pg.log.get(k) != sim.log.get(k)) {
        match pg.not_enabled {
            Some(n) if n == k => format!("step {k} is not enabled on PostgreSQL"),
            _ => format!("step {k} differs"),
        }
    } else if pg.log.len() != sim.log.len() {
        format!("PostgreSQL ran {} steps, the simulator {}", pg.log.len(), sim.log.len())
    } else if pg.seen != sim.seen {
        "the actors saw different outcomes".into()
    } else if pg.committed != sim.committed {
        "the committed rows differ".into()
    } else {
        return Ok(());
    };
    Err(report(case, choices, sim, pg, &why))
}

/// Backends for the current schema variant and actor count. Opening one recreates the table,
/// so only one is kept at a time.
struct Backends<'a> {
    cluster: &'a Cluster,
    current: Option<((bool, usize), Backend)>,
}

impl Backends<'_> {
    fn get(&mut self, partial: bool, actors: usize) -> Result<Backend, String> {
        match &self.current {
            Some((key, b)) if *key == (partial, actors) => Ok(b.clone()),
            _ => {
                // Close the old sessions before the new ones recreate the table.
                self.current = None;
                let b = racelab_pg::postgres(self.cluster, &schema(partial), &[], actors).map_err(|e| e.to_string())?;
                self.current = Some(((partial, actors), b.clone()));
                Ok(b)
            }
        }
    }
}

fn cases() -> u32 {
    match std::env::var("PROPTEST_CASES") {
        Ok(n) => n.trim().parse().unwrap_or_else(|_| panic!("PROPTEST_CASES={n} is not a number")),
        Err(_) => DEFAULT_CASES,
    }
}

#[test]
fn simulator_matches_postgres_on_random_programs() {
    racelab_pg::install_interrupt_cleanup().expect("interrupt cleanup");
    let cluster = Cluster::embedded().unwrap_or_else(|e| panic!("cannot start an embedded PostgreSQL cluster: {e}"));
    let backends = std::cell::RefCell::new(Backends { cluster: &cluster, current: None });
    let mut config = Config { cases: cases(), max_shrink_iters: 256, failure_persistence: None, ..Config::default() };
    // Every run draws the same programs unless PROPTEST_RNG_SEED asks for others.
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x7261_6365);
    }
    let mut runner = TestRunner::new(config);
    let ran = std::cell::Cell::new(0u32);
    let races = Races::default();
    let result = runner.run(&case(), |case| {
        ran.set(ran.get() + 1);
        let backend = backends.borrow_mut().get(case.partial, case.programs.len()).map_err(TestCaseError::fail)?;
        let (choices, sim, pg) =
            lockstep(&case, &backend, &races).map_err(|e| TestCaseError::fail(format!("server failure: {e}")))?;
        compare(&case, &choices, &sim, &pg).map_err(TestCaseError::fail)
    });
    drop(backends);
    drop(cluster);
    match result {
        Err(proptest::test_runner::TestError::Fail(report, _)) => {
            panic!("after {} runs (shrinking included), the smallest case found:\n{report}", ran.get())
        }
        Err(e) => panic!("{e}"),
        Ok(()) => {}
    }
    eprintln!(
        "{} cases agreed; {} races among woken statements, {} won by one that started waiting later; \
         {} deadlocks, {} of them with a victim other than the closer",
        ran.get(),
        races.settled.get(),
        races.later_first.get(),
        races.deadlocks.get(),
        races.earlier_victims.get()
    );
}
