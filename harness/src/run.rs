//! From a model and a mode to a verdict: explore, minimise any violation, replay it into a
//! timeline and a token. Everything the command line and the tests report comes from here.

use std::time::Instant;

use serde::Serialize;

use crate::explore::budget::Budget;
use crate::explore::dpor::Dpor;
use crate::explore::exhaustive::{self, Exhaustive};
use crate::explore::parallel;
use crate::explore::shortest::{self, NotEnabled};
use crate::explore::stateless::{Dfs, FirstEnabled, Pct, Random, Stateless};
use crate::explore::{Bounds, Choice, Exploration, Explorer, Shard, Stats, Violation};
use crate::model::Model;
use crate::sim::{Attached, SharedDb, SharedFiles, SharedProcesses};
use crate::timeline::Timeline;
use crate::token;

/// How to explore. `Dpor` is source-DPOR with sleep sets on the simulator, up to `executions`
/// executions ([`crate::explore::dpor`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Exhaustive,
    Random { seed: u64, schedules: u64 },
    Pct { seed: u64, schedules: u64, depth: u32 },
    Dpor { executions: u64 },
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Exhaustive => "exhaustive",
            Mode::Random { .. } => "random",
            Mode::Pct { .. } => "pct",
            Mode::Dpor { .. } => "dpor",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Holds,
    Violated,
    Inconclusive,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Holds => "holds",
            Verdict::Violated => "violated",
            Verdict::Inconclusive => "inconclusive",
        })
    }
}

/// A violation, minimised and replayed.
#[derive(Clone, Debug, Serialize)]
pub struct Counterexample {
    pub invariant: String,
    pub detail: String,
    pub token: String,
    pub steps: usize,
    pub timeline: Timeline,
    /// The parts of the final state that matter: table contents, files, processes.
    pub final_state: Vec<String>,
}

/// The verdict on one model under one mode.
#[derive(Clone, Debug, Serialize)]
pub struct Checked {
    pub verdict: Verdict,
    /// Why a verdict is inconclusive.
    pub reason: Option<String>,
    pub counterexample: Option<Counterexample>,
    pub stats: Stats,
    /// The bounds it was checked under.
    pub bounds: Bounds,
    pub complete: bool,
    /// PCT's per-schedule probability bound for bugs of the chosen depth.
    pub pct_guarantee: Option<f64>,
    /// For a sharded search: which shares this result covers. Its stats are then sums over the
    /// shares it covers.
    pub shares: Option<Shares>,
    /// Stats this search did not count (their fields read 0): a parallel search counts only
    /// what does not depend on the threads' timing.
    pub uncounted: &'static [&'static str],
    pub elapsed_ms: u64,
}

/// The shares of a sharded exhaustive search that one result covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Shares {
    /// The one share this result is (from 0), or `None` for every share merged.
    pub index: Option<u32>,
    pub count: u32,
    pub split_depth: u32,
    /// Names of the targets the covered shares reached.
    pub reached: Vec<String>,
}

/// How a run is carried out beyond its mode and bounds. None of it changes a verdict, except a
/// spent budget, which makes it `inconclusive` and says so.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub budget: Budget,
    /// Explore only share `index` of `count` (from 0); exhaustive, on the simulator.
    pub share: Option<(u32, u32)>,
    /// Explore on this many threads with a shared visited set ([`crate::explore::parallel`]).
    /// The result is the same for every thread count.
    pub threads: Option<usize>,
    /// Explore without the model's declared symmetry reduction ([`crate::symmetry`]).
    pub no_symmetry: bool,
}

/// What one share of a sharded search found, for [`merge`].
#[derive(Clone, Debug)]
pub struct ShareOutcome {
    pub shard: Shard,
    pub stats: Stats,
    pub complete: bool,
    pub reason: Option<String>,
    /// Names of the targets it reached.
    pub reached: Vec<String>,
    /// The violation it found, with a schedule that reaches it.
    pub violation: Option<(Violation, Vec<Choice>)>,
}

