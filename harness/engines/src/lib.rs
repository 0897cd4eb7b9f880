//! racelab's models explored by other engines: [loom](https://docs.rs/loom) (exhaustive, with
//! its own partial-order reduction) and [shuttle](https://docs.rs/shuttle) (depth-first, PCT,
//! random).
//!
//! Every catalogue model runs unchanged: each actor is an engine thread that takes the engine's
//! lock, runs its next op on the shared world, and waits on an engine condition variable while
//! its op is blocked; fault injectors are threads too (see the `execution` module). Whatever schedule the
//! engine picks is recorded as racelab [`Choice`]s, so a violation it finds replays through
//! `racelab replay` and prints as racelab's timeline. Verdicts follow racelab's rules: `holds`
//! only when loom, or shuttle's depth-first search, explored every schedule within the bounds.

mod execution;
mod loom;
mod shuttle;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use racelab_harness::catalogue::DynModel;
use racelab_harness::explore::{Bounds, Choice, Stats, Violation};
use racelab_harness::model::Model;
use racelab_harness::run::{Backend, Checked, Counterexample, Verdict};
use racelab_harness::token;

pub use crate::loom::MAX_THREADS as LOOM_MAX_THREADS;
pub use crate::shuttle::ShuttleMode;

use execution::Record;

/// Which engine explores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Loom,
    Shuttle(ShuttleMode),
}

impl Engine {
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Loom => "loom",
            Engine::Shuttle(_) => "shuttle",
        }
    }

    /// The exploration mode, as racelab names its own.
    pub fn mode(&self) -> &'static str {
        match self {
            Engine::Loom => "exhaustive",
            Engine::Shuttle(mode) => mode.name(),
        }
    }

    /// Explores every schedule when it runs to the end (loom, shuttle's DFS).
    pub fn exhaustive(&self) -> bool {
        matches!(self, Engine::Loom | Engine::Shuttle(ShuttleMode::Dfs))
    }
}

/// How far an engine may go.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Executions (schedules) at most; reaching it makes the verdict inconclusive.
    pub schedules: u64,
    /// For benchmarks only: stop at this instant (never used for a verdict the command prints).
    pub deadline: Option<Instant>,
    /// Count distinct states and keep each final state's observation (costs a fingerprint per
    /// step; off in benchmarks).
    pub keep_states: bool,
}

impl Limits {
    pub fn schedules(schedules: u64) -> Limits {
        Limits { schedules, deadline: None, keep_states: true }
    }
}

/// What an engine's exploration found, before minimising.
#[derive(Clone, Debug, Default)]
pub struct EngineRun {
    pub stats: Stats,
    /// The first violation, with the racelab schedule the engine took to it.
    pub violation: Option<(Violation, Vec<Choice>)>,
    /// Every schedule within the bounds was explored.
    pub complete: bool,
    /// Why not, when the exploration did not complete and found nothing.
    pub reason: Option<String>,
    /// It stopped at its budget of executions (`Limits::schedules`) with schedules left.
    pub budget_spent: bool,
    /// Targets no explored state reached (only computed when complete).
    pub unreached: Vec<String>,
    /// Final states (no actor can step) by fingerprint, with what an observer sees in each.
    pub finals: BTreeMap<u128, Vec<String>>,
}

/// Explore `model` within `bounds` on `engine`.
pub fn explore(model: &dyn DynModel, bounds: &Bounds, engine: Engine, limits: &Limits) -> EngineRun {
    let machine = model.machine(bounds);
    if engine == Engine::Loom {
        if let Some(reason) = crate::loom::unsupported(&*machine) {
            return EngineRun { reason: Some(reason), ..EngineRun::default() };
        }
    }
    let record = Arc::new(Record::new(limits.schedules, limits.deadline, limits.keep_states));
    let over = record.observe_initial(&*machine) || (!engine.exhaustive() && !machine.any_step());
    let outcome: Result<bool, String> = if over {
        Ok(true)
    } else {
        match engine {
            Engine::Loom => crate::loom::explore(machine.boxed_clone(), &record).map(|()| true),
            Engine::Shuttle(mode) => crate::shuttle::explore(machine.boxed_clone(), &record, mode, limits.schedules),
        }
    };
    let found = record.take();
    let stats = Stats {
        executions: found.executions,
        final_states: found.finals.len() as u64,
        states: found.states.len() as u64,
        transitions: found.transitions,
        pruned: 0,
        depth: found.depth,
    };
    let mut run = EngineRun { stats, finals: found.finals, budget_spent: found.budget_spent, ..EngineRun::default() };
    if let Some(violation) = found.violation {
        run.violation = Some(violation);
        return run;
    }
    match outcome {
        Err(panic) => run.reason = Some(format!("{} stopped: {panic}", engine.name())),
        // A sampler ends at its schedule count by design; only a depth or time bound is news.
        Ok(_) if !engine.exhaustive() => {
            let sampled = format!("{} sampled schedules do not cover every interleaving", found.executions);
            run.reason = Some(match found.incomplete {
                Some(why) if !why.starts_with("schedule bound") => why,
                _ => sampled,
            })
        }
        Ok(_) if found.incomplete.is_some() => run.reason = found.incomplete,
        Ok(false) => run.reason = Some("shuttle's depth-first search did not finish".to_string()),
        Ok(true) => {
            run.complete = true;
            run.unreached = machine.unreached(found.reached);
        }
    }
    run
}

