//! racelab's models under loom: loom's exhaustive exploration (with its own partial-order
//! reduction) of the threads in `driver.rs`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use loom::sync::{Condvar, Mutex};
use loom::thread;
use racelab_harness::explore::machine::Machine;

use crate::execution::{participants, Faults, Move, Participant, Record, Shared};

include!("driver.rs");

/// loom's limit on threads in one execution, its own first thread included.
pub const MAX_THREADS: usize = loom::MAX_THREADS;

/// Why loom cannot run this model, if it cannot: too many threads.
pub fn unsupported(machine: &dyn Machine) -> Option<String> {
    let who = participants(machine, Faults::Injectors);
    let on_main = usize::from(matches!(who.first(), Some(Participant::Injector(_))));
    let threads = who.len() - on_main + 1;
    (threads > MAX_THREADS).then(|| {
        format!(
            "loom runs at most {MAX_THREADS} threads; this scenario needs {threads} ({} actors, {} fault injectors, \
             loom's own first thread)",
            machine.actor_count(),
            who.len() - machine.actor_count()
        )
    })
}

/// Raised (without the panic hook) at the start of an execution once the record says stop:
/// loom replays its path from the start of each execution, so an execution that silently did
/// nothing would not match it.
struct Stopped;

/// loom explores faults through injector threads only.
fn draw(_: usize) -> usize {
    unreachable!("loom never draws")
}

fn stop_exploring() {
    std::panic::resume_unwind(Box::new(Stopped));
}

/// Explore every execution loom finds. `Err` carries loom's own failure (a deadlock of the
/// adapter, or a branch limit), which is never a verdict.
pub(crate) fn explore(initial: Box<dyn Machine>, record: &Arc<Record>) -> Result<(), String> {
    let mut builder = loom::model::Builder::new();
    // Set everything, so that no LOOM_* environment variable changes a verdict.
    builder.max_branches = 1_000_000;
    builder.max_permutations = None;
    builder.max_duration = None;
    builder.preemption_bound = None;
    builder.checkpoint_file = None;
    builder.checkpoint_interval = usize::MAX;
    builder.log = false;
    builder.location = false;
    let initial = Arc::new(std::sync::Mutex::new(initial));
    let record = record.clone();
    match catch_unwind(AssertUnwindSafe(|| builder.check(move || execution(&initial, &record, Faults::Injectors)))) {
        Ok(()) => Ok(()),
        Err(payload) if payload.is::<Stopped>() => Ok(()),
        Err(payload) => Err(panic_text(&*payload)),
    }
}

pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".to_string())
}
