//! Exhaustive depth-first search with state caching and sleep sets.
//!
//! Sleep sets (Godefroid, 1996) skip a transition when an independent sibling already explored
//! covers it. Combined with a visited-state cache they must be careful: a state first reached
//! with sleep set `S_old` had only `enabled − S_old` explored. Reaching it again with `S_new`,
//! we explore `S_old − S_new` and store `S_old ∩ S_new`. Sleep sets alone never drop a
//! reachable state, so every state is still checked against every invariant; they only save
//! transitions. Independence comes from the footprints the world records while applying.
//!
//! A search can be one share of a sharded search ([`Shard`]): the shares walk the same top of
//! the tree and split the frontier states at a fixed depth between them. The top keeps a cache
//! of its own, so its walk does not depend on what a share found below, and a frontier state's
//! owner is a function of its fingerprint. [`split_depth`] picks the frontier depth.

use std::collections::BTreeSet;

use crate::model::Model;
use crate::op::Footprint;
use crate::symmetry::{Canonicaliser, Symmetry};

use super::budget::{Budget, Progress, Shard, CHECK_EVERY};
use super::state::{concrete_schedule, Properties, SortKeys, State};
use super::visited::{in_mask, sleep_mask, VisitedTable, ON_PATH};
use super::{Bounds, Choice, Exploration, Explorer, Stats};

/// Depth-first over every interleaving and fault choice within the bounds.
#[derive(Clone, Debug)]
pub struct Exhaustive {
    /// Use sleep sets. Off only to measure them or to cross-check them.
    pub sleep_sets: bool,
    /// Time limit, interrupt and progress.
    pub budget: Budget,
    /// Explore only this share of the state space.
    pub shard: Option<Shard>,
    /// Reduce by the model's declared [`Model::symmetry`], if it has one. Off only to measure
    /// the reduction or to cross-check it.
    pub symmetry: bool,
    /// Under a symmetry, skip the choices of a member that mirrors an earlier one
    /// ([`State::mirrors`]); they lead to renamings of where that member's choices lead. Off
    /// only to measure it or to cross-check it: the parallel search always skips them.
    pub mirrors: bool,
    /// Under a symmetry, check each sort key taken from a parent state against one made afresh
    /// ([`Canonicaliser::check_reused_keys`]). Slow: for tests.
    pub check_sort_keys: bool,
}

impl Default for Exhaustive {
    fn default() -> Self {
        Exhaustive {
            sleep_sets: true,
            budget: Budget::default(),
            shard: None,
            symmetry: true,
            mirrors: true,
            check_sort_keys: false,
        }
    }
}

/// The deepest frontier [`split_depth`] considers.
pub const MAX_SPLIT_DEPTH: u32 = 12;

/// The frontier depth for `shares` shares: the least depth at which the top of the search tree
/// has at least 16 frontier visits per share (so that hashing spreads the work), at most
/// [`MAX_SPLIT_DEPTH`], and no deeper than the tree itself. A function of the model, its bounds
/// and `shares` only, so every share (on any machine) computes the same depth.
pub fn split_depth<M: Model>(model: &M, bounds: &Bounds, shares: u32) -> u32 {
    let wanted = 16 * u64::from(shares);
    let mut last = 0;
    for depth in 1..=MAX_SPLIT_DEPTH {
        let probe = Exhaustive {
            shard: Some(Shard { index: u32::MAX, count: shares.max(1), split_depth: depth }),
            ..Exhaustive::default()
        };
        let frontier = probe.frontier_visits(model, bounds);
        if frontier >= wanted || (depth > 1 && frontier <= last) {
            return depth;
        }
        last = frontier;
    }
    MAX_SPLIT_DEPTH
}

