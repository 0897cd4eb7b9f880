//! A scenario's schedule as a PostgreSQL isolation-test spec, so that PostgreSQL's own
//! isolation tester (or `racelab pg-spec`) replays the race on any server.
//!
//! The schedule is the shortest counterexample on the simulator, a given token, or, for a
//! scenario that holds, its first explored schedule. It is replayed on the simulator, and every
//! SQL statement it actually sends becomes one step of the session of its connection; the
//! permutation lists the steps in the order they were sent. A statement that waited is listed
//! where it was sent: the tester notices the wait itself. Collecting a granted wait, local steps
//! and non-database ops send nothing and leave no step.
//!
//! A counterexample stops where the invariant breaks, which may leave a session waiting for a
//! lock that a later step of the schedule would release; a tester would then wait for its step
//! timeout. So the schedule is completed: after it, the first actor able to move moves, until
//! none can. The header says how many steps were added.
//!
//! Faults (a crash, an injected error, a timeout) have no spelling in a spec, so a schedule with
//! one is refused. When the simulator aborted a statement with `40P01 deadlock_detected` (the
//! victim the explorer picked, which need not be the statement that closed the cycle), the
//! spec makes PostgreSQL choose the same victim: it aborts whichever waiter runs its deadlock
//! check first, so the victim's session checks after 100 ms and every other after 10 s
//! (`deadlock_timeout` is a superuser setting).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use racelab_harness::catalogue::DynModel;
use racelab_harness::explore::shortest::{NotEnabled, Trace};
use racelab_harness::explore::{Bounds, Choice, ChoiceKind};
use racelab_harness::op::{ActorId, ConnId, ErrorCode, Op, OpKind, Outcome, Sql, SqlOp};
use racelab_harness::run::{Backend, Mode, Verdict};
use racelab_harness::token::{self, TokenError};

use crate::sql::{drop_sql, literal, render, schema_sql};

/// `deadlock_timeout` of the session the simulator chose as a deadlock's victim.
const VICTIM_DEADLOCK_TIMEOUT: &str = "100ms";
/// `deadlock_timeout` of every other session when the schedule has a deadlock.
const OTHER_DEADLOCK_TIMEOUT: &str = "10s";

/// Why a scenario or schedule cannot be exported.
#[derive(Debug)]
pub enum ExportError {
    /// The scenario opens no database connection.
    NoDatabase,
    /// The token is malformed or names another scenario.
    Token(TokenError),
    /// The schedule does not replay on this scenario.
    NotEnabled(NotEnabled),
    /// The schedule holds a fault, which a spec cannot express.
    Fault { step: usize, actor: String, kind: ChoiceKind },
    /// The schedule sends no SQL statement.
    NoStatements,
    /// A statement cannot be written inside a spec's `{ … }` block.
    Unwritable(String),
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExportError::NoDatabase => {
                f.write_str("it has no database: there is nothing to write as an isolation spec")
            }
            ExportError::Token(e) => write!(f, "{e}"),
            ExportError::NotEnabled(e) => write!(
                f,
                "the schedule does not replay: step {} picks actor {} ({:?}), which cannot move there",
                e.step, e.choice.actor, e.choice.kind
            ),
            ExportError::Fault { step, actor, kind } => write!(
                f,
                "the schedule injects a fault ({} of {actor} at step {step}), and an isolation spec cannot \
                 express crashes, injected errors, timeouts or power losses",
                match kind {
                    ChoiceKind::Crash => "a crash",
                    ChoiceKind::Error => "an injected error",
                    ChoiceKind::Timeout => "a timeout",
                    ChoiceKind::LostReply => "a lost reply",
                    ChoiceKind::PowerLoss => "a power loss",
                    ChoiceKind::Step => "a step",
                }
            ),
            ExportError::NoStatements => f.write_str("the schedule sends no SQL statement"),
            ExportError::Unwritable(sql) => {
                write!(f, "a statement contains `}}`, which ends a spec's SQL block: {sql}")
            }
        }
    }
}

