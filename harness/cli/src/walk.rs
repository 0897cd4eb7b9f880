//! A schedule walked step by step on the simulator, for readers rather than checkers: what each
//! choice did, on which shared resource, the world after it, and who is left waiting. The report's
//! diagrams and state tables and the `play` page are both drawn from a [`Walk`].

use racelab_harness::catalogue::DynModel;
use racelab_harness::explore::shortest::NotEnabled;
use racelab_harness::explore::{Bounds, Choice, ChoiceKind};
use racelab_harness::op::{HttpOp, Op, OpKind, OsOp, Sql};
use racelab_harness::run::{Backend, Verdict};
use serde::Serialize;

/// Most steps a walk shows; schedule tokens hold at most 4096, and no reader follows more.
pub const MAX_STEPS: usize = 4096;

/// One choice of a walked schedule.
#[derive(Clone, Debug, Serialize)]
pub struct WalkStep {
    pub actor: usize,
    /// The choice kind as tokens and JSON name it (`step`, `crash`, …).
    pub kind: String,
    /// The timeline cell.
    pub text: String,
    /// The op the choice issued, as labelled in timelines; `None` when it collected a granted
    /// wait, timed one out, or crashed.
    pub op: Option<String>,
    /// The shared resource the choice touched (`database`, `file /run/d.pid`, …); `None` for a
    /// step local to the actor, a crash, or a fault on nothing the walk can name.
    pub resource: Option<String>,
    /// Did the op stop to wait (its outcome comes with a later step)?
    pub waits: bool,
    /// `World::describe()` after this step.
    pub world: Vec<String>,
    /// After this step: `request 2 waits at database: insert(…)`, one line per waiting actor.
    pub waiting: Vec<String>,
}

/// A schedule replayed on the simulator.
#[derive(Clone, Debug, Serialize)]
pub struct Walk {
    pub actors: Vec<String>,
    /// The world before any actor moves.
    pub initial: Vec<String>,
    pub steps: Vec<WalkStep>,
    /// The choices enabled where the walk ends (none once a property is violated).
    #[serde(skip)]
    pub enabled: Vec<Choice>,
    /// The property the schedule violates, with its explanation.
    pub violation: Option<(String, String)>,
}

/// The world after a prefix of the schedule, the violation there if any, and the steps replayed.
type AfterPrefix = (Vec<String>, Option<(String, String)>, usize);

/// `step`, `crash`, `error`, … as the JSON output names a choice kind.
pub fn kind_name(kind: ChoiceKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{kind:?}").to_lowercase(),
    }
}

/// The shared resource an op acts on, as a lifeline name; `None` for a local step.
// Op kinds added later draw on a generic lifeline rather than failing to build.
#[allow(unreachable_patterns)]
pub fn resource(op: &Op) -> Option<String> {
    Some(match &op.kind {
        OpKind::Sql(sql) => match sql.stmt {
            Sql::AdvisoryLock { .. }
            | Sql::AdvisoryTryLock { .. }
            | Sql::AdvisoryUnlock { .. }
            | Sql::AdvisoryUnlockAll => "advisory locks".to_string(),
            _ => "database".to_string(),
        },
        OpKind::Os(os) => match os {
            OsOp::ReadFile { path } | OsOp::WriteFile { path, .. } | OsOp::RemoveFile { path } => {
                format!("file {path}")
            }
            OsOp::Flock { path, .. } | OsOp::Funlock { path } => format!("flock {path}"),
            _ => "processes".to_string(),
        },
        OpKind::Http(HttpOp::Request { route, .. } | HttpOp::Accept { route }) => format!("http {route}"),
        OpKind::Http(_) => "http".to_string(),
        // A part the model added; the op does not carry the part's name, only its index.
        OpKind::Part(part) => format!("part {}", part.part),
        OpKind::Local => return None,
        _ => "world".to_string(),
    })
}

