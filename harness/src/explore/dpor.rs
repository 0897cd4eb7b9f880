//! Stateless dynamic partial-order reduction: source sets with sleep sets (Abdulla, Aronis,
//! Jonsson, Sagonas, "Optimal dynamic partial order reduction", POPL 2014, Algorithm 1).
//!
//! The search runs executions depth first without a state cache. At each state it explores a
//! *backtrack* set of processes (an actor, or the world for a power loss), starting with one;
//! after each step it looks for *races*: an earlier event on the path that the new one depends
//! on with no event in between ordering them. For a race it asks whether the backtrack set of
//! the state before the earlier event already holds a process that can start the reversed
//! order (an initial of `notdep(e, E).e'`), and adds one if not. Sleep sets keep it from
//! exploring an order twice. Every Mazurkiewicz trace (executions equal up to swapping adjacent
//! independent steps) is explored at least once; [`count_traces`] counts them for a ratio.
//!
//! Dependence. Two events depend on each other when they belong to one process, when their
//! footprints conflict ([`Footprint::conflicts`]), when one is a fault (a crash or power loss
//! kills every actor of a process, so it changes what another actor's step is even where their
//! footprints are apart, a local step having none; and a fault ordered after everything before
//! it keeps the state where it strikes on every equivalent execution), or when the earlier one
//! enabled the kind of choice the later one is (it granted a wait, ended a race of woken
//! statements): a step that enables another's is never independent of it, whatever the
//! footprints say. The change is
//! observed, not declared, so no subsystem has to record a footprint for a granted wait. Under a
//! preemption bound every pair of events depends (the bound is not a property of traces).
//!
//! Disabling. A step that takes a choice away from another process (a grant ends the chance of
//! a timeout, a spent budget ends everyone's crash) is in no race with the choice it took away,
//! which never ran; the process is added to the backtrack set of the state before the step, so
//! that its choices there are run first.
//!
//! An actor may have several choices at once (its step and its faults). A process in a backtrack
//! set has every one of its enabled choices explored there; sleep sets hold choices.
//!
//! What it preserves: every final state, every state where a fault strikes (a fault depends on
//! every event, so every equivalent execution passes through that state), hence every deadlock
//! (final, or left only by a fault), and the truth of every invariant *in final states*. An invariant checked at every step is checked
//! on the states of the executions run, and an intermediate state of an equivalent execution
//! that was not run is not checked: `run::check` therefore never calls such a model's invariants
//! `holds` on DPOR alone.

use std::collections::{BTreeSet, HashSet};

use crate::model::{Actor, Model};
use crate::op::{Footprint, MAX_ACTORS};

use super::budget::{Budget, Progress, CHECK_EVERY};
use super::state::{fingerprint_of, Properties, State};
use super::visited::FingerprintSet;
use super::{Bounds, Choice, ChoiceKind, Exploration, Explorer, Stats, Violation};

/// The process of power-loss choices, after the actors' (at most [`MAX_ACTORS`]).
const WORLD: u8 = MAX_ACTORS as u8;

/// Source-DPOR with sleep sets, on the simulator.
#[derive(Clone, Debug)]
pub struct Dpor {
    /// Time limit, interrupt and progress.
    pub budget: Budget,
    /// Stop after this many executions (complete or cut short by sleep sets): `inconclusive`.
    pub max_executions: u64,
    /// Race analysis (source sets). Off, every enabled process is explored at every state and
    /// only sleep sets reduce: for measuring what source sets add.
    pub source_sets: bool,
    /// Check the model's invariants (and stop at the first violation). Off only to count a
    /// whole state space.
    pub check_properties: bool,
}

impl Default for Dpor {
    fn default() -> Self {
        Dpor { budget: Budget::default(), max_executions: 10_000_000, source_sets: true, check_properties: true }
    }
}

/// What one DPOR run covered beyond its [`Exploration`].
#[derive(Clone, Debug, Default)]
pub struct DporReport {
    /// Fingerprints of every final state (no actor can step) reached.
    pub finals: BTreeSet<u128>,
    /// Keys (`trace_key`) of the traces of the maximal executions run.
    pub traces: BTreeSet<u128>,
    /// Executions cut short because every enabled choice was asleep (not counted as executions).
    pub sleep_blocked: u64,
    /// Races whose reversal no process could start (the earlier event enabled the later one).
    pub unreversible: u64,
}

impl Explorer for Dpor {
    fn explore<M: Model>(&mut self, model: &M, bounds: &Bounds) -> Exploration {
        self.run(model, bounds).0
    }
}