struct Search<'m, M: Model> {
    model: &'m M,
    props: Properties<M::Actor>,
    bounds: &'m Bounds,
    sleep_sets: bool,
    /// Walk only canonical states under this symmetry: each state is renamed into its
    /// canonical form as it is made, so states that differ by a renaming of identical actors
    /// meet in the visited set. Sleep sets are off then: a sibling's footprint names actors as
    /// the parent numbers them, not as the renamed child does.
    symmetry: Option<Canonicaliser>,
    /// Skip the choices of mirroring members (see [`Exhaustive::mirrors`]).
    mirrors: bool,
    /// The model's declared symmetry, used or not: final states are collected by class, so
    /// that a reduced and an unreduced search can be compared.
    declared: Option<Symmetry>,
    budget: &'m Budget,
    shard: Option<Shard>,
    /// The cache of the top of the tree (paths shorter than the split depth) in a sharded search.
    top: Table,
    /// Visits of states at the split depth, owned or not.
    frontier_visits: u64,
    /// Choices on the depth-first stack still to explore, for progress lines.
    pending: u64,
    /// Fingerprint → the sleep set it was explored with, and the complete executions found
    /// through it so far ([`ON_PATH`] while it is on the current path).
    visited: Table,
    stats: Stats,
    path: Vec<Choice>,
    reached: u64,
    /// Transitions executed, counted or not: when to look at the clock.
    steps: u64,
    violation: Option<(super::Violation, Vec<Choice>)>,
    incomplete: Option<String>,
    /// Fingerprints of final states, when asked for.
    finals: Option<BTreeSet<u128>>,
    /// Collect each final state's class rather than its own fingerprint.
    finals_by_class: bool,
}

/// What a search collects besides its result.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Collect {
    Nothing,
    /// Every final state's fingerprint.
    States,
    /// Every final state's class fingerprint under the declared symmetry.
    Classes,
}

impl Explorer for Exhaustive {
    fn explore<M: Model>(&mut self, model: &M, bounds: &Bounds) -> Exploration {
        self.run(model, bounds, Collect::Nothing).0
    }
}

impl Exhaustive {
    /// Explore, and also return the fingerprints of every final state reached (a state where
    /// no actor can step), for cross-checking reductions and other engines. With symmetry
    /// reduction on, only the final states of the representatives visited.
    pub fn final_states<M: Model>(&self, model: &M, bounds: &Bounds) -> (Exploration, BTreeSet<u128>) {
        let (exploration, finals) = self.run(model, bounds, Collect::States);
        (exploration, finals.expect("collected"))
    }

    /// Explore, and also return the class fingerprint ([`State::class_fingerprint`]) of every
    /// final state reached, under the model's declared symmetry (the plain fingerprint without
    /// one): equal for a reduced and a plain search when the reduction is sound.
    pub fn final_classes<M: Model>(&self, model: &M, bounds: &Bounds) -> (Exploration, BTreeSet<u128>) {
        let (exploration, finals) = self.run(model, bounds, Collect::Classes);
        (exploration, finals.expect("collected"))
    }

    /// Walk only the top of a sharded search and count the visits of frontier states.
    fn frontier_visits<M: Model>(&self, model: &M, bounds: &Bounds) -> u64 {
        self.search(model, bounds, Collect::Nothing).frontier_visits
    }

    fn run<M: Model>(&self, model: &M, bounds: &Bounds, collect: Collect) -> (Exploration, Option<BTreeSet<u128>>) {
        let search = self.search(model, bounds, collect);
        let bytes = search.visited.bytes() + search.top.bytes();
        let exploration =
            Exploration::ended(model, search.stats, search.violation, search.incomplete, search.reached, bytes);
        (exploration, search.finals)
    }

    fn search<'m, M: Model>(&'m self, model: &'m M, bounds: &'m Bounds, collect: Collect) -> Search<'m, M> {
        let mut init = State::initial(model);
        assert!(init.world.db.is_simulated(), "exhaustive search forks states: simulator only");
        let declared = Symmetry::declared_by(model, &init.world);
        let mut symmetry = declared.as_ref().filter(|_| self.symmetry).map(Canonicaliser::new);
        if let Some(canon) = symmetry.as_mut().filter(|_| self.check_sort_keys) {
            canon.check_reused_keys();
        }
        let mut search = Search {
            model,
            props: Properties::of(model),
            bounds,
            sleep_sets: self.sleep_sets && symmetry.is_none(),
            symmetry,
            mirrors: self.mirrors,
            declared,
            budget: &self.budget,
            shard: self.shard,
            top: Table::default(),
            frontier_visits: 0,
            pending: 0,
            visited: Table::default(),
            stats: Stats::default(),
            path: Vec::new(),
            reached: 0,
            steps: 0,
            violation: None,
            incomplete: None,
            finals: (collect != Collect::Nothing).then(BTreeSet::new),
            finals_by_class: collect == Collect::Classes,
        };
        search.settle(&mut init);
        search.stats.executions = search.visit(init, Vec::new(), None);
        if let (Some((_, walk)), Some(canon)) = (&mut search.violation, &search.symmetry) {
            *walk = concrete_schedule(model, bounds, canon.symmetry(), walk);
        }
        search
    }
}

