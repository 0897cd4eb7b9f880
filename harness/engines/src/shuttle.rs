//! racelab's models under shuttle: depth-first (every schedule, no reduction), PCT and random
//! exploration of the threads in `driver.rs`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use racelab_harness::explore::machine::Machine;
use shuttle::scheduler::{DfsScheduler, PctScheduler, RandomScheduler, Schedule, Scheduler, Task, TaskId};
use shuttle::sync::{Condvar, Mutex};
use shuttle::thread;

use crate::execution::{participants, Faults, Move, Participant, Record, Shared};

include!("driver.rs");

/// The scheduler below ends the exploration once the record says stop; the execution that
/// noticed first simply does nothing.
fn stop_exploring() {}

/// shuttle's own choice of one in `0..n`, seeded by its scheduler.
fn draw(n: usize) -> usize {
    use shuttle::rand::Rng;
    shuttle::rand::thread_rng().gen_range(0..n)
}

/// How shuttle picks schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShuttleMode {
    /// Every schedule, depth first.
    Dfs,
    /// Probabilistic concurrency testing with bug depth `depth`.
    Pct { seed: u64, depth: u32 },
    /// Uniformly random at each step.
    Random { seed: u64 },
}

impl ShuttleMode {
    pub fn name(&self) -> &'static str {
        match self {
            ShuttleMode::Dfs => "dfs",
            ShuttleMode::Pct { .. } => "pct",
            ShuttleMode::Random { .. } => "random",
        }
    }
}

/// A shuttle scheduler that stops when the record says so, and remembers whether the inner
/// scheduler ran out of schedules by itself (for DFS: every schedule explored).
struct Stoppable {
    inner: Box<dyn Scheduler + Send>,
    record: Arc<Record>,
    exhausted: Arc<std::sync::atomic::AtomicBool>,
    /// Samplers have a fixed number of schedules and can be drained; DFS cannot.
    drain: bool,
}

impl Scheduler for Stoppable {
    fn new_execution(&mut self) -> Option<Schedule> {
        if !self.record.may_continue() {
            if self.drain {
                // A sampler dropped before its last schedule reports the run as a failure of its
                // own on standard error; running out its schedules would cost as much as running
                // them. Leak it instead: a few hundred bytes per stopped run.
                let done: Box<dyn Scheduler + Send> = Box::new(DfsScheduler::new(Some(0), false));
                std::mem::forget(std::mem::replace(&mut self.inner, done));
            }
            return None;
        }
        let next = self.inner.new_execution();
        if next.is_none() {
            self.exhausted.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        next
    }
    fn next_task(&mut self, runnable: &[&Task], current: Option<TaskId>, is_yielding: bool) -> Option<TaskId> {
        self.inner.next_task(runnable, current, is_yielding)
    }
    fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }
}

/// shuttle installs, once per process, a panic hook that reports every panic as a failed
/// shuttle test, including the ones loom raises to unwind its coroutines at the end of each of
/// its executions. racelab never fails a shuttle task on purpose (violations are recorded, not
/// raised), so let shuttle install it on an empty run and put the previous hook back.
fn keep_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        shuttle::check(|| {});
        drop(std::panic::take_hook());
        std::panic::set_hook(previous);
    });
}

/// Explore with shuttle; `Ok(true)` when DFS ran out of schedules (every one explored).
pub(crate) fn explore(
    initial: Box<dyn Machine>,
    record: &Arc<Record>,
    mode: ShuttleMode,
    schedules: u64,
) -> Result<bool, String> {
    keep_panic_hook();
    let mut config = shuttle::Config::new();
    config.failure_persistence = shuttle::FailurePersistence::None;
    config.stack_size = STACK_BYTES;
    config.silence_warnings = true;
    // PCT needs two threads that contend; with one actor and drawn faults there is one, and
    // shuttle's PCT refuses to run. A random schedule is the same thing there: only the faults
    // are chosen, from the same seed.
    let mode = match mode {
        ShuttleMode::Pct { seed, .. } if initial.actor_count() < 2 => ShuttleMode::Random { seed },
        other => other,
    };
    let initial = Arc::new(std::sync::Mutex::new(initial));
    let exhausted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let iterations = usize::try_from(schedules).unwrap_or(usize::MAX);
    let f = {
        let record = record.clone();
        let faults = if mode == ShuttleMode::Dfs { Faults::Injectors } else { Faults::Drawn };
        move || execution(&initial, &record, faults)
    };
    let inner: Box<dyn Scheduler + Send> = match mode {
        ShuttleMode::Dfs => Box::new(DfsScheduler::new(None, false)),
        ShuttleMode::Pct { seed, depth } => Box::new(PctScheduler::new_from_seed(seed, depth as usize, iterations)),
        ShuttleMode::Random { seed } => Box::new(RandomScheduler::new_from_seed(seed, iterations)),
    };
    let drain = mode != ShuttleMode::Dfs;
    let scheduler = Stoppable { inner, record: record.clone(), exhausted: exhausted.clone(), drain };
    let run = catch_unwind(AssertUnwindSafe(|| shuttle::Runner::new(scheduler, config).run(f)));
    run.map_err(|payload| crate::loom::panic_text(&*payload))?;
    Ok(mode == ShuttleMode::Dfs && exhausted.load(std::sync::atomic::Ordering::SeqCst) && !record.stopped())
}