impl std::error::Error for ExportError {}

/// A statement the schedule sent.
#[derive(Clone, Debug)]
struct Sent {
    actor: ActorId,
    conn: ConnId,
    name: &'static str,
    stmt: Sql,
    /// Its outcome on the simulator, once delivered.
    outcome: Option<Outcome>,
}

/// The schedule of `model` (registered as `id`) as an isolation spec: the one in `token`, else
/// the shortest counterexample on the simulator, else the first explored schedule. `version`
/// is racelab's, for the header.
pub fn export_spec(
    id: &str,
    model: &dyn DynModel,
    bounds: &Bounds,
    token: Option<&str>,
    version: &str,
) -> Result<String, ExportError> {
    let shape = model.database_shape(bounds).ok_or(ExportError::NoDatabase)?;
    let (token, schedule, origin) = match token {
        Some(t) => (t.trim().to_string(), token::decode(id, t).map_err(ExportError::Token)?, "the given schedule"),
        None => default_schedule(id, model, bounds),
    };
    let actors = model.actor_names();
    if let Some((step, c)) = schedule.iter().enumerate().find(|(_, c)| c.kind != ChoiceKind::Step) {
        let actor = actors.get(usize::from(c.actor)).cloned().unwrap_or_else(|| format!("actor {}", c.actor));
        return Err(ExportError::Fault { step, actor, kind: c.kind });
    }
    let sim = model.replay(bounds, &schedule, &Backend::Sim).map_err(ExportError::NotEnabled)?;
    let (trace, added) = complete(model, bounds, schedule)?;
    let sent = statements(&trace);
    if sent.is_empty() {
        return Err(ExportError::NoStatements);
    }

    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "# {id}: {origin}, exported by racelab {version} (racelab export-spec).");
    let _ = writeln!(w, "# token: {token}");
    match (&sim.verdict, &sim.invariant, &sim.detail) {
        (Verdict::Violated, Some(inv), Some(detail)) => {
            let _ = writeln!(w, "# On racelab's simulator it violates {inv}: {detail}");
        }
        _ => {
            let _ = writeln!(w, "# On racelab's simulator it violates no invariant.");
        }
    }
    if added > 0 {
        let _ = writeln!(w, "# Then {added} more steps let every session finish (the first actor able to move moves).");
    }
    let _ = writeln!(w, "# Each session is one database connection; each step is one statement the schedule sent,");
    let _ = writeln!(w, "# and the permutation is the order they were sent in. A statement that waited for a lock is");
    let _ = writeln!(w, "# listed where it was sent: the isolation tester reports the wait.");
    let _ = writeln!(w, "# Run it with `racelab pg-spec FILE` or PostgreSQL's isolationtester.");
    let outside: Vec<String> = trace
        .steps
        .iter()
        .filter_map(|(_, op)| op.as_ref())
        .filter(|op| matches!(op.kind, OpKind::Part(_) | OpKind::Os(_) | OpKind::Http(_)))
        .map(|op| op.label())
        .collect();
    if let Some(first) = outside.first() {
        let _ = writeln!(
            w,
            "# The schedule also runs {} ops outside the database ({first}, …), which a spec cannot hold:\n\
             # the spec replays its SQL only, and what the race needs from those ops is not in it.",
            outside.len()
        );
    }

    let text: Vec<(&str, &str)> = shape.text_columns.iter().map(|&(t, c)| (t, c)).collect();
    if !shape.schema.tables.is_empty() {
        let mut setup: Vec<String> = schema_sql(&shape.schema, &text);
        for (table, row) in &trace.seed {
            let values: Vec<String> = row.iter().map(|&v| literal(v)).collect();
            setup.push(format!("INSERT INTO {table} VALUES ({})", values.join(", ")));
        }
        let _ = writeln!(w, "\nsetup\n{{");
        for s in &setup {
            let _ = writeln!(w, "  {s};");
        }
        let _ = writeln!(w, "}}\n\nteardown\n{{");
        for s in drop_sql(&shape.schema) {
            let _ = writeln!(w, "  {s};");
        }
        let _ = writeln!(w, "}}");
    }

    // Sessions in connection order, steps named after the ops, numbered when a name repeats.
    let victims: Vec<ConnId> =
        sent.iter().filter(|s| s.outcome == Some(Outcome::Err(ErrorCode::DEADLOCK_DETECTED))).map(|s| s.conn).collect();
    let mut names: Vec<String> = Vec::with_capacity(sent.len());
    let mut sessions: BTreeMap<ConnId, Vec<(String, String)>> = BTreeMap::new();
    let mut uses: BTreeMap<String, usize> = BTreeMap::new();
    for s in &sent {
        let base = format!("{}_{}", session_name(s.conn), identifier(s.name));
        let n = uses.entry(base.clone()).or_default();
        *n += 1;
        let name = if *n == 1 { base } else { format!("{base}_{n}") };
        let sql = render(&s.stmt, &shape.schema);
        if sql.contains('}') {
            return Err(ExportError::Unwritable(sql));
        }
        sessions.entry(s.conn).or_default().push((name.clone(), sql));
        names.push(name);
    }
    if !victims.is_empty() {
        let _ = writeln!(
            w,
            "\n# PostgreSQL aborts the deadlocked waiter that checks first; the simulator aborted {}'s\n\
             # statement, so that session checks after {VICTIM_DEADLOCK_TIMEOUT} and the others after \
             {OTHER_DEADLOCK_TIMEOUT}.",
            victims.iter().map(|&c| session_name(c)).collect::<Vec<_>>().join(" and ")
        );
    }
    for (conn, steps) in &sessions {
        let owner = sent.iter().find(|s| s.conn == *conn).map(|s| s.actor).unwrap_or_default();
        let actor = actors.get(owner).map_or("?", String::as_str);
        let _ = writeln!(w, "\n# connection {conn} of {actor}\nsession {}", session_name(*conn));
        if !victims.is_empty() {
            let timeout = if victims.contains(conn) { VICTIM_DEADLOCK_TIMEOUT } else { OTHER_DEADLOCK_TIMEOUT };
            let _ = writeln!(w, "setup\t{{ SET deadlock_timeout = '{timeout}'; }}");
        }
        for (name, sql) in steps {
            let _ = writeln!(w, "step {name}\t{{ {sql}; }}");
        }
    }
    let _ = writeln!(w, "\npermutation {}", names.join(" "));
    Ok(out)
}

