//! Exhaustive search on several threads, with one shared set of visited states.
//!
//! A state is claimed by the thread that first inserts its fingerprint into the shared set
//! (lock-striped by fingerprint); that thread checks it and later expands it completely, every
//! enabled choice. So every reachable state (within the bounds) is checked and expanded exactly
//! once, whatever the timing, and the counts that depend only on the set of states are the same
//! for any number of threads: distinct states, distinct final states, and transitions (the
//! enabled choices of every state). Counts that depend on the order of the search (complete
//! executions, the longest path) are not counted.
//!
//! Each thread searches depth-first with a stack of its own claimed states. A thread with
//! nothing to do says so; a busy thread then gives away the oldest state on its stack (the root
//! of the largest unexplored subtree) as the schedule that reaches it, and the idle thread
//! replays that schedule from the initial state (states never cross threads, so actors need not
//! be `Send`). No sleep sets: their bookkeeping assumes a state's earlier visit has finished,
//! which another thread's may not have.
//!
//! With the model's symmetry, the threads walk canonical states only: every state is renamed
//! into its canonical form ([`State::canonicalise`]) as soon as it is made, and keyed by its
//! own fingerprint, as in the sequential search. Keying concrete states by a canonical
//! fingerprint instead would let thread timing decide which concrete state of a class is
//! explored. Canonical forms are a function of the state, so the states walked are the closure
//! of the canonical initial state under "step, then canonicalise", the same set for any number
//! of threads. A violation's schedule is translated back into a concrete one
//! (`state::concrete_schedule`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::model::Model;
use crate::symmetry::{Canonicaliser, Symmetry};

use super::budget::{Budget, Progress, CHECK_EVERY};
use super::state::{concrete_schedule, Properties, SortKeys, State};
use super::visited::FingerprintSet;
use super::{Bounds, Choice, Exploration, Stats, Violation};

/// Lock stripes of the visited set: enough that two to a few dozen threads rarely meet.
const STRIPES: usize = 256;

type Stripe = Mutex<FingerprintSet>;

/// Work given away: schedules reaching claimed states not yet expanded.
#[derive(Default)]
struct Pool {
    schedules: Vec<Vec<Choice>>,
    /// Threads waiting for work; when every thread waits and the pool is empty, the search is over.
    idle: usize,
    done: bool,
}

struct Shared<'m, M: Model> {
    model: &'m M,
    bounds: &'m Bounds,
    budget: &'m Budget,
    /// Walk canonical states under this symmetry.
    symmetry: Option<Symmetry>,
    visited: Vec<Stripe>,
    stop: AtomicBool,
    violation: Mutex<Option<(Violation, Vec<Choice>)>>,
    incomplete: Mutex<Option<String>>,
    states: AtomicU64,
    final_states: AtomicU64,
    transitions: AtomicU64,
    reached: AtomicU64,
    threads: usize,
    pool: Mutex<Pool>,
    wake: Condvar,
    /// Threads waiting for work, read without the lock by busy threads.
    hungry: AtomicUsize,
}

/// The result of a parallel search, reduced by the model's symmetry when `symmetry` is set.
/// `stats.executions`, `stats.depth` and `stats.pruned` are not counted (0).
pub fn explore<M: Model>(model: &M, bounds: &Bounds, threads: usize, budget: &Budget, symmetry: bool) -> Exploration {
    let init = State::initial(model);
    assert!(init.world.db.is_simulated(), "the parallel search forks states: simulator only");
    let symmetry = Symmetry::declared_by(model, &init.world).filter(|_| symmetry);
    let shared = Shared {
        model,
        bounds,
        budget,
        symmetry,
        visited: (0..STRIPES).map(|_| Mutex::default()).collect(),
        stop: AtomicBool::new(false),
        violation: Mutex::new(None),
        incomplete: Mutex::new(None),
        states: AtomicU64::new(0),
        final_states: AtomicU64::new(0),
        transitions: AtomicU64::new(0),
        reached: AtomicU64::new(0),
        threads: threads.clamp(1, 256),
        pool: Mutex::new(Pool::default()),
        wake: Condvar::new(),
        hungry: AtomicUsize::new(0),
    };
    std::thread::scope(|scope| {
        for first in 0..shared.threads {
            let shared = &shared;
            scope.spawn(move || {
                let mut walker = Walker {
                    shared,
                    props: Properties::of(shared.model),
                    stack: Vec::new(),
                    steps: 0,
                    canon: shared.symmetry.as_ref().map(Canonicaliser::new),
                };
                if first == 0 {
                    let mut init = State::initial(shared.model);
                    walker.settle(&mut init);
                    if walker.claim(init.fingerprint()) {
                        walker.claimed_on(init, 0, None, &[], None);
                    }
                }
                walker.run();
            });
        }
    });
    let mut violation = shared.violation.into_inner().expect("no search thread panicked");
    if let (Some((_, walk)), Some(symmetry)) = (&mut violation, &shared.symmetry) {
        *walk = concrete_schedule(model, bounds, symmetry, walk);
    }
    let incomplete = shared.incomplete.into_inner().expect("no search thread panicked");
    let reached = shared.reached.load(Ordering::SeqCst);
    let cache_bytes = shared
        .visited
        .iter()
        .map(|s| {
            let s = s.lock().expect("no search thread panicked");
            (s.capacity() as u64 * 8).div_ceil(7) * (std::mem::size_of::<u128>() as u64 + 1)
        })
        .sum();
    let stats = Stats {
        executions: 0,
        final_states: shared.final_states.load(Ordering::SeqCst),
        states: shared.states.load(Ordering::SeqCst),
        transitions: shared.transitions.load(Ordering::SeqCst),
        pruned: 0,
        depth: 0,
    };
    Exploration::ended(model, stats, violation, incomplete, reached, cache_bytes)
}

