//! The parallel search reduced by symmetry, on every catalogue model that declares one: the same
//! counts on one thread and on two, and as the sequential reduced search, the verdict and targets
//! of the plain search, and counterexamples that replay concretely to their invariant.

use racelab_harness::catalogue::DynModel;
use racelab_harness::explore::budget::Budget;
use racelab_harness::explore::exhaustive::Exhaustive;
use racelab_harness::explore::{Bounds, Exploration};
use racelab_harness::run::Backend;

mod common;

fn counts(e: &Exploration) -> (u64, u64, u64, bool, u64) {
    (e.stats.states, e.stats.final_states, e.stats.transitions, e.complete, e.reached)
}

fn invariant(e: &Exploration) -> Option<String> {
    e.violation.as_ref().map(|(v, _)| v.invariant.clone())
}

fn check(id: &str, model: &dyn DynModel, bounds: &Bounds) -> bool {
    let plain = model.final_states(bounds).0;
    if !plain.complete && plain.violation.is_none() {
        return false;
    }
    let one = model.explore_parallel(bounds, 1, &Budget::default(), true);
    let two = model.explore_parallel(bounds, 2, &Budget::default(), true);
    // With several invariants, which violation a search meets first depends on its order (and
    // on two threads, on timing): the verdict must agree, and each counterexample replay.
    assert_eq!(invariant(&one).is_some(), invariant(&plain).is_some(), "{id}: verdict on one thread");
    assert_eq!(invariant(&two).is_some(), invariant(&plain).is_some(), "{id}: verdict on two threads");
    for run in [&one, &two] {
        if let Some((v, schedule)) = &run.violation {
            let replayed = model.replay(bounds, schedule, &Backend::Sim).unwrap_or_else(|e| panic!("{id}: {e:?}"));
            assert_eq!(replayed.invariant, Some(v.invariant.clone()), "{id}: the schedule replays");
        }
    }
    if plain.complete {
        assert_eq!(counts(&one), counts(&two), "{id}: counts on one and two threads");
        let sequential = model.explore_exhaustive_with(bounds, &Exhaustive::default());
        assert_eq!(counts(&one), counts(&sequential), "{id}: counts of the parallel and the sequential search");
        assert_eq!(one.reached, plain.reached, "{id}: targets reached");
        let unreduced = model.explore_parallel(bounds, 1, &Budget::default(), false);
        assert!(one.stats.states <= unreduced.stats.states, "{id}: more states with the reduction");
    }
    true
}

#[test]
fn the_reduced_parallel_search_agrees_with_the_plain_one_on_every_symmetric_model() {
    let mut compared = Vec::new();
    for (id, model) in common::symmetric_models() {
        for crashes in [0, 1] {
            let bounds = Bounds { crashes, ..Bounds::default() };
            let id = format!("{id} with {crashes} crashes");
            if check(&id, &*model, &bounds) {
                compared.push(id);
            }
        }
    }
    assert!(compared.len() >= 8, "only {compared:?} compared");
}

#[test]
fn the_reduced_parallel_search_agrees_with_more_workers() {
    let cells = [
        ("summary-upsert", "check-then-insert", "requests"),
        ("summary-upsert", "advisory-xact-lock", "requests"),
        ("lock-reentrancy", "unguarded", "hooks"),
        ("lock-reentrancy", "reentrancy-guard", "hooks"),
        ("summarise-dedup", "for-update-nowait", "summarisers"),
        ("reaper-commit", "batch-commit", "hooks"),
        ("reaper-commit", "commit-inside-lock", "hooks"),
    ];
    for (race, variant, param) in cells {
        let model = common::with_workers(race, variant, param, 4);
        let bounds = Bounds { crashes: 1, ..Bounds::default() };
        assert!(check(&format!("{race}/{variant} with 4 workers and a crash"), &*model, &bounds));
    }
}