type Table = VisitedTable;

/// Is `choice` one of a member that mirrors an earlier one (`reps` from [`State::mirrors`])?
fn mirrored(reps: &Option<Vec<usize>>, choice: &Choice) -> bool {
    match (reps, choice.actor_index()) {
        (Some(reps), Some(a)) => reps[a] != a,
        _ => false,
    }
}

impl<M: Model> Search<'_, M> {
    fn stopped(&self) -> bool {
        self.violation.is_some() || self.incomplete.is_some()
    }

    /// Explore from `state`, reached by `self.path`, with `sleep` asleep and, under a symmetry,
    /// its sort keys when canonicalising it made them. Returns the complete executions found
    /// through this state on this visit.
    fn visit(&mut self, state: State<M::Actor>, sleep: Vec<(Choice, Footprint)>, carried: Option<SortKeys>) -> u64 {
        // Under a symmetry the state is canonical already (see `settle`).
        let key = state.fingerprint();
        let depth = self.path.len() as u32;
        // In a sharded search: is this state in the top of the tree, and does this share keep
        // the counts of what it does here?
        let (in_top, counts) = match self.shard {
            Some(shard) if depth < shard.split_depth => (true, shard.keeps_top_counts()),
            Some(shard) if depth == shard.split_depth => {
                self.frontier_visits += 1;
                if !shard.owns(key) {
                    return 0;
                }
                (false, true)
            }
            _ => (false, true),
        };
        let cached = self.cache(in_top).get(key);
        // A revisit with no choice left asleep has nothing to do: its earlier visit covered every
        // choice (or is still under way, on the current path, and counts no execution here).
        if let Some((0, known)) = cached {
            return if known == ON_PATH { 0 } else { known };
        }
        let enabled = state.choices(self.bounds);
        let asleep = |c: &Choice| sleep.iter().any(|(s, _)| s == c);
        // Choices whose subtrees an earlier visit of this state already covered.
        let mut done: Vec<Choice> = Vec::new();
        let mut executions = 0u64;
        // Members whose choices mirror an earlier member's, on a first visit under a symmetry.
        let mut mirrors: Option<Vec<usize>> = None;
        // Under a symmetry, on a first visit: the sort keys its children's are made from.
        let mut keys: Option<SortKeys> = None;
        let todo: Vec<Choice> = match cached {
            Some((stored, known)) => {
                // A state on the current path (a cycle) contributes no complete execution.
                let on_path = known == ON_PATH;
                let known = if on_path { 0 } else { known };
                let todo: Vec<Choice> = (0..enabled.len())
                    .filter(|&i| in_mask(stored, i) && !asleep(&enabled[i]))
                    .map(|i| enabled[i])
                    .collect();
                done = (0..enabled.len()).filter(|&i| !in_mask(stored, i)).map(|i| enabled[i]).collect();
                let still = sleep_mask(enabled.len(), |i| in_mask(stored, i) && asleep(&enabled[i]));
                if still != stored {
                    let executions = if on_path { ON_PATH } else { known };
                    self.cache(in_top).set(key, still, executions);
                }
                if todo.is_empty() || on_path {
                    return known;
                }
                executions = known;
                todo
            }
            None => {
                if (self.visited.states() + self.top.states()) as u64 >= self.bounds.max_states {
                    self.incomplete = Some(format!("state bound reached: {} states", self.bounds.max_states));
                    return 0;
                }
                let mask = sleep_mask(enabled.len(), |i| asleep(&enabled[i]));
                self.cache(in_top).set(key, mask, ON_PATH);
                if counts {
                    self.stats.states += 1;
                }
                self.reached |= state.targets_reached(&self.props);
                if let Some(v) = state.check(self.model, &self.props) {
                    self.violation = Some((v, self.path.clone()));
                    return 0;
                }
                if !state.any_step() && counts {
                    self.stats.final_states += 1;
                    executions = 1;
                    if let Some(finals) = &mut self.finals {
                        let class = match &self.declared {
                            Some(symmetry) if self.finals_by_class => state.class_fingerprint(symmetry),
                            _ => state.fingerprint(),
                        };
                        finals.insert(class);
                    }
                }
                if let Some(canon) =
                    self.symmetry.as_mut().filter(|_| !enabled.is_empty() && depth < self.bounds.max_depth)
                {
                    keys = state.sort_keys_or(canon, carried);
                    if let Some(keys) = keys.as_ref().filter(|_| self.mirrors) {
                        mirrors = state.mirrors(canon, keys, &enabled);
                    }
                }
                enabled.iter().copied().filter(|c| !asleep(c) && !mirrored(&mirrors, c)).collect()
            }
        };
        if depth >= self.bounds.max_depth {
            if !todo.is_empty() {
                self.incomplete = Some(format!("depth bound reached: {} steps", self.bounds.max_depth));
            }
            self.record(key, in_top, executions);
            return executions;
        }
        if counts {
            let mirrored = enabled.iter().filter(|c| mirrored(&mirrors, c)).count();
            self.stats.pruned += (enabled.len() - todo.len() - done.len() - mirrored) as u64;
        }

        // Footprints of siblings already covered, for the children's sleep sets.
        let mut explored: Vec<(Choice, Footprint)> = Vec::new();
        if self.sleep_sets {
            for &c in &done {
                let mut probe = state.clone();
                let fp = probe.apply(c, self.bounds);
                explored.push((c, fp));
            }
        }
        let mut state = Some(state);
        self.pending += todo.len() as u64;
        let mut left = todo.len() as u64;
        for choice in todo {
            if self.stopped() {
                self.pending -= left;
                return executions;
            }
            self.pending -= 1;
            left -= 1;
            // The last child takes the state itself: one whole-world copy fewer per state.
            let mut next =
                if left == 0 { state.take().expect("taken once") } else { state.as_ref().expect("kept").clone() };
            let (fp, next_keys) = next.apply_canonical(choice, self.bounds, self.symmetry.as_mut(), keys.as_ref());
            self.steps += 1;
            if counts {
                self.stats.transitions += 1;
            }
            if self.steps.is_multiple_of(CHECK_EVERY) {
                self.look_up();
            }
            let child_sleep: Vec<(Choice, Footprint)> = if self.sleep_sets {
                sleep
                    .iter()
                    .chain(explored.iter())
                    .filter(|(c, f)| c.actor != choice.actor && !f.conflicts(&fp))
                    .copied()
                    .collect()
            } else {
                Vec::new()
            };
            self.path.push(choice);
            self.stats.depth = self.stats.depth.max(self.path.len() as u32);
            // The same choice of each member that mirrors this one has as many executions.
            let copies = match (&mirrors, choice.actor_index()) {
                (Some(reps), Some(a)) => reps.iter().filter(|&&r| r == a).count() as u64,
                _ => 1,
            };
            let found = self.visit(next, child_sleep, next_keys).saturating_mul(copies);
            executions = executions.saturating_add(found).min(Stats::EXECUTIONS_SATURATED);
            self.path.pop();
            explored.push((choice, fp));
        }
        self.record(key, in_top, executions);
        executions
    }

    /// Under a symmetry, rename a state just made into its canonical form: the search walks
    /// canonical states only, as the parallel one does, so both visit the same states.
    fn settle(&mut self, state: &mut State<M::Actor>) {
        if let Some(canon) = &mut self.symmetry {
            state.canonicalise(canon);
        }
    }

    fn cache(&mut self, top: bool) -> &mut Table {
        if top {
            &mut self.top
        } else {
            &mut self.visited
        }
    }

    fn record(&mut self, key: u128, top: bool, executions: u64) {
        self.cache(top).set_executions(key, executions);
    }

    /// Every [`CHECK_EVERY`] transitions: report progress, and stop on a limit or an interrupt.
    fn look_up(&mut self) {
        self.budget.report(&Progress {
            states: self.stats.states,
            transitions: self.steps,
            depth: self.path.len() as u32,
            frontier: self.pending,
            share: self.shard.map(|s| (s.index, s.count)),
        });
        if self.incomplete.is_none() {
            self.incomplete = self.budget.exceeded();
        }
    }
}
