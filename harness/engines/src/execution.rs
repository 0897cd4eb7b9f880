//! What every engine thread does, whatever engine schedules it: the shared execution state, the
//! participants (one per actor, one fault injector per fault kind the scenario allows) and the
//! move each participant makes when it holds the engine's lock.
//!
//! The engine decides the order in which participants take the lock; that order is the only
//! nondeterminism, so the engine's exploration of its own schedules is an exploration of
//! racelab's choices. Faults are injected in two moves: an injector *arms* its fault kind at a
//! point of the engine's choosing, and the first actor to take the lock while that fault is
//! enabled for it takes the fault instead of its step. Which actor that is, and when, are the
//! engine's choices, so every (actor, fault, time) is reachable: a later arming covers an
//! earlier step.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex as StdMutex;
use std::time::Instant;

use racelab_harness::explore::machine::Machine;
use racelab_harness::explore::{Choice, ChoiceKind, Violation};

/// With drawn faults, the odds (1 in this many) that an actor's turn is a fault when one is
/// enabled: racelab's own samplers use the same.
const FAULT_ODDS: usize = 8;

/// The fault kinds, in the order injectors are started.
pub(crate) const FAULT_KINDS: [ChoiceKind; 4] =
    [ChoiceKind::Crash, ChoiceKind::Error, ChoiceKind::Timeout, ChoiceKind::LostReply];

/// The injector (index into `FAULT_KINDS`) that strikes with `kind`; `None` for an actor's own
/// step. A match without a catch-all: a new kind of choice does not compile here until the
/// engines explore it, rather than going unexplored while loom says `holds`.
pub(crate) const fn injector_of(kind: ChoiceKind) -> Option<usize> {
    match kind {
        ChoiceKind::Step => None,
        ChoiceKind::Crash => Some(0),
        ChoiceKind::Error => Some(1),
        ChoiceKind::Timeout => Some(2),
        ChoiceKind::LostReply => Some(3),
        // `check` refuses scenarios with power losses before any engine runs.
        ChoiceKind::PowerLoss => panic!("the engines do not explore power losses"),
    }
}

/// One engine thread's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Participant {
    Actor(u8),
    /// Injects faults of `FAULT_KINDS[k]`.
    Injector(usize),
}

/// How faults are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Faults {
    /// By injector threads, so that an exhaustive engine explores every (actor, fault, time).
    Injectors,
    /// By the engine's own random draw in the actor's turn (shuttle's samplers): an injector
    /// thread would strike whenever PCT gives it a high priority, and every change point PCT
    /// makes lowers an actor below it, so PCT could never run a race without a fault.
    Drawn,
}

/// The participants of a model's execution: injectors first (the engine's first thread has a
/// small stack on loom, and an injector only looks), then actors.
pub(crate) fn participants(machine: &dyn Machine, faults: Faults) -> Vec<Participant> {
    let with_injectors = faults == Faults::Injectors;
    let injectors =
        (0..FAULT_KINDS.len()).filter(|&k| with_injectors && budget(machine, k) > 0).map(Participant::Injector);
    let actors = (0..machine.actor_count()).map(|i| Participant::Actor(i as u8));
    injectors.chain(actors).collect()
}

fn budget(machine: &dyn Machine, k: usize) -> u8 {
    let b = machine.bounds();
    [b.crashes, b.errors, b.timeouts, b.lost_replies][k]
}

fn spent(machine: &dyn Machine, k: usize) -> u8 {
    let f = machine.faults_used();
    [f.crashes, f.errors, f.timeouts, f.lost_replies][k]
}

/// What a participant does next, decided under the engine's lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Move {
    Apply(Choice),
    /// With drawn faults: this actor has a fault enabled; the engine draws whether it strikes.
    Draw,
    Arm(usize),
    Wait,
    Exit,
}

