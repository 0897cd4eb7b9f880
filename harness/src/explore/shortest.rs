//! Minimal counterexamples, and exact replay of a schedule.
//!
//! Breadth-first search over the full transition graph (no reduction, so nothing shorter can be
//! missed) finds a violating state at the least depth. When the graph is too large for that,
//! greedy shrinking drops single choices from a known failing schedule while it still fails.

use std::collections::{HashSet, VecDeque};

use crate::model::{Actor, Model, Status};
use crate::op::{Op, Row, TableId};
use crate::sim::{Attached, SharedDb};

use super::budget::{Budget, CHECK_EVERY};
use super::state::{Properties, State};
use super::visited::FingerprintSet;
use super::{Bounds, Choice, ChoiceKind, Event, Violation};

/// A schedule that was replayed step by step.
pub struct Replayed<A> {
    pub events: Vec<Event>,
    /// The first violation met, if any; the replay stops there.
    pub violation: Option<Violation>,
    /// The state where the replay stopped.
    pub state: State<A>,
}

/// Why a schedule cannot be replayed on this model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotEnabled {
    pub step: usize,
    pub choice: Choice,
}

/// Replay `choices` exactly; every choice must be enabled when its turn comes.
pub fn replay<M: Model>(model: &M, bounds: &Bounds, choices: &[Choice]) -> Result<Replayed<M::Actor>, NotEnabled> {
    replay_on(model, bounds, choices, None)
}

/// [`replay`], with the database on `real` when given.
pub fn replay_on<M: Model>(
    model: &M,
    bounds: &Bounds,
    choices: &[Choice],
    real: Option<&SharedDb>,
) -> Result<Replayed<M::Actor>, NotEnabled> {
    replay_attached(model, bounds, choices, &Attached::db(real))
}

/// [`replay`], with the real systems in `attached` behind the world.
pub fn replay_attached<M: Model>(
    model: &M,
    bounds: &Bounds,
    choices: &[Choice],
    attached: &Attached,
) -> Result<Replayed<M::Actor>, NotEnabled> {
    let props = Properties::of(model);
    let mut state = State::initial_attached(model, attached);
    let mut events = Vec::with_capacity(choices.len());
    let mut violation = state.check(model, &props);
    for (step, &choice) in choices.iter().enumerate() {
        if violation.is_some() {
            break;
        }
        if !state.choices(bounds).contains(&choice) {
            return Err(NotEnabled { step, choice });
        }
        let (event, _) = state.apply_described(choice, bounds);
        events.push(event);
        violation = state.check(model, &props);
    }
    Ok(Replayed { events, violation, state })
}

/// A schedule replayed on the simulator with no property checked, for showing what it sends.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The committed rows of every table before any actor moves, table by table.
    pub seed: Vec<(TableId, Row)>,
    /// Per choice: what it did, and the op it issued (`None` when it collected a granted wait,
    /// timed one out or crashed).
    pub steps: Vec<(Event, Option<Op>)>,
    /// The choices enabled where the schedule ends; none in a final state.
    pub enabled: Vec<Choice>,
}

/// Replay `choices` on the simulator to the end, whatever the properties say.
pub fn trace<M: Model>(model: &M, bounds: &Bounds, choices: &[Choice]) -> Result<Trace, NotEnabled> {
    let mut state = State::initial(model);
    let schema = state.world.db.schema().clone();
    let seed = schema
        .tables
        .iter()
        .flat_map(|t| state.world.db.committed_rows(t.name).into_iter().map(move |r| (t.name, r)))
        .collect();
    let mut steps = Vec::with_capacity(choices.len());
    for (step, &choice) in choices.iter().enumerate() {
        if !state.choices(bounds).contains(&choice) {
            return Err(NotEnabled { step, choice });
        }
        let i = usize::from(choice.actor);
        let issues = match choice.kind {
            ChoiceKind::Step => state.status[i] == Status::Running,
            ChoiceKind::Error => true,
            ChoiceKind::LostReply => state.status[i] == Status::Running,
            ChoiceKind::Timeout | ChoiceKind::Crash | ChoiceKind::PowerLoss => false,
        };
        let op = if issues { state.actors[i].next_op() } else { None };
        let (event, _) = state.apply_described(choice, bounds);
        steps.push((event, op));
    }
    Ok(Trace { seed, steps, enabled: state.choices(bounds) })
}

/// The shortest schedule to any violation, by breadth-first search. `None` when no state
/// violates, or when more than `bounds.max_states` states would be needed to tell.
pub fn breadth_first<M: Model>(model: &M, bounds: &Bounds) -> Option<(Violation, Vec<Choice>)> {
    breadth_first_within(model, bounds, &Budget::default())
}

