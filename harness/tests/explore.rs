//! The explorers on small models whose outcomes can be counted by hand, plus a property test
//! that sleep sets lose no final state against naive enumeration.

use std::collections::BTreeSet;

use proptest::prelude::*;
use racelab_harness::explore::budget::{Budget, CHECK_EVERY};
use racelab_harness::explore::dpor::{count_traces, Dpor};
use racelab_harness::explore::exhaustive::Exhaustive;
use racelab_harness::explore::shortest;
use racelab_harness::explore::stateless::{Dfs, Pct, Random, Stateless};
use racelab_harness::explore::{Bounds, ChoiceKind, Explorer, Shard, State};
use racelab_harness::model::{Actor, Invariant, Model, Target, View};
use racelab_harness::op::{Op, OsOp, Outcome, Value};
use racelab_harness::sim::{Schema, World};

/// One instruction of a tiny program over files and flocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Instr {
    Read(&'static str),
    /// Write the last value read plus `delta`.
    Write(&'static str, i64),
    Lock(&'static str),
    Unlock(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Program {
    code: Vec<Instr>,
    pc: usize,
    last: i64,
}

impl Actor for Program {
    fn next_op(&self) -> Option<Op> {
        let op = match *self.code.get(self.pc)? {
            Instr::Read(path) => OsOp::ReadFile { path },
            Instr::Write(path, delta) => OsOp::WriteFile { path, content: Value::Int(self.last + delta) },
            Instr::Lock(path) => OsOp::Flock { path, nonblocking: false },
            Instr::Unlock(path) => OsOp::Funlock { path },
        };
        Some(Op::os("op", op))
    }
    fn on_outcome(&mut self, outcome: &Outcome) {
        if let Outcome::Value(Value::Int(v)) = outcome {
            self.last = *v;
        }
        self.pc += 1;
    }
}

/// Actors running programs, each in its own process, over files that start at 0.
struct Programs {
    programs: Vec<Vec<Instr>>,
    /// With an invariant "counter = number of actors" in the final state, or none at all.
    check_counter: bool,
}

impl Model for Programs {
    type Actor = Program;
    fn init(&self) -> (World, Vec<Program>) {
        let mut world = World::new(Schema::default(), self.programs.len());
        for f in ["counter", "other"] {
            world.os.seed_file(f, Value::Int(0));
        }
        for a in 0..self.programs.len() {
            world.os.start_process(&[a]);
        }
        (world, self.programs.iter().map(|code| Program { code: code.clone(), pc: 0, last: 0 }).collect())
    }
    fn actor_names(&self) -> Vec<String> {
        (0..self.programs.len()).map(|i| format!("P{i}")).collect()
    }
    fn invariants(&self) -> Vec<Invariant<Program>> {
        if !self.check_counter {
            return vec![];
        }
        vec![Invariant::final_only("no-lost-update", |v: &View<Program>| {
            let want = Value::Int(v.actors.len() as i64);
            match v.world.os.file("counter") {
                Some(c) if c != want => Err(format!("counter is {c}, want {want}")),
                _ => Ok(()),
            }
        })]
    }
    fn targets(&self) -> Vec<Target<Program>> {
        vec![Target::new("someone wrote", |v: &View<Program>| v.world.os.file("counter") != Some(Value::Int(0)))]
    }
    fn deadlock_is_violation(&self) -> bool {
        self.check_counter
    }
}

fn increment(locked: bool) -> Vec<Instr> {
    if locked {
        vec![Instr::Lock("l"), Instr::Read("counter"), Instr::Write("counter", 1), Instr::Unlock("l")]
    } else {
        vec![Instr::Read("counter"), Instr::Write("counter", 1)]
    }
}

/// Final counter values over every final state, by naive enumeration of every path.
fn final_counters(model: &Programs, bounds: &Bounds) -> BTreeSet<i64> {
    let mut seen = BTreeSet::new();
    fn walk(s: State<Program>, b: &Bounds, out: &mut BTreeSet<i64>) {
        if !s.any_step() {
            if let Some(Value::Int(c)) = s.world.os.file("counter") {
                out.insert(c);
            }
            return;
        }
        for c in s.choices(b) {
            let mut n = s.clone();
            n.apply(c, b);
            walk(n, b, out);
        }
    }
    walk(State::initial(model), bounds, &mut seen);
    seen
}

#[test]
fn lost_update_has_exactly_the_counted_outcomes() {
    let bounds = Bounds::default();
    let two = Programs { programs: vec![increment(false), increment(false)], check_counter: false };
    assert_eq!(final_counters(&two, &bounds), BTreeSet::from([1, 2]));
    let three = Programs { programs: vec![increment(false); 3], check_counter: false };
    assert_eq!(final_counters(&three, &bounds), BTreeSet::from([1, 2, 3]));
    let locked = Programs { programs: vec![increment(true), increment(true)], check_counter: false };
    assert_eq!(final_counters(&locked, &bounds), BTreeSet::from([2]));
}

#[test]
fn exhaustive_counts_states_and_executions_of_two_unlocked_increments() {
    // Two actors, two steps each (r = read, w = write): the C(4,2) = 6 orders. By hand, the
    // distinct states per depth are 1, 2, 3 (rA wA | rA rB | rB wB), 4 and 3, so 13 in all.
    // Final states: rA wA rB wB and rB wB rA wA (counter 2, different values read), and every
    // overlapping order ending alike (both read 0, counter 1): 3.
    let model = Programs { programs: vec![increment(false), increment(false)], check_counter: false };
    let (without, finals_without) =
        Exhaustive { sleep_sets: false, ..Exhaustive::default() }.final_states(&model, &Bounds::default());
    let (with, finals_with) =
        Exhaustive { sleep_sets: true, ..Exhaustive::default() }.final_states(&model, &Bounds::default());
    assert!(without.complete && with.complete);
    assert_eq!(without.stats.states, 13);
    assert_eq!(with.stats.states, 13, "sleep sets never drop a state");
    assert_eq!(finals_with.len(), 3);
    assert_eq!(finals_without, finals_with);
    assert_eq!(with.stats.final_states, 3);
    // Executions: all 6 orders without sleep sets; with them, one per Mazurkiewicz trace, since
    // the two reads commute: {rA rB wA wB, rB rA wA wB} and {rA rB wB wA, rB rA wB wA} are one
    // each, so 4.
    assert_eq!(without.stats.executions, 6);
    assert_eq!(with.stats.executions, 4);
    assert!(with.stats.transitions < without.stats.transitions, "sleep sets skip the commuting orders");
    assert!(with.stats.pruned > 0);
}

#[test]
fn exhaustive_finds_the_lost_update_and_bfs_makes_it_minimal() {
    let model = Programs { programs: vec![increment(false), increment(false)], check_counter: true };
    let bounds = Bounds::default();
    let found = Exhaustive::default().explore(&model, &bounds).violation.expect("the update is lost");
    assert_eq!(found.0.invariant, "no-lost-update");
    let (v, schedule) = shortest::minimise(&model, &bounds, found);
    assert_eq!(v.invariant, "no-lost-update");
    assert_eq!(schedule.len(), 4, "read, read, write, write");
    let replayed = shortest::replay(&model, &bounds, &schedule).unwrap();
    assert_eq!(replayed.violation.unwrap().invariant, "no-lost-update");
}

#[test]
fn the_locked_increment_holds_completely() {
    let model = Programs { programs: vec![increment(true), increment(true)], check_counter: true };
    let e = Exhaustive::default().explore(&model, &Bounds::default());
    assert!(e.violation.is_none() && e.complete && e.unreached.is_empty(), "{e:?}");
    // With a crash in the budget, a crash inside the critical section loses the increment.
    let bounds = Bounds { crashes: 1, ..Bounds::default() };
    let e = Exhaustive::default().explore(&model, &bounds);
    let (v, path) = e.violation.expect("a crash loses an increment");
    assert_eq!(v.invariant, "no-lost-update");
    assert!(path.iter().any(|c| c.kind == ChoiceKind::Crash));
}

#[test]
fn opposite_lock_orders_deadlock() {
    let ab = vec![Instr::Lock("a"), Instr::Lock("b"), Instr::Unlock("b"), Instr::Unlock("a")];
    let ba = vec![Instr::Lock("b"), Instr::Lock("a"), Instr::Unlock("a"), Instr::Unlock("b")];
    let model = Programs { programs: vec![ab, ba], check_counter: true };
    let bounds = Bounds::default();
    let found = Exhaustive::default().explore(&model, &bounds).violation.expect("deadlock");
    let (v, schedule) = shortest::minimise(&model, &bounds, found);
    assert_eq!(v.invariant, "no-deadlock");
    assert_eq!(schedule.len(), 4, "lock a, lock b, then both wait");
}

#[test]
fn preemption_bound_zero_misses_the_lost_update_and_says_so() {
    let model = Programs { programs: vec![increment(false), increment(false)], check_counter: true };
    let bounds = Bounds { preemptions: Some(0), ..Bounds::default() };
    let e = Exhaustive::default().explore(&model, &bounds);
    assert!(e.violation.is_none(), "without preemptions the increments run serially");
    let bounds = Bounds { preemptions: Some(1), ..Bounds::default() };
    assert!(Exhaustive::default().explore(&model, &bounds).violation.is_some());
}

#[test]
fn bounds_make_the_search_incomplete() {
    let model = Programs { programs: vec![increment(false); 3], check_counter: false };
    let e = Exhaustive::default().explore(&model, &Bounds { max_states: 5, ..Bounds::default() });
    assert!(!e.complete);
    assert!(e.incomplete_reason.unwrap().contains("state bound"));
    let e = Exhaustive::default().explore(&model, &Bounds { max_depth: 3, ..Bounds::default() });
    assert!(!e.complete);
    assert!(e.incomplete_reason.unwrap().contains("depth bound"));
}

#[test]
fn seeded_random_and_pct_are_repeatable() {
    let model = Programs { programs: vec![increment(false); 3], check_counter: true };
    let bounds = Bounds { crashes: 1, ..Bounds::default() };
    let run_random = |seed| Stateless::new(Random::new(seed), 200).explore(&model, &bounds);
    let (a, b) = (run_random(7), run_random(7));
    assert_eq!(a.stats, b.stats);
    assert_eq!(a.violation, b.violation);
    assert!(a.violation.is_some(), "random finds the lost update");
    let run_pct = |seed| Stateless::new(Pct::new(seed, 3, 6, 2), 200).explore(&model, &bounds);
    let (a, b) = (run_pct(3), run_pct(3));
    assert_eq!(a.stats, b.stats);
    assert_eq!(a.violation, b.violation);
    assert!(a.violation.is_some(), "PCT finds the lost update");
    assert!(!a.complete);
    let locked = Programs { programs: vec![increment(true); 2], check_counter: true };
    let r = Stateless::new(Random::new(1), 50).explore(&locked, &Bounds::default());
    assert!(r.violation.is_none() && !r.complete);
    assert!(r.incomplete_reason.unwrap().contains("sampled"), "sampling never proves a fix");
}

#[test]
fn stateless_dfs_enumerates_every_interleaving_once() {
    // Two actors with two steps each: C(4,2) = 6 schedules, then it is exhausted.
    let model = Programs { programs: vec![increment(false), increment(false)], check_counter: false };
    let e = Stateless::new(Dfs::default(), 1000).explore(&model, &Bounds::default());
    assert_eq!(e.stats.executions, 6);
    assert!(e.complete, "{:?}", e.incomplete_reason);
    assert_eq!(e.stats.states, 13, "the same 13 states as the stateful search");
    // Stopped early by its schedule bound, it says so.
    let e = Stateless::new(Dfs::default(), 4).explore(&model, &Bounds::default());
    assert!(!e.complete);
    assert!(e.incomplete_reason.unwrap().contains("schedule bound"));
    // And it finds the lost update like the stateful search.
    let checked = Programs { programs: vec![increment(false), increment(false)], check_counter: true };
    let e = Stateless::new(Dfs::default(), 1000).explore(&checked, &Bounds::default());
    assert_eq!(e.violation.unwrap().0.invariant, "no-lost-update");
}

#[test]
fn pct_guarantee_follows_the_formula() {
    let pct = Pct::new(0, 3, 10, 3);
    assert!((pct.guarantee() - 1.0 / (3.0 * 100.0)).abs() < 1e-12);
}

fn instr() -> impl Strategy<Value = Instr> {
    let file = prop_oneof![Just("counter"), Just("other")];
    let lock = prop_oneof![Just("a"), Just("b")];
    prop_oneof![
        file.clone().prop_map(Instr::Read),
        (file, 1i64..3).prop_map(|(f, d)| Instr::Write(f, d)),
        lock.clone().prop_map(Instr::Lock),
        lock.prop_map(Instr::Unlock),
    ]
}

/// Naive enumeration: every path, no cache, no reduction.
fn naive_finals(model: &Programs, bounds: &Bounds) -> BTreeSet<u128> {
    fn walk(s: State<Program>, b: &Bounds, out: &mut BTreeSet<u128>, budget: &mut u32) {
        assert!(*budget > 0, "naive enumeration bound");
        *budget -= 1;
        if !s.any_step() {
            out.insert(s.fingerprint());
        }
        for c in s.choices(b) {
            let mut n = s.clone();
            n.apply(c, b);
            walk(n, b, out, budget);
        }
    }
    let mut out = BTreeSet::new();
    walk(State::initial(model), bounds, &mut out, &mut 2_000_000);
    out
}

/// 64 cases, the same in every run unless PROPTEST_RNG_SEED asks for others.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig { cases: 64, ..ProptestConfig::default() };
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = proptest::test_runner::RngSeed::Fixed(0x7261_6365);
    }
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sleep_sets_reach_the_same_final_states_as_naive_enumeration(
        programs in prop::collection::vec(prop::collection::vec(instr(), 1..4), 2..4),
        crash in any::<bool>(),
    ) {
        let model = Programs { programs, check_counter: false };
        let bounds = Bounds { crashes: u8::from(crash), ..Bounds::default() };
        let naive = naive_finals(&model, &bounds);
        let (reduced, finals) = Exhaustive { sleep_sets: true, ..Exhaustive::default() }.final_states(&model, &bounds);
        let (plain, plain_finals) = Exhaustive { sleep_sets: false, ..Exhaustive::default() }.final_states(&model, &bounds);
        prop_assert!(reduced.complete && plain.complete);
        prop_assert_eq!(&finals, &naive);
        prop_assert_eq!(&plain_finals, &naive);
        prop_assert_eq!(reduced.stats.states, plain.stats.states);
    }
}

proptest! {
    #![proptest_config(config())]

    /// A sharded search loses nothing: the shares together reach exactly the final states of the
    /// unsharded search, whatever the number of shares and the frontier depth, and each share's
    /// top-of-tree counts are kept once.
    #[test]
    fn shares_together_reach_every_final_state(
        programs in prop::collection::vec(prop::collection::vec(instr(), 1..4), 2..4),
        crash in any::<bool>(),
        count in 1u32..6,
        split_depth in 1u32..5,
    ) {
        let model = Programs { programs, check_counter: false };
        let bounds = Bounds { crashes: u8::from(crash), ..Bounds::default() };
        let naive = naive_finals(&model, &bounds);
        let mut union = BTreeSet::new();
        let mut states = 0;
        for index in 0..count {
            let shard = Some(Shard { index, count, split_depth });
            let (share, finals) = Exhaustive { shard, ..Exhaustive::default() }.final_states(&model, &bounds);
            prop_assert!(share.complete);
            states += share.stats.states;
            union.extend(finals);
        }
        prop_assert_eq!(&union, &naive);
        let whole = Exhaustive::default().explore(&model, &bounds);
        prop_assert!(states >= whole.stats.states, "shares together visit every state at least once");
    }
}

#[test]
fn a_spent_time_limit_makes_the_search_inconclusive_with_partial_counts() {
    let model = Programs { programs: vec![increment(false); 3], check_counter: false };
    let budget = Budget::time_limit(0);
    let e = Exhaustive { budget, ..Exhaustive::default() }.explore(&model, &Bounds::default());
    // The clock is read every few thousand transitions; this model has fewer, so it completes.
    assert!(e.complete, "{:?}", e.incomplete_reason);
    let big = Programs { programs: vec![increment(false); 6], check_counter: false };
    let e = Exhaustive { budget: Budget::time_limit(0), ..Exhaustive::default() }.explore(&big, &Bounds::default());
    assert!(!e.complete);
    assert_eq!(e.incomplete_reason.as_deref(), Some("time limit reached: 0 s"));
    assert!(e.stats.states > 0 && e.stats.transitions >= CHECK_EVERY, "partial counts: {:?}", e.stats);
}

proptest! {
    #![proptest_config(config())]

    /// The parallel search visits exactly the states of the sequential one, on any number of
    /// threads, and finds a violation exactly when the sequential search does.
    #[test]
    fn the_parallel_search_visits_the_states_of_the_sequential_one(
        programs in prop::collection::vec(prop::collection::vec(instr(), 1..4), 2..4),
        crash in any::<bool>(),
        check_counter in any::<bool>(),
        threads in 1usize..4,
    ) {
        let model = Programs { programs, check_counter };
        let bounds = Bounds { crashes: u8::from(crash), ..Bounds::default() };
        let sequential = Exhaustive::default().explore(&model, &bounds);
        let parallel = racelab_harness::explore::parallel::explore(&model, &bounds, threads, &Budget::default(), true);
        prop_assert_eq!(sequential.violation.is_some(), parallel.violation.is_some());
        prop_assert_eq!(sequential.complete, parallel.complete);
        if sequential.complete {
            prop_assert_eq!(sequential.stats.states, parallel.stats.states);
            prop_assert_eq!(sequential.stats.final_states, parallel.stats.final_states);
            prop_assert_eq!(sequential.reached, parallel.reached);
        }
    }
}

/// DPOR on `model`: complete, its executions, and how many traces exist (by enumeration).
fn dpor_and_traces(model: &Programs, bounds: &Bounds) -> (u64, usize) {
    let (e, report) = Dpor::default().run(model, bounds);
    assert!(e.complete, "{:?}", e.incomplete_reason);
    let count = count_traces(model, bounds, 100_000);
    assert!(count.complete);
    assert_eq!(report.traces, count.traces, "DPOR runs every trace");
    (e.stats.executions, count.traces.len())
}

#[test]
fn the_trace_counter_and_dpor_on_programs_whose_traces_are_known() {
    let bounds = Bounds::default();
    // Two actors of two steps on different files: 6 interleavings, one trace.
    let apart = Programs {
        programs: vec![
            vec![Instr::Read("counter"), Instr::Write("counter", 1)],
            vec![Instr::Read("other"), Instr::Write("other", 1)],
        ],
        check_counter: false,
    };
    assert_eq!(count_traces(&apart, &bounds, 100).executions, 6);
    assert_eq!(dpor_and_traces(&apart, &bounds), (1, 1));
    // Two actors writing one file: two traces, whichever writes last.
    let same = Programs {
        programs: vec![vec![Instr::Write("counter", 1)], vec![Instr::Write("counter", 1)]],
        check_counter: false,
    };
    assert_eq!(dpor_and_traces(&same, &bounds), (2, 2));
    // Two unlocked increments: the reads commute, every other pair conflicts. Of the 6
    // interleavings, {rA rB wA wB, rB rA wA wB} and {rA rB wB wA, rB rA wB wA} are one trace
    // each, and rA wA rB wB and rB wB rA wA one each: 4.
    let increments = Programs { programs: vec![increment(false), increment(false)], check_counter: false };
    assert_eq!(count_traces(&increments, &bounds, 100).executions, 6);
    assert_eq!(dpor_and_traces(&increments, &bounds), (4, 4));
    // Locked increments: lock, read, write, unlock each. Whoever locks first runs first, and
    // the other's lock either comes while it is held (it waits, then the unlock grants it: one
    // trace, wherever in the critical section it came) or after the unlock (it takes the lock
    // at once): 2 × 2 traces.
    let locked = Programs { programs: vec![increment(true), increment(true)], check_counter: false };
    let (dpor, traces) = dpor_and_traces(&locked, &bounds);
    assert_eq!(traces, 4);
    assert!(dpor >= 4, "{dpor}");
}

#[test]
fn dpor_finds_the_lost_update_with_a_schedule_that_replays_and_stops_at_its_bounds() {
    let model = Programs { programs: vec![increment(false), increment(false)], check_counter: true };
    let (e, _) = Dpor::default().run(&model, &Bounds::default());
    let (violation, schedule) = e.violation.expect("the lost update");
    assert_eq!(violation.invariant, "no-lost-update");
    // The schedule replays to the violation.
    let mut state = State::initial(&model);
    for &c in &schedule {
        assert!(state.choices(&Bounds::default()).contains(&c));
        state.apply(c, &Bounds::default());
    }
    assert!(!state.any_step());
    let bounded = Dpor::default().run(&model, &Bounds { max_depth: 2, ..Bounds::default() }).0;
    assert_eq!(bounded.incomplete_reason.as_deref(), Some("depth bound reached: 2 steps"));
    let capped = Dpor { max_executions: 1, check_properties: false, ..Dpor::default() }.run(&model, &Bounds::default());
    assert_eq!(capped.0.incomplete_reason.as_deref(), Some("execution bound reached: 1 executions"));
    // Under a preemption bound every pair of steps depends: the bound is not a property of
    // traces. Without preemptions the increments run serially; with one the update is lost.
    let serial = Dpor::default().run(&model, &Bounds { preemptions: Some(0), ..Bounds::default() }).0;
    assert!(serial.complete && serial.violation.is_none());
    let one = Dpor::default().run(&model, &Bounds { preemptions: Some(1), ..Bounds::default() }).0;
    assert!(one.violation.is_some());
}

proptest! {
    #![proptest_config(config())]

    /// DPOR runs at least one execution of every Mazurkiewicz trace (the trace keys of its
    /// executions are exactly those of every execution) and reaches every final state of the
    /// naive enumeration; sleep sets alone run no fewer executions.
    #[test]
    fn dpor_runs_every_trace_of_random_programs(
        programs in prop::collection::vec(prop::collection::vec(instr(), 1..4), 2..4),
        crash in any::<bool>(),
    ) {
        let model = Programs { programs, check_counter: false };
        let bounds = Bounds { crashes: u8::from(crash), ..Bounds::default() };
        let naive = naive_finals(&model, &bounds);
        let count = count_traces(&model, &bounds, 1_000_000);
        prop_assert!(count.complete);
        prop_assert_eq!(&count.finals, &naive);
        let (dpor, report) = Dpor::default().run(&model, &bounds);
        prop_assert!(dpor.complete);
        prop_assert_eq!(&report.finals, &naive);
        prop_assert_eq!(&report.traces, &count.traces);
        prop_assert!(dpor.stats.executions >= count.traces.len() as u64);
        let sleep_only = Dpor { source_sets: false, ..Dpor::default() }.run(&model, &bounds).0;
        prop_assert!(sleep_only.stats.executions >= dpor.stats.executions);
    }
}

#[test]
fn a_spent_time_limit_makes_dpor_inconclusive_with_partial_counts() {
    let model = Programs { programs: vec![increment(false); 5], check_counter: false };
    let dpor = Dpor { budget: Budget::time_limit(0), ..Dpor::default() };
    let e = dpor.run(&model, &Bounds::default()).0;
    assert!(!e.complete);
    assert_eq!(e.incomplete_reason.as_deref(), Some("time limit reached: 0 s"));
    assert!(e.stats.transitions >= CHECK_EVERY, "partial counts: {:?}", e.stats);
}