/// The shortest counterexample on the simulator, or the first explored schedule when there is
/// none: `(token, schedule, what it is)`.
fn default_schedule(id: &str, model: &dyn DynModel, bounds: &Bounds) -> (String, Vec<Choice>, &'static str) {
    let checked = model.check(id, &Mode::Exhaustive, bounds, &Backend::Sim);
    if let Some(cx) = checked.counterexample {
        let schedule = token::decode(id, &cx.token).expect("a counterexample's own token decodes");
        return (cx.token, schedule, "the shortest counterexample on the simulator");
    }
    let schedule = model.schedules(bounds, 1).into_iter().next().unwrap_or_default();
    let what = match checked.verdict {
        Verdict::Holds => "the first explored schedule (the scenario holds)",
        _ => "the first explored schedule (no counterexample was found)",
    };
    (token::encode(id, &schedule), schedule, what)
}

/// Trace `schedule`, then let the first actor able to step do so until none can (or the depth
/// bound is reached). Returns the trace of the whole and the number of steps added.
fn complete(model: &dyn DynModel, bounds: &Bounds, mut schedule: Vec<Choice>) -> Result<(Trace, usize), ExportError> {
    let given = schedule.len();
    loop {
        let trace = model.trace(bounds, &schedule).map_err(ExportError::NotEnabled)?;
        let next = trace.enabled.iter().find(|c| c.kind == ChoiceKind::Step);
        match next {
            Some(&c) if (schedule.len() as u64) < u64::from(bounds.max_depth) => schedule.push(c),
            _ => return Ok((trace, schedule.len() - given)),
        }
    }
}

