//! loom and shuttle against racelab's own explorer, scenario by scenario.
//!
//! - `loom/<id>`: loom's exhaustive verdict equals racelab's, every violation loom finds replays
//!   from its token to the same invariant, and where both hold, both reached exactly the same
//!   final states (same fingerprints: the actors, what each saw, the world's committed state).
//! - `shuttle-dfs/<id>`: the same for shuttle's depth-first search, without faults.
//! - `shuttle-pct/<id>`, `shuttle-random/<id>`: on every scenario racelab finds violated, shuttle
//!   with a fixed seed finds a violation within the schedule budget, and its token replays.
//!
//! `cargo test` runs a bounded version: loom gets a scenario's declared fault budget only when
//! it runs at most three engine threads, otherwise the same scenario without faults (racelab
//! is then checked with the same reduced bounds); a scenario with more than three actors is
//! ignored, and only the five headline races are compared. `RACELAB_ENGINES_FULL=1` (`just engines`) gives loom every scenario with its
//! declared bounds, which takes loom hours on the larger ones.

use std::path::Path;
use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
use racelab_engines::{check, explore, Engine, Limits, ShuttleMode};
use racelab_harness::explore::Bounds;
use racelab_harness::run::{Backend, Checked, Mode, Verdict};
use racelab_harness::scenario::{self, Scenario};
use racelab_harness::token;

/// Schedules per scenario for shuttle's samplers, with a fixed seed.
const SAMPLED: u64 = 2_000;
const SEED: u64 = 7;
/// Engine threads (actors plus fault injectors) up to which `cargo test` keeps the faults.
const SMALL: usize = 3;
/// The races `cargo test` compares (the five headline races of the seeds); `just engines`
/// compares every race.
const BOUNDED_RACES: [&str; 5] =
    ["summary-upsert", "progress-clear-insert", "nested-locks", "judge-persist", "daemon-spawn"];

fn main() {
    let args = Arguments::from_args();
    let full = std::env::var_os("RACELAB_ENGINES_FULL").is_some();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let scenarios = scenario::load_dir(&dir, &racelab_models::catalogue()).unwrap_or_else(|e| {
        eprintln!("cannot load scenarios: {e}");
        std::process::exit(101);
    });
    assert!(!scenarios.is_empty(), "no scenario files under {}", dir.display());
    let mut trials = Vec::new();
    for s in scenarios.into_iter().map(Arc::new) {
        let elsewhere = !full && !BOUNDED_RACES.contains(&s.race.as_str());
        let s1 = s.clone();
        let too_big = elsewhere || (!full && threads(&s, &bounded(&s, full)) > SMALL);
        trials.push(
            Trial::test(format!("loom/{}", s.id), move || agrees(&s1, Engine::Loom, &bounded(&s1, full)))
                .with_ignored_flag(too_big),
        );
        // shuttle's DFS has no reduction at all: without faults, and two actors only, in the
        // bounded run.
        let s3 = s.clone();
        let dfs_too_big = elsewhere || (!full && s.model.actor_names().len() > 2);
        trials.push(
            Trial::test(format!("shuttle-dfs/{}", s.id), move || {
                agrees(&s3, Engine::Shuttle(ShuttleMode::Dfs), &without_faults(&s3.bounds))
            })
            .with_ignored_flag(dfs_too_big),
        );
        for mode in [ShuttleMode::Pct { seed: SEED, depth: 3 }, ShuttleMode::Random { seed: SEED }] {
            let s2 = s.clone();
            trials.push(
                Trial::test(format!("shuttle-{}/{}", mode.name(), s.id), move || shuttle_finds(&s2, mode))
                    .with_ignored_flag(elsewhere),
            );
        }
    }
    libtest_mimic::run(&args, trials).exit();
}

fn without_faults(b: &Bounds) -> Bounds {
    Bounds { crashes: 0, errors: 0, timeouts: 0, lost_replies: 0, power_losses: 0, ..b.clone() }
}

/// Engine threads loom would run: actors plus one injector per fault kind with a budget.
fn threads(s: &Scenario, b: &Bounds) -> usize {
    let kinds = [b.crashes, b.errors, b.timeouts, b.lost_replies].iter().filter(|&&n| n > 0).count();
    s.model.actor_names().len() + kinds
}

/// The bounds loom is given: the declared ones, or without faults in the bounded run.
fn bounded(s: &Scenario, full: bool) -> Bounds {
    if full || threads(s, &s.bounds) <= SMALL {
        s.bounds.clone()
    } else {
        without_faults(&s.bounds)
    }
}

