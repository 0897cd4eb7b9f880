//! `--engine`: which explorer runs a scenario. racelab's own, or loom or shuttle driving the same
//! model through `racelab-engines`. Other engines join the enum here.

use clap::ValueEnum;
use racelab_engines::{Engine, Limits, ShuttleMode};
use racelab_harness::run::{Backend, Checked, Mode};
use racelab_harness::scenario::Scenario;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum EngineArg {
    /// racelab's explorers: exhaustive search with state caching and sleep sets, random, PCT.
    Racelab,
    /// loom's exhaustive exploration (its own partial-order reduction); at most 5 threads.
    Loom,
    /// shuttle: `--mode exhaustive` (or `dfs`) is its depth-first search, also `random`, `pct`.
    Shuttle,
}

impl EngineArg {
    pub(crate) fn name(self) -> &'static str {
        match self {
            EngineArg::Racelab => "racelab",
            EngineArg::Loom => "loom",
            EngineArg::Shuttle => "shuttle",
        }
    }

    /// The engine for `mode`, or why it cannot run it; `None` for racelab's own.
    pub(crate) fn engine(self, mode: &Mode, backend: &str) -> Result<Option<Engine>, String> {
        if self != EngineArg::Racelab && backend != "sim" {
            return Err(format!("--engine {} runs on the simulator only, not --backend {backend}", self.name()));
        }
        match (self, mode) {
            (EngineArg::Racelab, _) => Ok(None),
            (EngineArg::Loom, Mode::Exhaustive) => Ok(Some(Engine::Loom)),
            (EngineArg::Loom, _) => {
                Err(format!("--engine loom explores exhaustively only, not --mode {}", mode.name()))
            }
            (EngineArg::Shuttle, Mode::Exhaustive) => Ok(Some(Engine::Shuttle(ShuttleMode::Dfs))),
            (EngineArg::Shuttle, &Mode::Random { seed, .. }) => Ok(Some(Engine::Shuttle(ShuttleMode::Random { seed }))),
            (EngineArg::Shuttle, &Mode::Pct { seed, depth, .. }) => {
                Ok(Some(Engine::Shuttle(ShuttleMode::Pct { seed, depth })))
            }
        }
    }
}

/// The name of the mode a run used, as JSON Lines and the text report show it.
pub(crate) fn mode_name(engine: Option<Engine>, mode: &Mode) -> &'static str {
    engine.map_or(mode.name(), |e| e.mode())
}

/// Check `s` with `engine`, or with racelab's explorers on `backend` when `None`. Exhaustive
/// engines may run as many schedules as the scenario's `max_states`; samplers `--schedules`.
pub(crate) fn check(s: &Scenario, engine: Option<Engine>, mode: &Mode, backend: &Backend) -> Checked {
    let Some(engine) = engine else { return s.model.check(&s.id, mode, &s.bounds, backend) };
    let schedules = match mode {
        Mode::Exhaustive => s.bounds.max_states,
        Mode::Random { schedules, .. } | Mode::Pct { schedules, .. } => *schedules,
    };
    racelab_engines::check(&s.id, &*s.model, &s.bounds, engine, &Limits::schedules(schedules))
}