/// Every SQL statement the trace sent, in order, with the outcome each finally got.
fn statements(trace: &Trace) -> Vec<Sent> {
    let mut sent: Vec<Sent> = Vec::new();
    // Per actor, the statement whose outcome it has not collected yet.
    let mut waiting: BTreeMap<u8, usize> = BTreeMap::new();
    for (event, op) in &trace.steps {
        let actor = event.choice.actor;
        match op {
            Some(Op { name, kind: OpKind::Sql(SqlOp { conn, stmt }) }) => {
                if event.outcome.is_none() {
                    waiting.insert(actor, sent.len());
                }
                let outcome = event.outcome.clone();
                sent.push(Sent { actor: usize::from(actor), conn: *conn, name, stmt: stmt.clone(), outcome });
            }
            Some(_) => {}
            None => {
                if let Some(k) = waiting.remove(&actor) {
                    sent[k].outcome = event.outcome.clone();
                }
            }
        }
    }
    sent
}

/// `c1` for connection 0.
fn session_name(conn: ConnId) -> String {
    format!("c{}", u32::from(conn) + 1)
}

/// An op name as a plain spec identifier: anything but letters, digits and `_` becomes `_`.
fn identifier(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if s.is_empty() {
        "step".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn scenarios() -> Vec<racelab_harness::scenario::Scenario> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
        racelab_harness::scenario::load_dir(&dir, &racelab_models::catalogue()).expect("scenario files load")
    }

    #[test]
    fn every_database_scenario_exports_a_spec_that_parses() {
        let mut exported = 0;
        for s in scenarios() {
            match export_spec(&s.id, s.model.as_ref(), &s.bounds, None, "0.0.0") {
                Ok(text) => {
                    let spec = crate::spec::parse(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", s.id));
                    assert!(spec.warnings.is_empty(), "{}: {:?}", s.id, spec.warnings);
                    assert_eq!(spec.permutations.len(), 1);
                    assert!(text.contains(&format!("# {}: ", s.id)));
                    exported += 1;
                }
                Err(ExportError::NoDatabase) => {
                    let race = s.id.split('/').next().unwrap_or_default();
                    let without = ["daemon-spawn", "state-save", "guidance-write", "config-edit", "area-ensure"];
                    assert!(without.contains(&race), "{}", s.id)
                }
                Err(ExportError::Fault { .. }) => {}
                Err(e) => panic!("{}: {e}", s.id),
            }
        }
        assert!(exported >= 10, "{exported} exported");
    }

    #[test]
    fn faults_and_foreign_tokens_are_refused() {
        let all = scenarios();
        let s = all.iter().find(|s| s.id == "summary-upsert/select-for-update").unwrap();
        let crash = token::encode(&s.id, &[Choice { actor: 0, kind: ChoiceKind::Crash }]);
        let e = export_spec(&s.id, s.model.as_ref(), &s.bounds, Some(&crash), "0").unwrap_err();
        assert!(matches!(e, ExportError::Fault { step: 0, kind: ChoiceKind::Crash, .. }), "{e}");
        assert!(e.to_string().contains("cannot express"));
        let other = token::encode("summary-upsert/check-then-insert", &[]);
        let e = export_spec(&s.id, s.model.as_ref(), &s.bounds, Some(&other), "0").unwrap_err();
        assert!(matches!(e, ExportError::Token(TokenError::WrongScenario { .. })), "{e}");
    }

    #[test]
    fn names_are_identifiers() {
        assert_eq!(identifier("find"), "find");
        assert_eq!(identifier("sys.exit"), "sys_exit");
        assert_eq!(identifier(""), "step");
        assert_eq!(session_name(0), "c1");
    }
}