/// A claimed state waiting to be expanded, the depth it was reached at, and the choice that
/// reached it from the state below it on the stack's path.
struct Item<A> {
    state: State<A>,
    depth: u32,
    choice: Option<Choice>,
    /// Its sort keys under the symmetry, when canonicalising it made them.
    keys: Option<SortKeys>,
}

struct Walker<'s, 'm, M: Model> {
    shared: &'s Shared<'m, M>,
    props: Properties<M::Actor>,
    stack: Vec<Item<M::Actor>>,
    steps: u64,
    canon: Option<Canonicaliser>,
}

impl<M: Model> Walker<'_, '_, M> {
    /// Under a symmetry, rename a state just made into its canonical form.
    fn settle(&mut self, state: &mut State<M::Actor>) {
        if let Some(canon) = &mut self.canon {
            state.canonicalise(canon);
        }
    }

    /// Claim `key` for this thread: `true` if no thread had visited it.
    fn claim(&self, key: u128) -> bool {
        // The low bits: each stripe's set hashes by the high ones (`FingerprintHasher`).
        let stripe = key as usize % STRIPES;
        self.shared.visited[stripe].lock().expect("no search thread panicked").insert(key)
    }

    fn stop_with(&self, slot: &Mutex<Option<String>>, why: String) {
        let mut slot = slot.lock().expect("no search thread panicked");
        slot.get_or_insert(why);
        self.shared.stop.store(true, Ordering::SeqCst);
    }

    fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// The schedule to a state at `depth` reached by `choice`: its parent is the state this
    /// thread last expanded at one depth less (depth-first order), whose schedule begins `trail`,
    /// the schedule of the state being expanded.
    fn schedule(trail: &[Choice], depth: u32, choice: Option<Choice>) -> Vec<Choice> {
        let mut path = trail[..(depth as usize).saturating_sub(1).min(trail.len())].to_vec();
        path.extend(choice);
        path
    }