/// The state all threads of one execution share, under the engine's lock.
pub(crate) struct Shared {
    machine: Box<dyn Machine>,
    /// `machine.choices()`, computed once per step: every participant's next move, and every
    /// sleeper's check whether to wake it, reads it.
    choices: Vec<Choice>,
    path: Vec<Choice>,
    armed: [bool; 4],
    over: bool,
    faults: Faults,
    /// Per participant: waiting on its condition variable, not yet woken.
    pub(crate) sleeping: Vec<bool>,
}

impl Shared {
    pub(crate) fn new(machine: Box<dyn Machine>, participants: usize, faults: Faults) -> Shared {
        let sleeping = vec![false; participants];
        let choices = machine.choices();
        Shared { machine, choices, path: Vec::new(), armed: [false; 4], over: false, faults, sleeping }
    }

    /// With drawn faults, what `actor` does in its turn, given `draw(n)`, the engine's choice of
    /// one in `0..n`: one of its enabled faults with odds 1 in `FAULT_ODDS`, else its step, else
    /// (it waits) sleep until someone else moves.
    pub(crate) fn drawn_move(&self, actor: u8, draw: &mut dyn FnMut(usize) -> usize) -> Move {
        let choices = &self.choices;
        let faults: Vec<Choice> = choices.iter().copied().filter(|c| c.actor == actor && c.kind.is_fault()).collect();
        let step = Choice { actor, kind: ChoiceKind::Step };
        if !faults.is_empty() && draw(FAULT_ODDS) == 0 {
            Move::Apply(faults[draw(faults.len())])
        } else if choices.contains(&step) {
            Move::Apply(step)
        } else {
            Move::Wait
        }
    }

    pub(crate) fn next_move(&self, who: Participant) -> Move {
        if self.over {
            return Move::Exit;
        }
        let choices = &self.choices;
        match who {
            Participant::Actor(actor) => {
                let armed = (0..FAULT_KINDS.len()).filter(|&k| self.armed[k]);
                if let Some(fault) = armed.map(|k| Choice { actor, kind: FAULT_KINDS[k] }).find(|c| choices.contains(c))
                {
                    return Move::Apply(fault);
                }
                let step = Choice { actor, kind: ChoiceKind::Step };
                if self.faults == Faults::Drawn && choices.iter().any(|c| c.actor == actor && c.kind.is_fault()) {
                    Move::Draw
                } else if choices.contains(&step) {
                    Move::Apply(step)
                } else {
                    Move::Wait
                }
            }
            Participant::Injector(k) => {
                if spent(&*self.machine, k) >= budget(&*self.machine, k) {
                    Move::Exit
                } else if !self.armed[k] && choices.iter().any(|c| c.kind == FAULT_KINDS[k]) {
                    Move::Arm(k)
                } else {
                    Move::Wait
                }
            }
        }
    }

    /// Make `mv` (never `Wait` or `Exit`), then check the new state as racelab's explorers do.
    pub(crate) fn perform(&mut self, mv: Move, record: &Record) {
        match mv {
            Move::Arm(k) => self.armed[k] = true,
            Move::Apply(choice) => {
                if let Some(k) = injector_of(choice.kind) {
                    self.armed[k] = false;
                }
                self.machine.apply(choice);
                self.choices = self.machine.choices();
                self.path.push(choice);
                self.over = record.observe(&*self.machine, &self.path, &self.choices)
                    // Drawn faults, like racelab's samplers, end a schedule in its first final
                    // state: no participant is left to draw whether a fault strikes there.
                    || (self.faults == Faults::Drawn && !self.machine.any_step());
            }
            Move::Wait | Move::Exit | Move::Draw => unreachable!("only moves that change the state are performed"),
        }
    }
}

/// What an exploration found, across executions. Outside the engine's view (a std mutex), so
/// that recording never adds schedules to explore.
pub(crate) struct Record {
    found: StdMutex<Found>,
    stop: AtomicBool,
    max_executions: u64,
    deadline: Option<Instant>,
    /// Keep every final state's observation, and count distinct states.
    keep_states: bool,
}