/// One executed event of the current path.
struct Event {
    choice: Choice,
    process: u8,
    /// Its number among its process's events on this path, from 0.
    nth: u16,
    footprint: Footprint,
    /// Per process, the choice kinds this event enabled or disabled.
    changed: Signature,
    /// Events before it that it happens after, transitively (bits by index).
    before: Vec<u64>,
}

/// The state before one event of the path.
struct Frame<A> {
    state: State<A>,
    enabled: Vec<Choice>,
    /// Processes (bits) to explore here.
    backtrack: u64,
    sleep: Vec<(Choice, Footprint)>,
    explored: Vec<(Choice, Footprint)>,
}

fn process_of(choice: &Choice) -> u8 {
    match choice.kind {
        ChoiceKind::PowerLoss => WORLD,
        _ => choice.actor,
    }
}

fn bit(process: u8) -> u64 {
    1u64 << process
}

fn has(set: &[u64], index: usize) -> bool {
    set.get(index / 64).is_some_and(|w| w & (1u64 << (index % 64)) != 0)
}

fn insert(set: &mut Vec<u64>, index: usize) {
    if set.len() <= index / 64 {
        set.resize(index / 64 + 1, 0);
    }
    set[index / 64] |= 1u64 << (index % 64);
}

/// Per process, a set of choice kinds (bits): for an actor, which it has enabled; for the
/// world, how many power-loss choices there are.
type Signature = [u8; MAX_ACTORS + 1];

fn kind_bit(kind: ChoiceKind) -> u8 {
    1 << (kind as u8)
}

fn signature(enabled: &[Choice]) -> Signature {
    let mut sig = [0u8; MAX_ACTORS + 1];
    for c in enabled {
        match c.kind {
            ChoiceKind::PowerLoss => sig[MAX_ACTORS] = sig[MAX_ACTORS].saturating_add(1),
            kind => sig[usize::from(c.actor)] |= kind_bit(kind),
        }
    }
    sig
}

/// Actors other than `mover` that a step from `parent` to `child` moved: a crash that killed
/// their process, a power loss. Their next step is not the one they had.
fn moved<A: Actor>(parent: &State<A>, child: &State<A>, mover: u8) -> u64 {
    (0..parent.actors.len())
        .filter(|&q| q != usize::from(mover))
        .filter(|&q| parent.status[q] != child.status[q] || parent.actors[q] != child.actors[q])
        .fold(0, |m, q| m | (1u64 << q))
}

/// Per process other than `mover`, the choice kinds (bits) enabled in one of `before` and
/// `after` only; every kind for an actor in `moved`.
fn changed(before: &[Choice], after: &[Choice], mover: u8, moved: u64) -> Signature {
    let (mut a, b) = (signature(before), signature(after));
    for p in 0..=MAX_ACTORS {
        a[p] = match p {
            _ if p == usize::from(mover) => 0,
            _ if moved & (1u64 << p) != 0 => u8::MAX,
            MAX_ACTORS if a[p] != b[p] => kind_bit(ChoiceKind::PowerLoss),
            MAX_ACTORS => 0,
            _ => a[p] ^ b[p],
        };
    }
    a
}

/// Processes other than `mover` that lost a choice between `before` and `after`, or whose
/// actor another process moved.
fn disabled(before: &[Choice], after: &[Choice], mover: u8, moved: u64) -> u64 {
    let (a, b) = (signature(before), signature(after));
    let lost = |p: usize| {
        if p == MAX_ACTORS {
            b[p] < a[p]
        } else {
            a[p] & !b[p] != 0 || a[p] != 0 && moved & (1u64 << p) != 0
        }
    };
    (0..=MAX_ACTORS).filter(|&p| p != usize::from(mover) && lost(p)).fold(0, |m, p| m | (1u64 << p))
}

/// A fault depends on every event. A crash or a power loss kills every actor of the processes it
/// strikes, so whether it comes before or after another actor's step changes what that step is,
/// whatever it touched. And with every fault ordered after all that came before it, the state
/// where it strikes is on every equivalent execution: a deadlock that only a timeout can leave
/// is checked, though another actor's last step touched nothing.
fn orders_everything(kind: ChoiceKind) -> bool {
    kind.is_fault()
}

/// Does `later` depend on `earlier` (which came first on the path)?
fn dependent(earlier: &Event, later: &Event, total: bool) -> bool {
    total
        || earlier.process == later.process
        || orders_everything(earlier.choice.kind)
        || orders_everything(later.choice.kind)
        || earlier.footprint.conflicts(&later.footprint)
        || earlier.changed[usize::from(later.process)] & kind_bit(later.choice.kind) != 0
}

