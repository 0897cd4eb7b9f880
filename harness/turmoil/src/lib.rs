//! racelab's races as ordinary async tokio services on turmoil's simulated hosts and network.
//!
//! The simulator explores a race's sans-IO model; this engine runs the same story as the code a
//! service would ship (`async fn ensure_area_exists(…)`, a `POST /judge` handler), each service a
//! turmoil host with its own tokio tasks, talking over turmoil's simulated TCP. Faults come from
//! seeded randomness only: turmoil's own (message latency, random link failures that lose
//! messages) and a fault plan drawn per step from the same seed (host crash and restart,
//! partitions, held links that delay messages). The invariants are the model's, by name.
//!
//! Turmoil samples executions, so a verdict is `violated` (with the seed, the step and the trace,
//! and the seed replays it exactly) or `inconclusive` (no violation in the seeds tried). It never
//! says `holds`.

pub mod area_ensure;
pub mod judge_persist;
mod rpc;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use racelab_harness::catalogue::Params;
use racelab_harness::run::Verdict;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Upper bound on simulation steps (1 ms ticks) per seed.
pub const MAX_STEPS: u64 = 60_000;
/// Upper bound on seeds per check.
pub const MAX_SEEDS: u64 = 100_000;
/// Steps run after every client finished, so that background work (a spawned save) can land
/// before the final invariants are checked.
const GRACE_STEPS: u64 = 1_000;

/// What one seed gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedRun {
    pub seed: u64,
    /// Steps the simulation took.
    pub steps: u64,
    /// The invariant violated and why, if one was.
    pub violation: Option<(String, String)>,
    /// Every request, response and fault, each with its step.
    pub trace: Vec<String>,
}

/// The result of running a scenario's seeds.
#[derive(Clone, Debug)]
pub struct Report {
    pub verdict: Verdict,
    pub seeds_tried: u64,
    pub steps: u64,
    /// The first violating run, if any.
    pub counterexample: Option<SeedRun>,
    pub reason: Option<String>,
}

/// Does this engine have a turmoil version of scenario `id` (`race/variant`)?
pub fn supports(id: &str) -> bool {
    area_ensure::variant(id).is_some() || judge_persist::variant(id).is_some()
}

/// Run one seed of scenario `id` with its parameters.
pub fn run_seed(id: &str, params: &Params, seed: u64) -> Result<SeedRun, String> {
    if let Some(variant) = area_ensure::variant(id) {
        let config = area_ensure::Config::from_params(variant, params)?;
        return area_ensure::run(&config, seed);
    }
    if let Some(variant) = judge_persist::variant(id) {
        return judge_persist::run(variant, seed);
    }
    Err(format!("`{id}` has no turmoil version"))
}

/// Run seeds `first..first + seeds` until one violates an invariant.
pub fn check(id: &str, params: &Params, first: u64, seeds: u64) -> Result<Report, String> {
    if !(1..=MAX_SEEDS).contains(&seeds) {
        return Err(format!("a turmoil budget is 1..={MAX_SEEDS} seeds, not {seeds}"));
    }
    let mut steps = 0;
    for k in 0..seeds {
        let run = run_seed(id, params, first.wrapping_add(k))?;
        steps += run.steps;
        if run.violation.is_some() {
            return Ok(Report {
                verdict: Verdict::Violated,
                seeds_tried: k + 1,
                steps,
                counterexample: Some(run),
                reason: None,
            });
        }
    }
    Ok(Report {
        verdict: Verdict::Inconclusive,
        seeds_tried: seeds,
        steps,
        counterexample: None,
        reason: Some(format!("no violation in {seeds} seeds ({steps} steps); turmoil samples, it cannot prove a fix")),
    })
}

/// The run's log: which step it is, and what happened at each.
#[derive(Default)]
pub(crate) struct Trace {
    step: Cell<u64>,
    lines: RefCell<Vec<String>>,
}

/// Upper bound on trace lines per run.
const MAX_TRACE: usize = 10_000;

impl Trace {
    pub(crate) fn log(&self, who: &str, what: impl AsRef<str>) {
        let mut lines = self.lines.borrow_mut();
        if lines.len() < MAX_TRACE {
            lines.push(format!("step {:>5}  {who:<22} {}", self.step.get(), what.as_ref()));
        }
    }
}

/// Which faults the plan may inject, on which hosts and links.
pub(crate) struct FaultPlan {
    /// Hosts that may crash (and restart a while later).
    pub crashable: Vec<&'static str>,
    pub max_crashes: u32,
    /// Links that may be partitioned or held (messages delayed) for a while.
    pub links: Vec<(&'static str, &'static str)>,
}