#[derive(Default)]
pub(crate) struct Found {
    pub executions: u64,
    pub transitions: u64,
    pub depth: u32,
    pub violation: Option<(Violation, Vec<Choice>)>,
    /// Why the exploration stopped short, when it did.
    pub incomplete: Option<String>,
    /// The exploration stopped because it had run its budget of executions.
    pub budget_spent: bool,
    pub reached: u64,
    pub finals: BTreeMap<u128, Vec<String>>,
    pub states: HashSet<u128>,
}

impl Record {
    pub(crate) fn new(max_executions: u64, deadline: Option<Instant>, keep_states: bool) -> Record {
        Record { found: StdMutex::default(), stop: AtomicBool::new(false), max_executions, deadline, keep_states }
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Found> {
        self.found.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stop exploring, for `why` unless a reason is already given.
    pub(crate) fn stop_incomplete(&self, why: String) {
        let mut found = self.lock();
        found.incomplete.get_or_insert(why);
        self.stop.store(true, Ordering::SeqCst);
    }

    /// May another execution start? `false` (and the exploration stops) once a violation was
    /// found, the schedule bound is reached, or the deadline passed.
    pub(crate) fn may_continue(&self) -> bool {
        if self.stopped() {
            return false;
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.stop_incomplete("time limit reached".to_string());
            return false;
        }
        let mut found = self.lock();
        if found.executions >= self.max_executions {
            found.incomplete.get_or_insert(format!("schedule bound reached: {} schedules", self.max_executions));
            found.budget_spent = true;
            self.stop.store(true, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Start an execution; `false` when the exploration must stop instead.
    pub(crate) fn begin(&self) -> bool {
        if !self.may_continue() {
            return false;
        }
        self.lock().executions += 1;
        true
    }

    /// Check the state `path` reached, whose enabled choices are `choices`. Returns whether the
    /// execution is over.
    pub(crate) fn observe(&self, machine: &dyn Machine, path: &[Choice], choices: &[Choice]) -> bool {
        let mut found = self.lock();
        found.transitions += 1;
        found.depth = found.depth.max(path.len() as u32);
        found.reached |= machine.targets_reached();
        let fingerprint = self.keep_states.then(|| machine.fingerprint());
        if let Some(fp) = fingerprint {
            found.states.insert(fp);
        }
        if let Some(violation) = machine.violation() {
            found.violation.get_or_insert_with(|| (violation, path.to_vec()));
            self.stop.store(true, Ordering::SeqCst);
            return true;
        }
        if !machine.any_step() {
            if let Some(fp) = fingerprint {
                found.finals.entry(fp).or_insert_with(|| machine.observation());
            }
        }
        if choices.is_empty() {
            return true;
        }
        let max_depth = machine.bounds().max_depth;
        if path.len() as u32 >= max_depth {
            // This execution ends here and no verdict can be `holds`, but other schedules may
            // still violate (racelab's own samplers also go on to their next schedule).
            found.incomplete.get_or_insert(format!("depth bound reached: {max_depth} steps"));
            return true;
        }
        false
    }

    /// Check the initial state. Returns whether there is nothing to explore.
    pub(crate) fn observe_initial(&self, machine: &dyn Machine) -> bool {
        let mut found = self.lock();
        found.reached |= machine.targets_reached();
        if self.keep_states {
            found.states.insert(machine.fingerprint());
        }
        if let Some(violation) = machine.violation() {
            found.violation = Some((violation, Vec::new()));
            return true;
        }
        if !machine.any_step() && self.keep_states {
            found.finals.insert(machine.fingerprint(), machine.observation());
        }
        machine.choices().is_empty()
    }

    /// Everything recorded, leaving an empty record.
    pub(crate) fn take(&self) -> Found {
        std::mem::take(&mut *self.lock())
    }
}