/// Append `choice` (just applied) to `events`, with what it happens after.
fn push_event(events: &mut Vec<Event>, choice: Choice, footprint: Footprint, changed: Signature, total: bool) {
    let process = process_of(&choice);
    let nth = events.iter().filter(|e| e.process == process).count() as u16;
    let mut event = Event { choice, process, nth, footprint, changed, before: Vec::new() };
    for (i, earlier) in events.iter().enumerate() {
        if dependent(earlier, &event, total) {
            insert(&mut event.before, i);
            if event.before.len() < earlier.before.len() {
                event.before.resize(earlier.before.len(), 0);
            }
            for (w, e) in event.before.iter_mut().zip(&earlier.before) {
                *w |= e;
            }
        }
    }
    events.push(event);
}

/// The Mazurkiewicz trace of an execution, as a key: its events, each named by process, number
/// within the process and choice, and every ordered pair of dependent events. Two executions
/// have one key exactly when they differ by swaps of adjacent independent events.
fn trace_key(events: &[Event]) -> u128 {
    let name = |e: &Event| (e.process, e.nth, e.choice.kind, e.choice.actor);
    let mut names: Vec<_> = events.iter().map(name).collect();
    names.sort();
    let mut pairs = Vec::new();
    for (j, later) in events.iter().enumerate() {
        for (i, earlier) in events[..j].iter().enumerate() {
            if has(&later.before, i) && earlier.process != later.process {
                pairs.push((name(earlier), name(later)));
            }
        }
    }
    pairs.sort();
    fingerprint_of(&(names, pairs))
}

struct Search<'m, M: Model> {
    model: &'m M,
    props: Properties<M::Actor>,
    bounds: &'m Bounds,
    config: &'m Dpor,
    /// Every pair of events depends (under a preemption bound).
    total: bool,
    frames: Vec<Frame<M::Actor>>,
    events: Vec<Event>,
    seen: FingerprintSet,
    stats: Stats,
    report: DporReport,
    reached: u64,
    violation: Option<(Violation, Vec<Choice>)>,
    incomplete: Option<String>,
}

impl Dpor {
    /// Explore, and also report final states, traces and sleep-set blocked executions.
    pub fn run<M: Model>(&self, model: &M, bounds: &Bounds) -> (Exploration, DporReport) {
        let init = State::initial(model);
        assert!(init.world.db.is_simulated(), "DPOR forks states: simulator only");
        let mut search = Search {
            model,
            props: Properties::of(model),
            bounds,
            config: self,
            total: bounds.preemptions.is_some(),
            frames: Vec::new(),
            events: Vec::new(),
            seen: HashSet::default(),
            stats: Stats::default(),
            report: DporReport::default(),
            reached: 0,
            violation: None,
            incomplete: None,
        };
        let enabled = init.choices(bounds);
        search.visit(init, enabled, Vec::new());
        let exploration =
            Exploration::ended(model, search.stats, search.violation, search.incomplete, search.reached, 0);
        (exploration, search.report)
    }
}

