//! From a model and a mode to a verdict: explore, minimise any violation, replay it into a
//! timeline and a token. Everything the command line and the tests report comes from here.

use std::time::Instant;

use serde::Serialize;

use crate::explore::exhaustive::Exhaustive;
use crate::explore::shortest::{self, NotEnabled};
use crate::explore::stateless::{FirstEnabled, Pct, Random, Stateless};
use crate::explore::{Bounds, Choice, Exploration, Explorer, Stats};
use crate::model::Model;
use crate::timeline::Timeline;
use crate::token;

/// How to explore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Exhaustive,
    Random { seed: u64, schedules: u64 },
    Pct { seed: u64, schedules: u64, depth: u32 },
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Exhaustive => "exhaustive",
            Mode::Random { .. } => "random",
            Mode::Pct { .. } => "pct",
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
    pub complete: bool,
    /// PCT's per-schedule probability bound for bugs of the chosen depth.
    pub pct_guarantee: Option<f64>,
    pub elapsed_ms: u64,
}

/// Explore `model` (registered as `id`) in `mode` within `bounds`.
pub fn check<M: Model>(id: &str, model: &M, mode: &Mode, bounds: &Bounds) -> Checked {
    let started = Instant::now();
    let mut pct_guarantee = None;
    let exploration: Exploration = match *mode {
        Mode::Exhaustive => Exhaustive::default().explore(model, bounds),
        Mode::Random { seed, schedules } => {
            Stateless { scheduler: Random::new(seed), schedules }.explore(model, bounds)
        }
        Mode::Pct { seed, schedules, depth } => {
            let probe = Stateless { scheduler: FirstEnabled, schedules: 1 }.explore(model, bounds);
            let steps = probe.stats.depth.max(1);
            let pct = Pct::new(seed, model.actor_names().len(), steps, depth);
            pct_guarantee = Some(pct.guarantee());
            Stateless { scheduler: pct, schedules }.explore(model, bounds)
        }
    };
    let (verdict, reason, counterexample) = match exploration.violation {
        Some(found) => {
            let (_, schedule) = shortest::minimise(model, bounds, found);
            (Verdict::Violated, None, Some(counterexample(id, model, bounds, &schedule)))
        }
        None if !exploration.complete => (Verdict::Inconclusive, exploration.incomplete_reason, None),
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
        complete: exploration.complete,
        pct_guarantee,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

/// Replay `schedule`, which must reach a violation, into a counterexample.
fn counterexample<M: Model>(id: &str, model: &M, bounds: &Bounds, schedule: &[Choice]) -> Counterexample {
    let replayed = shortest::replay(model, bounds, schedule).expect("a minimised schedule replays");
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
}

/// Replay a decoded token.
pub fn replay<M: Model>(model: &M, bounds: &Bounds, schedule: &[Choice]) -> Result<Replay, NotEnabled> {
    let replayed = shortest::replay(model, bounds, schedule)?;
    let (verdict, invariant, detail) = match replayed.violation {
        Some(v) => (Verdict::Violated, Some(v.invariant), Some(v.detail)),
        None => (Verdict::Inconclusive, None, None),
    };
    Ok(Replay {
        verdict,
        invariant,
        detail,
        steps: replayed.events.len(),
        timeline: Timeline::new(model.actor_names(), &replayed.events),
        final_state: replayed.state.world.describe(),
    })
}
