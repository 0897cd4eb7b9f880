//! Stateless exploration: run whole schedules from the initial state, each decided by a
//! seeded [`Scheduler`]. Needs no state hashing, so it works where states cannot be forked.

use std::collections::HashSet;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::Model;
use crate::sim::{Attached, SharedDb};

use super::state::{Properties, State};
use super::visited::FingerprintSet;
use super::{unreached_targets, Bounds, Choice, ChoiceKind, Exploration, Explorer, Scheduler, Stats};

/// Runs up to `schedules` schedules chosen by `scheduler`, each from a fresh initial state, on
/// the simulator or, when `real` is set, with the database on a real server.
pub struct Stateless<S> {
    pub scheduler: S,
    pub schedules: u64,
    pub real: Option<SharedDb>,
    /// Real files and processes for the model's world (the database is `real`).
    pub os: Attached,
}

impl<S> Stateless<S> {
    pub fn new(scheduler: S, schedules: u64) -> Stateless<S> {
        Stateless { scheduler, schedules, real: None, os: Attached::default() }
    }
}

impl<S: Scheduler> Explorer for Stateless<S> {
    fn explore<M: Model>(&mut self, model: &M, bounds: &Bounds) -> Exploration {
        let props = Properties::of(model);
        let mut stats = Stats::default();
        let mut seen: FingerprintSet = HashSet::default();
        let mut finals: FingerprintSet = HashSet::default();
        let mut reached = 0u64;
        let mut violation = None;
        let mut index = 0;
        let mut depth_bound_hit = false;
        'schedules: while index < self.schedules && self.scheduler.begin(index) {
            index += 1;
            stats.executions += 1;
            let attached = Attached { db: self.real.clone(), ..self.os.clone() };
            let mut state = State::initial_attached(model, &attached);
            let mut path: Vec<Choice> = Vec::new();
            for step in 0..=bounds.max_depth {
                if seen.insert(state.fingerprint()) {
                    stats.states += 1;
                }
                reached |= state.targets_reached(&props);
                if let Some(v) = state.check(model, &props) {
                    violation = Some((v, path));
                    break 'schedules;
                }
                let enabled = state.choices(bounds);
                if !state.any_step() || enabled.is_empty() {
                    if finals.insert(state.fingerprint()) {
                        stats.final_states += 1;
                    }
                    break;
                }
                if step == bounds.max_depth {
                    depth_bound_hit = true;
                    break;
                }
                let pick = self.scheduler.choose(&enabled, step);
                assert!(pick < enabled.len(), "a scheduler picks an enabled choice");
                state.apply(enabled[pick], bounds);
                path.push(enabled[pick]);
                stats.transitions += 1;
                stats.depth = stats.depth.max(path.len() as u32);
            }
        }
        let exhausted = self.scheduler.exhausted();
        let complete = violation.is_none() && exhausted == Some(true) && !depth_bound_hit;
        let reason = if complete || violation.is_some() {
            None
        } else if depth_bound_hit {
            Some(format!("depth bound reached: {} steps", bounds.max_depth))
        } else if exhausted.is_none() {
            Some(format!("{index} sampled schedules do not cover every interleaving"))
        } else {
            Some(format!("schedule bound reached: {} schedules", self.schedules))
        };
        Exploration {
            unreached: if violation.is_none() { unreached_targets(model, reached) } else { Vec::new() },
            stats,
            violation,
            complete,
            incomplete_reason: reason,
            reached,
            cache_bytes: 0,
        }
    }
}

/// Chance that a scheduler picks a fault for the actor it chose, when one is enabled. Faults are
/// rare in practice and a fault on every step would crash every run at once.
const FAULT_ODDS: u32 = 8;

/// Pick `actor`'s step if it has one, and one of its faults with odds 1 in `FAULT_ODDS`.
fn pick_for_actor(rng: &mut ChaCha8Rng, enabled: &[Choice], actor: u8) -> usize {
    let mine: Vec<usize> =
        (0..enabled.len()).filter(|&k| enabled[k].actor == actor && enabled[k].kind != ChoiceKind::PowerLoss).collect();
    let step = mine.iter().copied().find(|&k| enabled[k].kind == ChoiceKind::Step);
    let faults: Vec<usize> = mine.iter().copied().filter(|&k| enabled[k].kind != ChoiceKind::Step).collect();
    match step {
        Some(s) if faults.is_empty() || rng.gen_range(0..FAULT_ODDS) != 0 => s,
        _ => *faults.choose(rng).expect("an enabled actor has a step or a fault"),
    }
}

fn actors_of(enabled: &[Choice]) -> Vec<u8> {
    let mut actors: Vec<u8> = enabled.iter().filter(|c| c.kind != ChoiceKind::PowerLoss).map(|c| c.actor).collect();
    actors.dedup();
    actors
}

/// A power-loss choice belongs to no actor (its `actor` field picks a durable state). Pick one,
/// uniformly, when nothing else is enabled (mid power loss), and otherwise as rarely as a fault
/// of one actor is picked.
fn pick_power_loss(rng: &mut ChaCha8Rng, enabled: &[Choice]) -> Option<usize> {
    let picks: Vec<usize> = (0..enabled.len()).filter(|&k| enabled[k].kind == ChoiceKind::PowerLoss).collect();
    if picks.is_empty() {
        return None;
    }
    if picks.len() == enabled.len() || rng.gen_range(0..FAULT_ODDS * 4) == 0 {
        return picks.choose(rng).copied();
    }
    None
}