/// Where the database part of a world runs.
#[derive(Clone)]
pub enum Backend {
    /// The deterministic in-process simulation.
    Sim,
    /// A real server (named, e.g. `postgres`), explored statelessly.
    Real { name: &'static str, db: SharedDb },
    /// Real files and processes (named `real`): the model's file and process ops run as
    /// syscalls and real processes.
    Files { name: &'static str, files: SharedFiles, processes: SharedProcesses },
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sim => "sim",
            Backend::Real { name, .. } | Backend::Files { name, .. } => name,
        }
    }
    fn real(&self) -> Option<SharedDb> {
        match self {
            Backend::Sim | Backend::Files { .. } => None,
            Backend::Real { db, .. } => Some(db.clone()),
        }
    }
    fn files(&self) -> Option<SharedFiles> {
        match self {
            Backend::Files { files, .. } => Some(files.clone()),
            _ => None,
        }
    }
    fn processes(&self) -> Option<SharedProcesses> {
        match self {
            Backend::Files { processes, .. } => Some(processes.clone()),
            _ => None,
        }
    }
    pub(crate) fn attached_for_files(&self) -> Attached {
        self.attached()
    }
    fn attached(&self) -> Attached {
        Attached { db: self.real(), files: self.files(), processes: self.processes() }
    }
    /// The first failure of a real backend (a lost server, real files that disagree with the
    /// simulator): a run that met one has no verdict.
    pub fn failure(&self) -> Option<String> {
        match self {
            Backend::Sim => None,
            Backend::Real { db, .. } => db.lock().ok().and_then(|d| d.failure()),
            Backend::Files { files, processes, .. } => {
                files.lock().ok().and_then(|f| f.failure()).or_else(|| processes.lock().ok().and_then(|p| p.failure()))
            }
        }
    }
}

/// A sampled exploration (random or PCT) on `real`'s server or the simulator, raw: no
/// minimising. `Exhaustive` samples nothing and runs the simulator's exhaustive search. With PCT, also its guarantee: the probability that one
/// schedule finds a bug of the mode's depth.
fn explore_sampled_on<M: Model>(
    model: &M,
    bounds: &Bounds,
    mode: &Mode,
    real: &Option<SharedDb>,
    os: &Attached,
) -> (Exploration, Option<f64>) {
    match *mode {
        Mode::Exhaustive => (Exhaustive::default().explore(model, bounds), None),
        Mode::Dpor { executions } => {
            (Dpor { max_executions: executions, ..Dpor::default() }.explore(model, bounds), None)
        }
        Mode::Random { seed, schedules } => {
            let mut random = Stateless { scheduler: Random::new(seed), schedules, real: real.clone(), os: os.clone() };
            (random.explore(model, bounds), None)
        }
        Mode::Pct { seed, schedules, depth } => {
            let probe = Stateless { scheduler: FirstEnabled, schedules: 1, real: real.clone(), os: os.clone() }
                .explore(model, bounds);
            let steps = probe.stats.depth.max(1);
            let pct = Pct::new(seed, model.actor_names().len(), steps, depth);
            let guarantee = pct.guarantee();
            let mut sampled = Stateless { scheduler: pct, schedules, real: real.clone(), os: os.clone() };
            (sampled.explore(model, bounds), Some(guarantee))
        }
    }
}

/// `explore_sampled_on` the simulator: for benchmarks beside other engines' samplers.
pub fn explore_sampled<M: Model>(model: &M, bounds: &Bounds, mode: &Mode) -> Exploration {
    explore_sampled_on(model, bounds, mode, &None, &Attached::default()).0
}

/// Explore `model` (registered as `id`) in `mode` within `bounds`, on `backend`. On a real server
/// "exhaustive" first tries the simulator's shortest counterexample there; unless the server
/// reproduces it, it enumerates schedules statelessly, up to `bounds.max_states` of them.
pub fn check<M: Model>(id: &str, model: &M, mode: &Mode, bounds: &Bounds, backend: &Backend) -> Checked {
    check_with(id, model, mode, bounds, backend, &Options::default())
}

