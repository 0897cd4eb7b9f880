//! Which engine runs `racelab check`: racelab's own explorers (over the simulator, or a real
//! server with `--backend`); loom or shuttle driving the same model through `racelab-engines`;
//! or turmoil, which runs a race's async services on simulated hosts and samples seeds. Other
//! engines join the enum here.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use clap::ValueEnum;
use racelab_engines::{Limits, ShuttleMode};
use racelab_harness::catalogue::Params;
use racelab_harness::run::{Checked, Mode, Verdict};
use racelab_harness::scenario::Scenario;
use serde_json::json;

use super::{stdout_failed, BadInput};

/// `--engine`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// racelab's explorers over its sans-IO models.
    #[default]
    Racelab,
    /// loom's exhaustive exploration (its own partial-order reduction); at most 5 threads.
    Loom,
    /// shuttle: `--mode exhaustive` (or `dfs`) is its depth-first search, also `random`, `pct`.
    Shuttle,
    /// The race's async tokio services on turmoil's simulated hosts and network, seed by seed.
    Turmoil,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Racelab => "racelab",
            Engine::Loom => "loom",
            Engine::Shuttle => "shuttle",
            Engine::Turmoil => "turmoil",
        }
    }

    /// The model-checking engine for `mode`, or why it cannot run it; `None` for racelab's own
    /// explorers. Turmoil is not a model checker and is run by [`check_turmoil`].
    pub(crate) fn engine(self, mode: &Mode, backend: &str) -> Result<Option<racelab_engines::Engine>, String> {
        if self != Engine::Racelab && backend != "sim" {
            return Err(format!("--engine {} runs on the simulator only, not --backend {backend}", self.name()));
        }
        match (self, mode) {
            (Engine::Racelab | Engine::Turmoil, _) => Ok(None),
            (Engine::Loom, Mode::Exhaustive) => Ok(Some(racelab_engines::Engine::Loom)),
            (Engine::Loom, _) => Err(format!("--engine loom explores exhaustively only, not --mode {}", mode.name())),
            (Engine::Shuttle, Mode::Exhaustive) => Ok(Some(racelab_engines::Engine::Shuttle(ShuttleMode::Dfs))),
            (Engine::Shuttle, &Mode::Random { seed, .. }) => {
                Ok(Some(racelab_engines::Engine::Shuttle(ShuttleMode::Random { seed })))
            }
            (Engine::Shuttle, &Mode::Pct { seed, depth, .. }) => {
                Ok(Some(racelab_engines::Engine::Shuttle(ShuttleMode::Pct { seed, depth })))
            }
            (Engine::Shuttle, Mode::Dpor { .. }) => Err("--mode dpor is racelab's own explorer".to_string()),
        }
    }
}

/// The name of the mode a run used, as JSON Lines and the text report show it.
pub(crate) fn mode_name(engine: Option<racelab_engines::Engine>, mode: &Mode) -> &'static str {
    engine.map_or(mode.name(), |e| e.mode())
}

/// Executions loom or shuttle's DFS may run per scenario when `--schedules` does not say: enough
/// for every scenario loom finishes in seconds, small enough that `check all --engine loom` ends
/// in minutes on two cores (README, "Under loom and shuttle", has the measurements).
pub const DEFAULT_ENGINE_BUDGET: u64 = 100_000;

/// Check `s` with a model-checking `engine`. Exhaustive engines may run `budget` executions;
/// samplers the mode's `--schedules`.
pub(crate) fn check_with_engine(s: &Scenario, engine: racelab_engines::Engine, mode: &Mode, budget: u64) -> Checked {
    let schedules = match mode {
        Mode::Exhaustive => budget,
        Mode::Random { schedules, .. } | Mode::Pct { schedules, .. } => *schedules,
        Mode::Dpor { executions } => *executions,
    };
    racelab_engines::check(&s.id, &*s.model, &s.bounds, engine, &Limits::schedules(schedules))
}

/// Seeds per scenario when its file names none.
pub const DEFAULT_TURMOIL_SEEDS: u64 = 50;

/// Does `verdict` agree with a file that expects `expected`? Turmoil cannot prove a fix, so for a
/// scenario that holds, no violation over the budget (`inconclusive`) is what agrees.
pub fn agrees(verdict: Verdict, expected: Verdict) -> bool {
    match expected {
        Verdict::Holds => verdict == Verdict::Inconclusive,
        _ => verdict == expected,
    }
}

/// `racelab check … --engine turmoil`: seeds `first..` of each selected scenario that has a
/// turmoil version, `seeds` of them (else the file's `[turmoil] seeds`).
pub fn check_turmoil(
    w: &mut dyn Write,
    selected: &[&Scenario],
    first: u64,
    seeds: Option<u64>,
    json: bool,
) -> Result<ExitCode, BadInput> {
    let (mut ran, mut mismatches) = (0, 0);
    for s in selected {
        if !racelab_turmoil::supports(&s.id) {
            eprintln!("racelab: {} has no turmoil version; skipped", s.id);
            continue;
        }
        let budget = seeds.or(s.turmoil_seeds).unwrap_or(DEFAULT_TURMOIL_SEEDS);
        let started = Instant::now();
        let report = racelab_turmoil::check(&s.id, &Params::new(s.params.clone()), first, budget)
            .map_err(|e| BadInput(format!("{}: {e}", s.id)))?;
        let elapsed_ms = started.elapsed().as_millis();
        ran += 1;
        let ok = agrees(report.verdict, s.expected);
        if !ok {
            mismatches += 1;
        }
        let cx = report.counterexample.as_ref();
        if json {
            let line = json!({
                "id": s.id,
                "engine": "turmoil",
                "verdict": report.verdict,
                "expected": s.expected,
                "seeds_tried": report.seeds_tried,
                "steps": report.steps,
                "seed": cx.map(|c| c.seed),
                "step": cx.map(|c| c.steps),
                "invariant": cx.and_then(|c| c.violation.as_ref().map(|v| &v.0)),
                "detail": cx.and_then(|c| c.violation.as_ref().map(|v| &v.1)),
                "trace": cx.map(|c| &c.trace),
                "reason": report.reason,
                "elapsed_ms": elapsed_ms,
            });
            say!(w, "{line}");
            continue;
        }
        let mark = if ok { "ok" } else { "MISMATCH" };
        say!(
            w,
            "{:<48} {:<12} expected {:<12} {mark}  [turmoil: {} seeds, {} steps, {elapsed_ms} ms]",
            s.id,
            report.verdict,
            s.expected,
            report.seeds_tried,
            report.steps
        );
        match cx {
            Some(run) => {
                say!(w, "\nseed {} violates at step {}:", run.seed, run.steps);
                for line in &run.trace {
                    say!(w, "  {line}");
                }
                if let Some((invariant, detail)) = &run.violation {
                    say!(w, "violated: {invariant}: {detail}");
                }
                say!(w, "replay:   racelab check {} --engine turmoil --seed {} --schedules 1\n", s.id, run.seed);
            }
            None => {
                if let Some(reason) = &report.reason {
                    say!(w, "  {reason}");
                }
            }
        }
    }
    if !json {
        say!(w, "{ran} scenarios on turmoil, {} as expected, {mismatches} not", ran - mismatches);
    }
    Ok(if mismatches == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