/// Uniform over enabled actors, seeded.
pub struct Random {
    rng: ChaCha8Rng,
}

impl Random {
    pub fn new(seed: u64) -> Random {
        Random { rng: ChaCha8Rng::seed_from_u64(seed) }
    }
}

impl Scheduler for Random {
    fn begin(&mut self, _index: u64) -> bool {
        true
    }
    fn choose(&mut self, enabled: &[Choice], _step: u32) -> usize {
        if let Some(k) = pick_power_loss(&mut self.rng, enabled) {
            return k;
        }
        let actors = actors_of(enabled);
        let actor = *actors.choose(&mut self.rng).expect("enabled is never empty");
        pick_for_actor(&mut self.rng, enabled, actor)
    }
}

/// Probabilistic Concurrency Testing (Burckhardt, Kothari, Musuvathi, Nagarakatte; ASPLOS 2010).
/// Each schedule gives the actors random distinct priorities and picks `depth − 1` random
/// change points among the first `steps` steps; at a change point the running actor drops below
/// every other. A bug of depth `d` is found by one schedule with probability at least
/// `1 / (n·k^(d−1))` for `n` actors and `k` steps.
pub struct Pct {
    rng: ChaCha8Rng,
    actors: usize,
    steps: u32,
    depth: u32,
    priority: Vec<u32>,
    change_points: Vec<u32>,
}

impl Pct {
    pub fn new(seed: u64, actors: usize, steps: u32, depth: u32) -> Pct {
        assert!(actors > 0 && steps > 0 && depth > 0);
        Pct {
            rng: ChaCha8Rng::seed_from_u64(seed),
            actors,
            steps,
            depth,
            priority: Vec::new(),
            change_points: Vec::new(),
        }
    }

    /// The per-schedule lower bound on finding a bug of this depth.
    pub fn guarantee(&self) -> f64 {
        1.0 / (self.actors as f64 * f64::from(self.steps).powi(self.depth as i32 - 1))
    }
}

impl Scheduler for Pct {
    fn begin(&mut self, _index: u64) -> bool {
        // Initial priorities d..d+n-1, in random order; change points take priorities 1..d-1.
        let mut prios: Vec<u32> = (0..self.actors as u32).map(|p| p + self.depth).collect();
        prios.shuffle(&mut self.rng);
        self.priority = prios;
        self.change_points = (0..self.depth.saturating_sub(1)).map(|_| self.rng.gen_range(1..=self.steps)).collect();
        true
    }

    fn choose(&mut self, enabled: &[Choice], step: u32) -> usize {
        if let Some(k) = pick_power_loss(&mut self.rng, enabled) {
            return k;
        }
        let actors = actors_of(enabled);
        let highest = |prio: &[u32]| *actors.iter().max_by_key(|&&a| prio[usize::from(a)]).expect("never empty");
        let mut actor = highest(&self.priority);
        if let Some(j) = self.change_points.iter().position(|&p| p == step) {
            self.priority[usize::from(actor)] = j as u32 + 1;
            actor = highest(&self.priority);
        }
        pick_for_actor(&mut self.rng, enabled, actor)
    }
}

/// Always the first enabled step: a quick way to measure a model's schedule length.
pub struct FirstEnabled;

impl Scheduler for FirstEnabled {
    fn begin(&mut self, index: u64) -> bool {
        index == 0
    }
    fn choose(&mut self, enabled: &[Choice], _step: u32) -> usize {
        enabled.iter().position(|c| c.kind == ChoiceKind::Step).unwrap_or(0)
    }
}

/// Every schedule, depth first, without forking state: each schedule re-runs from the start and
/// follows the previous one's choices up to the last choice point with an untried sibling.
/// Exhaustive on a backend whose state cannot be cloned or hashed, such as a real server.
#[derive(Default)]
pub struct Dfs {
    /// Per step of the current schedule: the choice taken and how many there were.
    frames: Vec<(usize, usize)>,
    done: bool,
}

impl Scheduler for Dfs {
    fn begin(&mut self, index: u64) -> bool {
        if index == 0 {
            self.frames.clear();
            self.done = false;
            return true;
        }
        while let Some((taken, count)) = self.frames.pop() {
            if taken + 1 < count {
                self.frames.push((taken + 1, count));
                return true;
            }
        }
        self.done = true;
        false
    }

    fn choose(&mut self, enabled: &[Choice], step: u32) -> usize {
        let step = step as usize;
        match self.frames.get(step) {
            Some(&(taken, count)) => {
                assert_eq!(
                    count,
                    enabled.len(),
                    "the backend must be deterministic: step {step} offered other choices"
                );
                taken
            }
            None => {
                assert_eq!(step, self.frames.len());
                self.frames.push((0, enabled.len()));
                0
            }
        }
    }

    fn exhausted(&self) -> Option<bool> {
        Some(self.done)
    }
}