    /// Check a newly claimed state and put it on the stack, or stop the search.
    fn claimed_on(
        &mut self,
        state: State<M::Actor>,
        depth: u32,
        choice: Option<Choice>,
        trail: &[Choice],
        keys: Option<SortKeys>,
    ) {
        let shared = self.shared;
        if shared.states.fetch_add(1, Ordering::Relaxed) >= shared.bounds.max_states {
            self.stop_with(&shared.incomplete, format!("state bound reached: {} states", shared.bounds.max_states));
            return;
        }
        shared.reached.fetch_or(state.targets_reached(&self.props), Ordering::Relaxed);
        if let Some(v) = state.check(shared.model, &self.props) {
            let mut slot = shared.violation.lock().expect("no search thread panicked");
            slot.get_or_insert((v, Self::schedule(trail, depth, choice)));
            shared.stop.store(true, Ordering::SeqCst);
            return;
        }
        if !state.any_step() {
            shared.final_states.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.stack.push(Item { state, depth, choice, keys });
    }

    /// Take work until the search is over.
    fn run(&mut self) {
        // The schedule of the item being expanded and its ancestors, by depth.
        let mut trail: Vec<Choice> = Vec::new();
        loop {
            while let Some(item) = self.stack.pop() {
                if self.stopped() {
                    self.stack.clear();
                    break;
                }
                trail.truncate((item.depth as usize).saturating_sub(1));
                trail.extend(item.choice);
                self.expand(item, &trail);
                self.give_away(&trail);
            }
            match self.take() {
                Some(schedule) => {
                    let mut state = State::initial(self.shared.model);
                    self.settle(&mut state);
                    for &c in &schedule {
                        state.apply(c, self.shared.bounds);
                        self.settle(&mut state);
                    }
                    let depth = schedule.len() as u32;
                    trail = schedule;
                    let choice = trail.pop();
                    self.stack.push(Item { state, depth, choice, keys: None });
                }
                None => return,
            }
        }
    }

    /// Expand a claimed state: every enabled choice; claim and check each new child.
    fn expand(&mut self, item: Item<M::Actor>, trail: &[Choice]) {
        let shared = self.shared;
        let mut todo = item.state.choices(shared.bounds);
        if item.depth >= shared.bounds.max_depth {
            self.stop_with(&shared.incomplete, format!("depth bound reached: {} steps", shared.bounds.max_depth));
            return;
        }
        // The sort keys the children's are made from.
        let keys = self.canon.as_mut().and_then(|canon| item.state.sort_keys_or(canon, item.keys));
        // As the sequential search: a member whose choices mirror an earlier one's is not expanded.
        if let (Some(canon), Some(keys)) = (&self.canon, &keys) {
            if let Some(reps) = item.state.mirrors(canon, keys, &todo) {
                todo.retain(|c| c.actor_index().is_none_or(|a| reps[a] == a));
            }
        }
        shared.transitions.fetch_add(todo.len() as u64, Ordering::Relaxed);
        let mut state = Some(item.state);
        // Children are pushed in reverse, so the first choice is expanded first.
        for (k, &choice) in todo.iter().enumerate().rev() {
            // The last child made takes the state itself: one whole-world copy fewer per state.
            let mut next =
                if k == 0 { state.take().expect("taken once") } else { state.as_ref().expect("kept").clone() };
            let (_, next_keys) = next.apply_canonical(choice, shared.bounds, self.canon.as_mut(), keys.as_ref());
            self.steps += 1;
            if self.steps.is_multiple_of(CHECK_EVERY) {
                self.look_up(item.depth);
            }
            if self.claim(next.fingerprint()) {
                self.claimed_on(next, item.depth + 1, Some(choice), trail, next_keys);
            }
        }
    }

    /// If a thread waits for work, give it the oldest state on the stack.
    fn give_away(&mut self, trail: &[Choice]) {
        if self.shared.hungry.load(Ordering::Relaxed) == 0 || self.stack.len() < 2 {
            return;
        }
        let oldest = self.stack.remove(0);
        let schedule = Self::schedule(trail, oldest.depth, oldest.choice);
        let mut pool = self.shared.pool.lock().expect("no search thread panicked");
        pool.schedules.push(schedule);
        self.shared.wake.notify_one();
    }

    /// Wait for given-away work; `None` once every thread waits with nothing left, or the search
    /// stopped.
    fn take(&self) -> Option<Vec<Choice>> {
        let shared = self.shared;
        let mut pool = shared.pool.lock().expect("no search thread panicked");
        pool.idle += 1;
        shared.hungry.fetch_add(1, Ordering::SeqCst);
        loop {
            if let Some(schedule) = pool.schedules.pop() {
                pool.idle -= 1;
                shared.hungry.fetch_sub(1, Ordering::SeqCst);
                return Some(schedule);
            }
            if pool.done || pool.idle == shared.threads || self.stopped() {
                pool.done = true;
                shared.wake.notify_all();
                return None;
            }
            // Bounded waits: a stop flag set without the lock is seen within a few milliseconds.
            pool = shared.wake.wait_timeout(pool, Duration::from_millis(5)).expect("no search thread panicked").0;
        }
    }

    fn look_up(&self, depth: u32) {
        let shared = self.shared;
        shared.budget.report(&Progress {
            states: shared.states.load(Ordering::Relaxed),
            transitions: shared.transitions.load(Ordering::Relaxed),
            depth,
            frontier: self.stack.len() as u64,
            share: None,
        });
        if let Some(why) = shared.budget.exceeded() {
            self.stop_with(&shared.incomplete, why);
        }
    }
}
