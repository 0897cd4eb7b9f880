//! DPOR against the exhaustive search on every catalogue scenario it completes under a modest
//! execution cap: the same verdict (the same invariant when violated) and, where the scenario
//! holds, the same final states; and, where an enumeration of every execution is short, its
//! final states and every one of its traces, violated or not.

use std::path::Path;

use racelab_harness::explore::dpor::Dpor;
use racelab_harness::explore::Exploration;
use racelab_harness::run::{Backend, Mode, Verdict};
use racelab_harness::scenario;
use racelab_harness::token;

/// Executions per scenario: enough for most scenarios, few enough for a debug build.
const CAP: u64 = 1_000;

/// Executions an enumeration without reduction may take.
const ENUMERATED: u64 = 3_000;

fn verdict(e: &Exploration) -> Option<String> {
    e.violation.as_ref().map(|(v, _)| v.invariant.clone())
}

#[test]
fn dpor_agrees_with_the_exhaustive_search_on_the_catalogue() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let scenarios = scenario::load_dir(&dir, &racelab_models::catalogue()).expect("scenario files load");
    let mut compared = Vec::new();
    let mut skipped = Vec::new();
    let mut enumerated = Vec::new();
    for s in &scenarios {
        if s.mode != Mode::Exhaustive {
            // Sampled scenarios are too large to enumerate (that is why they sample).
            continue;
        }
        let (dpor, report) = s.model.explore_dpor(&s.bounds, &Dpor { max_executions: CAP, ..Dpor::default() });
        if !dpor.complete && dpor.violation.is_none() {
            skipped.push(s.id.clone());
            continue;
        }
        let (exhaustive, finals) = s.model.final_states(&s.bounds);
        assert_eq!(verdict(&dpor), verdict(&exhaustive), "{}: verdict", s.id);
        if exhaustive.violation.is_none() {
            assert!(exhaustive.complete, "{}: {:?}", s.id, exhaustive.incomplete_reason);
            assert_eq!(report.finals, finals, "{}: final states", s.id);
        }
        // Violated or not: every trace of an enumeration without reduction, where it is short.
        let count = s.model.count_traces(&s.bounds, ENUMERATED);
        if count.complete {
            let unchecked = Dpor { check_properties: false, max_executions: CAP, ..Dpor::default() };
            let (all, report) = s.model.explore_dpor(&s.bounds, &unchecked);
            assert!(all.complete, "{}: {:?}", s.id, all.incomplete_reason);
            assert_eq!(report.finals, count.finals, "{}: final states against the enumeration", s.id);
            assert_eq!(report.traces, count.traces, "{}: traces against the enumeration", s.id);
            enumerated.push(s.id.clone());
        }
        compared.push(s.id.clone());
    }
    assert!(compared.len() >= scenarios.len() / 2, "compared only {compared:?}; skipped {skipped:?}");
    assert!(enumerated.len() >= compared.len() / 2, "enumerated only {enumerated:?}");
}

#[test]
fn check_in_dpor_mode_replays_violations_and_leaves_step_invariants_to_the_exhaustive_mode() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let scenarios = scenario::load_dir(&dir, &racelab_models::catalogue()).expect("scenario files load");
    let find = |id: &str| scenarios.iter().find(|s| s.id == id).expect("scenario");
    let mode = Mode::Dpor { executions: CAP };
    let violated = find("summary-upsert/check-then-insert");
    let checked = violated.model.check(&violated.id, &mode, &violated.bounds, &Backend::Sim);
    assert_eq!(checked.verdict, Verdict::Violated);
    let token = checked.counterexample.expect("a counterexample").token;
    let schedule = token::decode(&violated.id, &token).expect("a token");
    let replayed = violated.model.replay(&violated.bounds, &schedule, &Backend::Sim).expect("replays");
    assert_eq!(replayed.verdict, Verdict::Violated);
    // Its invariants are checked at every step: DPOR covered every trace, not every state.
    let holding = find("summary-upsert/advisory-xact-lock");
    let checked = holding.model.check(&holding.id, &mode, &holding.bounds, &Backend::Sim);
    assert!(checked.complete);
    assert_eq!(checked.verdict, Verdict::Inconclusive);
    assert!(checked.reason.expect("a reason").contains("the exhaustive mode decides"));
}

#[test]
fn choices_whose_footprints_do_not_conflict_commute_in_every_catalogue_scenario() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let scenarios = scenario::load_dir(&dir, &racelab_models::catalogue()).expect("scenario files load");
    let mut tried = 0;
    let mut failed = Vec::new();
    for s in scenarios.iter().filter(|s| s.mode == Mode::Exhaustive) {
        match s.model.check_independence(&s.bounds, 1000) {
            Ok(n) => tried += n,
            Err(why) => failed.push(format!("{}: {why}", s.id)),
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(tried > 1000, "only {tried} pairs tried");
}