/// Walk `schedule` on the simulator. The world after each step comes from replaying that prefix,
/// so it is exactly what the checker saw there.
pub fn walk(model: &dyn DynModel, bounds: &Bounds, schedule: &[Choice]) -> Result<Walk, NotEnabled> {
    assert!(schedule.len() <= MAX_STEPS, "a walk shows at most {MAX_STEPS} steps");
    let trace = model.trace(bounds, schedule)?;
    let actors = model.actor_names();
    let world_after = |k: usize| -> Result<AfterPrefix, NotEnabled> {
        let r = model.replay(bounds, &schedule[..k], &Backend::Sim)?;
        let violation = match (r.verdict, r.invariant, r.detail) {
            (Verdict::Violated, Some(i), Some(d)) => Some((i, d)),
            _ => None,
        };
        Ok((r.final_state, violation, r.steps))
    };
    let (initial, mut violation, _) = world_after(0)?;
    // Where each actor's op waits, and the label of that op.
    let mut waits_at: Vec<Option<(String, String)>> = vec![None; actors.len()];
    let mut steps = Vec::with_capacity(trace.steps.len());
    for (k, (event, op)) in trace.steps.iter().enumerate() {
        if violation.is_some() {
            // The checker stops at the first violation; so does the walk.
            break;
        }
        // A power loss is a world event: its `actor` field picks a durable state, not an actor.
        let actor = event.choice.actor_index().unwrap_or(0);
        let kind = event.choice.kind;
        let (resource, waits) = match op {
            Some(op) => {
                let res = resource(op);
                let waits = event.outcome.is_none() && kind == ChoiceKind::Step;
                waits_at[actor] = if waits { Some((res.clone().unwrap_or_default(), op.label())) } else { None };
                (res, waits)
            }
            // Collecting a granted wait or timing it out answers from where it waited.
            None => (waits_at[actor].take().map(|(res, _)| res).filter(|r| !r.is_empty()), false),
        };
        if kind == ChoiceKind::Crash {
            for a in std::iter::once(actor).chain(event.also_crashed.iter().copied()) {
                if let Some(w) = waits_at.get_mut(a) {
                    *w = None;
                }
            }
        }
        let (world, v, replayed) = world_after(k + 1)?;
        assert!(replayed <= k + 1, "a prefix replays at most its own steps");
        violation = v;
        let waiting = waits_at
            .iter()
            .enumerate()
            .filter_map(|(a, w)| w.as_ref().map(|(res, label)| format!("{} waits at {res}: {label}", actors[a])))
            .collect();
        steps.push(WalkStep {
            actor,
            kind: kind_name(kind),
            text: event.text.clone(),
            op: op.as_ref().map(Op::label),
            resource: if kind == ChoiceKind::Crash { None } else { resource },
            waits,
            world,
            waiting,
        });
    }
    let enabled = if violation.is_some() || steps.len() < trace.steps.len() { Vec::new() } else { trace.enabled };
    Ok(Walk { actors, initial, steps, enabled, violation })
}

/// `request 1: insert(…)`, `request 2: ✗ crash (fault: crash)`: what an enabled choice would do,
/// for a button.
pub fn choice_label(model: &dyn DynModel, bounds: &Bounds, schedule: &[Choice], choice: Choice) -> String {
    let actors = model.actor_names();
    let who = match choice.actor_index() {
        Some(i) => actors.get(i).cloned().unwrap_or_else(|| format!("actor {i}")),
        None => "power".to_string(),
    };
    let mut next = schedule.to_vec();
    next.push(choice);
    let what = match model.trace(bounds, &next) {
        Ok(t) => match t.steps.last() {
            Some((_, Some(op))) if choice.kind == ChoiceKind::Step => op.label(),
            Some((event, _)) => event.text.clone(),
            None => String::new(),
        },
        Err(_) => String::new(),
    };
    match kind_name(choice.kind).as_str() {
        "step" => format!("{who}: {what}"),
        kind => format!("{who}: {what} (fault: {kind})"),
    }
}