impl<M: Model> Search<'_, M> {
    fn stopped(&self) -> bool {
        self.violation.is_some() || self.incomplete.is_some()
    }

    fn path(&self) -> Vec<Choice> {
        self.events.iter().map(|e| e.choice).collect()
    }

    /// Explore from `state` (reached by the events on the path), whose choices are `enabled`,
    /// with `sleep` asleep.
    fn visit(&mut self, state: State<M::Actor>, enabled: Vec<Choice>, sleep: Vec<(Choice, Footprint)>) {
        let depth = self.events.len() as u32;
        if self.seen.insert(state.fingerprint()) {
            self.stats.states += 1;
            if self.stats.states > self.bounds.max_states {
                self.incomplete = Some(format!("state bound reached: {} states", self.bounds.max_states));
                return;
            }
        }
        self.stats.depth = self.stats.depth.max(depth);
        self.reached |= state.targets_reached(&self.props);
        if self.config.check_properties {
            if let Some(v) = state.check(self.model, &self.props) {
                self.violation = Some((v, self.path()));
                return;
            }
        }
        if !state.any_step() && self.report.finals.insert(state.fingerprint()) {
            self.stats.final_states += 1;
        }
        if enabled.is_empty() {
            self.stats.executions += 1;
            self.report.traces.insert(trace_key(&self.events));
            self.bound_executions();
            return;
        }
        if depth >= self.bounds.max_depth {
            self.incomplete = Some(format!("depth bound reached: {} steps", self.bounds.max_depth));
            return;
        }
        let asleep = |c: &Choice, sleep: &[(Choice, Footprint)]| sleep.iter().any(|(s, _)| s == c);
        let Some(first) = enabled.iter().find(|c| !asleep(c, &sleep)) else {
            self.report.sleep_blocked += 1;
            self.bound_executions();
            return;
        };
        let backtrack = if self.config.source_sets {
            bit(process_of(first))
        } else {
            enabled.iter().fold(0, |m, c| m | bit(process_of(c)))
        };
        let choices = enabled.len();
        self.frames.push(Frame { state, enabled, backtrack, sleep, explored: Vec::new() });
        let at = self.frames.len() - 1;
        // Each round explores one choice not yet explored here: at most one per choice.
        for _ in 0..choices {
            if self.stopped() {
                break;
            }
            let frame = &self.frames[at];
            let next = frame.enabled.iter().copied().find(|c| {
                frame.backtrack & bit(process_of(c)) != 0
                    && !asleep(c, &frame.sleep)
                    && !frame.explored.iter().any(|(e, _)| e == c)
            });
            let Some(choice) = next else { break };
            let mut child = frame.state.clone();
            let footprint = child.apply(choice, self.bounds);
            let child_enabled = child.choices(self.bounds);
            let mover = process_of(&choice);
            let moved = moved(&frame.state, &child, mover);
            let changed = changed(&frame.enabled, &child_enabled, mover, moved);
            let child_sleep: Vec<(Choice, Footprint)> = frame
                .sleep
                .iter()
                .chain(frame.explored.iter())
                .filter(|(s, f)| {
                    let p = process_of(s);
                    p != mover
                        && !self.total
                        && !orders_everything(s.kind)
                        && !orders_everything(choice.kind)
                        && !f.conflicts(&footprint)
                        && changed[usize::from(p)] & kind_bit(s.kind) == 0
                        && child_enabled.contains(s)
                })
                .copied()
                .collect();
            // A choice this step disables is in no race with it on this path, yet running it
            // first is another trace: explore its process here too.
            let disabled = disabled(&frame.enabled, &child_enabled, mover, moved);
            self.stats.transitions += 1;
            if self.stats.transitions.is_multiple_of(CHECK_EVERY) {
                self.look_up();
            }
            push_event(&mut self.events, choice, footprint, changed, self.total);
            if self.config.source_sets {
                self.frames[at].backtrack |= disabled;
                self.reverse_races();
            }
            self.visit(child, child_enabled, child_sleep);
            self.events.pop();
            self.frames[at].explored.push((choice, footprint));
        }
        self.frames.pop();
    }

    /// For each race of the newest event with an earlier one, make sure the state before the
    /// earlier one explores a process that starts the reversed order.
    fn reverse_races(&mut self) {
        let j = self.events.len() - 1;
        let new = &self.events[j];
        let direct: Vec<usize> = (0..j).filter(|&i| dependent(&self.events[i], new, self.total)).collect();
        for &i in &direct {
            if self.events[i].process == new.process {
                continue;
            }
            // Not a race when a later event it depends on already orders the two.
            if direct.iter().any(|&k| k > i && has(&self.events[k].before, i)) {
                continue;
            }
            // v = notdep(e_i).e_j: the events after e_i that do not happen after it, then e_j.
            let v: Vec<usize> = (i + 1..j).filter(|&k| !has(&self.events[k].before, i)).chain([j]).collect();
            let frame = &self.frames[i];
            let mut starters: Vec<u8> = Vec::new();
            for (n, &k) in v.iter().enumerate() {
                let initial = v[..n].iter().all(|&m| !has(&self.events[k].before, m));
                let event = &self.events[k];
                if initial && frame.enabled.contains(&event.choice) && !starters.contains(&event.process) {
                    starters.push(event.process);
                }
            }
            match starters.first() {
                _ if starters.iter().any(|&p| frame.backtrack & bit(p) != 0) => {}
                Some(&p) => self.frames[i].backtrack |= bit(p),
                // Only e_i enabled e_j: there is no other order to explore.
                None => self.report.unreversible += 1,
            }
        }
    }

    fn bound_executions(&mut self) {
        if self.stats.executions + self.report.sleep_blocked >= self.config.max_executions && self.incomplete.is_none()
        {
            self.incomplete = Some(format!("execution bound reached: {} executions", self.config.max_executions));
        }
    }

    /// Every [`CHECK_EVERY`] transitions: report progress, and stop on a limit or an interrupt.
    fn look_up(&mut self) {
        self.config.budget.report(&Progress {
            states: self.stats.states,
            transitions: self.stats.transitions,
            depth: self.events.len() as u32,
            frontier: self.frames.iter().map(|f| f.enabled.len().saturating_sub(f.explored.len()) as u64).sum(),
            share: None,
        });
        if self.incomplete.is_none() {
            self.incomplete = self.config.budget.exceeded();
        }
    }
}

