//! The exhaustive check on real files: every execution the simulator explores, replayed with
//! its file ops as real syscalls.
//!
//! Stateless enumeration of every schedule (what the PostgreSQL backend does) is far too many
//! schedules once crashes and power losses are choices. The simulator's exhaustive search, with
//! its state cache, takes every transition of the reachable state graph once; its executions,
//! replayed on the real directory, therefore reach every state the simulator reached, and the
//! properties are checked after every step on what the real syscalls returned. Wherever a real
//! outcome differs from the simulator's, the run fails (and has no verdict), so the replayed
//! executions stand for the whole graph.

use std::time::Instant;

use crate::explore::exhaustive::Exhaustive;
use crate::explore::shortest;
use crate::explore::{Bounds, Explorer};
use crate::model::Model;
use crate::run::{counterexample, Backend, Checked, Verdict};

pub(crate) fn check_exhaustive<M: Model>(
    id: &str,
    model: &M,
    bounds: &Bounds,
    backend: &Backend,
    started: Instant,
) -> Checked {
    let attached = backend.attached_for_files();
    let sim = Exhaustive::default().explore(model, bounds);
    let limit = usize::try_from(bounds.max_states).unwrap_or(usize::MAX);
    let schedules = shortest::all_schedules(model, bounds, limit);
    let truncated = schedules.len() >= limit;
    let mut stats = sim.stats.clone();
    stats.executions = 0;
    stats.transitions = 0;
    // The simulator's minimal counterexample first: a violation should replay on both.
    let mut candidates = Vec::new();
    if let Some(found) = sim.violation.clone() {
        candidates.push(shortest::minimise(model, bounds, found).1);
    }
    candidates.extend(schedules);
    let mut violating = None;
    for schedule in &candidates {
        let Ok(r) = shortest::replay_attached(model, bounds, schedule, &attached) else {
            continue;
        };
        stats.executions += 1;
        stats.transitions += r.events.len() as u64;
        if backend.failure().is_some() {
            break;
        }
        if let Some(v) = r.violation {
            let prefix = schedule[..r.events.len()].to_vec();
            violating = Some((v, prefix));
            break;
        }
    }
    let (verdict, reason, cx) = if let Some(failure) = backend.failure() {
        (Verdict::Inconclusive, Some(failure), None)
    } else if let Some((v, schedule)) = violating {
        // Keep the simulator's minimal schedule when the real run reproduces it; else shrink.
        let schedule = if candidates.first() == Some(&schedule) && sim.violation.is_some() {
            schedule
        } else {
            shortest::shrink_attached(model, bounds, &v.invariant, &schedule, &attached)
        };
        (Verdict::Violated, None, Some(counterexample(id, model, bounds, &schedule, &attached)))
    } else if !sim.complete {
        (Verdict::Inconclusive, sim.incomplete_reason.clone(), None)
    } else if truncated {
        (Verdict::Inconclusive, Some(format!("schedule bound reached: {limit} executions")), None)
    } else if !sim.unreached.is_empty() {
        (Verdict::Inconclusive, Some(format!("vacuous: no explored state reached {}", sim.unreached.join(", "))), None)
    } else {
        (Verdict::Holds, None, None)
    };
    Checked {
        verdict,
        reason,
        counterexample: cx,
        stats,
        bounds: bounds.clone(),
        shares: None,
        uncounted: &[],
        complete: verdict == Verdict::Holds,
        pct_guarantee: None,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}