/// The turmoil builder every race uses: 1 ms ticks, 1–20 ms latency, rare random link failures
/// (lost messages), all from `seed`.
pub(crate) fn simulation<'a>(seed: u64) -> turmoil::Sim<'a> {
    turmoil::Builder::new()
        .simulation_duration(Duration::from_millis(MAX_STEPS + GRACE_STEPS + 1_000))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(20))
        .fail_rate(0.0005)
        .repair_rate(0.05)
        .enable_random_order()
        .build_with_rng(Box::new(ChaCha8Rng::seed_from_u64(seed)))
}

enum Pending {
    Bounce(&'static str),
    Repair(&'static str, &'static str),
    Release(&'static str, &'static str),
}

/// Step `sim` until its clients finish (then a grace period), injecting the plan's faults from
/// `seed`, and checking `violated` after every step and `final_check` at the end.
pub(crate) fn drive(
    sim: &mut turmoil::Sim<'_>,
    seed: u64,
    plan: &FaultPlan,
    trace: &Rc<Trace>,
    mut violated: impl FnMut() -> Option<(String, String)>,
    final_check: impl FnOnce() -> Option<(String, String)>,
) -> Result<(u64, Option<(String, String)>), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_fa17_0000_0000);
    let mut pending: Vec<(u64, Pending)> = Vec::new();
    let mut crashes = 0;
    let mut finished_at = None;
    for step in 1..=MAX_STEPS + GRACE_STEPS {
        trace.step.set(step);
        let (due, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(at, _)| *at <= step);
        pending = later;
        for (_, action) in due {
            match action {
                Pending::Bounce(h) => {
                    trace.log(h, "⟳ restarts");
                    sim.bounce(h);
                }
                Pending::Repair(a, b) => {
                    trace.log(a, format!("link to {b} repaired"));
                    sim.repair(a, b);
                }
                Pending::Release(a, b) => {
                    trace.log(a, format!("held messages to and from {b} released"));
                    sim.release(a, b);
                }
            }
        }
        if finished_at.is_none() {
            if crashes < plan.max_crashes && !plan.crashable.is_empty() && rng.gen_bool(1.0 / 400.0) {
                let h = plan.crashable[rng.gen_range(0..plan.crashable.len())];
                if sim.is_host_running(h) {
                    crashes += 1;
                    trace.log(h, "✗ crash");
                    sim.crash(h);
                    pending.push((step + rng.gen_range(50..500), Pending::Bounce(h)));
                }
            }
            if !plan.links.is_empty() && rng.gen_bool(1.0 / 600.0) {
                let (a, b) = plan.links[rng.gen_range(0..plan.links.len())];
                if rng.gen_bool(0.5) {
                    trace.log(a, format!("✂ partitioned from {b}"));
                    sim.partition(a, b);
                    pending.push((step + rng.gen_range(20..800), Pending::Repair(a, b)));
                } else {
                    trace.log(a, format!("⏸ messages to and from {b} held"));
                    sim.hold(a, b);
                    pending.push((step + rng.gen_range(5..200), Pending::Release(a, b)));
                }
            }
        }
        let done = sim.step().map_err(|e| format!("seed {seed}: the simulation failed at step {step}: {e}"))?;
        if let Some(v) = violated() {
            return Ok((step, Some(v)));
        }
        match finished_at {
            None if done => {
                finished_at = Some(step);
                // Whatever the plan left crashed or cut comes back, so that background work can land.
                for (_, action) in std::mem::take(&mut pending) {
                    match action {
                        Pending::Bounce(h) => sim.bounce(h),
                        Pending::Repair(a, b) => sim.repair(a, b),
                        Pending::Release(a, b) => sim.release(a, b),
                    }
                }
            }
            Some(at) if step >= at + GRACE_STEPS => return Ok((step, final_check())),
            _ => {}
        }
    }
    Ok((MAX_STEPS + GRACE_STEPS, final_check()))
}

/// A seeded coin for a host's own faults (a lookup that raises, a save that fails).
#[derive(Clone)]
pub(crate) struct Coin(Rc<RefCell<ChaCha8Rng>>);

impl Coin {
    pub(crate) fn new(seed: u64, stream: u64) -> Coin {
        Coin(Rc::new(RefCell::new(ChaCha8Rng::seed_from_u64(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)))))
    }

    pub(crate) fn flip(&self, p: f64) -> bool {
        self.0.borrow_mut().gen_bool(p)
    }
}