/// Every execution of a model without reduction, grouped into Mazurkiewicz traces.
#[derive(Clone, Debug, Default)]
pub struct TraceCount {
    /// Maximal executions (paths to a state with no enabled choice).
    pub executions: u64,
    /// Keys of their distinct traces ([`Dpor::run`] reports the same keys).
    pub traces: BTreeSet<u128>,
    /// Fingerprints of every final state (no actor can step) on the way.
    pub finals: BTreeSet<u128>,
    /// Every execution within the bounds was enumerated (no depth bound, no cap).
    pub complete: bool,
}

/// Enumerate every execution of `model` within `bounds` (properties unchecked), up to `cap`
/// executions, and count their traces under the dependence [`Dpor`] uses.
pub fn count_traces<M: Model>(model: &M, bounds: &Bounds, cap: u64) -> TraceCount {
    struct Walk<'b> {
        bounds: &'b Bounds,
        cap: u64,
        total: bool,
        events: Vec<Event>,
        count: TraceCount,
        cut: bool,
    }
    impl Walk<'_> {
        fn walk<A: Actor>(&mut self, state: State<A>, enabled: Vec<Choice>) {
            if self.cut {
                return;
            }
            if !state.any_step() {
                self.count.finals.insert(state.fingerprint());
            }
            if enabled.is_empty() {
                self.count.executions += 1;
                self.count.traces.insert(trace_key(&self.events));
                self.cut = self.count.executions >= self.cap;
                return;
            }
            if self.events.len() as u32 >= self.bounds.max_depth {
                self.cut = true;
                return;
            }
            for &choice in &enabled {
                let mut child = state.clone();
                let footprint = child.apply(choice, self.bounds);
                let child_enabled = child.choices(self.bounds);
                let mover = process_of(&choice);
                let changed = changed(&enabled, &child_enabled, mover, moved(&state, &child, mover));
                push_event(&mut self.events, choice, footprint, changed, self.total);
                self.walk(child, child_enabled);
                self.events.pop();
                if self.cut {
                    return;
                }
            }
        }
    }
    let init = State::initial(model);
    let enabled = init.choices(bounds);
    let mut walk = Walk {
        bounds,
        cap,
        total: bounds.preemptions.is_some(),
        events: Vec::new(),
        count: TraceCount::default(),
        cut: false,
    };
    walk.walk(init, enabled);
    walk.count.complete = !walk.cut;
    walk.count
}

/// Check the independence that sleep sets and DPOR rest on, at every state reachable within
/// `max_states` states: two enabled choices of different actors whose footprints do not conflict
/// must each stay enabled after the other, end in one state in either order, and touch the same
/// in either order. Returns how many such pairs were tried, or the first that failed.
pub fn check_independence<M: Model>(model: &M, bounds: &Bounds, max_states: usize) -> Result<u64, String> {
    let mut stack = vec![State::initial(model)];
    let mut seen: FingerprintSet = HashSet::default();
    let mut tried = 0;
    while let Some(state) = stack.pop() {
        if seen.len() >= max_states {
            break;
        }
        if !seen.insert(state.fingerprint()) {
            continue;
        }
        let enabled = state.choices(bounds);
        for (k, &a) in enabled.iter().enumerate() {
            for &b in &enabled[k + 1..] {
                if process_of(&a) == process_of(&b) {
                    continue;
                }
                let (mut after_a, mut after_b) = (state.clone(), state.clone());
                let (fa, fb) = (after_a.apply(a, bounds), after_b.apply(b, bounds));
                if fa.conflicts(&fb) {
                    continue;
                }
                tried += 1;
                if !after_a.choices(bounds).contains(&b) || !after_b.choices(bounds).contains(&a) {
                    return Err(format!("{a:?} and {b:?} touch nothing in common, yet one disables the other"));
                }
                let (fb_late, fa_late) = (after_a.apply(b, bounds), after_b.apply(a, bounds));
                if after_a.fingerprint() != after_b.fingerprint() || fa != fa_late || fb != fb_late {
                    return Err(format!("{a:?} and {b:?} touch nothing in common, yet do not commute"));
                }
            }
        }
        for c in enabled {
            let mut next = state.clone();
            next.apply(c, bounds);
            stack.push(next);
        }
    }
    Ok(tried)
}
