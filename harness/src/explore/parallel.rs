//! Exhaustive search on several threads, with one shared set of visited states.
//!
//! Every thread runs a depth-first search from the initial state, each trying the choices of a
//! state in its own rotation so that the threads spread over the graph. A thread expands a state
//! only if it is the first to insert its fingerprint into the shared set (lock-striped by
//! fingerprint); the state is then expanded completely, every enabled choice, by that thread.
//! So every reachable state (within the bounds) is expanded exactly once, whatever the timing,
//! and the counts that depend only on the set of states are the same for any number of threads:
//! distinct states, distinct final states, and transitions (the enabled choices of every
//! state). Counts that depend on the order of the search (complete executions, the longest path)
//! are not counted. No sleep sets: their bookkeeping assumes that a state's earlier visit has
//! finished, which another thread's visit may not have.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::model::Model;

use super::budget::{Budget, Progress, CHECK_EVERY};
use super::state::{Properties, State};
use super::{unreached_targets, Bounds, Choice, Exploration, Stats, Violation};

/// Lock stripes of the visited set: enough that two to a few dozen threads rarely meet.
const STRIPES: usize = 256;

/// Stack of each search thread: the search recurses once per step, up to the depth bound.
const STACK_BYTES: usize = 256 << 20;

type Stripe = Mutex<HashSet<u128, BuildHasherDefault<DefaultHasher>>>;

struct Shared<'m, M: Model> {
    model: &'m M,
    bounds: &'m Bounds,
    budget: &'m Budget,
    visited: Vec<Stripe>,
    stop: AtomicBool,
    violation: Mutex<Option<(Violation, Vec<Choice>)>>,
    incomplete: Mutex<Option<String>>,
    states: AtomicU64,
    final_states: AtomicU64,
    transitions: AtomicU64,
    reached: AtomicU64,
}

/// The result of a parallel search. `stats.executions`, `stats.depth` and `stats.pruned` are not
/// counted (0).
pub fn explore<M: Model>(model: &M, bounds: &Bounds, threads: usize, budget: &Budget) -> Exploration {
    let shared = Shared {
        model,
        bounds,
        budget,
        visited: (0..STRIPES).map(|_| Mutex::default()).collect(),
        stop: AtomicBool::new(false),
        violation: Mutex::new(None),
        incomplete: Mutex::new(None),
        states: AtomicU64::new(0),
        final_states: AtomicU64::new(0),
        transitions: AtomicU64::new(0),
        reached: AtomicU64::new(0),
    };
    let threads = threads.clamp(1, 256);
    std::thread::scope(|scope| {
        for rotation in 0..threads {
            let shared = &shared;
            std::thread::Builder::new()
                .stack_size(STACK_BYTES)
                .spawn_scoped(scope, move || {
                    let init = State::initial(shared.model);
                    assert!(init.world.db.is_simulated(), "the parallel search forks states: simulator only");
                    let mut walker =
                        Walker { shared, props: Properties::of(shared.model), rotation, path: Vec::new(), steps: 0 };
                    walker.visit(init);
                })
                .expect("a search thread starts");
        }
    });
    let violation = shared.violation.into_inner().expect("no search thread panicked");
    let incomplete = shared.incomplete.into_inner().expect("no search thread panicked");
    let complete = violation.is_none() && incomplete.is_none();
    let reached = shared.reached.load(Ordering::SeqCst);
    let cache_bytes = shared
        .visited
        .iter()
        .map(|s| {
            let s = s.lock().expect("no search thread panicked");
            (s.capacity() as u64 * 8).div_ceil(7) * (std::mem::size_of::<u128>() as u64 + 1)
        })
        .sum();
    Exploration {
        unreached: if complete { unreached_targets(model, reached) } else { Vec::new() },
        stats: Stats {
            executions: 0,
            final_states: shared.final_states.load(Ordering::SeqCst),
            states: shared.states.load(Ordering::SeqCst),
            transitions: shared.transitions.load(Ordering::SeqCst),
            pruned: 0,
            depth: 0,
        },
        violation,
        complete,
        incomplete_reason: incomplete,
        reached,
        cache_bytes,
    }
}

struct Walker<'s, 'm, M: Model> {
    shared: &'s Shared<'m, M>,
    props: Properties<M::Actor>,
    rotation: usize,
    path: Vec<Choice>,
    steps: u64,
}

impl<M: Model> Walker<'_, '_, M> {
    /// Claim `key` for this thread: `true` if no thread had visited it.
    fn claim(&self, key: u128) -> bool {
        let stripe = ((key as u64) ^ ((key >> 64) as u64)) as usize % STRIPES;
        self.shared.visited[stripe].lock().expect("no search thread panicked").insert(key)
    }

    fn stop_with(&self, slot: &Mutex<Option<String>>, why: String) {
        let mut slot = slot.lock().expect("no search thread panicked");
        slot.get_or_insert(why);
        self.shared.stop.store(true, Ordering::SeqCst);
    }

    fn visit(&mut self, state: State<M::Actor>) {
        let shared = self.shared;
        if shared.stop.load(Ordering::Relaxed) || !self.claim(state.fingerprint()) {
            return;
        }
        if shared.states.fetch_add(1, Ordering::Relaxed) >= shared.bounds.max_states {
            self.stop_with(&shared.incomplete, format!("state bound reached: {} states", shared.bounds.max_states));
            return;
        }
        shared.reached.fetch_or(state.targets_reached(&self.props), Ordering::Relaxed);
        if let Some(v) = state.check(shared.model, &self.props) {
            let mut slot = shared.violation.lock().expect("no search thread panicked");
            slot.get_or_insert((v, self.path.clone()));
            shared.stop.store(true, Ordering::SeqCst);
            return;
        }
        if !state.any_step() {
            shared.final_states.fetch_add(1, Ordering::Relaxed);
        }
        let mut todo = state.choices(shared.bounds);
        if todo.is_empty() {
            return;
        }
        if self.path.len() as u32 >= shared.bounds.max_depth {
            self.stop_with(&shared.incomplete, format!("depth bound reached: {} steps", shared.bounds.max_depth));
            return;
        }
        shared.transitions.fetch_add(todo.len() as u64, Ordering::Relaxed);
        let turn = (self.rotation + self.path.len()) % todo.len();
        if self.rotation > 0 {
            todo.rotate_left(turn);
        }
        let last = todo.len() - 1;
        let mut state = Some(state);
        for (k, choice) in todo.into_iter().enumerate() {
            // The last child takes the state itself: one whole-world copy fewer per state.
            let mut next = if k == last { state.take().expect("taken once") } else { state.as_ref().expect("kept").clone() };
            next.apply(choice, shared.bounds);
            self.steps += 1;
            if self.steps.is_multiple_of(CHECK_EVERY) {
                self.look_up();
            }
            self.path.push(choice);
            self.visit(next);
            self.path.pop();
        }
    }

    fn look_up(&self) {
        let shared = self.shared;
        if self.rotation == 0 {
            shared.budget.report(&Progress {
                states: shared.states.load(Ordering::Relaxed),
                transitions: shared.transitions.load(Ordering::Relaxed),
                depth: self.path.len() as u32,
                frontier: 0,
                share: None,
            });
        }
        if let Some(why) = shared.budget.exceeded() {
            self.stop_with(&shared.incomplete, why);
        }
    }
}
