//! loom and shuttle against racelab's own explorer, scenario by scenario.
//!
//! - `loom/<id>`: loom's exhaustive verdict equals racelab's, every violation loom finds replays
//!   from its token to the same invariant, and where both complete without a violation (`holds`,
//!   or both vacuous), both reached exactly the same final states (same fingerprints: the actors,
//!   what each saw, the world's committed state).
//! - `shuttle-dfs/<id>`: the same for shuttle's depth-first search, without faults.
//! - `shuttle-pct/<id>`, `shuttle-random/<id>`: on every scenario racelab finds violated, shuttle
//!   with a fixed seed finds a violation within the schedule budget, and its token replays; on
//!   the others it finds none. Scenarios with power losses, which the engines cannot explore,
//!   must say so (`inconclusive` with that reason).
//!
//! `cargo test` runs a bounded version over every race: loom gets a scenario's declared fault
//! budget only when it runs at most three engine threads, otherwise the same scenario without
//! faults (racelab is then checked with the same reduced bounds); a scenario with more than
//! three actors is ignored; shuttle's DFS runs without faults on two-actor scenarios. Both
//! exhaustive engines get `BOUNDED_EXECUTIONS` executions, and a scenario they need more for is
//! listed in `LOOM_SLOW` or `DFS_SLOW` (measured; running out of budget on an unlisted one fails,
//! so the lists cannot hide a scenario that got slower). `RACELAB_ENGINES_FULL=1` (`just
//! engines`) gives loom every scenario with its declared bounds and `max_states` executions,
//! which takes loom hours on the larger ones.

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
/// Executions loom or shuttle's DFS may run per scenario in `cargo test`.
const BOUNDED_EXECUTIONS: u64 = 10_000;
/// Scenarios loom does not finish within `BOUNDED_EXECUTIONS` under the bounded run's bounds
/// (measured 2026-12-01: the executions each took, or a lower bound).
const LOOM_SLOW: [&str; 9] = [
    "deferred-stop/recheck-after-lock",    // > 20000
    "guidance-write/mkstemp-fsync-rename", // > 20000
    "guidance-write/mkstemp-rename",       // > 20000
    "lock-reentrancy/reentrancy-guard",    // 28727
    "pool-exhaustion/checkout-timeout",    // 243849
    "pool-exhaustion/sized-pool",          // > 300000
    "pool-exhaustion/small-pool",          // > 300000, no violation found
    "state-save/tmp-rename",               // > 10000 with one crash
    "state-save/unique-tmp-fsync-rename",  // > 10000 with one crash
];
/// The same for shuttle's DFS (no faults, two actors).
const DFS_SLOW: [&str; 12] = [
    "agent-lock-commit/session-lock",
    "area-ensure/transactional-cache",
    "config-edit/flock",
    "lock-reentrancy/reentrancy-guard",
    "pool-exhaustion/checkout-timeout",
    "pool-exhaustion/sized-pool",
    "skill-inject/refresh",
    "state-save/in-place",
    "state-save/tmp-rename",
    "state-save/unique-tmp-fsync-rename",
    "summarise-dedup/for-update-nowait",
    "summary-upsert/advisory-xact-lock",
];

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
        let s1 = s.clone();
        let loom_skipped = !full && (threads(&s, &bounded(&s, full)) > SMALL || LOOM_SLOW.contains(&s.id.as_str()));
        trials.push(
            Trial::test(format!("loom/{}", s.id), move || {
                agrees(&s1, Engine::Loom, &bounded(&s1, full), executions(&s1, full))
            })
            .with_ignored_flag(loom_skipped),
        );
        // shuttle's DFS has no reduction at all: without faults, and two actors only, in the
        // bounded run.
        let s3 = s.clone();
        let dfs_skipped = !full && (s.model.actor_names().len() > 2 || DFS_SLOW.contains(&s.id.as_str()));
        trials.push(
            Trial::test(format!("shuttle-dfs/{}", s.id), move || {
                agrees(&s3, Engine::Shuttle(ShuttleMode::Dfs), &without_faults(&s3.bounds), executions(&s3, full))
            })
            .with_ignored_flag(dfs_skipped),
        );
        for mode in [ShuttleMode::Pct { seed: SEED, depth: 3 }, ShuttleMode::Random { seed: SEED }] {
            let s2 = s.clone();
            trials.push(Trial::test(format!("shuttle-{}/{}", mode.name(), s.id), move || shuttle_finds(&s2, mode)));
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

/// The executions an exhaustive engine may run: `BOUNDED_EXECUTIONS`, or in the full run the
/// scenario's `max_states`.
fn executions(s: &Scenario, full: bool) -> u64 {
    if full {
        s.bounds.max_states
    } else {
        BOUNDED_EXECUTIONS
    }
}

/// The bounds loom is given: the declared ones in the full run; in the bounded run the declared
/// ones without power losses (which the engines cannot explore) when loom keeps to `SMALL`
/// threads, otherwise none of the faults.
fn bounded(s: &Scenario, full: bool) -> Bounds {
    if full {
        s.bounds.clone()
    } else if threads(s, &s.bounds) <= SMALL {
        Bounds { power_losses: 0, ..s.bounds.clone() }
    } else {
        without_faults(&s.bounds)
    }
}

/// An exhaustive engine's verdict, violation and final states against racelab's, under `bounds`,
/// with at most `executions` executions.
fn agrees(s: &Scenario, engine: Engine, bounds: &Bounds, executions: u64) -> Result<(), Failed> {
    let bounds = bounds.clone();
    let ours = s.model.check(&s.id, &Mode::Exhaustive, &bounds, &Backend::Sim);
    if bounds == s.bounds && s.mode == Mode::Exhaustive && ours.verdict != s.expected {
        return Err(format!("racelab gives {} but the file expects {}", ours.verdict, s.expected).into());
    }
    let limits = Limits::schedules(executions);
    let theirs = check(&s.id, &*s.model, &bounds, engine, &limits);
    if theirs.verdict == Verdict::Inconclusive && !theirs.complete {
        let why = theirs.reason.clone().unwrap_or_default();
        if why.starts_with("loom runs at most") && ours.complete {
            // loom cannot run it at all, and says so: the verdict the command line reports.
            return Ok(());
        }
        if bounds.power_losses > 0 && why.contains("cannot explore power losses") {
            return Ok(());
        }
        return Err(format!("{} is inconclusive ({why}); racelab says {}", engine.name(), ours.verdict).into());
    }
    if theirs.verdict != ours.verdict {
        return Err(disagreement(s, &bounds, &ours, &theirs).into());
    }
    if theirs.verdict == Verdict::Violated {
        return replays(s, &bounds, &theirs);
    }
    // Both explored everything and found no violation: `holds`, or both vacuous (no state
    // reached a target) for the same reason.
    if !ours.complete {
        return Err(format!("racelab did not complete ({:?}) where {} did", ours.reason, engine.name()).into());
    }
    if theirs.reason != ours.reason {
        return Err(format!("{} says {:?}, racelab {:?}", engine.name(), theirs.reason, ours.reason).into());
    }
    let (_, racelab_finals) = s.model.final_states(&bounds);
    let run = explore(&*s.model, &bounds, engine, &limits);
    if !run.complete {
        return Err(format!("the second {} run did not complete: {:?}", engine.name(), run.reason).into());
    }
    let engine_only: Vec<&Vec<String>> =
        run.finals.iter().filter(|(fp, _)| !racelab_finals.contains(fp)).map(|(_, o)| o).collect();
    let racelab_only = racelab_finals.iter().filter(|fp| !run.finals.contains_key(fp)).count();
    if !engine_only.is_empty() || racelab_only > 0 {
        return Err(format!(
            "final states differ: {} only under {}, {racelab_only} only under racelab; first {} only:\n{}",
            engine_only.len(),
            engine.name(),
            engine.name(),
            engine_only.first().map(|o| o.join("\n")).unwrap_or_default()
        )
        .into());
    }
    if run.finals.is_empty() {
        return Err("no final state reached".into());
    }
    Ok(())
}

fn shuttle_finds(s: &Scenario, mode: ShuttleMode) -> Result<(), Failed> {
    // racelab's verdict in the scenario's own mode (a sampled scenario is too large to enumerate).
    let ours = s.model.check(&s.id, &s.mode, &s.bounds, &Backend::Sim);
    let theirs = check(&s.id, &*s.model, &s.bounds, Engine::Shuttle(mode), &Limits::schedules(SAMPLED));
    if s.bounds.power_losses > 0 {
        // The engines have no injector for a power loss: they must say so, not pass.
        let why = theirs.reason.as_deref().unwrap_or_default();
        return match theirs.verdict {
            Verdict::Inconclusive if why.contains("cannot explore power losses") => Ok(()),
            v => Err(format!("a scenario with power losses gave {v} ({why})").into()),
        };
    }
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