/// [`check`], within `options`' budget, or one share of it, or on several threads.
pub fn check_with<M: Model>(
    id: &str,
    model: &M,
    mode: &Mode,
    bounds: &Bounds,
    backend: &Backend,
    options: &Options,
) -> Checked {
    let started = Instant::now();
    if let (Mode::Exhaustive, Some(_)) = (mode, backend.files()) {
        return crate::run_files::check_exhaustive(id, model, bounds, backend, started);
    }
    let sharded = *mode == Mode::Exhaustive && matches!(backend, Backend::Sim);
    if let (true, Some((index, count))) = (sharded, options.share) {
        let split_depth = exhaustive::split_depth(model, bounds, count);
        let shard = Shard { index, count, split_depth };
        let outcome = explore_share(model, bounds, shard, &options.budget, !options.no_symmetry);
        let share_complete = outcome.complete;
        let mut checked = merge(id, model, bounds, vec![outcome], started);
        checked.complete = share_complete;
        if checked.verdict == Verdict::Inconclusive && share_complete {
            checked.reason =
                Some(format!("share {} of {count} explored completely; merge every share for a verdict", index + 1));
        }
        if let Some(shares) = &mut checked.shares {
            shares.index = Some(index);
        }
        return checked;
    }
    let parallel = sharded && options.threads.is_some();
    let mut pct_guarantee = None;
    let real = backend.real();
    let os = Attached { db: None, ..backend.attached() };
    let exploration: Exploration = match (mode, &real) {
        (Mode::Exhaustive, None) => match options.threads {
            Some(threads) => parallel::explore(model, bounds, threads, &options.budget, !options.no_symmetry),
            None => {
                Exhaustive { budget: options.budget.clone(), symmetry: !options.no_symmetry, ..Exhaustive::default() }
                    .explore(model, bounds)
            }
        },
        (Mode::Exhaustive, Some(db)) => match simulator_counterexample_on(model, bounds, db) {
            Some(confirmed) => confirmed,
            None => Stateless {
                scheduler: Dfs::default(),
                schedules: bounds.max_states,
                real: real.clone(),
                os: os.clone(),
            }
            .explore(model, bounds),
        },
        (Mode::Dpor { .. }, Some(_)) => Exploration {
            stats: Stats::default(),
            violation: None,
            complete: false,
            incomplete_reason: Some("dpor forks simulated states: it runs on the simulator only".to_string()),
            unreached: Vec::new(),
            reached: 0,
            cache_bytes: 0,
        },
        (&Mode::Dpor { executions }, None) => {
            let dpor = Dpor { budget: options.budget.clone(), max_executions: executions, ..Dpor::default() };
            dpor.run(model, bounds).0
        }
        (Mode::Random { .. } | Mode::Pct { .. }, _) => {
            let (exploration, guarantee) = explore_sampled_on(model, bounds, mode, &real, &os);
            pct_guarantee = guarantee;
            exploration
        }
    };
    let (verdict, reason, counterexample) = match exploration.violation {
        Some(found) => {
            // Breadth-first search forks states, so a real server only gets shrinking.
            let schedule = match (backend, &real) {
                (Backend::Sim, _) => shortest::minimise_within(model, bounds, found, &options.budget).1,
                (_, Some(db)) => shrink_on_real(model, bounds, &found, db),
                (_, None) => {
                    shortest::shrink_attached(model, bounds, &found.0.invariant, &found.1, &backend.attached())
                }
            };
            (Verdict::Violated, None, Some(counterexample(id, model, bounds, &schedule, &backend.attached())))
        }
        None if backend.failure().is_some() => (Verdict::Inconclusive, backend.failure(), None),
        None if !exploration.complete => (Verdict::Inconclusive, exploration.incomplete_reason, None),
        None if matches!(mode, Mode::Dpor { .. }) && !step_invariants(model).is_empty() => {
            let why = format!(
                "dpor runs one execution per trace, so {} (checked at every step) were not checked in every \
                 intermediate state; final states and deadlocks were all covered; the exhaustive mode decides",
                step_invariants(model).join(", ")
            );
            (Verdict::Inconclusive, Some(why), None)
        }
        None if !exploration.unreached.is_empty() => {
            let why = format!("vacuous: no explored state reached {}", exploration.unreached.join(", "));
            (Verdict::Inconclusive, Some(why), None)
        }
        None => (Verdict::Holds, None, None),
    };
    Checked {
        verdict,
        reason,
        counterexample,
        stats: exploration.stats,
        bounds: bounds.clone(),
        complete: exploration.complete,
        pct_guarantee,
        shares: None,
        uncounted: match (parallel, verdict) {
            // Where a violation stopped the threads depends on their timing.
            (true, Verdict::Violated) => &["executions", "final_states", "states", "transitions", "pruned", "depth"],
            (true, _) => &["executions", "pruned", "depth"],
            (false, _) => &[],
        },
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

/// Invariants checked at every step, not only in final states.
fn step_invariants<M: Model>(model: &M) -> Vec<&'static str> {
    model.invariants().iter().filter(|i| !i.final_only).map(|i| i.name).collect()
}

fn target_names<M: Model>(model: &M, reached: u64) -> Vec<String> {
    model
        .targets()
        .iter()
        .enumerate()
        .filter(|(k, _)| reached & (1u64 << k) != 0)
        .map(|(_, t)| t.name.to_string())
        .collect()
}

/// Explore one share of the state space.
pub fn explore_share<M: Model>(
    model: &M,
    bounds: &Bounds,
    shard: Shard,
    budget: &Budget,
    symmetry: bool,
) -> ShareOutcome {
    let mut search = Exhaustive { shard: Some(shard), budget: budget.clone(), symmetry, ..Exhaustive::default() };
    let e = search.explore(model, bounds);
    ShareOutcome {
        shard,
        stats: e.stats,
        complete: e.complete,
        reason: e.incomplete_reason,
        reached: target_names(model, e.reached),
        violation: e.violation,
    }
}

/// Combine shares of one sharded search into the verdict one unsharded search gives: violated if
/// a share found a violation (the first violating share's, minimised over the whole model, so
/// the counterexample is the one an unsharded run shows); holds only if every share completed
/// and together they reached every target; otherwise inconclusive with the first share's
/// reason. Stats are sums over the shares up to the first violating one. `outcomes` holds each
/// share at most once, all of one search (same count and split depth).
pub fn merge<M: Model>(
    id: &str,
    model: &M,
    bounds: &Bounds,
    mut outcomes: Vec<ShareOutcome>,
    started: Instant,
) -> Checked {
    outcomes.sort_by_key(|o| o.shard.index);
    let first = outcomes.first().expect("at least one share").shard;
    let violating = outcomes.iter().position(|o| o.violation.is_some());
    let covered = &outcomes[..violating.map_or(outcomes.len(), |v| v + 1)];
    let mut stats = Stats::default();
    let mut reached: Vec<String> = Vec::new();
    for o in covered {
        stats.executions = stats.executions.saturating_add(o.stats.executions);
        stats.final_states += o.stats.final_states;
        stats.states += o.stats.states;
        stats.transitions += o.stats.transitions;
        stats.pruned += o.stats.pruned;
        stats.depth = stats.depth.max(o.stats.depth);
        for name in &o.reached {
            if !reached.contains(name) {
                reached.push(name.clone());
            }
        }
    }
    // Target order, not share order.
    let targets: Vec<String> = model.targets().iter().map(|t| t.name.to_string()).collect();
    reached.sort_by_key(|name| targets.iter().position(|t| t == name));
    // Shares after a violating one do not matter; without a violation every share must be here.
    let all_shares = violating.is_some() || covered.len() as u32 == first.count;
    let complete = violating.is_none() && all_shares && covered.iter().all(|o| o.complete);
    let (verdict, reason, counterexample) = match violating {
        Some(v) => {
            let found = outcomes[v].violation.clone().expect("violating");
            let schedule = shortest::minimise(model, bounds, found).1;
            (Verdict::Violated, None, Some(counterexample(id, model, bounds, &schedule, &Attached::default())))
        }
        None => match covered.iter().find(|o| !o.complete) {
            Some(o) => {
                let why = o.reason.clone().unwrap_or_else(|| "incomplete".to_string());
                (Verdict::Inconclusive, Some(format!("share {} of {}: {why}", o.shard.index + 1, first.count)), None)
            }
            None if !all_shares => {
                let missing: Vec<String> = (0..first.count)
                    .filter(|i| !covered.iter().any(|o| o.shard.index == *i))
                    .map(|i| (i + 1).to_string())
                    .collect();
                let why = format!("shares not explored: {} of {}", missing.join(", "), first.count);
                (Verdict::Inconclusive, Some(why), None)
            }
            None => {
                let unreached: Vec<&String> = targets.iter().filter(|t| !reached.contains(t)).collect();
                if unreached.is_empty() {
                    (Verdict::Holds, None, None)
                } else {
                    let names: Vec<&str> = unreached.iter().map(|s| s.as_str()).collect();
                    let why = format!("vacuous: no explored state reached {}", names.join(", "));
                    (Verdict::Inconclusive, Some(why), None)
                }
            }
        },
    };
    Checked {
        verdict,
        reason,
        counterexample,
        stats,
        bounds: bounds.clone(),
        complete,
        pct_guarantee: None,
        shares: Some(Shares { index: None, count: first.count, split_depth: first.split_depth, reached }),
        uncounted: &[],
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

/// The simulator's shortest counterexample, if the server reproduces the same violation with the
/// same schedule: a real execution that decides the verdict. The server knows no state caching
/// or reduction, so enumerating its schedules until one fails can take thousands of runs where
/// the simulator's search took one.
fn simulator_counterexample_on<M: Model>(model: &M, bounds: &Bounds, db: &SharedDb) -> Option<Exploration> {
    let found = Exhaustive::default().explore(model, bounds).violation?;
    let (violation, schedule) = shortest::minimise(model, bounds, found);
    let replayed = shortest::replay_on(model, bounds, &schedule, Some(db)).ok()?;
    let on_server = replayed.violation.filter(|v| v.invariant == violation.invariant)?;
    let steps = schedule.len() as u32;
    Some(Exploration {
        stats: Stats {
            executions: 1,
            final_states: 0,
            states: u64::from(steps) + 1,
            transitions: u64::from(steps),
            pruned: 0,
            depth: steps,
        },
        violation: Some((on_server, schedule)),
        complete: false,
        incomplete_reason: None,
        unreached: Vec::new(),
        reached: 0,
        cache_bytes: 0,
    })
}

/// Shrink a violation a real server found. Each replay on a server costs a round trip per step
/// (and tens of milliseconds per wait), so when the simulator reaches the same violation with the
/// same schedule, shrink there and keep the result if the server still agrees; otherwise shrink
/// on the server itself.
fn shrink_on_real<M: Model>(
    model: &M,
    bounds: &Bounds,
    found: &(crate::explore::Violation, Vec<Choice>),
    db: &SharedDb,
) -> Vec<Choice> {
    let invariant = &found.0.invariant;
    let violates = |schedule: &[Choice], real: Option<&SharedDb>| {
        shortest::replay_on(model, bounds, schedule, real)
            .ok()
            .and_then(|r| r.violation)
            .is_some_and(|v| &v.invariant == invariant)
    };
    if violates(&found.1, None) {
        let candidate = shortest::shrink(model, bounds, invariant, &found.1, None);
        if violates(&candidate, Some(db)) {
            return candidate;
        }
    }
    shortest::shrink(model, bounds, invariant, &found.1, Some(db))
}

/// Replay `schedule`, which must reach a violation, into a counterexample.
pub(crate) fn counterexample<M: Model>(
    id: &str,
    model: &M,
    bounds: &Bounds,
    schedule: &[Choice],
    attached: &Attached,
) -> Counterexample {
    let replayed = shortest::replay_attached(model, bounds, schedule, attached).expect("a minimised schedule replays");
    let violation = replayed.violation.expect("a minimised schedule still fails");
    Counterexample {
        invariant: violation.invariant,
        detail: violation.detail,
        token: token::encode(id, schedule),
        steps: schedule.len(),
        timeline: Timeline::new(model.actor_names(), &replayed.events),
        final_state: replayed.state.world.describe(),
    }
}

/// What replaying a token shows.
#[derive(Clone, Debug, Serialize)]
pub struct Replay {
    pub verdict: Verdict,
    pub invariant: Option<String>,
    pub detail: Option<String>,
    pub steps: usize,
    pub timeline: Timeline,
    pub final_state: Vec<String>,
    /// Each step's timeline cell, for comparing backends step by step.
    pub log: Vec<String>,
}

/// Replay a decoded token on `backend`.
pub fn replay<M: Model>(
    model: &M,
    bounds: &Bounds,
    schedule: &[Choice],
    backend: &Backend,
) -> Result<Replay, NotEnabled> {
    let replayed = shortest::replay_attached(model, bounds, schedule, &backend.attached())?;
    let (verdict, invariant, detail) = match replayed.violation {
        Some(v) => (Verdict::Violated, Some(v.invariant), Some(v.detail)),
        None => (Verdict::Inconclusive, None, None),
    };
    Ok(Replay {
        log: replayed.events.iter().map(|e| e.text.clone()).collect(),
        verdict,
        invariant,
        detail,
        steps: replayed.events.len(),
        timeline: Timeline::new(model.actor_names(), &replayed.events),
        final_state: replayed.state.world.describe(),
    })
}
