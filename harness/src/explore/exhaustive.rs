//! Exhaustive depth-first search with state caching and sleep sets.
//!
//! Sleep sets (Godefroid, 1996) skip a transition when an independent sibling already explored
//! covers it. Combined with a visited-state cache they must be careful: a state first reached
//! with sleep set `S_old` had only `enabled − S_old` explored. Reaching it again with `S_new`,
//! we explore `S_old − S_new` and store `S_old ∩ S_new`. Sleep sets alone never drop a
//! reachable state, so every state is still checked against every invariant; they only save
//! transitions. Independence comes from the footprints the world records while applying.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasherDefault;

use crate::model::Model;
use crate::op::Footprint;

use super::state::{Properties, State};
use super::{unreached_targets, Bounds, Choice, Exploration, Explorer, Stats};

/// Depth-first over every interleaving and fault choice within the bounds.
#[derive(Clone, Debug)]
pub struct Exhaustive {
    /// Use sleep sets. Off only to measure them or to cross-check them.
    pub sleep_sets: bool,
}

impl Default for Exhaustive {
    fn default() -> Self {
        Exhaustive { sleep_sets: true }
    }
}

struct Visited {
    sleep: Vec<Choice>,
    executions: Option<u64>,
}

struct Search<'m, M: Model> {
    model: &'m M,
    props: Properties<M::Actor>,
    bounds: &'m Bounds,
    sleep_sets: bool,
    /// Fingerprint → the sleep set it was explored with, and the complete executions found
    /// through it so far (`None` while it is on the current path).
    /// Unkeyed hasher: nothing here depends on iteration order, but no randomness at all is simpler.
    visited: HashMap<u128, Visited, BuildHasherDefault<DefaultHasher>>,
    stats: Stats,
    path: Vec<Choice>,
    reached: u64,
    violation: Option<(super::Violation, Vec<Choice>)>,
    incomplete: Option<String>,
    /// Fingerprints of final states, when asked for.
    finals: Option<BTreeSet<u128>>,
}

impl Explorer for Exhaustive {
    fn explore<M: Model>(&mut self, model: &M, bounds: &Bounds) -> Exploration {
        self.run(model, bounds, false).0
    }
}

impl Exhaustive {
    /// Explore, and also return the fingerprints of every final state reached (a state where
    /// no actor can step), for cross-checking reductions.
    pub fn final_states<M: Model>(&self, model: &M, bounds: &Bounds) -> (Exploration, BTreeSet<u128>) {
        let (exploration, finals) = self.run(model, bounds, true);
        (exploration, finals.expect("collected"))
    }

    fn run<M: Model>(&self, model: &M, bounds: &Bounds, collect: bool) -> (Exploration, Option<BTreeSet<u128>>) {
        let mut search = Search {
            model,
            props: Properties::of(model),
            bounds,
            sleep_sets: self.sleep_sets,
            visited: HashMap::default(),
            stats: Stats::default(),
            path: Vec::new(),
            reached: 0,
            violation: None,
            incomplete: None,
            finals: collect.then(BTreeSet::new),
        };
        let init = State::initial(model);
        assert!(init.world.db.is_simulated(), "exhaustive search forks states: simulator only");
        search.stats.executions = search.visit(init, Vec::new());
        let complete = search.violation.is_none() && search.incomplete.is_none();
        let exploration = Exploration {
            unreached: if complete { unreached_targets(model, search.reached) } else { Vec::new() },
            stats: search.stats,
            violation: search.violation,
            complete,
            incomplete_reason: search.incomplete,
        };
        (exploration, search.finals)
    }
}

impl<M: Model> Search<'_, M> {
    fn stopped(&self) -> bool {
        self.violation.is_some() || self.incomplete.is_some()
    }

    /// Explore from `state`, reached by `self.path`, with `sleep` asleep. Returns the complete
    /// executions found through this state on this visit.
    fn visit(&mut self, state: State<M::Actor>, sleep: Vec<(Choice, Footprint)>) -> u64 {
        let enabled = state.choices(self.bounds);
        let key = state.fingerprint();
        let asleep = |c: &Choice| sleep.iter().any(|(s, _)| s == c);
        // Choices whose subtrees an earlier visit of this state already covered.
        let mut done: Vec<Choice> = Vec::new();
        let mut executions = 0u64;
        let todo: Vec<Choice> = match self.visited.get_mut(&key) {
            Some(stored) => {
                // A state on the current path (a cycle) contributes no complete execution.
                let known = stored.executions.unwrap_or(0);
                let todo: Vec<Choice> =
                    enabled.iter().copied().filter(|c| stored.sleep.contains(c) && !asleep(c)).collect();
                done = enabled.iter().copied().filter(|c| !stored.sleep.contains(c)).collect();
                stored.sleep.retain(|c| asleep(c));
                if todo.is_empty() || stored.executions.is_none() {
                    return known;
                }
                executions = known;
                todo
            }
            None => {
                if self.visited.len() as u64 >= self.bounds.max_states {
                    self.incomplete = Some(format!("state bound reached: {} states", self.bounds.max_states));
                    return 0;
                }
                self.visited.insert(key, Visited { sleep: sleep.iter().map(|(c, _)| *c).collect(), executions: None });
                self.stats.states += 1;
                self.reached |= state.targets_reached(&self.props);
                if let Some(v) = state.check(self.model, &self.props) {
                    self.violation = Some((v, self.path.clone()));
                    return 0;
                }
                if !state.any_step() {
                    self.stats.final_states += 1;
                    executions = 1;
                    if let Some(finals) = &mut self.finals {
                        finals.insert(key);
                    }
                }
                enabled.iter().copied().filter(|c| !asleep(c)).collect()
            }
        };
        if self.path.len() as u32 >= self.bounds.max_depth {
            if !todo.is_empty() {
                self.incomplete = Some(format!("depth bound reached: {} steps", self.bounds.max_depth));
            }
            self.record(key, executions);
            return executions;
        }
        self.stats.pruned += (enabled.len() - todo.len() - done.len()) as u64;

        // Footprints of siblings already covered, for the children's sleep sets.
        let mut explored: Vec<(Choice, Footprint)> = Vec::new();
        if self.sleep_sets {
            for &c in &done {
                let mut probe = state.clone();
                let fp = probe.apply(c, self.bounds);
                explored.push((c, fp));
            }
        }
        for choice in todo {
            if self.stopped() {
                return executions;
            }
            let mut next = state.clone();
            let fp = next.apply(choice, self.bounds);
            self.stats.transitions += 1;
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
            executions = executions.saturating_add(self.visit(next, child_sleep));
            self.path.pop();
            explored.push((choice, fp));
        }
        self.record(key, executions);
        executions
    }

    fn record(&mut self, key: u128, executions: u64) {
        if let Some(v) = self.visited.get_mut(&key) {
            v.executions = Some(executions);
        }
    }
}