/// Explore and decide a verdict, with racelab's rules and output: a violation is replayed on
/// racelab's simulator, shortened by replay-checked shrinking, and given a token.
pub fn check(id: &str, model: &dyn DynModel, bounds: &Bounds, engine: Engine, limits: &Limits) -> Checked {
    let started = Instant::now();
    if bounds.power_losses > 0 {
        // A power loss picks one of many durable states for the whole world at once; the
        // adapters have no injector for it, so they say so instead of exploring less.
        return Checked {
            verdict: Verdict::Inconclusive,
            reason: Some(format!("{} cannot explore power losses (the scenario allows some)", engine.name())),
            counterexample: None,
            stats: Stats::default(),
            bounds: bounds.clone(),
            shares: None,
            uncounted: &[],
            complete: false,
            pct_guarantee: None,
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
    }
    let run = explore(model, bounds, engine, limits);
    let (verdict, reason, counterexample) = match &run.violation {
        Some((violation, schedule)) => match counterexample(id, model, bounds, &violation.invariant, schedule) {
            Ok(cx) => (Verdict::Violated, None, Some(cx)),
            Err(why) => (Verdict::Inconclusive, Some(why), None),
        },
        None if !run.complete && run.budget_spent && engine.exhaustive() => {
            let mut why = budget_spent(model, bounds, engine, run.stats.executions);
            if let Some(depth) = run.reason.as_ref().filter(|r| r.starts_with("depth bound")) {
                why = format!("{why}; {} also reached its {depth}", engine.name());
            }
            (Verdict::Inconclusive, Some(why), None)
        }
        None if !run.complete => (Verdict::Inconclusive, run.reason.clone(), None),
        None if !run.unreached.is_empty() => {
            let why = format!("vacuous: no explored state reached {}", run.unreached.join(", "));
            (Verdict::Inconclusive, Some(why), None)
        }
        None => (Verdict::Holds, None, None),
    };
    Checked {
        verdict,
        reason,
        counterexample,
        stats: run.stats,
        bounds: bounds.clone(),
        shares: None,
        uncounted: &[],
        complete: run.complete,
        pct_guarantee: None,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

/// Why an exhaustive engine that ran out of budget proves nothing, with what racelab's own
/// search needs for the same scenario (cheap beside the engine's run: it merges equal states).
fn budget_spent(model: &dyn DynModel, bounds: &Bounds, engine: Engine, executions: u64) -> String {
    let name = match engine {
        Engine::Loom => "loom",
        Engine::Shuttle(_) => "shuttle's depth-first search",
    };
    let ours = model.explore_exhaustive(bounds, true);
    let racelab = if let Some((violation, _)) = &ours.violation {
        format!("racelab's own search finds {} after {} states", violation.invariant, ours.stats.states)
    } else if ours.complete {
        format!(
            "racelab's own search is complete at {} states ({} executions)",
            ours.stats.states, ours.stats.executions
        )
    } else {
        let why = ours.incomplete_reason.unwrap_or_else(|| "a violation".to_string());
        format!("racelab's own search does not complete either ({why})")
    };
    format!(
        "{name} explored {executions} executions, its budget (--schedules), without exhausting its schedules; {racelab}"
    )
}

/// [`check`] for a model whose type is known.
pub fn check_model<M: Model>(id: &str, model: &M, bounds: &Bounds, engine: Engine, limits: &Limits) -> Checked {
    check(id, model, bounds, engine, limits)
}

/// The engine's schedule, checked by replay on the simulator, then shrunk (each shorter
/// schedule kept only if it replays to the same invariant).
fn counterexample(
    id: &str,
    model: &dyn DynModel,
    bounds: &Bounds,
    invariant: &str,
    schedule: &[Choice],
) -> Result<Counterexample, String> {
    let replays = |s: &[Choice]| {
        model.replay(bounds, s, &Backend::Sim).ok().filter(|r| r.invariant.as_deref() == Some(invariant))
    };
    if replays(schedule).is_none() {
        return Err(format!(
            "adapter bug: the engine's schedule ({} steps) does not replay to {invariant} on racelab's simulator",
            schedule.len()
        ));
    }
    let shortest = model.shrink(bounds, invariant, schedule);
    let replayed = replays(&shortest).ok_or_else(|| format!("a shrunk schedule no longer replays to {invariant}"))?;
    Ok(Counterexample {
        invariant: invariant.to_string(),
        detail: replayed.detail.unwrap_or_default(),
        token: token::encode(id, &shortest),
        steps: shortest.len(),
        timeline: replayed.timeline,
        final_state: replayed.final_state,
    })
}