/// [`breadth_first`], giving up (`None`) once `budget` is spent.
fn breadth_first_within<M: Model>(model: &M, bounds: &Bounds, budget: &Budget) -> Option<(Violation, Vec<Choice>)> {
    let props = Properties::of(model);
    let init = State::initial(model);
    if let Some(v) = init.check(model, &props) {
        return Some((v, Vec::new()));
    }
    // Parent pointers: node k was reached from `nodes[k].0` by `nodes[k].1`.
    let mut nodes: Vec<(u32, Choice)> = Vec::new();
    let mut seen: FingerprintSet = HashSet::default();
    seen.insert(init.fingerprint());
    let mut queue: VecDeque<(State<M::Actor>, Option<u32>, u32)> = VecDeque::from([(init, None, 0)]);
    while let Some((state, node, depth)) = queue.pop_front() {
        if nodes.len().is_multiple_of(CHECK_EVERY as usize) && budget.exceeded().is_some() {
            return None;
        }
        if depth >= bounds.max_depth {
            continue;
        }
        for choice in state.choices(bounds) {
            let mut next = state.clone();
            next.apply(choice, bounds);
            if !seen.insert(next.fingerprint()) {
                continue;
            }
            if seen.len() as u64 > bounds.max_states {
                return None;
            }
            nodes.push((node.unwrap_or(u32::MAX), choice));
            let id = (nodes.len() - 1) as u32;
            if let Some(v) = next.check(model, &props) {
                return Some((v, path_to(&nodes, id)));
            }
            queue.push_back((next, Some(id), depth + 1));
        }
    }
    None
}

fn path_to(nodes: &[(u32, Choice)], mut id: u32) -> Vec<Choice> {
    let mut path = Vec::new();
    for _ in 0..=nodes.len() {
        let (parent, choice) = nodes[id as usize];
        path.push(choice);
        if parent == u32::MAX {
            path.reverse();
            return path;
        }
        id = parent;
    }
    unreachable!("parent pointers form a tree")
}

/// Drop single choices from a failing schedule while it still violates `invariant`, until no
/// single drop does. At most `len²` replays.
pub fn shrink<M: Model>(
    model: &M,
    bounds: &Bounds,
    invariant: &str,
    schedule: &[Choice],
    real: Option<&SharedDb>,
) -> Vec<Choice> {
    shrink_attached(model, bounds, invariant, schedule, &Attached::db(real))
}

/// [`shrink`], replaying on the real systems in `attached`.
pub fn shrink_attached<M: Model>(
    model: &M,
    bounds: &Bounds,
    invariant: &str,
    schedule: &[Choice],
    attached: &Attached,
) -> Vec<Choice> {
    let fails = |s: &[Choice]| match replay_attached(model, bounds, s, attached) {
        Ok(r) => r.violation.is_some_and(|v| v.invariant == invariant),
        Err(_) => false,
    };
    assert!(fails(schedule), "shrink starts from a failing schedule");
    let mut best = schedule.to_vec();
    let mut improved = true;
    while improved {
        improved = false;
        for k in (0..best.len()).rev() {
            let mut candidate = best.clone();
            candidate.remove(k);
            if fails(&candidate) {
                // Cut whatever trails the violation, too.
                let r = replay_attached(model, bounds, &candidate, attached).expect("just replayed");
                candidate.truncate(r.events.len());
                best = candidate;
                improved = true;
                break;
            }
        }
    }
    best
}

/// The minimal counterexample for a violation found by any explorer: fewest faults first (a race
/// that needs no crash is the real story), then fewest steps. Breadth-first when the state space
/// allows, greedy shrinking of `found` otherwise.
pub fn minimise<M: Model>(model: &M, bounds: &Bounds, found: (Violation, Vec<Choice>)) -> (Violation, Vec<Choice>) {
    minimise_within(model, bounds, found, &Budget::default())
}

/// [`minimise`], falling back to shrinking (at most `len²` replays) once `budget` is spent, so
/// that a time limit also bounds the search for the shortest counterexample.
pub fn minimise_within<M: Model>(
    model: &M,
    bounds: &Bounds,
    found: (Violation, Vec<Choice>),
    budget: &Budget,
) -> (Violation, Vec<Choice>) {
    // Fault-free choices are a subset of the full bounds' choices, so the schedule replays there.
    let fault_free = Bounds { crashes: 0, errors: 0, timeouts: 0, lost_replies: 0, power_losses: 0, ..bounds.clone() };
    if let Some(shortest) = breadth_first_within(model, &fault_free, budget) {
        return shortest;
    }
    if let Some(shortest) = breadth_first_within(model, bounds, budget) {
        assert!(shortest.1.len() <= found.1.len(), "breadth-first search is never longer");
        return shortest;
    }
    let schedule = shrink(model, bounds, &found.0.invariant, &found.1, None);
    let violation = replay(model, bounds, &schedule).ok().and_then(|r| r.violation).unwrap_or(found.0);
    (violation, schedule)
}

/// One schedule per final state, as a depth-first search with a visited-state cache reaches
/// them, ignoring properties: the executions a conformance check replays on another backend.
pub fn all_schedules<M: Model>(model: &M, bounds: &Bounds, limit: usize) -> Vec<Vec<Choice>> {
    fn walk<A: crate::model::Actor>(
        state: State<A>,
        bounds: &Bounds,
        path: &mut Vec<Choice>,
        seen: &mut FingerprintSet,
        out: &mut Vec<Vec<Choice>>,
        limit: usize,
    ) {
        if out.len() >= limit || !seen.insert(state.fingerprint()) {
            return;
        }
        if !state.any_step() || path.len() as u32 >= bounds.max_depth {
            out.push(path.clone());
            return;
        }
        for choice in state.choices(bounds) {
            let mut next = state.clone();
            next.apply(choice, bounds);
            path.push(choice);
            walk(next, bounds, path, seen, out, limit);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(State::initial(model), bounds, &mut Vec::new(), &mut HashSet::default(), &mut out, limit);
    out
}