/// An exhaustive engine's verdict, violation and final states against racelab's, under `bounds`.
fn agrees(s: &Scenario, engine: Engine, bounds: &Bounds) -> Result<(), Failed> {
    let bounds = bounds.clone();
    let ours = s.model.check(&s.id, &Mode::Exhaustive, &bounds, &Backend::Sim);
    if bounds == s.bounds && ours.verdict != s.expected {
        return Err(format!("racelab gives {} but the file expects {}", ours.verdict, s.expected).into());
    }
    let limits = Limits::schedules(bounds.max_states);
    let theirs = check(&s.id, &*s.model, &bounds, engine, &limits);
    if theirs.verdict == Verdict::Inconclusive {
        let why = theirs.reason.clone().unwrap_or_default();
        if why.starts_with("loom runs at most") && ours.complete {
            // loom cannot run it at all, and says so: the verdict the command line reports.
            return Ok(());
        }
        return Err(format!("{} is inconclusive ({why}); racelab says {}", engine.name(), ours.verdict).into());
    }
    if theirs.verdict != ours.verdict {
        return Err(disagreement(s, &bounds, &ours, &theirs).into());
    }
    if theirs.verdict == Verdict::Violated {
        replays(s, &bounds, &theirs)?;
    }
    if theirs.verdict == Verdict::Holds {
        let (_, racelab_finals) = s.model.final_states(&bounds);
        let loom = explore(&*s.model, &bounds, engine, &limits);
        let loom_only: Vec<&Vec<String>> =
            loom.finals.iter().filter(|(fp, _)| !racelab_finals.contains(fp)).map(|(_, o)| o).collect();
        let racelab_only = racelab_finals.iter().filter(|fp| !loom.finals.contains_key(fp)).count();
        if !loom_only.is_empty() || racelab_only > 0 {
            return Err(format!(
                "final states differ: {} only under loom, {racelab_only} only under racelab; first loom-only:\n{}",
                loom_only.len(),
                loom_only.first().map(|o| o.join("\n")).unwrap_or_default()
            )
            .into());
        }
        if loom.finals.is_empty() {
            return Err("no final state reached".into());
        }
    }
    Ok(())
}

fn shuttle_finds(s: &Scenario, mode: ShuttleMode) -> Result<(), Failed> {
    let ours = s.model.check(&s.id, &Mode::Exhaustive, &s.bounds, &Backend::Sim);
    let theirs = check(&s.id, &*s.model, &s.bounds, Engine::Shuttle(mode), &Limits::schedules(SAMPLED));
    match (ours.verdict, theirs.verdict) {
        (Verdict::Violated, Verdict::Violated) => replays(s, &s.bounds, &theirs),
        (Verdict::Violated, v) => {
            Err(format!("racelab finds a violation; shuttle {} with seed {SEED} says {v}", mode.name()).into())
        }
        // A sampler never proves a fix; it must not find a violation racelab says cannot happen.
        (_, Verdict::Violated) => Err(disagreement(s, &s.bounds, &ours, &theirs).into()),
        (_, _) if theirs.complete => Err("a sampler claimed a complete exploration".into()),
        (_, _) => Ok(()),
    }
}

/// The token decodes and replays on racelab's simulator to the invariant the engine reported.
fn replays(s: &Scenario, bounds: &Bounds, c: &Checked) -> Result<(), Failed> {
    let cx = c.counterexample.as_ref().ok_or("a violation without a counterexample")?;
    let schedule = token::decode(&s.id, &cx.token).map_err(|e| format!("token does not decode: {e}"))?;
    let replay =
        s.model.replay(bounds, &schedule, &Backend::Sim).map_err(|e| format!("token does not replay: {e:?}"))?;
    if replay.invariant.as_deref() != Some(cx.invariant.as_str()) {
        return Err(format!("replay violated {:?}, the engine {}", replay.invariant, cx.invariant).into());
    }
    Ok(())
}

fn disagreement(s: &Scenario, bounds: &Bounds, ours: &Checked, theirs: &Checked) -> String {
    let show = |c: &Checked| match &c.counterexample {
        Some(cx) => format!("{}: {} (token {})\n{}", cx.invariant, cx.detail, cx.token, cx.timeline.render(140)),
        None => c.reason.clone().unwrap_or_else(|| format!("{} states, complete: {}", c.stats.states, c.complete)),
    };
    format!(
        "{} under {bounds:?}: racelab says {}, the engine {}\nracelab: {}\nengine: {}",
        s.id,
        ours.verdict,
        theirs.verdict,
        show(ours),
        show(theirs)
    )
}
